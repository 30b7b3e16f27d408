"""Statement routing: StatementFacts + session state + cluster view -> destination nodes and why.

Pure logic, following pgpool-II 4.3's pool_where_to_send() / select_load_balancing_node():
raw mode sends everything to the main node; streaming (and logical / slony) replication sends
writes and anything not positively known to be a read to the primary, transaction control and
most SET to the primary plus the session's load-balance node, and reads to the load-balance node
when the session's transaction state and the statement allow it.

Deliberate differences from 4.3.5 (documented behaviour kept, bugs not):
- A read after the delay-threshold re-election is still checked for system catalogs, patterns and
  writing functions (4.3.5 skips those checks in that branch).
- `BEGIN ... ISOLATION LEVEL SERIALIZABLE` makes the transaction serializable for routing, and
  `SET SESSION CHARACTERISTICS ... SERIALIZABLE` / `default_transaction_isolation` persists across
  transactions (4.3.5 forgets it at the next BEGIN).
- Write tracking uses what the statement is, not pgpool's text test: a commented SELECT is not a
  write; a multi-statement query that wrote marks its transaction as writing. SAVEPOINT /
  RELEASE do not mark the transaction as writing, and ROLLBACK TO SAVEPOINT does not clear the
  mark (4.3.5 does both, the second losing earlier writes of the transaction).
- `disable_load_balance_on_write = dml_adaptive` currently behaves as `transaction` (safe).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Protocol

from pgpool.sql.classify import StatementFacts

__all__ = [
    "NodeView", "ClusterView", "RouteDecision", "SessionRouteState", "NoUsableNode",
    "choose_load_balance_node", "route",
]

_SL_MODES = frozenset(("streaming_replication", "logical_replication", "slony"))
_USABLE = frozenset(("up", "waiting"))  # pgpool CON_UP / CON_CONNECT_WAIT
_STANDBY = -1                           # redirect target "standby": any standby


class NoUsableNode(Exception):
    """No backend node is up: the statement cannot be sent anywhere."""


class _Random(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class NodeView:
    """One backend as routing sees it."""
    id: int
    status: str = "up"           # up | waiting | down
    role: str = "standby"        # primary | standby | main | replica
    weight: float = 1.0
    standby_delay: int = 0       # replication delay (bytes) from the streaming-replication check


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
    reason: str                  # short rule name, e.g. "load_balance", "write", "set"
    writes: bool = False         # counts as a write for disable_load_balance_on_write
    plain_begin_for_standbys: bool = False  # send "BEGIN" to non-primary nodes instead


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


def choose_load_balance_node(view: ClusterView, cfg, database: str, application_name: str,
                             rng: _Random) -> int | None:
    """pgpool select_load_balancing_node(): weighted random over usable nodes, primary included,
    steered by database/app-name redirect preference lists and the delay threshold."""
    r = rng.random()
    primary = view.primary
    suggested, ratio = None, 1.0
    if view.clustering_mode in _SL_MODES:
        for text, value in ((cfg.database_redirect_preference_list, database),
                            (cfg.app_name_redirect_preference_list, application_name)):
            hit = _first_match(_redirects(text), value) if text and value else None
            if hit is None:
                continue
            ratio = hit.ratio  # an app-name match overrides a database match
            node = _resolve_target(hit.target, view)
            if node == _STANDBY or view.usable(node):
                suggested = node
    by_delay = (view.clustering_mode == "streaming_replication" and cfg.delay_threshold
                and cfg.prefer_lower_delay_standby)
    exclude = None
    if suggested is not None and suggested >= 0:
        if (by_delay and suggested != primary
                and view.nodes[suggested].standby_delay > cfg.delay_threshold):
            return _lowest_delay(view, cfg.delay_threshold, rng)
        if r <= ratio:
            return suggested
        exclude = suggested
    elif suggested == _STANDBY:
        if r > ratio:
            return primary
        exclude = primary
    candidates = [n for n in view.nodes
                  if n.status in _USABLE and n.weight > 0 and n.id != exclude]
    selected = _weighted(candidates, rng)
    if selected is None:
        selected = view.main_node_id
    if (by_delay and selected is not None and selected != primary
            and view.nodes[selected].standby_delay > cfg.delay_threshold):
        return _lowest_delay(view, cfg.delay_threshold, rng)
    return selected


# ---------------------------------------------------------------------------------------------
# Session state

class SessionRouteState:
    """Per-session routing state: load-balance node, transaction and write tracking, and where
    each prepared statement (SQL PREPARE or protocol Parse) was sent."""

    __slots__ = ("database", "application_name", "rng", "load_balance_node", "in_transaction",
                 "failed_transaction", "writing", "pending_write", "serializable_txn",
                 "serializable_default", "prepared")

    def __init__(self, database: str = "", application_name: str = "",
                 rng: _Random | None = None):
        self.database = database
        self.application_name = application_name
        self.rng = rng if rng is not None else random.Random()
        self.load_balance_node: int | None = None
        self.in_transaction = False      # ReadyForQuery 'T' or 'E'
        self.failed_transaction = False  # ReadyForQuery 'E'
        self.writing = False             # pgpool "writing transaction" flag
        self.pending_write = False       # wrote, transaction state not yet known
        self.serializable_txn = False
        self.serializable_default = False
        self.prepared: dict[str, tuple[tuple[int, ...], int]] = {}

    def choose_load_balance_node(self, view: ClusterView, cfg) -> int | None:
        """(Re)choose this session's load-balance node."""
        self.load_balance_node = choose_load_balance_node(
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

    def after_statement(self, facts: StatementFacts, decision: RouteDecision, cfg) -> None:
        """Update tracking once a statement completed successfully (CommandComplete)."""
        mode = cfg.disable_load_balance_on_write
        keep_writing = mode in ("trans_transaction", "always")
        if facts.transaction is not None:  # BEGIN / START / COMMIT / END / ROLLBACK / ABORT
            begin = facts.transaction == "begin"
            self.in_transaction = begin
            self.failed_transaction = False
            self.pending_write = False
            self.serializable_txn = begin and facts.serializable is not None
            if not keep_writing:
                self.writing = False
        elif facts.serializable is not None:
            if facts.serializable == "transaction":
                self.serializable_txn = True
            else:
                self.serializable_default = True
        elif decision.writes and not facts.read_only and mode != "off":
            if self.in_transaction or mode == "always":
                self.writing = True
            else:
                self.pending_write = True
        if facts.isolation_reset:
            self.serializable_default = False
        kind = facts.kind
        if kind == "prepare" and facts.stmt_name:
            self.remember_prepared(facts.stmt_name, decision)
        elif kind == "deallocate" or (kind == "discard" and facts.isolation_reset):
            self.forget_prepared(facts.stmt_name)

    def on_ready_for_query(self, status: str | bytes) -> None:
        """ReadyForQuery transaction status: 'I' idle, 'T' in transaction, 'E' failed."""
        if isinstance(status, (bytes, bytearray)):
            status = chr(status[0])
        self.in_transaction = status in ("T", "E")
        self.failed_transaction = status == "E"
        if self.pending_write and self.in_transaction:
            self.writing = True
        self.pending_write = False
        if not self.in_transaction:
            self.serializable_txn = False


# ---------------------------------------------------------------------------------------------
# Routing

_PRIMARY_REASON = {
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
_BOTH_REASON = {
    "begin": "transaction_control", "commit": "transaction_control",
    "rollback": "transaction_control", "savepoint": "transaction_control",
    "release": "transaction_control", "rollback_to": "transaction_control",
    "set": "set", "reset": "set", "discard": "discard", "lock": "lock",
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
          plain_begin: bool = False) -> RouteDecision:
    """pgpool_setall_node_to_be_sent(): primary + load-balance node (all usable nodes with
    statement_level_load_balance, since the load-balance node changes per statement)."""
    primary = view.primary
    if cfg.statement_level_load_balance:
        nodes = view.usable_ids
    else:
        lb = _lb_node(session, view, cfg)
        nodes = (primary,) if lb is None or lb == primary else tuple(sorted((primary, lb)))
    return _decision(nodes, primary, reason, writes, plain_begin and len(nodes) > 1)


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


def route(facts: StatementFacts, session: SessionRouteState, view: ClusterView, cfg, *,
          sql: str | None = None,
          is_volatile: Callable[[str], bool | None] | None = None) -> RouteDecision:
    """Decide where one statement goes. `sql` (the text) is needed only for
    primary_routing_query_pattern_list; `is_volatile(func)` answers pg_proc volatility
    (None = unknown, treated as writing) when both function lists are empty."""
    mode = view.clustering_mode
    if view.main_node_id is None:
        raise NoUsableNode("all backend nodes are down")
    if mode == "raw":
        return _one(view.main_node_id, "raw_mode", not facts.is_read_only)
    if mode not in _SL_MODES:
        raise NotImplementedError(f"routing for clustering mode {mode!r} is not implemented")

    if facts.is_read_only:
        writes = bool(facts.functions) and _writing_function(facts.functions, cfg, is_volatile)
    else:
        writes = facts.kind not in _NOT_WRITES
    primary = view.primary
    if facts.multi_statement:
        return _one(primary, "multi_statement", writes)
    if not facts.parsed:
        return _one(primary, "unparsable", True)
    target = facts.target
    if target == "primary":
        return _one(primary, _PRIMARY_REASON.get(facts.kind, "write"), writes)
    if target == "both":
        return _both(session, view, cfg, _BOTH_REASON.get(facts.kind, "both"), writes,
                     facts.standby_begin)
    if target == "follow":
        return _follow(facts, session, view, cfg, writes)

    # target "either": a read that may be load balanced
    if session.writing and cfg.disable_load_balance_on_write == "always":
        return _one(primary, "write_always", writes)
    if not cfg.load_balance_mode:
        return _one(primary, "load_balance_off", writes)
    if not facts.is_read_only:
        return _one(primary, _PRIMARY_REASON.get(facts.kind, "write"), writes)
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
    reason = "load_balance"
    threshold = cfg.delay_threshold
    if (threshold and mode == "streaming_replication" and lb is not None
            and view.nodes[lb].standby_delay > threshold):
        if not cfg.prefer_lower_delay_standby:
            return _one(primary, "delay", writes)
        lb = session.choose_load_balance_node(view, cfg)
        reason = "lower_delay_standby"
    if facts.uses_system_catalog:
        return _one(primary, "system_catalog", writes)
    patterns = cfg.primary_routing_query_pattern_list
    if patterns and sql is not None and _matches(
            _query_patterns(patterns) if isinstance(patterns, str)
            else _regex_list(tuple(patterns)), sql):
        return _one(primary, "primary_routing_query_pattern", writes)
    if writes:
        return _one(primary, "writing_function", writes)
    if lb is None:
        return _one(primary, "no_load_balance_node", writes)
    return _one(lb, reason, writes)
