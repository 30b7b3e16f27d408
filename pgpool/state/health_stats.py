"""Health-check statistics: how a check is counted into shm.health[n], and how a node's counters read.

Pure code. The counting functions take anything with the fields of `shm.HealthStats` (the ctypes
structure in shared memory, or a plain object in tests); `row()` gives the 20 strings of one node
as `SHOW pool_health_check_stats` and the PCP health-stats reply ('h') carry them.

Counting follows pgpool-II 4.3 (health_check.c): every round adds to total_count and stamps
last_health_check; a round on a node that is down (or an auto_failback probe of one) is a skip;
retries are counted as they happen; a round's duration (all attempts and retry delays, in ms) is
measured for every round that is not skipped. Deliberate differences from 4.3.5:
- fail_count also counts failures on a DISALLOW_TO_FAILOVER node (4.3.5 stamps the time but does
  not count them; the manual says "number of failed health checks");
- max_retry_count is the number of retries a round made (4.3.5 records one less when a retry
  finally succeeds);
- when no round was measured yet, average_retry_count and average_duration print 0.000000 and
  min_duration 0 (4.3.5 prints "-nan" and 2147483647 there).
"""

import time

COLUMNS = ("node_id", "hostname", "port", "status", "role", "last_status_change",
           "total_count", "success_count", "fail_count", "skip_count", "retry_count",
           "average_retry_count", "max_retry_count", "max_duration", "min_duration",
           "average_duration", "last_health_check", "last_successful_health_check",
           "last_skip_health_check", "last_failed_health_check")


def timestamp(t: int) -> str:
    """pgpool's "%F %T" in local time; the empty string for "never" (0)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t > 0 else ""


# ---- counting ---------------------------------------------------------------------------------

def begin_round(stats, now: int) -> None:
    """A health-check round starts (the node's period came round)."""
    stats.total_count += 1
    stats.last_health_check = now


def count_retry(stats) -> None:
    """One more attempt after a failed one."""
    stats.retry_count += 1


def _measured(stats) -> int:
    """Rounds whose outcome (success or failure) was recorded with a duration."""
    return stats.success_count + stats.fail_count


def _record_duration(stats, duration_ms: int) -> None:
    duration_ms = max(0, int(duration_ms))
    first = _measured(stats) == 0
    stats.total_duration_ms += duration_ms
    stats.max_duration_ms = max(stats.max_duration_ms, duration_ms)
    stats.min_duration_ms = duration_ms if first else min(stats.min_duration_ms, duration_ms)


def _record_retries(stats, retries: int) -> None:
    stats.max_retry_count = max(stats.max_retry_count, retries)


def end_success(stats, now: int, duration_ms: int, retries: int) -> None:
    _record_duration(stats, duration_ms)
    _record_retries(stats, retries)
    stats.success_count += 1
    stats.last_successful_health_check = now


def end_failure(stats, now: int, duration_ms: int, retries: int) -> None:
    _record_duration(stats, duration_ms)
    _record_retries(stats, retries)
    stats.fail_count += 1
    stats.last_failed_health_check = now


def end_skip(stats, now: int, retries: int = 0) -> None:
    """The node is down: nothing was checked (or only probed for auto_failback, whose retries
    still count), no duration is recorded."""
    _record_retries(stats, retries)
    stats.skip_count += 1
    stats.last_skip_health_check = now


# ---- reading ----------------------------------------------------------------------------------

def _average(total: int, stats, period: int) -> str:
    rounds = stats.total_count - stats.skip_count
    return f"{total / rounds:f}" if period > 0 and rounds > 0 else f"{0.0:f}"


def row(node_id: int, hostname: str, port: int, status: str, role: str,
        status_changed_time: int, stats, period: int) -> list[str]:
    """The 20 columns for one node. `status` / `role` are the texts SHOW pool_nodes uses;
    `period` is the node's health_check_period (averages read 0 while it is 0)."""
    min_duration = stats.min_duration_ms if _measured(stats) else 0
    return [str(node_id), hostname, str(port), status, role, timestamp(status_changed_time),
            str(stats.total_count), str(stats.success_count), str(stats.fail_count),
            str(stats.skip_count), str(stats.retry_count),
            _average(stats.retry_count, stats, period), str(stats.max_retry_count),
            str(stats.max_duration_ms), str(min_duration),
            _average(stats.total_duration_ms, stats, period),
            timestamp(stats.last_health_check), timestamp(stats.last_successful_health_check),
            timestamp(stats.last_skip_health_check), timestamp(stats.last_failed_health_check)]
