"""The health-check process of one backend (health_check<N>): detect a dead node, report it, re-attach.

Every `health_check_period` seconds (the node's own health_check_periodN when set) it connects to
the node and logs in to `health_check_database` as `health_check_user` (password from the setting
or, when that is empty, from pool_passwd; trust, password, md5 and SCRAM work). One attempt is
bounded by `health_check_timeout` (as pgpool-II's alarm) and its TCP connect by `connect_timeout`;
a failed attempt is retried `health_check_max_retries` times, `health_check_retry_delay` seconds
apart. When all attempts fail the node is reported to the parent (REQ_NODE_DOWN with
REQ_FLAG_HEALTH_CHECK, plus REQ_FLAG_FULL_RESTART when the last attempt timed out; SIGUSR1),
unless its backend_flag is DISALLOW_TO_FAILOVER.

A node that is already down is skipped, except a quarantined one (checked; success asks the
parent to lift the quarantine) and, with `auto_failback` in streaming replication mode, a down
standby whose replication_state is "streaming": it is probed, and when it answers and the
primary's pg_stat_replication still shows it streaming, a REQ_NODE_UP with REQ_FLAG_AUTO_FAILBACK
goes to the parent, at most once per `auto_failback_interval`. Every round is counted into
shm.health[N] (pgpool/state/health_stats.py).

`health_check_test` (pgpool-II's testing aid): while `<logdir>/backend_down_request` has a line
"N<TAB>down", every attempt on node N fails as if the node were unreachable.

Signals: SIGHUP reloads the configuration, SIGTERM/SIGINT/SIGQUIT end the process (exit 0),
SIGUSR1 asks for a restart (exit 1, the parent forks a new one), as in pgpool-II.

Deliberate differences from pgpool-II 4.3.5:
- every failed attempt is logged with its reason (the backend's message for a refused login);
  4.3.5 logs only "health check failed on node N" when the login itself is refused;
- an empty health_check_database tries "postgres", then "template1" when "postgres" does not
  exist, as the manual says (4.3.5 tries "postgres" only);
- before an auto failback the primary's pg_stat_replication is asked again, so a replication
  state the sr_check worker read before the node went away cannot re-attach it.
"""

import os
import signal
import socket
import time

from pgpool import log
from pgpool.auth import exchange
from pgpool.auth.pool_passwd import config_user_password
from pgpool.ha.plan import REQ_FLAG_FULL_RESTART
from pgpool.processes import sr_check
from pgpool.protocol import messages as m
from pgpool.proxy.backend import BackendConn, BackendError, open_socket, read_startup_reply
from pgpool.state import health_stats as hs
from pgpool.state import shm as S

IDLE_WAIT = 30                     # seconds between looks at the config while the period is 0
DEFAULT_DATABASES = ("postgres", "template1")
UNDEFINED_DATABASE = "3D000"       # SQLSTATE invalid_catalog_name: try the next default database
DOWN_REQUEST_FILE = "backend_down_request"
FAILBACK_QUERY_TIMEOUT = 5.0       # seconds for asking the primary before an auto failback

# What a round does with the node, by its state (see round_action).
CHECK, SKIP, PROBE_FAILBACK = "check", "skip", "probe_failback"


class AttemptFailed(Exception):
    """One connection attempt failed: `reason` for the log, `timed_out` when
    health_check_timeout expired, `login` when the server refused the login."""

    def __init__(self, reason: str, timed_out: bool = False, login: bool = False,
                 sqlstate: str | None = None):
        super().__init__(reason)
        self.timed_out, self.login, self.sqlstate = timed_out, login, sqlstate


class _TimerExpired(Exception):
    """health_check_timeout expired during an attempt (raised by the SIGALRM handler)."""


# ---- pure decisions ---------------------------------------------------------------------------

def round_action(status: int, quarantine: bool, *, streaming: bool, auto_failback: bool,
                 replication_state: str, switching: bool, now: float,
                 failback_after: float) -> str:
    """CHECK, SKIP or PROBE_FAILBACK for a node in this state (pgpool-II's
    establish_persistent_connection). `failback_after` is when the last auto failback's
    interval ends (0 = none yet)."""
    if status in (S.CON_UP, S.CON_CONNECT_WAIT) or (status == S.CON_DOWN and quarantine):
        return CHECK
    if (auto_failback and streaming and replication_state == "streaming" and not switching
            and now > failback_after):
        return PROBE_FAILBACK
    return SKIP


def databases(configured: str) -> tuple[str, ...]:
    """The databases a login tries in turn: the configured one, or the defaults."""
    return (configured,) if configured else DEFAULT_DATABASES


def down_requested(text: str, node: int) -> bool:
    """Does a backend_down_request file's text ask node `node` to look down ("N<TAB>down")?"""
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[0].strip() == str(node) and fields[1].strip() == "down":
            return True
    return False


# ---- one attempt --------------------------------------------------------------------------------

def _on_alarm(signum, frame):
    raise _TimerExpired()


def _connect_error(host: str, port: int, error: OSError) -> str:
    if not host or host.startswith("/"):
        path = f"{host or '/tmp'}/.s.PGSQL.{port}"
        return f'connect to "{path}" failed with error "{error.strerror or error}"'
    return "timed out" if isinstance(error, socket.timeout) else str(error.strerror or error)


def _login_once(node: int, host: str, port: int, user: str, password: str | None,
                database: str, connect_timeout: float | None) -> None:
    """Connect, start up and log in once; AttemptFailed says why it did not work."""
    try:
        sock = open_socket(host, port, connect_timeout)
    except OSError as e:
        raise AttemptFailed(_connect_error(host, port, e)) from None
    conn = BackendConn(node, sock)
    try:
        conn.send(m.startup_message({"user": user, "database": database}))
        exchange.authenticate_backend(conn, user, password)
        read_startup_reply(conn)
    except exchange.BackendAuthError as e:
        raise AttemptFailed(e.fields.get("M", str(e)), login=True, sqlstate=e.sqlstate) from None
    except exchange.AuthError as e:
        raise AttemptFailed(str(e), login=True) from None
    except BackendError as e:
        raise AttemptFailed(str(e), sqlstate=e.fields.get("C")) from None
    except EOFError:
        raise AttemptFailed("the server closed the connection during the login") from None
    except OSError as e:
        raise AttemptFailed(f"communication with the server failed: {e}") from None
    finally:
        conn.close()


def attempt(cfg, node: int, password: str | None) -> None:
    """One health check of `node` (all default databases if needed) within health_check_timeout;
    returns when a login succeeded, raises AttemptFailed otherwise."""
    b = cfg.backends[node]
    hc = b.health_check
    timeout = hc["timeout"]
    connect_timeout = hc["connect_timeout"] / 1000.0 if hc["connect_timeout"] > 0 else None
    if timeout > 0:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        for i, database in enumerate(dbs := databases(hc["database"])):
            try:
                _login_once(node, b.hostname, b.port, hc["user"], password, database,
                            connect_timeout)
                return
            except AttemptFailed as e:
                if e.sqlstate != UNDEFINED_DATABASE or i == len(dbs) - 1:
                    raise
    except _TimerExpired:
        raise AttemptFailed("health check timer expired", timed_out=True) from None
    finally:
        if timeout > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_IGN)


def _simulated_down(cfg, node: int) -> bool:
    if not cfg.health_check_test:
        return False
    try:
        with open(os.path.join(cfg.logdir, DOWN_REQUEST_FILE), encoding="utf-8",
                  errors="replace") as fh:
            return down_requested(fh.read(), node)
    except OSError:
        return False


# ---- the process ----------------------------------------------------------------------------------

class HealthChecker:
    """The state of one node's health-check process between rounds."""

    def __init__(self, server, node: int, wake_r: int, flags: sr_check.SignalFlags):
        self.server = server
        self.node = node
        self.cfg = server.cfg
        self.shm = server.shm
        self.stats = server.shm.health[node]
        self.wake_r = wake_r
        self.flags = flags
        self.failback_after = 0.0

    def _password(self, user: str, configured: str) -> str | None:
        return config_user_password(user, configured, self.server.pool_passwd)

    def _attempts(self) -> tuple[bool, bool, int]:
        """The attempt and its retries: (succeeded, last attempt timed out, retries made)."""
        cfg, node = self.cfg, self.node
        hc = cfg.backends[node].health_check
        b = cfg.backends[node]
        password = self._password(hc["user"], hc["password"])
        retries = 0
        while True:
            timed_out = False
            try:
                attempt(cfg, node, password)
                if _simulated_down(cfg, node):
                    raise AttemptFailed(f'{DOWN_REQUEST_FILE} asks node {node} to fail')
                if retries:
                    log.log("LOG", f"health check retrying on DB node: {node} succeeded")
                return True, False, retries
            except AttemptFailed as e:
                timed_out = e.timed_out
                log.log("LOG", "failed to make persistent db connection",
                        detail=f'connection to host:"{b.hostname}:{b.port}" failed: {e}',
                        hint="check health_check_user and health_check_password"
                        if e.login else None)
            if retries >= hc["max_retries"]:
                return False, timed_out, retries
            retries += 1
            hs.count_retry(self.stats)
            log.log("LOG", f"health check retrying on DB node: {node} (round:{retries})")
            self.sleep(hc["retry_delay"])
            if self.flags.restart:
                return False, timed_out, retries

    def sleep(self, seconds: float, until_reload: bool = False) -> None:
        """Wait `seconds`; a restart request (and with `until_reload` a reload request) ends
        the wait early, other signals (SIGALRM of an attempt) do not."""
        until = time.monotonic() + seconds
        while not self.flags.restart and not (until_reload and self.flags.reload) \
                and (left := until - time.monotonic()) > 0:
            sr_check.wait_or_signal(self.wake_r, left)

    def _failed(self, timed_out: bool, quarantined: bool) -> None:
        node = self.node
        if not self.cfg.backends[node].allow_to_failover:
            log.log("LOG", f"health check failed on node {node} but failover is disallowed "
                           "for the node")
            return
        log.log("LOG", f"health check failed on node {node} (timeout:{int(timed_out)})")
        if quarantined:
            log.log("LOG", f"health check failed on quarantine node {node} "
                           f"(timeout:{int(timed_out)})", detail="ignoring..")
            return
        # a timed-out node may hang sessions: every worker restarts (pgpool-II's non-partial)
        flags = S.REQ_FLAG_HEALTH_CHECK | (REQ_FLAG_FULL_RESTART if timed_out else 0)
        sr_check.request_node(self.shm, S.REQ_NODE_DOWN, node, flags)

    def _still_streaming(self) -> bool:
        """Does the primary's pg_stat_replication show this node streaming right now?"""
        cfg, primary = self.cfg, self.shm.header.primary_node_id
        if primary < 0 or primary == self.node:
            return False
        password = self._password(cfg.sr_check_user, cfg.sr_check_password)
        answer = sr_check.ask(cfg, primary, password, [sr_check.STAT_REPLICATION_QUERY],
                              timeout=FAILBACK_QUERY_TIMEOUT)
        if answer is None:
            return False
        states = sr_check.replication_rows_to_states(answer[0], cfg.backends, primary)
        return states.get(self.node, ("", ""))[0] == "streaming"

    def _probe_failback(self) -> int:
        """A down standby that streams: probe it and ask for the failback. Returns retries."""
        ok, _, retries = self._attempts()
        if ok and not self.shm.header.switching and self._still_streaming():
            log.log("LOG", f"request auto failback, node id:{self.node}")
            self.failback_after = time.time() + self.cfg.auto_failback_interval
            sr_check.request_node(self.shm, S.REQ_NODE_UP, self.node, S.REQ_FLAG_AUTO_FAILBACK)
        return retries

    def run_round(self) -> None:
        """One health-check round, counted into shm.health[node]."""
        cfg, slot, stats = self.cfg, self.shm.backends[self.node], self.stats
        hs.begin_round(stats, int(time.time()))
        started = time.monotonic()
        action = round_action(slot.status, bool(slot.quarantine),
                              streaming=cfg.clustering_mode == "streaming_replication",
                              auto_failback=cfg.auto_failback,
                              replication_state=slot.replication_state.decode(errors="replace"),
                              switching=bool(self.shm.header.switching), now=time.time(),
                              failback_after=self.failback_after)
        if action == SKIP:
            hs.end_skip(stats, int(time.time()))
            return
        if action == PROBE_FAILBACK:
            log.debug(f"health check DB node: {self.node} (status:{slot.status}) for auto_failback")
            hs.end_skip(stats, int(time.time()), self._probe_failback())
            return
        quarantined = slot.status == S.CON_DOWN and bool(slot.quarantine)
        ok, timed_out, retries = self._attempts()
        duration_ms = int((time.monotonic() - started) * 1000)
        if ok:
            hs.end_success(stats, int(time.time()), duration_ms, retries)
            if quarantined:
                sr_check.request_node(self.shm, S.REQ_NODE_UP, self.node,
                                      S.REQ_FLAG_HEALTH_CHECK)
            return
        hs.end_failure(stats, int(time.time()), duration_ms, retries)
        self._failed(timed_out, quarantined)

    def reload(self) -> None:
        new = self.server.reload_config(quiet=True)
        if new is not None:
            self.cfg = new
            log.configure(new)

    def period(self) -> int:
        """This node's health_check_period (0 also when the node left the configuration)."""
        if self.node >= len(self.cfg.backends):
            return 0
        return self.cfg.backends[self.node].health_check["period"]


def main(server, node_id: int) -> int:
    """The health_check<N> process body (in a forked child of the parent). `server` provides
    cfg, shm, pool_passwd and reload_config(quiet=True). SIGTERM/SIGINT/SIGQUIT raise
    SystemExit(0); returns 1 after SIGUSR1 (restart request, to be re-forked)."""
    log.set_process(f"health_check{node_id}")
    flags = sr_check.SignalFlags()
    wake_r = sr_check.install_signals(flags)
    checker = HealthChecker(server, node_id, wake_r, flags)
    while True:
        if flags.reload:
            flags.reload = False
            checker.reload()
        if flags.restart:
            log.log("LOG", "health check process received restart request")
            return 1
        period = checker.period()
        if period > 0:
            checker.run_round()
        checker.sleep(period if period > 0 else IDLE_WAIT, until_reload=True)
