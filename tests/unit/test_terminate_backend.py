"""pg_terminate_backend(<pid>) goes to the node that runs the backend (pgpool-II's
process_pg_terminate_backend_func): the pid found in the text, and the routing rule that wins
over every load-balancing rule but only for a SELECT whose pid belongs to pgpool."""

import pytest

from pgpool.router import route, terminate_backend_pid
from pgpool.sql.classify import classify
from tests.unit.test_router import make_cfg
from tests.unit.test_routing_rules import TXN, FakeCatalog, make_session, make_view

PIDS = {4242: 2, 77: 0, 555: 1}


@pytest.mark.parametrize("sql, pid", [
    ("SELECT pg_terminate_backend(123)", 123),
    ("select PG_TERMINATE_BACKEND ( 42 , 1000)", 42),          # PostgreSQL 14's timeout argument
    ("SELECT pg_catalog.pg_terminate_backend(7)", 7),
    ("SELECT pg_terminate_backend(1), pg_terminate_backend(2)", 1),
    # inside strings, comments and dollar quotes: not a call
    ("SELECT 'pg_terminate_backend(5)', pg_terminate_backend(6)", 6),
    ("SELECT E'\\' pg_terminate_backend(1)', pg_terminate_backend(8)", 8),
    ("/* pg_terminate_backend(1) */ SELECT pg_terminate_backend(2) -- pg_terminate_backend(3)", 2),
    ("SELECT $$pg_terminate_backend(1)$$, pg_terminate_backend(3)", 3),
    ("SELECT $a$ $$ pg_terminate_backend(1) $a$, pg_terminate_backend(4)", 4),
    # not an integer constant
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", None),
    ("SELECT pg_terminate_backend($1)", None),
    ("SELECT pg_terminate_backend(12.5)", None),
    ("SELECT pg_terminate_backend(-3)", None),
    ("SELECT pg_terminate_backend('12')", None),
    # another function
    ("SELECT s.pg_terminate_backend(5)", None),
    ("SELECT my_pg_terminate_backend(9)", None),
    ("SELECT pg_cancel_backend(9)", None),
    ("SELECT 1", None),
])
def test_terminate_backend_pid(sql, pid):
    assert terminate_backend_pid(sql) == pid


def route_with(sql, lookup=PIDS.get, state=None, cfg=None, status=("up", "up", "up")):
    # pg_terminate_backend is VOLATILE in pg_proc
    s = make_session(FakeCatalog(volatile={"pg_terminate_backend", "now"}), **(state or {}))
    return route(classify(sql), s, make_view(status=status), make_cfg(**(cfg or {})), sql=sql,
                 backend_pid_node=lookup)


# (sql, session state, settings, node status, expected nodes, rule); the load-balance node is 1
ROWS = [
    ("SELECT pg_terminate_backend(4242)", {}, {}, ("up",) * 3, (2,), "terminate_backend"),
    ("SELECT pg_terminate_backend(77)", {}, {}, ("up",) * 3, (0,), "terminate_backend"),
    ("SELECT pg_catalog.pg_terminate_backend(555, 5000)", {}, {}, ("up",) * 3, (1,),
     "terminate_backend"),
    # wins over what would keep a read on the primary
    ("SELECT pg_terminate_backend(4242)", TXN | {"writing": True}, {}, ("up",) * 3, (2,),
     "terminate_backend"),
    ("SELECT pg_terminate_backend(4242)", {}, {"load_balance_mode": False}, ("up",) * 3, (2,),
     "terminate_backend"),
    ("SELECT pg_terminate_backend(4242)", {}, {"disable_load_balance_on_write": "always"},
     ("up",) * 3, (2,), "terminate_backend"),
    # a pid that is not one of pgpool's connections: an ordinary (volatile) function call
    ("SELECT pg_terminate_backend(9999)", {}, {}, ("up",) * 3, (0,), "writing_function"),
    # the node is down: nowhere to send it but the primary
    ("SELECT pg_terminate_backend(4242)", {}, {}, ("up", "up", "down"), (0,), "writing_function"),
    # not a plain SELECT of a constant pid
    ("SELECT pg_terminate_backend(pid) FROM app_sessions WHERE pid = 4242", {}, {},
     ("up",) * 3, (0,), "writing_function"),
    ("SELECT pg_terminate_backend(4242); SELECT 1", {}, {}, ("up",) * 3, (0,), "multi_statement"),
    ("EXPLAIN SELECT pg_terminate_backend(4242)", {}, {}, ("up",) * 3, (0,), "writing_function"),
]


@pytest.mark.parametrize("sql, state, cfg, status, nodes, rule", ROWS)
def test_route(sql, state, cfg, status, nodes, rule):
    d = route_with(sql, state=state, cfg=cfg, status=status)
    assert (d.nodes, d.reason) == (nodes, rule)
    assert d.reply_node == nodes[0]


def test_without_a_pid_lookup_it_is_an_ordinary_function_call():
    assert route_with("SELECT pg_terminate_backend(4242)", None).reason == "writing_function"


@pytest.mark.parametrize("sql, asked", [
    ("SELECT pg_terminate_backend(4242)", [4242]),
    ("SELECT 1", []),
    ("SELECT now()", []),
    ("SELECT pg_terminate_backend(pid) FROM app_sessions", []),
    ("UPDATE t SET a = pg_terminate_backend(4242)", []),
])
def test_pids_are_looked_up_only_for_a_constant_pid_in_a_select(sql, asked):
    seen = []
    route_with(sql, lambda pid: seen.append(pid))
    assert seen == asked
