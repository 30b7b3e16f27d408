"""The parent process: sockets, shared memory, preforked workers, auxiliary processes, reload, shutdown, node requests.

Signal handlers only record the signal (through a wakeup pipe); the main loop acts on them at a
safe point: reap and respawn workers and auxiliary processes (PCP, sr_check_worker, one
health_check<N> per backend), reload on SIGHUP, smart / fast / immediate shutdown on SIGTERM /
SIGINT / SIGQUIT, wake workers on SIGUSR2, and hand the node request ring (SIGUSR1) to the
failover machinery (pgpool.ha.failover), which never blocks the loop: commands it runs and
primary probes are child processes reaped here.
"""

import ctypes
import errno
import importlib.util
import os
import select
import signal
import socket
import time

from pgpool import log
from pgpool.config import ConfigError, load_config
from pgpool.ha.failover import Failover
from pgpool.ha import plan as P
from pgpool.processes.child import run_child
from pgpool.proxy import tls
from pgpool.state import shm as S
from pgpool.state import probe
from pgpool.state.status_file import discard_status_file, read_status_file, write_status_file

FATAL_EXIT = 3
WORKER_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1}
# A worker that dies this soon after its start, this many times in a row, means the server
# cannot work (bad environment, bug at start): stop instead of forking in a loop.
FAST_DEATH_SECONDS = 2.0
FAST_DEATH_LIMIT = 10
AUX_MAX_BACKOFF = 30.0
PCP_BACKLOG = 64
PR_SET_NAME = 15


class StartupFailure(Exception):
    """The server cannot start; the message says why."""


def socket_dirs(cfg) -> list[str]:
    """Unix socket directories (pgpool-II 4.3 has one, `socket_dir`; empty = none)."""
    return [cfg.socket_dir] if cfg.socket_dir else []


def _bind_listeners(addresses: str, port: int, dirs: list[str], backlog: int) -> list[socket.socket]:
    """Listening sockets: a Unix socket `<dir>/.s.PGSQL.<port>` per directory, then TCP on every
    address of the comma separated `addresses` ('*' = all)."""
    socks = []
    for d in dirs:
        path = os.path.join(d, f".s.PGSQL.{port}")
        try:
            if os.path.exists(path):
                os.unlink(path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            os.chmod(path, 0o777)          # as pgpool-II 4.3 (no permissions setting)
            s.listen(backlog)
        except OSError as e:
            raise StartupFailure(f"failed to create INET domain socket: could not bind Unix "
                                 f"socket \"{path}\": {e.strerror}") from e
        socks.append(s)
    addrs = [a.strip() for a in str(addresses).split(",") if a.strip()]
    for a in addrs:
        host = None if a == "*" else a
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                       0, socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise StartupFailure(f"could not resolve listen address \"{a}\": {e}") from e
        seen = set()
        for family, stype, proto, _, sockaddr in infos:
            if sockaddr in seen:
                continue
            seen.add(sockaddr)
            s = socket.socket(family, stype, proto)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(sockaddr)
                s.listen(backlog)
            except OSError as e:
                s.close()
                if e.errno == errno.EADDRNOTAVAIL and a in ("*", "localhost"):
                    continue      # e.g. no IPv6 on this host
                for o in socks:
                    o.close()
                raise StartupFailure(f"failed to create INET domain socket: could not bind "
                                     f"{sockaddr[0]}:{sockaddr[1]}: {e.strerror}") from e
            socks.append(s)
    return socks


def _create_listeners(cfg) -> list[socket.socket]:
    backlog = max(1, int(cfg.num_init_children * cfg.listen_backlog_multiplier))
    socks = _bind_listeners(cfg.listen_addresses, cfg.port, socket_dirs(cfg), backlog)
    if not socks:
        raise StartupFailure("no socket to listen on: listen_addresses and "
                             "unix_socket_directories are both empty")
    return socks


def pcp_socket_dirs(cfg) -> list[str]:
    return [cfg.pcp_socket_dir] if cfg.pcp_socket_dir else []


def _create_pcp_listeners(cfg) -> list[socket.socket]:
    socks = _bind_listeners(cfg.pcp_listen_addresses, cfg.pcp_port, pcp_socket_dirs(cfg),
                            PCP_BACKLOG)
    if not socks:
        raise StartupFailure("no socket to listen on for PCP: pcp_listen_addresses and "
                             "pcp_socket_dir are both empty")
    return socks


def _set_process_name(name: str) -> None:
    """The kernel's name of this process (ps -o comm, psutil name()): tells auxiliary processes
    apart from the workers."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


class AuxProcess:
    """An auxiliary process the parent supervises (PCP, sr_check_worker, health_check<N>):
    restarted with back-off when it dies unexpectedly, sent SIGHUP on reload and the shutdown
    signal on shutdown.  A health check (`node` set) runs only while its node is not down."""

    def __init__(self, name: str, entry, node: int | None = None):
        self.name = name
        self.entry = entry             # entry(server) -> exit code, runs in the forked child
        self.node = node
        self.pid = 0
        self.started = 0.0
        self.quick_deaths = 0
        self.restart_at: float | None = None
        self.restart_requested = False  # we asked it to exit (SIGUSR1): restart it at once

    def backoff(self) -> float:
        """Seconds to wait before the next start: 0 after a long run, then doubling to 30 s."""
        if self.quick_deaths == 0:
            return 0.0
        return min(AUX_MAX_BACKOFF, 0.5 * 2 ** (self.quick_deaths - 1))


def _health_check_available() -> bool:
    return importlib.util.find_spec("pgpool.processes.health_check") is not None


class Server:
    def __init__(self, cfg, config_file: str, pcp_file: str | None, hba_file: str | None,
                 discard_status: bool = False):
        self.cfg = cfg
        self.config_file = config_file
        self.pcp_file = pcp_file
        self.hba_file = hba_file
        self.discard_status = discard_status
        self.shm: S.SharedState | None = None
        self.listeners: list[socket.socket] = []
        self.pcp_listeners: list[socket.socket] = []
        self.aux = [AuxProcess("pcp_main", Server._run_pcp)]
        if cfg.clustering_mode == "streaming_replication":
            self.aux.append(AuxProcess("sr_check_worker", Server._run_sr_check))
        if _health_check_available():
            for b in cfg.backends:
                self.aux.append(AuxProcess(f"health_check{b.node_id}",
                                           lambda server, n=b.node_id: server._run_health_check(n),
                                           node=b.node_id))
        self.hba = None
        self.pool_passwd = None
        self.children: dict[int, int] = {}        # pid -> worker index
        self.child_started: dict[int, float] = {}
        self.fast_deaths = 0
        self.shutdown_mode = None
        self.pending_signals: list[int] = []
        self.failover = Failover(self)
        self._waiting_baseline: dict[int, set[int]] = {}   # node -> backend pids seen when it began waiting
        self._wakeup_r = self._wakeup_w = -1

    # ---- files read at start and on reload ---------------------------------------------

    def _load_auth_files(self, cfg) -> None:
        from pgpool.auth.hba import load_hba_logged
        from pgpool.auth.pool_passwd import PoolPasswd
        base = os.path.dirname(os.path.abspath(self.config_file))
        if cfg.enable_pool_hba:
            path = self.hba_file or os.path.join(base, "pool_hba.conf")
            self.hba = load_hba_logged(path, cfg.ssl, self.hba)
        else:
            self.hba = None
        pp = cfg.pool_passwd
        if pp:
            path = pp if os.path.isabs(pp) else os.path.join(base, pp)
            self.pool_passwd = PoolPasswd(path)
        else:
            self.pool_passwd = None

    def reload_config(self, quiet: bool = False):
        """Re-read pgpool.conf (and pool_hba.conf); returns the new Config or None on error
        (the previous configuration stays in force)."""
        try:
            new = load_config(self.config_file)
            self._load_auth_files(new)
        except (ConfigError, OSError, Exception) as e:  # noqa: BLE001 - keep serving
            log.log("ERROR", f"failed to reload the configuration: {e}",
                    detail="the previous configuration stays in force")
            return None
        # settings that need a restart keep their running value
        for name in self.cfg.changed_needing_restart(new):
            if not quiet:
                log.log("LOG", f"parameter \"{name}\" changed in \"{self.config_file}\" but "
                               "cannot be changed without restarting the server")
            new.set(name, self.cfg.values[name])
            if name in new.node_values:
                new.node_values[name] = self.cfg.node_values[name]
        new._finish()
        return new

    # ---- startup ---------------------------------------------------------------------------

    def _status_path(self) -> str:
        return os.path.join(self.cfg.logdir, "pgpool_status")

    def _init_backends(self) -> None:
        cfg = self.cfg
        shm = self.shm
        saved = None
        if self.discard_status:
            discard_status_file(self._status_path())
        else:
            saved = read_status_file(self._status_path(), len(cfg.backends))
        now = int(time.time())
        for b in cfg.backends:
            slot = shm.backends[b.node_id]
            slot.weight = b.weight
            slot.status = S.CON_CONNECT_WAIT
            if saved is not None and saved[b.node_id] == "down":
                slot.status = S.CON_DOWN
            slot.status_changed_time = now
        shm.header.num_backends = len(cfg.backends)
        shm.bump()

    def _find_primary(self, wait: float) -> int:
        """Node answering pg_is_in_recovery() = false, polled for up to `wait` seconds (at start,
        before any worker exists; later searches run in probe processes, see pgpool.ha.failover)."""
        cfg = self.cfg
        deadline = time.monotonic() + wait
        while True:
            for b in cfg.backends:
                if self.shm.backends[b.node_id].status == S.CON_DOWN:
                    continue
                if b.always_primary:
                    return b.node_id
                r = probe.is_in_recovery(cfg, b.node_id, timeout=5.0, passwd=self.pool_passwd)
                if r is False:
                    return b.node_id
            if time.monotonic() >= deadline:
                return -1
            time.sleep(1)

    def _set_roles(self) -> None:
        cfg = self.cfg
        shm = self.shm
        live = [b.node_id for b in cfg.backends if shm.backends[b.node_id].status != S.CON_DOWN]
        shm.header.main_node_id = live[0] if live else -1
        if cfg.clustering_mode == "streaming_replication":
            primary = self._find_primary(wait=min(10, cfg.search_primary_node_timeout or 10))
            if primary < 0:
                log.log("LOG", "find_primary_node: primary node not found; writes will fail "
                               "until one is found")
            else:
                log.log("LOG", f"find_primary_node: primary node is {primary}")
        else:
            primary = shm.header.main_node_id
        self.assign_roles(primary)
        for b in cfg.backends:
            if shm.backends[b.node_id].status == S.CON_CONNECT_WAIT:
                shm.backends[b.node_id].status = S.CON_UP
        shm.bump()

    def start(self) -> None:
        cfg = self.cfg
        self._load_auth_files(cfg)
        tls.configure(cfg, self.config_file)
        self.shm = S.SharedState(cfg.num_init_children, cfg.max_pool, len(cfg.backends))
        self.shm.header.parent_pid = os.getpid()
        self._init_backends()
        self.listeners = _create_listeners(cfg)
        self.pcp_listeners = _create_pcp_listeners(cfg)
        self._set_roles()
        self.write_status()

    def write_status(self) -> None:
        """Rewrite pgpool_status (not when every node is down, as pgpool-II)."""
        cfg = self.cfg
        states = []
        for b in cfg.backends:
            st = self.shm.backends[b.node_id].status
            states.append("down" if st == S.CON_DOWN else "up")
        if states and all(s == "down" for s in states):
            log.log("WARNING", "All the DB nodes are in down status and skip writing status file.")
            return
        try:
            write_status_file(self._status_path(), states)
        except OSError as e:
            log.log("WARNING", f"failed to write status file at: \"{self._status_path()}\"",
                    detail=e.strerror)

    def assign_roles(self, primary: int) -> None:
        """header.primary_node_id and every node's role from the primary (streaming replication)
        or the main node (other modes)."""
        streaming = self.cfg.clustering_mode == "streaming_replication"
        self.shm.header.primary_node_id = primary
        roles = (S.ROLE_PRIMARY, S.ROLE_STANDBY) if streaming else (S.ROLE_MAIN, S.ROLE_REPLICA)
        for bc in self.cfg.backends:
            self.shm.backends[bc.node_id].role = roles[0] if bc.node_id == primary else roles[1]

    # ---- workers ---------------------------------------------------------------------------

    def _fork_worker(self, index: int) -> None:
        from pgpool.processes.worker import Worker    # imported once, shared copy-on-write
        # Signals stay blocked until the worker has its own handlers: none sent to it is lost.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        pid = os.fork()
        if pid == 0:
            def body():
                os.close(self._wakeup_r)
                os.close(self._wakeup_w)
                for ls in self.pcp_listeners:
                    ls.close()
                worker = Worker(index, self)
                worker.install_signals()
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
                return worker.run()
            run_child(body, what="worker", failure_code=FATAL_EXIT, level="FATAL")
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self.children[pid] = index
        self.child_started[pid] = time.monotonic()
        # listed by SHOW pool_processes from now on (the worker rewrites its slot at start)
        slot = self.shm.processes[index]
        slot.pid = pid
        slot.start_time = int(time.time())

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if self.failover.child_exited(pid, code):
                continue
            aux = next((a for a in self.aux if a.pid == pid), None)
            if aux is not None:
                self._aux_exited(aux, code)
                continue
            index = self.children.pop(pid, None)
            started = self.child_started.pop(pid, time.monotonic())
            if index is None:
                continue
            if self.shutdown_mode is not None:
                continue
            if code == FATAL_EXIT:
                log.log("FATAL", f"worker process {pid} could not start; shutting down")
                self.shutdown_mode = signal.SIGINT
                return
            if code < 0:
                log.log("WARNING", f"child process with pid: {pid} was terminated by signal "
                                   f"{-code}; restarting it")
            elif code not in (0, 1):
                log.log("WARNING", f"child process with pid: {pid} exited with status {code}")
            if time.monotonic() - started < FAST_DEATH_SECONDS and code != 0:
                self.fast_deaths += 1
                if self.fast_deaths >= FAST_DEATH_LIMIT:
                    log.log("FATAL", "worker processes keep dying at start; shutting down")
                    self.shutdown_mode = signal.SIGINT
                    return
            else:
                self.fast_deaths = 0
            self._fork_worker(index)

    def worker_pids(self) -> list[int]:
        return list(self.children)

    def workers_started_after(self, when: float) -> list[int]:
        return [pid for pid, started in self.child_started.items() if started >= when]

    def kill_workers(self, pids, sig: int) -> None:
        for pid in pids:
            if pid in self.children:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass

    def _backend_pids(self, node: int) -> set[int]:
        """PostgreSQL pids of the connections to `node` the workers have recorded (a pool slot
        keeps the pid of its last connection to each node, even after it is closed)."""
        return {pool.conns[node].pid for p in self.shm.processes for pool in p.pools
                if pool.conns[node].pid}

    def _mark_connected_nodes(self) -> None:
        """A failed-back node shows "waiting" until a worker has connected to it, then "up":
        a backend pid of that node that was not there when it started waiting."""
        for b in self.cfg.backends:
            node = b.node_id
            if self.shm.backends[node].status != S.CON_CONNECT_WAIT:
                self._waiting_baseline.pop(node, None)
                continue
            seen = self._backend_pids(node)
            baseline = self._waiting_baseline.setdefault(node, seen)
            if seen - baseline:
                self.shm.set_backend(node, status=S.CON_UP, touch=False)
                del self._waiting_baseline[node]

    # ---- auxiliary processes ---------------------------------------------------------------

    def _run_pcp(self) -> int:
        from pgpool.processes.pcp_server import pcp_main
        for ls in self.listeners:
            ls.close()
        return pcp_main(self, self.pcp_listeners)

    def _run_sr_check(self) -> int:
        from pgpool.processes.sr_check import main
        for ls in self.listeners + self.pcp_listeners:
            ls.close()
        return main(self)

    def _run_health_check(self, node: int) -> int:
        from pgpool.processes.health_check import main
        for ls in self.listeners + self.pcp_listeners:
            ls.close()
        return main(self, node)

    def fork_helper(self, name: str, body, close_listeners: bool = True) -> int:
        """Fork a helper process running body() -> exit code with default signal handling
        (auxiliary processes, primary probes, the follow_child); its pid.  Auxiliary processes
        close the listening sockets they do not serve themselves."""
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS | {signal.SIGUSR2})
        pid = os.fork()
        if pid == 0:
            def child():
                os.close(self._wakeup_r)
                os.close(self._wakeup_w)
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
                    signal.signal(sig, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
                if close_listeners:
                    for ls in self.listeners + self.pcp_listeners:
                        ls.close()
                _set_process_name(name)
                return body()
            run_child(child, what=f"{name} process")
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        return pid

    def _start_aux(self, aux: AuxProcess) -> None:
        aux.pid = self.fork_helper(aux.name, lambda: aux.entry(self), close_listeners=False)
        aux.started, aux.restart_at = time.monotonic(), None

    def _node_down(self, node: int | None) -> bool:
        return node is not None and self.shm.backends[node].status == S.CON_DOWN

    def _aux_exited(self, aux: AuxProcess, code: int) -> None:
        aux.pid = 0
        if self.shutdown_mode is not None:
            return
        if code == FATAL_EXIT:
            log.log("FATAL", f"{aux.name} process could not start; shutting down")
            self.shutdown_mode = signal.SIGINT
            return
        if aux.restart_requested:
            aux.restart_requested = False
            aux.quick_deaths = 0
        elif time.monotonic() - aux.started < FAST_DEATH_SECONDS:
            aux.quick_deaths += 1
        else:
            aux.quick_deaths = 0
        if self._node_down(aux.node):
            log.log("LOG", f"{aux.name} process exited with status {code}; not restarted while "
                           f"node {aux.node} is down")
            return
        delay = aux.backoff()
        log.log("LOG", f"{aux.name} process exited with status {code}; restarting it"
                       + (f" in {delay:g} seconds" if delay else ""))
        aux.restart_at = time.monotonic() + delay

    def _restart_aux(self) -> None:
        now = time.monotonic()
        for aux in self.aux:
            if aux.pid == 0 and aux.restart_at is not None and aux.restart_at <= now:
                if self._node_down(aux.node):
                    aux.restart_at = None
                else:
                    self._start_aux(aux)

    def _aux_timeout(self, default: float) -> float:
        due = [a.restart_at for a in self.aux if a.pid == 0 and a.restart_at is not None]
        return max(0.0, min([default] + [t - time.monotonic() for t in due]))

    def _signal_aux(self, sig: int) -> None:
        for aux in self.aux:
            if aux.pid:
                try:
                    os.kill(aux.pid, sig)
                except OSError:
                    pass

    def restart_sr_check(self) -> None:
        """After a failover the sr_check_worker starts afresh (SIGUSR1, as pgpool-II)."""
        for aux in self.aux:
            if aux.name == "sr_check_worker" and aux.pid:
                aux.restart_requested = True
                try:
                    os.kill(aux.pid, signal.SIGUSR1)
                except OSError:
                    pass

    def start_health_checks(self) -> None:
        """After a failback: start the health check of every node that is not down and has none
        running."""
        for aux in self.aux:
            if aux.node is not None and aux.pid == 0 and not self._node_down(aux.node):
                log.log("LOG", f"start health check process for host "
                               f"{self.cfg.backends[aux.node].hostname}"
                               f"({self.cfg.backends[aux.node].port})")
                self._start_aux(aux)

    # ---- node requests ----------------------------------------------------------------------

    def _handle_requests(self) -> None:
        h = self.shm.header
        if h.req_head == h.req_tail:
            return
        h.switching = 1        # before popping: a PCP waiter never sees an empty ring and no switching
        self.failover.submit(self.shm.pop_requests())

    # ---- main loop -------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        self.pending_signals.append(signum)

    def _loop_timeout(self) -> float:
        timeout = self._aux_timeout(3.0)
        ft = self.failover.timeout()
        if ft is not None:
            timeout = min(timeout, ft)
        if any(self.shm.backends[b.node_id].status == S.CON_CONNECT_WAIT for b in self.cfg.backends):
            timeout = min(timeout, 1.0)
        return timeout

    def run(self) -> int:
        log.set_process("main")
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        signal.set_wakeup_fd(self._wakeup_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                    signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for i in range(self.cfg.num_init_children):
            self._fork_worker(i)
        for aux in self.aux:
            if not self._node_down(aux.node):      # no health check for a node down at start
                self._start_aux(aux)
        log.log("LOG", f"pgpool-II successfully started. version {self._version()}")
        next_primary_search = time.monotonic() + 5
        while self.shutdown_mode is None:
            try:
                select.select([self._wakeup_r], [], [], self._loop_timeout())
            except InterruptedError:
                pass
            try:
                while os.read(self._wakeup_r, 512):
                    pass
            except BlockingIOError:
                pass
            sigs, self.pending_signals = self.pending_signals, []
            for sig in sigs:
                if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                    self.shutdown_mode = sig
                elif sig == signal.SIGHUP:
                    self._reload()
                elif sig == signal.SIGUSR2:
                    self.kill_workers(self.worker_pids(), signal.SIGUSR2)
            self._reap()
            if self.shutdown_mode is not None:
                break
            self._handle_requests()
            self.failover.poll()
            self._restart_aux()
            self._mark_connected_nodes()
            if (self.cfg.clustering_mode == "streaming_replication"
                    and time.monotonic() >= next_primary_search):
                self.failover.retry_primary_search()
                next_primary_search = time.monotonic() + 5
        return self._shutdown()

    def _reload(self) -> None:
        log.log("LOG", "reload config files.")
        new = self.reload_config()
        if new is None:
            return
        self.cfg = new
        log.configure(new)
        for b in new.backends:
            self.shm.backends[b.node_id].weight = b.weight
        self.shm.bump()
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGHUP)
            except OSError:
                pass
        self._signal_aux(signal.SIGHUP)

    def _signal_all(self, sig: int) -> None:
        """Workers, auxiliary processes, and running commands / follow_child with their groups."""
        for pid in list(self.children) + [a.pid for a in self.aux if a.pid]:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        self.failover.kill(sig)

    def _shutdown(self) -> int:
        mode = self.shutdown_mode
        name = {signal.SIGTERM: "smart", signal.SIGINT: "fast",
                signal.SIGQUIT: "immediate"}.get(mode, "fast")
        log.log("LOG", f"received {name} shutdown request")
        for s in self.listeners + self.pcp_listeners:
            try:
                s.close()
            except OSError:
                pass
        paths = [os.path.join(d, f".s.PGSQL.{self.cfg.port}") for d in socket_dirs(self.cfg)]
        paths += [os.path.join(d, f".s.PGSQL.{self.cfg.pcp_port}") for d in pcp_socket_dirs(self.cfg)]
        for path in paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.failover.stop()
        self._signal_all(mode)
        deadline = None if mode == signal.SIGTERM else time.monotonic() + 10
        # commands and the follow_child do not hold up a smart shutdown for long
        helpers_deadline = time.monotonic() + 10
        while self._live_pids():
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self._forget(pid, os.waitstatus_to_exitcode(status))
                continue
            sigs, self.pending_signals = self.pending_signals, []
            for sig in sigs:
                if sig in (signal.SIGINT, signal.SIGQUIT) and mode == signal.SIGTERM:
                    # a smart shutdown waiting for clients is turned into a fast / immediate one
                    mode = sig
                    log.log("LOG", "received fast shutdown request" if sig == signal.SIGINT
                            else "received immediate shutdown request")
                    deadline = time.monotonic() + 10
                    self._signal_all(sig)
            if deadline is not None and time.monotonic() > deadline:
                self._signal_all(signal.SIGKILL)
                deadline = time.monotonic() + 5
            if helpers_deadline is not None and time.monotonic() > helpers_deadline:
                self.failover.kill(signal.SIGKILL)
                helpers_deadline = None
            try:
                select.select([self._wakeup_r], [], [], 0.1)
                while os.read(self._wakeup_r, 512):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
        self.write_status()
        log.log("LOG", "pgpool-II shut down")
        return 0

    def _live_pids(self) -> list[int]:
        """Workers, auxiliary processes and failover helpers still running."""
        return list(self.children) + [a.pid for a in self.aux if a.pid] + self.failover.pids()

    def _forget(self, pid: int, code: int) -> None:
        self.children.pop(pid, None)
        self.failover.child_exited(pid, code)
        for aux in self.aux:
            if aux.pid == pid:
                aux.pid = 0

    @staticmethod
    def _version() -> str:
        from pgpool import POOL_CODENAME, POOL_VERSION
        return f"{POOL_VERSION} ({POOL_CODENAME})"
