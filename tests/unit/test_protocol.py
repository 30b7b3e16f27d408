"""Protocol codecs: framing, startup packets, error fields, header scanning."""

import struct

import pytest

from pgpool.protocol import messages as m


def test_message_framing():
    assert m.message(b"Q", b"x\0") == b"Q\0\0\0\x06x\0"
    assert m.ready_for_query(b"T") == b"Z\0\0\0\x05T"
    assert m.auth_ok() == m.auth_request(0)
    assert m.terminate() == b"X\0\0\0\x04"


def test_error_response_round_trip():
    payload = m.error_response("FATAL", "08P01", "bad", "detail text", "a hint")[5:]
    f = m.parse_error_fields(payload)
    assert f == {"S": "FATAL", "V": "FATAL", "C": "08P01", "M": "bad", "D": "detail text",
                 "H": "a hint"}


def test_row_description_is_text_with_oid_zero():
    rd = m.row_description(["a", "bc"])
    assert rd[0:1] == b"T"
    assert struct.unpack_from("!h", rd, 5)[0] == 2
    # name, table oid, attnum, type oid 0, size -1, typmod 0, format 0
    assert rd[7:9] == b"a\0"
    assert struct.unpack_from("!ihihih", rd, 9) == (0, 0, 0, -1, 0, 0)


@pytest.mark.parametrize("values, expected", [
    (["1", None], b"\0\x02\0\0\0\x011\xff\xff\xff\xff"),
    ([], b"\0\0"),
])
def test_data_row(values, expected):
    assert m.data_row(values)[5:] == expected


def test_results_to_messages_tag():
    out = m.results_to_messages(["x"], [["1"], ["2"]])
    msgs, end = m.scan_messages(out)
    assert [chr(k) for k, _, _ in msgs] == ["T", "D", "D", "C"]
    assert end == len(out)
    assert out.endswith(m.command_complete("SELECT 2"))


def test_scan_messages_stops_at_partial():
    data = m.query("select 1") + m.sync() + b"Q\0\0\0\x20abc"
    msgs, end = m.scan_messages(data)
    assert [chr(k) for k, _, _ in msgs] == ["Q", "S"]
    assert end == len(m.query("select 1") + m.sync())


@pytest.mark.parametrize("params", [
    {"user": "alice", "database": "db", "application_name": "psql"},
    {"user": "u"},
    {"user": "b\u00e4r", "options": "-c search_path=x", "application_name": ""},
    {},
])
def test_startup_round_trip(params):
    pkt = m.startup_message(params)
    assert struct.unpack_from("!i", pkt)[0] == len(pkt)
    assert struct.unpack_from("!i", pkt, 4)[0] == m.PROTOCOL_V3
    assert m.parse_startup_params(pkt[8:]) == params


@pytest.mark.parametrize("body, message", [
    (b"user\0alice", "expected terminator"),
    (b"user\0\0", "missing value"),
    (b"\0x\0\0", "empty parameter name"),
    (b"user\0\xff\xfe\0\0", "invalid byte sequence"),
    (b"\xff\0", "invalid byte sequence"),          # even where no parameter could be read
])
def test_startup_params_errors(body, message):
    with pytest.raises(m.StartupError, match=message):
        m.parse_startup_params(body)


def test_cancel_request_layout():
    assert m.cancel_request(7, 9) == struct.pack("!iiii", 16, 80877102, 7, 9)
