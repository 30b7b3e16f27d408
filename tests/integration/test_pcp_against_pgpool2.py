"""Our pcp_* tools against the real pgpool-II 4.3 PCP server, compared with the real /usr/sbin/pcp_* tools.

Each case runs the real tool and ours with the same arguments back to back.  Output must be
identical; only the "(M:SS before ...)" countdowns of pcp_proc_info are normalised, and a pair is
re-run (up to 3 times) when live values (replication delay, pg_status) moved between the two runs.
Exit codes are equal except the documented difference: after a server ERROR/FATAL the real tool
exits 0 and ours exits 1.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.pgpool_process import REAL_PGPOOL, PgpoolProcess

pytestmark = pytest.mark.skipif(not Path(REAL_PGPOOL[0]).exists(),
                                reason="pgpool-II is not installed (/usr/sbin/pgpool absent): nothing to compare with")

COUNTDOWN = re.compile(r"\(\d+:\d\d before (process restarting|client disconnected)\)")


def run_real(pgpool: PgpoolProcess, tool: str, *args: str, conn_args: list[str] | None = None,
             env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [f"/usr/sbin/{tool}", *(pgpool.pcp_args() if conn_args is None else conn_args), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env or pgpool.pcp_env(),
                          stdin=subprocess.DEVNULL)


def run_ours(pgpool: PgpoolProcess, tool: str, *args: str, conn_args: list[str] | None = None,
             env: dict | None = None) -> subprocess.CompletedProcess:
    # argv[0] is the real tool's path so that getopt complaints name the same program
    argv = [sys.executable, "-m", "pcp.cli", f"/usr/sbin/{tool}",
            *(pgpool.pcp_args() if conn_args is None else conn_args), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env or pgpool.pcp_env(),
                          stdin=subprocess.DEVNULL)


def normalise(text: str) -> str:
    return COUNTDOWN.sub("(M:SS before ...)", text)


def compare(pgpool: PgpoolProcess, tool: str, *args: str, server_error: bool = False, **kw):
    """Run both tools (re-running when live values moved) and assert identical results."""
    for _ in range(3):
        real = run_real(pgpool, tool, *args, **kw)
        ours = run_ours(pgpool, tool, *args, **kw)
        if (normalise(real.stdout), normalise(real.stderr)) == (normalise(ours.stdout), normalise(ours.stderr)):
            break
        time.sleep(0.5)
    assert normalise(ours.stdout) == normalise(real.stdout)
    assert normalise(ours.stderr) == normalise(real.stderr)
    if server_error:
        assert (real.returncode, ours.returncode) == (0, 1), (real.returncode, ours.returncode)
    else:
        assert ours.returncode == real.returncode
    return real, ours


@pytest.fixture(scope="module")
def real_pgpool(pg_cluster):
    """One pgpool-II for the read-only comparisons (health checks on so the stats have data)."""
    pgpool = PgpoolProcess(pg_cluster, {"health_check_period": 1, "child_life_time": 300},
                           command=REAL_PGPOOL)
    pgpool.start(timeout=60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:   # wait until pgpool-II knows the primary and both nodes are up
        out = run_real(pgpool, "pcp_node_info").stdout
        if out.count(" primary ") == 1 and out.count(" up ") >= 2:
            break
        time.sleep(0.5)
    yield pgpool
    pgpool.cleanup()


# ---- read-only tools ------------------------------------------------------------------------

@pytest.mark.parametrize("args", [(), ("-v",), ("-d",)])
def test_node_count(real_pgpool, args):
    real, _ = compare(real_pgpool, "pcp_node_count", *args)
    assert real.stdout.strip().splitlines()[-2 if "-d" in args else -1].strip() == "2"


@pytest.mark.parametrize("args", [(), ("-n", "0"), ("-n", "1"), ("1",), ("-v",), ("-a",), ("-v", "-n", "0"),
                                  ("--node-id=1", "--verbose"), ("-d", "-n", "0")])
def test_node_info(real_pgpool, args):
    real, _ = compare(real_pgpool, "pcp_node_info", *args)
    assert real.stdout


@pytest.mark.parametrize("args", [("0",), ("-n", "1"), ("-v", "0")])
def test_health_check_stats(real_pgpool, args):
    compare(real_pgpool, "pcp_health_check_stats", *args)


@pytest.mark.parametrize("args", [(), ("-v",)])
def test_proc_count(real_pgpool, args):
    real, _ = compare(real_pgpool, "pcp_proc_count", *args)
    assert len(real.stdout.split()) >= 4


def test_proc_info(real_pgpool):
    with real_pgpool.connect() as conn:          # a live session, so some rows have a database
        conn.execute("SELECT 1")
        pid = run_real(real_pgpool, "pcp_proc_count").stdout.split()[0]
        for args in [(), ("-a",), ("-v",), ("-v", "-a"), ("-P", pid), ("-a", pid), ("--process-id", pid, "-v")]:
            compare(real_pgpool, "pcp_proc_info", *args)


@pytest.mark.parametrize("args", [(), ("-v",)])
def test_pool_status(real_pgpool, args):
    real, _ = compare(real_pgpool, "pcp_pool_status", *args)
    assert "name : backend_clustering_mode" in real.stdout or "backend_clustering_mode" in real.stdout


def test_unix_socket_and_debug_trace(real_pgpool):
    conn = ["-h", str(real_pgpool.workdir), "-p", str(real_pgpool.pcp_port), "-U", "postgres", "-w"]
    real, _ = compare(real_pgpool, "pcp_node_count", "-d", conn_args=conn)
    assert 'DEBUG: send: tos="X", len=4' in real.stdout
    compare(real_pgpool, "pcp_pool_status", "-d", conn_args=conn)
    compare(real_pgpool, "pcp_health_check_stats", "-d", "0", conn_args=conn)


def test_reload_config(real_pgpool):
    real, _ = compare(real_pgpool, "pcp_reload_config")
    assert real.stdout == "pcp_reload_config -- Command Successful\n"
    compare(real_pgpool, "pcp_reload_config", "-s", "local")


# ---- errors ---------------------------------------------------------------------------------

def test_watchdog_not_enabled(real_pgpool):
    real, _ = compare(real_pgpool, "pcp_watchdog_info", server_error=True)
    assert real.stderr == "ERROR:  PCP: informing watchdog info failed\nDETAIL:  watchdog is not enabled\n\n"
    compare(real_pgpool, "pcp_watchdog_info", "-v", "-n", "0", server_error=True)


@pytest.mark.parametrize("tool,args", [("pcp_node_info", ("-n", "5")), ("pcp_health_check_stats", ("2",)),
                                       ("pcp_health_check_stats", ("7",)), ("pcp_proc_info", ("-P", "1")),
                                       ("pcp_recovery_node", ("9",)), ("pcp_promote_node", ("-n", "9"))])
def test_invalid_ids(real_pgpool, tool, args):
    real, _ = compare(real_pgpool, tool, *args, server_error=True)
    assert real.stderr.startswith("ERROR:  ")


def test_wrong_password(real_pgpool, tmp_path):
    passfile = tmp_path / "pcppass"
    passfile.write_text("*:*:postgres:wrong\n")
    passfile.chmod(0o600)
    env = dict(real_pgpool.pcp_env(), PCPPASSFILE=str(passfile))
    real, _ = compare(real_pgpool, "pcp_node_count", env=env)
    assert real.returncode == 1
    assert real.stderr == ('FATAL:  authentication failed for user "postgres"\n'
                           "DETAIL:  username and/or password does not match\n\n")
    compare(real_pgpool, "pcp_node_count", "-d", env=env)
    passfile.chmod(0o644)    # ignored when group/other can read it: empty password, -d warns
    compare(real_pgpool, "pcp_node_count", "-d", env=env)


def test_unknown_user(real_pgpool):
    conn = ["-h", real_pgpool.host, "-p", str(real_pgpool.pcp_port), "-U", "nobody", "-w"]
    real, _ = compare(real_pgpool, "pcp_node_count", conn_args=conn)
    assert real.returncode == 1


def test_connection_refused(real_pgpool):
    conn = ["-h", "127.0.0.1", "-p", "1100", "-w"]
    real, _ = compare(real_pgpool, "pcp_node_count", conn_args=conn)
    assert real.returncode == 1 and "Connection refused" in real.stderr


# ---- state-changing tools -------------------------------------------------------------------

def _node_status(pgpool: PgpoolProcess, node: int) -> str:
    return run_real(pgpool, "pcp_node_info", "-n", str(node)).stdout.split()[2]


def _wait_status(pgpool: PgpoolProcess, node: int, wanted: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = _node_status(pgpool, node)
        if status in wanted:
            return status
        time.sleep(0.5)
    raise AssertionError(f"node {node} status {status}, wanted {wanted}")


def test_detach_and_attach_standby(pgpool_factory):
    pgpool = pgpool_factory({"health_check_period": 0}, command=REAL_PGPOOL, timeout=60)
    _wait_status(pgpool, 1, {"2"})
    for runner in (run_real, run_ours):
        detached = runner(pgpool, "pcp_detach_node", "1")
        assert (detached.stdout, detached.stderr, detached.returncode) == (
            "pcp_detach_node -- Command Successful\n", "", 0), runner.__name__
        _wait_status(pgpool, 1, {"3"})
        attached = runner(pgpool, "pcp_attach_node", "-n", "1")
        assert (attached.stdout, attached.stderr, attached.returncode) == (
            "pcp_attach_node -- Command Successful\n", "", 0), runner.__name__
        _wait_status(pgpool, 1, {"1", "2"})
        pgpool.wait_ready(30)          # a client connects, so the attached node goes from waiting to up
    compare(pgpool, "pcp_node_info", "-n", "1")


@pytest.mark.parametrize("runner", [run_real, run_ours])
def test_stop_pgpool(pgpool_factory, runner):
    pgpool = pgpool_factory(command=REAL_PGPOOL, timeout=60)
    stopped = runner(pgpool, "pcp_stop_pgpool", "-m", "fast")
    assert (stopped.stdout, stopped.stderr, stopped.returncode) == ("pcp_stop_pgpool -- Command Successful\n", "", 0)
    pgpool.proc.wait(30)
    assert not pgpool.is_alive()
