"""Statement routing: StatementFacts + session state + cluster view -> destination nodes and why.

Pure logic, following pgpool-II 4.3's pool_where_to_send() / select_load_balancing_node():
raw mode sends everything to the main node; streaming (and logical / slony) replication sends
writes and anything not positively known to be a read to the primary, transaction control and
most SET to the primary plus the session's load-balance node, and reads to the load-balance node
when the session's transaction state and the statement allow it. Every decision names the rule
that made it (RouteDecision.reason, an id of RULES); a rule's index in RULES is stable and below
64 (per-worker counters in shared memory, SHOW pool_routing).

Catalog questions (function volatility, temporary and unlogged tables) are asked through a
Catalog object (pgpool.proxy.catalog binds one per session); a question it cannot answer now
(None) routes to the primary.

Deliberate differences from 4.3.5 (documented behaviour kept, bugs not):
- A read after the delay-threshold re-election is still checked for system catalogs, temporary
  and unlogged tables, patterns and writing functions (4.3.5 skips those checks in that branch).
- `BEGIN ... ISOLATION LEVEL SERIALIZABLE` makes the transaction serializable for routing, and
  `SET SESSION CHARACTERISTICS ... SERIALIZABLE` / `default_transaction_isolation` persists across
  transactions (4.3.5 forgets it at the next BEGIN).
- Write tracking uses what the statement is, not pgpool's text test: a commented SELECT is not a
  write; a multi-statement query that wrote marks its transaction as writing. SAVEPOINT /
  RELEASE do not mark the transaction as writing, and ROLLBACK TO SAVEPOINT does not clear the
  mark (4.3.5 does both, the second losing earlier writes of the transaction).
- EXPLAIN of a query and EXPLAIN ANALYZE of a read are load balanced, as the manual says (4.3.5's
  send_to_where() sends every EXPLAIN to the primary).
- check_temp_table = trace: DROP TABLE forgets only the tables it names (4.3.5 forgets every
  tracked one), ROLLBACK restores tables dropped in the transaction (4.3.5 forgets them), ON
  COMMIT DROP and CREATE TEMP TABLE ... AS / SELECT INTO TEMP are tracked too.
- check_temp_table = catalog asks about this session's own temporary relations
  (pg_my_temp_schema(); 4.3.5 matches any session's), and only once the session ran something
  that can create one (or when reset_query_list keeps temporary tables of pooled connections).
- dml_adaptive_object_relationship_list: every entry of an object applies, transitively
  (4.3.5 uses the first entry only, one level deep).
- PREPARE TRANSACTION in a transaction that began on a standby too ends the standby's read-only
  transaction with the same statement that carries it (pgpool-II sends COMMIT afterwards).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Protocol

from pgpool.sql.classify import StatementFacts

__all__ = [
    "NodeView", "ClusterView", "RouteDecision", "SessionRouteState", "NoUsableNode", "Catalog",
    "Rule", "RULES", "RULE_INDEX", "choose_load_balance_node", "route",
]

_SL_MODES = frozenset(("streaming_replication", "logical_replication", "slony"))
_USABLE = frozenset(("up", "waiting"))  # pgpool CON_UP / CON_CONNECT_WAIT
_STANDBY = -1                           # redirect target "standby": any standby


class NoUsableNode(Exception):
    """No backend node is up: the statement cannot be sent anywhere."""


class _Random(Protocol):
    def random(self) -> float: ...


class Catalog(Protocol):
    """Catalog answers for one session; None = cannot tell now."""
    def is_volatile(self, function: str) -> bool | None: ...
    def is_temp(self, relation: str) -> bool | None: ...
    def is_unlogged(self, relation: str) -> bool | None: ...


# ---------------------------------------------------------------------------------------------
# Rules: append only (the index is a shared-memory counter slot and must stay stable)

@dataclass(frozen=True, slots=True)
class Rule:
    """One routing rule: its id (RouteDecision.reason), where it sends and what it means."""
    id: str
    target: str
    description: str


_P, _LB, _BOTH = "primary", "load balance node", "primary + load balance node"

RULES: tuple[Rule, ...] = (
    Rule("raw_mode", "main node", "raw mode: every statement goes to the main node"),
    Rule("multi_statement", _P, "a query string with several statements"),
    Rule("unparsable", _P, "a statement the parser does not understand"),
    Rule("write", _P, "not a read: DML, DDL, SELECT INTO / FOR UPDATE / FOR SHARE, writing WITH, "
                      "COPY FROM, COPY TO a file, EXPLAIN ANALYZE of a write, LISTEN, VACUUM, ..."),
    Rule("lock", _P, "LOCK in ROW EXCLUSIVE mode or stronger"),
    Rule("lock_share", _BOTH, "LOCK weaker than ROW EXCLUSIVE"),
    Rule("two_phase_commit", _P, "PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED "
                                 "(a standby's open transaction is committed alongside)"),
    Rule("transaction_control", _BOTH, "BEGIN, START, COMMIT, ROLLBACK, SAVEPOINT, RELEASE "
                                       "(BEGIN READ WRITE / SERIALIZABLE as plain BEGIN on "
                                       "standbys)"),
    Rule("set", _BOTH, "SET, RESET"),
    Rule("set_primary", _P, "SET transaction_read_only = off, SET TRANSACTION READ WRITE, "
                            "SERIALIZABLE isolation"),
    Rule("discard", _BOTH, "DISCARD"),
    Rule("prepare", _P, "SQL PREPARE (EXECUTE follows it)"),
    Rule("prepared_follow", "nodes of the prepared statement",
         "EXECUTE, DEALLOCATE of a statement prepared in this session"),
    Rule("prepared_unknown", _P, "EXECUTE of a statement not prepared through pgpool"),
    Rule("deallocate_all", _BOTH, "DEALLOCATE ALL"),
    Rule("deallocate_unknown", _BOTH, "DEALLOCATE of a statement not prepared through pgpool"),
    Rule("load_balance_off", _P, "load_balance_mode is off"),
    Rule("write_always", _P, "the session wrote and disable_load_balance_on_write = always"),
    Rule("not_select_text", _P, "the text does not start like a SELECT: leading comment or "
                                "white space (allow_sql_comments, ignore_leading_white_space)"),
    Rule("in_write_transaction", _P, "the explicit transaction wrote "
                                     "(disable_load_balance_on_write)"),
    Rule("failed_transaction", _P, "the explicit transaction is aborted"),
    Rule("serializable", _P, "SERIALIZABLE transaction"),
    Rule("delay", _P, "the load balance node lags behind more than delay_threshold "
                      "(delay_threshold_by_time)"),
    Rule("system_catalog", _P, "reads a system catalog"),
    Rule("temp_table", _P, "reads a temporary table (check_temp_table)"),
    Rule("unlogged_table", _P, "reads an unlogged table (check_unlogged_table)"),
    Rule("primary_routing_query_pattern", _P, "matches primary_routing_query_pattern_list"),
    Rule("writing_function", _P, "calls a writing function: write_function_list, "
                                 "read_only_function_list, else a VOLATILE function"),
    Rule("dml_adaptive", _P, "reads a relation written earlier in the transaction "
                             "(dml_adaptive, dml_adaptive_object_relationship_list)"),
    Rule("load_balance", _LB, "read, on the node chosen by backend_weight"),
    Rule("database_redirect", _LB, "read, on the node chosen by "
                                   "database_redirect_preference_list"),
    Rule("app_name_redirect", _LB, "read, on the node chosen by "
                                   "app_name_redirect_preference_list"),
    Rule("lower_delay_standby", _LB, "read, on the least delayed standby "
                                     "(delay_threshold or delay_threshold_by_time, "
                                     "prefer_lower_delay_standby)"),
    # outcomes decided by the relay on top of the rules above (pgpool.proxy.routing)
    Rule("read_your_writes", _P, "read moved from a standby that had not replayed the awaited "
                                 "commit within read_your_writes_max_wait"),
    Rule("standby_retry", _P, "read cancelled on a standby (recovery conflict, lost standby) "
                              "and run again on the primary"),
    Rule("terminate_backend", "node of the backend",
         "SELECT pg_terminate_backend(<pid>) of a backend connection of pgpool: to the node "
         "that runs it (that session ends, no failover)"),
)
RULE_INDEX: dict[str, int] = {r.id: i for i, r in enumerate(RULES)}


@dataclass(frozen=True, slots=True)
class NodeView:
    """One backend as routing sees it."""
    id: int
    status: str = "up"           # up | waiting | down
    role: str = "standby"        # primary | standby | main | replica
    weight: float = 1.0
    standby_delay: int = 0       # replication delay from the streaming-replication check: bytes,
    #                              microseconds with delay_threshold_by_time


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Immutable snapshot of the cluster for one generation of the shared node table.
    nodes[i].id == i (node ids are contiguous from 0, as configured)."""
    nodes: tuple[NodeView, ...]
    primary_node_id: int | None
    main_node_id: int | None
    clustering_mode: str = "streaming_replication"
    generation: int = 0
    usable_ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, nodes, primary_node_id: int | None,
           clustering_mode: str = "streaming_replication", generation: int = 0) -> ClusterView:
        """Build a view; the main node is the first usable node, as pgpool's REAL_MAIN_NODE_ID."""
        nodes = tuple(nodes)
        usable = tuple(n.id for n in nodes if n.status in _USABLE)
        return cls(nodes, primary_node_id, usable[0] if usable else None, clustering_mode,
                   generation, usable)

    def usable(self, node_id: int | None) -> bool:
        return node_id is not None and node_id in self.usable_ids

    @property
    def primary(self) -> int | None:
        """pgpool's PRIMARY_NODE_ID: the primary when usable, else the main node."""
        p = self.primary_node_id
        return p if p is not None and p in self.usable_ids else self.main_node_id


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one statement goes and why."""
    nodes: tuple[int, ...]       # node ids to send to, ascending
    reply_node: int              # whose reply the client gets (primary when several)
    reason: str                  # the id of the rule that decided (RULES)
    writes: bool = False         # counts as a write for disable_load_balance_on_write
    standby_sql: str | None = None  # what nodes other than the primary run instead ("BEGIN"
    #                                 for BEGIN READ WRITE, "COMMIT" for PREPARE TRANSACTION)


# ---------------------------------------------------------------------------------------------
# Configuration-string helpers (compiled once per distinct value)

@dataclass(frozen=True, slots=True)
class _Redirect:
    pattern: re.Pattern
    target: str
    ratio: float


def _anchored(pattern: str) -> re.Pattern | None:
    """pgpool regex semantics: anchored ^...$, case-insensitive, extended; None if invalid."""
    if not pattern.startswith("^"):
        pattern = "^" + pattern
    if not pattern.endswith("$"):
        pattern += "$"
    try:
        return re.compile(pattern, re.I | re.S)
    except re.error:
        return None


@lru_cache(maxsize=64)
def _redirects(text: str) -> tuple[_Redirect, ...]:
    """'<regex>:<target>[(<ratio>)],...' as parsed by pgpool's extract_string_tokens2()."""
    out = []
    for item in (t for t in text.split(",") if t):
        left, sep, right = item.partition(":")
        if not sep:
            break  # pgpool stops at the first token without ':'
        target, _, ratio = right.partition("(")
        ratio = ratio.split(")", 1)[0].strip()
        try:
            weight = float(ratio) if ratio else 1.0
        except ValueError:
            weight = 0.0  # atof() of garbage
        rx = _anchored(left.strip())
        if rx is not None:
            out.append(_Redirect(rx, target.strip(), weight))
    return tuple(out)


@lru_cache(maxsize=64)
def _query_patterns(text: str) -> tuple[re.Pattern, ...]:
    """primary_routing_query_pattern_list: ';'-separated regexes, '\\;' is a literal ';'."""
    items, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == ";":
            items.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if cur:
        items.append("".join(cur))
    compiled = (_anchored(p.replace("\\'", "'")) for p in items if p)
    return tuple(p for p in compiled if p is not None)


@lru_cache(maxsize=64)
def _regex_list(names: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    """A list setting of regexes (function lists, or an already split pattern list)."""
    compiled = (_anchored(n.strip()) for n in names if n.strip())
    return tuple(p for p in compiled if p is not None)


def _matches(patterns: tuple[re.Pattern, ...], text: str) -> bool:
    return any(p.match(text) for p in patterns)


def _first_match(redirects: tuple[_Redirect, ...], text: str) -> _Redirect | None:
    return next((r for r in redirects if r.pattern.match(text)), None)


def _relname(name: str) -> str:
    """Relation (or function) name without its schema, lower case: how pgpool compares them."""
    return name.rpartition(".")[2].lower()


@lru_cache(maxsize=16)
def _relationships(text: str) -> dict[tuple[str, bool], tuple[str, ...]]:
    """dml_adaptive_object_relationship_list 'table:dependent,func():dependent,...' as
    {(name, is_function): dependents}."""
    out: dict[tuple[str, bool], tuple[str, ...]] = {}
    for item in text.split(","):
        left, sep, right = (x.strip() for x in item.partition(":"))
        if not sep or not left or not right:
            continue
        func = left.endswith("()")
        key = (_relname(left[:-2].strip() if func else left), func)
        out[key] = out.get(key, ()) + (_relname(right),)
    return out


def _dependents(relations, functions, text: str) -> set[str]:
    """Relations that depend, directly or through other entries, on the given ones."""
    rels = _relationships(text) if text else {}
    if not rels:
        return set()
    todo = [(r, False) for r in relations] + [(_relname(f), True) for f in functions]
    out: set[str] = set()
    while todo:
        for dep in rels.get(todo.pop(), ()):
            if dep not in out:
                out.add(dep)
                todo.append((dep, False))
    return out


@lru_cache(maxsize=8)
def _reset_drops_temp(queries: tuple[str, ...]) -> bool:
    """Does reset_query_list drop a pooled connection's temporary tables?"""
    return any(" ".join(q.upper().split()) in ("DISCARD ALL", "DISCARD TEMP", "DISCARD TEMPORARY")
               for q in queries)


def _writing_function(functions: tuple[str, ...], cfg,
                      is_volatile: Callable[[str], bool | None] | None) -> bool:
    """pgpool function_call_walker(): does the statement call a function that may write?"""
    ro = tuple(cfg.read_only_function_list or ())
    wl = tuple(cfg.write_function_list or ())
    if ro:
        pats = _regex_list(ro)
        return any(not _matches(pats, f) for f in functions)
    if wl:
        pats = _regex_list(wl)
        return any(_matches(pats, f) for f in functions)
    if is_volatile is None:
        return True  # no catalog to ask: unknown volatility is a write
    return any(is_volatile(f) is not False for f in functions)


# ---------------------------------------------------------------------------------------------
# Load-balance node selection

def _weighted(candidates: list[NodeView], rng: _Random) -> int | None:
    total = sum(n.weight for n in candidates)
    if total <= 0:
        return None
    r = rng.random() * total
    acc = 0.0
    for n in candidates:
        acc += n.weight
        if r < acc:
            return n.id
    return candidates[-1].id


def _delay_limit(cfg) -> int:
    """The standby delay routing tolerates, in the unit the streaming-replication check
    measures: with delay_threshold_by_time (seconds, as pgpool-II 4.4) > 0 that many seconds of
    replay_lag in microseconds (delay_threshold is then ignored), else delay_threshold bytes;
    0 = no check."""
    by_time = cfg.delay_threshold_by_time
    return by_time * 1_000_000 if by_time > 0 else cfg.delay_threshold


def _lowest_delay(view: ClusterView, threshold: int, rng: _Random) -> int | None:
    """Weighted choice among the least-delayed standbys within the threshold, else primary."""
    primary = view.primary
    ok = [n for n in view.nodes if n.status in _USABLE and n.id != primary and n.weight > 0
          and n.standby_delay <= threshold]
    if not ok:
        return primary
    best = min(n.standby_delay for n in ok)
    return _weighted([n for n in ok if n.standby_delay == best], rng)


def _resolve_target(target: str, view: ClusterView) -> int | None:
    """pgpool choose_db_node_id(): primary | standby | node id (invalid -> main node)."""
    if target == "primary" and view.primary_node_id is not None:
        return view.primary
    if target == "standby":
        return _STANDBY
    if target.isdigit() and int(target) < len(view.nodes):
        return int(target)
    return view.main_node_id


def _choose(view: ClusterView, cfg, database: str, application_name: str,
            rng: _Random) -> tuple[int | None, str]:
    """(load-balance node, id of the rule that chose it)."""
    r = rng.random()
    primary = view.primary
    suggested, ratio, rule = None, 1.0, "load_balance"
    if view.clustering_mode in _SL_MODES:
        for text, value, list_rule in (
                (cfg.database_redirect_preference_list, database, "database_redirect"),
                (cfg.app_name_redirect_preference_list, application_name, "app_name_redirect")):
            hit = _first_match(_redirects(text), value) if text and value else None
            if hit is None:
                continue
            ratio = hit.ratio  # an app-name match overrides a database match
            node = _resolve_target(hit.target, view)
            if node == _STANDBY or view.usable(node):
                suggested, rule = node, list_rule
    limit = _delay_limit(cfg)
    by_delay = (view.clustering_mode == "streaming_replication" and limit
                and cfg.prefer_lower_delay_standby)
    exclude = None
    if suggested is not None and suggested >= 0:
        if (by_delay and suggested != primary
                and view.nodes[suggested].standby_delay > limit):
            return _lowest_delay(view, limit, rng), "lower_delay_standby"
        if r <= ratio:
            return suggested, rule
        exclude = suggested
    elif suggested == _STANDBY:
        if r > ratio:
            return primary, rule
        exclude = primary
    candidates = [n for n in view.nodes
                  if n.status in _USABLE and n.weight > 0 and n.id != exclude]
    selected = _weighted(candidates, rng)
    if selected is None:
        selected = view.main_node_id
    if (by_delay and selected is not None and selected != primary
            and view.nodes[selected].standby_delay > limit):
        return _lowest_delay(view, limit, rng), "lower_delay_standby"
    return selected, rule


def choose_load_balance_node(view: ClusterView, cfg, database: str, application_name: str,
                             rng: _Random) -> int | None:
    """pgpool select_load_balancing_node(): weighted random over usable nodes, primary included,
    steered by database/app-name redirect preference lists and the delay threshold."""
    return _choose(view, cfg, database, application_name, rng)[0]


# ---------------------------------------------------------------------------------------------
# Session state

# temporary relation entry: (exists at the last commit, exists now, dropped at commit)
_TempEntry = tuple[bool, bool, bool]
# kinds of statements that may create a temporary relation without saying so
_MAY_CREATE_TEMP = frozenset(("ddl", "do", "call", "other", "execute", "cursor"))


class SessionRouteState:
    """Per-session routing state: load-balance node, transaction and write tracking, temporary
    relations, dml_adaptive's written relations, and where each prepared statement (SQL PREPARE
    or protocol Parse) was sent. `counters` (a route_cnt array) counts decisions per rule;
    `catalog` answers catalog questions for this session."""

    __slots__ = ("database", "application_name", "rng", "counters", "catalog",
                 "load_balance_node", "lb_rule", "in_transaction", "failed_transaction",
                 "writing", "pending_write", "serializable_txn", "serializable_default",
                 "prepared", "temp_tables", "temp_pending", "temp_possible", "temp_cache",
                 "dml_written", "dml_pending")

    def __init__(self, database: str = "", application_name: str = "",
                 rng: _Random | None = None, counters=None, catalog: Catalog | None = None):
        self.database = database
        self.application_name = application_name
        self.rng = rng if rng is not None else random.Random()
        self.counters = counters
        self.catalog = catalog
        self.load_balance_node: int | None = None
        self.lb_rule = "load_balance"
        self.in_transaction = False      # ReadyForQuery 'T' or 'E'
        self.failed_transaction = False  # ReadyForQuery 'E'
        self.writing = False             # pgpool "writing transaction" flag
        self.pending_write = False       # wrote, transaction state not yet known
        self.serializable_txn = False
        self.serializable_default = False
        self.prepared: dict[str, tuple[tuple[int, ...], int]] = {}
        self.temp_tables: dict[str, _TempEntry] = {}  # check_temp_table = trace
        self.temp_pending = False        # temp_tables has changes of the open transaction
        self.temp_possible: bool | None = None  # may the session have a temporary relation?
        self.temp_cache: dict[str, bool] = {}   # check_temp_table = catalog answers
        self.dml_written: set[str] = set()      # dml_adaptive: relations written in the txn
        self.dml_pending: set[str] = set()      # written, transaction state not yet known

    def copy(self) -> SessionRouteState:
        """An independent copy that routes exactly as this state would next (same random
        sequence), counts nothing and can be changed without touching this one."""
        other = SessionRouteState.__new__(SessionRouteState)
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, (dict, set)):
                value = value.copy()
            setattr(other, name, value)
        other.counters = None
        rng = random.Random()
        rng.setstate(self.rng.getstate())
        other.rng = rng
        return other

    def choose_load_balance_node(self, view: ClusterView, cfg) -> int | None:
        """(Re)choose this session's load-balance node."""
        self.load_balance_node, self.lb_rule = _choose(
            view, cfg, self.database, self.application_name, self.rng)
        return self.load_balance_node

    @property
    def serializable(self) -> bool:
        return self.serializable_txn or self.serializable_default

    def remember_prepared(self, name: str, decision: RouteDecision) -> None:
        """A statement was prepared (SQL PREPARE or Parse) on decision.nodes."""
        self.prepared[name] = (decision.nodes, decision.reply_node)

    def forget_prepared(self, name: str | None) -> None:
        """DEALLOCATE name / Close; None forgets every statement (DEALLOCATE ALL, DISCARD ALL)."""
        if name is None:
            self.prepared.clear()
        else:
            self.prepared.pop(name, None)

    def is_temp(self, relation: str) -> bool:
        """check_temp_table = trace: is `relation` one of this session's temporary tables?"""
        entry = self.temp_tables.get(relation)
        return entry is not None and entry[1]

    def after_statement(self, facts: StatementFacts, decision: RouteDecision, cfg) -> None:
        """Update tracking for a statement being sent (the relay calls this as it routes)."""
        if self.counters is not None:
            self.counters[RULE_INDEX[decision.reason]] += 1
        if facts.plain_read:
            return          # nothing below applies to it (the common case, kept cheap)
        mode = cfg.disable_load_balance_on_write
        keep_writing = mode in ("trans_transaction", "always")
        if facts.transaction is not None:  # BEGIN / START / COMMIT / END / ROLLBACK / ABORT
            begin = facts.transaction == "begin"
            if not begin:
                self._end_temp_transaction(commit=facts.kind == "commit"
                                           and not self.failed_transaction)
            self.in_transaction = begin
            self.failed_transaction = False
            self.pending_write = False
            self.serializable_txn = begin and facts.serializable is not None
            self.dml_written.clear()
            if not keep_writing:
                self.writing = False
        elif facts.serializable is not None:
            if facts.serializable == "transaction":
                self.serializable_txn = True
            else:
                self.serializable_default = True
        elif mode == "dml_adaptive":
            self._track_dml(facts, cfg)
        elif decision.writes and not facts.read_only and mode != "off":
            if self.in_transaction or mode == "always":
                self.writing = True
            else:
                self.pending_write = True
        if facts.isolation_reset:
            self.serializable_default = False
        if facts.temp_ops:
            self._apply_temp_ops(facts.temp_ops)
        if (facts.temp_ops or facts.kind in _MAY_CREATE_TEMP or not facts.parsed
                or (facts.multi_statement and not facts.is_read_only)
                or (decision.writes and facts.functions)):
            self.temp_possible = True
            self.temp_cache.clear()
        kind = facts.kind
        if kind == "prepare" and facts.stmt_name:
            self.remember_prepared(facts.stmt_name, decision)
        elif kind == "deallocate" or (kind == "discard" and facts.isolation_reset):
            self.forget_prepared(facts.stmt_name)

    def on_ready_for_query(self, status: str | bytes) -> None:
        """ReadyForQuery transaction status: 'I' idle, 'T' in transaction, 'E' failed."""
        if status == b"I" and not (self.in_transaction or self.pending_write or self.dml_pending
                                   or self.temp_pending or self.serializable_txn):
            return          # idle, and idle before: nothing changes (the common case)
        if isinstance(status, (bytes, bytearray)):
            status = chr(status[0])
        self.in_transaction = status in ("T", "E")
        self.failed_transaction = status == "E"
        if self.pending_write and self.in_transaction:
            self.writing = True
        self.pending_write = False
        if self.dml_pending:
            if self.in_transaction:
                self.dml_written |= self.dml_pending
            self.dml_pending.clear()
        if not self.in_transaction:
            self.serializable_txn = False
            self.dml_written.clear()
            if self.temp_pending:
                # the transaction ended without a COMMIT / ROLLBACK we saw (inside a
                # multi-statement query or a function): keep whatever may exist
                self.temp_tables = {name: (True, True, False)
                                    for name, (before, now, _) in self.temp_tables.items()
                                    if before or now}
                self.temp_pending = False

    # ---- dml_adaptive and temporary relations ------------------------------------------

    def _track_dml(self, facts: StatementFacts, cfg) -> None:
        """dml_adaptive: remember the relations a statement writes (and their dependents)."""
        written = set() if facts.is_read_only else {_relname(t) for t in facts.tables}
        written |= _dependents(written, facts.functions, cfg.dml_adaptive_object_relationship_list)
        if written:
            (self.dml_written if self.in_transaction else self.dml_pending).update(written)

    def _apply_temp_ops(self, ops) -> None:
        tables = self.temp_tables
        txn = self.in_transaction
        for op, names in ops:
            if op == "discard":
                tables.clear()
                continue
            for name in names:
                entry = tables.get(name)
                if op == "drop":
                    if entry is None:
                        continue
                    if txn:
                        tables[name] = (entry[0], False, entry[2])
                    else:
                        del tables[name]
                elif txn:
                    tables[name] = (entry is not None and entry[0], True, op == "create_drop")
                elif op == "create":
                    tables[name] = (True, True, False)
        if txn:
            self.temp_pending = True

    def _end_temp_transaction(self, commit: bool) -> None:
        if not self.temp_pending:
            return
        keep = (lambda e: e[1] and not e[2]) if commit else (lambda e: e[0])
        self.temp_tables = {name: (True, True, False)
                            for name, entry in self.temp_tables.items() if keep(entry)}
        self.temp_pending = False


# ---------------------------------------------------------------------------------------------
# Routing

_PRIMARY_RULE = {
    "set": "set_primary", "prepare_transaction": "two_phase_commit",
    "commit_prepared": "two_phase_commit", "rollback_prepared": "two_phase_commit",
    "lock": "lock", "prepare": "prepare",
}
# Neither reads nor writes for disable_load_balance_on_write (BEGIN/COMMIT/ROLLBACK are handled
# by SessionRouteState.after_statement itself).
_NOT_WRITES = frozenset((
    "savepoint", "release", "rollback_to", "prepare_transaction", "commit_prepared",
    "rollback_prepared",
))
# every kind whose target is "both"
_BOTH_RULE = {
    "begin": "transaction_control", "commit": "transaction_control",
    "rollback": "transaction_control", "savepoint": "transaction_control",
    "release": "transaction_control", "rollback_to": "transaction_control",
    "set": "set", "reset": "set", "discard": "discard", "lock": "lock_share",
}
_NOT_BALANCED_IN_TXN = (
    ("writing", "in_write_transaction"),
    ("failed_transaction", "failed_transaction"),
    ("serializable", "serializable"),
)


# Decisions are immutable, so equal ones are built once and shared (a frozen dataclass costs
# about a microsecond to construct).
_decision = lru_cache(maxsize=1024)(RouteDecision)


def _one(node: int, reason: str, writes: bool) -> RouteDecision:
    return _decision((node,), node, reason, writes)


def _lb_node(session: SessionRouteState, view: ClusterView, cfg) -> int | None:
    node = session.load_balance_node
    if node is None or node not in view.usable_ids:
        node = session.choose_load_balance_node(view, cfg)
    return node


def _both(session: SessionRouteState, view: ClusterView, cfg, reason: str, writes: bool,
          standby_sql: str | None = None) -> RouteDecision:
    """pgpool_setall_node_to_be_sent(): primary + load-balance node (all usable nodes with
    statement_level_load_balance, since the load-balance node changes per statement)."""
    primary = view.primary
    if cfg.statement_level_load_balance:
        nodes = view.usable_ids
    else:
        lb = _lb_node(session, view, cfg)
        nodes = (primary,) if lb is None or lb == primary else tuple(sorted((primary, lb)))
    return _decision(nodes, primary, reason, writes, standby_sql if len(nodes) > 1 else None)


def _follow(facts: StatementFacts, session: SessionRouteState, view: ClusterView, cfg,
            writes: bool) -> RouteDecision:
    """EXECUTE / DEALLOCATE go where the PREPARE (or Parse) went."""
    name = facts.stmt_name
    if name is None:  # DEALLOCATE ALL
        return _both(session, view, cfg, "deallocate_all", writes)
    where = session.prepared.get(name)
    if where is None:
        if facts.kind == "deallocate":
            return _both(session, view, cfg, "deallocate_unknown", writes)
        return _one(view.primary, "prepared_unknown", writes)
    nodes = tuple(n for n in where[0] if n in view.usable_ids)
    if not nodes:
        return _one(view.primary, "prepared_follow", writes)
    reply = where[1] if where[1] in nodes else nodes[0]
    return _decision(nodes, reply, "prepared_follow", writes)


def _uses_temp(tables: tuple[str, ...], session: SessionRouteState, cfg,
               catalog: Catalog | None) -> bool:
    """check_temp_table: does the statement read one of the session's temporary relations?"""
    mode = cfg.check_temp_table
    if any(t.startswith("pg_temp") and "." in t for t in tables):
        return True                     # pg_temp.name, pg_temp_3.name
    if mode == "catalog" and not session.temp_possible:
        if session.temp_possible is None:
            queries = cfg.reset_query_list
            queries = tuple(queries.split(";") if isinstance(queries, str) else queries)
            session.temp_possible = not _reset_drops_temp(queries)
        if not session.temp_possible:
            return False
    for rel in tables:
        if "." in rel:
            continue                    # in a schema of its own: not temporary
        if mode == "trace":
            if session.is_temp(rel):
                return True
            continue
        known = session.temp_cache.get(rel)
        if known is None:
            if catalog is None:
                continue  # nothing to ask: like pgpool-II without a relcache
            known = catalog.is_temp(rel)
            if known is None:
                return True  # cannot tell now: the primary has it if anyone does
            session.temp_cache[rel] = known
        if known:
            return True
    return False


def _uses_unlogged(tables: tuple[str, ...], catalog: Catalog) -> bool:
    """check_unlogged_table: does the statement read an unlogged table?"""
    is_unlogged = catalog.is_unlogged
    for table in tables:
        if is_unlogged(table) is not False:
            return True
    return False


# pgpool-II's pool_get_terminate_backend_pid(): a pg_terminate_backend(<integer constant>[, ...])
# call outside strings, quoted identifiers and comments
_TERMINATE_CALL = re.compile(
    r"(?<![\w$])[Ee]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\""
    r"|--[^\n]*|/\*.*?\*/|\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$"
    r"|(?<![\w$.\"])(?:pg_catalog\s*\.\s*)?pg_terminate_backend\s*\(\s*(?P<pid>\d+)\s*[,)]",
    re.I | re.S)


def terminate_backend_pid(sql: str) -> int | None:
    """The pid of the first pg_terminate_backend() call with an integer constant as its first
    argument in a query text, None when there is none."""
    for m in _TERMINATE_CALL.finditer(sql):
        if m.group("pid"):
            return int(m.group("pid"))
    return None


def _terminate_target(facts: StatementFacts, sql: str | None, view: ClusterView,
                      backend_pid_node: Callable[[int], int | None]) -> int | None:
    """The usable node whose backend a SELECT pg_terminate_backend(<pid>) terminates, if the
    pid is one of pgpool's backend connections (`backend_pid_node`)."""
    if facts.kind != "select" or sql is None or not any(
            _relname(f) == "pg_terminate_backend" for f in facts.functions):
        return None
    pid = terminate_backend_pid(sql)
    node = backend_pid_node(pid) if pid else None
    return node if view.usable(node) else None


def _dml_adaptive_hit(facts: StatementFacts, session: SessionRouteState, cfg) -> bool:
    """dml_adaptive: does this read touch a relation written earlier in the transaction (or
    one that depends on a function it calls)?"""
    written = session.dml_written
    if facts.functions:
        written = written | _dependents((), facts.functions,
                                        cfg.dml_adaptive_object_relationship_list)
    return bool(written) and any(_relname(t) in written for t in facts.tables)


def route(facts: StatementFacts, session: SessionRouteState, view: ClusterView, cfg, *,
          sql: str | None = None,
          is_volatile: Callable[[str], bool | None] | None = None,
          catalog: Catalog | None = None,
          backend_pid_node: Callable[[int], int | None] | None = None) -> RouteDecision:
    """Decide where one statement goes. `sql` (the text) is needed only for
    primary_routing_query_pattern_list and pg_terminate_backend(). Catalog questions go to
    `catalog` (default: the session's); `is_volatile(func)`, when given, answers pg_proc
    volatility instead (None = unknown, treated as writing) when both function lists are empty.
    `backend_pid_node(pid)` names the node running a backend pid of pgpool's connections (None:
    not one of them); without it pg_terminate_backend() is routed like any function call."""
    mode = view.clustering_mode
    if view.main_node_id is None:
        raise NoUsableNode("all backend nodes are down")
    if mode == "raw":
        return _one(view.main_node_id, "raw_mode", not facts.is_read_only)
    if mode not in _SL_MODES:
        raise NotImplementedError(f"routing for clustering mode {mode!r} is not implemented")
    if catalog is None:
        catalog = session.catalog
    if facts.is_read_only:
        writes = False
        if facts.functions:
            if is_volatile is None and catalog is not None:
                is_volatile = catalog.is_volatile
            writes = _writing_function(facts.functions, cfg, is_volatile)
    else:
        writes = facts.kind not in _NOT_WRITES
    primary = view.primary
    if facts.multi_statement:
        return _one(primary, "multi_statement", writes)
    if not facts.parsed:
        return _one(primary, "unparsable", True)
    if backend_pid_node is not None and facts.functions:
        node = _terminate_target(facts, sql, view, backend_pid_node)
        if node is not None:
            return _one(node, "terminate_backend", writes)
    target = facts.target
    if target == "primary":
        if facts.kind == "prepare_transaction" and session.in_transaction:
            return _both(session, view, cfg, "two_phase_commit", writes, "COMMIT")
        return _one(primary, _PRIMARY_RULE.get(facts.kind, "write"), writes)
    if target == "both":
        return _both(session, view, cfg, _BOTH_RULE[facts.kind], writes,
                     "BEGIN" if facts.standby_begin else None)
    if target == "follow":
        return _follow(facts, session, view, cfg, writes)

    # target "either": a read that may be load balanced
    if session.writing and cfg.disable_load_balance_on_write == "always":
        return _one(primary, "write_always", writes)
    if not cfg.load_balance_mode:
        return _one(primary, "load_balance_off", writes)
    if not facts.is_read_only:
        return _one(primary, _PRIMARY_RULE.get(facts.kind, "write"), writes)
    if facts.kind in ("select", "empty") and not cfg.allow_sql_comments and not (
            facts.starts_like_select if cfg.ignore_leading_white_space
            else facts.starts_like_select_raw):
        return _one(primary, "not_select_text", writes)
    if session.in_transaction:
        for attr, reason in _NOT_BALANCED_IN_TXN:
            if getattr(session, attr):
                return _one(primary, reason, writes)
    if cfg.statement_level_load_balance:
        lb = session.choose_load_balance_node(view, cfg)
    else:
        lb = _lb_node(session, view, cfg)
    reason = session.lb_rule
    threshold = _delay_limit(cfg)
    if (threshold and mode == "streaming_replication" and lb is not None
            and view.nodes[lb].standby_delay > threshold):
        if not cfg.prefer_lower_delay_standby:
            return _one(primary, "delay", writes)
        lb = session.choose_load_balance_node(view, cfg)
        reason = "delay" if lb == primary else "lower_delay_standby"
    if facts.uses_system_catalog:
        return _one(primary, "system_catalog", writes)
    tables = facts.tables
    if tables:
        temp_mode = cfg.check_temp_table
        if temp_mode != "none" and (facts.temp_schema or session.temp_possible is not False
                                    or temp_mode == "trace") \
                and _uses_temp(tables, session, cfg, catalog):
            return _one(primary, "temp_table", writes)
        if cfg.check_unlogged_table and catalog is not None and _uses_unlogged(tables, catalog):
            return _one(primary, "unlogged_table", writes)
    patterns = cfg.primary_routing_query_pattern_list
    if patterns and sql is not None and _matches(
            _query_patterns(patterns) if isinstance(patterns, str)
            else _regex_list(tuple(patterns)), sql):
        return _one(primary, "primary_routing_query_pattern", writes)
    if writes:
        return _one(primary, "writing_function", writes)
    if (cfg.disable_load_balance_on_write == "dml_adaptive" and session.in_transaction
            and tables and _dml_adaptive_hit(facts, session, cfg)):
        return _one(primary, "dml_adaptive", writes)
    return _one(lb, reason, writes)
