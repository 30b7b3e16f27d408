"""The query relay of one client session: client messages routed to backends, replies streamed back.

Raw bytes are relayed unchanged. Client messages are split on their headers only; a simple
Query, an extended-protocol batch (up to Sync or Flush) or a FunctionCall becomes a *unit*: the
node(s) it was sent to and the node whose reply the client sees. Backend replies are read in
large chunks, scanned header by header (never decoded row by row) and forwarded in one write
per chunk. Each node owes one ReadyForQuery per unit; replies of the non-reply nodes of a unit
are drained and dropped.
"""

import select
import struct
import time
from collections import deque

from pgpool.protocol import messages as m
from pgpool.proxy.stats import stat_kind

_I32 = struct.Struct("!i")

RECV_SIZE = 65536
BATCH_FLUSH_BYTES = 256 * 1024

K_Q, K_P, K_B, K_E, K_D, K_C, K_S, K_H, K_F, K_X = (ord(c) for c in "QPBEDCSHFX")
K_COPY_DATA, K_COPY_DONE, K_COPY_FAIL = ord("d"), ord("c"), ord("f")
EXTENDED = frozenset((K_P, K_B, K_E, K_D, K_C))
# backend kinds
B_Z, B_E, B_S, B_G, B_W, B_PARSE_COMPLETE, B_A, B_N = (ord(c) for c in "ZESGW1AN")

_LOCAL_PREFIXES = (b"show pool_", b"pgpool ")
_SYNC = b"S\0\0\0\x04"
_FAST_BATCH_START = frozenset(b"PB")
_FAST_BATCH_KINDS = frozenset(b"PBDECSH")


class ClientProtocolError(Exception):
    """The client broke the protocol; the session ends with this FATAL error."""


class ClientClosed(Exception):
    """The client went away (EOF or socket error) without a Terminate message."""


class BackendLost(Exception):
    def __init__(self, node_id: int, message: str):
        super().__init__(message)
        self.node_id = node_id


class Unit:
    """One request that ends with a ReadyForQuery from each of its nodes."""

    __slots__ = ("nodes", "reply", "closed", "local", "copy_in", "skip_parse", "alt")

    def __init__(self, nodes, reply, closed=True, local=None):
        self.nodes = nodes
        self.reply = reply
        self.closed = closed
        self.local = local
        self.copy_in = False
        self.skip_parse = 0
        self.alt = None         # node -> replacement message (e.g. plain BEGIN for standbys)


class Relay:
    """Runs the message loop for one session. `router` decides destinations (see Router
    protocol in session.py); `local` answers pgpool's own commands."""

    def __init__(self, client, conns: dict, router, local, stats, idle_limit: int = 0,
                 on_status=None):
        self.client = client
        self.cfileno = client.fileno()
        self.conns = conns                      # node id -> BackendConn
        self.router = router
        self.local = local
        self.stats = stats
        self.idle_limit = idle_limit
        self.on_status = on_status
        self.cbuf = bytearray()
        self.units: deque[Unit] = deque()
        self.node_q = {n: deque() for n in conns}
        self.open_unit: Unit | None = None      # extended batch already sent, Sync not yet
        self.batch: list = []                   # buffered extended messages (bytes)
        self.batch_size = 0
        self.copy_unit: Unit | None = None
        self.terminated = False
        self.txn_status = b"I"
        self._poller = None                     # made on first need (most sessions never poll)
        self._fast_nodes = tuple(conns)
        self._fd_node = {c.fileno: n for n, c in conns.items()}
        self._registered: dict[int, int] = {}
        self.stalled: set[int] = set()          # nodes with buffered replies for a later unit
        self.listening = False                  # the session ran LISTEN: watch for NOTIFY
        self.local_stmts: dict[str, str] = {}   # extended-protocol statements of pgpool commands
        self.local_portals: dict[str, list] = {}
        self._out: list[bytes] = []             # client messages gathered for _out_nodes
        self._out_nodes = None

    # ---- main loop ---------------------------------------------------------------------

    def run(self) -> None:
        """Relay until the client sends Terminate (returns) or something fails (raises)."""
        client = self.client
        if self.cbuf:
            data = bytes(self.cbuf)
            self.cbuf.clear()
            self.on_client_data(data)
        fast = getattr(self.router, "fast_path", None)
        self._fast_raw = fast == "raw" and len(self.conns) == 1
        if self._fast_raw:
            self._fast_conn = next(iter(self.conns.values()))
        node_q = self.node_q
        while not self.terminated:
            units = self.units
            if self.stalled:
                for n in list(self.stalled):
                    q = self.node_q[n]
                    if not q or not units or q[0] is units[0] or q[0].reply != n:
                        self.stalled.discard(n)
                        self.on_backend_data(n, b"")
            if units:
                head = units[0]
                if head.local is not None:
                    units.popleft()
                    self._to_client(client, head.local(self.txn_status))
                    if not units and self.on_status is not None:
                        self.on_status(False, self.txn_status)
                    continue
                if head.closed and not head.copy_in and self.open_unit is None:
                    # The reply node owes a ReadyForQuery without further input: block on it.
                    n = head.reply
                    self.on_backend_data(n, _recv_backend(self.conns[n]))
                    continue
            elif (not self.listening and not self.idle_limit and not self.batch
                  and self.open_unit is None and not self.stalled and not any(node_q.values())):
                # Idle, nothing can arrive from the backend that the client waits for:
                # read the next request directly (saves a poll per query).
                try:
                    data = client.recv(RECV_SIZE)
                except OSError as e:
                    raise ClientClosed(str(e)) from e
                if not data:
                    raise ClientClosed("EOF encountered with frontend")
                if not (fast and self._fast_request(data)):
                    self.on_client_data(data)
                continue
            self.wait_and_read()

    def wait_and_read(self) -> None:
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
        want = {self.cfileno: select.POLLIN}
        for n, q in self.node_q.items():
            if not q or q[0].reply != n or (self.units and q[0] is self.units[0]):
                want[self.conns[n].fileno] = select.POLLIN
        reg = self._registered
        for fd in list(reg):
            if fd not in want:
                poller.unregister(fd)
                del reg[fd]
        for fd, ev in want.items():
            if fd not in reg:
                poller.register(fd, ev)
                reg[fd] = ev
        idle = not self.units and self.open_unit is None
        timeout = self.idle_limit * 1000 if (idle and self.idle_limit > 0) else None
        events = poller.poll(timeout)
        if not events:
            raise ClientIdle(self.idle_limit)
        for fd, ev in events:
            if fd == self.cfileno:
                try:
                    data = self.client.recv(RECV_SIZE)
                except OSError as e:
                    raise ClientClosed(str(e)) from e
                if not data:
                    raise ClientClosed("EOF encountered with frontend")
                self.on_client_data(data)
                if self.terminated:
                    return
            else:
                n = self._fd_node[fd]
                self.on_backend_data(n, _recv_backend(self.conns[n]))

    # ---- client side ---------------------------------------------------------------------

    def on_client_data(self, data: bytes) -> None:
        buf = self.cbuf
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        n = len(data)
        pos = 0
        unpack = _I32.unpack_from
        while n - pos >= 5:
            kind = data[pos]
            length = unpack(data, pos + 1)[0]
            if length < 4 or length > m.MAX_MESSAGE_LENGTH:
                raise ClientProtocolError(f"invalid message length {length} "
                                          f"for message type \"{chr(kind)}\"")
            end = pos + 1 + length
            if end > n:
                break
            msg = data[pos:end]
            pos = end
            dest = self.on_client_message(kind, msg)
            if dest is not None:
                if dest != self._out_nodes:
                    self._flush_out()
                    self._out_nodes = dest
                self._out.append(msg)
            if self.terminated:
                break
        self._flush_out()
        if pos < n and not self.terminated:
            if n - pos >= 5:
                length = unpack(data, pos + 1)[0]
                if length < 4 or length > m.MAX_MESSAGE_LENGTH:
                    raise ClientProtocolError(f"invalid message length {length}")
            self.cbuf += data[pos:]
        if self.batch and self.batch_size > BATCH_FLUSH_BYTES:
            self.flush_batch(closing=False)

    def _flush_out(self) -> None:
        """Send the messages gathered for one destination (one write per node)."""
        if self._out:
            self._send_to(self._out_nodes, b"".join(self._out))
            self._out = []
        self._out_nodes = None

    def _send_to(self, nodes, payload: bytes) -> None:
        for node in nodes:
            try:
                self.conns[node].sock.sendall(payload)
            except OSError as e:
                raise BackendLost(node, str(e)) from e

    def on_client_message(self, kind: int, msg: bytes):
        """Handle one client message. Returns the node tuple to forward it to now, or None
        when it was consumed, buffered, or already sent."""
        if kind == K_Q:
            self.flush_pending_batch()
            if self.open_unit is not None:
                # a Query inside an unsynced batch: its ReadyForQuery ends the batch too
                return self._close_open_unit()
            return self.simple_query(msg)
        if kind in EXTENDED or kind == K_H:
            if self.open_unit is not None:
                return self.open_unit.nodes
            if kind == K_H and not self.batch:
                # A Flush with nothing buffered: it concerns requests already sent.
                return self.units[-1].nodes if self.units and self.units[-1].nodes else None
            self.batch.append(msg)
            self.batch_size += len(msg)
            if kind == K_H:
                self.flush_batch(closing=False)
            return None
        if kind == K_S:
            if self.open_unit is not None:
                return self._close_open_unit()
            self.batch.append(msg)
            self.flush_batch(closing=True)
            return None
        if kind in (K_COPY_DATA, K_COPY_DONE, K_COPY_FAIL):
            u = self.copy_unit
            if u is None:
                # PostgreSQL ignores stray copy messages outside COPY; so do we.
                return None
            if kind != K_COPY_DATA:
                u.copy_in = False
                self.copy_unit = None
            return u.nodes
        if kind == K_F:
            self.flush_pending_batch()
            if self.open_unit is not None:
                return self._close_open_unit()
            u = self.router.function_call_unit()
            self._push(u)
            return u.nodes
        if kind == K_X:
            self.flush_pending_batch()
            self.terminated = True
            return None
        raise ClientProtocolError(f"invalid frontend message type {kind}"
                                  if not 32 < kind < 127 else
                                  f"invalid frontend message type \"{chr(kind)}\"")

    def _close_open_unit(self):
        u = self.open_unit
        u.closed = True
        self.open_unit = None
        return u.nodes

    def flush_pending_batch(self) -> None:
        if self.batch:
            self.flush_batch(closing=False)

    def simple_query(self, msg: bytes):
        if not self.listening and b"listen" in msg.lower():
            self.listening = True
        head = msg[5:17].lstrip().lower()
        if head.startswith(_LOCAL_PREFIXES):
            sql = msg[5:-1].decode("utf-8", "replace")
            if self.local.recognizes(sql):
                self._push(Unit((), None, local=lambda status: self.local.handle(sql).simple(status)))
                return None
        u = self.router.simple_query_unit(msg)
        self._push(u)
        if u.alt:
            self._flush_out()
            for node in u.nodes:
                self._send_to((node,), u.alt.get(node, msg))
            return None
        return u.nodes

    def flush_batch(self, closing: bool) -> None:
        """Route the buffered extended messages and send them."""
        batch = self.batch
        self.batch = []
        self.batch_size = 0
        if self.local_stmts or self.local_portals:
            if self._answer_locally(batch):
                return
            self._forget_local_names(batch)
        elif self._answer_locally(batch):
            return
        if not self.listening:
            self.listening = any(m_[0] == K_P and b"listen" in m_.lower() for m_ in batch)
        self._flush_out()
        u, prefixes = self.router.batch_unit(batch)
        u.closed = closing
        self._push(u)
        payload = b"".join(batch)
        for node in u.nodes:
            pre = prefixes.get(node) if prefixes else None
            try:
                self.conns[node].sock.sendall(pre + payload if pre else payload)
            except OSError as e:
                raise BackendLost(node, str(e)) from e
        if not closing:
            self.open_unit = u

    # ---- fast path: one backend, whole requests ---------------------------------------------

    def _fast_request(self, data: bytes) -> bool:
        """Relay one whole request (a simple Query, or an extended batch ending with Sync) and
        its replies with the least work: replies are streamed until the ReadyForQuery without
        units or per-message bookkeeping. In raw mode nothing is routed; otherwise the request
        is routed first and streamed only when it goes to exactly one node with nothing to
        re-parse there (else it is handed to the general machinery, already routed). Returns
        False, having done nothing, for anything else (partial messages, COPY, pgpool's own
        commands, LISTEN, Terminate ...), which then takes the general path."""
        raw = self._fast_raw
        if self.cbuf or (raw and self.router.logging):
            return False
        n = len(data)
        unpack = _I32.unpack_from
        kind = data[0]
        stats = self.stats
        batch = None
        if kind == K_Q:
            if unpack(data, 1)[0] + 1 != n:
                return False
            if _needs_general_path(data[5:]):
                return False
            expected = 1
        elif kind in _FAST_BATCH_START and data[n - 5:] == _SYNC:
            pos = 0
            expected = 0
            batch = []
            while pos < n:
                if n - pos < 5:
                    return False
                k = data[pos]
                length = unpack(data, pos + 1)[0]
                if length < 4 or k not in _FAST_BATCH_KINDS:
                    return False
                if k == K_P:
                    q = data.index(b"\0", pos + 5) + 1
                    if _needs_general_path(data[q:pos + 1 + length]):
                        return False
                    if raw:
                        stats.count(stat_kind(data[q:q + 12]), self._fast_nodes)
                elif k == K_S:
                    expected += 1
                if not raw:
                    batch.append(data[pos:pos + 1 + length])
                pos += 1 + length
            if pos != n or self.local_stmts or self.local_portals or (not raw and expected != 1):
                return False
        else:
            return False
        if raw:
            if batch is None:
                stats.count(stat_kind(data[5:17]), self._fast_nodes)
            conn = self._fast_conn
        else:
            if batch is None:
                u, prefixes = self.router.simple_query_unit(data), None
            else:
                u, prefixes = self.router.batch_unit(batch)
            if len(u.nodes) != 1 or u.alt or prefixes or u.skip_parse:
                # several nodes or re-parsing: the general machinery relays it
                u.closed = True
                self._push(u)
                if u.alt:
                    for node in u.nodes:
                        self._send_to((node,), u.alt.get(node, data))
                else:
                    for node in u.nodes:
                        pre = prefixes.get(node) if prefixes else None
                        self._send_to((node,), pre + data if pre else data)
                return True
            conn = self.conns[u.nodes[0]]
        sock = conn.sock
        try:
            sock.sendall(data)
        except OSError as e:
            raise BackendLost(conn.node_id, str(e)) from e
        on_status = self.on_status
        if on_status is not None:
            on_status(True, self.txn_status)
        client = self.client
        rbuf = conn.rbuf
        while expected:
            chunk = _recv_backend(conn)
            if rbuf:
                rbuf += chunk
                chunk = bytes(rbuf)
                rbuf.clear()
            n = len(chunk)
            pos = 0
            while n - pos >= 5:
                k = chunk[pos]
                length = unpack(chunk, pos + 1)[0]
                end = pos + 1 + length
                if length < 4:
                    raise BackendLost(conn.node_id, f"invalid message length {length} from backend")
                if end > n:
                    break
                if k == B_Z:
                    expected -= 1
                    self.txn_status = conn.txn_status = chunk[pos + 5:pos + 6]
                    if not raw:
                        self.router.ready_for_query(self.txn_status)
                elif k == B_E:
                    stats.backend_error(conn.node_id, chunk[pos + 5:end])
                elif k == B_S:
                    key, value = chunk[pos + 5:end].split(b"\0")[:2]
                    conn.params[key.decode()] = value.decode()
                    conn.handshake = None
                elif k == B_G or k == B_W:
                    # COPY after all (e.g. inside a function): hand over to the general path
                    self._to_client(client, chunk[:pos])
                    rbuf += chunk[pos:]
                    self._adopt_pending(conn.node_id, expected)
                    return True
                pos = end
            if pos:
                self._to_client(client, chunk[:pos] if pos < n else chunk)
            if pos < n:
                rbuf += chunk[pos:]
        if on_status is not None:
            on_status(False, self.txn_status)
        return True

    def _adopt_pending(self, node: int, count: int) -> None:
        """Turn `count` outstanding replies of the fast path into ordinary units."""
        for _ in range(count):
            u = Unit((node,), node)
            self.units.append(u)
            self.node_q[node].append(u)
        self.stalled.add(node)

    # ---- pgpool's own commands through the extended protocol -------------------------------

    def _answer_locally(self, batch) -> bool:
        """Answer a batch that only concerns pgpool's own commands (SHOW pool_*, PGPOOL ...).

        Statements and portals of such commands are remembered so that a later Bind, Describe,
        Execute or Close of them is answered here too; a batch that mixes them with ordinary
        statements goes to the backends (which reject the pgpool command)."""
        stmts, portals = self.local_stmts, self.local_portals
        new_stmts: dict[str, str] = {}
        new_portals: set[str] = set()
        touched = False
        for msg in batch:
            k = msg[0]
            if k == K_P:
                name, pos = _cstr(msg, 5)
                query, _ = _cstr(msg, pos)
                if not (query.lstrip()[:10].lower().startswith(("show pool_", "pgpool "))
                        and self.local.recognizes(query)):
                    return False
                new_stmts[name] = query
            elif k == K_B:
                portal, pos = _cstr(msg, 5)
                stmt, _ = _cstr(msg, pos)
                if stmt not in new_stmts and stmt not in stmts:
                    return False
                new_portals.add(portal)
            elif k in (K_D, K_C):
                name, _ = _cstr(msg, 6)
                if msg[5] == 80:                # portal
                    if name not in portals and name not in new_portals:
                        return False
                elif name not in stmts and name not in new_stmts:
                    return False
            elif k == K_E:
                portal, _ = _cstr(msg, 5)
                if portal not in portals and portal not in new_portals:
                    return False
            elif k not in (K_S, K_H):
                return False
            touched = touched or k != K_S and k != K_H
        if not touched:
            return False
        self._flush_out()
        local = self.local

        def answer(status: bytes) -> bytes:
            out = []
            for msg in batch:
                k = msg[0]
                if k == K_P:
                    name, pos = _cstr(msg, 5)
                    stmts[name] = _cstr(msg, pos)[0]
                    out.append(m.parse_complete())
                elif k == K_B:
                    portal, pos = _cstr(msg, 5)
                    portals[portal] = [stmts[_cstr(msg, pos)[0]], None]
                    out.append(m.bind_complete())
                elif k == K_D:
                    name, _ = _cstr(msg, 6)
                    if msg[5] == 83:            # statement: no parameters, then the row shape
                        out.append(b"t\0\0\0\x06\0\0")
                        out.append(local.handle(stmts[name]).description())
                    else:
                        entry = portals[name]
                        entry[1] = entry[1] or local.handle(entry[0])
                        out.append(entry[1].description())
                elif k == K_E:
                    entry = portals[_cstr(msg, 5)[0]]
                    result = entry[1] or local.handle(entry[0])
                    entry[1] = None
                    out.append(result.execution())
                elif k == K_C:
                    name, _ = _cstr(msg, 6)
                    (portals if msg[5] == 80 else stmts).pop(name, None)
                    out.append(m.close_complete())
                elif k == K_S:
                    out.append(m.ready_for_query(status))
            return b"".join(out)

        self._push(Unit((), None, local=answer))
        return True

    def _forget_local_names(self, batch) -> None:
        """Statements and portals re-used by ordinary commands are no longer pgpool's."""
        for msg in batch:
            if msg[0] == K_P:
                self.local_stmts.pop(_cstr(msg, 5)[0], None)
            elif msg[0] == K_B:
                self.local_portals.pop(_cstr(msg, 5)[0], None)

    def _push(self, u: Unit) -> None:
        self.units.append(u)
        for node in u.nodes:
            self.node_q[node].append(u)
        if self.on_status is not None and len(self.units) == 1:
            self.on_status(True, self.txn_status)

    # ---- backend side --------------------------------------------------------------------

    def on_backend_data(self, node: int, data: bytes) -> None:
        conn = self.conns[node]
        rbuf = conn.rbuf
        if rbuf:
            rbuf += data
            data = bytes(rbuf)
            rbuf.clear()
        n = len(data)
        pos = 0
        fwd_start = -1          # start of the current run of bytes to forward
        q = self.node_q[node]
        units = self.units
        unpack = _I32.unpack_from
        client = self.client
        while n - pos >= 5:
            kind = data[pos]
            length = unpack(data, pos + 1)[0]
            end = pos + 1 + length
            if length < 4:
                raise BackendLost(node, f"invalid message length {length} from backend")
            if end > n:
                break
            u = q[0] if q else None
            if u is None:
                # between requests only asynchronous messages may arrive
                forward = kind in (B_A, B_N, B_S, B_E)
            elif u.reply == node:
                if not units or u is not units[0]:
                    # this reply belongs to a request queued behind another: keep it
                    self.stalled.add(node)
                    break
                forward = True
            else:
                forward = False
            drop = False
            if kind == B_Z:
                status = data[pos + 5:pos + 6]
                conn.txn_status = status
                if u is not None:
                    q.popleft()
                    if forward:
                        units.popleft()
                        self.txn_status = status
                        self.router.ready_for_query(status)
                        if self.on_status is not None and not units:
                            self.on_status(False, status)
            elif kind == B_E:
                self.stats.backend_error(node, data[pos + 5:end])
            elif kind == B_S:
                k, v = data[pos + 5:end].split(b"\0")[:2]
                conn.params[k.decode()] = v.decode()
                conn.handshake = None
            elif kind == B_G or kind == B_W:
                if u is not None:
                    u.copy_in = True
                    self.copy_unit = u
            elif kind == B_PARSE_COMPLETE and u is not None and u.skip_parse and forward:
                u.skip_parse -= 1
                drop = True
            if forward and not drop:
                if fwd_start < 0:
                    fwd_start = pos
            elif fwd_start >= 0:
                self._to_client(client, data[fwd_start:pos])
                fwd_start = -1
            pos = end
        if fwd_start >= 0:
            self._to_client(client, data[fwd_start:pos])
        if pos < n:
            rbuf += data[pos:]

    @staticmethod
    def _to_client(client, payload) -> None:
        try:
            client.sendall(payload)
        except OSError as e:
            raise ClientClosed(str(e)) from e

    # ---- session end ---------------------------------------------------------------------

    def drain(self, timeout: float = 10.0) -> bool:
        """Read every node's outstanding replies (dropping them); False if that failed."""
        deadline = time.monotonic() + timeout
        self.client = _NullClient()
        try:
            for u in self.units:
                u.reply = -1        # nobody forwards any more
            while any(self.node_q.values()):
                for n, q in self.node_q.items():
                    if not q:
                        continue
                    if not q[0].closed or q[0].copy_in:
                        return False
                    conn = self.conns[n]
                    conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
                    try:
                        data = conn.sock.recv(RECV_SIZE)
                    finally:
                        conn.sock.settimeout(None)
                    if not data:
                        return False
                    self.on_backend_data(n, data)
                if time.monotonic() > deadline:
                    return False
        except (OSError, BackendLost):
            return False
        self.units.clear()
        return True


def _recv_backend(conn) -> bytes:
    """The next chunk a backend sent; BackendLost on a socket error or EOF."""
    try:
        data = conn.sock.recv(RECV_SIZE)
    except OSError as e:
        raise BackendLost(conn.node_id, str(e)) from e
    if not data:
        raise BackendLost(conn.node_id, "EOF encountered with backend")
    return data


def _needs_general_path(sql: bytes) -> bool:
    """Statement text the fast path leaves to the general one: pgpool's own commands, COPY
    (the client speaks mid-reply), LISTEN (notifications arrive between requests)."""
    low = sql.lower()
    return low.lstrip()[:10].startswith(_LOCAL_PREFIXES) or b"copy" in low or b"listen" in low


def _cstr(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode("utf-8", "replace"), end + 1


class ClientIdle(Exception):
    def __init__(self, limit: int):
        super().__init__(limit)
        self.limit = limit


class _NullClient:
    @staticmethod
    def sendall(_data) -> None:
        return None
