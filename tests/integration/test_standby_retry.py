"""Load-balanced reads cancelled on a standby are re-run on the primary, transparently.

A real recovery conflict: the standby cancels queries at once (max_standby_streaming_delay = 0,
no hot_standby_feedback); a read holding a snapshot sleeps on the standby while the primary
deletes rows and VACUUMs them away; replaying the cleanup cancels the read (40001). Through
pgpool the client gets the primary's answer instead, with the simple and the extended protocol;
inside an explicit transaction the error reaches the client (nothing is re-run there). A standby
shut down under a running read is handled the same way. The node is never failed over for it.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from tests.harness.pgpool_process import PgpoolProcess
from tests.harness.wait import wait_for
from tests.harness.backends import scratch_cluster

# node name, rows seen after a 2 s sleep that holds the query's snapshot from its start
READ = ("SELECT current_setting('cluster_name') AS node, (SELECT count(*) FROM victim) AS n "
        "FROM pg_sleep(2)")


@pytest.fixture(scope="module")
def cluster():
    with scratch_cluster("retry", 1, {"max_standby_streaming_delay": 0,
                                      "hot_standby_feedback": "off"},
                         "CREATE TABLE victim (id int)") as c:
        yield c


@pytest.fixture(scope="module")
def pool(request, cluster):
    # every read on the standby; pg_sleep is not a writing function here
    pgpool = PgpoolProcess(cluster, {"backend_weight0": 0, "backend_weight1": 1,
                                     "write_function_list": "nextval,setval"})
    try:
        pgpool.start()
        yield pgpool
    finally:
        if request.session.testsfailed:
            print(f"===== pgpool log =====\n{pgpool.log_text()[-20000:]}")
        pgpool.cleanup()


def refill(cluster) -> None:
    """Rows for the next conflict, replayed on the standby."""
    primary, standby = cluster.primary, cluster.standbys[0]
    primary.psql("INSERT INTO victim SELECT generate_series(1, 100)")
    lsn = primary.psql("SELECT pg_current_wal_lsn()")
    wait_for(lambda: standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") == "t",
             timeout=20, what="standby replay")


def wait_read_running(standby) -> None:
    wait_for(lambda: standby.psql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                  "AND query LIKE '%FROM pg_sleep(2)%' "
                                  "AND pid <> pg_backend_pid()") == "1",
             timeout=20, interval=0.05, what="the read running on the standby")


def read_during(conn, action) -> tuple:
    """Run READ on `conn` while `action()` runs once the read is under way on the standby:
    (the read's rows or its exception)."""
    out: dict = {}

    def run():
        try:
            out["rows"] = conn.execute(READ).fetchall()
        except psycopg.Error as e:
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    try:
        action()
    finally:
        t.join(30)
    return out.get("rows"), out.get("error")


def conflict(cluster):
    """Delete the rows the standby's read may need and VACUUM them away."""
    def act():
        wait_read_running(cluster.standbys[0])
        cluster.primary.psql("DELETE FROM victim")
        cluster.primary.psql("VACUUM victim")
    return act


def node_status(pool, node: int) -> str:
    with pool.connect() as conn:
        rows = conn.execute("SHOW pool_nodes").fetchall()
    return rows[node][3]


def retries(pool) -> int:
    """The standby_retry counter of SHOW pool_routing."""
    with pool.connect() as conn:
        return int(next(r[3] for r in conn.execute("SHOW pool_routing") if r[0] == "standby_retry"))


@pytest.mark.parametrize("simple", [True, False], ids=["simple", "extended"])
def test_conflict_cancelled_read_is_rerun_on_the_primary(pool, cluster, simple):
    refill(cluster)
    counted = retries(pool)
    with psycopg.connect(pool.dsn(), autocommit=True,
                         cursor_factory=psycopg.ClientCursor if simple else psycopg.Cursor) as conn:
        assert conn.execute("SELECT current_setting('cluster_name')").fetchone() == ("node1",)
        rows, error = read_during(conn, conflict(cluster))
        assert error is None
        assert rows == [("node0", 0)]
        # the session goes on, reads still balanced to the standby
        assert conn.execute("SELECT current_setting('cluster_name')").fetchone() == ("node1",)
    log = pool.log_text()
    assert "was cancelled (canceling statement due to conflict with recovery); retrying it on " \
           "the primary node 0" in log
    assert node_status(pool, 1) == "up"
    assert retries(pool) == counted + 1


def test_no_rerun_inside_a_transaction(pool, cluster):
    refill(cluster)
    with psycopg.connect(pool.dsn(), autocommit=False) as conn:
        conn.execute("SELECT 1")                 # BEGIN, on the primary and the standby
        rows, error = read_during(conn, conflict(cluster))
        assert rows is None
        assert isinstance(error, psycopg.errors.SerializationFailure)
        assert "conflict with recovery" in str(error)
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM victim").fetchone() == (0,)
    assert node_status(pool, 1) == "up"


def test_read_on_a_standby_shut_down_is_rerun_on_the_primary(pool, cluster):
    refill(cluster)
    standby = cluster.standbys[0]
    with psycopg.connect(pool.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT current_setting('cluster_name')").fetchone() == ("node1",)

        def stop():
            wait_read_running(standby)
            standby.stop("fast")

        try:
            rows, error = read_during(conn, stop)
            assert error is None
            assert rows == [("node0", 100)]
            # the session goes on without the standby
            assert conn.execute("SELECT current_setting('cluster_name')").fetchone() == ("node0",)
            conn.execute("INSERT INTO victim VALUES (0)")
        finally:
            standby.start()
    assert "retrying it on the primary node 0" in pool.log_text()
