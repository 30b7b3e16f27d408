"""Health-check statistics (counting and the 20 reported columns) and the health check's pure decisions."""

import time

import pytest

from pgpool.processes.health_check import (CHECK, PROBE_FAILBACK, SKIP, databases, down_requested,
                                           round_action)
from pgpool.state import health_stats as hs
from pgpool.state import shm as S

T0 = 1_800_000_000          # a fixed unix time for the timestamps


def ts(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def fresh():
    """A zeroed HealthStats, as the shared segment starts."""
    return S.HealthStats()


# Each step: ("ok" | "fail" | "skip", duration ms, retries) at T0 + index.
def play(steps):
    stats = fresh()
    for i, (outcome, duration, retries) in enumerate(steps):
        now = T0 + i
        hs.begin_round(stats, now)
        for _ in range(retries):
            hs.count_retry(stats)
        if outcome == "ok":
            hs.end_success(stats, now, duration, retries)
        elif outcome == "fail":
            hs.end_failure(stats, now, duration, retries)
        else:
            hs.end_skip(stats, now, retries)
    return stats


def counters(stats):
    return (stats.total_count, stats.success_count, stats.fail_count, stats.skip_count,
            stats.retry_count, stats.max_retry_count, stats.total_duration_ms,
            stats.max_duration_ms, stats.min_duration_ms)


@pytest.mark.parametrize("steps, expected", [
    # total, success, fail, skip, retry, max_retry, total_ms, max_ms, min_ms
    ([], (0, 0, 0, 0, 0, 0, 0, 0, 0)),
    ([("ok", 14, 0)], (1, 1, 0, 0, 0, 0, 14, 14, 14)),
    ([("ok", 14, 0), ("ok", 3, 0), ("ok", 7, 0)], (3, 3, 0, 0, 0, 0, 24, 14, 3)),
    # a first round of 0 ms is a real minimum, not "nothing measured"
    ([("ok", 0, 0), ("ok", 5, 0)], (2, 2, 0, 0, 0, 0, 5, 5, 0)),
    # retries that end in success: counted, and the round's retries are the max
    ([("ok", 4, 0), ("ok", 1005, 1)], (2, 2, 0, 0, 1, 1, 1009, 1005, 4)),
    # the pgpool-II manual's down standby: fails after 2 retries, then skipped
    ([("ok", 4, 0), ("fail", 2000, 2), ("skip", 0, 0), ("skip", 0, 0)],
     (4, 1, 1, 2, 2, 2, 2004, 2000, 4)),
    # skips record no duration: the minimum stays that of measured rounds
    ([("skip", 0, 0), ("ok", 9, 0)], (2, 1, 0, 1, 0, 0, 9, 9, 9)),
    # an auto_failback probe is a skip whose retries still count
    ([("skip", 0, 3)], (1, 0, 0, 1, 3, 3, 0, 0, 0)),
    # negative durations (clock oddities) count as 0
    ([("ok", -5, 0)], (1, 1, 0, 0, 0, 0, 0, 0, 0)),
])
def test_counting(steps, expected):
    assert counters(play(steps)) == expected


def test_timestamps_of_each_outcome():
    stats = play([("ok", 1, 0), ("fail", 1, 0), ("skip", 0, 0)])
    assert (stats.last_health_check, stats.last_successful_health_check,
            stats.last_failed_health_check, stats.last_skip_health_check) == (T0 + 2, T0, T0 + 1, T0 + 2)


def test_round_in_progress_counts_in_total_only():
    stats = play([("ok", 10, 0)])
    hs.begin_round(stats, T0 + 5)
    assert (stats.total_count, stats.success_count, stats.last_health_check) == (2, 1, T0 + 5)


def render(steps, period=1, status="up", role="standby", changed=T0):
    return hs.row(1, "127.0.0.1", 5433, status, role, changed, play(steps), period)


@pytest.mark.parametrize("steps, period, expected_tail", [
    # never checked (period 0 or the process did not run yet): zeros and empty times
    ([], 0, ["0", "0", "0", "0", "0", "0.000000", "0", "0", "0", "0.000000", "", "", "", ""]),
    ([], 1, ["0", "0", "0", "0", "0", "0.000000", "0", "0", "0", "0.000000", "", "", "", ""]),
    # as pgpool-II 4.3.5 printed it for a healthy node
    ([("ok", 14, 0), ("ok", 3, 0), ("ok", 3, 0), ("ok", 7, 0)], 1,
     ["4", "4", "0", "0", "0", "0.000000", "0", "14", "3", "6.750000",
      ts(T0 + 3), ts(T0 + 3), "", ""]),
    # and for a standby killed under it (max_retries 2, retry delay 1 s)
    ([("ok", 4, 0), ("ok", 4, 0), ("ok", 4, 0), ("ok", 39, 0), ("fail", 2000, 2),
      ("skip", 0, 0), ("skip", 0, 0), ("skip", 0, 0), ("skip", 0, 0), ("skip", 0, 0)], 1,
     ["10", "4", "1", "5", "2", "0.400000", "2", "2000", "4", "410.200000",
      ts(T0 + 9), ts(T0 + 3), ts(T0 + 9), ts(T0 + 4)]),
    # only skips (down since start): no measured round, averages and minimum read 0
    ([("skip", 0, 0), ("skip", 0, 0)], 1,
     ["2", "0", "0", "2", "0", "0.000000", "0", "0", "0", "0.000000",
      ts(T0 + 1), "", ts(T0 + 1), ""]),
    # health_check_period set back to 0: counters stay, averages read 0 as in pgpool-II
    ([("ok", 10, 1)], 0,
     ["1", "1", "0", "0", "1", "0.000000", "1", "10", "10", "0.000000", ts(T0), ts(T0), "", ""]),
    # averages are over rounds that were not skipped
    ([("ok", 1, 1), ("ok", 2, 0), ("skip", 0, 0)], 1,
     ["3", "2", "0", "1", "1", "0.500000", "1", "2", "1", "1.500000",
      ts(T0 + 2), ts(T0 + 1), ts(T0 + 2), ""]),
])
def test_row(steps, period, expected_tail):
    row = render(steps, period)
    assert row[:6] == ["1", "127.0.0.1", "5433", "up", "standby", ts(T0)]
    assert row[6:] == expected_tail
    assert len(row) == len(hs.COLUMNS) == 20


def test_row_status_and_unknown_change_time():
    row = render([], status="quarantine", role="primary", changed=0)
    assert row[3:6] == ["quarantine", "primary", ""]


def test_columns_are_pgpool_names():
    assert hs.COLUMNS[:6] == ("node_id", "hostname", "port", "status", "role", "last_status_change")
    assert hs.COLUMNS[-4:] == ("last_health_check", "last_successful_health_check",
                               "last_skip_health_check", "last_failed_health_check")


# ---- what a round does ---------------------------------------------------------------------

BASE = dict(streaming=True, auto_failback=False, replication_state="", switching=False,
            now=1000.0, failback_after=0.0)


def action(status, quarantine=False, **changes):
    return round_action(status, quarantine, **{**BASE, **changes})


@pytest.mark.parametrize("status, quarantine, changes, expected", [
    (S.CON_UP, False, {}, CHECK),
    (S.CON_CONNECT_WAIT, False, {}, CHECK),
    (S.CON_DOWN, False, {}, SKIP),
    (S.CON_UNUSED, False, {}, SKIP),
    # a quarantined node is checked (success lifts the quarantine)
    (S.CON_DOWN, True, {}, CHECK),
    # auto_failback: a down standby that streams is probed ...
    (S.CON_DOWN, False, dict(auto_failback=True, replication_state="streaming"), PROBE_FAILBACK),
    (S.CON_UNUSED, False, dict(auto_failback=True, replication_state="streaming"), PROBE_FAILBACK),
    # ... only when it streams, in streaming mode, not while switching, after the interval
    (S.CON_DOWN, False, dict(auto_failback=True, replication_state="catchup"), SKIP),
    (S.CON_DOWN, False, dict(auto_failback=True, replication_state=""), SKIP),
    (S.CON_DOWN, False, dict(auto_failback=True, replication_state="streaming", streaming=False), SKIP),
    (S.CON_DOWN, False, dict(auto_failback=True, replication_state="streaming", switching=True), SKIP),
    (S.CON_DOWN, False, dict(auto_failback=True, replication_state="streaming",
                             failback_after=1000.0), SKIP),
    (S.CON_DOWN, False, dict(auto_failback=True, replication_state="streaming",
                             failback_after=999.0), PROBE_FAILBACK),
    (S.CON_DOWN, False, dict(auto_failback=False, replication_state="streaming"), SKIP),
    # an up node is checked whatever auto_failback says
    (S.CON_UP, False, dict(auto_failback=True, replication_state="streaming"), CHECK),
])
def test_round_action(status, quarantine, changes, expected):
    assert action(status, quarantine, **changes) == expected


@pytest.mark.parametrize("configured, expected", [
    ("", ("postgres", "template1")),
    ("postgres", ("postgres",)),
    ("mydb", ("mydb",)),
])
def test_databases(configured, expected):
    assert databases(configured) == expected


@pytest.mark.parametrize("text, node, expected", [
    ("1\tdown\n", 1, True),
    ("1\tdown", 1, True),
    ("0\tdown\n1\tup\n", 1, False),
    ("0\tdown\n1\tup\n", 0, True),
    ("1\talready_down\n", 1, False),
    ("11\tdown\n", 1, False),
    ("1 down\n", 1, False),           # the separator is a tab
    ("", 1, False),
    ("garbage\n\n1\tdown\textra\n", 1, True),
])
def test_down_requested(text, node, expected):
    assert down_requested(text, node) is expected
