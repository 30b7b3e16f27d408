"""PostgreSQL protocol 3.0 message codecs: pure functions from values to bytes and back.

Only what pgpool itself builds or inspects lives here; relayed traffic is never decoded into
objects (see DESIGN.md, "The data path must be fast").
"""

import struct

PROTOCOL_V3 = 196608          # 3.0
PROTOCOL_V2 = 131072          # 2.0
CANCEL_REQUEST_CODE = 80877102
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104

# PostgreSQL's own limits: a startup packet may not exceed 10000 bytes; other messages
# are limited to about 1 GB (PQ_LARGE_MESSAGE_LIMIT).
MAX_STARTUP_PACKET_LENGTH = 10000
MAX_MESSAGE_LENGTH = 0x3FFFFFFF

_I32 = struct.Struct("!i")
_HDR = struct.Struct("!ci")
_I32I32 = struct.Struct("!ii")
_I16 = struct.Struct("!h")


def message(kind: bytes, payload: bytes = b"") -> bytes:
    """Frame one message: kind byte + int32 length (including itself) + payload."""
    return _HDR.pack(kind, len(payload) + 4) + payload


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


# ---- backend -> frontend -------------------------------------------------------------

def auth_ok() -> bytes:
    return b"R\0\0\0\x08\0\0\0\0"


def auth_request(code: int, data: bytes = b"") -> bytes:
    return message(b"R", _I32.pack(code) + data)


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def backend_key_data(pid: int, key: int) -> bytes:
    return message(b"K", _I32I32.pack(pid, key))


def ready_for_query(status: bytes = b"I") -> bytes:
    return b"Z\0\0\0\x05" + status


def command_complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


def empty_query_response() -> bytes:
    return b"I\0\0\0\x04"


def parse_complete() -> bytes:
    return b"1\0\0\0\x04"


def bind_complete() -> bytes:
    return b"2\0\0\0\x04"


def close_complete() -> bytes:
    return b"3\0\0\0\x04"


def no_data() -> bytes:
    return b"n\0\0\0\x04"


def row_description(columns, type_oid: int = 0) -> bytes:
    """RowDescription for text columns, as pgpool-II sends for its own SHOW commands
    (type OID 0, size -1, typmod 0, text format)."""
    parts = [_I16.pack(len(columns))]
    for name in columns:
        parts.append(cstr(name))
        parts.append(struct.pack("!ihihih", 0, 0, type_oid, -1, 0, 0))
    return message(b"T", b"".join(parts))


def data_row(values) -> bytes:
    parts = [_I16.pack(len(values))]
    for v in values:
        if v is None:
            parts.append(_I32.pack(-1))
        else:
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(_I32.pack(len(b)))
            parts.append(b)
    return message(b"D", b"".join(parts))


def error_fields(severity: str, sqlstate: str, msg: str, detail: str | None = None,
                 hint: str | None = None) -> bytes:
    out = [b"S", cstr(severity), b"V", cstr(severity), b"C", cstr(sqlstate), b"M", cstr(msg)]
    if detail:
        out += [b"D", cstr(detail)]
    if hint:
        out += [b"H", cstr(hint)]
    out.append(b"\0")
    return b"".join(out)


def error_response(severity: str, sqlstate: str, msg: str, detail: str | None = None,
                   hint: str | None = None) -> bytes:
    return message(b"E", error_fields(severity, sqlstate, msg, detail, hint))


def notice_response(severity: str, sqlstate: str, msg: str, detail: str | None = None,
                    hint: str | None = None) -> bytes:
    return message(b"N", error_fields(severity, sqlstate, msg, detail, hint))


def parse_error_fields(payload: bytes) -> dict[str, str]:
    """Fields of an ErrorResponse / NoticeResponse payload, keyed by their type letter."""
    fields: dict[str, str] = {}
    pos, n = 0, len(payload)
    while pos < n and payload[pos] != 0:
        end = payload.index(b"\0", pos + 1)
        fields[chr(payload[pos])] = payload[pos + 1:end].decode("utf-8", "replace")
        pos = end + 1
    return fields


def results_to_messages(columns, rows, tag: str | None = None) -> bytes:
    """RowDescription + DataRows + CommandComplete for a locally generated result."""
    out = [row_description(columns)]
    out.extend(data_row(r) for r in rows)
    out.append(command_complete(tag if tag is not None else f"SELECT {len(rows)}"))
    return b"".join(out)


# ---- frontend -> backend -------------------------------------------------------------

def startup_message(params: dict[str, str], version: int = PROTOCOL_V3) -> bytes:
    body = _I32.pack(version) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\0"
    return _I32.pack(len(body) + 4) + body


def cancel_request(pid: int, key: int) -> bytes:
    return struct.pack("!iiii", 16, CANCEL_REQUEST_CODE, pid, key)


def query(sql: str) -> bytes:
    return message(b"Q", cstr(sql))


def terminate() -> bytes:
    return b"X\0\0\0\x04"


def sync() -> bytes:
    return b"S\0\0\0\x04"


def password_message(data: bytes) -> bytes:
    return message(b"p", data)


class StartupError(Exception):
    """A malformed startup packet; carries the SQLSTATE to answer with."""

    def __init__(self, message: str, sqlstate: str = "08P01"):
        super().__init__(message)
        self.sqlstate = sqlstate


def parse_startup_params(body: bytes) -> dict[str, str]:
    """Parameters of a v3 StartupMessage body (after the version int32)."""
    if not body.endswith(b"\0"):
        raise StartupError("invalid startup packet layout: expected terminator as last byte")
    try:
        text = body[:-1].decode()       # NUL never occurs inside a UTF-8 sequence
    except UnicodeDecodeError as e:
        raise StartupError("invalid byte sequence in startup packet") from e
    # names and values, then the empty string before the terminator
    items = text.split("\0")[:-1] if text else []
    if len(items) % 2:
        raise StartupError("invalid startup packet layout: missing value for a parameter")
    params = dict(zip(items[::2], items[1::2]))
    if "" in params:
        raise StartupError("invalid startup packet layout: empty parameter name")
    return params


def scan_messages(buf, start: int = 0):
    """Split complete messages at the start of buf.

    Returns (list of (kind byte value, start offset, total length)), offset of the first
    incomplete byte). Lengths are validated by the caller.
    """
    out = []
    pos, n = start, len(buf)
    unpack = _I32.unpack_from
    while n - pos >= 5:
        length = unpack(buf, pos + 1)[0]
        end = pos + 1 + length
        if length < 4 or end > n:
            break
        out.append((buf[pos], pos, length + 1))
        pos = end
    return out, pos
