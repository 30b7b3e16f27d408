"""Failover, failback, promotion and follow primary of our pgpool on a real primary + 2 standbys.

The module builds its own cluster (it kills and promotes nodes) and puts it back in shape before
each test.  The commands pgpool runs are small shell scripts written by the test: each appends its
arguments to a log file; failover.sh also promotes the new main node when the primary failed (as
the postgres user), follow.sh re-attaches every node but the old primary with pcp_attach_node.
Failovers are triggered by pcp_detach_node / pcp_promote_node, or by a session that cannot reach a
killed node (failover_on_backend_error); health checks stay off.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from pgpool.tools.cluster import find_bindir
from tests.conftest import phase_failed
from tests.harness.backends import build_cluster
from tests.harness.clients import pcp
from tests.harness.pgpool_process import OUR_PGPOOL, REAL_PGPOOL, PgpoolProcess
from tests.harness.wait import wait_for

FAILOVER_ARGS = "%d %h %p %D %m %H %r %R %M %P %N %S"
FOLLOW_ARGS = "%d %h %p %D %m %H %r %R %M %P"


@pytest.fixture(scope="module")
def cluster():
    handle = build_cluster("failover", num_standbys=2)
    yield handle.cluster
    handle.close()


@pytest.fixture
def fresh(cluster):
    """The cluster as built: node 0 primary, nodes 1 and 2 streaming from it."""
    cluster.restore()
    return cluster


@pytest.fixture
def scripts(tmp_path):
    """failover.sh, failback.sh, follow.sh, hang.sh, fail.sh in tmp_path; each logs "$*" to <name>.log."""
    pg_ctl = find_bindir() / "pg_ctl"
    as_postgres = 'if [ "$(id -u)" = 0 ]; then run="runuser -u postgres --"; else run=""; fi\n'
    bodies = {
        # promote the new main node (%m, data directory %R) when the old primary (%P) failed
        "failover": as_postgres + 'if [ "$1" = "${10}" ] && [ "$5" != -1 ]; then\n'
                                  f'  $run {pg_ctl} -D "$8" promote -w >> {tmp_path}/failover.log 2>&1\nfi\n',
        "failback": "",
        # re-attach every node but the old primary (%P); the PCP port comes from pcp.env
        "follow": f". {tmp_path}/pcp.env\n"
                  'if [ "$1" != "${10}" ]; then\n'
                  f'  "{sys.executable}" -m pcp.cli pcp_attach_node -h 127.0.0.1 -p "$PCP_PORT" -U postgres '
                  f'-w -n "$1" >> {tmp_path}/follow.log 2>&1\nfi\n',
        "hang": "exec sleep 1000\n",
        "fail": "exit 1\n",
    }
    for name, body in bodies.items():
        path = tmp_path / f"{name}.sh"
        path.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/{name}.log\n{body}')
        path.chmod(0o755)
    return tmp_path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def start(request, scripts):
    """start(cluster, **settings) -> our pgpool, its PCP port written to scripts/pcp.env."""
    started: list[PgpoolProcess] = []

    def run(cluster, extra_args=(), status_file: str | None = None, **settings) -> PgpoolProcess:
        pgpool = PgpoolProcess(cluster, {"health_check_period": 0, "sr_check_period": 1, **settings},
                               extra_args=extra_args)
        started.append(pgpool)
        if status_file is not None:
            (pgpool.workdir / "pgpool_status").write_bytes(status_file.encode("latin-1"))
        (scripts / "pcp.env").write_text(f"PCP_PORT={pgpool.pcp_port}\nexport PCPPASSFILE={pgpool.pcppass_path}\n")
        pgpool.start(timeout=60)
        wait_for(lambda: pcp("pcp_node_count", pgpool).returncode == 0, 15, what="PCP server answers")
        return pgpool

    yield run
    for pgpool in started:
        pgpool.stop()
        if phase_failed(request):
            print(f"\n===== pgpool log =====\n{pgpool.log_text()}")
        else:
            pgpool.cleanup()


def pool_nodes(pgpool) -> list[tuple] | None:
    """(status, role, load_balance_node) per node from SHOW pool_nodes; None if no session starts."""
    try:
        with pgpool.connect() as conn:
            return [(r[3], r[6], r[9]) for r in conn.execute("SHOW pool_nodes").fetchall()]
    except psycopg.OperationalError:
        return None


def statuses(pgpool) -> list[str] | None:
    rows = pool_nodes(pgpool)
    return rows and [r[0] for r in rows]


def detach(pgpool, node: int, *opts: str) -> None:
    r = pcp("pcp_detach_node", pgpool, *opts, "-n", str(node))
    assert (r.returncode, r.stdout) == (0, "pcp_detach_node -- Command Successful\n"), r.stderr


def expected_args(cluster, node: int, new_main: int, old_main: int, old_primary: int, full: bool = True) -> str:
    """What FAILOVER_ARGS / FOLLOW_ARGS expand to."""
    n, m = cluster.nodes[node], cluster.nodes[new_main]
    parts = [node, n.host, n.port, n.datadir, new_main, m.host, m.port, m.datadir, old_main, old_primary]
    if full:
        p = cluster.nodes[old_primary]
        parts += [p.host, p.port]
    return " ".join(str(x) for x in parts)


# ---- standby failure, failback --------------------------------------------------------------

def test_killed_standby_fails_over_and_other_sessions_keep_working(fresh, scripts, start):
    pgpool = start(fresh, failover_command=f"{scripts}/failover.sh {FAILOVER_ARGS}",
                   backend_weight2=0)
    with pgpool.connect() as conn:
        lb = [r[9] for r in conn.execute("SHOW pool_nodes").fetchall()]
        assert lb[2] == "false"
        fresh.nodes[2].stop("immediate")
        # a new session cannot reach node 2: failover_on_backend_error detaches it
        with pgpool.connect() as other:
            assert other.execute("SELECT 1").fetchone() == (1,)
        wait_for(lambda: lines(scripts / "failover.log"), 20, what="failover_command ran")
        assert lines(scripts / "failover.log") == [expected_args(fresh, 2, 0, 0, 0)]
        wait_for(lambda: "failover done. shutdown host" in pgpool.log_text(), 10, what="failover done")
        # this session load-balances on node 0 or 1: its worker was not restarted
        assert conn.execute("SELECT 42").fetchone() == (42,)
    log = pgpool.log_text()
    assert "Do not restart children because we are switching over node id 2" in log
    assert "needs to restart because pool" not in log
    assert statuses(pgpool) == ["up", "up", "down"]
    assert (pgpool.workdir / "pgpool_status").read_text() == "up\nup\ndown\n"


def test_graceful_detach_then_failback(fresh, scripts, start):
    pgpool = start(fresh, failback_command=f"{scripts}/failback.sh {FAILOVER_ARGS}")
    detach(pgpool, 2, "-g")        # returns once the failover is done
    assert pcp("pcp_node_info", pgpool, "-n", "2").stdout.split()[2] == "3"
    r = pcp("pcp_attach_node", pgpool, "-n", "2")
    assert (r.returncode, r.stdout) == (0, "pcp_attach_node -- Command Successful\n"), r.stderr
    wait_for(lambda: lines(scripts / "failback.log"), 10, what="failback_command ran")
    assert lines(scripts / "failback.log") == [expected_args(fresh, 2, 0, 0, 0)]
    wait_for(lambda: statuses(pgpool) == ["up", "up", "up"], 15, what="node 2 up again")
    log = pgpool.log_text()
    assert "Do not restart children because we are failing back node id 2" in log
    assert "failback done. reconnect host" in log


# ---- primary failure, follow primary ----------------------------------------------------------

def test_killed_primary_is_replaced_and_followed(fresh, scripts, start):
    pgpool = start(fresh, failover_command=f"{scripts}/failover.sh {FAILOVER_ARGS}",
                   follow_primary_command=f"{scripts}/follow.sh {FOLLOW_ARGS}")
    fresh.primary.stop("immediate")
    with pytest.raises(psycopg.OperationalError):   # this session finds the primary dead
        pgpool.connect().close()
    wait_for(lambda: pool_nodes(pgpool) and [r[:2] for r in pool_nodes(pgpool)]
             == [("down", "standby"), ("up", "primary"), ("up", "standby")], 60,
             what="node 1 primary, node 2 followed")
    with pgpool.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS after_failover (x int)")
        conn.execute("INSERT INTO after_failover VALUES (1)")
    assert fresh.nodes[1].psql("SELECT count(*) FROM after_failover") == "1"
    assert lines(scripts / "failover.log")[0] == expected_args(fresh, 0, 1, 0, 0)
    follow = [ln for ln in lines(scripts / "follow.log") if "Command Successful" not in ln]
    assert follow == [expected_args(fresh, 0, 1, 0, 0, full=False), expected_args(fresh, 2, 1, 0, 0, full=False)]
    log = pgpool.log_text()
    assert "Restart all children" in log
    assert "find_primary_node: primary node is 1" in log
    assert "start triggering follow command." in log


def test_promote_node_relabels_without_promoting(fresh, scripts, start):
    pgpool = start(fresh)
    r = pcp("pcp_promote_node", pgpool, "-n", "1")
    assert (r.returncode, r.stdout) == (0, "pcp_promote_node -- Command Successful\n"), r.stderr
    wait_for(lambda: pool_nodes(pgpool) and [r[:2] for r in pool_nodes(pgpool)]
             == [("down", "standby"), ("up", "primary"), ("down", "standby")], 20, what="node 1 labelled primary")
    assert fresh.nodes[1].in_recovery()          # PostgreSQL itself was not promoted
    r = pcp("pcp_promote_node", pgpool, "-n", "1")
    assert r.stderr == ("FATAL:  invalid promote request\n"
                        "DETAIL:  specified node is already primary node, can't promote node id 1\n\n")


def test_switchover_promotes_through_failover_command(fresh, scripts, start):
    pgpool = start(fresh, failover_command=f"{scripts}/failover.sh {FAILOVER_ARGS}",
                   follow_primary_command=f"{scripts}/follow.sh {FOLLOW_ARGS}")
    r = pcp("pcp_promote_node", pgpool, "-s", "-n", "2")
    assert (r.returncode, r.stdout) == (0, "pcp_promote_node -- Command Successful\n"), r.stderr
    # the reply came after the failover: node 2 is the primary already
    assert [row[1] for row in pool_nodes(pgpool)] == ["standby", "standby", "primary"]
    assert not fresh.nodes[2].in_recovery()
    assert lines(scripts / "failover.log")[0] == expected_args(fresh, 0, 2, 0, 0)
    wait_for(lambda: statuses(pgpool) == ["down", "up", "up"], 15, what="node 1 re-attached by follow.sh")
    with pgpool.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS after_switchover (x int)")
    assert "pcp_promote_node: promote option: s" in pgpool.log_text()


# ---- commands that misbehave --------------------------------------------------------------------

def test_hanging_failover_command_does_not_freeze_the_server(fresh, scripts, start):
    pgpool = start(fresh, failover_command=f"{scripts}/hang.sh %d")
    detach(pgpool, 2)
    wait_for(lambda: lines(scripts / "hang.log"), 10, what="hang.sh started")
    hanging = wait_for(lambda: [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "1000"]],
                       10, what="the sleep of hang.sh")
    # sessions still work, and a worker that dies is replaced
    assert statuses(pgpool) == ["up", "up", "down"]
    with pgpool.connect() as conn:
        workers = [r[0] for r in conn.execute("SHOW pool_processes").fetchall()]
    os.kill(int(workers[-1]), signal.SIGKILL)

    def replaced():
        with pgpool.connect() as conn:
            now = [r[0] for r in conn.execute("SHOW pool_processes").fetchall()]
        return len(now) == len(workers) and workers[-1] not in now
    wait_for(replaced, 15, what="the killed worker replaced")
    # shutdown still works and takes the command down with it
    assert pgpool.stop(signal.SIGINT, timeout=20) == 0
    for proc in hanging:
        wait_for(lambda: not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, 5, what="sleep killed")


def test_failing_failover_command_is_logged_and_failover_goes_on(fresh, scripts, start):
    pgpool = start(fresh, failover_command=f"{scripts}/fail.sh %d")
    detach(pgpool, 1)
    wait_for(lambda: "failover done. shutdown host" in pgpool.log_text(), 10, what="failover done")
    log = pgpool.log_text()
    assert "WARNING:  failover_command exited with status 1" in log
    assert lines(scripts / "fail.log") == ["1"]
    assert statuses(pgpool) == ["up", "down", "up"]


# ---- pgpool_status ------------------------------------------------------------------------------

@pytest.mark.parametrize("content, args, expected, warned", [
    ("up\ndown\nup\n", (), ["up", "down", "up"], False),
    ("UP\nDown\n", (), ["up", "down", "up"], False),              # missing lines are up
    ("up\ndo", (), ["up", "up", "up"], True),                     # cut short
    ("\x00\x7fgarbage\xff\n", (), ["up", "up", "up"], True),
    ("down\ndown\ndown\n", (), ["up", "up", "up"], False),        # nobody up: ignored
    ("up\ndown\nup\n", ("-D",), ["up", "up", "up"], False),      # -D discards the file
])
def test_status_file_read_tolerantly(fresh, start, content, args, expected, warned):
    pgpool = start(fresh, extra_args=args, status_file=content)
    assert statuses(pgpool) == expected
    path = pgpool.workdir / "pgpool_status"
    log = pgpool.log_text()
    assert (f'WARNING:  invalid data in backend status file "{path}", ignoring it' in log) == warned
    assert ("discarded" in log) == ("-D" in args)
    assert path.read_text() == "".join(s + "\n" for s in expected)


# ---- a session's own backend killed --------------------------------------------------------------

def test_pg_terminate_backend_through_pgpool_does_not_detach(fresh, start):
    pgpool = start(fresh, failover_on_backend_shutdown=True)
    victim = psycopg.connect(pgpool.dsn(application_name="victim"), autocommit=True)
    try:
        victim.execute("SELECT 1")
        with pgpool.connect() as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'victim'")
        with pytest.raises(psycopg.OperationalError):
            victim.execute("CREATE TEMP TABLE t (x int)")       # goes to the primary
    finally:
        victim.close()
    wait_for(lambda: "still accepts connections: not failing over" in pgpool.log_text(), 10,
             what="the probe's verdict")
    time.sleep(0.5)
    assert statuses(pgpool) == ["up", "up", "up"]
    assert "starting degeneration" not in pgpool.log_text()


# ---- PCP answers, compared with pgpool-II ------------------------------------------------------

REFUSALS = [("pcp_detach_node", "-n", "1"),          # DISALLOW_TO_FAILOVER
            ("pcp_promote_node", "-s", "-n", "1"),
            ("pcp_detach_node", "-n", "2"),
            ("pcp_detach_node", "-n", "2"),          # already down
            ("pcp_promote_node", "-n", "2"),         # a down node: logged, nothing done
            ("pcp_promote_node", "-n", "0"),         # the primary
            ("pcp_promote_node", "-n", "7")]


@pytest.mark.skipif(not Path(REAL_PGPOOL[0]).exists(), reason="pgpool-II (/usr/sbin/pgpool) is not installed")
def test_pcp_node_operation_answers_match_pgpool2(fresh, pgpool_factory):
    def answers(command) -> list[tuple]:
        pgpool = pgpool_factory({"backend_flag1": "DISALLOW_TO_FAILOVER", "health_check_period": 0},
                                cluster=fresh, command=command, timeout=60)
        wait_for(lambda: pcp("pcp_node_count", pgpool, real=True).returncode == 0, 15, what="PCP server")
        out = []
        for tool, *args in REFUSALS:
            r = pcp(tool, pgpool, *args, real=True)
            out.append((tool, *args, r.stdout, re.sub(r"pid \[\d+\]", "pid [N]", r.stderr)))
            time.sleep(0.5)          # let a detach finish before the next request
        pgpool.stop()
        return out
    assert answers(OUR_PGPOOL) == answers(REAL_PGPOOL)
