"""A preforked worker: accepts one client at a time on the shared sockets and runs its session.

Signals only set flags (or end an idle worker at once): SIGTERM = exit when the current session
ends, SIGINT / SIGQUIT = exit now, SIGHUP = reload the configuration before the next client,
SIGUSR1 = close idle pooled backend connections.
"""

import os
import select
import signal
import socket
import time

from pgpool import log
from pgpool.proxy.catalog import CatalogCache
from pgpool.proxy.pool import ConnectionPool
from pgpool.proxy.session import Session, Stats
from pgpool.state import shm as S
from pgpool.state.view import build_view

EXIT_RESTART = 1
EXIT_FATAL = 3


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

    def backend_failed(self, node: int, message: str) -> None:
        """A backend connection failed: log it and, per failover_on_backend_error, ask the
        parent to detach the node."""
        log.log("LOG", f"backend node {node} failed", message)
        if self.cfg.failover_on_backend_error and self.shm.backends[node].status == S.CON_UP:
            self.shm.push_request(S.REQ_NODE_DOWN, node, 0, os.getpid())
            try:
                os.kill(self.shm.header.parent_pid, signal.SIGUSR1)
            except OSError:
                pass

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
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)   # a signal ends the wait in poll()

    # ---- main loop -------------------------------------------------------------------------

    def run(self) -> int:
        log.set_process("child")
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
            poller.register(ls.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
            by_fd[ls.fileno()] = ls
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
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                continue          # act on the signal's flag first; a pending client stays queued
            for fd, _ev in events:
                try:
                    sock, addr = by_fd[fd].accept()
                except (BlockingIOError, InterruptedError):
                    continue        # another worker took it
                except OSError as e:
                    log.log("LOG", f"failed to accept a connection: {e}")
                    continue
                self._serve(sock, addr)
                served += 1
                idle_since = time.monotonic()
                slot.last_activity = int(time.time())
                if cfg.child_max_connections > 0 and served >= cfg.child_max_connections:
                    log.log("DEBUG1", "child_max_connections reached, exiting")
                    return 0
                if self.stop_after_session or slot.need_to_restart:
                    return 0
                break

    def _serve(self, sock: socket.socket, addr) -> None:
        sock.setblocking(True)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.in_session = True
        try:
            Session(self, sock, addr).run()
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
            log.configure(new)
            self.catalog = CatalogCache(new)
            self._view_gen = -1
