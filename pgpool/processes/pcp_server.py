"""The PCP server: the pcp_main process accepting pcp_* clients, one pcp_child worker per connection.

pcp_main waits on the PCP sockets the parent created (TCP pcp_listen_addresses:pcp_port and
`<pcp_socket_dir>/.s.PGSQL.<pcp_port>`) and forks a pcp_child for every connection.  A pcp_child
answers requests (pcp/protocol.py codecs) until X, EOF or a FATAL error; the values come from
shared memory with the same helpers SHOW pool_nodes / pool_pools / pool_status use, and node
operations go to the parent through the shared request ring + SIGUSR1, as in pgpool-II.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import time
from types import SimpleNamespace

from pcp import protocol as P
from pgpool import log
from pgpool.config.files import PcpConfError, read_pcp_conf
from pgpool.ha.plan import degenerate_refusal
from pgpool.ha.requests import failover_settled, parent_alive, register, snapshot
from pgpool.processes.child import run_child
from pgpool.proxy import local
from pgpool.state import probe
from pgpool.state import shm as S
from pgpool.state.view import build_view

_LEN = struct.Struct("!i")
ROLE_CODES = {name: code for code, name in S.ROLE_NAMES.items()}
# client_min_messages values request 'A' accepts, in pgpool's order
CLIENT_MIN_MESSAGES = ("debug5", "debug4", "debug3", "debug2", "debug1", "log", "commerror", "info",
                       "notice", "warning", "error")
# pcp_stop_pgpool modes -> the signal the parent gets
SHUTDOWN_SIGNALS = {"s": signal.SIGTERM, "f": signal.SIGINT, "i": signal.SIGQUIT}
GRACEFUL_POLL_SECONDS = 1.0
FAILOVER_POLL_SECONDS = 0.1
RECOVERY_DETACH, RECOVERY_PROMOTE = 2, 3        # shm.header.in_recovery (pgpool's InRecovery)


class PcpError(Exception):
    """An ERROR (connection goes on) or FATAL (connection ends) for the PCP client."""

    def __init__(self, severity: str, message: str, detail: str | None = None):
        super().__init__(message)
        self.severity, self.message, self.detail = severity, message, detail


def error(message: str, detail: str | None = None) -> PcpError:
    return PcpError("ERROR", message, detail)


def fatal(message: str, detail: str | None = None) -> PcpError:
    return PcpError("FATAL", message, detail)


class _Disconnect(Exception):
    """The client said X or went away."""


# ---- pcp_main ---------------------------------------------------------------------------------

def pcp_main(server, listeners: list[socket.socket]) -> int:
    """Entry of the PCP process: accept on `listeners`, fork a pcp_child per connection."""
    log.set_process("pcp_main")
    state = SimpleNamespace(cfg=server.cfg, children=set(), stop=None, reload=False)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    pending: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for ls in listeners:
        ls.setblocking(False)
    while state.stop is None:
        try:
            ready, _, _ = select.select([wake_r, *listeners], [], [], 3.0)
        except InterruptedError:
            ready = []
        _drain(wake_r)
        sigs, pending[:] = list(pending), []
        for sig in sigs:
            _pcp_main_signal(server, state, sig)
        _reap(state.children)
        for ls in ready:
            if ls is wake_r or state.stop is not None:
                continue
            try:
                conn, _addr = ls.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                log.log("LOG", f"failed to accept a PCP connection: {e}")
                continue
            _fork_pcp_child(server, state.cfg, listeners, conn, (wake_r, wake_w), state.children)
    return _pcp_main_stop(state, wake_r, pending)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _pcp_main_signal(server, state, sig: int) -> None:
    if sig in SHUTDOWN_SIGNALS.values():
        state.stop = sig
    elif sig == signal.SIGHUP:
        new = server.reload_config(quiet=True)
        if new is not None:
            state.cfg = new
            server.cfg = new
            log.configure(new)
    elif sig == signal.SIGUSR2:
        for pid in list(state.children):       # wake workers waiting for a failover to finish
            _kill(pid, signal.SIGUSR2)


def _reap(children: set) -> None:
    while children:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _pcp_main_stop(state, wake_r: int, pending: list) -> int:
    """Forward the shutdown signal to the workers and wait for them (SIGKILL after 10 s)."""
    for pid in list(state.children):
        _kill(pid, state.stop)
    deadline = time.monotonic() + 10
    while state.children:
        _reap(state.children)
        if not state.children:
            break
        if time.monotonic() > deadline:
            for pid in list(state.children):
                _kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        try:
            select.select([wake_r], [], [], 0.1)
        except InterruptedError:
            pass
        _drain(wake_r)
        for sig in list(pending):
            if sig in (signal.SIGINT, signal.SIGQUIT):
                for pid in list(state.children):
                    _kill(pid, sig)
        pending.clear()
    return 0


def _fork_pcp_child(server, cfg, listeners, conn: socket.socket, wake_fds, children: set) -> None:
    pid = os.fork()
    if pid:
        conn.close()
        children.add(pid)
        return

    def body():
        for fd in wake_fds:
            os.close(fd)
        for ls in listeners:
            ls.close()
        log.set_process("pcp_child")
        return PcpChild(server, cfg, conn).run()
    run_child(body, what="PCP worker")


# ---- pcp_child --------------------------------------------------------------------------------

class PcpChild:
    """One PCP connection: authentication, then requests until X / EOF / FATAL."""

    def __init__(self, server, cfg, sock: socket.socket):
        self.server = server
        self.cfg = cfg
        self.shm = server.shm
        self.sock = sock
        self.salt: bytes | None = None
        self.authenticated = False
        self.client_min_messages = "notice"
        self.wakeup = False

    # signals as pgpool's PCP worker: TERM = finish this connection, INT/QUIT = exit now
    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, lambda s, f: os._exit(0))
        signal.signal(signal.SIGQUIT, lambda s, f: os._exit(0))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGUSR2, self._on_wakeup)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)

    def _on_wakeup(self, signum, frame) -> None:
        self.wakeup = True

    def run(self) -> int:
        self._install_signals()
        self.sock.setblocking(True)
        try:
            while True:
                try:
                    kind, payload = self._read_packet()
                    self._dispatch(kind, payload)
                except PcpError as e:
                    log.log(e.severity, e.message, detail=e.detail)
                    self.sock.sendall(P.encode_error(e.severity, e.message, e.detail))
                    if e.severity == "FATAL":
                        return 0
        except (_Disconnect, OSError):
            return 0
        finally:
            self.sock.close()

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _Disconnect()
            buf += chunk
        return buf

    def _read_packet(self) -> tuple[bytes, bytes]:
        kind = self._recv_exact(1)
        (length,) = _LEN.unpack(self._recv_exact(4))
        if length <= 0 or length >= P.MAX_PACKET_LENGTH:
            raise fatal("invalid PCP packet", f"incorrect packet length ({length})")
        return kind, self._recv_exact(max(0, length - 4))

    def _dispatch(self, kind: bytes, payload: bytes) -> None:
        if kind == b"M":
            self.salt = os.urandom(4)
            self.sock.sendall(P.encode_salt(self.salt))
            return
        if kind == b"R":
            self._authenticate(payload)
            return
        if not self.authenticated:
            raise fatal("authentication failed for new PCP connection", "connection not authorized")
        handler = HANDLERS.get(kind)
        if handler is None:
            raise fatal("PCP processing request",
                        f'unknown PCP packet type "{kind.decode("latin-1")}"')
        handler(self, payload)

    # ---- authentication ----------------------------------------------------------------------

    def _authenticate(self, payload: bytes) -> None:
        salt, self.salt = self.salt, None
        if salt is None:
            raise fatal("authentication failed", "username and/or password does not match")
        name_end = payload.find(b"\0", 0, P.MAX_USER_PASSWD_LEN)
        if name_end < 0:
            raise fatal("failed to authenticate PCP user", "error while reading authentication packet")
        user = payload[:name_end].decode(errors="surrogateescape")
        sent = payload[name_end + 1:].split(b"\0", 1)[0][:P.MAX_USER_PASSWD_LEN].decode(errors="replace")
        try:
            entries = read_pcp_conf(self.server.pcp_file)
        except PcpConfError as e:
            raise fatal(e.message, e.detail) from None
        if not any(u == user and P.salted_hash(h, u, salt) == sent for u, h in entries):
            raise fatal(f'authentication failed for user "{user}"', "username and/or password does not match")
        self.authenticated = True
        self.sock.sendall(P.encode_auth_ok())

    # ---- information requests -----------------------------------------------------------------

    def _context(self) -> SimpleNamespace:
        """What the SHOW pool_* helpers read from a session: config, shared memory, cluster view."""
        return SimpleNamespace(cfg=self.cfg, shm=self.shm, view=build_view(self.shm, self.cfg))

    def _node_count(self, payload: bytes) -> None:
        self.sock.sendall(P.encode_node_count(len(self.cfg.backends)))

    def _node_info_record(self, ctx, node: int) -> P.NodeInfo:
        cfg = self.cfg
        bc, slot = cfg.backends[node], self.shm.backends[node]
        total = sum(self.shm.backends[b.node_id].weight for b in cfg.backends) or 1.0
        role = local._role_name(ctx, node)
        pg_status = probe.pg_status(cfg, node)
        return P.NodeInfo(bc.hostname, bc.port, slot.status, slot.quarantine, pg_status,
                          P.RAND_MAX * slot.weight / total, ROLE_CODES[role],
                          probe.pg_role(cfg, node, role, pg_status, self.server.pool_passwd),
                          slot.standby_delay,
                          slot.replication_state.decode(), slot.replication_sync_state.decode(),
                          slot.status_changed_time)

    def _node_info(self, payload: bytes) -> None:
        node = P.decode_request(b"I", payload)
        count = len(self.cfg.backends)
        if node != -1 and not 0 <= node < count:
            raise error("informing node info failed", f"invalid node ID : {node}")
        ctx = self._context()
        ids = range(count) if node == -1 else [node]
        self.sock.sendall(P.encode_node_info([self._node_info_record(ctx, i) for i in ids]))

    def _health_check_stats(self, payload: bytes) -> None:
        node = P.decode_request(b"H", payload)
        count = len(self.cfg.backends)
        if node < 0 or node > count:
            raise error("informing health check stats info failed", f"invalid node ID {node}")
        if node == count:
            raise error("informing health check stats info failed",
                        f"stats data for node ID {node} does not exist")
        row = local.show_pool_health_check_stats(self._context()).rows[node]
        self.sock.sendall(P.encode_health_check_stats(P.HealthCheckStats(*row)))

    def _worker_pids(self) -> list[int]:
        return [p.pid for p in self.shm.processes if p.pid]

    def _process_count(self, payload: bytes) -> None:
        self.sock.sendall(P.encode_proc_count(self._worker_pids()))

    def _process_info(self, payload: bytes) -> None:
        raw = P.split_cstrings(payload)
        pid = P.decode_request(b"P", payload)
        if pid != 0 and pid not in self._worker_pids():
            raise error("informing process info failed", f"invalid process ID : {raw[0] if raw else ''}")
        rows = local.show_pool_pools(self._context()).rows
        if pid:
            rows = [r for r in rows if r[0] == str(pid)]
            size = self.shm.max_pool * len(self.cfg.backends)
        else:
            size = len(rows)
        self.sock.sendall(P.encode_proc_info([P.ProcessInfo(*r) for r in rows], size))

    def _pool_status(self, payload: bytes) -> None:
        rows = local.show_pool_status(self._context()).rows
        self.sock.sendall(P.encode_pool_status([P.ConfigItem(*r) for r in rows]))

    def _watchdog_info(self, payload: bytes) -> None:
        detail = "watchdog is not supported yet" if self.cfg.use_watchdog else "watchdog is not enabled"
        raise error("PCP: informing watchdog info failed", detail)

    # ---- node operations --------------------------------------------------------------------

    def _signal_parent(self, sig: int) -> bool:
        try:
            os.kill(self.shm.header.parent_pid, sig)
            return True
        except OSError:
            return False

    def _detach_node(self, payload: bytes, graceful: bool = False) -> None:
        node = P.decode_request(b"D", payload)
        log.log("DEBUG1", "PCP: processing detach node", detail=f"detaching Node ID {node}")
        self._detach(node, graceful, switchover=False)
        self.sock.sendall(P.encode_command_complete(b"d"))

    def _detach_node_gracefully(self, payload: bytes) -> None:
        self._detach_node(payload, graceful=True)

    def _detach(self, node: int, graceful: bool, switchover: bool) -> None:
        """pgpool's pool_detach_node.  Graceful: wait until no client is connected (up to
        recovery_timeout; nothing is detached when they do not leave) and until the parent has
        finished.  A switchover (promote -s: detach the primary, failover_command promotes
        `node`) also returns only when the parent has finished."""
        self._degenerate_check(node)
        flags = S.REQ_FLAG_PCP | (S.REQ_FLAG_SWITCHOVER if switchover else 0)
        if not graceful:
            self._register(S.REQ_NODE_DOWN, node, flags, wait=switchover)
            return
        self.shm.header.in_recovery = RECOVERY_DETACH
        try:
            if self._wait_sessions_closed():
                self._register(S.REQ_NODE_DOWN, node, flags | S.REQ_FLAG_GRACEFUL, wait=True)
        finally:
            self.shm.header.in_recovery = 0

    def _degenerate_check(self, node: int) -> None:
        """pgpool's test of a detach request: ERROR when refused.  As pgpool-II 4.3.5 does, an
        id past the configured backends (below 128) passes here; the parent then detaches nothing."""
        if len(self.cfg.backends) <= node < S.MAX_BACKENDS:
            return
        refusal = degenerate_refusal(snapshot(self.shm, self.cfg), node, os.getpid())
        if refusal:
            raise error(refusal)

    def _register(self, kind: int, node: int, flags: int, wait: bool) -> None:
        what = {S.REQ_NODE_DOWN: "degenerate backend", S.REQ_NODE_UP: "failback",
                S.REQ_PROMOTE: "promote backend"}[kind]
        log.log("LOG", f"received {what} request for node_id: {node} from pid [{os.getpid()}]")
        before = self.shm.header.failover_count
        if register(self.shm, kind, node, flags) and wait:
            self._wait_failover_done(before)

    def _wait_sessions_closed(self) -> bool:
        """pgpool's wait_connection_closed: True once no client is connected, False after
        recovery_timeout seconds."""
        deadline = time.monotonic() + max(0, self.cfg.recovery_timeout)
        while self.shm.connected_clients():
            if time.monotonic() >= deadline:
                log.log("LOG", "wait_connection_closed: existing connections did not close in "
                               f"{self.cfg.recovery_timeout} sec.")
                return False
            time.sleep(GRACEFUL_POLL_SECONDS)
        return True

    def _wait_failover_done(self, before: int) -> None:
        """Until the parent has finished what was queued (it bumps failover_count per request)."""
        while not failover_settled(self.shm, before) and parent_alive(self.shm):
            time.sleep(FAILOVER_POLL_SECONDS)

    def _attach_node(self, payload: bytes) -> None:
        node = P.decode_request(b"C", payload)
        log.log("DEBUG1", "PCP: processing attach node", detail=f"attaching Node ID {node}")
        if not 0 <= node < S.MAX_BACKENDS:
            raise error(f"invalid failback request, node id: {node} is out of range. node id must be "
                        f"between [0 and {S.MAX_BACKENDS}]")
        self._register(S.REQ_NODE_UP, node, S.REQ_FLAG_PCP, wait=False)
        self.sock.sendall(P.encode_command_complete(b"c"))

    def _promote_node(self, payload: bytes, graceful: bool = False) -> None:
        node, option = P.decode_request(b"J", payload)
        if not 0 <= node < len(self.cfg.backends):
            raise error("could not process promote request", f"node id {node} is not valid")
        if self.cfg.clustering_mode != "streaming_replication":
            raise fatal("invalid pgpool mode for process promote request",
                        f"not in streaming replication mode, can't promote node id {node}")
        primary = self.shm.header.primary_node_id
        if node == primary:
            raise fatal("invalid promote request",
                        f"specified node is already primary node, can't promote node id {node}")
        log.log("LOG", f"pcp_promote_node: promote option: {option}")
        if option == "s":
            log.log("DEBUG1", "PCP: processing promote node",
                    detail=f"promoting Node ID {node} and shutdown primary node {primary}")
            self._detach(node, graceful, switchover=True)
        else:
            log.log("DEBUG1", "PCP: processing promote node", detail=f"promoting Node ID {node}")
            self._promote(node, graceful)
        self.sock.sendall(P.encode_command_complete(b"d"))

    def _promote_node_gracefully(self, payload: bytes) -> None:
        self._promote_node(payload, graceful=True)

    def _promote(self, node: int, graceful: bool) -> None:
        """pgpool's pool_promote_node: relabel `node` as the primary (PostgreSQL is not promoted)."""
        status = self.shm.backends[node].status
        if status not in (S.CON_UP, S.CON_CONNECT_WAIT):
            log.log("LOG", f"invalid promote backend request, node id : {node} status: [{status}] not valid")
            return
        if not graceful:
            self._register(S.REQ_PROMOTE, node, S.REQ_FLAG_PCP, wait=False)
            return
        self.shm.header.in_recovery = RECOVERY_PROMOTE
        try:
            if self._wait_sessions_closed():
                self._register(S.REQ_PROMOTE, node, S.REQ_FLAG_PCP | S.REQ_FLAG_GRACEFUL, wait=True)
        finally:
            self.shm.header.in_recovery = 0

    def _recovery_node(self, payload: bytes) -> None:
        """pcp_recovery_node: the whole online recovery runs here; the reply comes at the end."""
        from pgpool.ha import recovery
        node = P.decode_request(b"O", payload)
        try:
            recovery.recover_node(self.cfg, self.shm, node, self.server.pool_passwd)
        except recovery.RecoveryError as e:
            raise PcpError(e.severity, e.message, e.detail) from None
        self.sock.sendall(P.encode_command_complete(b"c"))

    # ---- server control -----------------------------------------------------------------------

    def _reload_config(self, payload: bytes) -> None:
        if not self._signal_parent(signal.SIGHUP):
            raise error("process reload config request failed", "failed to signal pgpool parent process")
        self.sock.sendall(P.encode_command_complete(b"z"))

    def _stop_pgpool(self, payload: bytes) -> None:
        mode = payload[:1].decode("latin-1")
        log.log("DEBUG1", "PCP: processing shutdown request", detail=f'shutdown mode "{mode}"')
        sig = SHUTDOWN_SIGNALS.get(mode)
        if sig is None:
            raise error("PCP: error while processing shutdown request", f'invalid shutdown mode "{mode}"')
        self.sock.sendall(P.encode_command_complete(b"t"))
        log.log("LOG", f"received {dict(s='smart', f='fast', i='immediate')[mode]} shutdown request "
                       "from PCP")
        self._signal_parent(sig)

    def _set_parameter(self, payload: bytes) -> None:
        parts = P.split_cstrings(payload)
        name = parts[0] if parts else ""
        value = parts[1] if len(parts) > 1 else ""
        log.log("LOG", f'set configuration parameter, "{name} TO {value}"')
        if name.lower() != "client_min_messages":
            raise error("PCP: set configuration parameter failed", f'invalid parameter "{name}"')
        if value.lower() not in CLIENT_MIN_MESSAGES:
            raise error("PCP: set configuration parameter failed",
                        f'invalid value "{value}" for parameter "{name}"')
        self.client_min_messages = value.lower()
        self.sock.sendall(P.encode_command_complete(b"a"))

    def _stop_recovery(self, payload: bytes) -> None:
        log.log("DEBUG1", "PCP processing request, stop online recovery")

    def _disconnect(self, payload: bytes) -> None:
        raise _Disconnect()


HANDLERS = {
    b"L": PcpChild._node_count,
    b"I": PcpChild._node_info,
    b"H": PcpChild._health_check_stats,
    b"N": PcpChild._process_count,
    b"P": PcpChild._process_info,
    b"B": PcpChild._pool_status,
    b"W": PcpChild._watchdog_info,
    b"D": PcpChild._detach_node,
    b"d": PcpChild._detach_node_gracefully,
    b"C": PcpChild._attach_node,
    b"J": PcpChild._promote_node,
    b"j": PcpChild._promote_node_gracefully,
    b"O": PcpChild._recovery_node,
    b"Z": PcpChild._reload_config,
    b"T": PcpChild._stop_pgpool,
    b"t": PcpChild._stop_pgpool,
    b"A": PcpChild._set_parameter,
    b"F": PcpChild._stop_recovery,
    b"X": PcpChild._disconnect,
}
