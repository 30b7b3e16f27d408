"""Per-session routing adapters: turn client requests into relay units (raw and streaming modes).

RawRouting sends everything to the main node and never parses SQL (the fast path).
StreamRouting classifies each statement once (cached) and asks pgpool.router where it goes;
extended-protocol batches follow their statements, and a named statement needed on a node it
was never parsed on is re-parsed there first (pgpool-II's parse-before-bind).
"""

from pgpool.protocol import messages as m
from pgpool.proxy.relay import Unit
from pgpool.proxy.stats import stat_kind

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
    portal, pos = _cstr_at(msg, 5)
    stmt, _ = _cstr_at(msg, pos)
    return portal, stmt


class StatementLog:
    """log_statement / log_per_node_statement output, shared by both routing modes."""

    def __init__(self, session):
        self.session = session
        self.stmt_text: dict[str, str] = {}
        self.portal_text: dict[str, str] = {}

    def _line(self, nodes, text: str) -> None:
        s = self.session
        for n in nodes:
            c = s.conns.get(n)
            s.log("LOG", f"DB node id: {n} backend pid: {c.pid if c else 0} statement: {text}")

    def simple(self, nodes, sql: str) -> None:
        cfg = self.session.cfg
        if cfg.log_statement:
            self.session.log("LOG", f"statement: {sql}")
        if cfg.log_per_node_statement:
            self._line(nodes, sql)

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
                self._line(nodes, text)


class RawRouting:
    """Raw mode: one backend (the main node) gets everything."""

    fast_path = "raw"       # the relay may bypass units for whole requests (unless logging)

    def __init__(self, session, main_node: int):
        self.session = session
        self.main = main_node
        self.nodes = (main_node,)
        self.stats = session.stats
        self.log = StatementLog(session)
        cfg = session.cfg
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
    __slots__ = ("facts", "parse_msg", "nodes", "query")

    def __init__(self, facts, parse_msg, query):
        self.facts = facts
        self.parse_msg = parse_msg
        self.nodes: set[int] = set()
        self.query = query


class StreamRouting:
    """Streaming replication: per-statement routing by pgpool.router."""

    fast_path = "route"     # whole requests going to one node are streamed by the relay

    def __init__(self, session, route_state, view):
        from pgpool import router
        from pgpool.sql.classify import classify
        self._route = router.route
        self._classify = classify
        self.session = session
        self.cfg = session.cfg
        self.state = route_state
        self.view = view
        self.stats = session.stats
        self.log = StatementLog(session)
        self.stmts: dict[str, _Stmt] = {}
        self.portals: dict[str, str] = {}
        self.last_nodes: tuple = (view.primary,)
        self.is_volatile = session.is_volatile

    def _decide(self, facts, sql=None):
        return self._route(facts, self.state, self.view, self.cfg, sql=sql,
                           is_volatile=self.is_volatile)

    def simple_query_unit(self, msg: bytes) -> Unit:
        sql = msg[5:-1].decode("utf-8", "replace")
        facts = self._classify(sql)
        d = self._decide(facts, sql)
        self.state.after_statement(facts, d, self.cfg)
        nodes = d.nodes
        self.last_nodes = nodes
        self.stats.count(stat_kind(msg[5:-1]), nodes)
        self.log.simple(nodes, sql)
        u = Unit(nodes, d.reply_node)
        if d.plain_begin_for_standbys:
            plain = m.query("BEGIN")
            u.alt = {n: plain for n in nodes if n != self.view.primary}
        return u

    def batch_unit(self, batch):
        decisions = []
        parsed_here = []
        needed: list[_Stmt] = []
        closed_stmts = []
        for msg in batch:
            k = msg[0]
            if k == 80:                                   # Parse
                name, query = parse_message_query(msg)
                facts = self._classify(query)
                st = _Stmt(facts, msg, query)
                self.stmts[name] = st
                parsed_here.append(st)
                decisions.append(self._decide(facts, query))
            elif k == 66:                                 # Bind
                portal, sname = bind_names(msg)
                self.portals[portal] = sname
                st = self.stmts.get(sname)
                if st is not None and st not in parsed_here:
                    needed.append(st)
            elif k == 69:                                 # Execute
                portal, _ = _cstr_at(msg, 5)
                st = self.stmts.get(self.portals.get(portal, ""))
                if st is not None:
                    d = self._decide(st.facts, st.query)
                    self.state.after_statement(st.facts, d, self.cfg)
                    decisions.append(d)
                    self.stats.count(stat_kind(st.query.encode()[:12]), tuple(d.nodes))
            elif k == 68 and msg[5] == 83:                # Describe statement
                st = self.stmts.get(_cstr_at(msg, 6)[0])
                if st is not None and st not in parsed_here:
                    needed.append(st)
            elif k == 67 and msg[5] == 83:                # Close statement
                closed_stmts.append(_cstr_at(msg, 6)[0])
        if decisions:
            first = decisions[0]
            nodes = set(first.nodes)
            same = True
            for d in decisions[1:]:
                if set(d.nodes) != nodes:
                    same = False
                    nodes |= set(d.nodes)
            primary = self.view.primary
            if same:
                reply = first.reply_node
            elif any(d.writes for d in decisions) and primary in nodes:
                # One batch, one implicit transaction: a write in it takes the whole batch
                # to the primary, never a write to a standby.
                nodes = {primary}
                reply = primary
            else:
                reply = primary if primary in nodes else first.reply_node
            for d in decisions:
                    nodes_t = tuple(sorted(nodes))
        else:
            nodes_t = self.last_nodes
            reply = self.view.primary if self.view.primary in nodes_t else nodes_t[0]
        self.last_nodes = nodes_t
        unit = Unit(nodes_t, reply, closed=False)
        prefixes = {}
        for st in needed:
            for n in nodes_t:
                if n not in st.nodes:
                    prefixes[n] = prefixes.get(n, b"") + st.parse_msg
                    st.nodes.add(n)
                    if n == reply:
                        unit.skip_parse += 1
        for st in parsed_here:
            st.nodes.update(nodes_t)
        for name in closed_stmts:
            self.stmts.pop(name, None)
        self.log.batch(nodes_t, batch)
        return unit, prefixes

    def function_call_unit(self) -> Unit:
        p = self.view.primary
        self.last_nodes = (p,)
        return Unit((p,), p)

    def ready_for_query(self, status: bytes) -> None:
        self.state.on_ready_for_query(status)
        if status == b"I":
            # portals other than held cursors end with the transaction; keep the table small
            if len(self.portals) > 64:
                self.portals.clear()

