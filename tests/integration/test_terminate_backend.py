"""pg_terminate_backend(<pid>) through pgpool goes to the node that runs the backend, ends the
session that owned it, and fails nothing over (pgpool-II's process_pg_terminate_backend_func).

Reads are load balanced to the standby (the primary has weight 0); failover on backend errors
and shutdowns is on, so a termination mistaken for a node failure would detach the node.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.harness.wait import wait_for

PRIMARY_PID = "SELECT pg_backend_pid() FROM pg_catalog.pg_class LIMIT 1"    # system catalog


@pytest.fixture
def pool(pg_cluster, pgpool_factory):
    return pgpool_factory({"backend_weight0": 0, "backend_weight1": 1,
                           "failover_on_backend_error": True,
                           "failover_on_backend_shutdown": True})


def one(conn, sql):
    return conn.execute(sql).fetchone()[0]


def node_states(pool) -> list[str]:
    with pool.connect() as conn:
        return [row[3] for row in conn.execute("SHOW pool_nodes").fetchall()]


@pytest.mark.parametrize("node, pid_query", [
    (1, "SELECT pg_backend_pid()"),         # load balanced: the standby
    (0, PRIMARY_PID),
])
def test_terminate_a_session_backend_through_pgpool(pool, node, pid_query):
    victim = pool.connect()
    assert one(victim, "SELECT current_setting('cluster_name')") == "node1"
    pid = one(victim, pid_query)
    with pool.connect() as killer:
        assert one(killer, f"SELECT pg_terminate_backend({pid})") is True
        assert one(killer, "SELECT 1") == 1             # the caller's session goes on
    # the victim learns it at its next statement on that node: a FATAL (PostgreSQL's own when
    # that node owed the reply, else pgpool's), and its session is over
    with pytest.raises(psycopg.OperationalError, match="administrator command|"
                       f"DB node {node} was lost due to pg_terminate_backend"):
        victim.execute(pid_query)
    assert victim.closed or victim.broken
    victim.close()
    lost = f"connection to postmaster on DB node {node} was lost due to pg_terminate_backend"
    log = wait_for(lambda: lost in pool.log_text() and pool.log_text(),
                   what="the session's end logged")
    assert f"found the pg_terminate_backend request for backend pid:{pid} on backend node:{node}" \
        in log
    assert "degenerate backend request" not in log
    assert node_states(pool) == ["up", "up"]
    with pool.connect() as again:                        # both nodes still serve
        assert one(again, "SELECT current_setting('cluster_name')") == "node1"
        assert one(again, "SELECT count(*) > 0 FROM pg_catalog.pg_class") is True


def test_pid_of_another_client_is_not_routed(pool, pg_cluster):
    standby = pg_cluster.standbys[0]
    with psycopg.connect(standby.dsn(), autocommit=True) as direct, pool.connect() as conn:
        pid = one(direct, "SELECT pg_backend_pid()")
        # not one of pgpool's connections: an ordinary volatile call, on the primary
        assert one(conn, f"SELECT pg_terminate_backend({pid})") is False
        assert one(direct, "SELECT 1") == 1
    assert (f"found the pg_terminate_backend request for backend pid:{pid}, but the backend "
            "connection does not belong to pgpool-II") in pool.log_text()
    assert node_states(pool) == ["up", "up"]
