"""Connection setup against real PostgreSQL (side by side with pgpool-II 4.3 where both behave
alike; where pgpool-II differs, the test says how): authentication_timeout only while
authenticating (a startup packet that comes in pieces, a client silent during the password
exchange), reset_query_list sent at once and a pooled connection dropped when a reset query
fails, an idle pooled connection whose backend went away."""

from __future__ import annotations

import hashlib
import struct
import time

import psycopg
import pytest

from tests.harness import rawpg
from tests.harness.pgpool_process import OUR_PGPOOL, REAL_PGPOOL
from tests.harness.wait import wait_for

DB = "connsetup"        # database postgres is never pooled
COMMANDS = {"ours": OUR_PGPOOL, "pgpool-II": REAL_PGPOOL}
PASSWORD = "conn pw"
MD5_USER = "connsetup_md5"


@pytest.fixture(scope="module")
def database(pg_cluster):
    primary = pg_cluster.primary
    if primary.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{DB}'") == "0":
        primary.psql(f"CREATE DATABASE {DB}")
    if primary.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{MD5_USER}'") == "0":
        primary.psql(f"CREATE ROLE {MD5_USER} LOGIN")
    wait_for(lambda: all(n.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{DB}'") == "1"
                         for n in pg_cluster.nodes), 30, 0.2, "the database on every node")
    return DB


def session_pid(pgpool) -> int:
    with pgpool.connect(dbname=DB) as conn:
        return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_startup_in_pieces_then_idle_past_authentication_timeout(pgpool_factory, database, name):
    pgpool = pgpool_factory({"num_init_children": 2, "authentication_timeout": 1},
                            command=COMMANDS[name])
    with rawpg.RawConn(pgpool.host, pgpool.port) as conn:
        packet = rawpg.startup_packet({"user": "postgres", "database": DB})
        for piece in (packet[:3], packet[3:11], packet[11:]):
            conn.send(piece)
            time.sleep(0.3)
        kinds = b"".join(k for k, _ in conn.read_until(b"Z"))
        assert kinds.startswith(b"R") and b"E" not in kinds
        time.sleep(1.5)             # authenticated: the timeout no longer applies
        rows = rawpg.data_rows(conn.simple_query("SELECT 'still here'"))
        assert rows == [["still here"]]


def md5_response(user: str, salt: bytes) -> bytes:
    inner = hashlib.md5((PASSWORD + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode() + b"\0"


def test_silent_during_password_exchange(pgpool_factory, database):
    """Ours applies authentication_timeout to the whole authentication, as PostgreSQL does;
    pgpool-II 4.3 only to reading the startup packet (it waits for the password for ever)."""
    hba = f"local all all trust\nhost all {MD5_USER} 127.0.0.1/32 md5\nhost all all 127.0.0.1/32 trust\n"
    pgpool = pgpool_factory({"num_init_children": 2, "authentication_timeout": 1, "enable_pool_hba": True},
                            pool_hba=hba, pool_passwd={MD5_USER: PASSWORD})
    with rawpg.RawConn(pgpool.host, pgpool.port) as conn:
        conn.send(rawpg.startup_packet({"user": MD5_USER, "database": DB}))
        kind, payload = conn.recv_message()
        assert kind == b"R" and struct.unpack_from("!i", payload)[0] == 5     # md5 asked
        started = time.monotonic()
        reply = conn.read_to_close(timeout=10)
        waited = time.monotonic() - started
    assert reply.closed and 0.8 <= waited <= 5, (reply, waited)
    with rawpg.RawConn(pgpool.host, pgpool.port) as conn:     # the next client logs in
        conn.send(rawpg.startup_packet({"user": MD5_USER, "database": DB}))
        kind, payload = conn.recv_message()
        conn.send(rawpg.message(b"p", md5_response(MD5_USER, payload[4:8])))
        assert b"E" not in b"".join(k for k, _ in conn.read_until(b"Z"))
        assert rawpg.data_rows(conn.simple_query("SELECT 1")) == [["1"]]


@pytest.mark.parametrize("reset, leave_open, reused", [
    ("ABORT; DISCARD ALL", True, True),         # the open transaction is aborted first
    ("DISCARD ALL", True, False),               # fails inside the transaction: not pooled
    ("ABORT; SELECT 1/0; DISCARD ALL", False, False),     # a failing reset query: not pooled
])
def test_reset_query_list_outcome(pgpool_factory, pg_cluster, database, reset, leave_open, reused):
    """The queries go out in one write; a failure drops the pooled connection (pgpool-II 4.3
    logs it and pools the connection all the same, even inside a transaction block)."""
    pgpool = pgpool_factory({"num_init_children": 1, "max_pool": 1, "reset_query_list": reset,
                             "load_balance_mode": False})
    with rawpg.RawConn(pgpool.host, pgpool.port) as conn:
        first = conn.startup(database=DB)["pid"]
        for sql in (["BEGIN"] if leave_open else []) + ["SET work_mem = '1234kB'"]:
            assert b"E" not in b"".join(k for k, _ in conn.simple_query(sql))
        conn.send(rawpg.message(b"X"))       # Terminate, the transaction left open
        assert conn.read_to_close().closed
    with pgpool.connect(dbname=DB) as conn:
        second = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SHOW work_mem").fetchone() != ("1234kB",)
    assert (second == first) == reused
    if not reused:
        wait_for(lambda: pg_cluster.primary.psql(
            f"SELECT count(*) FROM pg_stat_activity WHERE pid = {first}") == "0", 10, 0.1,
            "the dropped backend connection to end")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_idle_pooled_backend_terminated(pgpool_factory, pg_cluster, database, name):
    pgpool = pgpool_factory({"num_init_children": 1, "max_pool": 1, "load_balance_mode": False,
                             "failover_on_backend_error": True}, command=COMMANDS[name])
    first = session_pid(pgpool)
    pg_cluster.primary.psql(f"SELECT pg_terminate_backend({first})")
    wait_for(lambda: pg_cluster.primary.psql(
        f"SELECT count(*) FROM pg_stat_activity WHERE pid = {first}") == "0", 10, 0.1, "the backend to end")
    second = session_pid(pgpool)
    assert second != first
    with pgpool.connect(dbname=DB) as conn:
        rows = conn.execute("SHOW pool_nodes").fetchall()
    assert all(row[3] in ("up", "waiting") for row in rows), rows
