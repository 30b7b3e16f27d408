"""The query-path memo: an entry made from one text is reused for another only when the two
differ in numeric constants alone, and what it answers is what classification would."""
import pytest

from pgpool.proxy import memo
from pgpool.proxy.stats import stat_kind
from pgpool.sql.classify import classify


@pytest.fixture(autouse=True)
def fresh_memo():
    memo.clear()
    yield
    memo.clear()


# (first text, second text, does the second reuse the first's entry?)
PAIRS = [
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
     "SELECT abalance FROM pgbench_accounts WHERE aid = 987654;", True),
    ("UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 7;",
     "UPDATE pgbench_accounts SET abalance = abalance + 4711 WHERE aid = 3;", True),
    ("INSERT INTO h VALUES (1, 2, 3)", "INSERT INTO h VALUES (44, 55, 66)", True),
    ("DELETE FROM t WHERE id IN (1, 2)", "DELETE FROM t WHERE id IN (3, 4)", True),
    ("SELECT * FROM t WHERE a = 1 -- note 1", "SELECT * FROM t WHERE a = 2 -- note 2", True),
    # a digit inside a name: t1 and t2 are different tables
    ("SELECT * FROM t1", "SELECT * FROM t2", False),
    ("SELECT * FROM t", "SELECT * FROM t1", False),
    ("SELECT c1 FROM t", "SELECT c2 FROM t", False),
    # quoted identifiers may hold digits anywhere
    ('SELECT * FROM "my 1"', 'SELECT * FROM "my 2"', False),
    # fractions, exponents, type names
    ("SELECT 1.5 FROM t", "SELECT 2.5 FROM t", False),
    ("SELECT 1e5 FROM t", "SELECT 2e5 FROM t", False),
    ("SELECT x::int4 FROM t", "SELECT x::int8 FROM t", False),
    # kinds whose facts may depend on a value: exact text only
    ("SET transaction_read_only = 0", "SET transaction_read_only = 1", False),
    ("SET statement_timeout = 10", "SET statement_timeout = 20", False),
    ("LOCK TABLE t1", "LOCK TABLE t2", False),
]


@pytest.mark.parametrize("first,second,shared", PAIRS)
def test_reuse_only_across_numeric_constants(first, second, shared):
    a = memo.lookup(first.encode())
    b = memo.lookup(second.encode())
    assert a[0] == classify(first)
    assert b[0] == classify(second)             # whatever the memo did, the facts are right
    assert (b[0] is a[0] and b[3] is None) == shared
    if not shared:
        assert b[3] == second                   # looked up (or classified) by its own text


@pytest.mark.parametrize("text", [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
    "select * from pg_class",
    "BEGIN", "COMMIT", "SET search_path = x", "COPY t FROM STDIN", "LISTEN ch",
    "SHOW pool_nodes", "PGPOOL SHOW ALL", "  SELECT 1", "WITH x AS (SELECT 1) SELECT * FROM x",
])
def test_entry_matches_classification_stat_kind_and_fast_path_fit(text):
    facts, kind, general, sql, _ = memo.lookup(text.encode())
    assert facts == classify(text)
    assert kind == stat_kind(text.encode())
    assert general == memo.needs_general_path(text.encode())
    assert sql == text
    again = memo.lookup(text.encode())          # a hit says the same (without the text when
    assert again[:3] == (facts, kind, general)  # the entry stands for texts with other digits)
    assert again[3] in (text, None)


@pytest.mark.parametrize("text,general", [
    ("SELECT 1", False),
    ("COPY t TO STDOUT", True),
    ("copy t from stdin", True),
    ("LISTEN ch", True),
    ("SELECT * FROM listeners", True),          # conservative: any "listen" takes the slow path
    ("SHOW pool_nodes", True),
    ("  show POOL_processes", True),
    ("PGPOOL SHOW ALL", True),
    ("SHOW search_path", False),
])
def test_needs_general_path(text, general):
    assert memo.needs_general_path(text.encode()) == general


def test_verbatim_parse_text_with_parameters_keeps_its_text():
    q = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
    first = memo.lookup(q, True)
    again = memo.lookup(q, True)
    assert again[:4] == first[:4] and again[3] == q.decode()
    other = memo.lookup(b"SELECT abalance FROM pgbench_accounts WHERE aid = $2;", True)
    assert other[0] is first[0] and other[3].endswith("$2;")


def test_memo_starts_afresh_when_full(monkeypatch):
    monkeypatch.setattr(memo, "MEMO_SIZE", 3)
    for name in ("a", "b", "c", "d"):
        memo.lookup(f"SELECT * FROM {name}".encode())
    assert len(memo._memo) == 1                 # cleared at the 4th, which is kept
    assert memo.lookup(b"SELECT * FROM d")[3] == "SELECT * FROM d"


def test_long_texts_are_not_kept():
    text = ("SELECT " + ", ".join(["x"] * 9000) + " FROM t").encode()
    assert memo.lookup(text)[0] == classify(text.decode())
    assert not memo._memo
