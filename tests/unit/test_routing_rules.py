"""pgpool-II 4.3 routing rules, one row each: statement + session state + settings + catalog
answers -> nodes and the rule id that decided (pgpool.router.RULES); plus the rule table itself,
temporary-table tracking, dml_adaptive, per-rule counters and the side-effect-free copy used by
PGPOOL EXPLAIN ROUTE."""
import random

import pytest

from pgpool.router import (RULE_INDEX, RULES, ClusterView, NodeView, SessionRouteState, route)
from pgpool.sql.classify import classify
from tests.unit.test_router import make_cfg


class FakeCatalog:
    """Catalog answers by name; names in `unknown` cannot be answered (None)."""

    def __init__(self, volatile=(), temp=(), unlogged=(), unknown=()):
        self.volatile, self.temp, self.unlogged = set(volatile), set(temp), set(unlogged)
        self.unknown = set(unknown)
        self.asked: list[tuple[str, str]] = []

    def _answer(self, question, name, names):
        self.asked.append((question, name))
        return None if name in self.unknown else name in names

    def is_volatile(self, function):
        return self._answer("volatile", function, self.volatile)

    def is_temp(self, relation):
        return self._answer("temp", relation, self.temp)

    def is_unlogged(self, relation):
        return self._answer("unlogged", relation, self.unlogged)


def make_view(mode="streaming_replication", delays=(0, 0, 0), weights=(1, 1, 1),
              status=("up", "up", "up")):
    nodes = [NodeView(i, status[i], "primary" if i == 0 else "standby", weights[i], delays[i])
             for i in range(3)]
    return ClusterView.of(nodes, 0, mode)


def make_session(catalog=None, lb=1, **state):
    s = SessionRouteState("db", "app", random.Random(1), catalog=catalog)
    s.load_balance_node = lb
    for k, v in state.items():
        setattr(s, k, v)
    return s


def decide(sql, state=None, cfg=None, catalog=None, view=None, session=None):
    s = session or make_session(catalog or FakeCatalog(), **(state or {}))
    return route(classify(sql), s, view or make_view(), make_cfg(**(cfg or {})), sql=sql)


TXN = {"in_transaction": True}

# (rule id, sql, session state, settings, catalog answers, view, expected nodes)
# view: 0 primary, 1 and 2 standbys; the session's load-balance node is 1.
RULE_ROWS = [
    ("raw_mode", "INSERT INTO t VALUES (1)", {}, {}, {}, {"mode": "raw"}, (0,)),
    ("multi_statement", "SELECT 1; SELECT 2", {}, {}, {}, {}, (0,)),
    ("unparsable", "SELECT FROM WHERE", {}, {}, {}, {}, (0,)),
    ("unparsable", "EXPLAIN", {}, {}, {}, {}, (0,)),
    ("write", "UPDATE t SET a = 1", {}, {}, {}, {}, (0,)),
    ("write", "SELECT * INTO t2 FROM t", {}, {}, {}, {}, (0,)),
    ("write", "SELECT * FROM t FOR SHARE", {}, {}, {}, {}, (0,)),
    ("write", "WITH d AS (UPDATE t SET a = 1 RETURNING a) SELECT * FROM d", {}, {}, {}, {}, (0,)),
    ("write", "COPY t FROM STDIN", {}, {}, {}, {}, (0,)),
    ("write", "COPY t TO '/tmp/x'", {}, {}, {}, {}, (0,)),
    ("write", "EXPLAIN ANALYZE INSERT INTO t VALUES (1)", {}, {}, {}, {}, (0,)),
    ("write", "EXPLAIN (COSTS off, ANALYZE) DELETE FROM t", {}, {}, {}, {}, (0,)),
    ("write", "EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", {}, {}, {}, {}, (0,)),
    ("write", "DECLARE c CURSOR FOR SELECT 1", {}, {}, {}, {}, (0,)),
    ("write", "LISTEN ch", {}, {}, {}, {}, (0,)),
    ("write", "VACUUM t", {}, {}, {}, {}, (0,)),
    ("write", "CREATE TEMP TABLE tt (a int)", {}, {}, {}, {}, (0,)),
    ("lock", "LOCK TABLE t IN SHARE ROW EXCLUSIVE MODE", {}, {}, {}, {}, (0,)),
    ("lock_share", "LOCK TABLE t IN ROW SHARE MODE", {}, {}, {}, {}, (0, 1)),
    ("two_phase_commit", "COMMIT PREPARED 'x'", {}, {}, {}, {}, (0,)),
    ("two_phase_commit", "PREPARE TRANSACTION 'x'", {}, {}, {}, {}, (0,)),
    ("two_phase_commit", "PREPARE TRANSACTION 'x'", TXN, {}, {}, {}, (0, 1)),
    ("transaction_control", "BEGIN", {}, {}, {}, {}, (0, 1)),
    ("transaction_control", "BEGIN", {}, {"statement_level_load_balance": True}, {}, {}, (0, 1, 2)),
    ("transaction_control", "END", TXN, {}, {}, {}, (0, 1)),
    ("set", "SET search_path TO s", {}, {}, {}, {}, (0, 1)),
    ("set", "SET transaction_read_only = on", {}, {}, {}, {}, (0, 1)),
    ("set_primary", "SET transaction_read_only = 0", {}, {}, {}, {}, (0,)),
    ("set_primary", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", {}, {}, {}, {}, (0,)),
    ("discard", "DISCARD PLANS", {}, {}, {}, {}, (0, 1)),
    ("prepare", "PREPARE p AS SELECT 1", {}, {}, {}, {}, (0,)),
    ("prepared_follow", "EXECUTE p", {"prepared": {"p": ((0,), 0)}}, {}, {}, {}, (0,)),
    ("prepared_follow", "EXPLAIN EXECUTE p(1)", {"prepared": {"p": ((1,), 1)}}, {}, {}, {}, (1,)),
    ("prepared_unknown", "EXECUTE nosuch", {}, {}, {}, {}, (0,)),
    ("deallocate_all", "DEALLOCATE ALL", {}, {}, {}, {}, (0, 1)),
    ("deallocate_unknown", "DEALLOCATE nosuch", {}, {}, {}, {}, (0, 1)),
    ("load_balance_off", "SELECT 1", {}, {"load_balance_mode": False}, {}, {}, (0,)),
    ("write_always", "SELECT 1", {"writing": True}, {"disable_load_balance_on_write": "always"},
     {}, {}, (0,)),
    ("not_select_text", "/* c */ SELECT 1", {}, {}, {}, {}, (0,)),
    ("not_select_text", "\tSELECT 1", {}, {"ignore_leading_white_space": False}, {}, {}, (0,)),
    ("in_write_transaction", "SELECT 1", {**TXN, "writing": True}, {}, {}, {}, (0,)),
    ("failed_transaction", "SELECT 1", {**TXN, "failed_transaction": True}, {}, {}, {}, (0,)),
    ("serializable", "SELECT 1", {**TXN, "serializable_txn": True}, {}, {}, {}, (0,)),
    ("delay", "SELECT 1", {}, {"delay_threshold": 100}, {}, {"delays": (0, 500, 0)}, (0,)),
    ("system_catalog", "SELECT relname FROM pg_catalog.pg_class", {}, {}, {}, {}, (0,)),
    ("system_catalog", "COPY pg_class TO STDOUT", {}, {}, {}, {}, (0,)),
    ("temp_table", "SELECT * FROM tt", {"temp_possible": True}, {}, {"temp": {"tt"}}, {}, (0,)),
    ("temp_table", "SELECT * FROM pg_temp.tt", {}, {}, {}, {}, (0,)),
    ("temp_table", "SELECT * FROM tt", {"temp_possible": True}, {}, {"unknown": {"tt"}}, {}, (0,)),
    ("temp_table", "SELECT * FROM tt", {"temp_tables": {"tt": (True, True, False)}},
     {"check_temp_table": "trace"}, {}, {}, (0,)),
    ("temp_table", "EXPLAIN SELECT * FROM tt", {"temp_possible": True}, {}, {"temp": {"tt"}}, {}, (0,)),
    ("unlogged_table", "SELECT * FROM s.u", {}, {}, {"unlogged": {"s.u"}}, {}, (0,)),
    ("unlogged_table", "COPY u TO STDOUT", {}, {}, {"unlogged": {"u"}}, {}, (0,)),
    ("unlogged_table", "SELECT * FROM u", {}, {}, {"unknown": {"u"}}, {}, (0,)),
    ("primary_routing_query_pattern", "SELECT * FROM t", {},
     {"primary_routing_query_pattern_list": ".*FROM t"}, {}, {}, (0,)),
    ("writing_function", "SELECT f()", {}, {}, {"volatile": {"f"}}, {}, (0,)),
    ("writing_function", "SELECT f()", {}, {}, {"unknown": {"f"}}, {}, (0,)),
    ("writing_function", "EXPLAIN ANALYZE SELECT f()", {}, {}, {"volatile": {"f"}}, {}, (0,)),
    ("writing_function", "SELECT s.f()", {}, {"read_only_function_list": ["f"]}, {}, {}, (0,)),
    ("dml_adaptive", "SELECT * FROM s.t", {**TXN, "dml_written": {"t"}},
     {"disable_load_balance_on_write": "dml_adaptive"}, {}, {}, (0,)),
    ("dml_adaptive", "SELECT f() FROM t2", TXN,
     {"disable_load_balance_on_write": "dml_adaptive",
      "dml_adaptive_object_relationship_list": "f():t2"}, {}, {}, (0,)),
    ("load_balance", "SELECT 1", {}, {}, {}, {"status": ("up", "down", "down")}, (0,)),
    ("load_balance", "SELECT * FROM t", {}, {}, {}, {}, (1,)),
    ("load_balance", "EXPLAIN SELECT * FROM t", {}, {}, {}, {}, (1,)),
    ("load_balance", "EXPLAIN UPDATE t SET a = 1", {}, {}, {}, {}, (1,)),
    ("load_balance", "EXPLAIN (ANALYZE false) DELETE FROM t", {}, {}, {}, {}, (1,)),
    ("load_balance", "EXPLAIN ANALYZE SELECT lower(a) FROM t", {}, {}, {}, {}, (1,)),
    ("load_balance", "COPY (SELECT * FROM t) TO STDOUT", {}, {}, {}, {}, (1,)),
    ("load_balance", "SELECT * FROM t", {**TXN, "dml_written": {"t"}}, {}, {}, {}, (1,)),
    ("load_balance", "SELECT * FROM t2", {**TXN, "dml_written": {"t"}},
     {"disable_load_balance_on_write": "dml_adaptive"}, {}, {}, (1,)),
    ("load_balance", "SELECT * FROM tt", {}, {}, {"temp": {"tt"}}, {}, (1,)),   # no temp possible
    ("load_balance", "SELECT * FROM tt", {"temp_possible": True}, {"check_temp_table": "none"},
     {"temp": {"tt"}}, {}, (1,)),
    ("load_balance", "SELECT * FROM u", {}, {"check_unlogged_table": False}, {"unlogged": {"u"}},
     {}, (1,)),
    ("load_balance", "SELECT * FROM s.tt", {"temp_possible": True}, {}, {"temp": {"tt"}}, {}, (1,)),
    ("load_balance", "SELECT * FROM tt", {"temp_tables": {"tt": (True, False, False)}},
     {"check_temp_table": "trace"}, {}, {}, (1,)),
    ("database_redirect", "SELECT 1", {"load_balance_node": None},
     {"database_redirect_preference_list": "d.*:2"}, {}, {}, (2,)),
    ("app_name_redirect", "SELECT 1", {"load_balance_node": None},
     {"database_redirect_preference_list": "db:1", "app_name_redirect_preference_list": "app:2"},
     {}, {}, (2,)),
    ("lower_delay_standby", "SELECT 1", {}, {"delay_threshold": 100, "prefer_lower_delay_standby": True},
     {}, {"delays": (0, 500, 10)}, (2,)),
    # answers["backend_pids"]: backend pids of pgpool's connections -> node
    ("terminate_backend", "SELECT pg_terminate_backend(4242)", {}, {},
     {"backend_pids": {4242: 2}}, {}, (2,)),
]


@pytest.mark.parametrize("rule,sql,state,cfg,answers,view,nodes", RULE_ROWS,
                         ids=[f"{r[0]}:{r[1][:40]}" for r in RULE_ROWS])
def test_rule(rule, sql, state, cfg, answers, view, nodes):
    state, answers = dict(state), dict(answers)
    lb = state.pop("load_balance_node", 1)
    pids = answers.pop("backend_pids", {})
    s = make_session(FakeCatalog(**answers), lb=lb, **state)
    d = route(classify(sql), s, make_view(**view), make_cfg(**cfg), sql=sql,
              backend_pid_node=pids.get)
    assert (d.nodes, d.reason) == (nodes, rule)
    assert d.reply_node == (0 if 0 in d.nodes else d.nodes[0])


def test_every_rule_has_a_row():
    # the last two: outcomes the relay decides (pgpool.proxy.routing)
    covered = {r[0] for r in RULE_ROWS} | {"read_your_writes", "standby_retry"}
    assert covered == {r.id for r in RULES}


def test_rule_table_indexes_are_stable_and_fit_the_counters():
    from pgpool.state.shm import ROUTE_COUNTERS
    assert len(RULES) <= ROUTE_COUNTERS
    assert len(RULE_INDEX) == len(RULES)
    assert all(RULE_INDEX[r.id] == i for i, r in enumerate(RULES))
    # the first ones are persisted in running workers' counters: their order never changes
    assert [r.id for r in RULES[:4]] == ["raw_mode", "multi_statement", "unparsable", "write"]
    assert all(r.target and r.description for r in RULES)


@pytest.mark.parametrize("sql,standby_sql", [
    ("BEGIN READ WRITE", "BEGIN"), ("BEGIN", None), ("PREPARE TRANSACTION 'x'", "COMMIT"),
])
def test_standbys_get_a_replacement(sql, standby_sql):
    d = decide(sql, TXN if sql.startswith("PREPARE") else {})
    assert d.standby_sql == standby_sql


# ---------------------------------------------------------------------------------------------
# Catalog use: what is asked, and when

def test_unlogged_answers_are_asked_per_table_with_schema():
    cat = FakeCatalog()
    decide("SELECT * FROM s.a JOIN b ON true", catalog=cat)
    assert cat.asked == [("unlogged", "s.a"), ("unlogged", "b")]


def test_no_catalog_means_no_temp_or_unlogged_check():
    s = SessionRouteState("db", "app", random.Random(1))
    s.load_balance_node = 1
    s.temp_possible = True
    d = route(classify("SELECT * FROM t"), s, make_view(), make_cfg())
    assert (d.nodes, d.reason) == ((1,), "load_balance")


def test_explicit_is_volatile_wins_over_the_catalog():
    cat = FakeCatalog(volatile={"f"})
    s = make_session(cat)
    d = route(classify("SELECT f()"), s, make_view(), make_cfg(), is_volatile=lambda f: False)
    assert d.reason == "load_balance" and ("volatile", "f") not in cat.asked


def test_temp_answers_are_cached_per_session_until_a_statement_may_create_one():
    cat = FakeCatalog()
    cfg = make_cfg()
    s = make_session(cat, temp_possible=True)
    for _ in range(3):
        route(classify("SELECT * FROM tt"), s, make_view(), cfg)
    assert cat.asked.count(("temp", "tt")) == 1
    facts = classify("DO $$ BEGIN CREATE TEMP TABLE tt (a int); END $$")
    s.after_statement(facts, route(facts, s, make_view(), cfg), cfg)
    cat.temp.add("tt")
    assert route(classify("SELECT * FROM tt"), s, make_view(), cfg).reason == "temp_table"


def test_unknown_temp_answer_is_not_cached():
    cat = FakeCatalog(unknown={"tt"})
    s = make_session(cat, temp_possible=True)
    assert route(classify("SELECT * FROM tt"), s, make_view(), make_cfg()).reason == "temp_table"
    cat.unknown.clear()
    assert route(classify("SELECT * FROM tt"), s, make_view(), make_cfg()).reason == "load_balance"


@pytest.mark.parametrize("reset,asks", [
    (["ABORT", "DISCARD ALL"], False), (["DISCARD  temp"], False), (["ABORT"], True),
    ("ABORT; RESET ALL", True),
])
def test_pooled_connection_may_keep_temp_tables(reset, asks):
    cat = FakeCatalog()
    route(classify("SELECT * FROM tt"), make_session(cat), make_view(),
          make_cfg(reset_query_list=reset))
    assert (("temp", "tt") in cat.asked) is asks


@pytest.mark.parametrize("sql,possible", [
    ("SELECT * FROM t", False), ("INSERT INTO t VALUES (1)", False), ("SET x = 1", False),
    ("CREATE TABLE x (a int)", True), ("DO $$ $$", True), ("CALL p()", True),
    ("SELECT f()", True), ("SELECT 1; SELECT 2", False), ("SELECT 1; DO $$ $$", True),
    ("frobnicate", True),
    ("SELECT * INTO TEMP x FROM t", True), ("EXECUTE p", True),
])
def test_statements_that_may_create_temp_tables(sql, possible):
    cfg = make_cfg()
    s = make_session(FakeCatalog(volatile={"f"}), temp_possible=False)
    facts = classify(sql)
    s.after_statement(facts, route(facts, s, make_view(), cfg), cfg)
    assert s.temp_possible is possible


# ---------------------------------------------------------------------------------------------
# check_temp_table = trace: CREATE / DROP TEMP TABLE per session, transactions

def run(steps, cfg, session=None):
    """Route and track each statement like the relay, with the ReadyForQuery that follows."""
    s = session or make_session(FakeCatalog())
    status = "I"
    d = None
    for sql in steps:
        explicit = None
        if isinstance(sql, tuple):
            sql, explicit = sql
        facts = classify(sql)
        d = route(facts, s, make_view(), cfg, sql=sql)
        s.after_statement(facts, d, cfg)
        if facts.transaction == "begin":
            status = "T"
        elif facts.transaction == "end":
            status = "I"
        s.on_ready_for_query(explicit or status)
    return d, s


def _steps_id(steps) -> str:
    return "|".join(s if isinstance(s, str) else s[0] for s in steps)[:70]


TRACE = [
    (["CREATE TEMP TABLE tt (a int)", "SELECT * FROM tt"], "temp_table"),
    (["CREATE TEMP TABLE tt (a int)", "DROP TABLE tt", "SELECT * FROM tt"], "load_balance"),
    (["CREATE TEMP TABLE tt (a int)", "CREATE TEMP TABLE t2 (a int)", "DROP TABLE t2",
      "SELECT * FROM tt"], "temp_table"),
    (["BEGIN", "CREATE TEMP TABLE tt (a int)", "ROLLBACK", "SELECT * FROM tt"], "load_balance"),
    (["BEGIN", "CREATE TEMP TABLE tt (a int)", "COMMIT", "SELECT * FROM tt"], "temp_table"),
    (["BEGIN", "CREATE TEMP TABLE tt (a int)", ("SELECT x", "E"), "COMMIT", "SELECT * FROM tt"],
     "load_balance"),
    (["BEGIN", "CREATE TEMP TABLE tt (a int) ON COMMIT DROP", "SELECT * FROM tt"], "temp_table"),
    (["BEGIN", "CREATE TEMP TABLE tt (a int) ON COMMIT DROP", "COMMIT", "SELECT * FROM tt"],
     "load_balance"),
    (["CREATE TEMP TABLE tt (a int)", "BEGIN", "DROP TABLE tt", "ROLLBACK", "SELECT * FROM tt"],
     "temp_table"),
    (["CREATE TEMP TABLE tt (a int)", "BEGIN", "DROP TABLE tt", "COMMIT", "SELECT * FROM tt"],
     "load_balance"),
    (["BEGIN", "CREATE TEMP TABLE tt (a int)", "DROP TABLE tt", "ROLLBACK", "SELECT * FROM tt"],
     "load_balance"),
    (["CREATE TEMP TABLE tt (a int)", "DISCARD ALL", "SELECT * FROM tt"], "load_balance"),
    (["CREATE TEMP TABLE tt AS SELECT 1 AS a", "SELECT * FROM tt"], "temp_table"),
    (["SELECT 1 AS a INTO TEMP tt", "SELECT * FROM tt"], "temp_table"),
    (["CREATE TEMP TABLE tt (a int); DROP TABLE tt", "SELECT * FROM tt"], "load_balance"),
    # a transaction that ended where we could not see how: keep what may exist
    (["BEGIN", "CREATE TEMP TABLE tt (a int)", ("SELECT 1", "I"), "SELECT * FROM tt"],
     "temp_table"),
    (["CREATE TEMP TABLE \"TT\" (a int)", "SELECT * FROM tt"], "load_balance"),
]


@pytest.mark.parametrize("steps,rule", TRACE, ids=[_steps_id(t[0]) for t in TRACE])
def test_trace_mode(steps, rule):
    # (writes would send the transaction's reads to the primary anyway: not tracked here)
    d, _ = run(steps, make_cfg(check_temp_table="trace", disable_load_balance_on_write="off"))
    assert d.reason == rule


# ---------------------------------------------------------------------------------------------
# disable_load_balance_on_write = dml_adaptive

DML = [
    ("", ["BEGIN", "INSERT INTO t VALUES (1)", "SELECT * FROM t"], "dml_adaptive"),
    ("", ["BEGIN", "INSERT INTO t VALUES (1)", "SELECT * FROM t2"], "load_balance"),
    ("", ["BEGIN", "UPDATE s.t SET a = 1", "SELECT * FROM t"], "dml_adaptive"),
    ("", ["BEGIN", "TRUNCATE t", "SELECT * FROM t"], "dml_adaptive"),
    ("", ["INSERT INTO t VALUES (1)", "BEGIN", "SELECT * FROM t"], "load_balance"),
    ("", ["BEGIN", "INSERT INTO t VALUES (1)", "COMMIT", "SELECT * FROM t"], "load_balance"),
    ("", ["BEGIN", "INSERT INTO t VALUES (1)", "COMMIT", "BEGIN", "SELECT * FROM t"], "load_balance"),
    ("", ["BEGIN", "INSERT INTO t VALUES (1)", "SELECT * FROM t WHERE false"], "dml_adaptive"),
    ("t:t2", ["BEGIN", "INSERT INTO t VALUES (1)", "SELECT * FROM t2"], "dml_adaptive"),
    ("t:t2,t2:v3", ["BEGIN", "INSERT INTO t VALUES (1)", "SELECT * FROM v3"], "dml_adaptive"),
    ("t:t2,t:t4", ["BEGIN", "INSERT INTO t VALUES (1)", "SELECT * FROM t4"], "dml_adaptive"),
    ("f():t5", ["BEGIN", "SELECT f()", "SELECT * FROM t5"], "dml_adaptive"),
    ("f():t5", ["SELECT f()", "BEGIN", "SELECT * FROM t5"], "load_balance"),
    ("", [("BEGIN; INSERT INTO t VALUES (1)", "T"), "SELECT * FROM t"], "dml_adaptive"),
]


@pytest.mark.parametrize("rels,steps,rule", DML, ids=[f"{d[0]}|{_steps_id(d[1])}" for d in DML])
def test_dml_adaptive(rels, steps, rule):
    cfg = make_cfg(disable_load_balance_on_write="dml_adaptive",
                   dml_adaptive_object_relationship_list=rels)
    d, s = run(steps, cfg, make_session(FakeCatalog(volatile={"f"})))
    assert d.reason == rule
    assert not s.writing      # dml_adaptive never marks the whole transaction as writing


# ---------------------------------------------------------------------------------------------
# Counters and the side-effect-free copy (PGPOOL EXPLAIN ROUTE)

def test_after_statement_counts_the_rule():
    counters = [0] * 64
    s = SessionRouteState("db", "app", random.Random(1), counters=counters)
    s.load_balance_node = 1
    cfg = make_cfg()
    for sql in ("SELECT 1", "SELECT 2", "INSERT INTO t VALUES (1)", "BEGIN"):
        facts = classify(sql)
        s.after_statement(facts, route(facts, s, make_view(), cfg), cfg)
    assert counters[RULE_INDEX["load_balance"]] == 2
    assert counters[RULE_INDEX["write"]] == 1
    assert counters[RULE_INDEX["transaction_control"]] == 1
    assert sum(counters) == 4


def test_copy_routes_like_the_session_and_leaves_it_untouched():
    counters = [0] * 64
    cfg = make_cfg(statement_level_load_balance=True)
    s = SessionRouteState("db", "app", random.Random(3), counters=counters,
                          catalog=FakeCatalog())
    s.temp_tables["tt"] = (True, True, False)
    s.dml_written.add("t")
    probe = s.copy()
    predicted = route(classify("SELECT 1"), probe, make_view(), cfg)
    facts = classify("CREATE TEMP TABLE x (a int)")
    probe.after_statement(facts, route(facts, probe, make_view(), cfg), cfg)
    assert s.temp_tables == {"tt": (True, True, False)} and s.dml_written == {"t"}
    assert sum(counters) == 0 and probe.counters is None and probe.catalog is s.catalog
    # the session's own next statement goes where the probe said
    assert route(classify("SELECT 1"), s, make_view(), cfg).nodes == predicted.nodes
