"""Online recovery's pure parts: request checks and their pgpool texts, the SQL calls, the schedules."""

import os

import pytest

from pgpool.ha import recovery as R
from pgpool.state import shm as S

SR, NATIVE, SNAPSHOT, RAW = "streaming_replication", "native_replication", "snapshot_isolation", "raw"


@pytest.mark.parametrize("node, backends, mode, primary, expected", [
    (1, 3, SR, 0, None),
    (0, 3, SR, 1, None),
    (0, 2, NATIVE, 0, None),                    # no primary in native replication
    (1, 2, SNAPSHOT, -1, None),
    (3, 3, SR, 0, ("process recovery request failed", "node id 3 is not valid")),
    (-1, 3, SR, 0, ("process recovery request failed", "node id -1 is not valid")),
    (0, 3, SR, 0, ("process recovery request failed", "primary server cannot be recovered by online recovery.")),
    (1, 2, RAW, 0, ("process recovery request failed",
                    "recovery request is only allowed in replication and streaming replication modes.")),
    (1, 2, "logical_replication", 0, ("process recovery request failed",
                                      "recovery request is only allowed in replication and streaming "
                                      "replication modes.")),
])
def test_request_checks(node, backends, mode, primary, expected):
    err = R.request_error(node, backends, mode, primary)
    assert (err and (err.message, err.detail)) == (expected or None)
    assert err is None or err.severity == "ERROR"


@pytest.mark.parametrize("status, expected", [
    (S.CON_DOWN, None),
    (S.CON_UP, "node recovery failed, node id: 2 is alive"),
    (S.CON_CONNECT_WAIT, "node recovery failed, node id: 2 is alive"),
    (S.CON_UNUSED, "node recovery failed, node id: 2 is unused"),
])
def test_target_checks(status, expected):
    err = R.target_error(2, status)
    assert (err and err.message) == expected
    assert err is None or err.detail is None


@pytest.mark.parametrize("switching, pending, expected", [
    (False, None, None),
    (False, S.REQ_NODE_DOWN, None),
    (True, None, None),
    (True, S.REQ_NODE_DOWN, "failover is in progress"),
    (True, S.REQ_NODE_UP, "failback is in progress"),
    (True, S.REQ_PROMOTE, "promote node operation is in progress"),
    (True, S.REQ_CLOSE_IDLE, "operation is in progress"),
])
def test_busy_checks(switching, pending, expected):
    err = R.busy_error(switching, pending)
    assert (err and err.detail) == expected
    assert err is None or err.message == "failed to process PCP request at the moment"


@pytest.mark.parametrize("host, expected", [
    ("", "localhost"), ("/var/run/postgresql", "localhost"), ("/tmp", "localhost"),
    ("127.0.0.1", "127.0.0.1"), ("db1.example.com", "db1.example.com"), ("::1", "::1"),
])
def test_script_host(host, expected):
    assert R.script_host(host) == expected


@pytest.mark.parametrize("value, expected", [
    ("plain", "'plain'"),
    ("", "''"),
    ("it's", "'it''s'"),
    ("/data/my dir", "'/data/my dir'"),
    ("back\\slash", "E'back\\\\slash'"),
    ("both'\\", "E'both''\\\\'"),
])
def test_sql_literal(value, expected):
    assert R.sql_literal(value) == expected


SOURCE = R.Node(0, "/var/run/postgresql", 5432, "/pg/0")
TARGET = R.Node(2, "10.0.0.3", 5433, "/pg/it's 2")


def test_recovery_sql_has_pgpool_43_argument_order():
    assert R.recovery_sql("recovery_1st_stage", SOURCE, TARGET) == (
        "SELECT pgpool_recovery('recovery_1st_stage', '10.0.0.3', '/pg/it''s 2', '5432', 2, '5433', "
        "'localhost')")


def test_remote_start_sql():
    assert R.remote_start_sql(TARGET) == "SELECT pgpool_remote_start('10.0.0.3', '/pg/it''s 2')"
    assert R.remote_start_sql(R.Node(1, "", 5432, "/d")) == "SELECT pgpool_remote_start('localhost', '/d')"


@pytest.mark.parametrize("timeout, template1_tries", [(90, 31), (3, 2), (2, 1), (0, 1), (-5, 1)])
def test_start_check_schedule(timeout, template1_tries):
    schedule = R.start_check_schedule(timeout)
    assert schedule[:4] == [("postgres", i, True) for i in range(4)]
    rest = schedule[4:]
    assert [(db, retry) for db, retry, _ in rest] == [("template1", i) for i in range(template1_tries)]
    assert [sleep for _, _, sleep in rest] == [True] * (template1_tries - 1) + [False]


@pytest.mark.parametrize("fields, expected", [
    ({"S": "ERROR", "M": "pgpool_remote_start failed: script \"/d/pgpool_remote_start\" failed",
      "D": "child process exited with exit code 1"},
     "ERROR:  pgpool_remote_start failed: script \"/d/pgpool_remote_start\" failed\n"
     "DETAIL:  child process exited with exit code 1\n"),
    ({"S": "ERROR", "M": "function pgpool_remote_start(unknown, unknown) does not exist"},
     "ERROR:  function pgpool_remote_start(unknown, unknown) does not exist\n"),
    ({"M": "lost"}, "ERROR:  lost\n"),
])
def test_libpq_error_text(fields, expected):
    assert R.libpq_error_text(fields) == expected


def test_plans():
    assert R.PLANS[SR] == (("stage", 1), ("remote_start",), ("wait_started",), ("failback",))
    native = [step for step, *_ in R.PLANS[NATIVE]]
    assert native == ["checkpoint", "stage", "wait_clients_gone", "checkpoint", "stage", "remote_start",
                      "wait_started", "failback"]
    assert R.PLANS[SNAPSHOT] == R.PLANS[NATIVE]
    for plan in R.PLANS.values():                    # every step is a method of the driver
        assert all(callable(getattr(R.OnlineRecovery, f"_{step}", None)) for step, *_ in plan)


def test_one_recovery_at_a_time():
    key = os.getpid() + 1_000_000                   # no real pgpool parent has this pid
    with R.exclusive(key):
        with pytest.raises(R.RecoveryError) as info:
            with R.exclusive(key):
                pass
        assert (info.value.severity, info.value.message, info.value.detail) == (
            "FATAL", "process recovery request failed",
            "pgpool-II is already processing another recovery request.")
        with R.exclusive(key + 1):                   # another pgpool is independent
            pass
    with R.exclusive(key):                           # released at the end of the block
        pass
