"""One connection from a worker to one PostgreSQL backend: connect, start up, authenticate."""

import select
import socket
import struct

from pgpool.protocol import messages as m
from pgpool.proxy import tls
from pgpool.proxy.tls import TlsSocket

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")


class BackendError(Exception):
    """A backend could not be reached or refused the session.

    `fields` holds the backend's ErrorResponse fields when it sent one (to relay them)."""

    def __init__(self, node_id: int, message: str, fields: dict | None = None):
        super().__init__(message)
        self.node_id = node_id
        self.fields = fields or {}


def open_socket(host: str, port: int, timeout: float | None, negotiate_ssl: bool = True) -> socket.socket:
    """TCP (with TCP_NODELAY) or Unix-domain connection to a PostgreSQL server.  With ssl = on a
    TCP connection first asks the server for SSL (pgpool-II does for every backend connection)
    and is a TLS socket when it agreed; tls.TlsHandshakeError (an OSError) when that failed."""
    if not host or host.startswith("/"):
        path = f"{host or '/tmp'}/.s.PGSQL.{port}"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError:
            s.close()
            raise
    else:
        s = socket.create_connection((host, port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = tls.backend() if negotiate_ssl else None
        if context is not None:
            try:
                s = tls.negotiate_backend(s, context)
            except OSError:
                s.close()
                raise
    s.settimeout(None)
    return s


def read_message(sock: socket.socket, buf: bytearray, max_length: int,
                 closed: str, wait=None) -> tuple[bytes, bytes]:
    """Next whole message (kind, payload) from `sock`, buffered in `buf` (used outside the relay:
    startup, authentication, pgpool's own queries). ValueError on a length outside
    4..max_length, EOFError(`closed`) when the peer closed the socket. `wait()`, when given,
    is called before each read from the socket (to time it out)."""
    while True:
        if len(buf) >= 5:
            length = _I32.unpack_from(buf, 1)[0]
            if length < 4 or length > max_length:
                raise ValueError(f"invalid message length {length}")
            if len(buf) >= length + 1:
                kind, payload = bytes(buf[:1]), bytes(buf[5:length + 1])
                del buf[:length + 1]
                return kind, payload
        if wait is not None:
            wait()
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(closed)
        buf += chunk


class BackendConn:
    """A started-up backend session; the relay reads and writes `sock` directly."""

    __slots__ = ("node_id", "sock", "pid", "key", "params", "txn_status", "rbuf", "fileno",
                 "auth_kind", "handshake", "fatal")

    def __init__(self, node_id: int, sock: socket.socket):
        self.node_id = node_id
        self.sock = sock
        self.fileno = sock.fileno()
        self.pid = 0
        self.key = 0
        self.params: dict[str, str] = {}
        self.txn_status = b"I"
        self.rbuf = bytearray()
        self.auth_kind = 0
        self.handshake: bytes | None = None    # cached AuthOk + ParameterStatus + KeyData
        self.fatal: str | None = None          # SQLSTATE of a FATAL error it sent (then it ends)

    # -- message I/O used during startup, authentication and pool maintenance --------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_message(self, wait=None) -> tuple[bytes, bytes]:
        """Next whole message (kind, payload); EOFError if the server closed the socket."""
        try:
            return read_message(self.sock, self.rbuf, m.MAX_MESSAGE_LENGTH,
                                "backend closed the connection", wait)
        except ValueError as e:
            raise BackendError(self.node_id, f"{e} from backend") from e

    def _waiter(self, timeout: float):
        """A wait() for read_message: socket.timeout when nothing arrives within `timeout`
        seconds (one poll() per read, the socket stays blocking)."""
        poller = select.poll()
        poller.register(self.fileno, select.POLLIN)
        ms = int(timeout * 1000)
        sock = self.sock
        tls = isinstance(sock, TlsSocket)

        def wait() -> None:
            if not (tls and sock.pending()) and not poller.poll(ms):
                raise socket.timeout(f"backend node {self.node_id} did not answer within {timeout}s")
        return wait

    def finish_queries(self, count: int, timeout: float) -> list[int]:
        """Read the replies to `count` simple queries sent at once (up to their ReadyForQuery),
        waiting at most `timeout` seconds for each read: the indexes of the queries that
        failed. ParameterStatus updates `params`."""
        wait = self._waiter(timeout)
        failed: list[int] = []
        done = 0
        while done < count:
            kind, payload = self.recv_message(wait)
            if kind == b"Z":
                self.txn_status = payload[:1]
                done += 1
            elif kind == b"E":
                failed.append(done)
            elif kind == b"S":
                k, v = payload.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
                self.handshake = None
        return failed

    def simple_query(self, sql: str) -> tuple[list[list[str | None]], list[dict]]:
        """Run a query on this connection; returns (rows as text, errors)."""
        self.send(m.query(sql))
        rows, errors = [], []
        while True:
            kind, payload = self.recv_message()
            if kind == b"D":
                n = struct.unpack_from("!h", payload)[0]
                pos, row = 2, []
                for _ in range(n):
                    ln = _I32.unpack_from(payload, pos)[0]
                    pos += 4
                    if ln < 0:
                        row.append(None)
                    else:
                        row.append(payload[pos:pos + ln].decode())
                        pos += ln
                rows.append(row)
            elif kind == b"E":
                errors.append(m.parse_error_fields(payload))
            elif kind == b"S":
                k, v = payload.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
                self.handshake = None
            elif kind == b"Z":
                self.txn_status = payload[:1]
                return rows, errors

    def close(self, terminate: bool = True) -> None:
        try:
            if terminate:
                self.sock.sendall(m.terminate())
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def any_broken(conns) -> bool:
    """True if the server of one of these idle connections closed it or sent something (e.g. a
    FATAL on shutdown): one poll() for all of them (TLS: decrypted data waiting counts too)."""
    poller = select.poll()
    for c in conns:
        if isinstance(c.sock, TlsSocket) and c.sock.pending():
            return True
        poller.register(c.fileno, select.POLLIN)
    return bool(poller.poll(0))


# pgpool's own queries on a session's connections run through a named statement and portal of
# the extended protocol, closed again before the Sync: a simple Query would destroy the client's
# unnamed prepared statement. The statement is closed first too, in case an earlier run failed
# before its Close (closing a statement that does not exist is no error).
_OWN_NAME = b"pgpool_internal\0"


def internal_query(sql: str) -> bytes:
    """Close/Parse/Bind/Execute/Close/Close/Sync of `sql` under pgpool's own statement and portal
    names. Replies: CloseComplete, ParseComplete, BindComplete, DataRow(s), CommandComplete,
    2 x CloseComplete, ReadyForQuery (or an ErrorResponse and ReadyForQuery)."""
    return b"".join((
        m.message(b"C", b"S" + _OWN_NAME),
        m.message(b"P", _OWN_NAME + sql.encode() + b"\0\0\0"),
        m.message(b"B", _OWN_NAME + _OWN_NAME + b"\0\0\0\0\0\0"),
        m.message(b"E", _OWN_NAME + b"\0\0\0\0"),
        m.message(b"C", b"P" + _OWN_NAME),
        m.message(b"C", b"S" + _OWN_NAME),
        m.sync(),
    ))


INSERT_LSN_SQL = "SELECT pg_catalog.pg_current_wal_insert_lsn()"
REPLAY_LSN_SQL = "SELECT pg_catalog.pg_last_wal_replay_lsn()"
INSERT_LSN_QUERY = internal_query(INSERT_LSN_SQL)
REPLAY_LSN_QUERY = internal_query(REPLAY_LSN_SQL)


def first_column(data_row: bytes) -> bytes | None:
    """The first column of a DataRow payload (None for SQL NULL or no column)."""
    if len(data_row) < 6 or _I16.unpack_from(data_row)[0] < 1:
        return None
    length = _I32.unpack_from(data_row, 2)[0]
    return None if length < 0 else data_row[6:6 + length]


def run_internal(conn: "BackendConn", request: bytes, timeout: float) -> bytes | None:
    """Send one `internal_query` on an idle connection and read its replies up to
    ReadyForQuery: the first column of its first row, None for no row / NULL / an error.
    OSError (socket.timeout included) or EOFError when the backend does not answer."""
    sock = conn.sock
    sock.settimeout(timeout)
    try:
        sock.sendall(request)
        value = None
        while True:
            kind, payload = conn.recv_message()
            if kind == b"D" and value is None:
                value = first_column(payload)
            elif kind == b"Z":
                conn.txn_status = payload[:1]
                return value
            elif kind == b"S":
                k, v = payload.split(b"\0")[:2]
                conn.params[k.decode()] = v.decode()
                conn.handshake = None
    finally:
        sock.settimeout(None)


def read_startup_reply(conn: BackendConn) -> None:
    """After AuthenticationOk: collect ParameterStatus and BackendKeyData up to ReadyForQuery."""
    while True:
        kind, payload = conn.recv_message()
        if kind == b"S":
            k, v = payload.split(b"\0")[:2]
            conn.params[k.decode()] = v.decode()
        elif kind == b"K":
            conn.pid, conn.key = struct.unpack("!ii", payload[:8])
        elif kind == b"Z":
            conn.txn_status = payload[:1]
            return
        elif kind == b"E":
            fields = m.parse_error_fields(payload)
            raise BackendError(conn.node_id, fields.get("M", "backend error"), fields)
        # NoticeResponse and anything else during startup is ignored
