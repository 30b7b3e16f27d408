"""Bad input gets a clear error and loses nothing: malformed packets, protocol violations, vanished
clients, dying backends, failed authentication, limits and timeouts, killed workers, bad configs.

For every case the test checks (1) what the client receives (an ErrorResponse with the proper
SQLSTATE, parsed from raw bytes, or a clean close), (2) that the pgpool log has one clear line about
it and no Python traceback, (3) that a session opened before the bad input still works afterwards
and a new connection works too (the worker survived or was replaced).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import psutil
import psycopg
import pytest

from pgpool.tools.cluster import PgCluster, free_ports
from tests.conftest import phase_failed
from tests.harness import rawpg
from tests.harness.clients import psql
from tests.harness.pgpool_process import PgpoolProcess, repo_env
from tests.harness.wait import wait_for as _wait_for

LOG_LEVELS = r"(?:LOG|WARNING|ERROR|FATAL|PANIC)"
# what a log line about a client that vanished without Terminate may say
CLIENT_VANISHED = (r"unable to read data from frontend|EOF encountered with frontend|"
                   r"client (?:connection )?(?:closed|disconnected|gone|went away)|"
                   r"unexpected EOF on client connection|connection reset by peer")


# ---- helpers ---------------------------------------------------------------------------------

# the shared polling helper, with this file's usual pace
def wait_for(predicate, timeout: float = 10, interval: float = 0.05, what: str = "condition"):
    return _wait_for(predicate, timeout, interval, what)


def backend_pid(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def local_port(conn: psycopg.Connection) -> int:
    """The client-side TCP port of a psycopg connection."""
    dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        return dup.getsockname()[1]
    finally:
        dup.close()


def live_children(pgpool: PgpoolProcess) -> list[psutil.Process]:
    """The pgpool parent's child processes that are alive (zombies excluded)."""
    out = []
    for child in psutil.Process(pgpool.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


def worker_pids(conn: psycopg.Connection) -> set[int]:
    """The pids of pgpool's child (worker) processes, from SHOW pool_processes."""
    return {int(row[0]) for row in conn.execute("SHOW pool_processes").fetchall()}


def direct(node, **kwargs) -> psycopg.Connection:
    """A psycopg connection straight to a PostgreSQL node (not through pgpool)."""
    return psycopg.connect(node.dsn(), autocommit=True, connect_timeout=10, **kwargs)


def backends(cluster, application_name: str, active_only: bool = True) -> list[tuple[object, int, str]]:
    """(node, pid, query) of every backend of ``application_name`` on all nodes (by default only
    those running a query)."""
    found = []
    for node in cluster.nodes:
        with direct(node) as conn:
            for pid, query in conn.execute(
                    "SELECT pid, query FROM pg_stat_activity WHERE application_name = %s "
                    "AND (state = 'active' OR NOT %s)", (application_name, active_only)):
                found.append((node, pid, query))
    return found


def assert_fatal(reply: rawpg.Reply, sqlstate: str, message: str | None = None) -> dict[str, str]:
    """The reply is exactly one FATAL ErrorResponse with ``sqlstate`` followed by a close."""
    errors = reply.errors()
    assert errors, f"expected an ErrorResponse {sqlstate}, got kinds {reply.kinds()!r} raw {reply.raw!r}"
    err = errors[-1]
    assert err.get("S") == "FATAL" and err.get("C") == sqlstate, err
    if message is not None:
        assert re.search(message, err.get("M", "") + "\n" + err.get("D", ""), re.I), err
    assert reply.closed, "the server did not close the connection after the FATAL error"
    return err


class Guard:
    """Watches one pgpool around a bad input: a session opened before it, and the log after it."""

    def __init__(self, pgpool: PgpoolProcess):
        self.pgpool = pgpool
        self.begin = self.offset = len(pgpool.log_text())
        self.other: psycopg.Connection | None = pgpool.connect(application_name="bad_input_other")
        self.other_pid = backend_pid(self.other)
        self.busy: KeepBusy | None = None

    def mark(self) -> None:
        """Log lines written from now on are the ones the next bad input is judged by."""
        self.offset = len(self.pgpool.log_text())

    def new_log(self, since_begin: bool = False) -> str:
        return self.pgpool.log_text()[self.begin if since_begin else self.offset:]

    def log_lines(self, pattern: str) -> list[str]:
        rx = re.compile(rf"{LOG_LEVELS}:\s+.*(?:{pattern})", re.I)
        return [line for line in self.new_log().splitlines() if rx.search(line)]

    def assert_one_log_line(self, pattern: str, timeout: float = 5.0) -> str:
        """Exactly one LOG/WARNING/ERROR/FATAL line matching ``pattern`` since the guard began
        (or since its last mark())."""
        try:
            lines = wait_for(lambda: self.log_lines(pattern), timeout, what=f"a log line /{pattern}/")
        except AssertionError:
            raise AssertionError(f"no log line matches /{pattern}/; new log:\n{self.new_log()}") from None
        time.sleep(0.1)
        lines = self.log_lines(pattern)
        assert len(lines) == 1, \
            f"expected one log line matching /{pattern}/, got {len(lines)}:\n" + "\n".join(lines)
        return lines[0]

    def assert_nothing_lost(self, new_timeout: float = 10) -> None:
        """The earlier session still works on its own backend, a new session works, no traceback."""
        if self.other is not None:
            assert not self.other.closed and not self.other.broken, "the earlier session was dropped"
            assert backend_pid(self.other) == self.other_pid, "the earlier session lost its backend"
            assert self.other.execute("SELECT 41 + 1").fetchone()[0] == 42
        with psycopg.connect(self.pgpool.dsn(), autocommit=True, connect_timeout=new_timeout) as conn:
            assert conn.execute("SELECT 'fresh'").fetchone()[0] == "fresh"
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert "Traceback" not in self.pgpool.log_text(), self.pgpool.log_text()

    def keep_busy(self) -> KeepBusy:
        """Keep the earlier session busy (under client_idle_limit) until .finish()."""
        self.busy = KeepBusy(self.other)
        return self.busy

    def close(self) -> None:
        if self.busy is not None:
            self.busy.stop.set()
            self.busy.thread.join(5)
        if self.other is not None:
            self.other.close()


class KeepBusy:
    """Runs a query on a connection every 0.2 s in a thread, so that it is never idle."""

    def __init__(self, conn: psycopg.Connection):
        self.conn, self.stop, self.errors = conn, threading.Event(), []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                self.conn.execute("SELECT 1")
            except psycopg.Error as e:
                self.errors.append(e)
                return

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.errors, f"the busy session failed: {self.errors}"


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool(pg_cluster):
    """Two workers: with the guard's session holding one, every bad client lands on the other,
    and so does the next new connection (same worker, or its replacement)."""
    pgpool = PgpoolProcess(pg_cluster, {"num_init_children": 2})
    try:
        yield pgpool.start(timeout=30)
    finally:
        pgpool.cleanup()


@pytest.fixture
def watch(request):
    """watch(pgpool) -> a Guard; at teardown guards are closed and, when the test failed, the
    pgpool log written since each guard began is printed."""
    guards: list[Guard] = []

    def make(pgpool: PgpoolProcess) -> Guard:
        guards.append(Guard(pgpool))
        return guards[-1]

    yield make
    for g in guards:
        g.close()
        if phase_failed(request):
            print(f"\n===== pgpool log ({g.pgpool.workdir}) since the test began =====\n"
                  f"{g.new_log(since_begin=True)}")


@pytest.fixture
def guard(watch, pool):
    return watch(pool)


@pytest.fixture
def own_pool(request, pg_cluster):
    """start(overrides, cluster=None, **kwargs) -> a pgpool of this test only."""
    started: list[PgpoolProcess] = []

    def start(overrides=None, cluster=None, **kwargs):
        pgpool = PgpoolProcess(cluster or pg_cluster, overrides, **kwargs)
        started.append(pgpool)
        return pgpool.start(timeout=30)

    yield start
    for pgpool in started:
        pgpool.stop()
        if not phase_failed(request):    # a failed test's work directory is kept
            pgpool.cleanup()


PASSWORD = "s3cret-pw"
MD5_USER, MD5_PASSWORD = "md5user", "md5-pw"


@pytest.fixture(scope="module")
def pw_cluster():
    """A one-node cluster asking SCRAM of everyone on TCP, except md5user (md5-stored password,
    md5 line in pg_hba.conf)."""
    cluster = PgCluster.create(num_standbys=0, auth="scram-sha-256", password=PASSWORD)
    try:
        node = cluster.primary
        node.psql(f"SET password_encryption = 'md5'; CREATE ROLE {MD5_USER} LOGIN PASSWORD '{MD5_PASSWORD}'")
        hba = node.datadir / "pg_hba.conf"
        hba.write_text(f"host all {MD5_USER} 127.0.0.1/32 md5\n" + hba.read_text())
        node.reload()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def hba_user(pg_cluster):
    """A login role on the trust cluster for the pool_hba.conf md5 test (replicated to standbys)."""
    name = "bad_input_hba"
    pg_cluster.primary.psql(f"DO $$BEGIN CREATE ROLE {name} LOGIN; "
                            "EXCEPTION WHEN duplicate_object THEN NULL; END$$")
    for node in pg_cluster.standbys:
        wait_for(lambda: node.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{name}'") == "1",
                 30, 0.1, f"role {name} on {node.name}")
    return name


# ---- 1. garbage instead of a startup packet ----------------------------------------------------

def _random_garbage() -> bytes:
    data = random.Random(20240917).randbytes(200)
    assert not 8 <= struct.unpack("!i", data[:4])[0] <= 10000   # the length word is invalid
    return data


GARBAGE = {
    "http_request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "random_bytes": _random_garbage(),
    "length_3": struct.pack("!i", 3),
    "length_100000": struct.pack("!i", 100000) + b"\0\3\0\0user\0postgres\0\0" + b"x" * 300,
}


@pytest.mark.parametrize("name", GARBAGE)
def test_garbage_startup_packet(guard, pool, name):
    with rawpg.RawConn(pool.host, pool.port) as conn:
        conn.send(GARBAGE[name])
        reply = conn.read_to_close(timeout=10)
    assert reply.closed, f"pgpool kept the connection open after {name}"
    assert reply.kinds() in (b"", b"E"), f"unexpected reply {reply.kinds()!r} {reply.raw!r}"
    if reply.messages:
        assert_fatal(reply, "08P01")
    guard.assert_one_log_line(r"(?:invalid|incorrect).*(?:startup packet|packet length)")
    guard.assert_nothing_lost()


# ---- 2. unacceptable startup packets -------------------------------------------------------------

def test_startup_without_user(guard, pool):
    with rawpg.RawConn(pool.host, pool.port) as conn:
        conn.send(rawpg.startup_packet({"database": "postgres"}))
        reply = conn.read_to_close()
    assert_fatal(reply, "28000", "no PostgreSQL user name specified in startup packet")
    guard.assert_one_log_line(r"no PostgreSQL user name specified")
    guard.assert_nothing_lost()


def test_protocol_2_startup_gets_v2_error(guard, pool):
    """A protocol 2.0 client gets a version-2 error: 'E' followed by NUL-terminated text."""
    body = struct.pack("!i", 2 << 16) + b"postgres".ljust(64, b"\0") + b"postgres".ljust(32, b"\0") \
        + b"\0" * (64 + 64 + 64)
    with rawpg.RawConn(pool.host, pool.port) as conn:
        conn.send(rawpg.packet(body))
        raw = conn.recv_bytes(4096, timeout=10)
        closed = conn.recv_bytes(1, timeout=5) == b"" and conn.eof
    assert raw[:1] == b"E", raw
    assert raw.endswith(b"\0"), raw
    assert b"unsupported frontend protocol" in raw, raw
    assert closed
    guard.assert_one_log_line(r"unsupported frontend protocol 2")
    guard.assert_nothing_lost()


def test_unknown_protocol_version(guard, pool):
    with rawpg.RawConn(pool.host, pool.port) as conn:
        conn.send(rawpg.startup_packet({"user": "postgres", "database": "postgres"}, version=4 << 16))
        reply = conn.read_to_close()
    assert_fatal(reply, "0A000", r"unsupported frontend protocol 4\.0")
    guard.assert_one_log_line(r"unsupported frontend protocol 4\.0")
    guard.assert_nothing_lost()


# ---- 3. SSL ----------------------------------------------------------------------------------

def test_ssl_request_answered_n_then_plain_startup(guard, pool):
    with rawpg.RawConn(pool.host, pool.port) as conn:
        conn.send(rawpg.ssl_request())
        assert conn.recv_bytes(1, timeout=10) == b"N"
        info = conn.startup()
        assert info["status"] == b"I"
        assert rawpg.data_rows(conn.simple_query("SELECT 'plain'")) == [["plain"]]
        conn.send(rawpg.message(b"X"))
    guard.assert_nothing_lost()


def test_psql_sslmode_require_and_prefer(guard, pool):
    failed = psql("SELECT 1", pool.host, pool.port, dbname="dbname=postgres sslmode=require", check=False)
    assert failed.returncode != 0
    assert "server does not support SSL" in failed.stderr, failed.stderr
    ok = psql("SELECT 'prefer'", pool.host, pool.port, dbname="dbname=postgres sslmode=prefer")
    assert ok.stdout.strip() == "prefer"
    guard.assert_nothing_lost()


# ---- 4. protocol violations after a good startup ---------------------------------------------------

def test_truncated_message_then_close(guard, pool):
    with rawpg.RawConn(pool.host, pool.port) as conn:
        conn.startup()
        conn.send(b"Q" + struct.pack("!i", 40) + b"SELECT 1")     # 40 bytes announced, 8 sent
    guard.assert_nothing_lost()
    guard.assert_one_log_line(CLIENT_VANISHED)


VIOLATIONS = {
    "length_2GB": (b"Q" + struct.pack("!i", 0x7FFFFFFF) + b"SELECT 1;", r"length"),
    "unknown_type_y": (rawpg.message(b"y", b"what is this\0"), r"message type|\by\b"),
    "length_below_4": (b"Q" + struct.pack("!i", 2), r"length"),
}


@pytest.mark.parametrize("name", VIOLATIONS)
def test_protocol_violation_after_startup(guard, pool, name):
    data, wording = VIOLATIONS[name]
    with rawpg.RawConn(pool.host, pool.port) as conn:
        conn.startup()
        conn.send(data)
        reply = conn.read_to_close(timeout=10)
    assert reply.kinds() == b"E", f"expected only an ErrorResponse, got {reply.kinds()!r}"
    err = assert_fatal(reply, "08P01")
    assert re.search(wording, err["M"], re.I), err
    guard.assert_one_log_line(r"protocol violation|invalid (?:frontend )?message|invalid message length")
    guard.assert_nothing_lost()


# ---- 5. clients that vanish mid-COPY / mid-query ------------------------------------------------------

def test_client_disconnects_mid_copy(guard, pool, pg_cluster):
    table = f"bad_input_copy_{os.getpid()}"
    primary = pg_cluster.primary
    with direct(primary) as admin:
        admin.execute(f"DROP TABLE IF EXISTS {table}")
        admin.execute(f"CREATE TABLE {table} (n int)")
    try:
        with rawpg.RawConn(pool.host, pool.port) as conn:
            conn.startup(application_name="bad_input_copy")
            conn.send(rawpg.query(f"COPY {table} FROM STDIN"))
            assert conn.read_until(b"G")[-1][0] == b"G"
            conn.send(rawpg.copy_data(b"1\n2\n3\n"))
            conn.send(rawpg.copy_data(b"4\n5\n"))
            time.sleep(0.2)
        # pgpool must close that session's backends (not pool them in the middle of a COPY)
        wait_for(lambda: not backends(pg_cluster, "bad_input_copy", active_only=False), 10, 0.1,
                 "the backends of the vanished COPY client to end")
        with direct(primary) as admin:
            assert admin.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
        guard.assert_nothing_lost()
        # the next session lands on the same worker: it can COPY and sees only its own rows
        # (in one transaction: after a write, its reads go to the primary)
        with pool.connect() as conn, conn.transaction():
            with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                copy.write(b"10\n20\n")
            assert conn.execute(f"SELECT count(*), sum(n) FROM {table}").fetchone() == (2, 30)
        guard.assert_one_log_line(CLIENT_VANISHED)
    finally:
        with direct(primary) as admin:
            admin.execute(f"DROP TABLE IF EXISTS {table}")


def test_client_disconnects_mid_query(guard, pool, pg_cluster):
    app = "bad_input_sleeper"
    with rawpg.RawConn(pool.host, pool.port) as conn:
        conn.startup(application_name=app)
        conn.send(rawpg.query("SELECT pg_sleep(5)"))
        wait_for(lambda: backends(pg_cluster, app), 10, 0.05, "pg_sleep to start")
    started = time.monotonic()
    # the earlier session is served by the other worker: it is not held up
    assert guard.other.execute("SELECT 1").fetchone()[0] == 1
    assert time.monotonic() - started < 2
    guard.assert_nothing_lost(new_timeout=15)      # waits for this worker to be free again
    wait_for(lambda: not backends(pg_cluster, app), 10, 0.1, "the abandoned query to end")
    guard.assert_one_log_line(CLIENT_VANISHED)


# ---- 6. a backend that dies in the middle of a result ---------------------------------------------

def test_backend_terminated_mid_result(own_pool, watch, pg_cluster):
    """With failover_on_backend_error = on (the default) pgpool-II 4.3.5 itself detaches the node
    and restarts every child when a session's backend is killed; off, only that session ends."""
    pgpool = own_pool({"num_init_children": 3, "failover_on_backend_error": False})
    g = watch(pgpool)
    app = "bad_input_victim"
    outcome: dict[str, object] = {}

    def run(victim):
        try:
            victim.execute("SELECT pg_sleep(0.01), g FROM generate_series(1, 1000) g").fetchall()
            outcome["result"] = "completed"
        except psycopg.Error as e:
            outcome["error"] = e

    with pgpool.connect(application_name=app) as victim:
        thread = threading.Thread(target=run, args=(victim,), daemon=True)
        thread.start()
        (node, pid, _query), = wait_for(lambda: backends(pg_cluster, app), 10, 0.05,
                                        "the slow query to start")
        time.sleep(0.3)
        with direct(node) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0] is True
        thread.join(15)
        assert not thread.is_alive(), "the client never got an answer"
    err = outcome.get("error")
    assert isinstance(err, psycopg.OperationalError), outcome
    assert err.sqlstate in ("57P01", "08006"), (err.sqlstate, str(err))
    g.assert_one_log_line(r"unable to read data from DB node|lost connection to backend node")
    g.assert_nothing_lost()
    with pgpool.connect() as conn:
        statuses = [row[3] for row in conn.execute("SHOW pool_nodes").fetchall()]
    assert statuses == ["up"] * len(pg_cluster.nodes), \
        f"failover_on_backend_error is off: a killed session must not detach a node: {statuses}"


# ---- 7. authentication failures -----------------------------------------------------------------

def _md5_response(user: str, password: str, salt: bytes) -> bytes:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode() + b"\0"


def _scram_exchange(conn: rawpg.RawConn, password: str, mechanisms: bytes):
    """Client side of SCRAM-SHA-256 (no channel binding); returns the message that ends it."""
    assert b"SCRAM-SHA-256" in mechanisms.split(b"\0"), mechanisms
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={nonce}"
    first = ("n,," + first_bare).encode()
    conn.send(rawpg.message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
    kind, payload = conn.recv_message()
    if kind != b"R":
        return kind, payload
    assert struct.unpack_from("!i", payload)[0] == 11, payload
    server_first = payload[4:].decode()
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    without_proof = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, "sha256").digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
    conn.send(rawpg.message(b"p", f"{without_proof},p={proof}".encode()))
    return conn.recv_message()


def login(pgpool: PgpoolProcess, user: str, password: str | None, database: str = "postgres") -> dict:
    """Raw login answering cleartext / md5 / SCRAM challenges.

    Returns {"ok": bool, "methods": [auth codes seen], "error": fields or None, "closed": bool}."""
    result: dict = {"ok": False, "methods": [], "error": None}
    with rawpg.RawConn(pgpool.host, pgpool.port) as conn:
        conn.send(rawpg.startup_packet({"user": user, "database": database}))
        while True:
            msg = conn.recv_message()
            if msg is None:
                break
            kind, payload = msg
            if kind == b"E":
                result["error"] = rawpg.parse_fields(payload)
                break
            if kind == b"Z":
                result["ok"] = True
                conn.send(rawpg.message(b"X"))
                break
            if kind != b"R":
                continue
            code = struct.unpack_from("!i", payload)[0]
            result["methods"].append(code)
            if code == 3:
                conn.send(rawpg.message(b"p", (password or "").encode() + b"\0"))
            elif code == 5:
                conn.send(rawpg.message(b"p", _md5_response(user, password or "", payload[4:8])))
            elif code == 10:
                kind, payload = _scram_exchange(conn, password or "", payload[4:])
                if kind == b"E":
                    result["error"] = rawpg.parse_fields(payload)
                    break
        result["closed"] = result["ok"] or conn.read_to_close(timeout=5).closed
    return result


@pytest.fixture(scope="module")
def pw_pool(pw_cluster):
    """pgpool in front of the password cluster, relaying the backend's challenge (no pool_hba)."""
    pgpool = PgpoolProcess(pw_cluster, {"num_init_children": 2, "enable_pool_hba": False,
                                        "backend_clustering_mode": "raw"})
    try:
        yield pgpool.start(timeout=30)
    finally:
        pgpool.cleanup()


@pytest.fixture
def pw_guard(watch, pw_pool):
    return watch(pw_pool)


@pytest.mark.parametrize("user,password,method", [
    ("postgres", PASSWORD, 10),         # SCRAM
    (MD5_USER, MD5_PASSWORD, 5),        # md5
])
def test_right_password_through_relayed_challenge(pw_guard, pw_pool, user, password, method):
    result = login(pw_pool, user, password)
    assert result["ok"], result
    assert method in result["methods"], result
    pw_guard.assert_nothing_lost()


@pytest.mark.parametrize("user,method", [("postgres", 10), (MD5_USER, 5)])
def test_wrong_password(pw_guard, pw_pool, user, method):
    result = login(pw_pool, user, "not-the-password")
    assert not result["ok"] and result["closed"], result
    assert method in result["methods"], result
    err = result["error"]
    assert err and err["S"] == "FATAL" and err["C"] == "28P01", result
    assert f'password authentication failed for user "{user}"' in err["M"], err
    pw_guard.assert_one_log_line(rf'password authentication failed for user "{user}"|'
                                 rf'refused the session|authentication failed')
    pw_guard.assert_nothing_lost()


def test_unknown_user_with_password_auth(pw_guard, pw_pool):
    result = login(pw_pool, "nope", "whatever")
    err = result["error"]
    assert not result["ok"] and err, result
    assert err["S"] == "FATAL" and err["C"] in ("28P01", "28000"), err
    pw_guard.assert_one_log_line(r'"nope"|refused the session|authentication failed')
    pw_guard.assert_nothing_lost()


def test_unknown_user_trust(guard, pool):
    result = login(pool, "nope", None)
    err = result["error"]
    assert not result["ok"] and result["closed"] and err, result
    assert err["S"] == "FATAL" and err["C"] in ("28000", "28P01"), err
    assert 'role "nope" does not exist' in err["M"], err
    guard.assert_one_log_line(r'role "nope" does not exist|refused the session')
    guard.assert_nothing_lost()


def test_unknown_database(guard, pool):
    result = login(pool, "postgres", None, database="nope")
    err = result["error"]
    assert not result["ok"] and result["closed"] and err, result
    assert err["S"] == "FATAL" and err["C"] == "3D000", err
    assert err["M"] == 'database "nope" does not exist', err
    guard.assert_one_log_line(r'database "nope" does not exist|refused the session')
    guard.assert_nothing_lost()


# ---- 8. pool_hba.conf ---------------------------------------------------------------------------

def test_pool_hba_reject_and_md5(own_pool, watch, hba_user):
    hba = ("local all all trust\n"
           "host all rejected_user 127.0.0.1/32 reject\n"
           f"host all {hba_user} 127.0.0.1/32 md5\n"
           "host all all 127.0.0.1/32 trust\n")
    pgpool = own_pool({"num_init_children": 2}, pool_hba=hba, pool_passwd={hba_user: "hba-pw"})
    g = watch(pgpool)
    rejected = login(pgpool, "rejected_user", None)
    err = rejected["error"]
    assert not rejected["ok"] and rejected["closed"] and err, rejected
    assert err["S"] == "FATAL" and err["C"] == "28000", err
    text = err.get("M", "") + "\n" + err.get("D", "")
    expected = 'no pool_hba.conf entry for host "127.0.0.1", user "rejected_user", database "postgres"'
    assert expected in text, err
    g.assert_one_log_line(r"no pool_hba\.conf entry|client authentication failed")

    good = login(pgpool, hba_user, "hba-pw")
    assert good["ok"] and good["methods"][:1] == [5], good

    g.mark()
    bad = login(pgpool, hba_user, "wrong-pw")
    err = bad["error"]
    assert not bad["ok"] and bad["closed"] and err, bad
    # pgpool-II itself answers a failed pool_hba md5 exchange with severity ERROR
    assert err["S"] in ("FATAL", "ERROR") and err["C"] == "28P01", err
    assert "authentication failed" in err["M"], err
    g.assert_one_log_line(rf'authentication failed for user "{hba_user}"|md5 authentication failed')
    g.assert_nothing_lost()


# ---- 9. limits and timeouts ---------------------------------------------------------------------

def test_reserved_connections(own_pool, watch):
    pgpool = own_pool({"num_init_children": 2, "reserved_connections": 1})

    def first_admitted():        # the harness's readiness connection may still be counted
        try:
            return watch(pgpool)
        except psycopg.OperationalError as e:
            if "too many clients" in str(e):
                return None
            raise

    # the guard holds the one connection the limit allows
    g = wait_for(first_admitted, 10, 0.1, "the first connection to be admitted")
    with rawpg.RawConn(pgpool.host, pgpool.port) as conn:
        conn.send(rawpg.startup_packet({"user": "postgres", "database": "postgres"}))
        reply = conn.read_to_close(timeout=3)
    assert_fatal(reply, "53300", "Sorry, too many clients already")
    g.assert_one_log_line(r"too many clients")
    assert g.other.execute("SELECT 1").fetchone()[0] == 1
    g.other.close()
    g.other = None

    def new_session_works():     # once pgpool has seen it go, a new connection is allowed again
        try:
            with psycopg.connect(pgpool.dsn(), autocommit=True, connect_timeout=5) as conn:
                return conn.execute("SELECT 'fresh'").fetchone()[0] == "fresh"
        except psycopg.OperationalError as e:
            if "too many clients" in str(e):
                return False
            raise

    wait_for(new_session_works, 5, 0.1, "a connection to be admitted after the first one closed")
    assert "Traceback" not in pgpool.log_text()


@pytest.fixture(scope="module")
def timeout_pool(pg_cluster):
    pgpool = PgpoolProcess(pg_cluster, {"num_init_children": 2, "client_idle_limit": 1,
                                        "authentication_timeout": 1})
    try:
        yield pgpool.start(timeout=30)
    finally:
        pgpool.cleanup()


def test_client_idle_limit(watch, timeout_pool):
    g = watch(timeout_pool)
    busy = g.keep_busy()
    with rawpg.RawConn(timeout_pool.host, timeout_pool.port) as conn:
        conn.startup()
        idle_from = time.monotonic()
        reply = conn.read_to_close(timeout=10)
        waited = time.monotonic() - idle_from
    assert 0.8 <= waited <= 4, f"idle session closed after {waited:.2f}s"
    err = assert_fatal(reply, "57000")
    assert "client_idle_limit" in err.get("M", "") + err.get("D", ""), err
    g.assert_one_log_line(r"client_idle_limit")
    busy.finish()                # from here on the earlier session must be used within 1 s
    g.assert_nothing_lost()


def test_authentication_timeout(watch, timeout_pool):
    g = watch(timeout_pool)
    busy = g.keep_busy()
    with rawpg.RawConn(timeout_pool.host, timeout_pool.port) as conn:
        connected = time.monotonic()
        reply = conn.read_to_close(timeout=10)
        waited = time.monotonic() - connected
    assert reply.closed, "pgpool never closed the silent connection"
    assert 0.8 <= waited <= 4, f"silent client closed after {waited:.2f}s"
    assert reply.kinds() in (b"", b"E"), reply.kinds()
    busy.finish()
    g.assert_nothing_lost()      # the worker serves the next client
    g.assert_one_log_line(r"authentication timeout|timed? ?out")


# ---- 10. a killed worker is replaced ------------------------------------------------------------

def test_sigkill_worker_is_replaced(guard, pool):
    expected = pool.settings["num_init_children"]
    workers = wait_for(lambda: len(worker_pids(guard.other)) == expected and worker_pids(guard.other),
                       10, 0.1, f"{expected} workers in SHOW pool_processes")
    assert workers <= {p.pid for p in live_children(pool)}
    port = local_port(guard.other)
    serving_other = {p.pid for p in live_children(pool) if p.pid in workers
                     and any(c.raddr and c.raddr.port == port for c in p.net_connections(kind="tcp"))}
    assert len(serving_other) == 1, "cannot tell which worker serves the earlier session"
    victim = min(workers - serving_other)
    os.kill(victim, signal.SIGKILL)

    def replaced():
        now = worker_pids(guard.other)
        alive = {p.pid for p in live_children(pool)}
        return victim not in now and len(now) == len(workers) and now <= alive and now

    after = wait_for(replaced, 10, 0.1, "the killed worker to be replaced")
    assert len(after - workers) == 1
    guard.assert_one_log_line(rf"(?:pid:? ?{victim}\b.*(?:signal|killed|terminated))|"
                              rf"(?:(?:signal|killed|terminated).*\b{victim}\b)")
    guard.assert_nothing_lost()
    for _ in range(4):             # connections keep working, whichever worker takes them
        with pool.connect() as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1


# ---- 11. configuration errors -----------------------------------------------------------------------

@pytest.mark.parametrize("bad_line,parameter", [
    ("num_init_children = abc", "num_init_children"),
    ("foo_bar = 1", "foo_bar"),
])
def test_config_error_names_file_line_parameter(tmp_path, bad_line, parameter):
    conf = tmp_path / "bad.conf"
    lines = ["# a pgpool.conf with one bad line", "listen_addresses = '127.0.0.1'",
             f"pid_file_name = '{tmp_path}/pgpool.pid'", f"logdir = '{tmp_path}'",
             f"unix_socket_directories = '{tmp_path}'", bad_line, f"port = {free_ports(1)[0]}"]
    conf.write_text("\n".join(lines) + "\n")
    (tmp_path / "pcp.conf").write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "pgpool.cli", "-n", "-f", str(conf),
                             "-F", str(tmp_path / "pcp.conf")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=repo_env(),
                            cwd=tmp_path, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"pgpool started despite {bad_line!r}:\n{stdout}{stderr}")
    output = stdout + stderr
    assert proc.returncode != 0, output
    assert str(conf) in output, output
    assert re.search(rf"\bline {lines.index(bad_line) + 1}\b", output), output
    assert parameter in output, output
    assert "Traceback" not in output, output
    assert not (tmp_path / "pgpool.pid").exists()
