"""Routing against a real primary + 2 streaming standbys (pg_cluster3, load balancing on).

Which node ran a read is told by the server itself (`current_setting('port')`, a STABLE function,
so it does not stop load balancing); PGPOOL EXPLAIN ROUTE tells which rule decided. Covered:
reads spread by backend_weight (and a weight reload for new sessions), writes only on the
primary, transactions under each disable_load_balance_on_write mode, SERIALIZABLE and aborted
transactions, the redirect preference lists, delay_threshold with a standby whose replay is
paused, temporary and unlogged tables, and PGPOOL EXPLAIN ROUTE / SHOW pool_routing through psql
and psycopg (simple and extended protocol). The cluster is only read and given scratch tables.
"""

from __future__ import annotations

import time
from collections import Counter

import psycopg
import pytest

from tests.harness.clients import psql
from tests.harness.wait import wait_for

WEIGHTS = {"backend_weight0": 0, "backend_weight1": 1, "backend_weight2": 2}
PORT = "SELECT current_setting('port')"


def replayed(cluster) -> None:
    """Wait until every standby replayed everything the primary wrote so far."""
    lsn = cluster.primary.psql("SELECT pg_current_wal_lsn()")
    for s in cluster.standbys:
        wait_for(lambda: s.psql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") == "t",
                 timeout=30, what=f"{s.name} replays {lsn}")


@pytest.fixture(scope="module")
def cluster(pg_cluster3):
    c = pg_cluster3
    c.primary.psql("DROP TABLE IF EXISTS routing_t, routing_u, routing_lag; "
                   "CREATE TABLE routing_t (a int); INSERT INTO routing_t VALUES (0); "
                   "CREATE UNLOGGED TABLE routing_u (a int); CREATE TABLE routing_lag (a int)")
    replayed(c)
    yield c
    c.primary.psql("DROP TABLE IF EXISTS routing_t, routing_u, routing_lag")


def connect(pgpool, **kwargs) -> psycopg.Connection:
    return psycopg.connect(pgpool.dsn(), autocommit=True, **kwargs)


def node_of(conn, cluster, sql: str = PORT) -> int:
    """The node that ran `sql` (which returns that server's port)."""
    port = int(conn.execute(sql).fetchone()[0])
    return [n.port for n in cluster.nodes].index(port)


def explain(conn, sql: str) -> tuple[tuple[int, ...], str]:
    """(nodes that would run `sql`, rule) from PGPOOL EXPLAIN ROUTE."""
    cur = conn.execute("PGPOOL EXPLAIN ROUTE " + sql)
    cols = [d.name for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    return (tuple(int(r["node_id"]) for r in rows if r["would_run"] == "true"),
            rows[0]["rule"])


def nodes_table(conn, show: str = "SHOW pool_nodes") -> list[dict]:
    cur = conn.execute(show)
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def delay_of(pgpool, node: int) -> int:
    with connect(pgpool) as conn:
        return int(nodes_table(conn)[node]["replication_delay"])


def select_counts(pgpool) -> list[int]:
    with connect(pgpool) as conn:
        return [int(r["select_cnt"]) for r in nodes_table(conn)]


# ---------------------------------------------------------------------------------------------
# Load balancing by weight, writes on the primary

def test_reads_spread_by_weight_and_weight_reload(cluster, pgpool_factory):
    pgpool = pgpool_factory(dict(WEIGHTS), cluster=cluster)
    before = select_counts(pgpool)
    seen = Counter()
    for _ in range(90):
        with connect(pgpool) as conn:
            seen[node_of(conn, cluster)] += 1
    after = select_counts(pgpool)
    assert seen[0] == 0 and after[0] == before[0]       # weight 0: never
    assert seen[1] > 0 and 1.2 < seen[2] / seen[1] < 4   # 1 : 2, loosely
    assert [a - b for a, b in zip(after, before)] == [0, seen[1], seen[2]]

    # backend_weight is reloadable and applies to new sessions
    pgpool.reload(backend_weight1=3, backend_weight2=0)

    def reloaded() -> bool:
        with connect(pgpool) as conn:
            return [r["lb_weight"] for r in nodes_table(conn)] == ["0.000000", "1.000000",
                                                                   "0.000000"]
    for _ in range(6):      # every worker (4) answers with the new weights
        wait_for(reloaded, timeout=15, what="weights reloaded")
    for _ in range(12):
        with connect(pgpool) as conn:
            assert node_of(conn, cluster) == 1


def test_writes_go_to_the_primary_only(cluster, pgpool_factory):
    pgpool = pgpool_factory(dict(WEIGHTS, statement_level_load_balance=True), cluster=cluster)

    def inserts() -> list[int]:
        with connect(pgpool) as conn:
            return [int(r["insert_cnt"]) for r in nodes_table(conn, "SHOW pool_backend_stats")]
    before = inserts()
    with connect(pgpool) as conn:
        for i in range(20):
            conn.execute("INSERT INTO routing_t VALUES (%s)", (i,))          # extended
            conn.execute(f"INSERT INTO routing_t VALUES ({i})", prepare=False)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO routing_t VALUES (%s)", [(1,), (2,)])
        conn.execute("DELETE FROM routing_t WHERE a > 0")
        # statement-level load balancing still spreads the reads
        assert {node_of(conn, cluster) for _ in range(40)} == {1, 2}
    after = inserts()
    assert after[0] - before[0] == 42 and after[1:] == before[1:]


# ---------------------------------------------------------------------------------------------
# Transactions: disable_load_balance_on_write, SERIALIZABLE, aborted transactions

LB, PRIMARY = "lb", "primary"
INSERT = "INSERT INTO routing_t VALUES (-1)"
READ_T = "SELECT current_setting('port') FROM routing_t LIMIT 1"   # reads routing_t
SCENARIOS = {
    "transaction": [PORT, "BEGIN", (PORT, LB), INSERT, (PORT, PRIMARY), (READ_T, PRIMARY),
                    "ROLLBACK", (PORT, LB), INSERT, (PORT, LB),
                    "BEGIN ISOLATION LEVEL SERIALIZABLE", (PORT, PRIMARY), "COMMIT",
                    "BEGIN READ WRITE", (PORT, LB), "COMMIT"],
    "off": ["BEGIN", INSERT, (PORT, LB), "ROLLBACK"],
    "trans_transaction": ["BEGIN", INSERT, "ROLLBACK", (PORT, LB), "BEGIN", (PORT, PRIMARY),
                          "COMMIT", (PORT, LB)],
    "always": [(PORT, LB), INSERT, (PORT, PRIMARY), "BEGIN", (PORT, PRIMARY), "COMMIT"],
    "dml_adaptive": ["BEGIN", INSERT, (PORT, LB), (READ_T, PRIMARY), "ROLLBACK", (READ_T, LB)],
}


@pytest.mark.parametrize("mode", list(SCENARIOS))
def test_transactions(cluster, pgpool_factory, mode):
    pgpool = pgpool_factory(dict(WEIGHTS, disable_load_balance_on_write=mode), cluster=cluster)
    with connect(pgpool) as conn:
        for step in SCENARIOS[mode]:
            sql, where = (step, None) if isinstance(step, str) else step
            if where is None:
                conn.execute(sql)
                continue
            node = node_of(conn, cluster, sql)
            assert (node == 0) == (where == PRIMARY), (mode, step)


def test_aborted_transaction_reads_on_the_primary(cluster, pgpool_factory):
    pgpool = pgpool_factory(dict(WEIGHTS), cluster=cluster)
    with connect(pgpool) as conn:
        conn.execute("BEGIN")
        assert explain(conn, PORT)[1] == "load_balance"
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        assert explain(conn, PORT) == ((0,), "failed_transaction")
        conn.execute("ROLLBACK")
        assert node_of(conn, cluster) != 0


# ---------------------------------------------------------------------------------------------
# Redirect preference lists and the delay threshold

def test_redirect_preference_lists(cluster, pgpool_factory):
    pgpool = pgpool_factory(dict(
        WEIGHTS, database_redirect_preference_list="postgres:2",
        app_name_redirect_preference_list="routing_app:1,routing_primary:standby(0.0)"),
        cluster=cluster)
    for app, node, rule in (("psycopg", 2, "database_redirect"), ("routing_app", 1, "app_name_redirect"),
                            ("routing_primary", 0, "app_name_redirect")):
        for _ in range(5):
            with connect(pgpool, application_name=app) as conn:
                assert explain(conn, PORT) == ((node,), rule)
                assert node_of(conn, cluster) == node


@pytest.fixture
def lagging_standby(cluster):
    """Standby 1 with WAL replay paused and ~100 kB of WAL it has not replayed."""
    standby = cluster.standbys[0]
    standby.psql("SELECT pg_wal_replay_pause()")
    try:
        wait_for(lambda: standby.psql("SELECT pg_get_wal_replay_pause_state()") == "paused",
                 timeout=10, what="replay paused")
        cluster.primary.psql("INSERT INTO routing_lag SELECT generate_series(1, 3000)")
        yield standby
    finally:
        standby.psql("SELECT pg_wal_replay_resume()")
        cluster.primary.psql("TRUNCATE routing_lag")
        replayed(cluster)


def test_delay_threshold(cluster, pgpool_factory, lagging_standby):
    common = dict(WEIGHTS, delay_threshold=10000, app_name_redirect_preference_list="lagtest:1")
    to_primary = pgpool_factory(common, cluster=cluster)
    to_other = pgpool_factory(dict(common, prefer_lower_delay_standby=True), cluster=cluster)
    for pgpool in (to_primary, to_other):
        wait_for(lambda: delay_of(pgpool, 1) > 10000, timeout=20, what="sr_check sees the delay")
    with connect(to_primary, application_name="lagtest") as conn:
        assert explain(conn, PORT) == ((0,), "delay")
        assert node_of(conn, cluster) == 0
    with connect(to_other, application_name="lagtest") as conn:
        assert explain(conn, PORT) == ((2,), "lower_delay_standby")
        assert node_of(conn, cluster) == 2
    with connect(to_primary) as conn:       # sessions on the other standby are not affected
        assert node_of(conn, cluster) in (0, 2)


# ---------------------------------------------------------------------------------------------
# Temporary and unlogged tables, writing functions

@pytest.mark.parametrize("mode", ["catalog", "trace"])
def test_temporary_tables_are_read_on_the_primary(cluster, pgpool_factory, mode):
    pgpool = pgpool_factory(dict(WEIGHTS, check_temp_table=mode), cluster=cluster)
    with connect(pgpool) as conn:
        assert explain(conn, "SELECT a FROM routing_tmp")[1] == "load_balance"
        conn.execute("CREATE TEMP TABLE routing_tmp AS SELECT 7 AS a")
        assert explain(conn, "SELECT a FROM routing_tmp") == ((0,), "temp_table")
        assert conn.execute("SELECT a FROM routing_tmp").fetchone() == (7,)
        conn.execute("DROP TABLE routing_tmp")
        assert explain(conn, "SELECT a FROM routing_tmp")[1] == "load_balance"


def test_without_the_temp_check_a_standby_gets_the_read(cluster, pgpool_factory):
    pgpool = pgpool_factory(dict(WEIGHTS, check_temp_table="none"), cluster=cluster)
    with connect(pgpool) as conn:
        conn.execute("CREATE TEMP TABLE routing_tmp AS SELECT 7 AS a")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT a FROM routing_tmp")
        assert conn.execute("SELECT 1").fetchone() == (1,)     # the session goes on


def test_unlogged_tables_and_writing_functions(cluster, pgpool_factory):
    pgpool = pgpool_factory(dict(WEIGHTS), cluster=cluster)
    with connect(pgpool) as conn:
        assert explain(conn, "SELECT a FROM routing_u") == ((0,), "unlogged_table")
        assert conn.execute("SELECT count(*) FROM routing_u").fetchone() == (0,)
        assert explain(conn, "SELECT random()") == ((0,), "writing_function")
        assert explain(conn, "SELECT a FROM routing_t WHERE a = 0")[1] == "load_balance"
        conn.execute("PGPOOL SET check_unlogged_table = off")
        assert explain(conn, "SELECT a FROM routing_u")[1] == "load_balance"
        with pytest.raises(psycopg.Error, match="unlogged"):
            conn.execute("SELECT count(*) FROM routing_u")   # a standby cannot read it
        assert conn.execute("SELECT 1").fetchone() == (1,)


# ---------------------------------------------------------------------------------------------
# PGPOOL EXPLAIN ROUTE and SHOW pool_routing through psql and psycopg

def routing_counts(conn) -> dict[str, int]:
    return {r["rule"]: int(r["count"]) for r in nodes_table(conn, "SHOW pool_routing")}


def test_explain_route_and_show_pool_routing(cluster, pgpool_factory):
    pgpool = pgpool_factory(dict(WEIGHTS), cluster=cluster)
    out = psql("PGPOOL EXPLAIN ROUTE INSERT INTO routing_t VALUES (1)", pgpool.host, pgpool.port,
               args=("-X", "-A", "-t", "-F", "|")).stdout.splitlines()
    assert [line.split("|")[6] for line in out] == ["true", "false", "false"]
    assert {line.split("|")[8] for line in out} == {"write"}
    out = psql("PGPOOL EXPLAIN ROUTE SELECT 1; SELECT 2", pgpool.host, pgpool.port,
               args=("-X", "-A", "-t", "-F", "|")).stdout.splitlines()
    assert out[0].split("|")[8] == "multi_statement"

    with connect(pgpool) as conn:
        before = routing_counts(conn)
        conn.execute("BEGIN")
        # explaining changes nothing: no write was recorded, nothing counted
        assert explain(conn, INSERT) == ((0,), "write")
        assert explain(conn, "SHOW pool_nodes")[1] == "pgpool_command"
        assert explain(conn, "SELECT * FROM WHERE (") == ((0,), "unparsable")
        lb = node_of(conn, cluster)
        assert lb != 0
        assert explain(conn, "COMMIT") == (tuple(sorted((0, lb))), "transaction_control")
        conn.execute(INSERT)
        assert explain(conn, PORT) == ((0,), "in_write_transaction")
        conn.execute("ROLLBACK")
        # extended protocol (with a parameter) and a named prepared statement
        cur = conn.execute("PGPOOL EXPLAIN ROUTE SELECT a FROM routing_t WHERE a = %s", (0,))
        assert {r[8] for r in cur.fetchall()} == {"load_balance"}
        for _ in range(2):
            cur = conn.execute("PGPOOL EXPLAIN ROUTE SELECT 1", prepare=True)
            assert [r[6] for r in cur.fetchall()].count("true") == 1
        after = routing_counts(conn)
    delta = {rule: after[rule] - before[rule] for rule in after if after[rule] != before[rule]}
    assert delta == {"transaction_control": 2, "load_balance": 1, "write": 1}


# ---------------------------------------------------------------------------------------------
# The worker's relcache: relcache_size, relcache_expire, relcache_query_target

def lookups(pgpool, function: str) -> list[str]:
    """pg_proc lookups for `function` in the log (log_per_node_statement), as "DB node id: N"."""
    return [line.split(" backend pid")[0].split("LOG:  ")[-1] for line in pgpool.log_text().splitlines()
            if "pg_catalog.pg_proc" in line and f"proname = '{function}'" in line]


def test_relcache(cluster, pgpool_factory):
    one_worker = dict(WEIGHTS, num_init_children=1, log_per_node_statement=True)
    small = pgpool_factory(dict(one_worker, relcache_size=1), cluster=cluster)
    for _ in range(3):
        with connect(small) as conn:
            conn.execute("SELECT lower('A')")
            conn.execute(PORT)                  # evicts lower() (one entry)
    assert len(lookups(small, "lower")) == 3 and len(lookups(small, "current_setting")) == 3

    expiring = pgpool_factory(dict(one_worker, relcache_expire=1,
                                   relcache_query_target="load_balance_node"), cluster=cluster)
    lbs = []
    for _ in range(2):
        with connect(expiring) as conn:
            lbs.append(node_of(conn, cluster))
    asked = lookups(expiring, "current_setting")
    assert asked == [f"DB node id: {lbs[0]}"]          # on the load-balance node; then cached
    time.sleep(1.1)                                                 # relcache_expire = 1
    with connect(expiring) as conn:
        conn.execute(PORT)
    assert len(lookups(expiring, "current_setting")) == 2
