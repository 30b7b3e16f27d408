"""The cheap connection setup: reset plans, pool_hba.conf match memo, lazy receive timeout on the
startup packet, one-poll broken check, reading pipelined reset replies, TLS without tickets.

Sockets are real socket pairs; the backend side of a reset is canned protocol bytes (what
PostgreSQL sends), the real exchange is covered by tests/integration/test_conn_setup.py.
"""

import socket
import ssl
import struct
import threading

import pytest

from pgpool.auth.hba import MATCH_MEMO_SIZE, HbaConfig, parse_hba_text
from pgpool.auth.pool_passwd import PasswordEntry
from pgpool.config.parser import Config
from pgpool.protocol import messages as m
from pgpool.proxy import tls
from pgpool.proxy.backend import BackendConn, any_broken
from pgpool.proxy.pool import reset_plan
from pgpool.proxy.startup import Startup, read_startup
from pgpool.tools import certs


# ---- reset_query_list --------------------------------------------------------------------------

@pytest.mark.parametrize("setting, in_txn, queries, must_succeed", [
    (["ABORT", "DISCARD ALL"], False, ["DISCARD ALL"], (True,)),
    (["ABORT", "DISCARD ALL"], True, ["ABORT", "DISCARD ALL"], (False, True)),
    ("ABORT; DISCARD ALL", True, ["ABORT", "DISCARD ALL"], (False, True)),
    (" abort ;reset all; ;SET SESSION AUTHORIZATION DEFAULT", False,
     ["reset all", "SET SESSION AUTHORIZATION DEFAULT"], (True, True)),
    (["DISCARD ALL"], True, ["DISCARD ALL"], (True,)),
    ([], True, [], ()),
    ("", False, [], ()),
    (["ABORT"], False, [], ()),
])
def test_reset_plan(setting, in_txn, queries, must_succeed):
    plan = reset_plan(setting, in_txn)
    assert plan.request == b"".join(m.query(q) for q in queries)
    assert plan.count == len(queries)
    assert plan.must_succeed == must_succeed


# ---- pool_hba.conf: remembered matches ------------------------------------------------------------

HBA = """\
local all all trust
hostssl all alice 127.0.0.1/32 cert
host sameuser all 10.0.0.0/8 md5
host all all 127.0.0.1/32 scram-sha-256
host all bob 0.0.0.0/0 reject
"""


@pytest.mark.parametrize("conn, ssl_on, addr, db, user, line", [
    ("local", False, None, "db", "u", 1),
    ("host", True, "127.0.0.1", "db", "alice", 2),
    ("host", False, "127.0.0.1", "db", "alice", 4),
    ("host", False, "10.1.2.3", "carol", "carol", 3),
    ("host", False, "10.1.2.3", "db", "carol", None),
    ("host", False, "192.168.0.1", "db", "bob", 5),
])
def test_match_remembered_equals_computed(conn, ssl_on, addr, db, user, line):
    hba = parse_hba_text(HBA)
    for _ in range(2):          # computed, then remembered
        rule = hba.match(conn, ssl_on, addr, db, user)
        assert (rule.line_number if rule else None) == line
        assert rule is hba._match(conn, ssl_on, addr, db, user)


def test_match_memo_is_bounded():
    hba = parse_hba_text(HBA)
    for i in range(MATCH_MEMO_SIZE + 10):
        assert hba.match("host", False, "127.0.0.1", f"db{i}", "u").line_number == 4
    assert len(hba._memo) <= MATCH_MEMO_SIZE


@pytest.mark.parametrize("rules", ["host all all samehost trust\n", "host all all samenet trust\n",
                                   "host all all db.example.com trust\n"])
def test_no_memo_when_the_answer_can_change(rules):
    names = iter(["db.example.com", None])
    hba = HbaConfig(parse_hba_text(rules).rules, interfaces=lambda: [],
                    resolve_hostname=lambda ip: next(names))
    assert hba._memo is None
    hba.match("host", False, "10.0.0.1", "d", "u")
    hba.match("host", False, "10.0.0.1", "d", "u")
    assert hba._memo is None


# ---- pool_passwd -----------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", [PasswordEntry("u", "TEXTpw"), PasswordEntry("u", "md5" + "0" * 32),
                                   PasswordEntry("u", "pw", "bu", "bpw")])
def test_decrypted_without_aes_is_the_entry_itself(entry):
    assert entry.decrypted() is entry


# ---- the startup packet: a receive timeout only when a read has to wait ------------------------------

STARTUP = struct.pack("!ii", 8 + 24, m.PROTOCOL_V3) + b"user\0alice\0database\0db\0\0"


def test_startup_already_there_needs_no_timeout():
    ours, client = socket.socketpair()
    with ours, client:
        client.sendall(STARTUP)
        armed = []
        first = read_startup(ours, None, lambda: armed.append(True))
    assert isinstance(first, Startup) and first.user == "alice" and first.database == "db"
    assert armed == []


def test_startup_that_has_to_be_waited_for_arms_the_timeout_once():
    ours, client = socket.socketpair()
    armed = threading.Event()
    count = []

    def arm():
        count.append(True)
        armed.set()

    def send_in_pieces():
        for piece in (STARTUP[:3], STARTUP[3:10], STARTUP[10:]):
            armed.wait(5)
            client.sendall(piece)

    sender = threading.Thread(target=send_in_pieces)
    with ours, client:
        sender.start()
        first = read_startup(ours, None, arm)
        sender.join()
    assert first.params == {"user": "alice", "database": "db"}
    assert count == [True]


# ---- idle pooled connections: broken or not, in one poll -----------------------------------------------

def test_any_broken():
    pairs = [socket.socketpair() for _ in range(2)]
    conns = [BackendConn(i, a) for i, (a, _b) in enumerate(pairs)]
    try:
        assert not any_broken(conns)
        pairs[1][1].sendall(m.error_response("FATAL", "57P01", "terminating connection"))
        assert any_broken(conns)
        assert any_broken(conns[1:])
        assert not any_broken(conns[:1])
        pairs[0][1].close()
        assert any_broken(conns[:1])
    finally:
        for a, b in pairs:
            a.close()
            b.close()


# ---- the replies to pipelined reset queries -----------------------------------------------------------

def reply(*msgs: bytes) -> bytes:
    return b"".join(msgs)


@pytest.mark.parametrize("stream, count, failed, status, params", [
    (reply(m.command_complete("DISCARD ALL"), m.ready_for_query(b"I")), 1, [], b"I", {}),
    (reply(m.message(b"N", b"SWARNING\0C25P01\0Mthere is no transaction in progress\0\0"),
           m.command_complete("ROLLBACK"), m.ready_for_query(b"I"),
           m.parameter_status("application_name", ""),
           m.command_complete("DISCARD ALL"), m.ready_for_query(b"I")), 2, [], b"I",
     {"application_name": ""}),
    (reply(m.error_response("ERROR", "25001", "DISCARD ALL cannot run inside a transaction block"),
           m.ready_for_query(b"E")), 1, [0], b"E", {}),
    (reply(m.command_complete("ROLLBACK"), m.ready_for_query(b"I"),
           m.error_response("ERROR", "22012", "division by zero"), m.ready_for_query(b"I")),
     2, [1], b"I", {}),
])
def test_finish_queries(stream, count, failed, status, params):
    ours, server = socket.socketpair()
    with ours, server:
        conn = BackendConn(0, ours)
        conn.params = {"application_name": "pgbench"}
        conn.handshake = b"cached"
        server.sendall(stream[:7])
        threading.Timer(0.05, server.sendall, [stream[7:]]).start()
        assert conn.finish_queries(count, 5) == failed
        assert conn.txn_status == status
        assert conn.params == {"application_name": "pgbench", **params}
        assert (conn.handshake is None) == bool(params)


def test_finish_queries_times_out():
    ours, server = socket.socketpair()
    with ours, server:
        with pytest.raises(socket.timeout):
            BackendConn(0, ours).finish_queries(1, 0.05)


# ---- TLS towards clients: no session tickets --------------------------------------------------------

def test_frontend_sends_no_session_ticket(tmp_path):
    pki = certs.make_pki(tmp_path)
    cfg = Config.defaults()
    for name, value in pki.pgpool_settings().items():
        cfg.set(name, value)
    front = tls.frontend_context(cfg, str(tmp_path))
    client_ctx = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    client_ctx.check_hostname = False
    ours, client = socket.socketpair()
    with ours, client:
        done = []
        server = threading.Thread(target=lambda: done.append(tls.accept(ours, front)))
        server.start()
        tls_client = client_ctx.wrap_socket(client)
        server.join()
        done[0].sendall(b"x")
        assert tls_client.recv(1) == b"x"      # tickets, when sent, come before this byte
        assert tls_client.version() == "TLSv1.3"
        assert tls_client.session is None or not tls_client.session.has_ticket
