"""Our PCP server (pgpool/processes/pcp_server.py) driven by the real /usr/sbin/pcp_* clients and by ours.

Every client case runs with both programs (the real one is skipped when pgpool2 is not installed);
exit codes differ only as documented: after a server ERROR/FATAL the real tool exits 0, ours 1.
The last tests run the real client against our server and against pgpool-II on the same cluster
and compare the output byte for byte (only the status-change time is normalised).
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from pcp import protocol as P
from tests.harness.pgpool_process import REAL_PGPOOL, PgpoolProcess
from tests.harness.wait import wait_for as _wait_for

REAL_PCP = Path("/usr/sbin/pcp_node_count")
RUNNERS = [pytest.param(True, id="real-client", marks=pytest.mark.skipif(
               not REAL_PCP.exists(), reason="pgpool-II's pcp_* clients are not installed (/usr/sbin/pcp_*)")),
           pytest.param(False, id="our-client")]
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def run(pgpool: PgpoolProcess, tool: str, *args: str, real: bool, env: dict | None = None,
        conn_args: list[str] | None = None) -> subprocess.CompletedProcess:
    """One pcp tool (pgpool-II's or ours) against ``pgpool``."""
    prog = [f"/usr/sbin/{tool}"] if real else [sys.executable, "-m", "pcp.cli", tool]
    return subprocess.run([*prog, *(pgpool.pcp_args() if conn_args is None else conn_args), *args],
                          capture_output=True, text=True, timeout=60, env=env or pgpool.pcp_env(),
                          stdin=subprocess.DEVNULL)


def server_error_rc(real: bool) -> int:
    return 0 if real else 1


def wait_pcp(pgpool: PgpoolProcess, timeout: float = 15) -> PgpoolProcess:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((pgpool.host, pgpool.pcp_port), timeout=2):
                return pgpool
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"PCP port not open\n{pgpool.log_text()}")
            time.sleep(0.1)


# the shared polling helper, with this file's usual pace
def wait_for(predicate, timeout: float = 15, interval: float = 0.1, what: str = "condition"):
    return _wait_for(predicate, timeout, interval, what)


def node_statuses(pgpool: PgpoolProcess) -> list[str] | None:
    """Node statuses from SHOW pool_nodes; None while a failover restarts the workers (a client
    connecting right then is disconnected, as with pgpool-II)."""
    try:
        with pgpool.connect() as conn:
            return [r[3] for r in conn.execute("SHOW pool_nodes").fetchall()]
    except psycopg.OperationalError:
        return None


@pytest.fixture(scope="module")
def ours(pg_cluster):
    """One of our pgpools for the read-only cases."""
    pgpool = PgpoolProcess(pg_cluster, {})
    pgpool.start(timeout=60)
    wait_pcp(pgpool)
    yield pgpool
    pgpool.cleanup()


@pytest.fixture
def fresh(pgpool_factory):
    """A pgpool of ours for one test that changes its state."""
    return lambda overrides=None: wait_pcp(pgpool_factory(overrides))


# ---- information requests ------------------------------------------------------------------

@pytest.mark.parametrize("real", RUNNERS)
def test_node_count(ours, real):
    r = run(ours, "pcp_node_count", real=real)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{len(ours.cluster.nodes)}\n", "")


@pytest.mark.parametrize("real", RUNNERS)
def test_node_info(ours, real):
    nodes = ours.cluster.nodes
    for node_id, role in ((0, "primary"), (1, "standby")):
        r = run(ours, "pcp_node_info", "-n", str(node_id), real=real)
        assert r.returncode == 0, r.stderr
        f = r.stdout.split()
        assert f[:8] == ["127.0.0.1", str(nodes[node_id].port), "2", "0.500000", "up", "unknown", role, "unknown"]
        assert STAMP.search(r.stdout)
    everything = run(ours, "pcp_node_info", real=real).stdout.splitlines()
    assert [line.split()[6] for line in everything] == ["primary", "standby"]
    verbose = run(ours, "pcp_node_info", "-v", "-n", "1", real=real).stdout
    assert f"Port                   : {nodes[1].port}\n" in verbose
    assert "Status Name            : up\n" in verbose and "Role                   : standby\n" in verbose
    assert "Weight                 : 0.500000\n" in verbose


@pytest.mark.parametrize("real", RUNNERS)
def test_invalid_node_id(ours, real):
    r = run(ours, "pcp_node_info", "-n", "5", real=real)
    assert r.stderr == "ERROR:  informing node info failed\nDETAIL:  invalid node ID : 5\n\n"
    assert r.returncode == server_error_rc(real)
    r = run(ours, "pcp_health_check_stats", "-n", "2", real=real)
    assert r.stderr.startswith("ERROR:  informing health check stats info failed\n"
                               "DETAIL:  stats data for node ID 2 does not exist\n")
    r = run(ours, "pcp_health_check_stats", "-n", "3", real=real)
    assert r.stderr.startswith("ERROR:  informing health check stats info failed\nDETAIL:  invalid node ID 3\n")


@pytest.mark.parametrize("real", RUNNERS)
def test_proc_count_and_info(ours, real):
    with ours.connect() as conn:
        listed = {int(r[0]) for r in conn.execute("SHOW pool_processes").fetchall()}
        r = run(ours, "pcp_proc_count", real=real)
        assert r.returncode == 0, r.stderr
        pids = [int(p) for p in r.stdout.split()]
        assert len(pids) == ours.settings["num_init_children"] and set(pids) == listed
        # the worker serving this session shows its pooled connections (one row per backend)
        mine = run(ours, "pcp_proc_info", real=real).stdout.splitlines()
        busy = [m.groups() for line in mine if line.startswith("postgres postgres ")
                and (m := re.search(r" (\d+) (\d+) Idle$", line))]
        assert len(busy) == len(ours.cluster.nodes), mine
        pid = busy[0][0]
        assert {row[0] for row in busy} == {pid} and {row[1] for row in busy} == {"0", "1"}
    every = run(ours, "pcp_proc_info", "-a", "-v", "-P", pid, real=real).stdout
    assert every.count(f"PID                       : {pid}\n") == ours.settings["max_pool"] * len(ours.cluster.nodes)
    r = run(ours, "pcp_proc_info", "-P", "1", real=real)
    assert r.stderr == "ERROR:  informing process info failed\nDETAIL:  invalid process ID : 1\n\n"


@pytest.mark.parametrize("real", RUNNERS)
def test_pool_status(ours, real):
    r = run(ours, "pcp_pool_status", real=real)
    assert r.returncode == 0, r.stderr
    assert "name : num_init_children\nvalue: 4\ndesc : # of children initially pre-forked\n\n" in r.stdout
    assert f"name : backend_port1\nvalue: {ours.cluster.nodes[1].port}\n" in r.stdout
    assert "name : backend_status0\nvalue: up\n" in r.stdout


@pytest.mark.parametrize("real", RUNNERS)
def test_health_check_stats(ours, real):
    r = run(ours, "pcp_health_check_stats", "-n", "0", real=real)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"0 127\.0\.0\.1 {ours.cluster.nodes[0].port} up primary \S+ \S+ "
                        r"0 0 0 0 0 0\.000000 0 0 0 0\.000000    \n", r.stdout), r.stdout


@pytest.mark.parametrize("real", RUNNERS)
def test_watchdog_info_not_enabled(ours, real):
    r = run(ours, "pcp_watchdog_info", real=real)
    assert r.stderr == "ERROR:  PCP: informing watchdog info failed\nDETAIL:  watchdog is not enabled\n\n"
    assert r.returncode == server_error_rc(real)


@pytest.mark.parametrize("real", RUNNERS)
def test_wrong_password_and_unix_socket(ours, real, tmp_path):
    passfile = tmp_path / "pcppass"
    passfile.write_text("*:*:postgres:wrong\n")
    passfile.chmod(0o600)
    r = run(ours, "pcp_node_count", real=real, env=dict(ours.pcp_env(), PCPPASSFILE=str(passfile)))
    assert r.returncode == 1
    assert r.stderr == ('FATAL:  authentication failed for user "postgres"\n'
                        "DETAIL:  username and/or password does not match\n\n")
    r = run(ours, "pcp_node_count", real=real,
            conn_args=["-h", str(ours.workdir), "-p", str(ours.pcp_port), "-U", "postgres", "-w"])
    assert (r.returncode, r.stdout) == (0, "2\n"), r.stderr


@pytest.mark.parametrize("real", RUNNERS)
def test_promote_and_recovery_are_refused(ours, real):
    r = run(ours, "pcp_promote_node", "-n", "0", real=real)
    assert r.stderr == ("FATAL:  invalid promote request\n"
                        "DETAIL:  specified node is already primary node, can't promote node id 0\n\n")
    r = run(ours, "pcp_promote_node", "-n", "5", real=real)
    assert r.stderr == ("ERROR:  could not process promote request\n"
                        "DETAIL:  node id 5 is not valid\n\n")
    r = run(ours, "pcp_recovery_node", "-n", "1", real=real)
    assert r.stderr == "ERROR:  node recovery failed, node id: 1 is alive\n\n"


# ---- raw protocol ----------------------------------------------------------------------------

def raw_session(pgpool: PgpoolProcess, login: bool = True) -> socket.socket:
    s = socket.create_connection((pgpool.host, pgpool.pcp_port), timeout=10)
    if login:
        s.sendall(P.request_salt())
        kind, payload = read_packet(s)
        assert kind == b"m"
        s.sendall(P.request_auth("postgres", P.auth_hash("postgres", "postgres", P.decode_salt(payload))))
        assert read_packet(s)[0] == b"r"
    return s


def read_packet(s: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while (got := P.split_frame(buf)) is None:
        chunk = s.recv(4096)
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return got[0], got[1]


@pytest.mark.parametrize("packet, login, message, detail", [
    (P.frame(b"Q"), True, "PCP processing request", 'unknown PCP packet type "Q"'),
    (b"L" + (300).to_bytes(4, "big"), True, "invalid PCP packet", "incorrect packet length (300)"),
    (b"L" + (0).to_bytes(4, "big"), True, "invalid PCP packet", "incorrect packet length (0)"),
    (P.request_node_count(), False, "authentication failed for new PCP connection", "connection not authorized"),
])
def test_raw_fatal_errors(ours, packet, login, message, detail):
    with raw_session(ours, login) as s:
        s.sendall(packet)
        kind, payload = read_packet(s)
        err = P.decode_error(payload)
        assert (kind, err.severity, err.message, err.detail) == (b"E", "FATAL", message, detail)
        with pytest.raises(EOFError):
            read_packet(s)


def test_raw_error_keeps_connection_and_set_parameter(ours):
    with raw_session(ours) as s:
        s.sendall(P.request_set_parameter("client_min_messages", "bogus"))
        err = P.decode_error(read_packet(s)[1])
        assert (err.severity, err.message, err.detail) == (
            "ERROR", "PCP: set configuration parameter failed",
            'invalid value "bogus" for parameter "client_min_messages"')
        s.sendall(P.request_set_parameter("client_min_messages", "warning"))
        assert read_packet(s) == (b"a", b"CommandComplete\0")
        s.sendall(P.request_node_count())
        kind, payload = read_packet(s)
        assert (kind, P.decode_node_count(payload)) == (b"l", 2)
        s.sendall(P.request_disconnect())
        with pytest.raises(EOFError):
            read_packet(s)


# ---- node operations and server control ------------------------------------------------------

@pytest.mark.parametrize("real", RUNNERS)
def test_detach_and_attach(fresh, real):
    pgpool = fresh()
    r = run(pgpool, "pcp_detach_node", "-n", "1", real=real)
    assert (r.returncode, r.stdout) == (0, "pcp_detach_node -- Command Successful\n"), r.stderr
    wait_for(lambda: node_statuses(pgpool) == ["up", "down"], what="node 1 down")
    r = run(pgpool, "pcp_detach_node", "-n", "1", real=real)
    assert r.stderr == "ERROR:  invalid degenerate backend request, node id : 1 status: [3] is not valid for failover\n\n"
    assert run(pgpool, "pcp_node_info", "-n", "1", real=real).stdout.split()[2:5] == ["3", "0.500000", "down"]
    r = run(pgpool, "pcp_attach_node", "-n", "1", real=real)
    assert (r.returncode, r.stdout) == (0, "pcp_attach_node -- Command Successful\n"), r.stderr
    wait_for(lambda: node_statuses(pgpool) == ["up", "up"], what="node 1 up again")
    assert "failback done. reconnect host" in pgpool.log_text()
    assert (Path(pgpool.settings["logdir"]) / "pgpool_status").read_text() == "up\nup\n"
    with pgpool.connect() as conn:   # sessions still work, both nodes are used
        assert conn.execute("SELECT 1").fetchone() == (1,)
        rows = conn.execute("SHOW pool_nodes").fetchall()
        assert [r[6] for r in rows] == ["primary", "standby"]


@pytest.mark.parametrize("real", RUNNERS)
def test_reload_config(fresh, real):
    pgpool = fresh()
    pgpool.set(client_idle_limit=77)
    pgpool.write_config()
    r = run(pgpool, "pcp_reload_config", real=real)
    assert (r.returncode, r.stdout) == (0, "pcp_reload_config -- Command Successful\n"), r.stderr

    def reloaded():
        with pgpool.connect() as conn:
            return conn.execute("PGPOOL SHOW client_idle_limit").fetchone()[0] == "77s"
    wait_for(reloaded, what="client_idle_limit reloaded")
    assert "reload config files." in pgpool.log_text()


@pytest.mark.parametrize("real", RUNNERS)
def test_stop_pgpool_fast(fresh, real):
    pgpool = fresh()
    r = run(pgpool, "pcp_stop_pgpool", "-m", "fast", real=real)
    assert (r.returncode, r.stdout) == (0, "pcp_stop_pgpool -- Command Successful\n"), r.stderr
    assert pgpool.proc.wait(15) == 0
    assert "received fast shutdown request" in pgpool.log_text()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pgpool.dsn(), connect_timeout=2)


def test_pcp_process_restarted_after_death(fresh):
    import psutil
    pgpool = fresh()
    with pgpool.connect() as conn:
        workers = {int(r[0]) for r in conn.execute("SHOW pool_processes").fetchall()}
    pcp_pids = [c.pid for c in psutil.Process(pgpool.pid).children()
                if c.pid not in workers and c.name() == "pcp_main"]
    assert len(pcp_pids) == 1
    psutil.Process(pcp_pids[0]).send_signal(signal.SIGKILL)
    wait_for(lambda: run(pgpool, "pcp_node_count", real=False).stdout == "2\n", what="PCP answers again")
    assert re.search(r"pcp_main process exited with status -9; restarting it", pgpool.log_text())


# ---- byte-for-byte with pgpool-II ------------------------------------------------------------

@pytest.mark.skipif(not Path(REAL_PGPOOL[0]).exists() or not REAL_PCP.exists(),
                    reason="pgpool-II (pgpool2 package) is not installed: nothing to compare with")
def test_same_output_as_pgpool2(pg_cluster, pgpool_factory):
    # sr_check_period 0: pgpool-II then collects no replication state, which we do not have yet
    settings = {"sr_check_period": 0}
    real = pgpool_factory(settings, command=REAL_PGPOOL, timeout=60)
    ours = wait_pcp(pgpool_factory(settings))
    wait_for(lambda: run(real, "pcp_node_info", real=True).stdout.count(" primary ") == 1, what="pgpool-II primary")
    for args in (["pcp_node_count"], ["pcp_node_count", "-v"], ["pcp_node_info"], ["pcp_node_info", "-n", "1"],
                 ["pcp_node_info", "-v"], ["pcp_node_info", "-n", "7"], ["pcp_watchdog_info"],
                 ["pcp_health_check_stats", "-n", "5"], ["pcp_proc_info", "-P", "1"],
                 ["pcp_promote_node", "-n", "0"], ["pcp_recovery_node", "-n", "0"]):
        a = run(real, *args, real=True)
        b = run(ours, *args, real=True)
        assert (a.returncode, STAMP.sub("T", a.stdout), a.stderr) == \
               (b.returncode, STAMP.sub("T", b.stdout), b.stderr), args
