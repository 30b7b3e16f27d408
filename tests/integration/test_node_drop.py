"""Sessions survive the loss of a standby (primary + 2 standbys, own cluster).

- first, with every node up: log_per_node_statement names the node each statement ran on, and a
  statement prepared through the protocol (Parse) is followed by SQL EXECUTE / DEALLOCATE;
- node 1 stopped and detached (pcp_detach_node) under a session load-balancing on it: the
  session drops it at its next request and goes on, reads now on the primary, nothing sent to
  node 1 any more (log_per_node_statement shows where each statement ran);
- node 2 shut down under an idle session load-balancing on it, not detached: the next read is
  re-run on the primary, the session goes on;
- node 2 shut down inside a transaction that read from it: the read fails with 08006, the
  transaction is aborted on the primary too (nothing of it can commit), the session goes on;
- node 2 detached (still running) while a transaction that read from it is open: the
  transaction fails, the session goes on.
"""

from __future__ import annotations


import psycopg
import pytest

from tests.harness.clients import pcp
from tests.harness.pgpool_process import PgpoolProcess
from tests.harness.wait import wait_for
from tests.harness.backends import scratch_cluster

NODE = "SELECT current_setting('cluster_name')"


@pytest.fixture(scope="module")
def cluster():
    with scratch_cluster("drop", 2, setup_sql="CREATE TABLE drops (id int, what text)") as c:
        yield c


@pytest.fixture(scope="module")
def pool(request, cluster):
    # plain sessions balance on node 1; application_name "to_node2" balances on node 2
    pgpool = PgpoolProcess(cluster, {"backend_weight0": 0, "backend_weight1": 1,
                                     "backend_weight2": 0, "log_per_node_statement": True,
                                     "app_name_redirect_preference_list": "to_node2:2"})
    try:
        pgpool.start()
        wait_for(lambda: pcp("pcp_node_count", pgpool).returncode == 0, 15, what="PCP server")
        yield pgpool
    finally:
        if request.session.testsfailed:
            print(f"===== pgpool log =====\n{pgpool.log_text()[-30000:]}")
        pgpool.cleanup()


def statuses(pool) -> list[str]:
    with pool.connect() as conn:
        return [r[3] for r in conn.execute("SHOW pool_nodes").fetchall()]


def test_statements_are_logged_where_they_ran_and_parse_names_are_followed(pool):
    with pool.connect() as conn:
        mark = len(pool.log_text())
        result = conn.pgconn.prepare(b"by_parse", NODE.encode())
        assert result.status == psycopg.pq.ExecStatus.COMMAND_OK
        assert conn.execute("EXECUTE by_parse").fetchone() == ("node1",)
        conn.execute("BEGIN READ WRITE")
        conn.execute("INSERT INTO drops VALUES (0, 'logged')")
        conn.execute("COMMIT")
        conn.execute("DEALLOCATE by_parse")
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            conn.execute("EXECUTE by_parse")
    lines = [line.split("statement: ", 1) for line in pool.log_text()[mark:].splitlines()
             if "DB node id: " in line]
    ran = [(head.split("DB node id: ")[1].split()[0], text) for head, text in lines]
    assert ("1", f"Parse: {NODE}") in ran and ("0", f"Parse: {NODE}") not in ran
    # EXECUTE follows the Parse to node 1; once deallocated it is unknown: the primary
    assert [n for n, text in ran if text == "EXECUTE by_parse"] == ["1", "0"]
    # BEGIN READ WRITE runs on the primary; the load-balance node gets a plain BEGIN
    assert ("0", "BEGIN READ WRITE") in ran and ("1", "BEGIN") in ran
    assert ("1", "BEGIN READ WRITE") not in ran
    assert [n for n, text in ran if text.startswith("INSERT")] == ["0"]
    assert {n for n, text in ran if text == "COMMIT"} == {"0", "1"}
    assert {n for n, text in ran if text == "DEALLOCATE by_parse"} == {"1"}


def test_detached_load_balance_node(pool, cluster):
    with pool.connect() as conn:
        assert conn.execute(NODE).fetchone() == ("node1",)
        conn.execute("SET application_name = 'before'")
        cluster.nodes[1].stop("fast")
        r = pcp("pcp_detach_node", pool, "-n", "1")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: statuses(pool)[1] == "down", 15, what="node 1 down")
        mark = len(pool.log_text())
        # the same session: transaction control, SET, reads and writes all work
        conn.execute("BEGIN")
        conn.execute("SET application_name = 'after'")
        assert conn.execute(NODE).fetchone() == ("node0",)
        conn.execute("INSERT INTO drops VALUES (1, 'detached')")
        conn.execute("COMMIT")
        assert conn.execute(NODE).fetchone() == ("node0",)
        assert conn.execute("SELECT count(*) FROM drops WHERE id = 1").fetchone() == (1,)
        assert conn.execute("SHOW application_name").fetchone() == ("after",)
    log = pool.log_text()[mark:]
    assert "DB node id: 0 backend pid:" in log and "statement: BEGIN" in log
    assert "DB node id: 1 " not in log


def test_standby_shut_down_under_an_idle_session(pool, cluster):
    with psycopg.connect(pool.dsn(application_name="to_node2"), autocommit=True) as conn:
        assert conn.execute(NODE).fetchone() == ("node2",)
        cluster.nodes[2].stop("fast")
        try:
            assert conn.execute(NODE).fetchone() == ("node0",)      # re-run on the primary
            conn.execute("BEGIN")
            conn.execute("INSERT INTO drops VALUES (2, 'shut down')")
            conn.execute("COMMIT")
            assert conn.execute("SELECT count(*) FROM drops WHERE id = 2").fetchone() == (1,)
        finally:
            cluster.nodes[2].start()
    assert "read on node 2 was cancelled" in pool.log_text()


def test_standby_shut_down_inside_a_transaction(pool, cluster):
    if statuses(pool)[2] == "down":
        assert pcp("pcp_attach_node", pool, "-n", "2").returncode == 0
        wait_for(lambda: statuses(pool)[2] == "up", 15, what="node 2 attached")
    with psycopg.connect(pool.dsn(application_name="to_node2"), autocommit=False) as conn:
        assert conn.execute(NODE).fetchone() == ("node2",)           # in a transaction
        cluster.nodes[2].stop("fast")
        try:
            with pytest.raises(psycopg.OperationalError) as failed:
                conn.execute(NODE)
            assert failed.value.sqlstate == "08006"
            assert "unable to read data from DB node 2" in str(failed.value)
            # the primary's side of the transaction failed with it
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                conn.execute("INSERT INTO drops VALUES (3, 'must not commit')")
            conn.rollback()
            # the session goes on without node 2
            assert conn.execute(NODE).fetchone() == ("node0",)
            conn.execute("INSERT INTO drops VALUES (4, 'after')")
            conn.commit()
            assert conn.execute("SELECT id FROM drops WHERE id IN (3, 4)").fetchall() == [(4,)]
        finally:
            cluster.nodes[2].start()


def test_detached_inside_a_transaction(pool, cluster):
    wait_for(lambda: cluster.nodes[2].in_recovery(), 30, what="node 2 running")
    if statuses(pool)[2] == "down":
        assert pcp("pcp_attach_node", pool, "-n", "2").returncode == 0
        wait_for(lambda: statuses(pool)[2] == "up", 15, what="node 2 attached")
    with psycopg.connect(pool.dsn(application_name="to_node2"), autocommit=False) as conn:
        assert conn.execute(NODE).fetchone() == ("node2",)           # in a transaction
        assert pcp("pcp_detach_node", pool, "-n", "2").returncode == 0
        wait_for(lambda: statuses(pool)[2] == "down", 15, what="node 2 detached")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute(NODE)
        conn.rollback()
        assert conn.execute(NODE).fetchone() == ("node0",)
        conn.execute("INSERT INTO drops VALUES (5, 'after detach')")
        conn.commit()
