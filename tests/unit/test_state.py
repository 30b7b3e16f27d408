"""Shared state: backend table generation, request ring, status file, cancel lookup, pool slots."""

import os
import socket

import pytest

from pgpool.proxy.backend import BackendConn
from pgpool.proxy.pool import ConnectionPool, PooledSession, pool_key
from pgpool.state import shm as S
from pgpool.state.status_file import read_status_file, write_status_file


@pytest.fixture
def state():
    return S.SharedState(num_children=3, max_pool=2, num_backends=2)


def test_generation_moves_on_backend_change(state):
    g = state.header.generation
    state.set_backend(1, status=S.CON_DOWN)
    assert state.header.generation == g + 1
    assert state.backends[1].status == S.CON_DOWN
    assert state.backends[1].status_changed_time > 0


def test_request_ring_fifo_and_full(state):
    for i in range(S.REQUEST_RING_SIZE - 1):
        assert state.push_request(S.REQ_NODE_DOWN, i % 2)
    assert not state.push_request(S.REQ_NODE_DOWN, 0)       # full: refused, nothing lost
    got = state.pop_requests()
    assert len(got) == S.REQUEST_RING_SIZE - 1
    assert [r[1] for r in got[:3]] == [0, 1, 0]
    assert state.pop_requests() == []


def test_request_ring_shared_across_fork(state):
    pid = os.fork()
    if pid == 0:
        state.push_request(S.REQ_NODE_DOWN, 1, 0, os.getpid())
        os._exit(0)
    os.waitpid(pid, 0)
    assert state.pop_requests() == [(S.REQ_NODE_DOWN, 1, 0, pid)]


def test_find_cancel_target(state):
    p = state.processes[2]
    p.connected = 1
    pool = p.pools[1]
    pool.in_use = 1
    pool.conns[0].pid, pool.conns[0].key, pool.conns[0].connected = 100, 11, 1
    pool.conns[1].pid, pool.conns[1].key, pool.conns[1].connected = 200, 22, 1
    assert state.find_cancel_target(100, 11) == [(0, 100, 11), (1, 200, 22)]
    assert state.find_cancel_target(100, 12) is None


@pytest.mark.parametrize("content, expected", [
    (b"up\ndown\n", ["up", "down"]),
    (b"up\n", ["up", "up"]),                  # missing lines: up
    (b"down\ndown\n", None),                  # nobody up: ignored, all assumed up
    (b"\x00\x01garbage\xff", None),           # corrupt: ignored
    (b"up\nsideways\n", None),
])
def test_status_file(tmp_path, content, expected):
    path = tmp_path / "pgpool_status"
    path.write_bytes(content)
    assert read_status_file(str(path), 2) == expected


def test_status_file_write_read(tmp_path):
    path = str(tmp_path / "pgpool_status")
    write_status_file(path, ["up", "down", "up"])
    assert read_status_file(path, 3) == ["up", "down", "up"]
    assert read_status_file(str(tmp_path / "missing"), 3) is None


def _session(pool, slot, key, close_time):
    a, b = socket.socketpair()
    ps = PooledSession(slot, key, "u", "db", {0: BackendConn(0, a)}, 0)
    ps.close_time = close_time
    pool.put(ps)
    return ps, b


def test_pool_reuse_eviction_and_broken_detection(state):
    pool = ConnectionPool(2, state, 0)
    k1, k2, k3 = pool_key({"user": "u", "database": "a"}), pool_key({"user": "u", "database": "b"}), \
        pool_key({"user": "u", "database": "c"})
    ps1, peer1 = _session(pool, pool.free_slot(), k1, 10.0)
    ps2, peer2 = _session(pool, pool.free_slot(), k2, 5.0)
    assert pool.take(k1) is ps1 and ps1.counter == 2       # first use counted 1
    assert state.processes[0].pools[ps1.slot].in_use == 1
    # all slots used: the slot idle longest (smallest close_time) is evicted
    slot = pool.free_slot()
    assert slot == ps2.slot and pool.slots[slot] is None
    assert peer2.recv(5) == b"X\0\0\0\x04"          # evicted backends get a Terminate
    # a slot whose backend went away is not handed out
    peer1.close()
    assert pool.take(k1) is None
    assert pool.take(k3) is None


def test_pool_key_ignores_option_order():
    assert pool_key({"user": "u", "database": "d"}) == pool_key({"database": "d", "user": "u"})
    assert pool_key({"user": "u", "application_name": "x"}) != pool_key({"user": "u"})


def test_connection_life_time(state):
    pool = ConnectionPool(2, state, 1)
    ps, _peer = _session(pool, pool.free_slot(), ("k",), 100.0)
    assert pool.next_expiry(10) == 110.0
    pool.expire(10, now=105.0)
    assert pool.slots[ps.slot] is ps
    pool.expire(10, now=111.0)
    assert pool.slots[ps.slot] is None
