"""Unit tests for pgpool.sql.classify: SQL text -> StatementFacts, one row per routing rule."""
import pytest

from pgpool.sql import classify as C
from pgpool.sql.classify import classify

# (sql, expected facts subset) -- pgpool-II 4.3 send_to_where() / is_select_query() rules
CASES = [
    # reads
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
     dict(kind="select", target="either", is_read_only=True, tables=("pgbench_accounts",),
          starts_like_select=True, multi_statement=False)),
    ("select 1", dict(kind="select", target="either", is_read_only=True)),
    ("WITH x AS (SELECT 1) SELECT * FROM x, y", dict(kind="select", is_read_only=True, tables=("y",))),
    ("(SELECT 1) UNION (SELECT 2)", dict(kind="select", is_read_only=True, starts_like_select=True)),
    ("TABLE t", dict(kind="select", is_read_only=True, starts_like_select=True, tables=("t",))),
    ("VALUES (1)", dict(kind="select", is_read_only=True, starts_like_select=False)),
    ("SHOW search_path", dict(kind="show", target="either", is_read_only=True)),
    ("", dict(kind="empty", target="either", is_read_only=True)),
    (";", dict(kind="empty", is_read_only=True)),
    # SELECT that writes or locks
    ("SELECT * INTO t2 FROM t", dict(kind="select", select_into=True, target="primary", is_read_only=False)),
    ("SELECT * FROM t FOR UPDATE", dict(for_update_share=True, target="primary", is_read_only=False)),
    ("SELECT * FROM t FOR SHARE", dict(for_update_share=True, target="primary")),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
     dict(kind="select", writing_cte=True, target="primary", is_read_only=False, tables=("t",))),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", dict(kind="insert", target="primary")),
    # DML / DDL / other -> primary
    ("INSERT INTO s.t VALUES (1)", dict(kind="insert", target="primary", tables=("s.t",))),
    ("UPDATE t SET a = 1", dict(kind="update", target="primary", is_read_only=False)),
    ("DELETE FROM t", dict(kind="delete", target="primary")),
    ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", dict(kind="merge", target="primary")),
    ("CREATE TABLE t (a int)", dict(kind="ddl", target="primary")),
    ("TRUNCATE t", dict(kind="ddl", target="primary")),
    ("VACUUM t", dict(kind="vacuum", target="primary")),
    ("EXPLAIN SELECT 1", dict(kind="explain", target="either", is_read_only=True)),
    ("LISTEN ch", dict(kind="listen", target="primary")),
    ("NOTIFY ch, 'x'", dict(kind="notify", target="primary")),
    ("CALL p()", dict(kind="call", target="primary")),
    ("DO $$ BEGIN PERFORM 1; END $$", dict(kind="do", target="primary", multi_statement=False)),
    ("DECLARE c CURSOR FOR SELECT 1", dict(kind="cursor", target="primary")),
    ("CHECKPOINT", dict(kind="other", target="primary")),
    # COPY
    ("COPY t FROM STDIN", dict(kind="copy_from", target="primary", is_read_only=False)),
    ("COPY t TO STDOUT", dict(kind="copy_to", target="either", is_read_only=True)),
    ("COPY (SELECT * FROM t) TO STDOUT", dict(kind="copy_to", target="either", is_read_only=True, tables=("t",))),
    ("COPY (DELETE FROM t RETURNING *) TO STDOUT", dict(kind="copy_to", target="primary", is_read_only=False)),
    ("COPY t TO '/tmp/file'", dict(kind="copy_to", target="either", is_read_only=False)),
    # LOCK strength: >= ROW EXCLUSIVE -> primary, weaker -> both
    ("LOCK t", dict(kind="lock", lock_mode=8, target="primary")),
    ("LOCK TABLE t IN ACCESS SHARE MODE", dict(lock_mode=1, target="both")),
    ("LOCK TABLE t IN ROW SHARE MODE", dict(lock_mode=2, target="both")),
    ("LOCK TABLE t IN ROW EXCLUSIVE MODE", dict(lock_mode=3, target="primary")),
    ("LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE NOWAIT", dict(lock_mode=4, target="primary")),
    # transaction control -> both; 2PC -> primary
    ("BEGIN", dict(kind="begin", target="both", transaction="begin")),
    ("begin read write", dict(kind="begin", target="both", read_write=True, standby_begin=True)),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE", dict(serializable="transaction", standby_begin=True)),
    ("START TRANSACTION READ ONLY", dict(kind="begin", transaction="begin", standby_begin=False)),
    ("COMMIT", dict(kind="commit", target="both", transaction="end")),
    ("END", dict(kind="commit", transaction="end")),
    ("ROLLBACK", dict(kind="rollback", target="both", transaction="end")),
    ("ABORT", dict(kind="rollback", transaction="end")),
    ("SAVEPOINT s1", dict(kind="savepoint", target="both", transaction=None)),
    ("RELEASE SAVEPOINT s1", dict(kind="release", target="both")),
    ("ROLLBACK TO SAVEPOINT s1", dict(kind="rollback_to", target="both", transaction=None)),
    ("PREPARE TRANSACTION 'gx'", dict(kind="prepare_transaction", target="primary")),
    ("COMMIT PREPARED 'gx'", dict(kind="commit_prepared", target="primary")),
    ("ROLLBACK PREPARED 'gx'", dict(kind="rollback_prepared", target="primary")),
    # SET -> both, except the three exceptions -> primary
    ("SET search_path TO public", dict(kind="set", target="both", set_name="search_path")),
    ("SET transaction_read_only = off", dict(target="primary")),
    ("SET LOCAL transaction_read_only TO 'false'", dict(target="primary")),
    ("SET transaction_read_only = on", dict(target="both", read_only=True)),
    ("SET TRANSACTION READ WRITE", dict(target="primary")),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", dict(target="primary")),
    ("SET TRANSACTION READ ONLY", dict(target="both", read_only=True)),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", dict(target="primary", serializable="transaction")),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
     dict(target="primary", serializable="session")),
    ("SET transaction_isolation TO 'serializable'", dict(target="primary", serializable="transaction")),
    ("SET default_transaction_isolation = 'serializable'", dict(target="primary", serializable="session")),
    ("SET default_transaction_isolation = 'read committed'", dict(target="both", isolation_reset=True)),
    ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", dict(target="both", serializable=None)),
    ("RESET ALL", dict(kind="reset", target="both", isolation_reset=True)),
    ("DISCARD ALL", dict(kind="discard", target="both", isolation_reset=True)),
    ("DISCARD TEMP", dict(kind="discard", target="both", isolation_reset=False)),
    # PREPARE / EXECUTE / DEALLOCATE
    ("PREPARE p (int) AS SELECT * FROM t WHERE a = $1",
     dict(kind="prepare", stmt_name="p", target="either", is_read_only=False, tables=("t",))),
    ("PREPARE q AS INSERT INTO t VALUES (1)", dict(kind="prepare", stmt_name="q", target="primary")),
    ("EXECUTE p(1)", dict(kind="execute", stmt_name="p", target="follow")),
    ('EXECUTE "Q1"', dict(kind="execute", stmt_name="Q1")),
    ("DEALLOCATE p", dict(kind="deallocate", stmt_name="p", target="follow")),
    ("DEALLOCATE PREPARE p", dict(kind="deallocate", stmt_name="p")),
    ("DEALLOCATE ALL", dict(kind="deallocate", stmt_name=None, target="follow")),
    # multi-statement
    ("SELECT 1; SELECT 2", dict(multi_statement=True, target="primary", is_read_only=True)),
    ("BEGIN; INSERT INTO t VALUES (1);", dict(multi_statement=True, is_read_only=False, transaction=None)),
    ("SELECT ';'", dict(multi_statement=False)),
    ("SELECT $$a;b$$, E'it\\'s;', 'x'';'", dict(multi_statement=False, is_read_only=True)),
    ("SELECT 1; -- trailing comment", dict(multi_statement=False)),
    # leading comments / whitespace (pgpool text test)
    ("/*NO LOAD BALANCE*/ SELECT 1", dict(kind="select", has_leading_comment=True, starts_like_select=False)),
    ("-- hi\nSELECT 1", dict(kind="select", has_leading_comment=True, starts_like_select=False)),
    ("  SELECT 1", dict(starts_like_select=True, starts_like_select_raw=False)),
    # functions, tables, system catalogs
    ("SELECT nextval('s'), now(), public.f(1), count(*), coalesce(a, b), x::int, cast(a AS int) FROM t",
     dict(functions=("nextval", "now", "count", "public.f"), tables=("t",))),
    ("SELECT lower(x), random(), string_agg(a, ',') FROM t", dict(functions=("lower", "random", "string_agg"))),
    ("SELECT f(1) FROM generate_series(1, 3) g", dict(functions=("f", "generate_series"), tables=())),
    ('SELECT "MyTable".a FROM "MyTable" JOIN s."T2" ON true', dict(tables=("MyTable", "s.T2"))),
    ("SELECT * FROM pg_class", dict(uses_system_catalog=True)),
    ("SELECT * FROM pg_catalog.pg_namespace", dict(uses_system_catalog=True)),
    ("SELECT * FROM information_schema.tables", dict(uses_system_catalog=False)),
    # EXPLAIN: as the manual says (a plan of a query may be balanced; ANALYZE runs it)
    ("EXPLAIN ANALYZE SELECT * FROM t", dict(target="either", is_read_only=True, tables=("t",))),
    ("EXPLAIN (ANALYZE, BUFFERS) SELECT 1", dict(target="either", is_read_only=True)),
    ("EXPLAIN ANALYZE VERBOSE UPDATE t SET a = 1", dict(target="primary", is_read_only=False)),
    ("EXPLAIN (ANALYZE 'off') UPDATE t SET a = 1", dict(target="either", is_read_only=True)),
    ("EXPLAIN (FORMAT JSON, ANALYZE on) DELETE FROM t", dict(target="primary", tables=("t",))),
    ("EXPLAIN (VERBOSE) INSERT INTO t VALUES (1)", dict(target="either", is_read_only=True)),
    ("EXPLAIN SELECT * FROM t FOR UPDATE", dict(target="either")),   # only planned: fine on a standby
    ("EXPLAIN ANALYZE EXECUTE p(1)", dict(target="follow", stmt_name="p", is_read_only=False)),
    ("EXPLAIN SELECT nextval('s')", dict(target="either", functions=("nextval",))),
    ("EXPLAIN (ANALYZE", dict(parsed=False, target="primary")),
    # relations touched by DDL, LOCK, COPY; temporary relations created or dropped
    ("CREATE TEMP TABLE tt (a int)", dict(kind="ddl", tables=("tt",), temp_ops=(("create", ("tt",)),))),
    ("CREATE GLOBAL TEMPORARY TABLE IF NOT EXISTS tt AS SELECT 1",
     dict(tables=("tt",), temp_ops=(("create", ("tt",)),))),
    ("CREATE TEMP TABLE tt (a int) ON COMMIT DROP", dict(temp_ops=(("create_drop", ("tt",)),))),
    ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", dict(temp_ops=(("create", ("v",)),))),
    ('CREATE TEMP SEQUENCE "Sq"', dict(temp_ops=(("create", ("Sq",)),))),
    ("CREATE UNLOGGED TABLE s.u (a int)", dict(tables=("s.u",), temp_ops=())),
    ("CREATE INDEX i ON t (a)", dict(kind="ddl", tables=(), temp_ops=())),
    ("DROP TABLE IF EXISTS a, s.b CASCADE", dict(tables=("a", "s.b"), temp_ops=(("drop", ("a", "b")),))),
    ("DROP FUNCTION f()", dict(kind="ddl", tables=(), temp_ops=())),
    ("TRUNCATE ONLY a, b *", dict(kind="ddl", tables=("a", "b"))),
    ("ALTER TABLE IF EXISTS ONLY s.x ADD COLUMN y int", dict(tables=("s.x",))),
    ("ALTER SEQUENCE s RESTART", dict(kind="ddl", tables=())),
    ("LOCK TABLE a, ONLY b IN ACCESS SHARE MODE", dict(tables=("a", "b"), target="both")),
    ("COPY s.t (a, b) FROM STDIN", dict(kind="copy_from", tables=("s.t",))),
    ("COPY pg_class TO STDOUT", dict(tables=("pg_class",), uses_system_catalog=True)),
    ("SELECT 1 AS a INTO TEMP TABLE tt", dict(select_into=True, temp_ops=(("create", ("tt",)),))),
    ("SELECT 1 AS a INTO tt", dict(select_into=True, temp_ops=())),
    ("DISCARD TEMP", dict(temp_ops=(("discard", ()),))),
    ("DISCARD SEQUENCES", dict(temp_ops=())),
    ("SELECT * FROM pg_temp.tt", dict(temp_schema=True, uses_system_catalog=False)),
    ("CREATE TEMP TABLE a (x int); DROP TABLE a",
     dict(multi_statement=True, temp_ops=(("create", ("a",)), ("drop", ("a",))))),
    # unparsable -> not a read, primary
    ("SELECT FROM WHERE", dict(parsed=False, target="primary", is_read_only=False)),
    ("frobnicate the database", dict(kind="other", target="primary", is_read_only=False)),
]


@pytest.mark.parametrize("sql,expected", CASES, ids=[c[0][:50] for c in CASES])
def test_facts(sql, expected):
    facts = classify(sql)
    got = {k: getattr(facts, k) for k in expected}
    assert got == expected


def test_prepare_keeps_inner_facts():
    facts = classify("PREPARE p AS SELECT * FROM t FOR UPDATE")
    assert facts.inner.kind == "select" and facts.inner.for_update_share
    assert facts.target == "primary"


def test_literals_do_not_defeat_the_cache():
    C.clear_cache()
    a = classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1;")
    b = classify("SELECT abalance FROM pgbench_accounts WHERE aid = 987654;")
    c = classify("SELECT abalance FROM pgbench_accounts WHERE aid = '5' AND x = E'\\'';")
    assert a is b
    assert C.cache_info()["misses"] == 2 and c.is_read_only


@pytest.mark.parametrize("first,second", [
    ("SELECT * FROM t1 WHERE a = 1", "SELECT * FROM t2 WHERE a = 1"),
    ('SELECT * FROM "t1" WHERE a = 1', 'SELECT * FROM "t2" WHERE a = 1'),
    ("SET transaction_read_only = 'on'", "SET transaction_read_only = 'off'"),
    ("SELECT 1 -- it's\n FROM t1", "SELECT 1 -- it's\n FROM t2"),
    ("SELECT $$x$$ FROM t1", "SELECT $$x$$ FROM t2"),
])
def test_cache_key_keeps_what_matters(first, second):
    assert classify(first) != classify(second)


def test_cache_is_bounded():
    C.clear_cache()
    for i in range(C.CACHE_SIZE + 50):
        classify(f"SELECT * FROM t{i}")
    info = C.cache_info()
    assert info["size"] == C.CACHE_SIZE


def test_facts_are_immutable():
    facts = classify("SELECT 1")
    with pytest.raises(AttributeError):
        facts.kind = "insert"


def test_sqlglot_is_imported_only_here():
    import pathlib
    import re
    imports = re.compile(r"^\s*(?:import|from)\s+sqlglot\b", re.M)
    root = pathlib.Path(C.__file__).resolve().parents[1]
    users = [p.relative_to(root).as_posix() for p in root.rglob("*.py") if imports.search(p.read_text())]
    assert users == ["sql/classify.py"]
