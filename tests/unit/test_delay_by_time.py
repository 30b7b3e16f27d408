"""delay_threshold_by_time (pgpool-II 4.4): the setting, replay_lag rows -> standby delays, the
log_standby_delay lines, SHOW pool_nodes' replication_delay text and the routing decisions that
compare the delay with the time threshold instead of delay_threshold."""

import random
from types import SimpleNamespace

import pytest

from pgpool.config import parse_config_text
from pgpool.config.errors import ConfigError
from pgpool.config.settings import RELOAD, SETTINGS
from pgpool.config.show import pgpool_show, replication_delay_text, seconds_text
from pgpool.processes.sr_check import STAT_REPLICATION_QUERY, log_delay_lines, replay_lags
from pgpool.router import ClusterView, NodeView, SessionRouteState, choose_load_balance_node, route
from pgpool.sql.classify import classify
from tests.unit.test_router import make_cfg

SECOND = 1_000_000      # microseconds


# ---- the setting ----------------------------------------------------------------------------

@pytest.mark.parametrize("line, value", [
    ("", 0),
    ("delay_threshold_by_time = 10", 10),
    ("delay_threshold_by_time = '2s'", 2),
    ("delay_threshold_by_time = 1min", 60),
    ("delay_threshold_by_time = 1h", 3600),
    # sub-second values are rounded to whole seconds as pgpool-II's parse_int does (rint: half
    # to even), so anything under half a second turns the check off
    ("delay_threshold_by_time = 600ms", 1),
    ("delay_threshold_by_time = 1499ms", 1),
    ("delay_threshold_by_time = 1500ms", 2),
    ("delay_threshold_by_time = 2500ms", 2),
    ("delay_threshold_by_time = 500ms", 0),
    ("delay_threshold_by_time = 250ms", 0),
])
def test_setting_is_seconds(line, value):
    assert parse_config_text(line, "t.conf").delay_threshold_by_time == value


@pytest.mark.parametrize("line", ["delay_threshold_by_time = -1", "delay_threshold_by_time = soon",
                                  "delay_threshold_by_time = '3 parsecs'"])
def test_setting_rejects(line):
    with pytest.raises(ConfigError, match="delay_threshold_by_time"):
        parse_config_text(line, "t.conf")


def test_setting_is_reloadable_and_shown():
    s = SETTINGS["delay_threshold_by_time"]
    assert (s.type, s.default, s.context, s.unit) == ("int", 0, RELOAD, "s")
    assert s.description.startswith("standby delay threshold by time.")
    assert "seconds" in s.description and "milli" not in s.description
    for value, shown in (("90", "90s"), ("120", "2min"), ("0", "0")):
        cfg = parse_config_text(f"delay_threshold_by_time = {value}", "t.conf")
        assert pgpool_show(cfg, "delay_threshold_by_time")[1] == [[shown]]


# ---- sr_check: replay_lag rows -> delays ----------------------------------------------------

def backends(*names):
    return [SimpleNamespace(node_id=i, application_name=name) for i, name in enumerate(names)]


def test_query_reads_replay_lag_in_microseconds():
    assert "replay_lag" in STAT_REPLICATION_QUERY and "1000000" in STAT_REPLICATION_QUERY


@pytest.mark.parametrize("rows, names, primary, expected", [
    ([("node1", "streaming", "async", "2500000")], ("node0", "node1"), 0, {1: 2_500_000}),
    # NULL replay_lag: caught up and idle
    ([("node1", "streaming", "async", None)], ("node0", "node1"), 0, {1: 0}),
    # no row for the standby (backend_application_name does not match): nothing measured
    ([("other", "streaming", "async", "9")], ("node0", "node1"), 0, {}),
    ([], ("node0", "node1"), 0, {}),
    # the primary is never given a delay, even if a row carries its name
    ([("node0", "streaming", "async", "7")], ("node0", "node1"), 0, {}),
    # an empty backend_application_name matches nothing
    ([("", "streaming", "async", "7")], ("node0", ""), 0, {}),
    # several standbys; the last row of a name wins; primary not node 0
    ([("node2", "streaming", "async", "10"), ("node0", "streaming", "async", "5"),
      ("node2", "streaming", "async", "20")], ("node0", "node1", "node2"), 1, {0: 5, 2: 20}),
    # a negative value (clock skew) counts as no lag
    ([("node1", "streaming", "async", "-3")], ("node0", "node1"), 0, {1: 0}),
])
def test_replay_lags(rows, names, primary, expected):
    assert replay_lags(rows, backends(*names), primary) == expected


@pytest.mark.parametrize("micro, text", [
    (0, "0.000000"), (1, "0.000001"), (999_999, "0.999999"), (2_500_000, "2.500000"),
    (123_456_789_012, "123456.789012"),
])
def test_seconds_text(micro, text):
    assert seconds_text(micro) == text


L1 = "Replication of node: 1 is behind 2.500000 second(s) from the primary server (node: 0)"
L2 = "Replication of node: 2 is behind 0.000300 second(s) from the primary server (node: 0)"


@pytest.mark.parametrize("node_delays, mode, by_time, expected", [
    ({1: 2_500_000, 2: 300}, "always", 1, [L1, L2]),
    ({1: 0}, "always", 1, []),
    # over 1 s only
    ({1: 2_500_000, 2: 300}, "if_over_threshold", 1, [L1]),
    ({1: 2_500_000}, "if_over_threshold", 2, [L1]),
    ({1: 2_500_000}, "if_over_threshold", 3, []),
    # exactly at the threshold is not over it
    ({1: 2_000_000}, "if_over_threshold", 2, []),
    ({1: 2_500_000}, "none", 1, []),
])
def test_log_lines_by_time(node_delays, mode, by_time, expected):
    # delay_threshold (bytes) is ignored while delay_threshold_by_time is set
    assert log_delay_lines(node_delays, 0, mode, 1, by_time) == expected


def test_log_lines_in_bytes_keep_43_wording():
    assert log_delay_lines({1: 500}, 0, "always", 0, 0) == [
        "Replication of node:1 is behind 500 bytes from the primary server (node:0)"]


# ---- SHOW pool_nodes ------------------------------------------------------------------------

@pytest.mark.parametrize("delay, by_time, text", [
    (0, False, "0"),
    (123456, False, "123456"),
    (0, True, "0.000000 second"),
    (250_000, True, "0.250000 second"),
    (1_999_999, True, "1.999999 second"),
    (2_000_000, True, "2.000000 seconds"),
    (61_500_000, True, "61.500000 seconds"),
])
def test_replication_delay_text(delay, by_time, text):
    assert replication_delay_text(delay, by_time) == text


# ---- routing ----------------------------------------------------------------------------------

def view_with(delays, weights=(1, 1, 1)):
    nodes = [NodeView(i, "up", "primary" if i == 0 else "standby", weights[i], delays[i])
             for i in range(len(delays))]
    return ClusterView.of(nodes, 0)


def session(lb=1):
    s = SessionRouteState("db", "app", random.Random(1))
    s.load_balance_node = lb
    return s


# delays in microseconds when by time; (settings, node delays, expected nodes, rule)
ROUTES = [
    # 3 s of replay lag over a 1 s threshold: the primary
    ({"delay_threshold_by_time": 1}, (0, 3 * SECOND, 0), (0,), "delay"),
    # under the threshold: stays on the standby
    ({"delay_threshold_by_time": 5}, (0, 3 * SECOND, 0), (1,), "load_balance"),
    # the time threshold replaces delay_threshold (which alone would send to the primary)
    ({"delay_threshold_by_time": 5, "delay_threshold": 100}, (0, 3 * SECOND, 0), (1,),
     "load_balance"),
    # delay_threshold alone still counts (bytes)
    ({"delay_threshold": 100}, (0, 3 * SECOND, 0), (0,), "delay"),
    # exactly at the threshold is not over it
    ({"delay_threshold_by_time": 3}, (0, 3 * SECOND, 0), (1,), "load_balance"),
    ({"delay_threshold_by_time": 3}, (0, 3 * SECOND + 1, 0), (0,), "delay"),
    ({"delay_threshold_by_time": 2}, (0, 3 * SECOND, 0), (0,), "delay"),
    # the threshold is seconds, not milliseconds: 1000 tolerates lags up to 1000 s
    ({"delay_threshold_by_time": 1000}, (0, 3 * SECOND, 0), (1,), "load_balance"),
    ({"delay_threshold_by_time": 1000}, (0, 1000 * SECOND + 1, 0), (0,), "delay"),
    # prefer_lower_delay_standby: the least delayed standby within the time threshold
    ({"delay_threshold_by_time": 1, "prefer_lower_delay_standby": True},
     (0, 3 * SECOND, SECOND // 2), (2,), "lower_delay_standby"),
    # ... none within it: the primary
    ({"delay_threshold_by_time": 1, "prefer_lower_delay_standby": True},
     (0, 3 * SECOND, 2 * SECOND), (0,), "delay"),
    # off (0): no delay check at all
    ({"delay_threshold_by_time": 0}, (0, 3600 * SECOND, 0), (1,), "load_balance"),
]


@pytest.mark.parametrize("settings, delays, nodes, rule", ROUTES)
def test_route_by_time(settings, delays, nodes, rule):
    d = route(classify("SELECT 1"), session(), view_with(delays), make_cfg(**settings),
              sql="SELECT 1")
    assert (d.nodes, d.reason) == (nodes, rule)


@pytest.mark.parametrize("settings, delays, weights, expected", [
    # node 1 or 2 picked by weight; node 1 is too delayed by time -> the least delayed standby
    ({"delay_threshold_by_time": 1, "prefer_lower_delay_standby": True},
     (0, 3 * SECOND, 10), (0, 1, 1), 2),
    # node 1 (the only weighted choice) is within the time threshold: kept, even though
    # delay_threshold (bytes) alone would refuse it
    ({"delay_threshold_by_time": 5, "delay_threshold": 1, "prefer_lower_delay_standby": True},
     (0, 3 * SECOND, 10), (0, 1, 0), 1),
    ({"delay_threshold": 1, "prefer_lower_delay_standby": True},
     (0, 3 * SECOND, 10), (0, 1, 0), 0),
])
def test_choose_load_balance_node_by_time(settings, delays, weights, expected):
    view = view_with(delays, weights)
    assert choose_load_balance_node(view, make_cfg(**settings), "db", "app",
                                    random.Random(1)) == expected
