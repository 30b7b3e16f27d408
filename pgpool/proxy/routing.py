"""Per-session routing adapters: turn client requests into relay units (raw and streaming modes).

RawRouting sends everything to the main node and never parses SQL (the fast path).
StreamRouting classifies each statement once (cached) and asks pgpool.router where it goes;
extended-protocol batches follow their statements, and a named statement needed on a node it
was never parsed on is re-parsed there first (pgpool-II's parse-before-bind).

With read_your_writes on, StreamRouting also marks the units that commit a write (the relay then
learns the commit's WAL position, pgpool.state.ryw) and sends a load-balanced read to its standby
only once that standby has replayed the awaited position: known already, or asked on the
session's own idle standby connection, polled up to read_your_writes_max_wait; else the read
goes to the primary.
"""

import time

from pgpool.protocol import messages as m
from pgpool.proxy.backend import REPLAY_LSN_QUERY, REPLAY_LSN_SQL, BackendError, run_internal
from pgpool.proxy import memo
from pgpool.proxy.relay import Unit
from pgpool.proxy.stats import stat_kind
from pgpool.state import shm as S
from pgpool.state.ryw import SessionPositions, key_of, parse_lsn

# rules of pgpool.router that send a read to the load-balance node
BALANCED_RULES = frozenset(("load_balance", "database_redirect", "app_name_redirect",
                            "lower_delay_standby"))
# statements that write no WAL worth waiting for, even when they count as writes for routing
_NO_WAL_KINDS = frozenset(("set", "reset", "show", "discard", "deallocate", "prepare", "listen",
                           "unlisten", "savepoint", "release", "rollback_to", "lock", "empty"))
_FORGETS_STATEMENTS = frozenset(("deallocate", "discard"))
PROBE_TIMEOUT = 5.0         # seconds a standby may take to tell its replay position
PROBE_MAX_PAUSE = 0.005     # longest pause between two replay-position probes


def _cstr_at(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode("utf-8", "replace"), end + 1


def parse_message_query(msg: bytes) -> tuple[str, str]:
    """(statement name, query text) of a Parse message."""
    name, pos = _cstr_at(msg, 5)
    query, _ = _cstr_at(msg, pos)
    return name, query


def bind_names(msg: bytes) -> tuple[str, str]:
    """(portal, statement) of a Bind message."""
    if msg[5] == 0 and msg[6] == 0:
        return "", ""                   # unnamed portal, unnamed statement: the common case
    portal, pos = _cstr_at(msg, 5)
    stmt, _ = _cstr_at(msg, pos)
    return portal, stmt


class StatementLog:
    """log_statement / log_per_node_statement output, shared by both routing modes: one line
    per node the statement is sent to, with what that node runs."""

    def __init__(self, session):
        self.session = session
        self.stmt_text: dict[str, str] = {}
        self.portal_text: dict[str, str] = {}

    def line(self, node: int, text: str) -> None:
        s = self.session
        c = s.conns.get(node)
        s.log("LOG", f"DB node id: {node} backend pid: {c.pid if c else 0} statement: {text}")

    def simple(self, nodes, sql: str, standby_sql: str | None = None,
               primary: int | None = None) -> None:
        cfg = self.session.cfg
        if cfg.log_statement:
            self.session.log("LOG", f"statement: {sql}")
        if cfg.log_per_node_statement:
            for n in nodes:
                self.line(n, standby_sql if standby_sql is not None and n != primary else sql)

    def batch(self, nodes, batch) -> None:
        cfg = self.session.cfg
        if not (cfg.log_statement or cfg.log_per_node_statement):
            return
        for msg in batch:
            k = msg[0:1]
            if k == b"P":
                name, query = parse_message_query(msg)
                self.stmt_text[name] = query
                text = "Parse: " + query
            elif k == b"B":
                portal, stmt = bind_names(msg)
                self.portal_text[portal] = self.stmt_text.get(stmt, "")
                text = "B message"
            elif k == b"E":
                text = "Execute: " + self.portal_text.get(_cstr_at(msg, 5)[0], "")
            else:
                text = f"{k.decode()} message"
            if cfg.log_statement and k in (b"P", b"E"):
                self.session.log("LOG", f"statement: {text}")
            if cfg.log_per_node_statement:
                for n in nodes:
                    self.line(n, text)

    def reparse(self, node: int, query: str) -> None:
        """A statement parsed again on `node` before its Bind (parse-before-bind)."""
        if self.session.cfg.log_per_node_statement:
            self.line(node, "Parse: " + query)

    def internal(self, node: int, sql: str) -> None:
        """pgpool's own query on the session's connection to `node`."""
        if self.session.cfg.log_per_node_statement:
            self.line(node, sql)


class RawRouting:
    """Raw mode: one backend (the main node) gets everything."""

    fast_path = "raw"       # the relay may bypass units for whole requests (unless logging)

    def __init__(self, session, main_node: int):
        self.session = session
        self.main = main_node
        self.nodes = (main_node,)
        self.stats = session.stats
        self.log = StatementLog(session)
        self.configure(session.cfg)

    def configure(self, cfg) -> None:
        """The session's configuration changed (PGPOOL SET / RESET)."""
        self.logging = bool(cfg.log_statement or cfg.log_per_node_statement)

    def simple_query_unit(self, msg: bytes) -> Unit:
        self.stats.count(stat_kind(msg[5:-1]), self.nodes)
        if self.logging:
            self.log.simple(self.nodes, msg[5:-1].decode("utf-8", "replace"))
        return Unit(self.nodes, self.main)

    def batch_unit(self, batch):
        for msg in batch:
            if msg[0] == 80:   # Parse
                q = msg.index(b"\0", 5) + 1
                self.stats.count(stat_kind(msg[q:q + 12]), self.nodes)
        if self.logging:
            self.log.batch(self.nodes, batch)
        return Unit(self.nodes, self.main, closed=False), None

    def function_call_unit(self) -> Unit:
        return Unit(self.nodes, self.main)

    def ready_for_query(self, status: bytes) -> None:
        return None


class _Stmt:
    __slots__ = ("name", "facts", "kind", "parse_msg", "nodes", "query")

    def __init__(self, name, facts, kind, parse_msg, query):
        self.name = name
        self.facts = facts
        self.kind = kind                # for SHOW pool_backend_stats
        self.parse_msg = parse_msg
        self.nodes: set[int] = set()
        self.query = query


class StreamRouting:
    """Streaming replication: per-statement routing by pgpool.router."""

    fast_path = "route"     # whole requests going to one node are streamed by the relay

    def __init__(self, session, route_state, view):
        from pgpool import router
        self._route = router.route
        self._decision = router.RouteDecision
        self._rule_index = router.RULE_INDEX
        self.session = session
        self.state = route_state
        self.stats = session.stats
        self.log = StatementLog(session)
        self.stmts: dict[str, _Stmt] = {}
        self.portals: dict[str, str] = {}
        self.last_nodes: tuple = ()
        self._terminate_slot = None     # where the last pg_terminate_backend() pid was found
        self.set_view(view)
        self.ryw: SessionPositions | None = None
        self.txn_wrote = False          # the open transaction wrote (read-your-writes)
        self._retry = ((), (), ())      # the last batch's parsed, needed statements, kinds
        self.configure(session.cfg)

    def configure(self, cfg) -> None:
        """The session's configuration: at start, and after PGPOOL SET / RESET."""
        self.cfg = cfg
        self.logging = bool(cfg.log_statement or cfg.log_per_node_statement)
        # the statement text is decoded only for what reads it: logging, the primary routing
        # patterns, function calls (pg_terminate_backend)
        self._text_wanted = self.logging or bool(cfg.primary_routing_query_pattern_list)
        mode = cfg.read_your_writes
        if mode == "off":
            self.ryw = None
        elif self.ryw is None:
            s = self.session
            self.ryw = SessionPositions(mode, cfg.read_your_writes_max_wait,
                                        key_of(s.startup.user, s.startup.database),
                                        s.shm.ryw, s.shm.ryw_lock)
        else:
            self.ryw.mode = mode
            self.ryw.max_wait = cfg.read_your_writes_max_wait / 1000.0

    def set_view(self, view) -> None:
        """The nodes this session can use changed (a node was lost or detached)."""
        self.view = view
        self.primary = view.primary
        self.last_nodes = tuple(n for n in self.last_nodes if n in view.usable_ids) \
            or (self.primary,)

    def _decide(self, facts, sql=None):
        d = self._route(facts, self.state, self.view, self.cfg, sql=sql,
                        backend_pid_node=self._backend_pid_node)
        if d.reason == "terminate_backend":
            self._terminating()
        return d

    def _backend_pid_node(self, pid: int) -> int | None:
        """pg_terminate_backend(pid): the node of pgpool's backend connection with that pid."""
        found = self._terminate_slot = self.session.shm.find_backend_pid(pid)
        if found is None:
            self.session.log("LOG", f"found the pg_terminate_backend request for backend "
                                    f"pid:{pid}, but the backend connection does not belong "
                                    f"to pgpool-II")
            return None
        return found[2]

    def _terminating(self) -> None:
        """Mark the connection the routed pg_terminate_backend() ends (pgpool-II's
        pool_set_connection_will_be_terminated): its session ends, no failover follows."""
        proc, pool, node = self._terminate_slot
        c = self.session.shm.processes[proc].pools[pool].conns[node]
        c.terminating_pid = c.pid
        self.session.log("LOG", f"found the pg_terminate_backend request for backend "
                                f"pid:{c.pid} on backend node:{node}",
                         "setting the connection flag")

    def _count(self, rule: str) -> None:
        """Count an outcome decided here on top of the router's own decision (SHOW
        pool_routing): read_your_writes, standby_retry."""
        counters = self.state.counters
        if counters is not None:
            counters[self._rule_index[rule]] += 1

    def simple_query_unit(self, msg: bytes, entry=None) -> Unit:
        """The unit of a simple Query; `entry`: its memo entry when the caller has it."""
        text = msg[5:-1]
        facts, kind, _, sql, _ = entry if entry is not None else memo.lookup(text)
        if sql is None and (self._text_wanted or facts.functions):
            sql = text.decode("utf-8", "replace")
        d = routed = self._decide(facts, sql)
        primary = self.primary
        balanced = d.reason in BALANCED_RULES and d.nodes[0] != primary
        commits = False
        if self.ryw is not None:
            commits = self._commits(facts, d)
            if balanced and not self._replayed(d.nodes[0]):
                d = self._to_primary(d)
                balanced = False
        state = self.state
        state.after_statement(facts, routed, self.cfg)
        if facts.kind in _FORGETS_STATEMENTS:
            self._forget_statements(facts)
        nodes = d.nodes
        self.last_nodes = nodes
        self.stats.count(kind, nodes)
        if self.logging:
            self.log.simple(nodes, sql, d.standby_sql, primary)
        u = Unit(nodes, d.reply_node, True, None,
                 primary if balanced and not state.in_transaction else None)
        if d.standby_sql is not None:
            alt = m.query(d.standby_sql)
            u.alt = {n: alt for n in nodes if n != primary}
        if commits:
            u.lsn_sink = self.ryw
        return u

    def batch_unit(self, batch):
        decisions = []          # of every Execute, and of statements parsed but not executed
        parsed_here: list[_Stmt] = []
        executed: set[int] = set()
        needed: list[_Stmt] = []
        closed_stmts = []
        kinds = []
        commits = False
        ryw = self.ryw
        primary = self.primary
        for msg in batch:
            k = msg[0]
            if k == 80:                                   # Parse
                name_end = msg.index(b"\0", 5)
                text = msg[name_end + 1:msg.index(b"\0", name_end + 1)]
                facts, kind, _, query, _ = memo.lookup(text, True)
                name = msg[5:name_end].decode("utf-8", "replace") if name_end > 5 else ""
                st = _Stmt(name, facts, kind, msg,
                           query if query is not None else text.decode("utf-8", "replace"))
                self.stmts[name] = st
                parsed_here.append(st)
            elif k == 66:                                 # Bind
                portal, sname = bind_names(msg)
                self.portals[portal] = sname
                st = self.stmts.get(sname)
                if st is not None and st not in parsed_here:
                    needed.append(st)
            elif k == 69:                                 # Execute
                portal = _cstr_at(msg, 5)[0] if msg[5] else ""
                sname = self.portals.get(portal, "")
                st = self.stmts.get(sname)
                if st is None and sname in self.state.prepared:
                    decisions.append(self._follow_sql_prepared(sname))
                elif st is not None:
                    d = routed = self._decide(st.facts, st.query)
                    if ryw is not None:
                        commits = self._commits(st.facts, d) or commits
                        if (d.reason in BALANCED_RULES and d.nodes[0] != primary
                                and not self._replayed(d.nodes[0])):
                            d = self._to_primary(d)
                    self.state.after_statement(st.facts, routed, self.cfg)
                    decisions.append(d)
                    executed.add(id(st))
                    kinds.append(st.kind)
                    self.stats.count(st.kind, d.nodes)
            elif k == 68 and msg[5] == 83:                # Describe statement
                st = self.stmts.get(_cstr_at(msg, 6)[0])
                if st is not None and st not in parsed_here:
                    needed.append(st)
            elif k == 67 and msg[5] == 83:                # Close statement
                closed_stmts.append(_cstr_at(msg, 6)[0])
        for st in parsed_here:
            if id(st) not in executed:
                decisions.append(self._decide(st.facts, st.query))
        balanced = False
        if len(decisions) == 1:
            d = decisions[0]
            nodes_t = d.nodes
            reply = d.reply_node
            balanced = len(nodes_t) == 1 and reply != primary and d.reason in BALANCED_RULES
        elif decisions:
            first = decisions[0]
            nodes = set(first.nodes)
            same = True
            for d in decisions[1:]:
                if set(d.nodes) != nodes:
                    same = False
                    nodes |= set(d.nodes)
            if same:
                reply = first.reply_node
                balanced = (len(nodes) == 1 and reply != primary
                            and all(d.reason in BALANCED_RULES for d in decisions))
            elif any(d.writes for d in decisions) and primary in nodes:
                # One batch, one implicit transaction: a write in it takes the whole batch
                # to the primary, never a write to a standby.
                nodes = {primary}
                reply = primary
            else:
                reply = primary if primary in nodes else first.reply_node
            nodes_t = tuple(sorted(nodes))
        else:
            nodes_t = self.last_nodes
            reply = primary if primary in nodes_t else nodes_t[0]
        self.last_nodes = nodes_t
        unit = Unit(nodes_t, reply, closed=False)
        if balanced and not self.state.in_transaction:
            unit.fallback = primary
        if commits and reply == primary:
            unit.lsn_sink = ryw
        prefixes = {}
        for st in needed:
            for n in nodes_t:
                if n not in st.nodes:
                    prefixes[n] = prefixes.get(n, b"") + st.parse_msg
                    st.nodes.add(n)
                    self.log.reparse(n, st.query)
                    if n == reply:
                        unit.skip_parse += 1
        where = None
        for st in parsed_here:
            st.nodes.update(nodes_t)
            if st.name:
                # the same namespace as SQL PREPARE: EXECUTE / DEALLOCATE follow it there
                where = where or self._decision(nodes_t, reply, "prepare", False)
                self.state.remember_prepared(st.name, where)
        for name in closed_stmts:
            self.stmts.pop(name, None)
            self.state.forget_prepared(name)
        if self.logging:
            self.log.batch(nodes_t, batch)
        self._retry = (parsed_here, needed, kinds)
        return unit, prefixes

    def retry_unit(self, data: bytes, batch):
        """The unit re-running the last request (a cancelled load-balanced read) on the
        primary, with what must be parsed there first."""
        p = self.primary
        self._count("standby_retry")
        self.last_nodes = (p,)
        u = Unit((p,), p)
        if batch is None:
            self.stats.count(stat_kind(data[5:17]), (p,))
            if self.cfg.log_per_node_statement:
                self.log.line(p, data[5:-1].decode("utf-8", "replace"))
            return u, None
        parsed_here, needed, kinds = self._retry
        prefix = b""
        for st in needed:
            if p not in st.nodes:
                prefix += st.parse_msg
                st.nodes.add(p)
                self.log.reparse(p, st.query)
                u.skip_parse += 1
        for st in parsed_here:
            st.nodes.add(p)
        for kind in kinds:
            self.stats.count(kind, (p,))
        self.log.batch((p,), batch)
        return u, ({p: prefix} if prefix else None)

    def _follow_sql_prepared(self, name: str):
        """Where Bind/Execute of a statement prepared by SQL PREPARE go: where it was prepared
        (counted as a write: its text is unknown here)."""
        nodes, reply = self.state.prepared[name]
        nodes = tuple(n for n in nodes if n in self.view.usable_ids) or (self.primary,)
        return self._decision(nodes, reply if reply in nodes else nodes[0], "prepared_follow",
                              True)

    def _forget_statements(self, facts) -> None:
        """SQL DEALLOCATE name / DEALLOCATE ALL / DISCARD ALL also drop protocol statements."""
        if facts.kind == "deallocate" and facts.stmt_name is not None:
            self.stmts.pop(facts.stmt_name, None)
        elif facts.kind == "deallocate" or facts.isolation_reset:
            self.stmts.clear()
            self.portals.clear()

    def function_call_unit(self) -> Unit:
        p = self.primary
        self.last_nodes = (p,)
        return Unit((p,), p)

    def ready_for_query(self, status: bytes) -> None:
        self.state.on_ready_for_query(status)
        if status == b"I":
            # portals other than held cursors end with the transaction; keep the table small
            if len(self.portals) > 64:
                self.portals.clear()

    # ---- read-your-writes ----------------------------------------------------------------

    def _commits(self, facts, d) -> bool:
        """Does this statement (about to be sent) commit a write? Tracks writes of explicit
        transactions until their COMMIT."""
        if facts.transaction is not None:       # BEGIN / COMMIT / ROLLBACK / ...
            wrote = self.txn_wrote
            self.txn_wrote = False
            return wrote and facts.kind == "commit"
        if facts.kind == "commit_prepared":
            return True
        if not d.writes or facts.kind in _NO_WAL_KINDS or self.primary not in d.nodes:
            return False
        if self.state.in_transaction or facts.multi_statement:
            self.txn_wrote = True               # (a multi-statement query may leave one open)
        return not self.state.in_transaction

    def _to_primary(self, d):
        """A load-balanced read the standby is not ready for (the router's own decision is
        what SessionRouteState tracks and counts; this outcome is counted on top)."""
        p = self.primary
        self._count("read_your_writes")
        return self._decision((p,), p, "read_your_writes", d.writes)

    def _replayed(self, node: int) -> bool:
        """Has standby `node` replayed this session's awaited commit? Asks the standby (on the
        session's own connection, when idle and outside a transaction) until
        read_your_writes_max_wait has passed."""
        ryw = self.ryw
        if ryw.pending and not self.session.relay.settle_internal():
            return False                        # a commit position on its way behind others
        target = ryw.target()
        if not target or ryw.replayed.get(node, 0) >= target:
            return True
        slot = self.session.shm.backends[node]        # sr_check's last reading
        if slot.role == S.ROLE_STANDBY and ryw.saw(node, slot.wal_lsn or None):
            return True
        conn = self._probe_conn(node)
        if conn is None:
            return False
        self.log.internal(node, REPLAY_LSN_SQL)
        deadline = time.monotonic() + ryw.max_wait
        pause = 0.0005
        while True:
            try:
                lsn = parse_lsn(run_internal(conn, REPLAY_LSN_QUERY, PROBE_TIMEOUT))
            except (OSError, EOFError, BackendError) as e:
                self.session.relay.lose(node, f"replay position probe failed: {e}")
                return False
            if ryw.saw(node, lsn):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, PROBE_MAX_PAUSE)

    def _probe_conn(self, node: int):
        """The session's connection to `node` when a probe may run on it now: nothing in
        flight, and no transaction open (a first query would fix a REPEATABLE READ snapshot)."""
        conn = self.session.conns.get(node)
        relay = self.session.relay
        if conn is None or conn.txn_status != b"I" or conn.rbuf or relay is None \
                or relay.node_q.get(node):
            return None
        return conn
