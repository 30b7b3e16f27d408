"""Reading a client's first packet: StartupMessage, SSLRequest/GSSENCRequest, CancelRequest."""

import socket
import struct
from dataclasses import dataclass

from pgpool.protocol import messages as m


class ClientGone(Exception):
    """The client closed its connection (or timed out) before the session started."""


class StartupRefused(Exception):
    """The startup packet is unacceptable; `reply` is what to send before closing."""

    def __init__(self, log_message: str, reply: bytes = b""):
        super().__init__(log_message)
        self.reply = reply


@dataclass
class Startup:
    major: int
    minor: int
    params: dict
    raw: bytes          # the packet as received (length word included)
    extra: bytes = b""  # bytes the client sent after it (normally none)

    @property
    def user(self) -> str:
        return self.params.get("user", "")

    @property
    def database(self) -> str:
        return self.params.get("database") or self.user

    @property
    def application_name(self) -> str:
        return self.params.get("application_name", "")


@dataclass
class Cancel:
    pid: int
    key: int


class _Reader:
    """Reads the startup packets with as few recv calls as possible (usually one per packet).
    `before_block()`, when given, is called once before the first recv that has to wait (the
    socket is read without waiting until then)."""

    def __init__(self, sock: socket.socket, before_block=None):
        self.sock = sock
        self.buf = bytearray()
        self.before_block = before_block

    def _recv(self, size: int) -> bytes:
        if self.before_block is not None:
            try:
                return self.sock.recv(size, socket.MSG_DONTWAIT)
            except BlockingIOError:
                self.before_block()
                self.before_block = None
        return self.sock.recv(size)

    def exact(self, n: int) -> bytes:
        buf = self.buf
        while len(buf) < n:
            try:
                chunk = self._recv(max(8192, n - len(buf)))
            except (socket.timeout, BlockingIOError) as e:
                # SO_RCVTIMEO expired (authentication_timeout)
                raise ClientGone("timeout while reading the startup packet") \
                    from socket.timeout(str(e))
            except OSError as e:
                raise ClientGone(str(e)) from e
            if not chunk:
                raise ClientGone("client closed the connection before sending a startup packet"
                                 if not buf else "incomplete startup packet")
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out


def _fatal(sqlstate: str, msg: str) -> bytes:
    return m.error_response("FATAL", sqlstate, msg)


def read_startup(sock: socket.socket, start_tls=None, before_block=None) -> Startup | Cancel:
    """Read packets until a StartupMessage or CancelRequest.

    An SSLRequest is answered 'S' and the connection handed to ``start_tls(sock)``, which returns
    the TLS socket the rest is read from, when it is given (TLS towards clients is on); else, and
    for a GSSENCRequest, the answer is 'N' and the client may go on in plain text.
    ``before_block()`` is called before the first read of the plain socket that has to wait
    (to arm a receive timeout); the TLS socket's timeout is ``start_tls``'s business."""
    reader = _Reader(sock, before_block)
    while True:
        head = reader.exact(4)
        length = struct.unpack("!i", head)[0]
        if length < 8 or length > m.MAX_STARTUP_PACKET_LENGTH:
            raise StartupRefused(f"invalid length of startup packet: {length}",
                                 _fatal("08P01", "invalid length of startup packet"))
        body = reader.exact(length - 4)
        code = struct.unpack_from("!i", body)[0]
        if code == m.SSL_REQUEST_CODE and start_tls is not None:
            if reader.buf:
                # bytes sent before the handshake could be injected by a man in the middle
                raise StartupRefused("received unencrypted data after SSL request",
                                     _fatal("08P01", "received unencrypted data after SSL request"))
            sock.sendall(b"S")
            sock = reader.sock = start_tls(sock)
            start_tls = reader.before_block = None
            continue
        if code in (m.SSL_REQUEST_CODE, m.GSSENC_REQUEST_CODE):
            sock.sendall(b"N")
            continue
        if code == m.CANCEL_REQUEST_CODE:
            if length != 16:
                raise StartupRefused("invalid length of cancel request packet")
            pid, key = struct.unpack_from("!ii", body, 4)
            return Cancel(pid, key)
        major, minor = code >> 16, code & 0xFFFF
        if major == 2:
            # A protocol 2 client expects a v2 error: 'E' and a NUL-terminated text.
            raise StartupRefused(
                "unsupported frontend protocol 2.0: server supports 3.0 to 3.0",
                b"E" + b"FATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n\0")
        if major != 3:
            raise StartupRefused(
                f"unsupported frontend protocol {major}.{minor}",
                _fatal("0A000", f"unsupported frontend protocol {major}.{minor}: "
                                "server supports 3.0 to 3.0"))
        try:
            params = m.parse_startup_params(body[4:])
        except m.StartupError as e:
            raise StartupRefused(str(e), _fatal(e.sqlstate, str(e))) from e
        if not params.get("user"):
            raise StartupRefused("no PostgreSQL user name specified in startup packet",
                                 _fatal("28000",
                                        "no PostgreSQL user name specified in startup packet"))
        if "replication" in params and params["replication"] not in ("false", "off", "0", "no"):
            raise StartupRefused("replication connections are not supported",
                                 _fatal("0A000", "replication connections are not supported "
                                                 "through pgpool"))
        return Startup(major, minor, params, head + body, bytes(reader.buf))
