"""Unit tests for pgpool.router: facts + session state + cluster view -> nodes and reason."""
import random
from collections import Counter
from types import SimpleNamespace

import pytest

from pgpool.router import (ClusterView, NodeView, NoUsableNode, RouteDecision,
                           SessionRouteState, choose_load_balance_node, route)
from pgpool.sql.classify import classify

DEFAULTS = dict(
    load_balance_mode=True, disable_load_balance_on_write="transaction",
    statement_level_load_balance=False, allow_sql_comments=False,
    ignore_leading_white_space=True, database_redirect_preference_list="",
    app_name_redirect_preference_list="", delay_threshold=0, prefer_lower_delay_standby=False,
    delay_threshold_by_time=0,
    write_function_list=[], read_only_function_list=[], primary_routing_query_pattern_list="",
    check_temp_table="catalog", check_unlogged_table=True, reset_query_list=["ABORT", "DISCARD ALL"],
    dml_adaptive_object_relationship_list="",
)


def make_cfg(**over):
    return SimpleNamespace(**{**DEFAULTS, **over})


def make_view(n=3, primary=0, weights=None, status=None, delays=None,
              mode="streaming_replication"):
    weights = weights or [1.0] * n
    status = status or ["up"] * n
    delays = delays or [0] * n
    nodes = [NodeView(i, status[i], "primary" if i == primary else "standby", weights[i], delays[i])
             for i in range(n)]
    return ClusterView.of(nodes, primary, mode)


def make_session(lb=1, **state):
    s = SessionRouteState("db", "app", random.Random(1))
    s.load_balance_node = lb
    for k, v in state.items():
        setattr(s, k, v)
    return s


def non_volatile(name):
    return False


# (sql, session state, cfg overrides, expected nodes, expected reason) -- view: 0 primary, 1, 2
# standbys, session load-balance node 1.
RULES = [
    # §5.1 multi-statement; unparsable
    ("SELECT 1; SELECT 2", {}, {}, (0,), "multi_statement"),
    ("SELECT FROM WHERE", {}, {}, (0,), "unparsable"),
    # §5.2 send_to_where
    ("SELECT * FROM t WHERE a = 1", {}, {}, (1,), "load_balance"),
    ("SELECT * INTO t2 FROM t", {}, {}, (0,), "write"),
    ("SELECT * FROM t FOR UPDATE", {}, {}, (0,), "write"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", {}, {}, (0,), "write"),
    ("INSERT INTO t VALUES (1)", {}, {}, (0,), "write"),
    ("CREATE TABLE t (a int)", {}, {}, (0,), "write"),
    ("EXPLAIN SELECT 1", {}, {}, (1,), "load_balance"),
    ("COPY t FROM STDIN", {}, {}, (0,), "write"),
    ("COPY t TO STDOUT", {}, {}, (1,), "load_balance"),
    ("COPY t TO '/tmp/f'", {}, {}, (0,), "write"),
    ("LOCK t IN ACCESS SHARE MODE", {}, {}, (0, 1), "lock_share"),
    ("LOCK t IN ROW EXCLUSIVE MODE", {}, {}, (0,), "lock"),
    ("BEGIN", {}, {}, (0, 1), "transaction_control"),
    ("START TRANSACTION", {}, {}, (0, 1), "transaction_control"),
    ("COMMIT", {}, {}, (0, 1), "transaction_control"),
    ("ROLLBACK", {}, {}, (0, 1), "transaction_control"),
    ("SAVEPOINT a", {}, {}, (0, 1), "transaction_control"),
    ("RELEASE SAVEPOINT a", {}, {}, (0, 1), "transaction_control"),
    ("ROLLBACK TO SAVEPOINT a", {}, {}, (0, 1), "transaction_control"),
    ("PREPARE TRANSACTION 'g'", {}, {}, (0,), "two_phase_commit"),
    ("COMMIT PREPARED 'g'", {}, {}, (0,), "two_phase_commit"),
    ("ROLLBACK PREPARED 'g'", {}, {}, (0,), "two_phase_commit"),
    ("SET search_path TO s", {}, {}, (0, 1), "set"),
    ("RESET ALL", {}, {}, (0, 1), "set"),
    ("SET transaction_read_only TO off", {}, {}, (0,), "set_primary"),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", {}, {}, (0,), "set_primary"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", {}, {}, (0,), "set_primary"),
    ("SET TRANSACTION READ WRITE", {}, {}, (0,), "set_primary"),
    ("DISCARD ALL", {}, {}, (0, 1), "discard"),
    ("SHOW search_path", {}, {}, (1,), "load_balance"),
    ("PREPARE p AS SELECT 1", {}, {}, (0,), "prepare"),
    ("EXECUTE nosuch", {}, {}, (0,), "prepared_unknown"),
    ("EXECUTE p", {"prepared": {"p": ((0, 1), 0)}}, {}, (0, 1), "prepared_follow"),
    ("DEALLOCATE p", {"prepared": {"p": ((0,), 0)}}, {}, (0,), "prepared_follow"),
    ("DEALLOCATE nosuch", {}, {}, (0, 1), "deallocate_unknown"),
    ("DEALLOCATE ALL", {}, {}, (0, 1), "deallocate_all"),
    # §5.3/4 transaction state
    ("SELECT 1", {"in_transaction": True}, {}, (1,), "load_balance"),
    ("SELECT 1", {"in_transaction": True, "writing": True}, {}, (0,), "in_write_transaction"),
    ("SELECT 1", {"in_transaction": False, "writing": True}, {}, (1,), "load_balance"),
    ("SELECT 1", {"in_transaction": True, "failed_transaction": True}, {}, (0,), "failed_transaction"),
    ("SELECT 1", {"in_transaction": True, "serializable_txn": True}, {}, (0,), "serializable"),
    ("SELECT 1", {"in_transaction": True, "serializable_default": True}, {}, (0,), "serializable"),
    ("SELECT 1", {"writing": True}, {"disable_load_balance_on_write": "always"}, (0,), "write_always"),
    ("SELECT 1", {}, {"load_balance_mode": False}, (0,), "load_balance_off"),
    # §5.6 text test: leading comment / whitespace
    ("/*NO LOAD BALANCE*/ SELECT 1", {}, {}, (0,), "not_select_text"),
    ("/*NO LOAD BALANCE*/ SELECT 1", {}, {"allow_sql_comments": True}, (1,), "load_balance"),
    ("-- c\nSELECT 1", {}, {}, (0,), "not_select_text"),
    ("  SELECT 1", {}, {}, (1,), "load_balance"),
    ("  SELECT 1", {}, {"ignore_leading_white_space": False}, (0,), "not_select_text"),
    ("VALUES (1)", {}, {}, (0,), "not_select_text"),
    # §5.4 checks after the transaction test
    ("SELECT * FROM pg_class", {}, {}, (0,), "system_catalog"),
    ("SELECT * FROM t1;", {}, {"primary_routing_query_pattern_list": "SELECT \\* FROM t1\\;;SELECT 2"},
     (0,), "primary_routing_query_pattern"),
    ("select * from T1;", {}, {"primary_routing_query_pattern_list": "SELECT \\* FROM t1\\;"},
     (0,), "primary_routing_query_pattern"),
    ("SELECT * FROM t2;", {}, {"primary_routing_query_pattern_list": "SELECT \\* FROM t1\\;"},
     (1,), "load_balance"),
    ("SELECT * FROM t1", {}, {"primary_routing_query_pattern_list": ["SELECT .* FROM t1"]},
     (0,), "primary_routing_query_pattern"),
    # §5.5 functions
    ("SELECT nextval('s')", {}, {"write_function_list": ["nextval", "setval"]}, (0,), "writing_function"),
    ("SELECT lower('s')", {}, {"write_function_list": ["nextval", "setval"]}, (1,), "load_balance"),
    ("SELECT lower('s')", {}, {"read_only_function_list": ["lower", "upper"]}, (1,), "load_balance"),
    ("SELECT LOWER('s')", {}, {"read_only_function_list": ["lower"]}, (1,), "load_balance"),
    ("SELECT lower(f('s'))", {}, {"read_only_function_list": ["lower"]}, (0,), "writing_function"),
    ("SELECT public.f(1)", {}, {"write_function_list": ["public\\.f"]}, (0,), "writing_function"),
    ("SELECT f(1)", {}, {"write_function_list": ["f.*"]}, (0,), "writing_function"),
]


@pytest.mark.parametrize("sql,state,over,nodes,reason", RULES,
                         ids=[f"{r[0][:40]}|{r[4]}" for r in RULES])
def test_rules(sql, state, over, nodes, reason):
    d = route(classify(sql), make_session(**state), make_view(), make_cfg(**over),
              sql=sql, is_volatile=non_volatile)
    assert (d.nodes, d.reason) == (nodes, reason)
    assert d.reply_node == (0 if 0 in d.nodes else d.nodes[0])


@pytest.mark.parametrize("answer,nodes,reason", [
    (False, (1,), "load_balance"),       # stable/immutable
    (True, (0,), "writing_function"),    # volatile
    (None, (0,), "writing_function"),    # unknown: conservative
])
def test_volatility_callback(answer, nodes, reason):
    asked = []

    def is_volatile(name):
        asked.append(name)
        return answer
    d = route(classify("SELECT f(1)"), make_session(), make_view(), make_cfg(), is_volatile=is_volatile)
    assert (d.nodes, d.reason) == (nodes, reason) and asked == ["f"]


def test_no_volatility_callback_means_functions_write():
    d = route(classify("SELECT f(1)"), make_session(), make_view(), make_cfg())
    assert d.reason == "writing_function"


def test_reads_without_functions_never_ask_the_catalog():
    d = route(classify("SELECT a FROM t WHERE b = 2"), make_session(), make_view(), make_cfg(),
              is_volatile=lambda name: pytest.fail("asked"))
    assert d.nodes == (1,)


# ---------------------------------------------------------------------------------------------
# Session sequences: write tracking per disable_load_balance_on_write

def run(steps, cfg, session=None, view=None):
    """Route each statement, then report success and a ReadyForQuery, like the data path."""
    session = session or make_session()
    view = view or make_view()
    status = "I"
    decision = None
    for step in steps:
        sql, explicit = (step, None) if isinstance(step, str) else step
        facts = classify(sql)
        decision = route(facts, session, view, cfg, sql=sql, is_volatile=non_volatile)
        session.after_statement(facts, decision, cfg)
        if facts.transaction == "begin":
            status = "T"
        elif facts.transaction == "end":
            status = "I"
        status = explicit or status
        session.on_ready_for_query(status)
    return decision


SEQUENCES = [
    # (mode, statements..., expected (nodes, reason) of the last one)
    ("transaction", ["BEGIN", "INSERT INTO t VALUES (1)", "SELECT 1"], ((0,), "in_write_transaction")),
    ("transaction", ["BEGIN", "SELECT 1", "SELECT 2"], ((1,), "load_balance")),
    ("transaction", ["BEGIN", "INSERT INTO t VALUES (1)", "COMMIT", "SELECT 1"], ((1,), "load_balance")),
    ("transaction", ["BEGIN", "INSERT INTO t VALUES (1)", "COMMIT", "BEGIN", "SELECT 1"], ((1,), "load_balance")),
    ("transaction", ["INSERT INTO t VALUES (1)", "BEGIN", "SELECT 1"], ((1,), "load_balance")),
    ("transaction", ["BEGIN", "SET TRANSACTION READ ONLY", "SELECT 1"], ((1,), "load_balance")),
    ("transaction", ["BEGIN", "SAVEPOINT a", "RELEASE SAVEPOINT a", "SELECT 1"], ((1,), "load_balance")),
    ("transaction", ["BEGIN", "INSERT INTO t VALUES (1)", "SAVEPOINT a", "ROLLBACK TO SAVEPOINT a",
                     "SELECT 1"], ((0,), "in_write_transaction")),
    ("transaction", ["BEGIN", "SET search_path TO s", "SELECT 1"], ((0,), "in_write_transaction")),
    ("transaction", ["BEGIN", "SELECT nextval('s')", "SELECT 1"], ((1,), "load_balance")),
    ("transaction", [("BEGIN; INSERT INTO t VALUES (1)", "T"), "SELECT 1"], ((0,), "in_write_transaction")),
    ("transaction", ["BEGIN", ("SELECT x FROM nosuch", "E"), "SELECT 1"], ((0,), "failed_transaction")),
    ("transaction", ["BEGIN", ("SELECT x FROM nosuch", "E"), "ROLLBACK", "SELECT 1"], ((1,), "load_balance")),
    ("trans_transaction", ["BEGIN", "INSERT INTO t VALUES (1)", "COMMIT", "SELECT 1"], ((1,), "load_balance")),
    ("trans_transaction", ["BEGIN", "INSERT INTO t VALUES (1)", "COMMIT", "BEGIN", "SELECT 1"],
     ((0,), "in_write_transaction")),
    ("always", ["INSERT INTO t VALUES (1)", "SELECT 1"], ((0,), "write_always")),
    ("always", ["BEGIN", "INSERT INTO t VALUES (1)", "COMMIT", "BEGIN", "COMMIT", "SELECT 1"],
     ((0,), "write_always")),
    ("always", ["SELECT 1", "SELECT 2"], ((1,), "load_balance")),
    ("off", ["BEGIN", "INSERT INTO t VALUES (1)", "SELECT 1"], ((1,), "load_balance")),
    ("dml_adaptive", ["BEGIN", "INSERT INTO t VALUES (1)", "SELECT 1"], ((1,), "load_balance")),
    ("dml_adaptive", ["BEGIN", "INSERT INTO t VALUES (1)", "SELECT * FROM t"], ((0,), "dml_adaptive")),
    # serializable
    ("transaction", ["BEGIN ISOLATION LEVEL SERIALIZABLE", "SELECT 1"], ((0,), "serializable")),
    ("transaction", ["BEGIN", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SELECT 1"], ((0,), "serializable")),
    ("transaction", ["BEGIN ISOLATION LEVEL SERIALIZABLE", "COMMIT", "BEGIN", "SELECT 1"], ((1,), "load_balance")),
    ("transaction", ["SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                     "BEGIN", "SELECT 1"], ((0,), "serializable")),
    ("transaction", ["SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                     "SELECT 1"], ((1,), "load_balance")),
    ("transaction", ["SET default_transaction_isolation = 'serializable'", "RESET ALL", "BEGIN", "SELECT 1"],
     ((1,), "load_balance")),
    # prepared statements follow
    ("transaction", ["PREPARE p AS SELECT 1", "EXECUTE p"], ((0,), "prepared_follow")),
    ("transaction", ["PREPARE p AS SELECT 1", "DEALLOCATE p", "EXECUTE p"], ((0,), "prepared_unknown")),
    ("transaction", ["PREPARE p AS SELECT 1", "DISCARD ALL", "EXECUTE p"], ((0,), "prepared_unknown")),
    ("transaction", ["PREPARE p AS SELECT 1", "DEALLOCATE ALL", "EXECUTE p"], ((0,), "prepared_unknown")),
]


@pytest.mark.parametrize("mode,steps,expected", SEQUENCES,
                         ids=[f"{s[0]}:{'|'.join(x if isinstance(x, str) else x[0] for x in s[1])[:60]}"
                              for s in SEQUENCES])
def test_sequences(mode, steps, expected):
    d = run(steps, make_cfg(disable_load_balance_on_write=mode))
    assert (d.nodes, d.reason) == expected


def test_pending_write_resolved_by_ready_for_query_in_extended_protocol():
    cfg = make_cfg()
    s = make_session()
    facts = classify("INSERT INTO t VALUES (1)")
    s.after_statement(facts, route(facts, s, make_view(), cfg), cfg)
    assert not s.writing and s.pending_write
    s.on_ready_for_query(b"T")
    assert s.writing and not s.pending_write


def test_protocol_level_statements_share_the_prepared_map():
    s = make_session()
    view, cfg = make_view(), make_cfg()
    d = route(classify("SELECT 1"), s, view, cfg)
    s.remember_prepared("S_1", d)
    follow = route(classify('EXECUTE "S_1"'), s, view, cfg)
    assert (follow.nodes, follow.reason) == ((1,), "prepared_follow")
    assert route(classify("EXECUTE S_1"), s, view, cfg).reason == "prepared_unknown"  # s_1
    s.forget_prepared("S_1")
    assert route(classify('EXECUTE "S_1"'), s, view, cfg).reason == "prepared_unknown"


def test_prepared_follow_skips_nodes_that_went_down():
    s = make_session(prepared={"p": ((0, 1), 0)})
    view = make_view(status=["up", "down", "up"])
    s.load_balance_node = 2
    d = route(classify("EXECUTE p"), s, view, make_cfg())
    assert d.nodes == (0,) and d.reply_node == 0


# ---------------------------------------------------------------------------------------------
# Modes, node states, statement-level load balancing, BEGIN rewrite

def test_raw_mode_sends_everything_to_the_first_up_node():
    view = make_view(status=["down", "up", "up"], mode="raw")
    for sql in ("SELECT 1", "INSERT INTO t VALUES (1)", "BEGIN", "SET x TO 1", "SELECT 1; SELECT 2"):
        d = route(classify(sql), make_session(), view, make_cfg())
        assert (d.nodes, d.reply_node, d.reason) == ((1,), 1, "raw_mode")


def test_native_replication_is_not_implemented_yet():
    with pytest.raises(NotImplementedError):
        route(classify("SELECT 1"), make_session(), make_view(mode="native_replication"), make_cfg())


def test_all_nodes_down():
    with pytest.raises(NoUsableNode):
        route(classify("SELECT 1"), make_session(), make_view(status=["down"] * 3), make_cfg())


def test_primary_down_falls_back_to_main_node():
    view = make_view(status=["down", "up", "up"])
    d = route(classify("INSERT INTO t VALUES (1)"), make_session(lb=2), view, make_cfg())
    assert d.nodes == (1,)


def test_load_balance_node_down_is_rechosen():
    view = make_view(status=["up", "down", "up"], weights=[0, 1, 1])
    s = make_session(lb=1)
    d = route(classify("SELECT 1"), s, view, make_cfg())
    assert d.nodes == (2,) and s.load_balance_node == 2


def test_waiting_node_is_usable():
    view = make_view(status=["up", "waiting", "down"])
    d = route(classify("SELECT 1"), make_session(lb=1), view, make_cfg())
    assert d.nodes == (1,)


def test_both_with_load_balance_node_on_primary_is_just_primary():
    d = route(classify("BEGIN"), make_session(lb=0), make_view(), make_cfg())
    assert d.nodes == (0,) and d.standby_sql is None


def test_statement_level_load_balance():
    cfg = make_cfg(statement_level_load_balance=True)
    s = SessionRouteState("db", "app", random.Random(7))
    view = make_view()
    seen = Counter(route(classify("SELECT 1"), s, view, cfg).nodes[0] for _ in range(300))
    assert set(seen) == {0, 1, 2}
    d = route(classify("SET x TO 1"), s, view, cfg)
    assert d.nodes == (0, 1, 2) and d.reply_node == 0


@pytest.mark.parametrize("sql,plain", [
    ("BEGIN READ WRITE", True), ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", True),
    ("BEGIN", False), ("BEGIN READ ONLY", False),
])
def test_begin_rewritten_for_standbys(sql, plain):
    d = route(classify(sql), make_session(), make_view(), make_cfg())
    assert d.nodes == (0, 1) and (d.standby_sql == "BEGIN") is plain


def test_decision_is_immutable():
    d = route(classify("SELECT 1"), make_session(), make_view(), make_cfg())
    assert isinstance(d, RouteDecision)
    with pytest.raises(AttributeError):
        d.nodes = (0,)


# ---------------------------------------------------------------------------------------------
# Delay threshold

def test_delay_threshold_sends_reads_to_primary():
    view = make_view(delays=[0, 5000, 10])
    cfg = make_cfg(delay_threshold=1000)
    d = route(classify("SELECT 1"), make_session(lb=1), view, cfg)
    assert (d.nodes, d.reason) == ((0,), "delay")
    d = route(classify("SELECT 1"), make_session(lb=2), view, cfg)
    assert (d.nodes, d.reason) == ((2,), "load_balance")


def test_delay_threshold_prefers_lower_delay_standby():
    view = make_view(delays=[0, 5000, 10])
    cfg = make_cfg(delay_threshold=1000, prefer_lower_delay_standby=True)
    s = make_session(lb=1)
    d = route(classify("SELECT 1"), s, view, cfg)
    assert (d.nodes, d.reason) == ((2,), "lower_delay_standby") and s.load_balance_node == 2
    # still checked for writing functions afterwards
    s = make_session(lb=1)
    d = route(classify("SELECT f(1)"), s, view, cfg)
    assert d.reason == "writing_function"


def test_delay_threshold_off_when_zero():
    view = make_view(delays=[0, 10**9, 0])
    d = route(classify("SELECT 1"), make_session(lb=1), view, make_cfg())
    assert d.nodes == (1,)


def test_choose_replaces_a_too_delayed_pick_with_the_least_delayed_standby():
    view = make_view(n=4, delays=[0, 5000, 20, 10])
    cfg = make_cfg(delay_threshold=1000, prefer_lower_delay_standby=True)
    got = shares(view, cfg)
    # node 1 (too delayed) is never kept: its quarter goes to node 3 (least delayed)
    assert set(got) == {0, 2, 3}
    assert got[3] == pytest.approx(0.5, abs=0.02)


def test_choose_all_standbys_too_delayed_gives_primary():
    view = make_view(delays=[0, 5000, 6000], weights=[0, 1, 1])
    cfg = make_cfg(delay_threshold=1000, prefer_lower_delay_standby=True)
    assert choose_load_balance_node(view, cfg, "db", "", random.Random(1)) == 0


# ---------------------------------------------------------------------------------------------
# Load-balance node choice: weights and redirect preference lists

def shares(view, cfg, database="db", app="", draws=20000, seed=42):
    rng = random.Random(seed)
    c = Counter(choose_load_balance_node(view, cfg, database, app, rng) for _ in range(draws))
    return {k: v / draws for k, v in c.items()}


def test_weights_are_respected_statistically():
    got = shares(make_view(weights=[1, 1, 2]), make_cfg())
    assert got[0] == pytest.approx(0.25, abs=0.02)
    assert got[1] == pytest.approx(0.25, abs=0.02)
    assert got[2] == pytest.approx(0.50, abs=0.02)


def test_weight_zero_and_down_nodes_are_never_chosen():
    got = shares(make_view(n=4, weights=[1, 0, 1, 1], status=["up", "up", "down", "up"]), make_cfg())
    assert set(got) == {0, 3}


def test_all_weights_zero_gives_main_node():
    view = make_view(weights=[0, 0, 0], status=["down", "up", "up"])
    assert choose_load_balance_node(view, make_cfg(), "db", "", random.Random(1)) == 1


def test_load_balance_is_seeded_and_deterministic():
    view, cfg = make_view(), make_cfg()
    a = [choose_load_balance_node(view, cfg, "db", "", random.Random(5)) for _ in range(3)]
    assert len(set(a)) == 1


REDIRECTS = [
    # (db list, app list, database, app, expected shares)
    ("postgres:1", "", "postgres", "", {1: 1.0}),
    ("postgres:1", "", "other", "", {0: 1 / 3, 1: 1 / 3, 2: 1 / 3}),
    ("POST.*:2", "", "postgres", "", {2: 1.0}),             # anchored, case-insensitive regex
    ("gres:2", "", "postgres", "", {0: 1 / 3, 1: 1 / 3, 2: 1 / 3}),  # anchored: no partial match
    ("postgres:primary", "", "postgres", "", {0: 1.0}),
    ("postgres:standby", "", "postgres", "", {1: 0.5, 2: 0.5}),
    ("postgres:2(0.3)", "", "postgres", "", {2: 0.3, 0: 0.35, 1: 0.35}),
    ("postgres:standby(0.4)", "", "postgres", "", {0: 0.6, 1: 0.2, 2: 0.2}),
    ("postgres:1,mydb:2", "", "mydb", "", {2: 1.0}),
    ("postgres:1", "psql:2", "postgres", "psql", {2: 1.0}),   # app name overrides database
    ("postgres:1", "psql:2", "postgres", "other", {1: 1.0}),
    ("", "psql:primary(0.5)", "db", "psql", {0: 0.5, 1: 0.25, 2: 0.25}),
    ("postgres:9", "", "postgres", "", {0: 1.0}),           # bad node id -> main node
]


@pytest.mark.parametrize("dblist,applist,database,app,expected", REDIRECTS,
                         ids=[f"{r[0]}|{r[1]}|{r[2]}|{r[3]}" for r in REDIRECTS])
def test_redirect_preference_lists(dblist, applist, database, app, expected):
    cfg = make_cfg(database_redirect_preference_list=dblist, app_name_redirect_preference_list=applist)
    got = shares(make_view(), cfg, database, app)
    assert set(got) == {k for k, v in expected.items() if v > 0}
    for node, share in expected.items():
        assert got[node] == pytest.approx(share, abs=0.02)


def test_redirect_to_a_down_node_is_ignored():
    cfg = make_cfg(database_redirect_preference_list="postgres:1")
    got = shares(make_view(status=["up", "down", "up"]), cfg, "postgres")
    assert set(got) == {0, 2}


def test_redirect_lists_ignored_in_raw_mode():
    cfg = make_cfg(database_redirect_preference_list="postgres:2")
    got = shares(make_view(mode="raw"), cfg, "postgres", draws=3000)
    assert set(got) == {0, 1, 2}


def test_session_chooses_its_node_once():
    s = SessionRouteState("postgres", "", random.Random(9))
    view, cfg = make_view(), make_cfg()
    first = route(classify("SELECT 1"), s, view, cfg).nodes
    assert all(route(classify("SELECT 1"), s, view, cfg).nodes == first for _ in range(50))


WRITES = ["INSERT INTO t VALUES (1)", "UPDATE t SET a = 1", "DELETE FROM t", "SELECT * INTO x FROM t",
          "SELECT * FROM t FOR UPDATE", "WITH d AS (DELETE FROM t RETURNING *) SELECT 1",
          "CREATE TABLE x (a int)", "COPY t FROM STDIN", "LOCK t", "SELECT nextval('s')",
          "SET transaction_read_only = off", "PREPARE TRANSACTION 'g'", "CALL p()", "DO $$ $$",
          "SELECT 1; DELETE FROM t", "not sql at all", "EXECUTE nosuch"]


@pytest.mark.parametrize("sql", WRITES)
def test_never_a_write_to_a_standby(sql):
    view = make_view()
    for over in ({}, {"statement_level_load_balance": True}, {"allow_sql_comments": True},
                 {"disable_load_balance_on_write": "off"}, {"load_balance_mode": False}):
        cfg = make_cfg(write_function_list=["nextval"], **over)
        for state in ({}, {"in_transaction": True}, {"writing": True}, {"failed_transaction": True}):
            for lb in (0, 1, 2):
                d = route(classify(sql), make_session(lb=lb, **state), view, cfg, sql=sql)
                # other nodes may only get a replacement (COMMIT after PREPARE TRANSACTION)
                assert d.nodes == (0,) or (d.standby_sql == "COMMIT" and 0 in d.nodes), \
                    (over, state, lb, d)
                assert d.writes or sql.startswith("PREPARE TRANSACTION")
