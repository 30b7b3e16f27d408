"""PCP codecs: framing, auth hash, error packets, request encoders, reply encoder/decoder round trips."""

import json
import struct

import pytest

from pcp import protocol as p

NODE = p.NodeInfo("localhost", 5432, 2, 0, "up", 1073741823.5, 2, "primary", 0, "", "", 1700000000)
PROC = p.ProcessInfo("1234", "2024-01-01 10:00:00", "1", "0", "0", "db", "alice", "2024-01-01 10:00:01",
                     "2024-01-01 10:00:02", "", "0", "3", "0", "1", "4321", "1", "Idle")
STATS = p.HealthCheckStats("0", "localhost", "5432", "up", "primary", "2024-01-01 10:00:00", "10", "9", "1", "0",
                           "2", "0.200000", "1", "20", "5", "10.000000", "2024-01-01 10:00:09",
                           "2024-01-01 10:00:09", "", "2024-01-01 10:00:01")
WATCHDOG = p.WatchdogInfo(2, 2, 2, 1, 2, True, "host1:9999 Linux host1", "host1",
                          [p.WatchdogNode(0, "host1:9999 Linux host1", "host1", "10.0.0.9", 9000, 9999, 4, "LEADER",
                                          1, 1, "MEMBER")])


def test_framing():
    assert p.frame(b"L") == b"L\0\0\0\x04"
    assert p.split_frame(b"l\0\0\0\x06a\0rest") == (b"l", b"a\0", b"rest")
    assert p.split_frame(b"l\0\0\0\x09abc") is None
    assert p.split_frame(b"l\0\0") is None
    with pytest.raises(p.ProtocolError):
        p.split_frame(b"l\0\0\0\x02")


def test_auth_hash_matches_libpcp():
    # md5hex(md5hex(md5hex("postgres") + "postgres") + salt), computed independently with md5sum
    assert p.stored_password_hash("postgres") == "e8a48653851e28c69d0506508fb27fc5"
    assert p.auth_hash("postgres", "postgres", b"\x01\x02\x03\x04") == "857e6923207966cb2f03cb0e15a7924e"
    assert p.salted_hash("e8a48653851e28c69d0506508fb27fc5", "postgres", b"\x01\x02\x03\x04") == \
        "857e6923207966cb2f03cb0e15a7924e"


@pytest.mark.parametrize("message,expected", [
    (p.request_node_count(), b"L\0\0\0\x04"),
    (p.request_node_info(-1), b"I\0\0\0\x07-1\0"),
    (p.request_health_check_stats(0), b"H\0\0\0\x060\0"),
    (p.request_process_count(), b"N\0\0\0\x04"),
    (p.request_process_info(0), b"P\0\0\0\x060\0"),
    (p.request_pool_status(), b"B\0\0\0\x04"),
    (p.request_watchdog_info(-1), b"W\0\0\0\x07-1\0"),
    (p.request_detach_node(1), b"D\0\0\0\x061\0"),
    (p.request_detach_node(1, gracefully=True), b"d\0\0\0\x061\0"),
    (p.request_attach_node(1), b"C\0\0\0\x061\0"),
    (p.request_promote_node(1), b"J\0\0\0\x081 \0n"),
    (p.request_promote_node(12, gracefully=True, switchover=True), b"j\0\0\0\x0912 \0s"),
    (p.request_stop_pgpool("f"), b"T\0\0\0\x05f"),
    (p.request_stop_pgpool("i", "c"), b"t\0\0\0\x05i"),
    (p.request_recovery_node(2), b"O\0\0\0\x062\0"),
    (p.request_reload_config("c"), b"Z\0\0\0\x05c"),
    (p.request_set_parameter("client_min_messages", "debug1"), b"A\0\0\0\x1fclient_min_messages\0debug1\0"),
    (p.request_disconnect(), b"X\0\0\0\x04"),
    (p.request_salt(), b"M\0\0\0\x04"),
    (p.request_auth("u", "h"), b"R\0\0\0\x08u\0h\0"),
])
def test_request_encoding(message, expected):
    assert message == expected


@pytest.mark.parametrize("message,expected", [
    (p.request_node_info(3), 3), (p.request_process_info(77), 77), (p.request_promote_node(4, switchover=True), (4, "s")),
    (p.request_stop_pgpool("f", "c"), "f"), (p.request_reload_config("l"), "l"), (p.request_node_count(), None),
    (p.request_set_parameter("a", "b"), ["a", "b"]), (p.request_auth("u", "h"), ("u", "h")),
])
def test_request_decoding(message, expected):
    kind, payload, rest = p.split_frame(message)
    assert rest == b""
    assert p.decode_request(kind, payload) == expected


def test_error_packet_layout_and_decoding():
    packet = p.encode_error("ERROR", "informing node info failed", "invalid node ID : 9", line=843)
    assert packet == (b"E\0\0\0\x57SERROR\0CXX000\0Minforming node info failed\0Dinvalid node ID : 9\0"
                      b"Fpcp_worker.c\0L843\0\0")
    payload = p.split_frame(packet)[1]
    report = p.decode_error(payload)
    assert (report.severity, report.message, report.detail, report.sqlstate, report.line) == \
        ("ERROR", "informing node info failed", "invalid node ID : 9", "XX000", 843)
    assert p.libpcp_error_text(payload) == "ERROR:  informing node info failed\nDETAIL:  invalid node ID : 9\n"
    assert p.encode_error("NOTICE", "x")[:1] == b"N"
    hinted = p.decode_error(p.split_frame(p.encode_error("FATAL", "m", hint="h"))[1])
    assert (hinted.hint, hinted.detail) == ("h", None)


def test_libpcp_error_parser_quirk():
    # libpcp reads the first character of an S/M/D value as the next field type: a message starting
    # with "D" is taken as the detail (minus its first letter).  Byte-identical output keeps that.
    payload = p.split_frame(p.encode_error("ERROR", "Detach failed"))[1]
    assert p.libpcp_error_text(payload) == "ERROR:  Detach failed\nDETAIL:  etach failed\n"
    no_detail = p.split_frame(p.encode_error("FATAL", "authentication failed"))[1]
    assert p.libpcp_error_text(no_detail) == "FATAL:  authentication failed\n"


def test_array_replies_round_trip():
    kind, payload, rest = p.split_frame(p.encode_node_info([NODE, NODE]))
    assert (kind, p.decode_array_size(payload)) == (b"i", 2)
    kind, payload, rest = p.split_frame(rest)
    assert payload.startswith(b"NodeInfo\0localhost\x005432\x002\x000\0up\x001073741823.500000\x002\0primary\0")
    assert p.decode_node_info(payload) == NODE
    kind, payload, rest = p.split_frame(p.split_frame(rest)[2])
    assert (kind, p.record_tag(payload), rest) == (b"i", "CommandComplete", b"")

    kind, payload, rest = p.split_frame(p.encode_proc_info([PROC], array_size=4))
    assert p.decode_array_size(payload) == 4
    kind, payload, rest = p.split_frame(rest)
    assert len(p.split_cstrings(payload)) == 18
    assert p.decode_process_info(payload) == PROC

    items = [p.ConfigItem("listen_addresses", "*", "host name(s) or IP address(es) to listen on")]
    kind, payload, rest = p.split_frame(p.encode_pool_status(items))
    assert payload == b"ArraySize\0" + struct.pack("!i", 1)
    assert p.decode_array_size(payload, binary=True) == 1
    assert p.decode_config_item(p.split_frame(rest)[1]) == items[0]


@pytest.mark.parametrize("message,decode,expected", [
    (p.encode_node_count(3), p.decode_node_count, 3),
    (p.encode_proc_count([101, 102]), p.decode_process_count, [101, 102]),
    (p.encode_health_check_stats(STATS), p.decode_health_check_stats, STATS),
    (p.encode_watchdog_info(WATCHDOG), p.decode_watchdog_info, WATCHDOG),
    (p.encode_command_complete(b"d"), p.decode_command_complete, None),
    (p.encode_salt(b"abcd"), p.decode_salt, b"abcd"),
])
def test_single_replies_round_trip(message, decode, expected):
    assert decode(p.split_frame(message)[1]) == expected


def test_reply_wire_layouts():
    assert p.encode_node_count(2) == b"l\0\0\0\x16CommandComplete\x002\0"
    assert p.encode_proc_count([7]) == b"n\0\0\0\x18CommandComplete\x001\x007\0"
    assert p.encode_auth_ok() == b"r\0\0\0\x15AuthenticationOK\0"
    assert len(p.split_cstrings(p.split_frame(p.encode_health_check_stats(STATS))[1])) == 21
    doc = json.loads(p.split_cstrings(p.split_frame(p.encode_watchdog_info(WATCHDOG))[1])[1])
    assert doc["NodeCount"] == 1 and doc["WatchdogNodes"][0]["MembershipString"] == "MEMBER"


@pytest.mark.parametrize("payload", [
    b"CommandComplete\0{}\0",
    b"CommandComplete\0not json\0",
    b"CommandComplete\0" + json.dumps({"NodeCount": 2, "WatchdogNodes": []}).encode() + b"\0",
])
def test_watchdog_decoder_rejects_what_libpcp_rejects(payload):
    with pytest.raises(p.ProtocolError):
        p.decode_watchdog_info(payload)


def test_decoders_reject_wrong_records():
    with pytest.raises(p.ProtocolError):
        p.decode_node_info(b"ProcessInfo\0x\0")
    with pytest.raises(p.ProtocolError):
        p.decode_node_count(b"Oops\0")
    with pytest.raises(p.ProtocolError):
        p.decode_process_count(b"CommandComplete\x003\x001\0")


@pytest.mark.parametrize("text,value", [("12", 12), ("  -3x", -3), ("abc", 0), ("", 0), ("+7", 7)])
def test_c_atoi(text, value):
    assert p.c_atoi(text) == value
