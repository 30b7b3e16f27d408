"""One client session inside a worker: startup, authentication, pool slot, relay, cleanup."""

import copy
import socket
import ssl
import struct
import time

from pgpool import log
from pgpool.protocol import messages as m
from pgpool.proxy import auth_flow, tls
from pgpool.proxy.backend import (BackendConn, BackendError, open_socket, read_message,
                                  read_startup_reply)
from pgpool.proxy.cancel import forward_cancel
from pgpool.proxy.local import LocalCommands
from pgpool.proxy.pool import NEVER_CACHED_DATABASES, PooledSession, pool_key, reset_plan
from pgpool.proxy.relay import (BackendLost, ClientClosed, ClientIdle, ClientProtocolError,
                                Relay)
from pgpool.proxy.routing import RawRouting, StreamRouting
from pgpool.proxy.startup import Cancel, ClientGone, StartupRefused, read_startup
from pgpool.state import shm as S
from pgpool.state.view import restrict


class SessionEnd(Exception):
    """End the session after sending `reply` (an ErrorResponse) to the client."""

    def __init__(self, log_message: str, reply: bytes = b"", level: str = "LOG"):
        super().__init__(log_message)
        self.reply = reply
        self.level = level


_TIMEVAL = struct.Struct("@ll")
RESET_TIMEOUT = 10.0        # seconds a backend may take to answer each read of the reset


def _set_recv_timeout(sock: socket.socket, seconds: int) -> None:
    """SO_RCVTIMEO: a blocking recv fails with EAGAIN after `seconds` (0 = never)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(int(seconds), 0))


class RecvTimeout:
    """authentication_timeout as a kernel receive timeout (SO_RCVTIMEO: no poll() before each
    recv), armed before the first read from the client that has to wait -- never for a client
    whose packets are there when they are read, as a trusted one's usually are."""

    __slots__ = ("sock", "seconds", "armed")

    def __init__(self, sock: socket.socket, seconds: int):
        self.sock, self.seconds, self.armed = sock, seconds, False

    def arm(self) -> None:
        if not self.armed and self.seconds > 0:
            _set_recv_timeout(self.sock, self.seconds)
            self.armed = True

    def disarm(self, sock: socket.socket) -> None:
        """`sock`: the client's socket now (a TLS one replaces the plain one)."""
        if self.armed:
            _set_recv_timeout(sock, 0)
            self.armed = False


def fatal(sqlstate: str, message: str, detail: str | None = None) -> bytes:
    return m.error_response("FATAL", sqlstate, message, detail)


class ClientIO:
    """Message I/O on the client socket for the authentication exchanges; `before_read()` is
    called before each read from the socket."""

    def __init__(self, sock: socket.socket, client=None, before_read=None):
        self.sock = sock
        self.client = client                # auth_flow.ClientInfo
        self.buf = bytearray()
        self.before_read = before_read

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_message(self) -> tuple[bytes, bytes]:
        try:
            return read_message(self.sock, self.buf, 65536,
                                "client closed the connection during authentication",
                                self.before_read)
        except ValueError as e:
            raise ClientProtocolError(f"{e} during authentication") from e


class Stats:
    """Per-node statement and error counters in this worker's process slot."""

    def __init__(self, slot):
        self.slot = slot
        self._fields = {"select": slot.select_cnt, "insert": slot.insert_cnt,
                        "update": slot.update_cnt, "delete": slot.delete_cnt,
                        "ddl": slot.ddl_cnt, "other": slot.other_cnt}

    def count(self, kind: str, nodes) -> None:
        arr = self._fields[kind]
        for n in nodes:
            arr[n] += 1

    def backend_error(self, node: int, payload: bytes) -> bytes:
        """Count an ErrorResponse of `node`; returns its severity (b"ERROR", b"FATAL", ...)."""
        sev = payload[payload.index(b"S") + 1:payload.index(b"\0")] if payload[:1] == b"S" else b""
        if sev == b"FATAL":
            self.slot.fatal_cnt[node] += 1
        elif sev == b"PANIC":
            self.slot.panic_cnt[node] += 1
        else:
            self.slot.error_cnt[node] += 1
        return sev


class Session:
    def __init__(self, worker, sock: socket.socket, addr, is_unix: bool):
        self.worker = worker
        self.cfg = worker.cfg
        self.started_at = time.time()
        self.shm = worker.shm
        self.sock = sock
        self.is_unix = is_unix
        self.client_host = "[local]" if is_unix else addr[0]
        self.client_port = None if is_unix else addr[1]
        self.slot = worker.slot
        self.stats = worker.stats
        self.conns: dict[int, BackendConn] = {}
        self.ps: PooledSession | None = None
        self.startup = None
        self.route_state = None
        self.view = None
        self.relay: Relay | None = None
        self.clean_exit = False
        self.client_info: auth_flow.ClientInfo | None = None    # known once the startup is read
        self.pgpool_overrides: dict = {}
        self.recv_timeout = RecvTimeout(sock, self.cfg.authentication_timeout)

    def log(self, level: str, message: str, detail: str | None = None) -> None:
        log.log(level, message, detail=detail)

    # ---- entry point -------------------------------------------------------------------

    def run(self) -> None:
        cfg = self.cfg
        sock = self.sock
        try:
            start_tls = None if self.is_unix or tls.frontend() is None else self._start_tls
            try:
                first = read_startup(sock, start_tls, self.recv_timeout.arm)
            except tls.TlsHandshakeError as e:
                self.log("LOG", f"pool_ssl: SSL handshake with client {self.client_host} failed", str(e))
                return
            except StartupRefused as e:
                self.log("LOG", f"invalid startup packet from {self.client_host}: {e}")
                self._send_quietly(e.reply)
                return
            except ClientGone as e:
                if isinstance(e.__cause__, socket.timeout):
                    self.log("LOG", "authentication timeout")
                else:
                    self.log("DEBUG1", f"client {self.client_host} left before startup: {e}")
                return
            if isinstance(first, Cancel):
                forward_cancel(self.worker, first.pid, first.key)
                return
            self.startup = first
            self.client_info = auth_flow.ClientInfo.of(self.sock, self.client_host)
            log.set_session(user=first.user, database=first.database,
                            application_name=first.application_name,
                            client_host=self.client_host, client_port=self.client_port)
            if cfg.log_connections:
                self.log("LOG", "new connection received",
                         f"connecting host={self.client_host}"
                         + (f" port={self.client_port}" if self.client_port else ""))
            self._admit()
            self._begin_session()
            self._relay()
        except SessionEnd as e:
            if e.reply:
                self._send_quietly(e.reply)
            self.log(e.level, str(e))
        except (socket.timeout, BlockingIOError, ssl.SSLWantReadError):
            self.log("LOG", "authentication timeout")
        except (ClientGone, EOFError, ConnectionError) as e:
            self.log("DEBUG1", f"client connection ended during startup: {e}")
        finally:
            self._cleanup()

    def _start_tls(self, sock: socket.socket) -> tls.TlsSocket:
        """The client asked for SSL and was told 'S': the handshake; the TLS socket from now on.
        SO_RCVTIMEO does not stop OpenSSL (it retries), so authentication_timeout is a socket
        timeout on a TLS connection until the client is authenticated."""
        timeout = self.cfg.authentication_timeout
        sock.settimeout(timeout if timeout > 0 else None)
        self.sock = tls.accept(sock, tls.frontend())
        return self.sock

    def _send_quietly(self, data: bytes) -> None:
        if not data:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    # ---- admission, authentication, backend connections --------------------------------

    def _admit(self) -> None:
        cfg = self.cfg
        if cfg.reserved_connections > 0:
            limit = cfg.num_init_children - cfg.reserved_connections
            if self.shm.connected_clients() >= limit:     # this client is not counted yet
                raise SessionEnd("Sorry, too many clients already",
                                 fatal("53300", "Sorry, too many clients already"))

    def _backend_targets(self) -> list[int]:
        """Nodes this session connects to: the main node in raw mode, every up node otherwise."""
        view = self.view
        up = list(view.usable_ids)
        if not up:
            raise SessionEnd("all backend nodes are down",
                             fatal("XX000", "pgpool is not accepting any new connections",
                                   "all backend nodes are down, pgpool requires at least one "
                                   "valid node"))
        if view.clustering_mode == "raw":
            return [view.main_node_id]
        return up

    def _begin_session(self) -> None:
        cfg = self.cfg
        st = self.startup
        self.view = self.worker.current_view()
        main_node = None
        key = pool_key(st.params)
        hba_rule = None
        if cfg.enable_pool_hba:
            hba_rule = auth_flow.hba_rule(self.worker, self.is_unix, self.client_host,
                                          st.database, st.user, ssl_on=self.client_info.tls)
        ps = self.worker.pool.take(key) if cfg.connection_cache else None
        if ps is not None and set(ps.conns) != set(self._backend_targets()):
            # a node went down, or came back since (a session that lost a node keeps its slot)
            self.worker.pool.discard(ps.slot)
            ps = None
        io = ClientIO(self.sock, self.client_info,
                      None if self.client_info.tls else self.recv_timeout.arm)
        io.buf += st.extra
        self.client_io = io
        reused = ps is not None
        if ps is not None:
            auth_flow.reauthenticate(self.worker, io, ps, hba_rule, st)
            self.conns = ps.conns
            main_node = ps.main_node
            self.ps = ps
            self._send_handshake(ps.main)
        else:
            targets = self._backend_targets()
            main_node = targets[0] if self.view.clustering_mode == "raw" else \
                (self.view.primary if self.view.primary in targets else targets[0])
            client_password = None
            if hba_rule is not None:
                client_password = auth_flow.authenticate_client(self.worker, io, hba_rule,
                                                                st.user, st.database)
            slot = self.worker.pool.free_slot()
            self.ps = PooledSession(slot, key, st.user, st.database, {}, main_node,
                                    st.major, st.minor)
            self._connect_backends(targets, main_node, io, hba_rule, client_password)
            self.ps.conns = self.conns
            self._send_handshake(self.conns[main_node])
        now = int(time.time())
        if reused:
            self.slot.pools[self.ps.slot].counter = self.ps.counter
        else:
            self.worker.pool.put(self.ps)
        pool_shm = self.slot.pools[self.ps.slot]
        pool_shm.client_connection_time = now
        pool_shm.counter = self.ps.counter
        self.slot.current_pool = self.ps.slot
        self.slot.connected = 1
        self.slot.client_connection_count += 1
        self.slot.client_start_time = now
        self.main_node = main_node

    def _connect_backends(self, targets, main_node, io, hba_rule, client_password):
        cfg = self.cfg
        st = self.startup
        timeout = (cfg.connect_timeout / 1000.0) if cfg.connect_timeout else None
        order = [main_node] + [n for n in targets if n != main_node]
        for n in order:
            b = cfg.backends[n]
            try:
                sock = open_socket(b.hostname, b.port, timeout)
            except OSError as e:
                self.worker.backend_failed(n, f"failed to connect to PostgreSQL server "
                                              f"on \"{b.hostname}:{b.port}\": {e}")
                if n == main_node:
                    raise SessionEnd(f"failed to create a backend connection to node {n}",
                                     fatal("08006", "failed to create a backend connection",
                                           f"connection to node {n} "
                                           f"({b.hostname}:{b.port}) failed: {e}"))
                continue
            conn = BackendConn(n, sock)
            conn.send(st.raw)
            try:
                if hba_rule is None and n == main_node:
                    client_password = auth_flow.pass_through(self.worker, io, conn, self.ps,
                                                             several=len(targets) > 1)
                else:
                    auth_flow.authenticate_backend(self.worker, conn, st.user, client_password,
                                                   self.ps)
                read_startup_reply(conn)
            except BackendError as e:
                conn.close(terminate=False)
                self._close_conns()
                f = e.fields
                reply = m.error_response(f.get("S", "FATAL"), f.get("C", "XX000"),
                                         f.get("M", str(e)), f.get("D"), f.get("H")) \
                    if f else fatal("08006", str(e))
                raise SessionEnd(f"backend node {n} refused the session: {e}", reply) from e
            except (EOFError, OSError) as e:
                conn.close(terminate=False)
                self._close_conns()
                raise SessionEnd(f"lost backend node {n} during startup: {e}",
                                 fatal("08006", f"unable to read data from DB node {n}",
                                       "EOF encountered with backend")) from e
            self.conns[n] = conn

    def _close_conns(self) -> None:
        for c in self.conns.values():
            c.close()
        self.conns = {}

    def _send_handshake(self, main: BackendConn) -> None:
        """The client is authenticated: no more timeout on its socket (a TLS socket's would
        poll() before each write); AuthenticationOk, the main backend's ParameterStatus and
        BackendKeyData (built once per connection), ReadyForQuery."""
        self.recv_timeout.disarm(self.sock)
        if self.client_info.tls:
            self.sock.settimeout(None)
        hs = main.handshake
        if hs is None:
            out = [m.auth_ok()]
            out.extend(m.parameter_status(k, v) for k, v in main.params.items())
            out.append(m.backend_key_data(main.pid, main.key))
            hs = main.handshake = b"".join(out)
        self.sock.sendall(hs + m.ready_for_query(main.txn_status))

    # ---- relay -------------------------------------------------------------------------

    def _make_router(self):
        if self.view.clustering_mode == "raw" or len(self.conns) == 1 and \
                self.view.clustering_mode != "streaming_replication":
            return RawRouting(self, self.main_node)
        if self.view.clustering_mode != "streaming_replication":
            raise SessionEnd(f"clustering mode {self.view.clustering_mode} is not supported yet",
                             fatal("0A000", f"backend_clustering_mode "
                                            f"'{self.view.clustering_mode}' is not supported yet"))
        from pgpool import router
        st = self.startup
        self.route_state = router.SessionRouteState(st.database, st.application_name,
                                                    counters=self.slot.route_cnt,
                                                    catalog=self.worker.catalog.bind(self))
        view = restrict(self.view, set(self.conns))
        self.view = view
        lb = self.route_state.choose_load_balance_node(view, self.cfg)
        self.slot.pools[self.ps.slot].load_balancing_node = -1 if lb is None else lb
        return StreamRouting(self, self.route_state, view)

    def _relay(self) -> None:
        router = self._make_router()
        local = LocalCommands(self)
        if isinstance(router, StreamRouting):
            # the primary is the one node the session cannot lose; others come and go
            relay = Relay(self.sock, self.conns, router, local, self.stats,
                          idle_limit=self.cfg.client_idle_limit, on_status=self._on_status,
                          essential=self.main_node, on_lost=self._node_lost,
                          watch=self.shm.header, on_view_change=self._view_changed)
            relay.generation = self.view.generation
        else:
            relay = Relay(self.sock, self.conns, router, local, self.stats,
                          idle_limit=self.cfg.client_idle_limit, on_status=self._on_status)
        relay.cbuf += self.client_io.buf
        self.relay = relay
        self.slot.status = S.PS_IDLE
        try:
            relay.run()
            self.clean_exit = True
        except ClientClosed as e:
            self.log("ERROR", "unable to read data from frontend", str(e))
        except ClientIdle as e:
            self._send_quietly(fatal("57000", "unable to read data from frontend",
                                     f"child connection forced to terminate due to "
                                     f"client_idle_limit:{e.limit} is reached"))
            self.log("LOG", f"pool_read_kind: child connection forced to terminate due to "
                            f"client_idle_limit:{e.limit} is reached")
        except ClientProtocolError as e:
            self._send_quietly(fatal("08P01", str(e)))
            self.log("LOG", f"protocol violation from client: {e}")
        except BackendLost as e:
            self._check_terminated(e.node_id)
            self.worker.backend_failed(e.node_id, str(e), shutdown=e.shutdown)
            self._send_quietly(fatal("08006", f"unable to read data from DB node {e.node_id}",
                                     str(e)))
            self.log("LOG", f"lost connection to backend node {e.node_id}: {e}")
            self._close_conns()

    # ---- nodes going away mid-session ----------------------------------------------------

    def _node_lost(self, node: int, message: str, shutdown: bool, report: bool) -> None:
        """The relay dropped a node other than the primary: route around it from now on."""
        self._check_terminated(node)
        self.log("LOG", f"session goes on without backend node {node}", message)
        self.slot.pools[self.ps.slot].conns[node].connected = 0
        self._route_around_lost_nodes(self.worker.current_view())
        if report:
            self.worker.backend_failed(node, message, shutdown=shutdown)

    def _check_terminated(self, node: int) -> None:
        """SessionEnd if the lost connection to `node` was ended by a pg_terminate_backend()
        routed through pgpool (pgpool-II's swallow_termination): the session ends as the
        caller wanted, and that is no node failure."""
        c = self.slot.pools[self.ps.slot].conns[node]
        if c.terminating_pid and c.terminating_pid == c.pid:
            message = (f"connection to postmaster on DB node {node} was lost due to "
                       f"pg_terminate_backend")
            raise SessionEnd(message, fatal("57P01", message,
                                            "pg_terminate_backend was called on the backend"))

    def _view_changed(self) -> None:
        """The shared node table changed (between two units): drop the nodes now down; the
        primary going down ends the session."""
        view = self.worker.current_view()
        if not view.usable(self.main_node):
            raise BackendLost(self.main_node, f"backend node {self.main_node} is down")
        for node in [n for n in self.conns if not view.usable(n)]:
            self.relay.lose(node, f"backend node {node} was detached", report=False)
        self._route_around_lost_nodes(view)

    def _route_around_lost_nodes(self, view) -> None:
        """Routing sees `view` minus the nodes this session has no connection to; a lost
        load-balance node is replaced by the primary."""
        view = restrict(view, set(self.conns))
        self.view = view
        router = self.relay.router
        router.set_view(view)
        state = self.route_state
        if state.load_balance_node is not None and state.load_balance_node not in self.conns:
            state.load_balance_node = self.main_node
            self.slot.pools[self.ps.slot].load_balancing_node = self.main_node

    def _on_status(self, busy: bool, txn: bytes) -> None:
        if busy:
            self.slot.status = S.PS_EXECUTE_COMMAND
        else:
            self.slot.status = S.PS_IDLE_IN_TRANSACTION if txn != b"I" else S.PS_IDLE

    def apply_overrides(self, overrides: dict) -> None:
        """PGPOOL SET / RESET: this session sees the configuration with these values."""
        self.pgpool_overrides = overrides
        cfg = copy.copy(self.worker.cfg)        # copies the instance dict too
        cfg.values = dict(cfg.values)
        cfg.values.update(overrides)
        cfg.refresh_attributes()
        self.cfg = cfg
        if self.relay is not None:
            self.relay.router.configure(cfg)
            self.relay.idle_limit = cfg.client_idle_limit
        log.configure(cfg)

    # ---- end of session ----------------------------------------------------------------

    def _cleanup(self) -> None:
        cfg = self.cfg
        ps = self.ps
        now = int(time.time())
        if ps is not None:
            pool_shm = self.slot.pools[ps.slot]
            pool_shm.client_disconnection_time = now
            keep = (self.clean_exit and cfg.connection_cache and self.conns
                    and ps.database not in NEVER_CACHED_DATABASES
                    and not ps.auth.get("no_cache")
                    and (self.relay is None or self.relay.drain())
                    and self._reset_backends())
            if keep:
                ps.close_time = time.time()
            else:
                self.worker.pool.discard(ps.slot)
        if self.startup is not None and cfg.log_disconnections:
            ms = int((time.time() - self.started_at) * 1000)
            self.log("LOG", f"frontend disconnection: session time: {ms // 3600000}:"
                            f"{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d} "
                            f"user={self.startup.user} "
                            f"database={self.startup.database} host={self.client_host}"
                            + (f" port={self.client_port}" if self.client_port else ""))
        self.slot.connected = 0
        self.slot.current_pool = -1
        self.slot.status = S.PS_WAIT_FOR_CONNECTION
        log.clear_session()
        if self.pgpool_overrides:
            log.configure(self.worker.cfg)
        sock = self.sock
        if isinstance(sock, tls.TlsSocket):
            sock.close_notify()
        try:
            sock.close()
        except OSError:
            pass
        # relay -> router -> session and route state -> catalog -> session are reference
        # cycles: broken here, a session is freed at once, not by the garbage collector
        self.relay = self.route_state = None

    def _reset_backends(self) -> bool:
        """Run reset_query_list on every backend (the queries sent at once, then the replies
        read); False if one failed or a backend did not answer (the slot is then dropped)."""
        conns = list(self.conns.values())
        plan = reset_plan(self.cfg.reset_query_list, any(c.txn_status != b"I" for c in conns))
        try:
            if plan.count:
                for c in conns:
                    c.send(plan.request)
                for c in conns:
                    if any(plan.must_succeed[i] for i in c.finish_queries(plan.count, RESET_TIMEOUT)):
                        return False
        except (OSError, EOFError, BackendError):
            return False
        return all(c.txn_status == b"I" for c in conns)
