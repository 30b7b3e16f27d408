"""Wire-protocol integration tests: psql, psycopg 3 and pgbench through our pgpool to real PostgreSQL 15.

Most tests run twice, once per clustering mode (raw and streaming_replication), against one pgpool
per mode shared by the module.  Tests that need their own settings (pooling with a single child,
load-balancing weights, per-node statement logging) start their own pgpool.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import threading
import time
from decimal import Decimal
from datetime import date, datetime, timezone
from uuid import UUID

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from tests.conftest import phase_failed
from tests.harness.clients import client_program, pgbench, psql, psql_value
from tests.harness.pgpool_process import PgpoolProcess
from tests.harness.wait import wait_for as _wait_for

MODES = ["raw", "streaming_replication"]
NUM_CHILDREN = 8        # above the pgbench client count (4) plus the test's own connections
MAX_POOL = 2
TEST_DB = "protodb"     # pgbench tables and pooled sessions (postgres is never pooled)
POOL_DB = "pooltest"
TEST_TIMEOUT = 90       # seconds: a hung proxy fails the test instead of the whole run

POOL_NODES_COLUMNS = ["node_id", "hostname", "port", "status", "pg_status", "lb_weight", "role", "pg_role",
                      "select_cnt", "load_balance_node", "replication_delay", "replication_state",
                      "replication_sync_state", "last_status_change"]
POOL_PROCESSES_COLUMNS = ["pool_pid", "start_time", "client_connection_count", "database", "username",
                          "backend_connection_time", "pool_counter", "status"]
POOL_POOLS_COLUMNS = ["pool_pid", "start_time", "client_connection_count", "pool_id", "backend_id", "database",
                      "username", "backend_connection_time", "client_connection_time",
                      "client_disconnection_time", "client_idle_duration", "majorversion", "minorversion",
                      "pool_counter", "pool_backendpid", "pool_connected", "status"]
POOL_BACKEND_STATS_COLUMNS = ["node_id", "hostname", "port", "status", "role", "select_cnt", "insert_cnt",
                              "update_cnt", "delete_cnt", "ddl_cnt", "other_cnt", "panic_cnt", "fatal_cnt",
                              "error_cnt"]
# role column per mode: node 0 / the other nodes
ROLES = {"raw": ("main", "replica"), "streaming_replication": ("primary", "standby")}
CLUSTERING_MODE_NUMBER = {"raw": "5", "streaming_replication": "1"}  # SHOW pool_status shows enums as integers
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


# -- helpers ------------------------------------------------------------------------------------

# the shared polling helper, with this file's usual pace
def wait_for(predicate, timeout: float = 10, interval: float = 0.05, what: str = "condition"):
    return _wait_for(predicate, timeout, interval, what)


def wait_replayed(cluster, timeout: float = 15) -> None:
    """Wait until every standby has replayed the primary's current WAL position.

    Reads outside a transaction may be load balanced to a standby, so a test that reads what it
    just wrote in autocommit mode waits for replication first (as it would with pgpool-II).  The
    test clusters run with synchronous_commit = off, so the last commits may not even be written:
    the synchronous commit of a transaction that wrote WAL (a logical message) flushes them."""
    with psycopg.connect(cluster.primary.dsn(), autocommit=True, connect_timeout=10) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("SELECT pg_logical_emit_message(true, 'pgpool_test', 'sync')")
        target = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0]
    for node in cluster.standbys:
        with psycopg.connect(node.dsn(), autocommit=True, connect_timeout=10) as conn:
            wait_for(lambda: conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0],
                     timeout)


def run_psql(pool: PgpoolProcess, script: str, dbname: str = TEST_DB,
             args: tuple[str, ...] = ("-X", "-A", "-t", "-q")) -> subprocess.CompletedProcess:
    """Run a psql script (read from stdin, so backslash commands work) through ``pool``."""
    cmd = [client_program("psql"), "-h", pool.host, "-p", str(pool.port), "-U", "postgres", "-d", dbname,
           *args, "-f", "-"]
    env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"}
    if pool.cluster.password:
        env["PGPASSWORD"] = pool.cluster.password
    return subprocess.run(cmd, input=script, capture_output=True, text=True, env=env, timeout=60)


def show(conn: psycopg.Connection, command: str) -> tuple[list[str], list[tuple]]:
    """Column names and rows of a SHOW / PGPOOL SHOW command.  The tag is `SELECT <rows>` as in
    pgpool-II; a second result set (4.3.5's double RowDescription for pool_version and
    pool_processes) is a failure."""
    cur = conn.execute(command)
    columns = [d.name for d in cur.description]
    rows = cur.fetchall()
    assert cur.statusmessage == f"SELECT {len(rows)}", command
    assert not cur.nextset(), f"{command} sent more than one result set"
    return columns, rows


def create_database(cluster, name: str) -> None:
    if cluster.primary.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "0":
        cluster.primary.psql(f"CREATE DATABASE {name}")


def backend_stats(conn) -> dict[str, dict[str, int]]:
    """node_id -> counter name -> value from SHOW pool_backend_stats."""
    columns, rows = show(conn, "SHOW pool_backend_stats")
    counters = [c for c in columns if c.endswith("_cnt")]
    return {row[0]: {c: int(row[columns.index(c)]) for c in counters} for row in rows}


def pgpool_log_lines(pool: PgpoolProcess, pattern: str, timeout: float = 5) -> list[re.Match]:
    """Log lines of ``pool`` matching ``pattern`` (waits until at least one appears)."""
    regex = re.compile(pattern)
    return wait_for(lambda: [m for line in pool.log_text().splitlines() if (m := regex.search(line))], timeout)


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _test_timeout():
    """Fail (rather than hang) a test whose client waits forever on a broken proxy."""
    def expired(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_TIMEOUT}s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def databases(pg_cluster):
    for name in (TEST_DB, POOL_DB):
        create_database(pg_cluster, name)
    wait_replayed(pg_cluster)


@pytest.fixture(scope="module", params=MODES)
def mode(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def pool(mode, pg_cluster, databases):
    """The module's pgpool for ``mode``: 8 children, 2 pool slots, weights 1/1."""
    pgpool = PgpoolProcess(pg_cluster, {"backend_clustering_mode": mode, "num_init_children": NUM_CHILDREN,
                                        "max_pool": MAX_POOL})
    pgpool.start()
    yield pgpool
    pgpool.cleanup()


@pytest.fixture(autouse=True)
def _pool_log_on_failure(request):
    """Print the shared pgpool's log written during a failed test (pgpool_factory does this for its own)."""
    if "pool" not in request.fixturenames:
        yield
        return
    pgpool = request.getfixturevalue("pool")
    start = len(pgpool.log_text())
    yield
    if phase_failed(request):
        print(f"\n===== shared pgpool log during the test ({pgpool.workdir}) =====\n{pgpool.log_text()[start:]}")


@pytest.fixture
def conn(pool):
    with pool.connect(dbname=TEST_DB) as connection:
        yield connection


@pytest.fixture
def table(conn, pg_cluster, request):
    """A fresh table named after the test (created through pgpool, replicated before use)."""
    name = "proto_" + re.sub(r"\W", "_", request.node.originalname.removeprefix("test_"))[:40]
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE TABLE {name} (a int, b text)")
    wait_replayed(pg_cluster)
    return name


# -- psql -----------------------------------------------------------------------------------------

def test_psql_simple_query(pool):
    assert psql_value("SELECT 1 + 1", pool.host, pool.port) == "2"
    assert psql_value("SELECT current_database(), current_user", pool.host, pool.port, dbname=TEST_DB) \
        == f"{TEST_DB}|postgres"
    rows = psql_value("SELECT g FROM generate_series(1, 5) g", pool.host, pool.port).splitlines()
    assert rows == ["1", "2", "3", "4", "5"]


def test_psql_multi_statement_query(pool, table):
    # One simple Query message carrying several statements; psql 15 prints every result.
    out = psql_value("SELECT 1; SELECT 'two'; SELECT 3", pool.host, pool.port)
    assert out.splitlines() == ["1", "two", "3"]
    out = psql_value(f"INSERT INTO {table} VALUES (1, 'x'); INSERT INTO {table} VALUES (2, 'y'); "
                     f"SELECT count(*) FROM {table}", pool.host, pool.port, dbname=TEST_DB)
    assert out == "2"


def test_psql_error_in_transaction_then_rollback(pool, table):
    result = run_psql(pool, f"""
BEGIN;
INSERT INTO {table} VALUES (1, 'rolled back');
SELECT 1/0;
SELECT 'inside aborted transaction';
ROLLBACK;
SELECT 'alive after rollback';
SELECT * FROM no_such_table_proto;
SELECT 'alive after error';
SELECT count(*) FROM {table};
""")
    assert result.returncode == 0, result.stderr
    assert "division by zero" in result.stderr
    assert "current transaction is aborted" in result.stderr
    assert 'relation "no_such_table_proto" does not exist' in result.stderr
    assert result.stdout.split() == ["alive", "after", "rollback", "alive", "after", "error", "0"]


def test_psql_error_stops_script_with_on_error_stop(pool):
    result = run_psql(pool, "SELECT 1;\nSELECT 1/0;\nSELECT 'not reached';\n",
                      args=("-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"))
    assert result.returncode == 3
    assert result.stdout.split() == ["1"]
    assert "division by zero" in result.stderr


def test_psql_copy_both_ways(pool, table, tmp_path, pg_cluster):
    source = tmp_path / "in.csv"
    lines = [f'{i},"text {i}, with comma"' if i % 7 else f"{i}," for i in range(1, 5001)]
    source.write_text("\n".join(lines) + "\n")
    result = run_psql(pool, f"\\copy {table} FROM '{source}' WITH (FORMAT csv)\n", args=("-X", "-A", "-t"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "COPY 5000"
    wait_replayed(pg_cluster)
    target = tmp_path / "out.csv"
    result = run_psql(pool, f"\\copy (SELECT a, b FROM {table} ORDER BY a) TO '{target}' WITH (FORMAT csv)\n",
                      args=("-X", "-A", "-t"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "COPY 5000"
    assert target.read_text() == source.read_text()


# -- psycopg: extended protocol ----------------------------------------------------------------

def test_parameters_extended_protocol(conn):
    row = conn.execute("SELECT %s::int + %s, %s::text, %s::text IS NULL, %s::numeric * 2, %s::date, %s::bytea",
                       (40, 2, "héllo wörld ✓", None, Decimal("1.25"), date(2024, 2, 29), b"\x00\x01\xff")
                       ).fetchone()
    assert row == (42, "héllo wörld ✓", True, Decimal("2.50"), date(2024, 2, 29), b"\x00\x01\xff")
    # Many statements with parameters in a row on the same unnamed statement.
    for i in range(50):
        assert conn.execute("SELECT %s::int * %s::int", (i, i)).fetchone() == (i * i,)


def test_prepared_statements(conn, table):
    for i in range(10):
        conn.execute(f"INSERT INTO {table} (a, b) VALUES (%s, %s)", (i, f"v{i}"), prepare=True)
    for i in range(10):
        assert conn.execute("SELECT %s::int + 1, %s::text", (i, "p"), prepare=True).fetchone() == (i + 1, "p")
    with conn.transaction():  # read after a write inside the transaction: primary in streaming mode
        conn.execute(f"UPDATE {table} SET b = b || '!' WHERE a = %s", (3,), prepare=True)
        rows = conn.execute(f"SELECT a, b FROM {table} WHERE a >= %s ORDER BY a", (0,), prepare=True).fetchall()
    assert rows == [(i, f"v{i}!" if i == 3 else f"v{i}") for i in range(10)]
    # Really prepared server side: named statements live in the session (on the primary for writes).
    prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                            (f"INSERT INTO {table}%",)).fetchone()[0]
    assert prepared == 1


def test_prepared_statement_error_then_reuse(conn):
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 10 / %s::int", (0,), prepare=True)
    assert conn.execute("SELECT 10 / %s::int", (5,), prepare=True).fetchone() == (2,)
    assert conn.execute("SELECT 10 / %s::int", (2,), prepare=True).fetchone() == (5,)


def test_executemany(conn, table, pg_cluster):
    cur = conn.cursor()
    cur.executemany(f"INSERT INTO {table} (a, b) VALUES (%s, %s)", [(i, f"row {i}") for i in range(500)])
    assert cur.rowcount == 500
    cur.executemany(f"INSERT INTO {table} (a, b) VALUES (%s, %s) RETURNING a * 10",
                    [(1000 + i, None) for i in range(5)], returning=True)
    returned = []
    while True:
        returned.append(cur.fetchone()[0])
        if not cur.nextset():
            break
    assert returned == [10000 + 10 * i for i in range(5)]
    wait_replayed(pg_cluster)
    assert conn.execute(f"SELECT count(*), count(b), sum(a) FROM {table}").fetchone() == \
        (505, 500, sum(range(500)) + sum(range(1000, 1005)))


def test_server_side_cursor(pool):
    with pool.connect(dbname=TEST_DB, autocommit=False) as conn:
        with conn.cursor(name="proto_named_cursor") as cur:
            cur.itersize = 500
            cur.execute("SELECT g, repeat('z', g % 50) FROM generate_series(1, 20000) g ORDER BY g")
            seen, total = 0, 0
            while batch := cur.fetchmany(1000):
                assert len(batch) <= 1000
                seen += len(batch)
                total += sum(row[0] for row in batch)
            assert (seen, total) == (20000, 20000 * 20001 // 2)
        # A scrollable cursor: move around, then read.
        with conn.cursor(name="proto_scroll_cursor", scrollable=True) as cur:
            cur.execute("SELECT g FROM generate_series(1, 100) g")
            assert cur.fetchone() == (1,)
            cur.scroll(49)
            assert cur.fetchone() == (51,)
            cur.scroll(0, mode="absolute")
            assert cur.fetchmany(3) == [(1,), (2,), (3,)]
        conn.commit()
    # WITH HOLD cursor in autocommit mode survives the implicit transaction.
    with pool.connect(dbname=TEST_DB, autocommit=True) as conn:
        with conn.cursor(name="proto_hold_cursor", withhold=True) as cur:
            cur.execute("SELECT g FROM generate_series(1, 3000) g")
            assert sum(len(cur.fetchmany(700)) for _ in range(5)) == 3000


def test_pipeline_mode(conn, table, pg_cluster):
    with conn.pipeline():
        for i in range(300):
            conn.execute(f"INSERT INTO {table} (a, b) VALUES (%s, %s)", (i, str(i)))
    cursors = []
    with conn.pipeline() as pipeline:
        for i in range(200):
            cursors.append(conn.execute("SELECT %s::int * 2, %s::text", (i, f"s{i}")))
        pipeline.sync()
        cursors.append(conn.execute("SELECT 'after sync'"))
    assert [c.fetchone() for c in cursors[:200]] == [(i * 2, f"s{i}") for i in range(200)]
    assert cursors[200].fetchone() == ("after sync",)
    wait_replayed(pg_cluster)
    assert conn.execute(f"SELECT count(*), sum(a) FROM {table}").fetchone() == (300, sum(range(300)))


def test_pipeline_error_then_recovery(conn):
    with pytest.raises(psycopg.errors.DivisionByZero):
        with conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("SELECT 1 / %s::int", (0,))
            conn.execute("SELECT 2")
    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert conn.execute("SELECT %s::int", (3,)).fetchone() == (3,)
    with conn.pipeline():
        cur = conn.execute("SELECT %s::text", ("pipeline again",))
    assert cur.fetchone() == ("pipeline again",)


def test_pipeline_in_transaction(pool, table):
    with pool.connect(dbname=TEST_DB, autocommit=False) as conn:
        with conn.pipeline():
            for i in range(50):
                conn.execute(f"INSERT INTO {table} (a, b) VALUES (%s, 'tx')", (i,))
            cur = conn.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchone() == (50,)
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        conn.rollback()
        assert conn.execute(f"SELECT count(*) FROM {table} WHERE b = 'tx'").fetchone() == (0,)
        conn.rollback()


# -- psycopg: COPY ----------------------------------------------------------------------------

def test_copy_from_stdin_and_to_stdout(conn, table, pg_cluster):
    # ~4 MB of COPY text, sent in 64 kB writes.
    data = "".join(f"{i}\t{'payload-%06d-' % i}{'x' * 80}\n" for i in range(40000)).encode()
    assert len(data) > 4_000_000
    cur = conn.cursor()
    with cur.copy(f"COPY {table} (a, b) FROM STDIN") as copy:
        for offset in range(0, len(data), 65536):
            copy.write(data[offset:offset + 65536])
    assert cur.rowcount == 40000
    wait_replayed(pg_cluster)
    received = bytearray()
    with cur.copy(f"COPY (SELECT a, b FROM {table} ORDER BY a) TO STDOUT") as copy:
        for block in copy:
            received += block
    assert len(received) == len(data)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()
    assert conn.execute("SELECT 'after copy'").fetchone() == ("after copy",)


def test_copy_rows_with_nulls_and_special_characters(conn, table, pg_cluster):
    rows = [(1, None), (2, "tab\there"), (3, "new\nline"), (4, "back\\slash"), (5, ""), (None, "no key")]
    cur = conn.cursor()
    with cur.copy(f"COPY {table} (a, b) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    wait_replayed(pg_cluster)
    with cur.copy(f"COPY (SELECT a, b FROM {table} ORDER BY a NULLS LAST) TO STDOUT") as copy:
        copy.set_types(["int4", "text"])
        assert list(copy.rows()) == rows


def test_copy_from_stdin_error_keeps_session(conn, table):
    cur = conn.cursor()
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        with cur.copy(f"COPY {table} (a, b) FROM STDIN") as copy:
            copy.write(b"1\tok\nnot-a-number\tbad\n")
    assert conn.execute("SELECT 'session alive'").fetchone() == ("session alive",)


# -- psycopg: results ---------------------------------------------------------------------------

def test_large_result_fetchall(conn):
    cur = conn.execute("SELECT g, md5(g::text) FROM generate_series(1, 300000) g")
    rows = cur.fetchall()
    assert len(rows) == 300000
    assert rows[0] == (1, hashlib.md5(b"1").hexdigest())
    assert rows[-1] == (300000, hashlib.md5(b"300000").hexdigest())


def test_large_result_streamed(conn):
    count, total = 0, 0
    for (value,) in conn.cursor().stream("SELECT g FROM generate_series(1, 300000) g"):
        count += 1
        total += value
    assert (count, total) == (300000, 300000 * 300001 // 2)
    assert conn.execute("SELECT 'after stream'").fetchone() == ("after stream",)


def test_binary_results(conn):
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    uuid = UUID("12345678-1234-5678-1234-567812345678")
    cur = conn.cursor(binary=True)
    row = cur.execute(
        "SELECT %s::int4, %s::int8, %s::text, %s::bytea, %s::float8, %s::numeric, %s::timestamptz, "
        "%s::int4[], %s::bool, %s::uuid, %s::int4, '{\"k\": [1, 2]}'::jsonb",
        (42, 2 ** 40, "bïnary", b"\x00\xff" * 100, 1.5, Decimal("-123.456"), when, [1, None, 3], True, uuid, None)
    ).fetchone()
    assert row[:11] == (42, 2 ** 40, "bïnary", b"\x00\xff" * 100, 1.5, Decimal("-123.456"), when, [1, None, 3],
                        True, uuid, None)
    assert row[11] == {"k": [1, 2]}
    assert [cur.pgresult.fformat(i) for i in range(cur.pgresult.nfields)] == [1] * 12
    rows = cur.execute("SELECT g, g::text FROM generate_series(1, 1000) g").fetchall()
    assert rows == [(g, str(g)) for g in range(1, 1001)]


def test_nulls(conn):
    assert conn.execute("SELECT NULL, NULL::int, '', 'NULL'").fetchone() == (None, None, "", "NULL")
    assert conn.execute("SELECT %s::text, %s::int, %s::text", (None, None, "")).fetchone() == (None, None, "")
    rows = conn.execute("SELECT CASE WHEN g % 2 = 0 THEN NULL ELSE g END FROM generate_series(1, 6) g").fetchall()
    assert rows == [(1,), (None,), (3,), (None,), (5,), (None,)]
    assert conn.cursor(binary=True).execute("SELECT NULL::int8, %s::text", (None,)).fetchone() == (None, None)


# -- psycopg: asynchronous messages, cancel ------------------------------------------------------

def test_listen_notify_between_two_connections(pool):
    with pool.connect(dbname=TEST_DB) as listener, pool.connect(dbname=TEST_DB) as notifier:
        listener.execute("LISTEN proto_channel")
        notifier.execute("NOTIFY proto_channel, 'first'")
        notifier.execute("SELECT pg_notify(%s, %s)", ("proto_channel", "second"))
        # The listener is idle: pgpool must relay NotificationResponse without a pending query.
        received = list(listener.notifies(timeout=10, stop_after=2))
        assert [(n.channel, n.payload) for n in received] == [("proto_channel", "first"),
                                                              ("proto_channel", "second")]
        assert {n.pid for n in received} == {notifier.info.backend_pid}
        listener.execute("UNLISTEN proto_channel")
        notifier.execute("NOTIFY proto_channel, 'not delivered'")
        assert list(listener.notifies(timeout=0.5)) == []


def test_notice_response(conn):
    notices = []
    # A Diagnostic is only readable inside the handler.
    conn.add_notice_handler(lambda diag: notices.append((diag.severity_nonlocalized, diag.message_primary)))
    conn.execute("DO $$BEGIN RAISE NOTICE 'proto notice %', 42; RAISE WARNING 'proto warning'; END$$")
    assert notices == [
        ("NOTICE", "proto notice 42"), ("WARNING", "proto warning")]
    assert conn.execute("SELECT 'after notice'").fetchone() == ("after notice",)


@pytest.mark.parametrize("method", ["cancel", "cancel_safe"])
@pytest.mark.parametrize("query", [
    "SELECT pg_sleep(30)",
    # A read (no volatile function): load balanced, possibly to the standby.
    "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b",
], ids=["pg_sleep", "long_read"])
def test_cancel(pool, query, method):
    with pool.connect(dbname=TEST_DB) as conn:
        timer = threading.Timer(0.5, getattr(conn, method))
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute(query)
        finally:
            timer.cancel()
        assert time.monotonic() - started < 10
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute("SELECT 'still working'").fetchone() == ("still working",)


def test_cancel_inside_transaction(pool):
    with pool.connect(dbname=TEST_DB, autocommit=False) as conn:
        conn.execute("SELECT 1")
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(30)")
        finally:
            timer.cancel()
        assert conn.info.transaction_status == TransactionStatus.INERROR
        conn.rollback()
        assert conn.execute("SELECT 'after rollback'").fetchone() == ("after rollback",)
        conn.rollback()


# -- pgbench ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pgbench_init(pool, pg_cluster):
    result = pgbench(["-i", "-s", "1", "-q"], pool.host, pool.port, dbname=TEST_DB, password=pool.cluster.password,
                     check=False, timeout=120)
    wait_replayed(pg_cluster)
    return result


def test_pgbench_init(pgbench_init):
    assert pgbench_init.returncode == 0, pgbench_init.stderr
    assert "done in" in pgbench_init.stderr


@pytest.mark.parametrize("args", [
    ["-S", "-M", "simple"],
    ["-S", "-M", "extended"],
    ["-S", "-M", "prepared"],
    ["-M", "simple"],            # default TPC-B-like script
    ["-S", "-C"],                # a new connection per transaction
], ids=["select-simple", "select-extended", "select-prepared", "tpcb", "select-connect"])
def test_pgbench_run(pool, pgbench_init, args):
    assert pgbench_init.returncode == 0, pgbench_init.stderr
    result = pgbench([*args, "-c", "4", "-j", "2", "-T", "2"], pool.host, pool.port, dbname=TEST_DB,
                     password=pool.cluster.password, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "number of failed transactions: 0 " in result.stdout, result.stdout
    processed = int(re.search(r"number of transactions actually processed: (\d+)", result.stdout).group(1))
    assert processed > 0


# -- SHOW pool_* and PGPOOL SHOW/SET/RESET --------------------------------------------------------

def test_show_pool_nodes(pool, conn, mode):
    columns, rows = show(conn, "SHOW pool_nodes")
    assert columns == POOL_NODES_COLUMNS
    assert [row[0] for row in rows] == [str(n.node_id) for n in pool.cluster.nodes]
    main_role, other_role = ROLES[mode]
    for row, node in zip(rows, pool.cluster.nodes):
        record = dict(zip(columns, row))
        assert (record["hostname"], record["port"]) == (node.host, str(node.port))
        assert record["lb_weight"] == f"{1 / len(rows):f}"
        assert record["role"] == (main_role if node.node_id == 0 else other_role)
        assert record["select_cnt"].isdigit()
        assert record["load_balance_node"] in ("true", "false")
        assert record["pg_status"] in ("up", "unknown")  # live probe; unknown without health checks
        assert record["pg_role"] in (record["role"], "unknown")
        assert TIMESTAMP_RE.match(record["last_status_change"])
    assert rows[0][3] == "up"
    assert all(row[3] in ("up", "waiting") for row in rows)
    assert [row[9] for row in rows].count("true") == 1
    if mode == "streaming_replication":
        assert all(row[3] == "up" for row in rows)


def test_show_pool_nodes_replication_state(pgpool_factory):
    """The streaming-replication check fills replication_state / replication_sync_state."""
    pgpool = pgpool_factory({"backend_clustering_mode": "streaming_replication",
                             "sr_check_period": 1})
    deadline = time.monotonic() + 10
    while True:
        with pgpool.connect() as conn:
            columns, rows = show(conn, "SHOW pool_nodes")
        if rows[1][11] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rows[1][11] == "streaming" and rows[1][12] == "async"
    assert rows[0][11] == "" and rows[0][10] == "0"       # the primary has no replication state


def my_pool_rows(conn) -> list[dict[str, str]]:
    """SHOW pool_pools rows of the pool slot serving ``conn`` (found by its BackendKeyData pid)."""
    columns, rows = show(conn, "SHOW pool_pools")
    records = [dict(zip(columns, row)) for row in rows]
    main = [r for r in records if r["pool_backendpid"] == str(conn.info.backend_pid)]
    assert len(main) == 1, f"no single pool_pools row with backend pid {conn.info.backend_pid}: {rows}"
    return [r for r in records if (r["pool_pid"], r["pool_id"]) == (main[0]["pool_pid"], main[0]["pool_id"])]


def test_show_pool_processes(pool, conn):
    my_pid = my_pool_rows(conn)[0]["pool_pid"]
    columns, rows = show(conn, "SHOW pool_processes")
    assert columns == POOL_PROCESSES_COLUMNS
    assert len(rows) == NUM_CHILDREN
    assert all(row[0].isdigit() and TIMESTAMP_RE.match(row[1]) for row in rows)
    assert {row[7] for row in rows} <= {"Execute command", "Wait for connection", "Idle", "Idle in transaction"}
    mine = dict(zip(columns, next(row for row in rows if row[0] == my_pid)))
    assert (mine["database"], mine["username"]) == (TEST_DB, "postgres")
    assert TIMESTAMP_RE.match(mine["backend_connection_time"])
    assert int(mine["pool_counter"]) >= 1
    assert mine["status"] == "Execute command"  # the process answering is running this command


def test_show_pool_processes_right_after_start(pgpool_factory, mode, databases):
    """Every child is listed as soon as pgpool accepts clients; the first use of a pool counts 1."""
    pgpool = pgpool_factory({"backend_clustering_mode": mode, "num_init_children": 6})
    with pgpool.connect(dbname=TEST_DB) as conn:
        columns, rows = show(conn, "SHOW pool_processes")
        assert len(rows) == 6
        mine = [dict(zip(columns, row)) for row in rows if row[3] == TEST_DB]
        assert [(r["pool_counter"], r["status"]) for r in mine] == [("1", "Execute command")]


def test_show_pool_pools(pool, conn, mode):
    columns, rows = show(conn, "SHOW pool_pools")
    assert columns == POOL_POOLS_COLUMNS
    assert len(rows) == NUM_CHILDREN * MAX_POOL * len(pool.cluster.nodes)
    mine = my_pool_rows(conn)
    assert [r["backend_id"] for r in mine] == [str(n.node_id) for n in pool.cluster.nodes]
    main = mine[0]
    assert main["pool_backendpid"] == str(conn.info.backend_pid)  # BackendKeyData is node 0's
    assert (main["database"], main["username"]) == (TEST_DB, "postgres")
    assert main["pool_connected"] == "1"
    assert (main["majorversion"], main["minorversion"]) == ("3", "0")
    assert TIMESTAMP_RE.match(main["backend_connection_time"])
    assert TIMESTAMP_RE.match(main["client_connection_time"])
    assert int(main["pool_counter"]) >= 1
    assert main["status"] == "Execute command"
    if mode == "streaming_replication":  # a session holds a connection to every node
        assert mine[1]["database"] == TEST_DB and int(mine[1]["pool_backendpid"]) > 0
        assert mine[1]["pool_backendpid"] != main["pool_backendpid"]


def test_show_pool_version(pool, conn):
    assert show(conn, "SHOW pool_version") == (["pool_version"], [("4.3.5 (tamahomeboshi)",)])
    # psql prints a single table (pgpool-II 4.3.5 sent two RowDescriptions).
    out = psql("SHOW pool_version", pool.host, pool.port, args=("-X",)).stdout
    assert out.count("pool_version") == 1 and "(1 row)" in out and "(0 rows)" not in out


def test_show_pool_status(pool, conn, mode):
    columns, rows = show(conn, "SHOW pool_status")
    assert columns == ["item", "value", "description"]
    assert len(rows) == 152  # pgpool-II 4.3.5 with 2 backends
    values = {row[0]: row[1] for row in rows}
    assert values["port"] == str(pool.port)
    assert values["listen_addresses"] == "127.0.0.1"
    assert values["num_init_children"] == str(NUM_CHILDREN)
    assert values["max_pool"] == str(MAX_POOL)
    assert values["backend_clustering_mode"] == CLUSTERING_MODE_NUMBER[mode]
    assert all(row[2] for row in rows)


def test_show_pool_backend_stats(pool, conn, mode, table):
    columns, rows = show(conn, "SHOW pool_backend_stats")
    assert columns == POOL_BACKEND_STATS_COLUMNS
    main_role, other_role = ROLES[mode]
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        (str(n.node_id), n.host, str(n.port), main_role if n.node_id == 0 else other_role) for n in pool.cluster.nodes]
    before = backend_stats(conn)
    conn.execute(f"INSERT INTO {table} VALUES (1, 'a')")
    conn.execute(f"UPDATE {table} SET b = 'b'")
    conn.execute(f"DELETE FROM {table}")
    conn.execute(f"ALTER TABLE {table} ADD COLUMN c int")
    conn.execute("SELECT 1")
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1/0")
    after = backend_stats(conn)
    for counter in ("insert_cnt", "update_cnt", "delete_cnt", "ddl_cnt"):
        assert after["0"][counter] - before["0"][counter] >= 1, counter
    total = {c: sum(after[n][c] - before[n][c] for n in after) for c in after["0"]}
    assert total["select_cnt"] >= 1
    assert total["error_cnt"] >= 1


def test_show_pool_command_through_extended_protocol(conn):
    # pgpool-II 4.3.5 passes these to PostgreSQL; ours answers them in the extended protocol too.
    assert conn.execute("SHOW pool_version", prepare=True).fetchone() == ("4.3.5 (tamahomeboshi)",)
    assert conn.execute("SHOW pool_version", prepare=True).fetchone() == ("4.3.5 (tamahomeboshi)",)


def test_pgpool_show_set_reset(pool, conn):
    assert show(conn, "PGPOOL SHOW port") == (["port"], [(str(pool.port),)])
    assert show(conn, "pgpool show port;") == (["port"], [(str(pool.port),)])
    columns, rows = show(conn, "PGPOOL SHOW backend_hostname")
    assert columns == ["item", "value", "description"]
    assert [r[:2] for r in rows] == [(f"backend_hostname{n.node_id}", n.host) for n in pool.cluster.nodes]
    assert show(conn, "PGPOOL SHOW log_statement")[1] == [("off",)]
    cur = conn.execute("PGPOOL SET log_statement = on")
    assert cur.statusmessage == "SET"
    assert conn.execute("PGPOOL SHOW log_statement").fetchall() == [("on",)]
    conn.execute("SELECT 'proto-logged-statement'")
    pgpool_log_lines(pool, r"statement: SELECT 'proto-logged-statement'")
    cur = conn.execute("PGPOOL RESET log_statement")
    assert cur.statusmessage == "SET"  # pgpool-II 4.3.5 tags a single RESET "SET", RESET ALL "RESET"
    assert conn.execute("PGPOOL SHOW log_statement").fetchall() == [("off",)]
    with pytest.raises(psycopg.Error, match=r'invalid Context, value for parameter "port" cannot be changed'):
        conn.execute("PGPOOL SET port = 1")
    with pytest.raises(psycopg.Error, match=r'config variable "no_such_parameter" not found'):
        conn.execute("PGPOOL SHOW no_such_parameter")
    assert conn.execute("PGPOOL SHOW port").fetchall() == [(str(pool.port),)]
    assert conn.execute("SELECT 'alive'").fetchone() == ("alive",)


def test_pgpool_setting_is_per_session(pool, conn):
    conn.execute("PGPOOL SET log_per_node_statement TO on")
    assert conn.execute("PGPOOL SHOW log_per_node_statement").fetchall() == [("on",)]
    with pool.connect(dbname=TEST_DB) as other:
        assert other.execute("PGPOOL SHOW log_per_node_statement").fetchall() == [("off",)]
    assert conn.execute("PGPOOL RESET ALL").statusmessage == "RESET"
    assert conn.execute("PGPOOL SHOW log_per_node_statement").fetchall() == [("off",)]


POOL_COMMANDS_IN_TRANSACTION = ["SHOW pool_nodes", "SHOW pool_version", "SHOW pool_processes", "SHOW pool_pools",
                                "SHOW pool_status", "SHOW pool_backend_stats", "PGPOOL SHOW port",
                                "PGPOOL SET log_statement = on", "PGPOOL SHOW log_statement",
                                "PGPOOL RESET log_statement"]


def test_pool_commands_inside_transaction(pool):
    with pool.connect(dbname=TEST_DB, autocommit=False) as conn:
        started = conn.execute("SELECT now()::text").fetchone()[0]
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        for command in POOL_COMMANDS_IN_TRANSACTION:
            conn.execute(command)
            assert conn.info.transaction_status == TransactionStatus.INTRANS, command
        with pytest.raises(psycopg.Error, match="invalid Context"):
            conn.execute("PGPOOL SET port = 1")
        # pgpool's own error never reached PostgreSQL: the transaction goes on unharmed.
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert conn.execute("SELECT now()::text").fetchone()[0] == started
        conn.rollback()
        assert conn.info.transaction_status == TransactionStatus.IDLE


def test_pool_commands_inside_failed_transaction(pool):
    with pool.connect(dbname=TEST_DB, autocommit=False) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        assert conn.info.transaction_status == TransactionStatus.INERROR
        assert conn.execute("SHOW pool_version").fetchone() == ("4.3.5 (tamahomeboshi)",)
        assert conn.info.transaction_status == TransactionStatus.INERROR
        conn.rollback()
        assert conn.execute("SELECT 'recovered'").fetchone() == ("recovered",)
        conn.rollback()


# -- connection pooling -------------------------------------------------------------------------

@pytest.fixture
def single_child(pgpool_factory, mode, databases):
    """start(**overrides): a pgpool with one child (so one worker serves consecutive clients).

    In streaming mode the standby's weight is 0 so that every read (pg_backend_pid(), SHOW) runs
    on node 0, whose pid is the one in BackendKeyData."""
    def start(**overrides):
        settings = {"backend_clustering_mode": mode, "num_init_children": 1, "max_pool": 4,
                    "backend_weight1": 0}
        settings.update(overrides)
        return pgpool_factory(settings)
    return start


def backend_pid(pgpool: PgpoolProcess, **params) -> int:
    """pg_backend_pid() of one short session (closed cleanly with Terminate)."""
    with pgpool.connect(**params) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        # BackendKeyData carries node 0's pid, fresh or reused (pgpool-II 4.3.5 sends the last
        # node's key on a fresh streaming-mode connection and node 0's on reuse).
        assert conn.info.backend_pid == pid
    return pid


def test_pool_reuses_backend_for_same_startup_packet(single_child):
    pgpool = single_child()
    first = backend_pid(pgpool, dbname=POOL_DB, application_name="proto_a")
    assert backend_pid(pgpool, dbname=POOL_DB, application_name="proto_a") == first
    assert backend_pid(pgpool, dbname=POOL_DB, application_name="proto_a") == first


def test_pool_different_application_name_gets_new_backend(single_child):
    pgpool = single_child()
    first = backend_pid(pgpool, dbname=POOL_DB, application_name="proto_a")
    other = backend_pid(pgpool, dbname=POOL_DB, application_name="proto_b")
    assert other != first
    with pgpool.connect(dbname=POOL_DB, application_name="proto_b") as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("proto_b",)


def test_pool_never_caches_postgres_database(single_child):
    pgpool = single_child()
    pids = {backend_pid(pgpool, dbname="postgres", application_name="proto_a") for _ in range(3)}
    assert len(pids) == 3


def test_pool_connection_cache_off(single_child):
    pgpool = single_child(connection_cache=False)
    pids = {backend_pid(pgpool, dbname=POOL_DB, application_name="proto_a") for _ in range(3)}
    assert len(pids) == 3


def test_pool_reset_query_discards_session_state(single_child, pg_cluster):
    with psycopg.connect(pg_cluster.primary.dsn(dbname=POOL_DB), connect_timeout=10) as direct:
        default_work_mem = direct.execute("SHOW work_mem").fetchone()[0]
    assert default_work_mem != "1234kB"
    pgpool = single_child()
    with pgpool.connect(dbname=POOL_DB, application_name="proto_a") as conn:
        first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("SET work_mem = '1234kB'")
        conn.execute("PREPARE proto_stmt AS SELECT 1")
        conn.execute("CREATE TEMP TABLE proto_temp (x int)")
        assert conn.execute("SHOW work_mem").fetchone() == ("1234kB",)
    with pgpool.connect(dbname=POOL_DB, application_name="proto_a") as conn:
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == first
        assert conn.execute("SHOW work_mem").fetchone() == (default_work_mem,)
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        assert conn.execute("SELECT to_regclass('pg_temp.proto_temp') IS NULL").fetchone() == (True,)


def test_pool_session_after_client_error_is_reused_cleanly(single_child):
    pgpool = single_child()
    with pgpool.connect(dbname=POOL_DB, application_name="proto_a", autocommit=False) as conn:
        first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        # closed inside a failed transaction: the reset query list (ABORT; DISCARD ALL) cleans up
    with pgpool.connect(dbname=POOL_DB, application_name="proto_a") as conn:
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == first
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute("SELECT 'clean'").fetchone() == ("clean",)


# -- streaming replication specifics ------------------------------------------------------------

@pytest.fixture
def sr_pool(pgpool_factory, databases):
    """start(**overrides): streaming mode, all load-balanced reads to the standby, per-node statement log."""
    def start(**overrides):
        settings = {"backend_clustering_mode": "streaming_replication", "backend_weight0": 0,
                    "backend_weight1": 1, "log_per_node_statement": True,
                    "disable_load_balance_on_write": "transaction", "num_init_children": 4}
        settings.update(overrides)
        return pgpool_factory(settings)
    return start


def test_sr_writes_go_to_primary(sr_pool, pg_cluster):
    pgpool = sr_pool()
    # Any of these reaching the standby fails with "cannot execute ... in a read-only transaction".
    with pgpool.connect(dbname=TEST_DB) as conn:
        conn.execute("DROP TABLE IF EXISTS proto_sr_writes")
        conn.execute("CREATE TABLE proto_sr_writes (a int PRIMARY KEY, b text)")
        conn.execute("INSERT INTO proto_sr_writes VALUES (1, 'one'), (2, 'two')")
        conn.execute("UPDATE proto_sr_writes SET b = 'uno' WHERE a = 1")
        conn.execute("INSERT INTO proto_sr_writes VALUES (%s, %s)", (3, "three"))
        assert conn.execute("INSERT INTO proto_sr_writes VALUES (4, 'four') RETURNING a").fetchone() == (4,)
        conn.execute("DELETE FROM proto_sr_writes WHERE a = 2")
        with conn.transaction():
            conn.execute("INSERT INTO proto_sr_writes VALUES (5, 'five')")
            conn.execute("UPDATE proto_sr_writes SET b = upper(b)")
        with conn.cursor().copy("COPY proto_sr_writes FROM STDIN") as copy:
            copy.write_row((6, "six"))
        conn.execute("CREATE INDEX ON proto_sr_writes (b)")
    assert pg_cluster.primary.psql("SELECT string_agg(a || ':' || b, ',' ORDER BY a) FROM proto_sr_writes",
                                   dbname=TEST_DB) == "1:UNO,3:THREE,4:FOUR,5:FIVE,6:six"


def test_sr_reads_are_load_balanced_to_standby(sr_pool, pg_cluster):
    pgpool = sr_pool()
    primary_port, standby_port = pg_cluster.primary.port, pg_cluster.standbys[0].port
    for _ in range(3):  # every session picks the standby (weight 1 against 0)
        with pgpool.connect(dbname=TEST_DB) as conn:
            assert conn.execute("SELECT inet_server_port()").fetchone() == (standby_port,)
            assert conn.execute("SELECT inet_server_port(), %s::int", (1,)).fetchone() == (standby_port, 1)
            # pg_is_in_recovery() is VOLATILE: with empty write/read-only function lists pgpool-II
            # treats a volatile function as writing and sends the query to the primary.
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            assert conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone() == (primary_port, False)


def test_sr_pg_is_in_recovery_balanced_when_not_a_write_function(sr_pool):
    pgpool = sr_pool(write_function_list="nextval,setval")
    with pgpool.connect(dbname=TEST_DB) as conn:
        conn.execute("DROP TABLE IF EXISTS proto_sr_lb")
        conn.execute("CREATE TABLE proto_sr_lb (a int)")
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        conn.execute("BEGIN")
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)   # no write yet
        conn.execute("INSERT INTO proto_sr_lb VALUES (1)")
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)  # after the write
        assert conn.execute("SELECT pg_is_in_recovery(), %s::int", (2,)).fetchone() == (False, 2)
        assert conn.execute("SELECT count(*) FROM proto_sr_lb").fetchone() == (1,)
        conn.execute("COMMIT")
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)  # reset at transaction end


def test_sr_read_after_write_in_transaction_goes_to_primary(sr_pool, pg_cluster):
    pgpool = sr_pool()
    primary_port, standby_port = pg_cluster.primary.port, pg_cluster.standbys[0].port
    with pgpool.connect(dbname=TEST_DB) as conn:
        conn.execute("DROP TABLE IF EXISTS proto_sr_tx")
        conn.execute("CREATE TABLE proto_sr_tx (a int)")
        conn.execute("BEGIN")
        assert conn.execute("SELECT inet_server_port()").fetchone() == (standby_port,)
        conn.execute("INSERT INTO proto_sr_tx VALUES (1)")
        assert conn.execute("SELECT inet_server_port()").fetchone() == (primary_port,)
        assert conn.execute("SELECT inet_server_port(), %s::int", (7,)).fetchone() == (primary_port, 7)
        assert conn.execute("SELECT count(*) FROM proto_sr_tx").fetchone() == (1,)
        conn.execute("COMMIT")
        assert conn.execute("SELECT inet_server_port()").fetchone() == (standby_port,)


def test_sr_log_per_node_statement(sr_pool):
    pgpool = sr_pool()
    with pgpool.connect(dbname=TEST_DB) as conn:
        conn.execute("DROP TABLE IF EXISTS proto_sr_log")
        conn.execute("CREATE TABLE proto_sr_log (a text)")
        standby_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("SELECT 'proto-balanced-read'")
        primary_pid = conn.execute("INSERT INTO proto_sr_log VALUES ('proto-write') RETURNING pg_backend_pid()"
                                   ).fetchone()[0]
    assert standby_pid != primary_pid
    read = pgpool_log_lines(pgpool, r"DB node id: (\d+) backend pid: (\d+) statement: SELECT 'proto-balanced-read'")
    assert [(m.group(1), m.group(2)) for m in read] == [("1", str(standby_pid))]
    write = pgpool_log_lines(
        pgpool, r"DB node id: (\d+) backend pid: (\d+) statement: INSERT INTO proto_sr_log VALUES \('proto-write'\)")
    assert [(m.group(1), m.group(2)) for m in write] == [("0", str(primary_pid))]
    ddl = pgpool_log_lines(pgpool, r"DB node id: (\d+) backend pid: \d+ statement: CREATE TABLE proto_sr_log")
    assert [m.group(1) for m in ddl] == ["0"]


def test_sr_show_pool_nodes_load_balance_node(sr_pool):
    pgpool = sr_pool()
    with pgpool.connect(dbname=TEST_DB) as conn:
        conn.execute("SELECT 1").fetchone()
        columns, rows = show(conn, "SHOW pool_nodes")
    records = [dict(zip(columns, row)) for row in rows]
    assert [(r["role"], r["lb_weight"], r["load_balance_node"]) for r in records] == [
        ("primary", "0.000000", "false"), ("standby", "1.000000", "true")]
    assert int(records[1]["select_cnt"]) >= 1
