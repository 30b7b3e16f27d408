"""PCP (pgpool-II 4.3 control protocol) codecs: framing, auth hash, errors, every request and reply.

Pure functions from values to bytes and back; no sockets.  Every message in both directions is
one kind byte + an int32 big-endian length that counts itself + a payload of NUL-terminated
ASCII strings (the stop/reload mode byte and the pool-status array size are the exceptions).
Request encoders return whole framed messages; reply encoders (server side) return the framed
message(s) of one reply; decoders take one payload (without kind and length).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import astuple, dataclass, fields

MAX_PACKET_LENGTH = 260          # the server refuses requests whose length is not in (0, 260)
MAX_USER_PASSWD_LEN = 128
RAND_MAX = 2147483647            # NodeInfo weights are normalised to RAND_MAX
CC = "CommandComplete"
DEFAULT_PORT = 9898
DEFAULT_SOCKET_DIR = "/tmp"      # libpcp's UNIX_DOMAIN_PATH

_HDR = struct.Struct("!ci")
_I32 = struct.Struct("!i")


class ProtocolError(ValueError):
    """A malformed PCP message (libpcp reports these as "command failed. invalid response")."""


# ---- framing --------------------------------------------------------------------------------

def frame(kind: bytes, payload: bytes = b"") -> bytes:
    """One PCP message: kind byte + int32 length (including its own 4 bytes) + payload."""
    return _HDR.pack(kind, len(payload) + 4) + payload


def split_frame(buf: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(kind, payload, rest) for the first complete message in ``buf``, or None if incomplete."""
    if len(buf) < 5:
        return None
    kind, length = _HDR.unpack_from(buf)
    if length < 4:
        raise ProtocolError(f"incorrect packet length ({length})")
    if len(buf) < 1 + length:
        return None
    return kind, buf[5:1 + length], buf[1 + length:]


def cstrings(*values: object) -> bytes:
    """Values as consecutive NUL-terminated strings."""
    return b"".join(str(v).encode() + b"\0" for v in values)


def split_cstrings(payload: bytes) -> list[str]:
    """NUL-terminated strings of a payload (a trailing fragment without NUL is kept)."""
    parts = payload.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode(errors="replace") for p in parts]


def c_atoi(text: str) -> int:
    """C atoi(): optional blanks and sign, then leading digits; 0 when there are none."""
    s = text.lstrip(" \t\n\v\f\r")
    sign, digits = 1, ""
    if s[:1] in "+-" and s[:1]:
        sign, s = (-1 if s[0] == "-" else 1), s[1:]
    for ch in s:
        if not ch.isdigit() or not ch.isascii():
            break
        digits += ch
    return sign * int(digits) if digits else 0


def c_atof(text: str) -> float:
    """C atof() for the decimal numbers PCP carries (leading numeric prefix, else 0.0)."""
    s = text.strip()
    for end in range(len(s), 0, -1):
        try:
            return float(s[:end])
        except ValueError:
            continue
    return 0.0


# ---- authentication -------------------------------------------------------------------------

def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def stored_password_hash(password: str) -> str:
    """What pcp.conf holds for a password: md5hex(password)."""
    return md5_hex(password.encode())


def salted_hash(stored_hash: str, user: str, salt: bytes) -> str:
    """md5hex(md5hex(stored_hash + user) + salt): the server's side of the check."""
    return md5_hex(md5_hex((stored_hash + user).encode()).encode() + salt)


def auth_hash(user: str, password: str, salt: bytes) -> str:
    """The string a client sends in 'R': md5hex(md5hex(md5hex(password) + user) + salt), no prefix."""
    return salted_hash(stored_password_hash(password), user, salt)


def request_salt() -> bytes:
    return frame(b"M")


def encode_salt(salt: bytes) -> bytes:
    if len(salt) != 4:
        raise ValueError("salt must be 4 bytes")
    return frame(b"m", salt)


def decode_salt(payload: bytes) -> bytes:
    if len(payload) < 4:
        raise ProtocolError("short salt")
    return payload[:4]


def request_auth(user: str, hashed: str) -> bytes:
    return frame(b"R", cstrings(user, hashed))


def decode_auth(payload: bytes) -> tuple[str, str]:
    parts = split_cstrings(payload)
    if len(parts) < 2:
        raise ProtocolError("error while reading authentication packet")
    return parts[0], parts[1]


def encode_auth_ok() -> bytes:
    return frame(b"r", cstrings("AuthenticationOK"))


# ---- error and notice packets ---------------------------------------------------------------

@dataclass
class ErrorReport:
    severity: str
    message: str
    detail: str | None = None
    hint: str | None = None
    sqlstate: str = "XX000"
    file: str | None = None
    line: int | None = None


def encode_error(severity: str, message: str, detail: str | None = None, hint: str | None = None,
                 sqlstate: str = "XX000", file: str = "pcp_worker.c", line: int = 0,
                 kind: bytes | None = None) -> bytes:
    """An 'E' (ERROR and worse) or 'N' (lower levels) packet; fields S C M [D] [H] F L + NUL."""
    if kind is None:
        kind = b"E" if severity in ("ERROR", "FATAL", "PANIC") else b"N"
    fields_ = [("S", severity), ("C", sqlstate), ("M", message), ("D", detail), ("H", hint),
               ("F", file), ("L", str(line))]
    body = b"".join(tag.encode() + value.encode() + b"\0" for tag, value in fields_ if value is not None)
    return frame(kind, body + b"\0")


def decode_error(payload: bytes) -> ErrorReport:
    """All fields of an 'E'/'N' payload."""
    found: dict[str, str] = {}
    for part in payload.split(b"\0"):
        if part:
            found.setdefault(chr(part[0]), part[1:].decode(errors="replace"))
    line = found.get("L")
    return ErrorReport(found.get("S", ""), found.get("M", ""), found.get("D"), found.get("H"),
                       found.get("C", "XX000"), found.get("F"), int(line) if line and line.isdigit() else None)


def libpcp_error_fields(payload: bytes) -> tuple[str | None, str | None, str | None]:
    """(severity, message, detail) picked the way libpcp's sloppy parser does.

    After an S/M/D field it does not skip the value, so the value's first character is read as
    the next field type; byte-identical error text needs the same quirk."""
    buf = payload + b"\0\0"
    sev = msg = det = None
    i = 0
    while buf[i] != 0:
        kind = chr(buf[i])
        i += 1
        if buf[i] == 0:
            break
        end = buf.index(b"\0", i)
        value = buf[i:end].decode(errors="replace")
        if kind == "M":
            msg = value
        elif kind == "S":
            sev = value
        elif kind == "D":
            det = value
        else:
            i = end + 1
        if sev is not None and msg is not None and det is not None:
            break
    return sev, msg, det


def libpcp_error_text(payload: bytes) -> str | None:
    """libpcp's message for an 'E' packet: "<S>:  <M>\\n" plus "DETAIL:  <D>\\n"; None if unusable."""
    sev, msg, det = libpcp_error_fields(payload)
    if sev is None and msg is None:
        return None
    text = f"{sev if sev is not None else '(null)'}:  {msg if msg is not None else '(null)'}\n"
    return text + (f"DETAIL:  {det}\n" if det is not None else "")


# ---- requests (client -> server) ------------------------------------------------------------

def request_node_count() -> bytes:
    return frame(b"L")


def request_node_info(node_id: int) -> bytes:
    """'I' <id>; -1 asks for every node."""
    return frame(b"I", cstrings(node_id))


def request_health_check_stats(node_id: int) -> bytes:
    return frame(b"H", cstrings(node_id))


def request_process_count() -> bytes:
    return frame(b"N")


def request_process_info(pid: int) -> bytes:
    """'P' <pid>; 0 asks for every child."""
    return frame(b"P", cstrings(pid))


def request_pool_status() -> bytes:
    return frame(b"B")


def request_watchdog_info(wd_id: int) -> bytes:
    return frame(b"W", cstrings(wd_id))


def request_detach_node(node_id: int, gracefully: bool = False) -> bytes:
    return frame(b"d" if gracefully else b"D", cstrings(node_id))


def request_attach_node(node_id: int) -> bytes:
    return frame(b"C", cstrings(node_id))


def request_promote_node(node_id: int, gracefully: bool = False, switchover: bool = False) -> bytes:
    """4.3 layout: "<id> " NUL then one option byte ('s' switchover, 'n' plain)."""
    return frame(b"j" if gracefully else b"J", f"{node_id} ".encode() + b"\0" + (b"s" if switchover else b"n"))


def request_stop_pgpool(mode: str = "s", scope: str = "l") -> bytes:
    """'T' (local) or 't' (cluster) with one raw mode byte s/f/i."""
    return frame(b"T" if scope == "l" else b"t", mode.encode()[:1])


def request_recovery_node(node_id: int) -> bytes:
    return frame(b"O", cstrings(node_id))


def request_reload_config(scope: str = "l") -> bytes:
    return frame(b"Z", scope.encode()[:1])


def request_set_parameter(name: str, value: str) -> bytes:
    return frame(b"A", cstrings(name, value))


def request_disconnect() -> bytes:
    return frame(b"X")


# Decoding requests on the server: request kind -> how its payload is read.
def _int_arg(payload: bytes) -> int:
    parts = split_cstrings(payload)
    return c_atoi(parts[0]) if parts else 0


def _promote_args(payload: bytes) -> tuple[int, str]:
    head, _, tail = payload.partition(b"\0")
    return c_atoi(head.decode(errors="replace")), (tail[:1].decode() if tail[:1] else "n")


def _raw_byte(payload: bytes) -> str:
    return payload[:1].decode(errors="replace")


REQUEST_ARGS = {
    b"L": None, b"N": None, b"B": None, b"X": None, b"F": None, b"M": None,
    b"I": _int_arg, b"H": _int_arg, b"P": _int_arg, b"W": _int_arg, b"D": _int_arg, b"d": _int_arg,
    b"C": _int_arg, b"O": _int_arg, b"J": _promote_args, b"j": _promote_args,
    b"T": _raw_byte, b"t": _raw_byte, b"Z": _raw_byte,
    b"A": split_cstrings, b"R": decode_auth,
}


def decode_request(kind: bytes, payload: bytes):
    """The argument of a request (int id, (id, option), mode byte, [name, value], (user, hash)) or None.

    Raises KeyError for an unknown kind."""
    reader = REQUEST_ARGS[kind]
    return reader(payload) if reader else None


# Reply letter each request expects (what libpcp accepts).
REPLY_KIND = {
    b"L": b"l", b"I": b"i", b"H": b"h", b"N": b"n", b"P": b"p", b"B": b"b", b"W": b"w",
    b"D": b"d", b"d": b"d", b"J": b"d", b"j": b"d", b"C": b"c", b"O": b"c", b"T": b"t", b"t": b"t",
    b"Z": b"z", b"A": b"a", b"M": b"m", b"R": b"r",
}


# ---- reply records --------------------------------------------------------------------------

@dataclass
class NodeInfo:
    """One 'i' NodeInfo record (4.3.1+ layout, 12 strings)."""
    hostname: str
    port: int
    status: int                  # 0 unused, 1 waiting, 2 up, 3 down
    quarantine: int
    pg_status: str
    weight: float                # normalised: RAND_MAX * w / sum(w)
    role: int                    # 0 main, 1 replica, 2 primary, 3 standby
    pg_role: str
    standby_delay: int
    replication_state: str
    replication_sync_state: str
    status_changed_time: int     # epoch seconds


@dataclass
class ProcessInfo:
    """One 'p' ProcessInfo record (17 strings, all kept as text)."""
    pool_pid: str
    start_time: str
    client_connection_count: str
    pool_id: str
    backend_id: str
    database: str
    username: str
    backend_connection_time: str
    client_connection_time: str
    client_disconnection_time: str
    client_idle_duration: str
    majorversion: str
    minorversion: str
    pool_counter: str
    pool_backendpid: str
    pool_connected: str
    status: str


@dataclass
class HealthCheckStats:
    """The 'h' reply's 20 strings."""
    node_id: str
    hostname: str
    port: str
    status: str
    role: str
    last_status_change: str
    total_count: str
    success_count: str
    fail_count: str
    skip_count: str
    retry_count: str
    average_retry_count: str
    max_retry_count: str
    max_health_check_duration: str
    min_health_check_duration: str
    average_health_check_duration: str
    last_health_check: str
    last_successful_health_check: str
    last_skip_health_check: str
    last_failed_health_check: str


@dataclass
class ConfigItem:
    """One 'b' ProcessConfig record."""
    name: str
    value: str
    desc: str


@dataclass
class WatchdogNode:
    id: int
    node_name: str
    host_name: str
    delegate_ip: str
    wd_port: int
    pgpool_port: int
    state: int
    state_name: str
    priority: int
    membership: int = 0
    membership_string: str = "NOT-Available"


@dataclass
class WatchdogInfo:
    remote_node_count: int
    member_remote_node_count: int
    nodes_required_for_quorum: int
    quorum_status: int
    alive_node_count: int
    escalated: bool
    leader_node_name: str
    leader_host_name: str
    nodes: list[WatchdogNode]


def _strings(record) -> list[str]:
    return [str(v) for v in astuple(record)]


def _fill(cls, values: list[str]):
    """A record from positional strings; missing trailing fields become empty strings."""
    names = [f.name for f in fields(cls)]
    values = list(values[:len(names)]) + [""] * (len(names) - len(values))
    return cls(*values)


# ---- replies: server-side encoders ----------------------------------------------------------

def encode_command_complete(kind: bytes) -> bytes:
    """A data-less success reply: 'c', 'd', 'z', 'a', 't' (and the final packet of array replies)."""
    return frame(kind, cstrings(CC))


def encode_node_count(count: int) -> bytes:
    return frame(b"l", cstrings(CC, count))


def node_info_strings(n: NodeInfo) -> list[str]:
    return [n.hostname, str(n.port), str(n.status), str(n.quarantine), n.pg_status, f"{n.weight:f}",
            str(n.role), n.pg_role, str(n.standby_delay), n.replication_state, n.replication_sync_state,
            str(n.status_changed_time)]


def encode_node_info_record(node: NodeInfo) -> bytes:
    return frame(b"i", cstrings("NodeInfo", *node_info_strings(node)))


def encode_node_info(nodes: list[NodeInfo]) -> bytes:
    """ArraySize, one NodeInfo per node, CommandComplete."""
    return (frame(b"i", cstrings("ArraySize", len(nodes)))
            + b"".join(encode_node_info_record(n) for n in nodes) + encode_command_complete(b"i"))


def encode_health_check_stats(stats: HealthCheckStats) -> bytes:
    return frame(b"h", cstrings(CC, *_strings(stats)))


def encode_proc_count(pids: list[int]) -> bytes:
    return frame(b"n", cstrings(CC, len(pids), *pids))


def encode_proc_info(rows: list[ProcessInfo], array_size: int | None = None) -> bytes:
    """ArraySize (defaults to len(rows)), the ProcessInfo records, CommandComplete."""
    size = len(rows) if array_size is None else array_size
    return (frame(b"p", cstrings("ArraySize", size))
            + b"".join(frame(b"p", cstrings("ProcessInfo", *_strings(r))) for r in rows)
            + encode_command_complete(b"p"))


def encode_pool_status(items: list[ConfigItem]) -> bytes:
    """ArraySize with a binary int32 count, ProcessConfig name/value/desc records, CommandComplete."""
    return (frame(b"b", cstrings("ArraySize") + _I32.pack(len(items)))
            + b"".join(frame(b"b", cstrings("ProcessConfig", i.name, i.value, i.desc)) for i in items)
            + encode_command_complete(b"b"))


def watchdog_json(info: WatchdogInfo) -> str:
    """The JSON document pgpool-II's watchdog produces for 'W'."""
    doc = {
        "RemoteNodeCount": info.remote_node_count,
        "MemberRemoteNodeCount": info.member_remote_node_count,
        "NodesRequireForQuorum": info.nodes_required_for_quorum,
        "QuorumStatus": info.quorum_status,
        "AliveNodeCount": info.alive_node_count,
        "Escalated": 1 if info.escalated else 0,
        "LeaderNodeName": info.leader_node_name,
        "LeaderHostName": info.leader_host_name,
        "NodeCount": len(info.nodes),
        "WatchdogNodes": [{
            "ID": n.id, "State": n.state, "Membership": n.membership, "MembershipString": n.membership_string,
            "NodeName": n.node_name, "HostName": n.host_name, "StateName": n.state_name,
            "DelegateIP": n.delegate_ip, "WdPort": n.wd_port, "PgpoolPort": n.pgpool_port,
            "Priority": n.priority} for n in info.nodes],
    }
    return json.dumps(doc)


def encode_watchdog_info(info: WatchdogInfo) -> bytes:
    return frame(b"w", cstrings(CC, watchdog_json(info)))


# ---- replies: client-side decoders ----------------------------------------------------------

def _expect_cc(parts: list[str]) -> list[str]:
    if not parts or parts[0] != CC:
        raise ProtocolError(f'command failed with reason: "{parts[0] if parts else ""}"')
    return parts[1:]


def decode_command_complete(payload: bytes) -> None:
    _expect_cc(split_cstrings(payload))


def decode_node_count(payload: bytes) -> int:
    rest = _expect_cc(split_cstrings(payload))
    return c_atoi(rest[0]) if rest else 0


def decode_array_size(payload: bytes, binary: bool = False) -> int:
    """The element count of an "ArraySize" packet (binary int32 for pool status)."""
    head, _, tail = payload.partition(b"\0")
    if head != b"ArraySize":
        raise ProtocolError("not an ArraySize packet")
    if binary:
        if len(tail) < 4:
            raise ProtocolError("short ArraySize")
        return _I32.unpack_from(tail)[0]
    return c_atoi(tail.split(b"\0")[0].decode(errors="replace"))


def record_tag(payload: bytes) -> str:
    """The leading string of a multi-packet reply packet: ArraySize, NodeInfo, ..., CommandComplete."""
    return payload.partition(b"\0")[0].decode(errors="replace")


def decode_node_info(payload: bytes) -> NodeInfo:
    parts = split_cstrings(payload)
    if not parts or parts[0] != "NodeInfo" or len(parts) < 13:
        raise ProtocolError("command failed. invalid response")
    p = parts[1:13]
    return NodeInfo(p[0], c_atoi(p[1]), c_atoi(p[2]), c_atoi(p[3]), p[4], c_atof(p[5]), c_atoi(p[6]), p[7],
                    c_atoi(p[8]), p[9], p[10], c_atoi(p[11]))


def decode_process_info(payload: bytes) -> ProcessInfo:
    parts = split_cstrings(payload)
    if not parts or parts[0] != "ProcessInfo":
        raise ProtocolError("command failed. invalid response")
    return _fill(ProcessInfo, parts[1:])


def decode_health_check_stats(payload: bytes) -> HealthCheckStats:
    parts = split_cstrings(payload)
    if not parts or parts[0] != CC:
        raise ProtocolError("command failed. invalid response")
    return _fill(HealthCheckStats, parts[1:])


def decode_process_count(payload: bytes) -> list[int]:
    rest = _expect_cc(split_cstrings(payload))
    count = c_atoi(rest[0]) if rest else 0
    if len(rest) < count + 1:
        raise ProtocolError("command failed. invalid response")
    return [c_atoi(p) for p in rest[1:count + 1]]


def decode_config_item(payload: bytes) -> ConfigItem:
    parts = split_cstrings(payload)
    if not parts or parts[0] != "ProcessConfig" or len(parts) < 4:
        raise ProtocolError("command failed. invalid response")
    return ConfigItem(parts[1], parts[2], parts[3])


def _json_int(obj: dict, key: str, default: int | None = None) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        if default is None:
            raise ProtocolError("command failed. invalid response\n")
        return default
    return value


def _json_str(obj: dict, key: str, default: str | None = None) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        if default is None:
            raise ProtocolError("command failed. invalid response\n")
        return default
    return value


def decode_watchdog_info(payload: bytes) -> WatchdogInfo:
    """The 'w' reply; same required keys and integer checks as libpcp."""
    head, _, rest = payload.partition(b"\0")
    if head != CC.encode():
        raise ProtocolError(f'command failed with reason: "{head.decode(errors="replace")}"\n')
    try:
        doc = json.loads(rest.split(b"\0")[0].decode(errors="replace"))
    except ValueError as exc:
        raise ProtocolError("command failed. invalid response\n") from exc
    nodes = doc.get("WatchdogNodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, list) or _json_int(doc, "NodeCount") != len(nodes):
        raise ProtocolError("command failed. invalid response\n")
    if not all(isinstance(n, dict) for n in nodes):
        raise ProtocolError("command failed. invalid response\n")
    return WatchdogInfo(
        _json_int(doc, "RemoteNodeCount"), _json_int(doc, "MemberRemoteNodeCount", -1),
        _json_int(doc, "NodesRequireForQuorum", -1), _json_int(doc, "QuorumStatus"),
        _json_int(doc, "AliveNodeCount"), _json_int(doc, "Escalated") != 0,
        _json_str(doc, "LeaderNodeName"), _json_str(doc, "LeaderHostName"),
        [WatchdogNode(_json_int(n, "ID"), _json_str(n, "NodeName"), _json_str(n, "HostName"),
                      _json_str(n, "DelegateIP"), _json_int(n, "WdPort"), _json_int(n, "PgpoolPort"),
                      _json_int(n, "State"), _json_str(n, "StateName"), _json_int(n, "Priority"),
                      _json_int(n, "Membership", 0), _json_str(n, "MembershipString", "NOT-Available"))
         for n in nodes])
