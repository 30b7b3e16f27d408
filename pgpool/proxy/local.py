"""pgpool's own commands answered without a backend: SHOW pool_*, PGPOOL SHOW/SET/RESET and
PGPOOL EXPLAIN ROUTE.

Each command is a row in a table; the answer is RowDescription (type OID 0, text) + DataRows +
CommandComplete + ReadyForQuery with the session's real transaction status.
"""

import re
import time

from pgpool import POOL_CODENAME, POOL_VERSION
from pgpool.config.show import replication_delay_text
from pgpool.protocol import messages as m
from pgpool.state import probe
from pgpool.state import shm as S

_SHOW_RE = re.compile(r"^\s*show\s+(pool_[a-z_]+)\s*;?\s*$", re.I | re.S)
_EXPLAIN_ROUTE_RE = re.compile(r"^\s*pgpool\s+explain\s+route(?:\s+(.*?))?\s*$", re.I | re.S)


def _ts(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


class LocalResult:
    """The answer to one of pgpool's own commands: a result set, a bare tag, or an error."""

    __slots__ = ("columns", "rows", "tag", "error")

    def __init__(self, columns=None, rows=None, tag=None, error=None):
        self.columns = columns
        self.rows = rows or []
        self.tag = tag if tag is not None else f"SELECT {len(self.rows)}"
        self.error = error          # an ErrorResponse message (bytes)

    def description(self) -> bytes:
        """RowDescription, or NoData for a command without a result set."""
        return m.row_description(self.columns) if self.columns else m.no_data()

    def execution(self) -> bytes:
        """What Execute (or the body of a simple Query) sends: rows + CommandComplete."""
        if self.error is not None:
            return self.error
        return b"".join(m.data_row(r) for r in self.rows) + m.command_complete(self.tag)

    def simple(self, status: bytes) -> bytes:
        """The whole simple-query answer; ReadyForQuery carries the session's real status
        (pgpool's own errors do not touch the backends' transaction)."""
        head = m.row_description(self.columns) if self.columns and self.error is None else b""
        return head + self.execution() + m.ready_for_query(status)


def _reply(columns, rows, tag=None) -> LocalResult:
    return LocalResult(columns, rows, tag)


class LocalCommands:
    def __init__(self, session):
        self.session = session

    def recognizes(self, sql: str) -> bool:
        """True if `sql` is one of pgpool's own commands (without running it)."""
        mt = _SHOW_RE.match(sql)
        if mt:
            return mt.group(1).lower() in SHOW_COMMANDS
        if _EXPLAIN_ROUTE_RE.match(sql):
            return True
        from pgpool.config import show as cfgshow
        return cfgshow.parse_pgpool_command(sql) is not None

    def handle(self, sql: str) -> LocalResult | None:
        """The answer to one of pgpool's own commands, or None to pass the query on."""
        mt = _SHOW_RE.match(sql)
        if mt:
            fn = SHOW_COMMANDS.get(mt.group(1).lower())
            return fn(self.session) if fn else None
        mt = _EXPLAIN_ROUTE_RE.match(sql)
        if mt:
            return explain_route(self.session, mt.group(1) or "")
        from pgpool.config import show as cfgshow
        cmd = cfgshow.parse_pgpool_command(sql)
        if cmd is None:
            return None
        return pgpool_command(self.session, cmd)


# ---- SHOW pool_* ------------------------------------------------------------------------

def show_pool_version(session):
    return _reply(["pool_version"], [[f"{POOL_VERSION} ({POOL_CODENAME})"]])


def _select_counts(shm, n: int) -> int:
    return sum(p.select_cnt[n] for p in shm.processes)


def _node_rows(session):
    """(node id, BackendConfig, shm slot) for every configured backend."""
    shm = session.shm
    return [(i, b, shm.backends[i]) for i, b in enumerate(session.cfg.backends)]


def _role_name(session, i: int) -> str:
    view = session.view
    if view.clustering_mode == "streaming_replication":
        return "primary" if i == view.primary_node_id else "standby"
    return "main" if i == view.main_node_id else "replica"


def _status_name(b) -> str:
    if b.status == S.CON_DOWN and b.quarantine:
        return "quarantine"
    return S.STATUS_NAMES.get(b.status, "unused")


def show_pool_nodes(session):
    cfg = session.cfg
    shm = session.shm
    rows = []
    total = sum(bc.weight for bc in cfg.backends) or 1.0
    lb = session.route_state.load_balance_node if session.route_state is not None \
        else session.main_node
    for i, bc, b in _node_rows(session):
        role = _role_name(session, i)
        pg_status = probe.pg_status(cfg, i)
        pg_role = probe.pg_role(cfg, i, role, pg_status)
        delay = "0" if role == "primary" else \
            replication_delay_text(b.standby_delay, b.standby_delay_by_time)
        rows.append([str(i), bc.hostname, str(bc.port), _status_name(b), pg_status,
                     f"{bc.weight / total:f}", role, pg_role, str(_select_counts(shm, i)),
                     "true" if i == lb else "false", delay,
                     b.replication_state.decode(), b.replication_sync_state.decode(),
                     _ts(b.status_changed_time)])
    return _reply(["node_id", "hostname", "port", "status", "pg_status", "lb_weight", "role",
                   "pg_role", "select_cnt", "load_balance_node", "replication_delay",
                   "replication_state", "replication_sync_state", "last_status_change"], rows)


def _start_time(cfg, p) -> str:
    text = _ts(p.start_time)
    if cfg.child_life_time > 0 and not p.connected and p.client_connection_count > 0:
        left = max(0, cfg.child_life_time - int(time.time() - (p.last_activity or p.start_time)))
        text += f" ({left // 60}:{left % 60:02d} before process restarting)"
    return text


def show_pool_processes(session):
    cfg = session.cfg
    rows = []
    for p in session.shm.processes:
        if not p.pid:
            continue
        pool = p.pools[p.current_pool] if p.current_pool >= 0 else None
        if pool is None:
            pool = next((x for x in p.pools if x.in_use), None)
        status = S.PROCESS_STATUS_NAMES.get(p.status, "")
        if pool is not None:
            rows.append([str(p.pid), _start_time(cfg, p), str(p.client_connection_count),
                         pool.database.decode(), pool.user.decode(), _ts(pool.create_time),
                         str(pool.counter), status])
        else:
            rows.append([str(p.pid), _start_time(cfg, p), str(p.client_connection_count),
                         "", "", "", "", status])
    return _reply(["pool_pid", "start_time", "client_connection_count", "database", "username",
                   "backend_connection_time", "pool_counter", "status"], rows)


def _idle_duration(cfg, p, pool) -> str:
    if not p.connected or p.status not in (S.PS_IDLE, S.PS_IDLE_IN_TRANSACTION):
        return "0"
    idle = int(time.time() - (p.last_activity or time.time()))
    if cfg.client_idle_limit > 0:
        left = max(0, cfg.client_idle_limit - idle)
        return f"{idle} ({left // 60}:{left % 60:02d} before client disconnected)"
    return str(idle)


def show_pool_pools(session):
    cfg = session.cfg
    nb = len(cfg.backends)
    rows = []
    for p in session.shm.processes:
        if not p.pid:
            continue
        status = S.PROCESS_STATUS_NAMES.get(p.status, "")
        for pool_id in range(session.shm.max_pool):
            pool = p.pools[pool_id]
            for node in range(nb):
                c = pool.conns[node]
                used = pool.in_use and c.connected
                rows.append([str(p.pid), _start_time(cfg, p), str(p.client_connection_count),
                             str(pool_id), str(node),
                             pool.database.decode() if used else "",
                             pool.user.decode() if used else "",
                             _ts(pool.create_time) if used else "",
                             _ts(pool.client_connection_time) if used else "",
                             _ts(pool.client_disconnection_time) if used else "",
                             _idle_duration(cfg, p, pool) if used and
                             p.current_pool == pool_id else "0",
                             str(pool.major) if used else "0",
                             str(pool.minor) if used else "0",
                             str(pool.counter) if used else "0",
                             str(c.pid) if used else "0",
                             "1" if used and p.current_pool == pool_id and p.connected else "0",
                             status])
    return _reply(["pool_pid", "start_time", "client_connection_count", "pool_id", "backend_id",
                   "database", "username", "backend_connection_time", "client_connection_time",
                   "client_disconnection_time", "client_idle_duration", "majorversion",
                   "minorversion", "pool_counter", "pool_backendpid", "pool_connected",
                   "status"], rows)


def show_pool_backend_stats(session):
    shm = session.shm
    rows = []
    fields = ("select_cnt", "insert_cnt", "update_cnt", "delete_cnt", "ddl_cnt", "other_cnt",
              "panic_cnt", "fatal_cnt", "error_cnt")
    for i, bc, b in _node_rows(session):
        counts = [str(sum(getattr(p, f)[i] for p in shm.processes)) for f in fields]
        rows.append([str(i), bc.hostname, str(bc.port), _status_name(b),
                     _role_name(session, i)] + counts)
    return _reply(["node_id", "hostname", "port", "status", "role"] + list(fields), rows)


def show_pool_health_check_stats(session):
    from pgpool.state import health_stats
    shm = session.shm
    rows = [health_stats.row(i, bc.hostname, bc.port, _status_name(b), _role_name(session, i),
                             b.status_changed_time, shm.health[i], bc.health_check["period"])
            for i, bc, b in _node_rows(session)]
    return _reply(list(health_stats.COLUMNS), rows)


def show_pool_status(session):
    from pgpool.config import show as cfgshow
    shm = session.shm
    status = [_status_name(shm.backends[i]) for i in range(len(session.cfg.backends))]
    delay = [shm.backends[i].standby_delay for i in range(len(session.cfg.backends))]
    cols, rows = cfgshow.pool_status_rows(session.cfg, backend_status=status,
                                          standby_delay=delay)
    return _reply(cols, rows)


def show_pool_routing(session):
    """Routing decisions per rule, summed over every worker (shared-memory route_cnt)."""
    from pgpool.router import RULES
    procs = session.shm.processes
    rows = [[r.id, r.target, r.description, str(sum(p.route_cnt[i] for p in procs))]
            for i, r in enumerate(RULES)]
    return _reply(["rule", "target", "description", "count"], rows)


SHOW_COMMANDS = {
    "pool_version": show_pool_version,
    "pool_nodes": show_pool_nodes,
    "pool_processes": show_pool_processes,
    "pool_pools": show_pool_pools,
    "pool_status": show_pool_status,
    "pool_backend_stats": show_pool_backend_stats,
    "pool_routing": show_pool_routing,
    "pool_health_check_stats": show_pool_health_check_stats,
}


# ---- PGPOOL SHOW / SET / RESET ---------------------------------------------------------

def pgpool_command(session, cmd) -> LocalResult:
    from pgpool.config import show as cfgshow
    verb, name, value = cmd
    try:
        if verb == "show":
            cols, rows = cfgshow.pgpool_show(session.cfg, name, session.pgpool_overrides)
            return LocalResult(cols, rows)
        if verb == "set":
            new = cfgshow.pgpool_set(session.cfg, session.pgpool_overrides, name, value)
            tag = "SET"
        else:
            new = cfgshow.pgpool_reset(session.cfg, session.pgpool_overrides, name)
            tag = "RESET" if name == "all" else "SET"     # as pgpool-II 4.3 tags them
    except cfgshow.CommandError as e:
        return LocalResult(error=m.error_response("ERROR", e.sqlstate, e.message, e.detail,
                                                  e.hint))
    session.apply_overrides(new)
    return LocalResult(tag=tag)


# ---- PGPOOL EXPLAIN ROUTE ---------------------------------------------------------------

_EXPLAIN_COLUMNS = ["node_id", "hostname", "port", "status", "role", "load_balance_node",
                    "would_run", "replies", "rule", "description"]
_PGPOOL_COMMAND = ("pgpool_command", "SHOW pool_*, PGPOOL ...: answered by pgpool itself")


def _pid_node(session, pid: int) -> int | None:
    found = session.shm.find_backend_pid(pid)
    return None if found is None else found[2]


def explain_route(session, statement: str) -> LocalResult:
    """PGPOOL EXPLAIN ROUTE <statement>: the node(s) the statement would go to in this session
    now, and the rule that decides it, without running it or changing the session's routing
    state (catalog lookups it needs are made and cached as for a real statement)."""
    from pgpool import router
    from pgpool.sql.classify import classify
    state = session.route_state
    if state is None:                   # raw mode keeps no routing state
        state = router.SessionRouteState(session.startup.database,
                                         session.startup.application_name)
    probe = state.copy()
    if LocalCommands(session).recognizes(statement):
        nodes, reply, (rule, description) = (), None, _PGPOOL_COMMAND
    else:
        try:
            d = router.route(classify(statement), probe, session.view, session.cfg,
                             sql=statement, backend_pid_node=lambda pid: _pid_node(session, pid))
        except router.NoUsableNode as e:
            return LocalResult(error=m.error_response("ERROR", "XX000", str(e)))
        except NotImplementedError as e:
            return LocalResult(error=m.error_response("ERROR", "0A000", str(e)))
        nodes, reply, rule = d.nodes, d.reply_node, d.reason
        description = router.RULES[router.RULE_INDEX[rule]].description

    def flag(value: bool) -> str:
        return "true" if value else "false"

    rows = [[str(i), bc.hostname, str(bc.port), _status_name(b), _role_name(session, i),
             flag(i == probe.load_balance_node), flag(i in nodes), flag(i == reply),
             rule, description]
            for i, bc, b in _node_rows(session)]
    return _reply(_EXPLAIN_COLUMNS, rows)
