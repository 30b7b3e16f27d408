"""The streaming-replication check worker (sr_check_worker): replication delay, state, false primaries.

Every `sr_check_period` seconds (streaming replication mode only, skipped while a failover is
switching or a follow_primary_command runs) it logs in as `sr_check_user` to each valid node,
reads the primary's current WAL position and `pg_stat_replication`, each standby's replay
position, and writes into shared memory what SHOW pool_nodes reports as replication_delay,
replication_state and replication_sync_state, plus each node's WAL position and when it was read
(wal_lsn, lsn_time: read-your-writes routing waits on them; probe_replay_lsns() refreshes them on
demand). replication_state/sync_state are filled for every configured standby pg_stat_replication
names, down ones included: auto_failback re-attaches a down standby that still streams.

With delay_threshold_by_time > 0 (pgpool-II 4.4) a standby's delay is its
pg_stat_replication.replay_lag on the primary (the row whose application_name is the standby's
backend_application_name), stored in microseconds with standby_delay_by_time set; routing,
prefer_lower_delay_standby and log_standby_delay then compare it with delay_threshold_by_time
and ignore delay_threshold. A standby without a row keeps its last delay (0 after the unit
changed), as in pgpool-II.

With `detach_false_primary` it also asks every valid node pg_is_in_recovery() and each standby's
pg_stat_wal_receiver, decides which primaries are false (false_primaries(), pgpool-II's
verify_backend_node_status) and asks the parent to detach them (REQ_NODE_DOWN with
REQ_FLAG_FALSE_PRIMARY).

Deliberate differences from pgpool-II 4.3.5 (pool_worker_child.c, pgpool_main.c):
- an unreachable node is skipped (its state stays empty, its delay unchanged) instead of aborting
  the whole check with "Failed to check replication time lag"; it is logged once per failure streak
  (false primaries are still only judged when every valid node answered, as 4.3.5 does);
- LSNs are converted exactly (high 32 bits << 32 | low 32 bits); 4.3.5 still uses the pre-9.3
  formula that skips a 16 MB segment per xlogid, which only matters across a 4 GB boundary;
- a standby with an empty backend_application_name never matches a pg_stat_replication row;
- a standby's WAL receiver that connects over a Unix socket counts as connected to a primary
  configured as localhost / 127.0.0.1 / ::1 with that port (4.3.5 accepts only the reverse:
  a socket-path backend_hostname and a receiver connected to "localhost");
- PostgreSQL 10 or later is assumed (pg_current_wal_lsn / pg_last_wal_replay_lsn,
  pg_stat_wal_receiver, replay_lag).
Against pgpool-II 4.4: delay_threshold_by_time is in seconds, as in 4.4 (pgpool-II 4.5 and
later take milliseconds; a value written with a unit, '2s', means the same in both), and the
logged seconds are exact (4.4 prints a single-precision float).
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass, field

from pgpool import log
from pgpool.auth.pool_passwd import config_user_password
from pgpool.config.show import seconds_text
from pgpool.ha import requests as node_requests
from pgpool.proxy.backend import BackendError
from pgpool.state import probe
from pgpool.state import shm as S

PRIMARY_LSN_QUERY = "SELECT pg_catalog.pg_current_wal_lsn()"
STANDBY_LSN_QUERY = "SELECT pg_catalog.pg_last_wal_replay_lsn()"
# replay_lag in microseconds (NULL once a caught-up standby has been idle for a while)
STAT_REPLICATION_QUERY = ("SELECT application_name, state, sync_state, "
                          "(EXTRACT(EPOCH FROM replay_lag) * 1000000)::bigint "
                          "FROM pg_catalog.pg_stat_replication")
RECOVERY_QUERY = "SELECT pg_catalog.pg_is_in_recovery()"
WAL_RECEIVER_QUERY = "SELECT status, conninfo FROM pg_catalog.pg_stat_wal_receiver"

IO_TIMEOUT = 5.0                 # seconds for connecting and for each query
PROBE_TIMEOUT = 1.0              # the same for an on-demand probe_replay_lsns()
IDLE_WAIT = 30                   # seconds between looks at the config while sr_check_period = 0
STATE_FIELD_MAX = 31             # replication_state / replication_sync_state: char[32] with NUL
VALID_STATUSES = (S.CON_UP, S.CON_CONNECT_WAIT)    # VALID_BACKEND() in pgpool-II
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_PORT = 5432

# log_standby_delay -> does a delay of `lag` bytes get logged, given delay_threshold?
LOG_RULES = {
    "none": lambda lag, threshold: False,
    "always": lambda lag, threshold: lag > 0,
    "if_over_threshold": lambda lag, threshold: threshold > 0 and lag > threshold,
}


# ---- pure helpers ---------------------------------------------------------------------------

def lsn_to_int(text: str) -> int:
    """A WAL position as PostgreSQL prints it ("16/B374D848") -> bytes since the start of WAL.
    ValueError if the text is not two hexadecimal halves separated by a slash."""
    high, sep, low = text.strip().partition("/")
    if not sep or not high or not low:
        raise ValueError(f"wrong log location format: {text}")
    hi, lo = int(high, 16), int(low, 16)
    if hi < 0 or lo < 0 or hi > 0xFFFFFFFF or lo > 0xFFFFFFFF:
        raise ValueError(f"wrong log location format: {text}")
    return (hi << 32) | lo


def _field(value: str | None) -> str:
    return (value or "").encode()[:STATE_FIELD_MAX].decode(errors="ignore")


def replication_rows_to_states(rows, backends, primary_node_id: int | None = None
                               ) -> dict[int, tuple[str, str]]:
    """pg_stat_replication rows (application_name, state, sync_state) -> {node id: (state,
    sync_state)} for every non-primary backend whose application_name names a row (the last
    matching row wins, as in pgpool-II). NULL columns (sr_check_user without the privilege to
    see them) become empty strings; values are cut to what shared memory holds."""
    by_name = {row[0]: (_field(row[1]), _field(row[2])) for row in rows if row[0]}
    return {b.node_id: by_name[b.application_name] for b in backends
            if b.node_id != primary_node_id and b.application_name in by_name}


def delays(primary_lsn: int | None, standby_replay_lsns: dict) -> dict[int, int]:
    """Byte lag of each standby behind the primary; a standby that reports no replay position
    (NULL) counts from 0, a standby ahead of the primary's reading has no lag."""
    base = primary_lsn or 0
    return {node: max(0, base - (lsn or 0)) for node, lsn in standby_replay_lsns.items()}


def replay_lags(rows, backends, primary_node_id: int | None = None) -> dict[int, int]:
    """pg_stat_replication rows (application_name, state, sync_state, replay_lag in
    microseconds) -> {node id: replay lag} for every non-primary backend whose application_name
    names a row (the last matching row wins); a NULL replay_lag (caught up and idle) is 0."""
    by_name = {row[0]: max(0, int(row[3] or 0)) for row in rows if row[0]}
    return {b.node_id: by_name[b.application_name] for b in backends
            if b.node_id != primary_node_id and b.application_name in by_name}


def log_delay_lines(node_delays: dict, primary_node_id: int, log_standby_delay: str,
                    delay_threshold: int, delay_threshold_by_time: int = 0) -> list[str]:
    """The LOG messages pgpool-II writes for these delays under log_standby_delay: bytes
    against delay_threshold (4.3's wording), or, with delay_threshold_by_time (seconds),
    microseconds against it (4.4's wording)."""
    rule = LOG_RULES[log_standby_delay]
    if delay_threshold_by_time > 0:
        limit = delay_threshold_by_time * 1_000_000
        return [f"Replication of node: {node} is behind {seconds_text(lag)} second(s) from the "
                f"primary server (node: {primary_node_id})"
                for node, lag in sorted(node_delays.items()) if rule(lag, limit)]
    return [f"Replication of node:{node} is behind {lag} bytes from the primary server "
            f"(node:{primary_node_id})"
            for node, lag in sorted(node_delays.items()) if rule(lag, delay_threshold)]


def parse_conninfo(text: str) -> dict[str, str]:
    """libpq "key=value key='quoted \\' value'" text -> {key: value}. ValueError when a pair
    has no "=" or a quote is not closed."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return out
        eq = text.find("=", i)
        if eq < 0:
            raise ValueError(f'missing "=" after "{text[i:]}" in connection info string')
        key = text[i:eq].strip()
        i = eq + 1
        while i < n and text[i].isspace():
            i += 1
        value = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted string in connection info string")
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                elif ch == "'":
                    i += 1
                    break
                else:
                    value.append(ch)
                    i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
        out[key] = "".join(value)


def conninfo_target(conninfo: str) -> tuple[str, int] | None:
    """(host, port) a WAL receiver's conninfo connects to (hostaddr wins over host, as in
    libpq; "" = the default socket directory); None if it cannot be read."""
    try:
        params = parse_conninfo(conninfo)
        port = int(params.get("port") or DEFAULT_PORT)
    except ValueError:
        return None
    return params.get("hostaddr") or params.get("host", ""), port


def _is_socket(host: str) -> bool:
    return host == "" or host.startswith("/")


def connects_to(backend_host: str, backend_port: int, host: str, port: int) -> bool:
    """Does a WAL receiver connected to host:port reach the backend configured as
    backend_host:backend_port? Same port, and the same host name, or both on this machine
    (a Unix socket, localhost, 127.0.0.1, ::1); two socket directories must be the same one
    (or one of them the default)."""
    if port != backend_port:
        return False
    if backend_host == host:
        return True
    if _is_socket(backend_host) and _is_socket(host):
        return backend_host == "" or host == ""
    local = (*LOCAL_HOSTS, "")
    return (_is_socket(backend_host) or backend_host in local) and \
        (_is_socket(host) or host in local)


def false_primaries(in_recovery: dict[int, bool], receivers: dict[int, tuple | None],
                    addresses: dict[int, tuple[str, int]]) -> tuple[list[int], list[str]]:
    """Which primaries are false, by pgpool-II's rules for detach_false_primary
    (verify_backend_node_status): (node ids to detach, LOG lines).

    `in_recovery`: pg_is_in_recovery() of every valid node; `receivers`: each standby's
    pg_stat_wal_receiver row (status, conninfo), None without a row; `addresses`: node ->
    (backend_hostname, backend_port).
    - no primary, or one primary and no standby: nothing is false;
    - several primaries and no standby: the lowest node id stays, the others are false;
    - with standbys: a primary every streaming standby's WAL receiver connects to is the true
      one; when there is one, the primaries that do not own every standby are false (a receiver
      that is not streaming, or whose row or columns are missing, counts for no primary)."""
    primaries = sorted(n for n, r in in_recovery.items() if r is False)
    standbys = sorted(n for n, r in in_recovery.items() if r is True)
    if not primaries:
        return [], []
    if not standbys:
        return primaries[1:], []
    targets = {}
    for j in standbys:
        row = receivers.get(j)
        if row is None or row[0] != "streaming" or row[1] is None:
            continue
        target = conninfo_target(row[1])
        if target is not None:
            targets[j] = target
    lines, owned = [], {}
    for i in primaries:
        owned[i] = 0
        for j, (host, port) in targets.items():
            if connects_to(*addresses[i], host, port):
                owned[i] += 1
            else:
                lines.append(f"verify_backend_node_status: primary {i} does not connect to "
                             f"standby {j}")
    true_primary = next((i for i in primaries if owned[i] == len(standbys)), None)
    invalid = []
    for i in primaries:
        if owned[i] < len(standbys):
            lines.append(f"verify_backend_node_status: primary {i} owns only {owned[i]} "
                         f"standbys out of {len(standbys)}")
            if true_primary is not None:
                invalid.append(i)
    return invalid, lines


# ---- asking the nodes ---------------------------------------------------------------------

def ask(cfg, node: int, password: str | None, queries: list[str], failing: set | None = None,
        timeout: float = IO_TIMEOUT):
    """Rows of each query on `node`, or None when the node cannot be reached or a query fails.
    Failures are logged once per streak of `node` in `failing` (at DEBUG1 without it)."""
    b = cfg.backends[node]

    def report(message: str, **kw) -> None:
        if failing is None:
            log.debug(message, **kw)
        elif node not in failing:
            failing.add(node)
            log.log("LOG", message, **kw)

    try:
        conn = probe.connect_as(cfg, node, cfg.sr_check_user, password, cfg.sr_check_database,
                                timeout)
    except (OSError, EOFError, BackendError) as e:
        report("failed to make persistent db connection",
               detail=f'connection to host:"{b.hostname}:{b.port}" failed: {e}',
               hint="check sr_check_user and sr_check_password")
        return None
    try:
        answers = []
        for sql in queries:
            rows, errors = conn.simple_query(sql)
            if errors:
                raise BackendError(node, errors[0].get("M", "query failed"))
            answers.append(rows)
    except (OSError, EOFError, BackendError) as e:
        report("get_query_result: do_query failed", detail=f"node id ({node}): {e}")
        return None
    finally:
        conn.close()
    if failing is not None:
        failing.discard(node)
    return answers


def _first_lsn(rows) -> int | None:
    return lsn_to_int(rows[0][0]) if rows and rows[0][0] is not None else None


def _first_value(rows):
    return rows[0][0] if rows else None


def _store_lsn(shm, node: int, lsn: int | None, when: float) -> None:
    """Keep a WAL position reading (a NULL one - no primary position, nothing replayed yet -
    leaves the last reading in place)."""
    if lsn is not None:
        slot = shm.backends[node]
        slot.wal_lsn = lsn
        slot.lsn_time = when


@dataclass
class Readings:
    """What one round learnt from the nodes."""
    primary: int | None                       # the primary asked, None if none could be
    lsns: dict = field(default_factory=dict)  # node -> (LSN or None, time.time() of reading)
    stat_rows: list = field(default_factory=list)
    in_recovery: dict = field(default_factory=dict)
    receivers: dict = field(default_factory=dict)
    complete: bool = True                     # every valid node answered


def _queries(is_primary: bool, detach: bool) -> list[str]:
    base = [PRIMARY_LSN_QUERY, STAT_REPLICATION_QUERY] if is_primary else [STANDBY_LSN_QUERY]
    return base + ([RECOVERY_QUERY, WAL_RECEIVER_QUERY] if detach else [])


def read_nodes(cfg, shm, password, failing: set) -> Readings | None:
    """Ask every valid node what the round needs (the primary first: a caught-up standby then
    shows no lag, not the WAL written between the readings). None when there is nothing to do."""
    primary = shm.header.primary_node_id
    valid = [b.node_id for b in cfg.backends if shm.backends[b.node_id].status in VALID_STATUSES]
    if primary not in valid:
        primary = None
    detach = cfg.detach_false_primary
    if len(cfg.backends) <= 1 or (primary is None and not detach):
        return None
    readings = Readings(primary)
    order = ([primary] if primary is not None else []) + [n for n in valid if n != primary]
    for node in order:
        is_primary = node == primary
        answer = ask(cfg, node, password, _queries(is_primary, detach), failing)
        if answer is None:
            readings.complete = False
            if is_primary:
                readings.primary = None
            continue
        readings.lsns[node] = (_first_lsn(answer[0]), time.time())
        if is_primary:
            readings.stat_rows = answer[1]
        if detach:
            recovery = _first_value(answer[-2])
            if recovery in ("t", "f"):
                readings.in_recovery[node] = recovery == "t"
            else:
                readings.complete = False
            rows = answer[-1]
            readings.receivers[node] = tuple(rows[0][:2]) if rows else None
    return readings


# ---- node requests --------------------------------------------------------------------------

def request_node(shm, kind: int, node: int, flags: int) -> bool:
    """Ask the parent for a node operation, logged as pgpool-II's degenerate_backend_set /
    send_failback_request log it. False if the request queue is full."""
    what = "degenerate backend" if kind == S.REQ_NODE_DOWN else "failback"
    log.log("LOG", f"received {what} request for node_id: {node} from pid [{os.getpid()}]")
    return node_requests.register(shm, kind, node, flags)


def _detach_false_primaries(cfg, shm, readings: Readings) -> None:
    addresses = {b.node_id: (b.hostname, b.port) for b in cfg.backends}
    invalid, lines = false_primaries(readings.in_recovery, readings.receivers, addresses)
    for line in lines:
        log.log("LOG", line)
    for node in invalid:
        log.log("LOG", f"pgpool_worker_child: invalid node found {node}")
        if not cfg.backends[node].allow_to_failover:
            log.log("LOG", f"degenerate backend request for node_id: {node} from pid "
                           f"[{os.getpid()}] is canceled because failover is disallowed on the node")
            continue
        request_node(shm, S.REQ_NODE_DOWN, node, S.REQ_FLAG_FALSE_PRIMARY)


# ---- one check ------------------------------------------------------------------------------

def check_once(cfg, shm, passwd=None, failing: set | None = None) -> None:
    """One round of the check (streaming replication mode, sr_check_period > 0). Writes
    standby_delay (0 on the primary; bytes, or with delay_threshold_by_time the replay lag in
    microseconds, standby_delay_by_time telling which), replication_state and
    replication_sync_state of every configured node and the WAL position of every node that answered into shared memory, bumps
    the generation, and with detach_false_primary asks the parent to detach false primaries.
    Never raises; `passwd` is the pool_passwd file consulted when sr_check_password is empty;
    `failing` (node ids whose last attempt failed) keeps failure logs to one per streak."""
    if cfg.clustering_mode != "streaming_replication" or cfg.sr_check_period <= 0:
        return
    failing = set() if failing is None else failing
    try:
        password = config_user_password(cfg.sr_check_user, cfg.sr_check_password, passwd)
        readings = read_nodes(cfg, shm, password, failing)
    except Exception as e:   # noqa: BLE001 - never raise (bad LSN text, a bug)
        log.log("ERROR", "Failed to check replication time lag", detail=str(e),
                hint="check sr_check_user and sr_check_password")
        readings = None
    primary = readings.primary if readings is not None else None
    by_time = int(cfg.delay_threshold_by_time > 0)
    lags, states = {}, {}
    if primary is not None:
        if by_time:
            lags = replay_lags(readings.stat_rows, cfg.backends, primary)
        else:
            replay = {n: lsn for n, (lsn, _) in readings.lsns.items() if n != primary}
            lags = delays(readings.lsns[primary][0], replay)
        states = replication_rows_to_states(readings.stat_rows, cfg.backends, primary)
    for b in cfg.backends:
        slot = shm.backends[b.node_id]
        state, sync_state = states.get(b.node_id, ("", ""))
        slot.replication_state = state.encode()
        slot.replication_sync_state = sync_state.encode()
        if b.node_id == primary:
            slot.standby_delay, slot.standby_delay_by_time = 0, by_time
        elif b.node_id in lags:
            slot.standby_delay, slot.standby_delay_by_time = lags[b.node_id], by_time
        elif primary is not None and slot.standby_delay_by_time != by_time:
            slot.standby_delay, slot.standby_delay_by_time = 0, by_time   # stale, other unit
        if readings is not None and b.node_id in readings.lsns:
            _store_lsn(shm, b.node_id, *readings.lsns[b.node_id])
    shm.bump()
    if primary is not None:
        for line in log_delay_lines(lags, primary, cfg.log_standby_delay, cfg.delay_threshold,
                                    cfg.delay_threshold_by_time):
            log.log("LOG", line)
    if cfg.detach_false_primary and readings is not None and readings.complete:
        _detach_false_primaries(cfg, shm, readings)


def probe_replay_lsns(cfg, shm, nodes, passwd=None, timeout: float = PROBE_TIMEOUT) -> None:
    """One on-demand reading of the WAL position of `nodes` (the primary's current LSN, a
    standby's replay LSN) into shm.backends[n].wal_lsn / lsn_time, each node asked with
    `timeout`. A node that does not answer keeps its last reading (failures are logged at
    DEBUG1). Never raises."""
    try:
        password = config_user_password(cfg.sr_check_user, cfg.sr_check_password, passwd)
        primary = shm.header.primary_node_id
        for node in nodes:
            query = PRIMARY_LSN_QUERY if node == primary else STANDBY_LSN_QUERY
            answer = ask(cfg, node, password, [query], None, timeout)
            if answer is not None:
                _store_lsn(shm, node, _first_lsn(answer[0]), time.time())
    except Exception as e:   # noqa: BLE001 - a caller on the data path must not fail here
        log.debug("probing WAL positions failed", detail=str(e))


# ---- the process ----------------------------------------------------------------------------

class SignalFlags:
    """What the signal handlers asked for; acted on between checks."""

    def __init__(self):
        self.reload = False
        self.restart = False

    def on_exit(self, signum, frame):
        raise SystemExit(0)

    def on_hup(self, signum, frame):
        self.reload = True

    def on_usr1(self, signum, frame):
        self.restart = True


def install_signals(flags: SignalFlags) -> int:
    """Handlers as pgpool-II's worker and health-check processes have them; returns the read end
    of the wakeup pipe that every signal writes to (so a wait ends as soon as one arrives)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, flags.on_exit)
    signal.signal(signal.SIGHUP, flags.on_hup)
    signal.signal(signal.SIGUSR1, flags.on_usr1)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    return wake_r


def wait_or_signal(wake_r: int, seconds: float) -> None:
    """Sleep up to `seconds`, less if a signal arrives."""
    ready, _, _ = select.select([wake_r], [], [], seconds)
    if ready:
        try:
            while os.read(wake_r, 512):
                pass
        except BlockingIOError:
            pass


def main(server) -> int:
    """The sr_check_worker process (run in a forked child of the parent). `server` provides
    cfg, shm, pool_passwd and reload_config(quiet=True). SIGTERM/SIGINT/SIGQUIT raise
    SystemExit(0); returns 1 after SIGUSR1 (restart request, to be re-forked)."""
    log.set_process("sr_check_worker")
    flags = SignalFlags()
    wake_r = install_signals(flags)
    cfg = server.cfg
    failing: set[int] = set()
    while True:
        if flags.reload:
            flags.reload = False
            new = server.reload_config(quiet=True)
            if new is not None:
                cfg = new
                log.configure(new)
        if flags.restart:
            log.log("LOG", "worker process received restart request")
            return 1
        header = server.shm.header
        if not header.switching and not header.follow_primary_lock:
            check_once(cfg, server.shm, server.pool_passwd, failing)
        wait_or_signal(wake_r, cfg.sr_check_period if cfg.sr_check_period > 0 else IDLE_WAIT)
