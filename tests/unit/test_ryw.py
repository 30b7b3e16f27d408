"""Unit tests of pgpool.state.ryw: LSN text, commit targets, the shared table, session positions."""

import threading

import pytest

from pgpool.state import ryw
from pgpool.state.shm import RYW_SLOTS, RywEntry, SharedState


@pytest.mark.parametrize("text,value", [
    ("0/0", 0),
    ("0/16B3748", 0x16B3748),
    ("16/B374D848", (0x16 << 32) | 0xB374D848),
    (b"FFFFFFFF/FFFFFFFF", (1 << 64) - 1),
    (" 1/2 ", (1 << 32) | 2),
    (None, None),
    ("", None),
    ("16B374D848", None),
    ("x/1", None),
    ("1/", None),
    ("100000000/0", None),
])
def test_parse_lsn(text, value):
    assert ryw.parse_lsn(text) == value


@pytest.mark.parametrize("insert,target", [
    (0x1000050, 0x1000050),                      # inside a page: the position itself
    (0x2000 + 24, 0x2000),                       # just after a page header: the page boundary
    (0x2000 + 25, 0x2000 + 25),
    (0x3000000 + 40, 0x3000000),                 # first page of a segment: the long header
    ((5 << 32) | 0x2018, (5 << 32) | 0x2000),
])
def test_commit_target(insert, target):
    assert ryw.commit_target(insert) == target


def test_key_of_is_stable_nonzero_and_separates_pairs():
    keys = {ryw.key_of(u, d) for u in ("alice", "bob", "") for d in ("app", "db", "")}
    assert len(keys) == 9 and 0 not in keys
    assert ryw.key_of("alice", "app") == ryw.key_of("alice", "app")
    assert ryw.key_of("a", "bc") != ryw.key_of("ab", "c")


def table(size=RYW_SLOTS):
    return (RywEntry * size)()


def test_record_and_lookup():
    t, lock = table(), threading.Lock()
    assert ryw.lookup(t, 1234) == 0
    ryw.record(t, lock, 1234, 500)
    ryw.record(t, lock, 1234, 400)               # positions only grow
    assert ryw.lookup(t, 1234) == 500
    ryw.record(t, lock, 1234, 900)
    assert ryw.lookup(t, 1234) == 900
    assert ryw.lookup(t, 1235) == 0


def test_colliding_keys_share_a_window_by_probing():
    t, lock = table(16), threading.Lock()
    keys = [3 + 16 * i for i in range(ryw.PROBE)]        # all start at slot 3
    for i, k in enumerate(keys):
        ryw.record(t, lock, k, 100 + i)
    assert [ryw.lookup(t, k) for k in keys] == [100 + i for i in range(ryw.PROBE)]


def test_a_full_window_never_answers_lower_than_the_truth():
    t, lock = table(16), threading.Lock()
    keys = [5 + 16 * i for i in range(ryw.PROBE)]
    for k in keys:
        ryw.record(t, lock, k, 10)
    late = 5 + 16 * ryw.PROBE                             # no slot left for it
    ryw.record(t, lock, late, 70)
    assert ryw.lookup(t, late) >= 70
    assert ryw.lookup(t, 5 + 16 * (ryw.PROBE + 1)) >= 70  # another absent key: conservative
    assert all(ryw.lookup(t, k) >= 10 for k in keys)


def test_the_shared_memory_table():
    shm = SharedState(num_children=1, max_pool=1, num_backends=2)
    key = ryw.key_of("u", "d")
    ryw.record(shm.ryw, shm.ryw_lock, key, 42)
    assert ryw.lookup(shm.ryw, key) == 42


@pytest.mark.parametrize("mode,own,shared,target", [
    ("session", 100, 500, 100),       # session mode: only its own commits
    ("global", 100, 500, 500),        # global: writes of other sessions of the same key too
    ("global", 700, 500, 700),
    ("global", ryw.UNKNOWN, 500, ryw.UNKNOWN),
    ("session", 0, 0, 0),
])
def test_session_target(mode, own, shared, target):
    t, lock = table(), threading.Lock()
    key = ryw.key_of("u", "d")
    if shared:
        ryw.record(t, lock, key, shared)
    pos = ryw.SessionPositions(mode, 100, key, t, lock)
    pos.own = own
    assert pos.target() == target


def test_committed_records_globally_only_in_global_mode():
    t, lock = table(), threading.Lock()
    a = ryw.SessionPositions("session", 100, 7, t, lock)
    a.pending = 1
    a.committed(0x6000 + 24)
    assert (a.own, a.pending, ryw.lookup(t, 7)) == (0x6000, 0, 0)
    b = ryw.SessionPositions("global", 100, 7, t, lock)
    b.committed(0x9000)
    c = ryw.SessionPositions("global", 100, 7, t, lock)
    assert c.target() == 0x9000 and ryw.lookup(t, 7) == 0x9000
    c.committed(None)                                      # position unknown: primary only
    assert c.target() == ryw.UNKNOWN and not c.saw(1, (1 << 63))


def test_saw_keeps_the_highest_replay_position():
    pos = ryw.SessionPositions("session", 100, 1)
    pos.own = 1000
    assert not pos.saw(1, 900)
    assert pos.saw(1, 1000)
    assert pos.saw(1, None) and pos.saw(1, 10)             # a lower reading changes nothing
    assert not pos.saw(2, None)
    pos.own = 2000
    assert not pos.saw(1, None)
    assert pos.replayed == {1: 1000}
    assert pos.max_wait == 0.1
