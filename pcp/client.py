"""PCP client library: connect (TCP or Unix socket), authenticate, send requests, read replies like libpcp.

Errors carry libpcp's exact message text (``PCPError.text``; None where libpcp has none, which
its tools print as "Unknown Error").  With ``debug`` set to a text stream the same trace lines as
libpcp are written to it (``DEBUG: send: tos="L", len=4`` ...), including libpcp's odd labels.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
from dataclasses import dataclass, field
from typing import Callable, Iterator, TextIO

from pcp import protocol as p

DEFAULT_HOST = "localhost"     # what a Unix-socket connection is called in .pcppass
PCPPASS_LINE_MAX = 319         # libpcp reads .pcppass with fgets into a 320-byte buffer

# The "tos" libpcp prints in its send trace for each request kind (several are libpcp typos).
SEND_TRACE = {
    b"L": 'DEBUG: send: tos="L", len=%d', b"I": 'DEBUG: send: tos="I", len=%d',
    b"H": 'DEBUG: send: tos="L", len=%d', b"N": 'DEBUG: send: tos="N", len=%d',
    b"P": 'DEBUG: send: tos="P", len=%d', b"B": 'DEBUG pcp_pool_status: send: tos="B", len=%d',
    b"W": 'DEBUG: send: tos="W", len=%d', b"D": 'DEBUG: send: tos="D", len=%d',
    b"d": 'DEBUG: send: tos="D", len=%d', b"C": 'DEBUG: send: tos="C", len=%d',
    b"O": 'DEBUG: send: tos="D", len=%d', b"J": 'DEBUG: send: tos="E", len=%d',
    b"j": 'DEBUG: send: tos="E", len=%d', b"T": 'DEBUG: send: tos="T", len=%d',
    b"t": 'DEBUG: send: tos="T", len=%d', b"Z": 'DEBUG: send: tos="Z", len=%d',
    b"A": 'DEBUG: send: tos="A", len=%d', b"X": 'DEBUG: send: tos="X", len=%d',
}
# The request letter libpcp checks replies against ('d' and 'j' are checked as 'D' and 'J').
CHECKED_AS = {b"d": b"D", b"j": b"J", b"t": b"T"}
KNOWN_REPLIES = frozenset(b"rmENihlcdazwpnbt")


class PCPError(Exception):
    """A failed PCP operation; ``text`` is libpcp's message (None: libpcp has none)."""

    def __init__(self, text: str | None):
        super().__init__(text or "Unknown Error")
        self.text = text


class PCPConnectError(PCPError):
    """Connecting or authenticating failed (the pcp tools exit 1)."""


@dataclass
class ArrayResult:
    """A multi-record reply: ``slots`` as announced by ArraySize (at least 1), ``items`` received."""
    slots: int = 1
    items: list = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        """libpcp's pcp_result_is_empty(): at most one slot and nothing in it."""
        return self.slots <= 1 and not self.items


# ---- .pcppass -------------------------------------------------------------------------------

def pcppass_match(field_text: str, token: str) -> str | None:
    """Match one ':'-separated field at the start of ``field_text``; the rest of the line or None.

    ``*`` matches anything; ``\\`` escapes the next character (libpcp's pwdfMatchesString)."""
    if field_text.startswith("*:"):
        return field_text[2:]
    i, t = 0, 0
    while i < len(field_text):
        escaped = False
        if field_text[i] == "\\":
            i += 1
            escaped = True
            if i >= len(field_text):
                return None
        if field_text[i] == ":" and t == len(token) and not escaped:
            return field_text[i + 1:]
        if t == len(token) or field_text[i] != token[t]:
            return None
        i += 1
        t += 1
    return None


def pcppass_unescape(text: str) -> str:
    """The password field: up to the first unescaped ':' with backslash escapes removed."""
    out, i = [], 0
    while i < len(text) and text[i] != ":":
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def pcppass_lookup(lines: list[str], host: str, port: str, user: str) -> str | None:
    """The password of the first matching ``host:port:user:password`` line."""
    for line in lines:
        rest = pcppass_match(line, host)
        rest = pcppass_match(rest, port) if rest is not None else None
        rest = pcppass_match(rest, user) if rest is not None else None
        if rest is not None:
            return pcppass_unescape(rest)
    return None


def pcppass_path() -> str | None:
    """$PCPPASSFILE, else ~/.pcppass of the effective user."""
    if "PCPPASSFILE" in os.environ:
        return os.environ["PCPPASSFILE"]
    try:
        return os.path.join(pwd.getpwuid(os.geteuid()).pw_dir, ".pcppass")
    except KeyError:
        return None


def pcppass_host(host: str | None) -> str:
    """The host name .pcppass lines are compared with: localhost for the default socket dir."""
    return DEFAULT_HOST if host is None or host in ("", p.DEFAULT_SOCKET_DIR) else host


def read_pcppass_lines(path: str) -> list[str]:
    """Lines as libpcp's fgets loop sees them (long lines split, one trailing newline removed)."""
    with open(path, "rb") as fh:
        data = fh.read().decode(errors="replace")
    lines: list[str] = []
    for raw in data.splitlines(keepends=True):
        while len(raw) > PCPPASS_LINE_MAX:
            lines.append(raw[:PCPPASS_LINE_MAX])
            raw = raw[PCPPASS_LINE_MAX:]
        lines.append(raw[:-1] if raw.endswith("\n") else raw)
    return lines


def password_from_file(host: str | None, port: int, user: str | None, debug: TextIO | None = None) -> str | None:
    """libpcp's PasswordFromFile: skip unless a regular file with no group/other permissions."""
    if not user:
        return None
    path = pcppass_path()
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        if debug:
            debug.write(f'WARNING: password file "{path}" is not a plain file\n')
        return None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        if debug:
            debug.write(f'WARNING: password file "{path}" has group or world access; '
                        "permissions should be u=rw (0600) or less\n")
        return None
    try:
        lines = read_pcppass_lines(path)
    except OSError:
        return None
    return pcppass_lookup(lines, pcppass_host(host), str(port), user)


def os_user_name() -> str | None:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return None


# ---- connection -----------------------------------------------------------------------------

class PCPConnection:
    """One authenticated PCP session.  ``connect()`` opens it; use as a context manager."""

    def __init__(self, sock: socket.socket, debug: TextIO | None = None):
        self.sock = sock
        self.debug = debug
        self._buf = b""
        self.authenticated = False

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def connect(cls, host: str | None = None, port: int = p.DEFAULT_PORT, user: str | None = None,
                password: str | None = None, debug: TextIO | None = None,
                timeout: float | None = None) -> PCPConnection:
        """Connect like pcp_connect(): ``host`` None/empty/starting with '/' = Unix socket directory."""
        sock = open_socket(host, port, timeout)
        conn = cls(sock, debug)
        if user is None:
            user = os_user_name()
        if not password:
            password = password_from_file(host, port, user, debug)
        try:
            conn.authenticate(user or "", password or "")
        except PCPError as exc:
            conn.sock.close()
            raise PCPConnectError(exc.text) from None
        return conn

    def authenticate(self, user: str, password: str) -> None:
        if len(user.encode()) >= p.MAX_USER_PASSWD_LEN:
            raise PCPError("ERROR: PCP authorization failed. username too long.")
        self._send(p.request_salt(), trace=False)
        salt = self._single(b"M", p.decode_salt)
        self._send(p.request_auth(user, p.auth_hash(user, password, salt)), trace=False)

        def accept(payload: bytes) -> None:
            reason = payload.split(b"\0")[0].decode(errors="replace")
            if reason != "AuthenticationOK":
                raise PCPError(f'ERROR: authentication failed. reason="{reason}"')
        self._single(b"R", accept)
        self.authenticated = True

    def close(self) -> None:
        """Send 'X' (if authenticated) and close the socket."""
        if self.authenticated:
            try:
                self._send(p.request_disconnect())
            except PCPError:
                pass
            self.authenticated = False
        self.sock.close()

    def __enter__(self) -> PCPConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- wire -------------------------------------------------------------------------------
    def _send(self, message: bytes, trace: bool = True) -> None:
        try:
            self.sock.sendall(message)
        except OSError as exc:
            raise PCPError(f'ERROR: sending data to backend failed with error "{os.strerror(exc.errno or 0)}"') from None
        if trace and self.debug:
            self.debug.write(SEND_TRACE[message[:1]] % (len(message) - 1) + "\n")

    def _read_packet(self) -> tuple[bytes, bytes]:
        while True:
            try:
                got = p.split_frame(self._buf)
            except p.ProtocolError:
                got = None
                self._buf = b""
                raise PCPError("ERROR: unable to read data from socket.") from None
            if got:
                kind, payload, self._buf = got
                if self.debug:
                    self.debug.write(f'DEBUG: recv: tos="{kind.decode(errors="replace")}", len={len(payload) + 4}\n')
                return kind, payload
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                raise PCPError("ERROR: unable to read data from socket.")
            self._buf += chunk

    def _replies(self, sent: bytes) -> Iterator[bytes]:
        """Payloads of the reply packets to request ``sent``; skips notices, raises on errors."""
        checked = CHECKED_AS.get(sent, sent)
        expected = p.REPLY_KIND[checked]
        while True:
            kind, payload = self._read_packet()
            if kind == b"N":
                self._notice(payload)
                continue
            if kind == b"E":
                raise PCPError(p.libpcp_error_text(payload))
            if kind != expected:
                if kind[0] in KNOWN_REPLIES:
                    raise PCPError(None)
                raise PCPError(f'ERROR: invalid PCP packet type ="{kind.decode(errors="replace")}"')
            yield payload

    def _notice(self, payload: bytes) -> None:
        sev, msg, det = p.libpcp_error_fields(payload)
        if self.debug and (sev is not None or msg is not None):
            self.debug.write(f"BACKEND {sev}:  {msg}\n" + (f"DETAIL:  {det}\n" if det is not None else ""))

    def _single(self, sent: bytes, decode: Callable[[bytes], object]):
        """Send nothing; read the one-packet reply to ``sent`` and decode it."""
        for payload in self._replies(sent):
            try:
                return decode(payload)
            except p.ProtocolError as exc:
                raise PCPError(str(exc)) from None
        raise AssertionError("unreachable")

    def _request(self, message: bytes, decode: Callable[[bytes], object]):
        self._require_auth()
        self._send(message)
        return self._single(message[:1], decode)

    def _array(self, message: bytes, tag: str, decode: Callable[[bytes], object],
               binary_size: bool = False) -> ArrayResult:
        """ArraySize / records / CommandComplete replies (node info, process info, pool status)."""
        self._require_auth()
        self._send(message)
        result, incomplete = ArrayResult(), False
        for payload in self._replies(message[:1]):
            head = p.record_tag(payload)
            try:
                if head == "ArraySize":
                    size = p.decode_array_size(payload, binary_size)
                    result.slots = max(result.slots, size) if size > 0 else result.slots
                    incomplete = True
                elif head == tag and incomplete and len(result.items) < result.slots:
                    result.items.append(decode(payload))
                elif head == p.CC:
                    return result
                else:
                    raise p.ProtocolError("command failed. invalid response")
            except p.ProtocolError:
                raise PCPError("command failed. invalid response") from None
        raise AssertionError("unreachable")

    def _require_auth(self) -> None:
        if not self.authenticated:
            raise PCPError("invalid PCP connection")

    # -- commands ---------------------------------------------------------------------------
    def node_count(self) -> int:
        return self._request(p.request_node_count(), p.decode_node_count)

    def node_info(self, node_id: int = -1) -> ArrayResult:
        return self._array(p.request_node_info(node_id), "NodeInfo", p.decode_node_info)

    def health_check_stats(self, node_id: int) -> p.HealthCheckStats:
        return self._request(p.request_health_check_stats(node_id), p.decode_health_check_stats)

    def process_count(self) -> list[int]:
        return self._request(p.request_process_count(), p.decode_process_count)

    def process_info(self, pid: int = 0) -> ArrayResult:
        return self._array(p.request_process_info(pid), "ProcessInfo", p.decode_process_info)

    def pool_status(self) -> ArrayResult:
        return self._array(p.request_pool_status(), "ProcessConfig", p.decode_config_item, binary_size=True)

    def watchdog_info(self, wd_id: int = -1) -> p.WatchdogInfo:
        return self._request(p.request_watchdog_info(wd_id), p.decode_watchdog_info)

    def detach_node(self, node_id: int, gracefully: bool = False) -> None:
        self._request(p.request_detach_node(node_id, gracefully), p.decode_command_complete)

    def attach_node(self, node_id: int) -> None:
        self._request(p.request_attach_node(node_id), p.decode_command_complete)

    def promote_node(self, node_id: int, gracefully: bool = False, switchover: bool = False) -> None:
        self._request(p.request_promote_node(node_id, gracefully, switchover), p.decode_command_complete)

    def recovery_node(self, node_id: int) -> None:
        self._request(p.request_recovery_node(node_id), p.decode_command_complete)

    def stop_pgpool(self, mode: str = "s", scope: str = "l") -> None:
        # libpcp accepts any 't' reply here without looking at its payload
        self._request(p.request_stop_pgpool(mode, scope), lambda payload: None)

    def reload_config(self, scope: str = "l") -> None:
        self._request(p.request_reload_config(scope), p.decode_command_complete)

    def set_parameter(self, name: str, value: str) -> None:
        if self.debug:
            self.debug.write(f'DEBUG: seting: "{name} = {value}"\n')
        self._request(p.request_set_parameter(name, value), p.decode_command_complete)


def open_socket(host: str | None, port: int, timeout: float | None = None) -> socket.socket:
    """A connected socket with libpcp's error messages (raised as PCPConnectError)."""
    if not host or host.startswith("/"):
        path = f"{host or p.DEFAULT_SOCKET_DIR}/.s.PGSQL.{port}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise PCPConnectError(f'ERROR: connection to socket "{path}" failed with error '
                                  f'"{os.strerror(exc.errno or 0)}"') from None
        return sock
    try:
        address = socket.gethostbyname(host)
    except OSError:
        raise PCPConnectError('ERROR: could not retrieve hostname. gethostbyname failed with error '
                              f'"{os.strerror(0)}"') from None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
    except OSError as exc:
        sock.close()
        raise PCPConnectError(f'ERROR: connection to host "{host}" failed with error '
                              f'"{os.strerror(exc.errno or 0)}"') from None
    return sock
