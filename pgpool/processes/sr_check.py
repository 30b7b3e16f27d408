"""The streaming-replication check worker (sr_check_worker): replication delay and state per node.

Every `sr_check_period` seconds (streaming replication mode only, skipped while a failover is
switching) it logs in as `sr_check_user` to each valid node, reads the primary's current WAL
position and `pg_stat_replication`, each standby's replay position, and writes into shared memory
what SHOW pool_nodes reports as replication_delay, replication_state and replication_sync_state.

Deliberate differences from pgpool-II 4.3.5 (pool_worker_child.c):
- an unreachable node is skipped (its state stays empty, its delay unchanged) instead of aborting
  the whole check with "Failed to check replication time lag"; it is logged once per failure streak;
- LSNs are converted exactly (high 32 bits << 32 | low 32 bits); 4.3.5 still uses the pre-9.3
  formula that skips a 16 MB segment per xlogid, which only matters across a 4 GB boundary;
- a standby with an empty backend_application_name never matches a pg_stat_replication row;
- PostgreSQL 10 or later is assumed (pg_current_wal_lsn / pg_last_wal_replay_lsn).
"""

import os
import select
import signal

from pgpool import log
from pgpool.auth.pool_passwd import config_user_password
from pgpool.proxy.backend import BackendError
from pgpool.state import probe
from pgpool.state import shm as S

PRIMARY_LSN_QUERY = "SELECT pg_catalog.pg_current_wal_lsn()"
STANDBY_LSN_QUERY = "SELECT pg_catalog.pg_last_wal_replay_lsn()"
STAT_REPLICATION_QUERY = ("SELECT application_name, state, sync_state "
                          "FROM pg_catalog.pg_stat_replication")

IO_TIMEOUT = 5.0                 # seconds for connecting and for each query
IDLE_WAIT = 30                   # seconds between looks at the config while sr_check_period = 0
STATE_FIELD_MAX = 31             # replication_state / replication_sync_state: char[32] with NUL
VALID_STATUSES = (S.CON_UP, S.CON_CONNECT_WAIT)    # VALID_BACKEND() in pgpool-II

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


def log_delay_lines(node_delays: dict, primary_node_id: int, log_standby_delay: str,
                    delay_threshold: int) -> list[str]:
    """The LOG messages pgpool-II writes for these delays under log_standby_delay."""
    rule = LOG_RULES[log_standby_delay]
    return [f"Replication of node:{node} is behind {lag} bytes from the primary server "
            f"(node:{primary_node_id})"
            for node, lag in sorted(node_delays.items()) if rule(lag, delay_threshold)]


# ---- one check ------------------------------------------------------------------------------

def _ask(cfg, node: int, password: str | None, queries: list[str], failing: set):
    """First column of the first row of each query on `node` (None for NULL or no row), or None
    when the node cannot be reached or a query fails; logged once per failure streak."""
    b = cfg.backends[node]
    try:
        conn = probe.connect_as(cfg, node, cfg.sr_check_user, password, cfg.sr_check_database,
                                IO_TIMEOUT)
    except (OSError, EOFError, BackendError) as e:
        if node not in failing:
            failing.add(node)
            log.log("LOG", "failed to make persistent db connection",
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
        if node not in failing:
            failing.add(node)
            log.log("LOG", "get_query_result: do_query failed",
                    detail=f"node id ({node}): {e}")
        return None
    finally:
        conn.close()
    failing.discard(node)
    return answers


def _first_lsn(rows) -> int | None:
    return lsn_to_int(rows[0][0]) if rows and rows[0][0] is not None else None


def _measure(cfg, shm, password, failing: set):
    """Ask the nodes: (primary, {standby: lag}, {standby: (state, sync_state)}) or None when the
    primary cannot be asked (nothing to measure against)."""
    primary = shm.header.primary_node_id
    valid = [b.node_id for b in cfg.backends if shm.backends[b.node_id].status in VALID_STATUSES]
    if len(cfg.backends) <= 1 or primary not in valid:
        return None
    # the primary first: a caught-up standby then shows 0, not the WAL written between reads
    answer = _ask(cfg, primary, password, [PRIMARY_LSN_QUERY, STAT_REPLICATION_QUERY], failing)
    if answer is None:
        return None
    primary_lsn = _first_lsn(answer[0])
    replay = {}
    for node in valid:
        if node == primary:
            continue
        got = _ask(cfg, node, password, [STANDBY_LSN_QUERY], failing)
        if got is not None:
            replay[node] = _first_lsn(got[0])
    states = replication_rows_to_states(answer[1], cfg.backends, primary)
    return primary, delays(primary_lsn, replay), {n: states[n] for n in replay if n in states}


def check_once(cfg, shm, passwd=None, failing: set | None = None) -> None:
    """One round of the check (streaming replication mode, sr_check_period > 0). Writes
    standby_delay (0 on the primary), replication_state and replication_sync_state of every
    configured node into shared memory and bumps the generation. Never raises; `passwd` is the
    pool_passwd file consulted when sr_check_password is empty; `failing` (node ids whose
    last attempt failed) keeps failure logs to one per streak across calls."""
    if cfg.clustering_mode != "streaming_replication" or cfg.sr_check_period <= 0:
        return
    failing = set() if failing is None else failing
    try:
        password = config_user_password(cfg.sr_check_user, cfg.sr_check_password, passwd)
        measured = _measure(cfg, shm, password, failing)
    except Exception as e:   # noqa: BLE001 - never raise (bad LSN text, AES password, a bug)
        log.log("ERROR", "Failed to check replication time lag", detail=str(e),
                hint="check sr_check_user and sr_check_password")
        measured = None
    lags, states, primary = {}, {}, None
    if measured is not None:
        primary, lags, states = measured
    for b in cfg.backends:
        slot = shm.backends[b.node_id]
        state, sync_state = states.get(b.node_id, ("", ""))
        slot.replication_state = state.encode()
        slot.replication_sync_state = sync_state.encode()
        if b.node_id == primary:
            slot.standby_delay = 0
        elif b.node_id in lags:
            slot.standby_delay = lags[b.node_id]
    shm.bump()
    if primary is not None:
        for line in log_delay_lines(lags, primary, cfg.log_standby_delay, cfg.delay_threshold):
            log.log("LOG", line)


# ---- the process ----------------------------------------------------------------------------

class _Requests:
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


def _install_signals(requests: _Requests) -> int:
    """Handlers as pgpool-II's worker has them; returns the read end of the wakeup pipe that
    every signal writes to (so a wait ends as soon as one arrives)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, requests.on_exit)
    signal.signal(signal.SIGHUP, requests.on_hup)
    signal.signal(signal.SIGUSR1, requests.on_usr1)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    return wake_r


def _wait(wake_r: int, seconds: float) -> None:
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
    requests = _Requests()
    wake_r = _install_signals(requests)
    cfg = server.cfg
    failing: set[int] = set()
    while True:
        if requests.reload:
            requests.reload = False
            new = server.reload_config(quiet=True)
            if new is not None:
                cfg = new
                log.configure(new)
        if requests.restart:
            log.log("LOG", "worker process received restart request")
            return 1
        if not server.shm.header.switching:
            check_once(cfg, server.shm, server.pool_passwd, failing)
        _wait(wake_r, cfg.sr_check_period if cfg.sr_check_period > 0 else IDLE_WAIT)
