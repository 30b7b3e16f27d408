"""Raw-socket PostgreSQL protocol helpers for tests: build packets, read replies, parse errors.

Independent of the code under test (pgpool.protocol) on purpose, so that a codec bug cannot hide
itself: a test talking through these helpers sees exactly the bytes pgpool put on the wire.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

PROTOCOL_3_0 = 3 << 16
SSL_REQUEST = 80877103


def packet(payload: bytes) -> bytes:
    """A length-prefixed packet without a kind byte (StartupMessage, SSLRequest, ...)."""
    return struct.pack("!i", len(payload) + 4) + payload


def startup_packet(params: dict[str, str], version: int = PROTOCOL_3_0) -> bytes:
    body = struct.pack("!i", version)
    body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return packet(body)


def ssl_request() -> bytes:
    return packet(struct.pack("!i", SSL_REQUEST))


def message(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


def query(sql: str) -> bytes:
    return message(b"Q", sql.encode() + b"\0")


def copy_data(data: bytes) -> bytes:
    return message(b"d", data)


def parse_fields(payload: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse / NoticeResponse payload by their type letter."""
    fields: dict[str, str] = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


@dataclass
class Reply:
    """Everything a server sent until it closed the socket (or the read timed out)."""

    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    raw: bytes = b""            # bytes that did not form a whole message (e.g. a v2 error)
    closed: bool = False        # the server closed the connection
    timed_out: bool = False

    def errors(self) -> list[dict[str, str]]:
        return [parse_fields(p) for k, p in self.messages if k == b"E"]

    def kinds(self) -> bytes:
        return b"".join(k for k, _ in self.messages)


class RawConn:
    """A TCP connection speaking raw protocol bytes."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fill(self, timeout: float) -> bool:
        """Read more bytes; False on EOF/reset (sets self.eof). Raises socket.timeout."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def recv_bytes(self, n: int, timeout: float = 10.0) -> bytes:
        """Exactly ``n`` bytes, or fewer if the server closed the connection first."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < n and not self.eof:
            self._fill(max(0.01, deadline - time.monotonic()))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_message(self, timeout: float = 10.0) -> tuple[bytes, bytes] | None:
        """The next (kind, payload), or None when the server closed the connection."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 5:
                length = struct.unpack_from("!i", self.buf, 1)[0]
                if len(self.buf) >= 1 + length:
                    kind, payload = self.buf[:1], self.buf[5:1 + length]
                    self.buf = self.buf[1 + length:]
                    return kind, payload
            if self.eof or not self._fill(max(0.01, deadline - time.monotonic())):
                return None

    def read_until(self, kind: bytes, timeout: float = 10.0) -> list[tuple[bytes, bytes]]:
        """Messages up to and including the first of ``kind``; AssertionError if the server
        closed the connection first."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv_message(max(0.01, deadline - time.monotonic()))
            assert msg is not None, f"server closed the connection; got {[k for k, _ in got]}"
            got.append(msg)
            if msg[0] == kind:
                return got

    def read_to_close(self, timeout: float = 10.0) -> Reply:
        """Every message until the server closes the connection (or ``timeout`` passes)."""
        reply = Reply()
        deadline = time.monotonic() + timeout
        try:
            while True:
                msg = self.recv_message(max(0.01, deadline - time.monotonic()))
                if msg is None:
                    break
                reply.messages.append(msg)
        except (socket.timeout, TimeoutError):
            reply.timed_out = True
        reply.closed = self.eof
        reply.raw, self.buf = self.buf, b""
        return reply

    def startup(self, user: str = "postgres", database: str = "postgres", **params: str) -> dict:
        """StartupMessage, then read to ReadyForQuery (trust authentication).

        Returns {"params": ParameterStatus dict, "pid": backend pid, "status": txn status}."""
        self.send(startup_packet({"user": user, "database": database, **params}))
        info: dict = {"params": {}}
        for kind, payload in self.read_until(b"Z"):
            if kind == b"E":
                raise AssertionError(f"startup failed: {parse_fields(payload)}")
            if kind == b"R":
                assert struct.unpack_from("!i", payload)[0] == 0, "server asked for a password"
            elif kind == b"S":
                name, value = payload.split(b"\0")[:2]
                info["params"][name.decode()] = value.decode()
            elif kind == b"K":
                info["pid"], info["key"] = struct.unpack("!ii", payload)
            elif kind == b"Z":
                info["status"] = payload
        return info

    def simple_query(self, sql: str, timeout: float = 10.0) -> list[tuple[bytes, bytes]]:
        """Send a Query and return every reply message up to ReadyForQuery."""
        self.send(query(sql))
        return self.read_until(b"Z", timeout)


def data_rows(messages: list[tuple[bytes, bytes]]) -> list[list[str | None]]:
    """The values of the DataRow messages (text format)."""
    rows = []
    for kind, payload in messages:
        if kind != b"D":
            continue
        (count,) = struct.unpack_from("!h", payload)
        pos, row = 2, []
        for _ in range(count):
            (n,) = struct.unpack_from("!i", payload, pos)
            pos += 4
            if n < 0:
                row.append(None)
            else:
                row.append(payload[pos:pos + n].decode())
                pos += n
        rows.append(row)
    return rows
