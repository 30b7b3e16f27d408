"""A preforked worker: accepts one client at a time on the shared sockets and runs its session.

Signals only set flags (or end an idle worker at once): SIGTERM = exit when the current session
ends, SIGINT / SIGQUIT = exit now (a failover restarts workers this way), SIGHUP = reload the
configuration before the next client, SIGUSR1 = close idle pooled backend connections, SIGUSR2 =
wake up (online recovery's 2nd stage, during which no client is accepted, ended).

A backend failure seen by a session goes to `backend_failed`, which may ask the parent to detach
the node; before a new session, pooled connections that no longer match the usable nodes are
closed.
"""

import gc
import os
import select
import signal
import socket
import time

from pgpool import log
from pgpool.ha.plan import VALID_STATUSES, degenerate_refusal
from pgpool.ha.requests import register, snapshot
from pgpool.proxy.catalog import CatalogCache
from pgpool.proxy.pool import ConnectionPool
from pgpool.proxy.session import Session, Stats
from pgpool.state import probe
from pgpool.state import shm as S
from pgpool.state.view import build_view

EXIT_RESTART = 1
EXIT_FATAL = 3
PING_TIMEOUT_MS = 10000
RECOVERY_ONLINE = 1             # shm.header.in_recovery during online recovery's 2nd stage
RECOVERY_POLL_SECONDS = 1.0
FAILOVER_POLL_SECONDS = 0.05


class Worker:
    def __init__(self, index: int, server):
        self.index = index
        self.server = server            # the parent's Server object (config, sockets, files)
        self.cfg = server.cfg
        self.shm = server.shm
        self.listeners = server.listeners
        self.hba = server.hba
        self.pool_passwd = server.pool_passwd
        self.pool: ConnectionPool | None = None
        self.catalog = CatalogCache(self.cfg)
        self._view = None
        self._view_gen = -1
        self._pool_gen = -1
        self.in_session = False
        self.stop_after_session = False
        self.reload_requested = False
        self.close_idle_requested = False

    # ---- cluster view --------------------------------------------------------------------

    def current_view(self):
        gen = self.shm.header.generation
        if gen != self._view_gen:
            self._view = build_view(self.shm, self.cfg)
            self._view_gen = gen
        return self._view

    def backend_failed(self, node: int, message: str, shutdown: bool = False) -> None:
        """A backend connection failed (`shutdown`: the backend sent 57P01 / 57P02): log it and,
        per failover_on_backend_error / failover_on_backend_shutdown, ask the parent to detach
        the node -- unless the node still accepts connections (the session's own backend went
        away, e.g. pg_terminate_backend()), which is not a node failure."""
        log.log("LOG", f"backend node {node} failed", message)
        cfg = self.cfg
        if not (cfg.failover_on_backend_shutdown if shutdown else cfg.failover_on_backend_error):
            return
        if node >= len(cfg.backends) or self.shm.backends[node].status not in VALID_STATUSES:
            return
        refusal = degenerate_refusal(snapshot(self.shm, cfg), node, os.getpid())
        if refusal:
            log.log("LOG", refusal)
            return
        b = cfg.backends[node]
        if probe.ping(b.hostname, b.port, (cfg.connect_timeout or PING_TIMEOUT_MS) / 1000.0):
            log.log("LOG", f"backend node {node} still accepts connections: not failing over")
            return
        log.log("LOG", f"received degenerate backend request for node_id: {node} from pid [{os.getpid()}]")
        flags = S.REQ_FLAG_BACKEND_ERROR | (S.REQ_FLAG_SHUTDOWN if shutdown else 0)
        register(self.shm, S.REQ_NODE_DOWN, node, flags)

    # ---- signals -------------------------------------------------------------------------

    def _on_term(self, signum, frame):
        if self.in_session:
            # smart shutdown: finish this session, accept nothing more
            self.stop_after_session = True
            for ls in self.listeners:
                try:
                    ls.close()
                except OSError:
                    pass
        else:
            os._exit(0)

    def _on_now(self, signum, frame):
        os._exit(0)

    def _on_hup(self, signum, frame):
        self.reload_requested = True

    def _on_usr1(self, signum, frame):
        self.close_idle_requested = True

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_now)
        signal.signal(signal.SIGQUIT, self._on_now)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        signal.signal(signal.SIGUSR2, lambda signum, frame: None)    # wake up (end of recovery)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)   # a signal ends the wait in poll()

    # ---- main loop -------------------------------------------------------------------------

    def run(self) -> int:
        log.set_process("child")
        # What the parent built (modules, configuration) lives as long as this worker: out of
        # the collector's way, a full collection only looks at what sessions created since.
        gc.freeze()
        self.shm.reset_process_slot(self.index, os.getpid())
        slot = self.slot = self.shm.processes[self.index]
        self.stats = Stats(slot)
        self.pool = ConnectionPool(self.cfg.max_pool, self.shm, self.index)
        # EPOLLEXCLUSIVE: a new connection wakes one waiting worker, not all of them (the
        # thundering herd pgpool-II suffers from without serialize_accept).
        poller = select.epoll()
        by_fd = {}
        for ls in self.listeners:
            ls.setblocking(False)
            is_unix = ls.family == socket.AF_UNIX
            if not is_unix:
                # as pgpool-II sets them on each client socket; Linux copies both options
                # from the listening socket to every connection accept() returns
                ls.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            poller.register(ls.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
            by_fd[ls.fileno()] = (ls, int(ls.family), is_unix)
        poller.register(self._wake_r, select.EPOLLIN)
        served = 0
        idle_since = time.monotonic()
        while True:
            if self.stop_after_session:
                return 0
            if self.reload_requested:
                self.reload_requested = False
                self._reload()
            if self.close_idle_requested:
                self.close_idle_requested = False
                self.pool.close_all()
            if self.shm.header.in_recovery == RECOVERY_ONLINE:
                self._wait_recovery(RECOVERY_POLL_SECONDS)
                continue
            if self._awaiting_primary():
                self._wait_recovery(FAILOVER_POLL_SECONDS)
                continue
            cfg = self.cfg
            timeout = None
            now = time.monotonic()
            if cfg.child_life_time > 0 and served > 0:
                left = cfg.child_life_time - (now - idle_since)
                if left <= 0:
                    log.log("DEBUG1", "child life time expired, exiting")
                    return 0
                timeout = left
            expiry = self.pool.next_expiry(cfg.connection_life_time)
            if expiry is not None:
                left = max(0.0, expiry - time.time())
                timeout = left if timeout is None else min(timeout, left)
            try:
                events = poller.poll(-1 if timeout is None else timeout + 0.001)
            except InterruptedError:
                continue
            self.pool.expire(cfg.connection_life_time)
            if slot.need_to_restart:
                return 0
            if any(fd == self._wake_r for fd, _ in events):
                self._drain_wakeups()
                continue          # act on the signal's flag first; a pending client stays queued
            for fd, _ev in events:
                ls, family, is_unix = by_fd[fd]
                try:
                    # socket.accept() less its conversions of family and type to enums; the
                    # new socket is blocking (accept4() without SOCK_NONBLOCK)
                    conn_fd, addr = ls._accept()
                    sock = socket.socket(family, socket.SOCK_STREAM, 0, conn_fd)
                except (BlockingIOError, InterruptedError):
                    continue        # another worker took it
                except OSError as e:
                    log.log("LOG", f"failed to accept a connection: {e}")
                    continue
                self._serve(sock, addr, is_unix)
                served += 1
                idle_since = time.monotonic()
                slot.last_activity = int(time.time())
                if cfg.child_max_connections > 0 and served >= cfg.child_max_connections:
                    log.log("DEBUG1", "child_max_connections reached, exiting")
                    return 0
                if self.stop_after_session or slot.need_to_restart:
                    return 0
                break

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _awaiting_primary(self) -> bool:
        """A failover of the primary is running (streaming mode): new clients wait in the
        listen queue until the new primary is known, as with pgpool-II (whose children are
        re-forked only then), instead of having writes sent to a standby meanwhile."""
        h = self.shm.header
        if not h.switching or self.cfg.clustering_mode != "streaming_replication":
            return False
        p = h.primary_node_id
        return p < 0 or self.shm.backends[p].status == S.CON_DOWN

    def _wait_recovery(self, seconds: float) -> None:
        """Online recovery's 2nd stage or a primary failover: accept nobody until it ends (the
        parent forwards SIGUSR2 when recovery ends; a failover is polled)."""
        try:
            select.select([self._wake_r], [], [], seconds)
        except InterruptedError:
            pass
        self._drain_wakeups()

    def _drop_stale_slots(self) -> None:
        """Pooled connections must match the nodes a new session uses: a slot holding a
        connection to a node that went down, or lacking one to a node attached since, is closed
        (pgpool-II restarts its children for that)."""
        view = self.current_view()
        if view.generation == self._pool_gen:
            return
        self._pool_gen = view.generation
        targets = {view.main_node_id} if view.clustering_mode == "raw" else set(view.usable_ids)
        for i, ps in enumerate(self.pool.slots):
            if ps is not None and set(ps.conns) != targets:
                self.pool.discard(i)

    def _serve(self, sock: socket.socket, addr, is_unix: bool) -> None:
        self._drop_stale_slots()
        self.in_session = True
        try:
            Session(self, sock, addr, is_unix).run()
        except Exception as e:   # a bug must end this session only, never the worker loop
            log.log("WARNING", f"session ended by an internal error: {e.__class__.__name__}: {e}")
            import traceback
            log.log("DEBUG1", traceback.format_exc())
            try:
                sock.close()
            except OSError:
                pass
            self.pool.close_all()
        finally:
            self.in_session = False

    def _reload(self) -> None:
        new = self.server.reload_config(quiet=True)
        if new is not None:
            self.cfg = new
            self.hba = self.server.hba
            self.pool_passwd = self.server.pool_passwd
            log.configure(new)
            self.catalog = CatalogCache(new)
            self._view_gen = -1
