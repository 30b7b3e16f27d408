"""Pure parts of the streaming-replication check: LSN text, pg_stat_replication mapping, delays, log lines."""

from types import SimpleNamespace

import pytest

from pgpool.processes.sr_check import delays, log_delay_lines, lsn_to_int, replication_rows_to_states


def backends(*names):
    return [SimpleNamespace(node_id=i, application_name=name) for i, name in enumerate(names)]


@pytest.mark.parametrize("text, value", [
    ("0/0", 0),
    ("0/3000060", 0x3000060),
    ("16/B374D848", (0x16 << 32) | 0xB374D848),
    ("1/0", 1 << 32),
    ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1),
    (" 0/1A\n", 0x1A),
    ("a/b", (0xA << 32) | 0xB),
])
def test_lsn_to_int(text, value):
    assert lsn_to_int(text) == value


@pytest.mark.parametrize("text", ["", "0", "/1", "1/", "0/xyz", "g/0", "1/2/3", "100000000/0", "0/-1"])
def test_lsn_to_int_rejects(text):
    with pytest.raises(ValueError):
        lsn_to_int(text)


def test_lsn_difference_across_4gb_boundary_is_exact():
    assert lsn_to_int("1/100") - lsn_to_int("0/FFFFFF00") == 0x200


ROWS_TWO = [("node1", "streaming", "async"), ("node2", "catchup", "potential")]


@pytest.mark.parametrize("rows, names, primary, expected", [
    # one standby matched by its backend_application_name
    ([("node1", "streaming", "async")], ("node0", "node1"), 0, {1: ("streaming", "async")}),
    # no row for the standby: nothing reported
    ([("other", "streaming", "async")], ("node0", "node1"), 0, {}),
    ([], ("node0", "node1"), 0, {}),
    # several standbys, rows in any order
    (ROWS_TWO[::-1], ("node0", "node1", "node2"), 0,
     {1: ("streaming", "async"), 2: ("catchup", "potential")}),
    # a standby whose application_name is not streaming
    (ROWS_TWO[:1], ("node0", "node1", "node2"), 0, {1: ("streaming", "async")}),
    # the primary is never filled, even if a row carries its name
    ([("node0", "streaming", "sync")], ("node0", "node1"), 0, {}),
    # primary other than node 0
    ([("node0", "streaming", "sync")], ("node0", "node1"), 1, {0: ("streaming", "sync")}),
    # an empty backend_application_name matches nothing, not even an unnamed walsender
    ([("", "streaming", "async")], ("node0", ""), 0, {}),
    # NULL columns (sr_check_user not allowed to see them) become empty
    ([("node1", None, None)], ("node0", "node1"), 0, {1: ("", "")}),
    # two rows with one name: the last wins
    ([("node1", "startup", "async"), ("node1", "streaming", "sync")], ("node0", "node1"), 0,
     {1: ("streaming", "sync")}),
    # names are compared exactly
    ([("Node1", "streaming", "async")], ("node0", "node1"), 0, {}),
    # values are cut to the 31 bytes shared memory holds
    ([("node1", "x" * 40, "y" * 31)], ("node0", "node1"), 0, {1: ("x" * 31, "y" * 31)}),
])
def test_replication_rows_to_states(rows, names, primary, expected):
    assert replication_rows_to_states(rows, backends(*names), primary) == expected


@pytest.mark.parametrize("primary_lsn, replay, expected", [
    (0x3000060, {1: 0x3000060}, {1: 0}),
    (0x3000060, {1: 0x3000000}, {1: 0x60}),
    (0x3000060, {1: 0x3000000, 2: 0x2000000}, {1: 0x60, 2: 0x1000060}),
    # a standby read after the primary may already be ahead: no lag, never negative
    (0x3000000, {1: 0x3000060}, {1: 0}),
    # NULL replay position counts from 0 (as pgpool-II)
    (0x3000060, {1: None}, {1: 0x3000060}),
    # no primary position: nothing to measure against
    (None, {1: 0x10}, {1: 0}),
    (0x10, {}, {}),
])
def test_delays(primary_lsn, replay, expected):
    assert delays(primary_lsn, replay) == expected


def line(node, lag, primary=0):
    return f"Replication of node:{node} is behind {lag} bytes from the primary server (node:{primary})"


@pytest.mark.parametrize("node_delays, primary, mode, threshold, expected", [
    ({1: 100}, 0, "none", 0, []),
    ({1: 100}, 0, "none", 10, []),
    ({1: 100, 2: 0}, 0, "always", 0, [line(1, 100)]),
    ({1: 0}, 0, "always", 0, []),
    ({2: 7, 1: 5}, 0, "always", 1000, [line(1, 5), line(2, 7)]),
    # if_over_threshold needs a threshold and a lag strictly above it
    ({1: 100}, 0, "if_over_threshold", 0, []),
    ({1: 100}, 0, "if_over_threshold", 100, []),
    ({1: 101, 2: 99}, 0, "if_over_threshold", 100, [line(1, 101)]),
    ({0: 4096}, 1, "always", 0, [line(0, 4096, primary=1)]),
])
def test_log_delay_lines(node_delays, primary, mode, threshold, expected):
    assert log_delay_lines(node_delays, primary, mode, threshold) == expected
