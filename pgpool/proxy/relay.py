"""The query relay of one client session: client messages routed to backends, replies streamed back.

Raw bytes are relayed unchanged. Client messages are split on their headers only; a simple
Query, an extended-protocol batch (up to Sync or Flush) or a FunctionCall becomes a *unit*: the
node(s) it was sent to and the node whose reply the client sees. Backend replies are read in
large chunks, scanned header by header (never decoded row by row) and forwarded in one write
per chunk. Each node owes one ReadyForQuery per unit; replies of the non-reply nodes of a unit
are drained and dropped.

Nodes other than the session's primary (`essential`) may go away mid-session: a node marked down
in shared memory is dropped at the next unit boundary, a connection that fails is dropped where
it fails (and reported); a request whose answer was to come from it gets an ERROR (SQLSTATE
08006). A transaction the node took part in is aborted on the primary too, so that a later
COMMIT cannot commit half of what the client saw fail or read. The session goes on.

A load-balanced read outside a transaction, relayed whole by the fast path, is re-run on the
primary when its standby cancels it for a recovery conflict (40001 "... conflict with recovery",
40P01) or its connection dies before anything of the answer reached the client; its reply is
held back only while it holds nothing but the preamble (ParseComplete, BindComplete,
RowDescription ...).

A unit that commits a write with read_your_writes on is followed, on the primary, by pgpool's
own query of the WAL insert position. In global mode the unit's ReadyForQuery reaches the client
only once the position is recorded in shared memory, so whatever any client does next already
waits for it; in session mode the session's own reads go to the primary until it is known.
"""

import select
import struct
import time
from collections import deque

from pgpool import log
from pgpool.protocol import messages as m
from pgpool.proxy.backend import INSERT_LSN_QUERY, INSERT_LSN_SQL, first_column, internal_query
from pgpool.proxy import memo
from pgpool.proxy.tls import TlsSocket
from pgpool.proxy.stats import stat_kind
from pgpool.state.ryw import parse_lsn

_I32 = struct.Struct("!i")

RECV_SIZE = 65536
BATCH_FLUSH_BYTES = 256 * 1024

K_Q, K_P, K_B, K_E, K_D, K_C, K_S, K_H, K_F, K_X = (ord(c) for c in "QPBEDCSHFX")
K_COPY_DATA, K_COPY_DONE, K_COPY_FAIL = ord("d"), ord("c"), ord("f")
EXTENDED = frozenset((K_P, K_B, K_E, K_D, K_C))
# backend kinds
B_Z, B_E, B_S, B_G, B_W, B_PARSE_COMPLETE, B_A, B_N = (ord(c) for c in "ZESGW1AN")

B_D = ord("D")

_SYNC = b"S\0\0\0\x04"
_FAST_BATCH_START = frozenset(b"PB")
_FAST_BATCH_KINDS = frozenset(b"PBDECSH")
# replies that may precede a result's first row (held back while a read may still be re-run)
_PREAMBLE = frozenset(b"12TntNS")
# replies the fast path looks at (all others are relayed unread)
_FAST_WATCH = frozenset(b"ZESGW")
_SHUTDOWN_CODES = frozenset(("57P01", "57P02"))     # admin_shutdown, crash_shutdown


class ClientProtocolError(Exception):
    """The client broke the protocol; the session ends with this FATAL error."""


class ClientClosed(Exception):
    """The client went away (EOF or socket error) without a Terminate message."""


class BackendLost(Exception):
    """A backend connection failed; `shutdown` when the backend said it was shut down."""

    def __init__(self, node_id: int, message: str, shutdown: bool = False):
        super().__init__(message)
        self.node_id = node_id
        self.shutdown = shutdown


class Unit:
    """One request that ends with a ReadyForQuery from each of its nodes."""

    __slots__ = ("nodes", "reply", "closed", "local", "copy_in", "skip_parse", "alt", "fallback",
                 "__dict__")

    # rarely set, so class-level defaults (nothing to initialise per request)
    lsn_sink = None     # read-your-writes positions: this unit commits a write
    capture = None      # the Internal unit learning the commit position (holds our ReadyForQuery)

    def __init__(self, nodes, reply, closed=True, local=None, fallback=None):
        self.nodes = nodes
        self.reply = reply
        self.closed = closed
        self.local = local
        self.copy_in = False
        self.skip_parse = 0
        self.alt = None         # node -> replacement message (e.g. plain BEGIN for standbys)
        self.fallback = fallback    # node re-running this load-balanced read if it is cancelled


class Internal(Unit):
    """pgpool's own request on one node: nothing of its reply reaches the client. `on_done`
    gets the payload of its first DataRow (None if there was none) at its ReadyForQuery; `held`
    is the ReadyForQuery of the client's unit that waited for it."""

    row = None
    held = None

    def __init__(self, node: int, on_done=None):
        super().__init__((node,), -1)
        self.on_done = on_done


class Relay:
    """Runs the message loop for one session. `router` decides destinations (see Router
    protocol in session.py); `local` answers pgpool's own commands."""

    def __init__(self, client, conns: dict, router, local, stats, idle_limit: int = 0,
                 on_status=None, essential: int | None = None, on_lost=None, watch=None,
                 on_view_change=None):
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
        self._tls = isinstance(client, TlsSocket) or any(isinstance(c.sock, TlsSocket)
                                                             for c in conns.values())
        self._registered: dict[int, int] = {}
        self.stalled: set[int] = set()          # nodes with buffered replies for a later unit
        self.listening = False                  # the session ran LISTEN: watch for NOTIFY
        self.local_stmts: dict[str, str] = {}   # extended-protocol statements of pgpool commands
        self.local_portals: dict[str, list] = {}
        self._out: list[bytes] = []             # client messages gathered for _out_nodes
        self._out_nodes = None
        # losing nodes: `essential` (the primary) ends the session, any other node is dropped
        # and `on_lost(node, message, shutdown, report)` told; None: every node is essential
        self.essential = essential
        self.on_lost = on_lost
        # `watch` (the shared header) moving its generation calls `on_view_change()` between units
        self.watch = watch
        self.generation = watch.generation if watch is not None else 0
        self.on_view_change = on_view_change

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
        watch = self.watch
        while not self.terminated:
            try:
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
                        if head.closed:
                            units.popleft()
                            self._to_client(client, head.local(self.txn_status))
                            if not units and self.on_status is not None:
                                self.on_status(False, self.txn_status)
                            continue
                    elif head.closed and not head.copy_in and self.open_unit is None:
                        # The reply node owes a ReadyForQuery without further input: block on it.
                        n = head.reply
                        self.on_backend_data(n, _recv_backend(self.conns[n]))
                        continue
                elif (not self.listening and not self.idle_limit and not self.batch
                      and self.open_unit is None and not self.stalled
                      and not any(node_q.values())):
                    # Idle, nothing can arrive from the backend that the client waits for:
                    # read the next request directly (saves a poll per query).
                    try:
                        data = client.recv(RECV_SIZE)
                    except OSError as e:
                        raise ClientClosed(str(e)) from e
                    if not data:
                        raise ClientClosed("EOF encountered with frontend")
                    if watch is not None and watch.generation != self.generation:
                        self._view_changed()
                        if any(node_q.values()):        # a transaction abort now goes first
                            self.on_client_data(data)
                            continue
                    if not (fast and self._fast_request(data)):
                        self.on_client_data(data)
                    continue
                self.wait_and_read()
            except BackendLost as e:
                self.lose(e.node_id, str(e))

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
        events = (self._tls_pending(want) if self._tls else None) or poller.poll(timeout)
        if not events:
            raise ClientIdle(self.idle_limit)
        # backends first: handling the client's request may read a backend itself (a commit
        # position settled, a replay position probed), after which its event would be stale
        client_ready = False
        for fd, ev in events:
            if fd == self.cfileno:
                client_ready = True
            else:
                n = self._fd_node.get(fd)
                if n is not None:           # None: dropped while handling an earlier event
                    self.on_backend_data(n, _recv_backend(self.conns[n]))
        if client_ready:
            try:
                data = self.client.recv(RECV_SIZE)
            except OSError as e:
                raise ClientClosed(str(e)) from e
            if not data:
                raise ClientClosed("EOF encountered with frontend")
            if (self.watch is not None and self.watch.generation != self.generation
                    and not self.units and self.open_unit is None):
                self._view_changed()
            self.on_client_data(data)

    def _tls_pending(self, want) -> list:
        """(fd, POLLIN) of the wanted TLS sockets already holding decrypted bytes."""
        ready = []
        for fd in want:
            sock = self.client if fd == self.cfileno else self.conns[self._fd_node[fd]].sock
            if isinstance(sock, TlsSocket) and sock.pending():
                ready.append((fd, select.POLLIN))
        return ready

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
            conn = self.conns.get(node)
            if conn is None:
                continue            # dropped while this request was on its way
            try:
                conn.sock.sendall(payload)
            except OSError as e:
                self.lose(node, str(e))

    def _send_unit(self, u: Unit, payload: bytes, prefixes) -> None:
        """Send a routed unit's request to its nodes (with per-node replacements or re-parse
        prefixes); a unit that commits a write takes the commit-position query along to its
        reply node (the primary), in the same write."""
        after = self._attach_capture(u) if u.lsn_sink is not None and u.closed else None
        if u.alt:
            for node in u.nodes:
                msg = u.alt.get(node, payload)
                self._send_to((node,), msg + after if after and node == u.reply else msg)
        else:
            for node in u.nodes:
                pre = prefixes.get(node) if prefixes else None
                msg = pre + payload if pre else payload
                self._send_to((node,), msg + after if after and node == u.reply else msg)

    def _attach_capture(self, u: Unit) -> bytes:
        """Queue the WAL insert position query behind `u` on its reply node (the primary);
        returns the query to send right after `u`'s request. In global mode `u`'s ReadyForQuery
        waits for the answer (other sessions cannot know a position is on its way); a session's
        own reads meanwhile go to the primary (`pending`)."""
        sink = u.lsn_sink
        node = u.reply
        sink.pending += 1

        def done(row):
            value = first_column(row) if row is not None else None
            sink.committed(parse_lsn(value))

        cap = Internal(node, done)
        if sink.mode == "global":
            u.capture = cap
        self.node_q[node].append(cap)
        self.router.log.internal(node, INSERT_LSN_SQL)
        return INSERT_LSN_QUERY

    def on_client_message(self, kind: int, msg: bytes):
        """Handle one client message. Returns the node tuple to forward it to now, or None
        when it was consumed, buffered, or already sent."""
        if kind == K_Q:
            self.flush_pending_batch()
            if self.open_unit is not None:
                # a Query inside an unsynced batch: its ReadyForQuery ends the batch too
                return self._close_open_unit(msg)
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
                return self._close_open_unit(msg)
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
                return self._close_open_unit(msg)
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

    def _close_open_unit(self, msg: bytes):
        """`msg` ends the open extended batch: its nodes (to forward `msg` to), or None when it
        was sent here (a committing batch is followed by the commit-position query)."""
        u = self.open_unit
        u.closed = True
        self.open_unit = None
        if u.lsn_sink is None:
            return u.nodes
        self._flush_out()
        self._send_unit(u, msg, None)
        return None

    def flush_pending_batch(self) -> None:
        if self.batch:
            self.flush_batch(closing=False)

    def simple_query(self, msg: bytes):
        if not self.listening and msg.lower().find(b"listen") >= 0:
            self.listening = True
        head = msg[5:17].lstrip().lower()
        if head.startswith(memo.LOCAL_PREFIXES):
            sql = msg[5:-1].decode("utf-8", "replace")
            if self.local.recognizes(sql):
                self._push(Unit((), None, local=lambda status: self.local.handle(sql).simple(status)))
                return None
        u = self.router.simple_query_unit(msg)
        self._push(u)
        if u.alt or u.lsn_sink is not None:
            self._flush_out()
            self._send_unit(u, msg, None)
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
            self.listening = any(m_[0] == K_P and m_.lower().find(b"listen") >= 0 for m_ in batch)
        self._flush_out()
        u, prefixes = self.router.batch_unit(batch)
        u.closed = closing
        self._push(u)
        if not closing:
            self.open_unit = u
        self._send_unit(u, b"".join(batch), prefixes)

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
        batch = None
        if kind == K_Q:
            if unpack(data, 1)[0] + 1 != n:
                return False
            if raw:         # nothing is classified in raw mode
                if memo.needs_general_path(data[5:]):
                    return False
                self.stats.count(stat_kind(data[5:17]), self._fast_nodes)
                return self._fast_stream(self._fast_conn, data, 1, True, None, None)
            entry = memo.lookup(data[5:-1])
            if entry[2]:
                return False
            u, prefixes = self.router.simple_query_unit(data, entry), None
        elif kind in _FAST_BATCH_START and data[n - 5:] == _SYNC:
            if self.local_stmts or self.local_portals:
                return False
            pos = 0
            expected = 0
            batch = []
            kinds = []
            while pos < n:
                if n - pos < 5:
                    return False
                k = data[pos]
                length = unpack(data, pos + 1)[0]
                end = pos + 1 + length
                if length < 4 or k not in _FAST_BATCH_KINDS or end > n:
                    return False
                if k == K_P:
                    q = data.find(b"\0", pos + 5, end) + 1
                    qend = data.find(b"\0", q, end)
                    if not q or qend < 0:
                        return False        # malformed: the general path says so
                    if raw:
                        if memo.needs_general_path(data[q:qend]):
                            return False
                        kinds.append(stat_kind(data[q:q + 12]))
                    elif memo.lookup(data[q:qend], True)[2]:
                        return False
                elif k == K_S:
                    expected += 1
                if not raw:
                    batch.append(data[pos:end])
                pos = end
            if raw:
                stats = self.stats
                for kind_ in kinds:
                    stats.count(kind_, self._fast_nodes)
                return self._fast_stream(self._fast_conn, data, expected, True, None, None)
            if expected != 1:
                return False
            u, prefixes = self.router.batch_unit(batch)
        else:
            return False
        if len(u.nodes) != 1 or u.alt or prefixes or u.skip_parse or u.lsn_sink is not None:
            # several nodes, re-parsing or a commit to capture: the general machinery relays it
            u.closed = True
            self._push(u)
            self._send_unit(u, data, prefixes)
            return True
        return self._fast_stream(self.conns[u.nodes[0]], data, 1, False, u.fallback, batch)

    def _fast_stream(self, conn, data: bytes, expected: int, raw: bool, fallback, batch) -> bool:
        """Send a whole request to one node and stream its replies up to the `expected`-th
        ReadyForQuery. With a `fallback` node (a load-balanced read outside a transaction)
        nothing but the reply's preamble may be held back until a row or the end arrives: a
        recovery-conflict cancellation or a dying connection before that re-runs the request
        there."""
        try:
            conn.sock.sendall(data)
        except OSError as e:
            return self._fast_lost(conn, str(e), fallback is None, data, batch)
        on_status = self.on_status
        if on_status is not None:
            on_status(True, self.txn_status)
        client = self.client
        rbuf = conn.rbuf
        unpack = _I32.unpack_from
        stats = self.stats
        node = conn.node_id
        direct = fallback is None       # replies go to the client as they come
        held = b""
        retry = None
        recv = conn.sock.recv
        while expected:
            try:
                chunk = recv(RECV_SIZE)
            except OSError as e:
                return self._fast_lost(conn, str(e), direct, data, batch)
            if not chunk:
                return self._fast_lost(conn, "EOF encountered with backend", direct, data, batch)
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
                    return self._fast_lost(conn, f"invalid message length {length} from backend",
                                           direct, data, batch)
                if end > n:
                    break
                if k not in _FAST_WATCH:    # rows, descriptions, completions: just relayed
                    pos = end
                    continue
                if k == B_Z:
                    expected -= 1
                    self.txn_status = conn.txn_status = chunk[pos + 5:pos + 6]
                    if not raw:
                        self.router.ready_for_query(self.txn_status)
                elif k == B_E:
                    payload = chunk[pos + 5:end]
                    if stats.backend_error(node, payload) == b"FATAL":
                        fields = m.parse_error_fields(payload)
                        conn.fatal = fields.get("C")
                        if self.essential is not None and node != self.essential:
                            # the connection ends: a standby's FATAL never reaches the client
                            if direct and pos:
                                self._to_client(client, chunk[:pos])
                            return self._fast_lost(conn, fields.get("M", ""), direct, data, batch)
                    if not direct and retry is None and _cancelled_by_recovery(payload):
                        retry = m.parse_error_fields(payload).get("M", "")
                elif k == B_S:
                    key, value = chunk[pos + 5:end].split(b"\0")[:2]
                    conn.params[key.decode()] = value.decode()
                    conn.handshake = None
                elif k == B_G or k == B_W:
                    # COPY after all (e.g. inside a function): hand over to the general path
                    self._to_client(client, held + chunk[:pos])
                    rbuf += chunk[pos:]
                    self._adopt_pending(node, expected)
                    return True
                pos = end
            if pos:
                if direct:
                    try:
                        client.sendall(chunk[:pos] if pos < n else chunk)
                    except OSError as e:
                        raise ClientClosed(str(e)) from e
                elif retry is None:
                    if expected and _preamble_only(chunk, pos):
                        held += chunk[:pos]
                    else:
                        self._to_client(client, held + chunk[:pos])
                        held = b""
                        direct = True
            if pos < n:
                rbuf += chunk[pos:]
        if retry is not None:
            return self._retry_on_primary(node, retry, data, batch)
        if on_status is not None:
            on_status(False, self.txn_status)
        return True

    def _fast_lost(self, conn, message: str, direct: bool, data: bytes, batch) -> bool:
        """The fast path's node failed mid-request. The primary's loss ends the session; a
        read that nothing of reached the client is re-run on the primary (reported as a
        failure only when the node said it was shut down); otherwise the client gets an
        ERROR for the request and the session goes on without the node."""
        node = conn.node_id
        shutdown = conn.fatal in _SHUTDOWN_CODES
        if node == self.essential or self.essential is None:
            raise BackendLost(node, message, shutdown)
        if not direct:
            self.lose(node, message, report=shutdown)
            return self._retry_on_primary(node, message, data, batch)
        self.lose(node, message)
        if self.txn_status != b"I":
            self._abort_primary_transaction(node)
        self._to_client(self.client, self._lost_answer(node, message, self.txn_status))
        if self.on_status is not None:
            self.on_status(False, self.txn_status)
        return True

    def _retry_on_primary(self, node: int, why: str, data: bytes, batch) -> bool:
        """Re-run a cancelled load-balanced read on the primary; the client sees its answer."""
        primary = self.essential
        log.log("LOG", f"read on node {node} was cancelled ({why}); retrying it on the primary "
                       f"node {primary}")
        u, prefixes = self.router.retry_unit(data, batch)
        if prefixes or u.skip_parse:
            self._push(u)
            self._send_unit(u, data, prefixes)
            return True
        return self._fast_stream(self.conns[primary], data, 1, False, None, batch)

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
                if kind == B_D and u.__class__ is Internal and u.row is None:
                    u.row = data[pos + 5:end]
            drop = False
            if kind == B_Z:
                status = data[pos + 5:pos + 6]
                conn.txn_status = status
                if u is not None:
                    q.popleft()
                    if forward:
                        if u.capture is not None:
                            # held until the commit position is recorded (read-your-writes)
                            u.capture.held = data[pos:end]
                            drop = True
                        else:
                            units.popleft()
                            self.txn_status = status
                            self.router.ready_for_query(status)
                            if self.on_status is not None and not units:
                                self.on_status(False, status)
                    elif u.__class__ is Internal:
                        if fwd_start >= 0:
                            self._to_client(client, data[fwd_start:pos])
                            fwd_start = -1
                        self._internal_done(u)
            elif kind == B_E:
                payload = data[pos + 5:end]
                if self.stats.backend_error(node, payload) == b"FATAL":
                    conn.fatal = m.parse_error_fields(payload).get("C")
                    # a node the session can lose ends its connection: the client hears
                    # of it from us, not from its FATAL
                    drop = self.essential is not None and node != self.essential
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

    def settle_internal(self) -> bool:
        """Read the answers to pgpool's own requests (a commit position on its way) when
        nothing of the client's is in flight; False, doing nothing, if something is."""
        if self.units:
            return False
        for node, q in list(self.node_q.items()):
            while any(u.__class__ is Internal for u in q):
                self.on_backend_data(node, _recv_backend(self.conns[node]))
        return True

    def _internal_done(self, u: Internal) -> None:
        """pgpool's own request ended: hand over its row, release the client's ReadyForQuery."""
        if u.on_done is not None:
            u.on_done(u.row)
        held = u.held
        if held is not None:
            self._to_client(self.client, held)
            units = self.units
            units.popleft()
            status = held[5:6]
            self.txn_status = status
            self.router.ready_for_query(status)
            if self.on_status is not None and not units:
                self.on_status(False, status)

    # ---- losing a node ---------------------------------------------------------------------

    def lose(self, node: int, message: str, report: bool = True) -> None:
        """The connection to `node` failed or the node was detached: BackendLost if the session
        cannot go on without it, else drop it and tell `on_lost` (which reports the failure
        when `report`)."""
        conn = self.conns.get(node)
        if conn is None:
            return
        shutdown = conn.fatal in _SHUTDOWN_CODES
        if self.essential is None or node == self.essential or self.on_lost is None:
            raise BackendLost(node, message, shutdown)
        self._drop(node, message)
        self.on_lost(node, message, shutdown, report)

    def _drop(self, node: int, message: str) -> None:
        """Forget `node`: its connection, its queue; requests it owed the answer to get an
        ERROR instead. A transaction it took part in cannot go on consistently (a snapshot, what
        the client read there): the primary's side is aborted too."""
        conn = self.conns.pop(node)
        in_transaction = conn.txn_status != b"I"
        fd = conn.fileno
        self._fd_node.pop(fd, None)
        if self._registered.pop(fd, None) is not None:
            self._poller.unregister(fd)
        self.stalled.discard(node)
        self._fast_nodes = tuple(self.conns)
        conn.close()
        orphaned = False
        for u in self.node_q.pop(node, ()):
            u.nodes = tuple(x for x in u.nodes if x != node)
            if u.reply == node:
                u.reply = -1
                u.local = self._lost_answer_for(node, message)
                orphaned = True
        if (orphaned or in_transaction) and self.txn_status != b"I":
            self._abort_primary_transaction(node)

    def _lost_answer_for(self, node: int, message: str):
        return lambda status: self._lost_answer(node, message, status)

    def _lost_answer(self, node: int, message: str, status: bytes) -> bytes:
        """ERROR + ReadyForQuery for a request whose node was lost (a transaction is failed)."""
        if status != b"I":
            status = b"E"
        self.txn_status = status
        self.router.ready_for_query(status)
        return m.error_response("ERROR", "08006", f"unable to read data from DB node {node}",
                                f"{message}; the session goes on without node {node}") \
            + m.ready_for_query(status)

    def _abort_primary_transaction(self, node: int) -> None:
        """Fail the primary's side of the open transaction (its client saw a statement fail)."""
        primary = self.essential
        sql = (f"DO $$BEGIN RAISE EXCEPTION 'transaction aborted by pgpool: node {node} was "
               f"lost' USING ERRCODE = '08006'; END$$")
        self.node_q[primary].append(Internal(primary))
        self.router.log.internal(primary, sql)
        self._send_to((primary,), internal_query(sql))

    def _view_changed(self) -> None:
        self.generation = self.watch.generation
        self.on_view_change()

    @staticmethod
    def _to_client(client, payload) -> None:
        try:
            client.sendall(payload)
        except OSError as e:
            raise ClientClosed(str(e)) from e

    # ---- session end ---------------------------------------------------------------------

    def drain(self, timeout: float = 10.0) -> bool:
        """Read every node's outstanding replies (dropping them); False if that failed."""
        if not self.units and not any(self.node_q.values()):
            return True                 # nothing outstanding (the common case)
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


def _preamble_only(chunk: bytes, end: int) -> bool:
    """Do the whole messages in chunk[:end] only announce a result (no row, no end yet)?"""
    pos = 0
    while pos < end:
        if chunk[pos] not in _PREAMBLE:
            return False
        pos += 1 + _I32.unpack_from(chunk, pos + 1)[0]
    return True


def _cancelled_by_recovery(error_payload: bytes) -> bool:
    """A standby's ErrorResponse cancelling a read for a recovery conflict."""
    fields = m.parse_error_fields(error_payload)
    code = fields.get("C")
    return code == "40P01" or (code == "40001" and "conflict with recovery" in fields.get("M", ""))


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
