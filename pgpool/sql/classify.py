"""SQL text -> StatementFacts: what routing needs to know about a statement, cached.

Cheap path first: the first keyword (after whitespace and comments) picks a handler. Statements
whose facts can depend on literal values (SET, ...) are cached by their exact text; the others
(SELECT, DML, EXECUTE, ...) by a key with numeric and string literals removed, so that
`... WHERE aid = 12345` and `... WHERE aid = 678` share one entry. sqlglot (postgres dialect) is
used only on a cache miss, and only for SELECT-like statements and DML; it is imported here and
nowhere else. A statement sqlglot cannot parse is "unparsable": not a read, sent to the primary.

The `target` fact follows pgpool-II's send_to_where(): "either" (a read that may be load
balanced), "primary", "both" (primary and load-balance node: transaction control, most SET,
DISCARD, weak LOCK), or "follow" (EXECUTE / DEALLOCATE go where their PREPARE went).
EXPLAIN follows the manual (4.3.5's code sends every EXPLAIN to the primary): a plain EXPLAIN of
a query, and EXPLAIN ANALYZE of a read, may be load balanced. DDL and LOCK / TRUNCATE / COPY
report the relations they touch, and `temp_ops` says which temporary relations a statement
creates or drops (check_temp_table = trace, dml_adaptive).
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import sqlglot
from sqlglot import exp

__all__ = ["StatementFacts", "classify", "cache_info", "clear_cache", "LOCK_MODES"]

# sqlglot logs a warning whenever it falls back to an opaque Command; we treat that as
# "unparsable" ourselves, so the log line is noise on the data path.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

CACHE_SIZE = 4096        # entries in each of the two caches
MAX_CACHED_TEXT = 16384  # longer texts (bulk INSERTs...) are analysed every time, never kept
MAX_PARSED_TEXT = 65536  # longer statements are not given to sqlglot (time): not a known read

# PostgreSQL lock strengths (storage/lockdefs.h).
LOCK_MODES = {
    "ACCESS SHARE": 1, "ROW SHARE": 2, "ROW EXCLUSIVE": 3, "SHARE UPDATE EXCLUSIVE": 4,
    "SHARE": 5, "SHARE ROW EXCLUSIVE": 6, "EXCLUSIVE": 7, "ACCESS EXCLUSIVE": 8,
}
ROW_EXCLUSIVE = LOCK_MODES["ROW EXCLUSIVE"]


@dataclass(frozen=True, slots=True)
class StatementFacts:
    """Routing-relevant facts about one query string (shared by every text with the same key)."""
    kind: str                       # select insert update delete merge ddl begin commit rollback
    #                                 savepoint release rollback_to prepare_transaction
    #                                 commit_prepared rollback_prepared set reset show discard
    #                                 deallocate prepare execute copy_from copy_to lock listen
    #                                 unlisten notify explain vacuum call do cursor empty other
    target: str = "primary"         # either | primary | both | follow
    is_read_only: bool = False      # positively a read (pgpool is_select_query minus text test)
    parsed: bool = True             # False: the parser could not make sense of it
    multi_statement: bool = False
    has_leading_comment: bool = False
    starts_like_select: bool = False      # pgpool text test after leading whitespace
    starts_like_select_raw: bool = False  # same test without skipping whitespace
    select_into: bool = False
    for_update_share: bool = False
    writing_cte: bool = False
    lock_mode: int = 0              # LOCK: 1 (ACCESS SHARE) .. 8 (ACCESS EXCLUSIVE)
    transaction: str | None = None  # "begin" | "end" (COMMIT/ROLLBACK/END/ABORT)
    read_write: bool = False        # BEGIN/START ... READ WRITE (standbys get plain BEGIN)
    read_only: bool = False         # SET TRANSACTION READ ONLY & co: not a write for tracking
    serializable: str | None = None  # "transaction" | "session": sets SERIALIZABLE isolation
    isolation_reset: bool = False   # sets the session default isolation to something else
    set_name: str | None = None     # SET/RESET variable name, lower case
    stmt_name: str | None = None    # PREPARE/EXECUTE/DEALLOCATE name (None: DEALLOCATE ALL)
    inner: StatementFacts | None = None  # PREPARE: facts of the prepared statement
    copy_stdio: bool = False        # COPY ... TO STDOUT / FROM STDIN
    functions: tuple[str, ...] = ()  # called functions, "schema.name" when qualified
    tables: tuple[str, ...] = ()     # referenced tables, "schema.name" when qualified
    uses_system_catalog: bool = False
    # temporary relations created / dropped, in order: ("create" | "create_drop" (ON COMMIT
    # DROP) | "drop" | "discard", names)
    temp_ops: tuple[tuple[str, tuple[str, ...]], ...] = ()
    temp_schema: bool = False       # names a relation in pg_temp (a temporary one, certainly)
    # derived: a single parsed read-only SELECT that calls no function and touches no session
    # state (transaction, isolation, temporary relations): routing it changes nothing to track
    plain_read: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plain_read", (
            self.kind == "select" and self.is_read_only and self.parsed
            and not self.multi_statement and not self.functions and not self.temp_ops
            and self.transaction is None and self.serializable is None
            and not self.isolation_reset))

    @property
    def standby_begin(self) -> bool:
        """BEGIN that standbys must receive as a plain BEGIN (READ WRITE / SERIALIZABLE)."""
        return self.transaction == "begin" and (self.read_write or self.serializable is not None)


# ---------------------------------------------------------------------------------------------
# Lexical helpers (regular expressions shared by the cache key, splitting and keyword parsing)

_BLOCK_COMMENT = r"/\*[^*]*\*+(?:[^/*][^*]*\*+)*/"
_LINE_COMMENT = r"--[^\n]*"
_ESTRING = r"(?<![\w$])[Ee]'(?:[^'\\]|\\.|'')*'"
_STRING = r"(?<![\w$])(?:[BbXxNn]|[Uu]&)?'(?:[^']|'')*'"
_DOLLAR = r"\$(?P<tag>(?:[A-Za-z_][A-Za-z_0-9]*)?)\$.*?\$(?P=tag)\$"
_QIDENT = r'"(?:[^"]|"")*"'
_NUMBER = r"(?<![\w$])(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"

# Leading whitespace/comments, then the first keyword (or "(" / nothing).
_FIRST = re.compile(
    rf"(\s*)((?:(?:{_LINE_COMMENT}|{_BLOCK_COMMENT})\s*)*)([A-Za-z]+|\(|)", re.S)

# Cache key: literals vanish. Texts without comments, quoted identifiers or dollar quotes (the
# common case) take one substitution whose every branch starts with a fixed character (so the
# regex engine can skip ahead) and checks the preceding character only after that; the others
# are tokenized so that a quote inside a comment or a digit inside a quoted identifier is never
# mistaken for a literal.
_SIMPLE_LITERAL = re.compile(
    r"\d(?<![\w$.]\d)\d*(?:\.\d*)?(?:[eE][+-]?\d+)?"
    r"|\.(?<![\w$.]\.)\d+(?:[eE][+-]?\d+)?"
    r"|'(?:[^']|'')*'"
    r"|[EeBbXxNnUu](?<![\w$][EeBbXxNnUu])&?'(?:[^'\\]|\\.|'')*'")
_DOLLAR_QUOTE = re.compile(r"\$(?!\d)")
_KEY_TOKEN = re.compile(
    rf"{_ESTRING}|{_STRING}|{_DOLLAR}|{_NUMBER}"
    rf"|(?P<keep>{_LINE_COMMENT}|{_BLOCK_COMMENT}|{_QIDENT}|[A-Za-z_\x80-\uffff][\w$]*|\$\d+"
    r"""|[^'"$\w\x80-\uffff./-]+|.)""", re.S)

# Statement splitter: skip everything that may contain ';', capture the top-level ';'.
_SPLIT = re.compile(
    rf"{_ESTRING}|{_STRING}|{_DOLLAR}|{_QIDENT}|{_LINE_COMMENT}|{_BLOCK_COMMENT}|(?P<semi>;)", re.S)

# Word tokens for the keyword parsers.
_WORD = re.compile(
    rf"\s+|{_LINE_COMMENT}|{_BLOCK_COMMENT}"
    rf"|(?P<str>{_ESTRING}|{_STRING}|{_DOLLAR})"
    rf"|(?P<qid>{_QIDENT})"
    rf"|(?P<id>[A-Za-z_\x80-\uffff][\w$]*)"
    rf"|(?P<num>[+-]?{_NUMBER})"
    rf"|(?P<punct>.)", re.S)

# pgpool is_select_query(): the text must start with one of these (or be empty).
_SELECT_START = frozenset("sS(wWtT;")

# First keywords whose facts never depend on literal values: keyed without literals.
_NORMALIZED = frozenset((
    "SELECT", "WITH", "VALUES", "TABLE", "(", "INSERT", "UPDATE", "DELETE", "MERGE",
    "EXECUTE", "PREPARE", "CALL", "COPY",
))


def _first(sql: str) -> tuple[str, bool, str]:
    """(first keyword upper-cased or "(", has a leading comment, text after leading whitespace)."""
    m = _FIRST.match(sql)
    return m.group(3).upper(), bool(m.group(2)), sql[m.end(1):]


def _split(sql: str) -> list[str]:
    """Top-level statements of a query string; empty ones (only ws/comments) dropped."""
    parts, start = [], 0
    for m in _SPLIT.finditer(sql):
        if m.group("semi"):
            parts.append(sql[start:m.start()])
            start = m.end()
    parts.append(sql[start:])
    return [p for p in parts if _FIRST.match(p).end(2) < len(p.rstrip())]


def _tokens(sql: str) -> list[tuple[str, str, int, int]]:
    """Word tokens (kind, text, start, end); kinds: id (UPPER), qid, str (body), num, punct."""
    out = []
    for m in _WORD.finditer(sql):
        kind = m.lastgroup  # the outer group ("str", not the dollar "tag" inside it)
        if kind is None:  # whitespace or comment
            continue
        text = m.group(kind)
        if kind == "id":
            text = text.upper()
        elif kind == "qid":
            text = text[1:-1].replace('""', '"')
        elif kind == "str":
            text = _string_body(text)
        out.append((kind, text, m.start(), m.end()))
    return out


def _string_body(lit: str) -> str:
    if lit.startswith("$"):
        return lit[lit.index("$", 1) + 1:lit.rindex("$", 0, len(lit) - 1)]
    return lit[lit.index("'") + 1:-1].replace("''", "'")


def _words(tokens) -> list[str]:
    """Token texts upper-cased (bare words already are), for keyword matching."""
    return [t[1] if t[0] == "id" else t[1].upper() for t in tokens]


def _close_paren(tokens, open_index: int) -> int | None:
    """Index of the token closing the parenthesis at open_index."""
    depth = 0
    for i in range(open_index, len(tokens)):
        if tokens[i][0] == "punct":
            depth += (tokens[i][1] == "(") - (tokens[i][1] == ")")
            if depth == 0:
                return i
    return None


def _name_part(tok, stmt: str) -> str:
    """One identifier as PostgreSQL folds it: bare words lower case, quoted ones as written."""
    return tok[1] if tok[0] == "qid" else stmt[tok[2]:tok[3]].lower()


def _name_at(toks, i: int, stmt: str) -> tuple[str | None, int]:
    """The relation name starting at toks[i] ("schema.name" when qualified; a database part is
    dropped) and the index after it; None if there is no name there."""
    if i >= len(toks) or toks[i][0] not in ("id", "qid"):
        return None, i
    parts = [_name_part(toks[i], stmt)]
    i += 1
    while (i + 1 < len(toks) and toks[i][:2] == ("punct", ".")
           and toks[i + 1][0] in ("id", "qid")):
        parts.append(_name_part(toks[i + 1], stmt))
        i += 2
    return ".".join(parts[-2:]), i


def _name_list(toks, i: int, stmt: str) -> tuple[str, ...]:
    """`[ONLY] name [*] [, ...]` as in DROP / TRUNCATE / LOCK."""
    names = []
    while i < len(toks):
        if toks[i][:2] == ("id", "ONLY"):
            i += 1
        name, i = _name_at(toks, i, stmt)
        if name is None:
            break
        names.append(name)
        if i < len(toks) and toks[i][:2] == ("punct", "*"):
            i += 1
        if i >= len(toks) or toks[i][:2] != ("punct", ","):
            break
        i += 1
    return tuple(names)


def _relname(name: str) -> str:
    """The relation part of a possibly schema-qualified name."""
    return name.rpartition(".")[2]


# ---------------------------------------------------------------------------------------------
# sqlglot-based analysis of SELECT-like statements and DML

_NOT_FUNCCALL = frozenset((
    "cast", "coalesce", "greatest", "least", "nullif", "array", "row", "current_date",
    "current_time", "current_timestamp", "localtime", "localtimestamp", "current_user",
    "session_user", "user", "current_role", "current_catalog", "exists", "any", "all", "some",
    "in", "case", "interval",
))
_FUNC_ALIASES = {exp.GroupConcat: "string_agg"}  # sqlglot nodes without a source position
_IDENT_RE = re.compile(r'(?:"(?:[^"]|"")*"|[A-Za-z_\x80-\uffff][\w$]*)\Z')
_READ_QUERY = (exp.Select, exp.SetOperation, exp.Values)
_DML_KIND = {exp.Insert: "insert", exp.Update: "update", exp.Delete: "delete", exp.Merge: "merge"}


def _ident(text: str) -> str:
    return text[1:-1].replace('""', '"') if text.startswith('"') else text.lower()


def _func_name(node: exp.Func, sql: str) -> str | None:
    """The function name as written (pgpool FuncCall), or None for non-call syntax."""
    meta = node.meta
    if "start" in meta:
        text = sql[meta["start"]:meta["end"] + 1]
        if not _IDENT_RE.match(text) or text.lower() in _NOT_FUNCCALL:
            return None
        name = _ident(text)
    elif isinstance(node, exp.Anonymous):
        name = node.name
    elif type(node) in _FUNC_ALIASES:
        name = _FUNC_ALIASES[type(node)]
    else:
        return None
    parent = node.parent
    if isinstance(parent, exp.Dot) and parent.expression is node:
        name = f"{parent.this.name}.{name}"
    return name


def _table_name(t: exp.Table) -> str | None:
    if not isinstance(t.this, exp.Identifier):
        return None  # a table function such as generate_series()
    name = t.this.this if t.this.quoted else t.this.this.lower()
    db = t.args.get("db")
    if isinstance(db, exp.Identifier):
        name = f"{db.this if db.quoted else db.this.lower()}.{name}"
    return name


def _is_catalog(name: str) -> bool:
    schema, _, rel = name.rpartition(".")
    return schema == "pg_catalog" or (not schema and rel.startswith("pg_"))


def _parse(sql: str) -> exp.Expression | None:
    if len(sql) > MAX_PARSED_TEXT:
        return None
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except Exception:  # any parser failure (ParseError, TokenError, recursion) = unparsable
        return None
    return None if isinstance(tree, exp.Command) else tree


def _objects(tree: exp.Expression, sql: str) -> dict:
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    tables = []
    for t in tree.find_all(exp.Table):
        name = _table_name(t)
        if name and name not in ctes and name not in tables:
            tables.append(name)
    funcs = []
    for f in tree.find_all(exp.Func):
        name = _func_name(f, sql)
        if name and name not in funcs:
            funcs.append(name)
    return {"tables": tuple(tables), "functions": tuple(funcs),
            "uses_system_catalog": any(_is_catalog(t) for t in tables)}


def _select_like(kind: str, stmt: str, toks, words) -> dict:
    tree = _parse(stmt)
    if tree is None:
        return {"kind": "select", "parsed": False}
    if not isinstance(tree, _READ_QUERY):
        dml = _DML_KIND.get(type(tree))
        if dml is None:  # sqlglot accepted something that is not a query we model
            return {"kind": "select", "parsed": False}
        return {"kind": dml, **_objects(tree, stmt)}
    into = tree.find(exp.Into)
    locks = tree.find(exp.Lock) is not None
    writing_cte = any(not isinstance(c.this, _READ_QUERY) for c in tree.find_all(exp.CTE))
    read = not (into is not None or locks or writing_cte)
    out = {"kind": "select", "select_into": into is not None, "for_update_share": locks,
           "writing_cte": writing_cte, "is_read_only": read,
           "target": "either" if read else "primary", **_objects(tree, stmt)}
    if into is not None and into.args.get("temporary") and isinstance(into.this, exp.Table):
        name = _table_name(into.this)
        if name:
            out["temp_ops"] = (("create", (_relname(name),)),)
    return out


def _dml(kind: str, stmt: str, toks, words) -> dict:
    tree = _parse(stmt)
    return {} if tree is None else _objects(tree, stmt)


# ---------------------------------------------------------------------------------------------
# Keyword-level handlers: (kind, stmt, tokens, WORDS) -> dict of StatementFacts fields

_FALSE_WORDS = frozenset(("OFF", "F", "FALSE", "0", "NO", "N"))
_TRUE_WORDS = frozenset(("ON", "T", "TRUE", "1", "YES", "Y"))


def _txn_modes(words: list[str]) -> dict:
    """ISOLATION LEVEL / READ WRITE / READ ONLY options of BEGIN, START, SET TRANSACTION."""
    out = {}
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w == "LEVEL" and nxt == "SERIALIZABLE":
            out["serializable"] = "transaction"
        elif w == "READ" and nxt == "WRITE":
            out["read_write"] = True
        elif w == "READ" and nxt == "ONLY":
            out["read_only"] = True
    return out


def _begin(kind, stmt, toks, words) -> dict:
    return {"kind": "begin", "target": "both", "transaction": "begin", **_txn_modes(words[1:])}


def _commit(kind, stmt, toks, words) -> dict:
    if len(words) > 1 and words[1] == "PREPARED":
        return {"kind": "commit_prepared"}
    return {"kind": "commit", "target": "both", "transaction": "end"}


def _rollback(kind, stmt, toks, words) -> dict:
    if len(words) > 1 and words[1] == "PREPARED":
        return {"kind": "rollback_prepared"}
    if "TO" in words[1:4]:
        return {"kind": "rollback_to", "target": "both"}
    return {"kind": "rollback", "target": "both", "transaction": "end"}


def _set(kind, stmt, toks, words) -> dict:
    rest = words[1:]
    if rest and rest[0] in ("SESSION", "LOCAL") and rest[1:2] != ["CHARACTERISTICS"]:
        rest = rest[1:]
    if rest[:1] == ["TRANSACTION"] or rest[:2] == ["SESSION", "CHARACTERISTICS"]:
        modes = _txn_modes(rest)
        scope = "transaction" if rest[0] == "TRANSACTION" else "session"
        out = {"kind": "set", "set_name": "transaction", "target": "both"}
        if "serializable" in modes:
            out.update(serializable=scope, target="primary")
        elif scope == "session" and "LEVEL" in rest:
            out["isolation_reset"] = True
        if modes.get("read_write"):
            out["target"] = "primary"
        out["read_only"] = modes.get("read_only", False)
        return out
    name = rest[0].lower() if rest else None
    out = {"kind": "set", "set_name": name, "target": "both"}
    values = rest[2:] if len(rest) > 2 and rest[1] in ("TO", "=") else []
    if name == "transaction_read_only":
        if values and values[0] in _FALSE_WORDS:
            out["target"] = "primary"
        elif values and values[0] in _TRUE_WORDS:
            out["read_only"] = True
    elif name in ("transaction_isolation", "default_transaction_isolation") and values:
        scope = "transaction" if name == "transaction_isolation" else "session"
        if values[0] == "SERIALIZABLE":
            out.update(serializable=scope, target="primary")
        elif scope == "session":
            out["isolation_reset"] = True
    return out


def _reset(kind, stmt, toks, words) -> dict:
    name = words[1].lower() if len(words) > 1 else None
    return {"kind": "reset", "set_name": name, "target": "both",
            "isolation_reset": name in ("all", "default_transaction_isolation")}


def _discard(kind, stmt, toks, words) -> dict:
    out = {"kind": "discard", "target": "both", "isolation_reset": words[1:2] == ["ALL"]}
    if words[1:2] in (["ALL"], ["TEMP"], ["TEMPORARY"]):
        out["temp_ops"] = (("discard", ()),)
    return out


def _lock(kind, stmt, toks, words) -> dict:
    mode = LOCK_MODES["ACCESS EXCLUSIVE"]
    if "IN" in words:
        tail = words[len(words) - words[::-1].index("IN"):]
        if "MODE" in tail:
            mode = LOCK_MODES.get(" ".join(tail[:tail.index("MODE")]), mode)
    first = 2 if words[1:2] == ["TABLE"] else 1
    return {"kind": "lock", "lock_mode": mode, "tables": _name_list(toks, first, stmt),
            "target": "primary" if mode >= ROW_EXCLUSIVE else "both"}


_CREATE_MODIFIERS = frozenset(("OR", "REPLACE", "GLOBAL", "LOCAL", "TEMP", "TEMPORARY",
                               "UNLOGGED"))
_TEMP_WORDS = frozenset(("TEMP", "TEMPORARY"))
_RELATION_WORDS = frozenset(("TABLE", "VIEW", "SEQUENCE"))


def _create(kind, stmt, toks, words) -> dict:
    """CREATE [OR REPLACE] [TEMP | UNLOGGED ...] TABLE | VIEW | SEQUENCE [IF NOT EXISTS] name."""
    i = 1
    while i < len(words) and words[i] in _CREATE_MODIFIERS:
        i += 1
    if i >= len(words) or words[i] not in _RELATION_WORDS:
        return {"kind": "ddl"}
    modifiers = set(words[1:i])
    i += 1
    if words[i:i + 3] == ["IF", "NOT", "EXISTS"]:
        i += 3
    name, _ = _name_at(toks, i, stmt)
    if name is None:
        return {"kind": "ddl"}
    out = {"kind": "ddl", "tables": (name,)}
    if modifiers & _TEMP_WORDS:
        drop = any(words[j:j + 3] == ["ON", "COMMIT", "DROP"] for j in range(i, len(words)))
        out["temp_ops"] = (("create_drop" if drop else "create", (_relname(name),)),)
    return out


def _drop(kind, stmt, toks, words) -> dict:
    """DROP TABLE | VIEW | SEQUENCE [IF EXISTS] name [, ...]."""
    if words[1:2] and words[1] in _RELATION_WORDS:
        names = _name_list(toks, 4 if words[2:4] == ["IF", "EXISTS"] else 2, stmt)
        return {"kind": "ddl", "tables": names,
                "temp_ops": (("drop", tuple(_relname(n) for n in names)),)}
    return {"kind": "ddl"}


def _truncate(kind, stmt, toks, words) -> dict:
    return {"kind": "ddl", "tables": _name_list(toks, 2 if words[1:2] == ["TABLE"] else 1, stmt)}


def _alter(kind, stmt, toks, words) -> dict:
    """ALTER TABLE [IF EXISTS] [ONLY] name ... (other ALTERs name no table)."""
    if words[1:2] != ["TABLE"]:
        return {"kind": "ddl"}
    i = 4 if words[2:4] == ["IF", "EXISTS"] else 2
    return {"kind": "ddl", "tables": _name_list(toks, i, stmt)[:1]}


_EXPLAIN_WORDS = frozenset(("ANALYZE", "ANALYSE", "VERBOSE"))
_EXPLAIN_BALANCED = frozenset(("select", "insert", "update", "delete", "merge"))


def _explain_analyze(toks, words, i: int) -> tuple[bool, int] | None:
    """(ANALYZE given and true, index of the explained statement); None if malformed."""
    if toks[i][:2] == ("punct", "("):
        close = _close_paren(toks, i)
        if close is None:
            return None
        analyze = False
        for j in range(i + 1, close):
            if words[j] in ("ANALYZE", "ANALYSE") and words[j - 1] in ("(", ","):
                value = words[j + 1] if j + 1 < close else ","
                analyze = value in (",", ")") or value not in _FALSE_WORDS
        return analyze, close + 1
    analyze = False
    while i < len(words) and words[i] in _EXPLAIN_WORDS:
        analyze = analyze or words[i] != "VERBOSE"
        i += 1
    return analyze, i


def _explain(kind, stmt, toks, words) -> dict:
    """EXPLAIN [ANALYZE] [VERBOSE] statement / EXPLAIN (options) statement.

    Without ANALYZE nothing runs: an EXPLAIN of a query may be load balanced (its functions and
    relations still count). EXPLAIN ANALYZE runs the statement: balanced only for a read."""
    found = _explain_analyze(toks, words, 1) if len(toks) > 1 else None
    if found is None or found[1] >= len(toks):
        return {"kind": "explain", "parsed": False}
    analyze, i = found
    inner = _analyse(stmt[toks[i][2]:])
    out = {"kind": "explain", "inner": inner, "parsed": inner.parsed,
           "functions": inner.functions, "tables": inner.tables,
           "uses_system_catalog": inner.uses_system_catalog}
    if inner.target == "follow":                      # EXPLAIN [ANALYZE] EXECUTE name
        out.update(target="follow", stmt_name=inner.stmt_name, is_read_only=not analyze)
    elif (inner.is_read_only if analyze else inner.kind in _EXPLAIN_BALANCED):
        out.update(target="either", is_read_only=True)
    return out


def _prepare(kind, stmt, toks, words) -> dict:
    if words[1:2] == ["TRANSACTION"]:
        return {"kind": "prepare_transaction"}
    if len(toks) < 2:
        return {"kind": "prepare", "parsed": False}
    name = toks[1][1] if toks[1][0] == "qid" else toks[1][1].lower()
    i = 2
    if i < len(toks) and toks[i][:2] == ("punct", "("):
        i = (_close_paren(toks, i) or len(toks)) + 1
    if i >= len(toks) or toks[i][:2] != ("id", "AS"):
        return {"kind": "prepare", "stmt_name": name, "parsed": False}
    inner = _analyse(stmt[toks[i][3]:])
    return {"kind": "prepare", "stmt_name": name, "inner": inner, "target": inner.target,
            "parsed": inner.parsed, "functions": inner.functions, "tables": inner.tables,
            "uses_system_catalog": inner.uses_system_catalog}


def _named(kind, stmt, toks, words) -> dict:
    """EXECUTE name / DEALLOCATE [PREPARE] name|ALL."""
    rest = toks[1:]
    if kind == "deallocate" and rest[:1] and rest[0][:2] == ("id", "PREPARE"):
        rest = rest[1:]
    if not rest:
        return {"kind": kind, "parsed": False}
    k, t = rest[0][:2]
    if kind == "deallocate" and (k, t) == ("id", "ALL"):
        return {"kind": kind, "target": "follow"}
    return {"kind": kind, "stmt_name": t if k == "qid" else t.lower(), "target": "follow"}


def _copy(kind, stmt, toks, words) -> dict:
    """COPY table [(cols)] FROM|TO ... / COPY (query) TO ..."""
    i, inner = 1, None
    if i < len(toks) and toks[i][:2] == ("punct", "("):
        close = _close_paren(toks, i)
        if close is None:
            return {"kind": "copy_to", "parsed": False}
        inner = _analyse(stmt[toks[i][3]:toks[close][2]])
        i = close + 1
    else:
        while i < len(toks) and words[i] not in ("FROM", "TO"):
            i += 1
    if i >= len(toks) or words[i] not in ("FROM", "TO"):
        return {"kind": "copy_to", "parsed": False}
    stdio = i + 1 < len(toks) and words[i + 1] in ("STDOUT", "STDIN")
    name = None if inner is not None else _name_at(toks, 1, stmt)[0]
    tables = (name,) if name else ()
    if words[i] == "FROM":
        return {"kind": "copy_from", "copy_stdio": stdio, "tables": tables}
    out = {"kind": "copy_to", "copy_stdio": stdio, "target": "either", "tables": tables,
           "uses_system_catalog": bool(name) and _is_catalog(name)}
    if inner is not None:
        out.update(functions=inner.functions, tables=inner.tables,
                   uses_system_catalog=inner.uses_system_catalog)
        if not inner.is_read_only:
            out["target"] = "primary"
    out["is_read_only"] = out["target"] == "either" and stdio
    return out


def _show(kind, stmt, toks, words) -> dict:
    return {"kind": "show", "target": "either", "is_read_only": True}


def _plain(kind: str, target: str = "primary"):
    def handler(k, stmt, toks, words) -> dict:
        return {"kind": kind, "target": target}
    return handler


def _savepoint(kind, stmt, toks, words) -> dict:
    return {"kind": kind, "target": "both"}


_HANDLERS = {
    "SELECT": _select_like, "WITH": _select_like, "VALUES": _select_like,
    "TABLE": _select_like, "(": _select_like,
    "INSERT": _dml, "UPDATE": _dml, "DELETE": _dml, "MERGE": _dml,
    "BEGIN": _begin, "START": _begin,
    "COMMIT": _commit, "END": _commit,
    "ROLLBACK": _rollback, "ABORT": _rollback,
    "SAVEPOINT": _savepoint, "RELEASE": _savepoint,
    "SET": _set, "RESET": _reset, "SHOW": _show, "DISCARD": _discard,
    "PREPARE": _prepare, "EXECUTE": _named, "DEALLOCATE": _named,
    "LOCK": _lock, "COPY": _copy,
    "LISTEN": _plain("listen"), "UNLISTEN": _plain("unlisten"), "NOTIFY": _plain("notify"),
    "EXPLAIN": _explain, "VACUUM": _plain("vacuum"), "ANALYZE": _plain("vacuum"),
    "ANALYSE": _plain("vacuum"), "CALL": _plain("call"), "DO": _plain("do"),
    "DECLARE": _plain("cursor"), "FETCH": _plain("cursor"), "MOVE": _plain("cursor"),
    "CLOSE": _plain("cursor"),
}
_HANDLERS.update({w: _plain("ddl") for w in (
    "GRANT", "REVOKE", "COMMENT", "REINDEX", "CLUSTER", "REFRESH", "SECURITY", "IMPORT",
    "REASSIGN")})
_HANDLERS.update(CREATE=_create, DROP=_drop, TRUNCATE=_truncate, ALTER=_alter)
_KIND_OF_WORD = {"INSERT": "insert", "UPDATE": "update", "DELETE": "delete", "MERGE": "merge",
                 "EXECUTE": "execute", "DEALLOCATE": "deallocate", "SAVEPOINT": "savepoint",
                 "RELEASE": "release"}


# ---------------------------------------------------------------------------------------------
# Analysis and cache

def _analyse_one(stmt: str) -> StatementFacts:
    word = _first(stmt)[0]
    if not word:
        if not stmt.strip() or _FIRST.match(stmt).end(2) >= len(stmt.rstrip()):
            return StatementFacts(kind="empty", target="either", is_read_only=True)
        return StatementFacts(kind="other", parsed=False)
    handler = _HANDLERS.get(word)
    if handler is None:
        return StatementFacts(kind="other")
    kind = _KIND_OF_WORD.get(word, word.lower())
    toks = _tokens(stmt)
    try:
        fields = handler(kind, stmt, toks, _words(toks))
    except (IndexError, ValueError):  # malformed statement the keyword parser cannot follow
        fields = {"parsed": False}
    if any(t.startswith("pg_temp") and "." in t for t in fields.get("tables", ())):
        fields["temp_schema"] = True
    return StatementFacts(**{"kind": kind, **fields})


def _analyse(sql: str) -> StatementFacts:
    """Facts for a whole query string: its statements plus pgpool's text tests."""
    _, comment, after_ws = _first(sql)
    text = {"has_leading_comment": comment,
            "starts_like_select": not after_ws or after_ws[0] in _SELECT_START,
            "starts_like_select_raw": not sql or sql[0] in _SELECT_START}
    parts = _split(sql)
    if len(parts) <= 1:
        return replace(_analyse_one(parts[0] if parts else ""), **text)
    every = [_analyse_one(p) for p in parts]
    return replace(
        every[0], multi_statement=True, target="primary", transaction=None, serializable=None,
        read_only=False, read_write=False, isolation_reset=False,
        is_read_only=all(f.is_read_only for f in every),
        parsed=all(f.parsed for f in every),
        functions=tuple(dict.fromkeys(n for f in every for n in f.functions)),
        tables=tuple(dict.fromkeys(n for f in every for n in f.tables)),
        uses_system_catalog=any(f.uses_system_catalog for f in every),
        temp_ops=tuple(op for f in every for op in f.temp_ops),
        temp_schema=any(f.temp_schema for f in every), **text)


_cache: OrderedDict[str, StatementFacts] = OrderedDict()   # normalized key -> facts
_exact: OrderedDict[str, StatementFacts] = OrderedDict()   # exact text -> facts (front)
_stats = {"hits": 0, "misses": 0}


_FAST_HEADS = frozenset(("SELECT", "INSERT", "UPDATE", "DELETE"))


def _cache_key(sql: str) -> str:
    if sql[:6].upper() not in _FAST_HEADS and _FIRST.match(sql).group(3).upper() not in _NORMALIZED:
        return sql
    if '"' in sql or "--" in sql or "/*" in sql or ("$" in sql and _DOLLAR_QUOTE.search(sql)):
        if sql.count("/*") > 1:  # possibly nested comments: not worth the risk, key on the text
            return sql
        return "".join(m.group("keep") or "" for m in _KEY_TOKEN.finditer(sql))
    return _SIMPLE_LITERAL.sub("", sql)


def _remember(cache: OrderedDict, key: str, facts: StatementFacts) -> None:
    cache[key] = facts
    if len(cache) > CACHE_SIZE:
        cache.popitem(last=False)


def classify(sql: str) -> StatementFacts:
    """Facts about a simple-query string or a Parse message's statement text."""
    if len(sql) > MAX_CACHED_TEXT:
        return _analyse(sql)
    facts = _exact.get(sql)
    if facts is not None:
        _exact.move_to_end(sql)
        _stats["hits"] += 1
        return facts
    key = _cache_key(sql)
    facts = _cache.get(key)
    if facts is None:
        _stats["misses"] += 1
        facts = _analyse(sql)
        _remember(_cache, key, facts)
    else:
        _cache.move_to_end(key)
        _stats["hits"] += 1
    _remember(_exact, sql, facts)
    return facts


def cache_info() -> dict:
    """Hit/miss counters and current size of the classification cache."""
    return {**_stats, "size": len(_cache), "exact_size": len(_exact), "max_size": CACHE_SIZE}


def clear_cache() -> None:
    """Forget every cached classification (tests, or after a parser change)."""
    _cache.clear()
    _exact.clear()
    _stats.update(hits=0, misses=0)
