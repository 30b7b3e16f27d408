"""The `pgpool` command and its process model: options, pid file, daemon mode, signals, reload,
preforked workers and their limits, pooled connection lifetime, Unix socket, pgpool_status, logging."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from pgpool.tools.cluster import free_ports
from tests.harness.clients import psql_value
from tests.harness.pgpool_process import OUR_PGPOOL, REAL_PGPOOL, PgpoolProcess, repo_env
from tests.harness.wait import wait_for

needs_real_pgpool = pytest.mark.skipif(not Path(REAL_PGPOOL[0]).exists(), reason="pgpool-II (pgpool2) not installed")

# Databases other than postgres: pgpool never keeps connections to "postgres" in its pool.
POOLED_DATABASES = ("srvtest_a", "srvtest_b")
# Processes the parent forks besides the num_init_children workers (PCP, health check... later).
EXTRA_CHILD_PROCESSES = 0
AUX_PROCESS_NAMES = {"pcp_main", "sr_check_worker", "primary_probe", "follow_child"}
PREFIX_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: pid (\d+): ([A-Z0-9]+):  (.*)$")


# -- helpers -----------------------------------------------------------------------------------

def run_pgpool(*args: str, timeout: float = 30, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run our `pgpool` command with ``args``; text output captured."""
    return subprocess.run([*OUR_PGPOOL, *args], capture_output=True, text=True, timeout=timeout, env=repo_env(),
                          cwd=cwd or "/tmp", stdin=subprocess.DEVNULL)


def live(pid: int) -> bool:
    """True if ``pid`` runs (a zombie does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _name(proc) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def child_pids(pid: int) -> set[int]:
    """Live direct children of process ``pid`` that are workers (auxiliary processes such as our
    PCP process, named by the kernel after their role, are left out)."""
    try:
        return {c.pid for c in psutil.Process(pid).children()
                if live(c.pid) and _name(c) not in AUX_PROCESS_NAMES
                and not _name(c).startswith("health_check")}
    except psutil.NoSuchProcess:
        return set()


def rows(conn: psycopg.Connection, sql: str) -> list[dict[str, str]]:
    """Result rows of ``sql`` as dicts keyed by column name."""
    cur = conn.execute(sql)
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def show_value(pgpool: PgpoolProcess, name: str) -> str:
    """PGPOOL SHOW ``name`` in a new session."""
    with pgpool.connect() as conn:
        return conn.execute(f"PGPOOL SHOW {name}").fetchone()[0]


def client_port(conn: psycopg.Connection) -> int:
    """The local TCP port of a client connection."""
    with socket.fromfd(conn.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.getsockname()[1]


def serving_pid(conn: psycopg.Connection, parent: int) -> int:
    """Pid of the worker (child of ``parent``) holding the other end of TCP connection ``conn``."""
    port = client_port(conn)
    for pid in child_pids(parent):
        if any(c.raddr and c.raddr.port == port for c in psutil.Process(pid).net_connections(kind="tcp")):
            return pid
    raise AssertionError(f"no child of {parent} serves client port {port}")


def wait_workers(pgpool: PgpoolProcess, count: int, timeout: float = 15, parent: int | None = None) -> set[int]:
    """Wait until the parent has ``count`` live workers, all listed by SHOW pool_processes; their pids."""
    def settled():
        children = child_pids(parent or pgpool.pid)
        with pgpool.connect() as conn:
            listed = {int(r["pool_pid"]) for r in rows(conn, "SHOW pool_processes")}
        return len(children) == count + EXTRA_CHILD_PROCESSES and listed == children and children
    return wait_for(settled, timeout=timeout, interval=0.2, what=f"{count} registered workers")


def pid_file(pgpool: PgpoolProcess) -> Path:
    return Path(pgpool.settings["pid_file_name"])


def read_pid(path: Path) -> int:
    return int(path.read_text().strip("\0\n "))


def try_read_pid(path: Path) -> int | None:
    """The pid in ``path``; None while it is missing or not written yet."""
    try:
        return read_pid(path)
    except (OSError, ValueError):
        return None


def log_has(pgpool: PgpoolProcess, pattern: str) -> re.Match | None:
    return re.search(pattern, pgpool.log_text(), re.MULTILINE)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def backend_count(node, database: str, application_name: str) -> int:
    """Connections on PostgreSQL ``node`` to ``database`` opened for ``application_name``."""
    return int(node.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                         f"'{database}' AND application_name = '{application_name}'"))


@pytest.fixture
def workdir():
    """A short, empty work directory for a pgpool that needs files before it starts."""
    path = Path(tempfile.mkdtemp(prefix="pgpool-srv-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_pgpool(pgpool_factory):
    """pgpool_factory, then wait until every worker has started (is listed by SHOW pool_processes)."""
    def start(overrides: dict | None = None, **kwargs) -> PgpoolProcess:
        pgpool = pgpool_factory(overrides, **kwargs)
        wait_workers(pgpool, pgpool.settings["num_init_children"])
        return pgpool
    return start


@pytest.fixture(scope="module")
def pooled_databases(pg_cluster):
    """Databases srvtest_a / srvtest_b on the primary, replicated to the standby."""
    primary = pg_cluster.primary
    for name in POOLED_DATABASES:
        if primary.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "0":
            primary.psql(f"CREATE DATABASE {name}")
    for standby in pg_cluster.standbys:
        names = ", ".join(f"'{name}'" for name in POOLED_DATABASES)
        wait_for(lambda: standby.psql(f"SELECT count(*) FROM pg_database WHERE datname IN ({names})")
                 == str(len(POOLED_DATABASES)), timeout=30, what="databases on standby")
    return POOLED_DATABASES


@pytest.fixture
def daemon(pg_cluster):
    """A configured (not started) PgpoolProcess for daemon-mode tests; any daemon left is killed."""
    pgpool = PgpoolProcess(pg_cluster, {"num_init_children": 2})
    pgpool.write_config()
    yield pgpool
    pid = try_read_pid(pid_file(pgpool)) or getattr(pgpool, "daemon_pid", None)
    if pid and live(pid):
        workers = child_pids(pid)
        os.kill(pid, signal.SIGINT)
        try:
            wait_for(lambda: not live(pid), timeout=10)
        except AssertionError:
            for stray in (pid, *workers):
                if live(stray):
                    os.kill(stray, signal.SIGKILL)
    pgpool.cleanup()


# -- command line --------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--version", "-v"])
def test_version(option):
    result = run_pgpool(option)
    assert result.returncode == 0
    assert re.match(r"pgpool-II version 4\.3\.5 \(tamahomeboshi\)", result.stdout + result.stderr)


def test_help_lists_pgpool_options():
    result = run_pgpool("--help")
    out = result.stdout + result.stderr
    assert result.returncode == 0
    assert out.startswith("pgpool-II version 4.3.5 (tamahomeboshi),\n")
    for line in ("  pgpool [ -f CONFIG_FILE ] [ -F PCP_CONFIG_FILE ] [ -a HBA_CONFIG_FILE ] reload",
                 "         [ -m SHUTDOWN-MODE ] stop",
                 "  -n, --dont-detach   Don't run in daemon mode, does not detach control tty",
                 "  -D, --discard-status Discard pgpool_status file and do not restore previous status",
                 "  immediate   the same mode as fast"):
        assert line in out.splitlines()


@needs_real_pgpool
def test_help_matches_pgpool_ii():
    ours = run_pgpool("-h")
    real = subprocess.run([*REAL_PGPOOL, "--help"], capture_output=True, text=True, timeout=10)
    home = os.path.expanduser("~")
    normalize = lambda text: text.replace(home, "~")  # noqa: E731 - pgpool-II expands $HOME in the key file default
    assert normalize(ours.stdout + ours.stderr) == normalize(real.stdout + real.stderr)


@pytest.mark.parametrize("args", [("--bogus",), ("-Z",), ("-n", "--no-such-option")])
def test_unknown_option_exits_1_naming_it(args):
    result = run_pgpool(*args)
    assert result.returncode == 1
    assert args[-1].lstrip("-") in result.stderr


def test_missing_option_argument_exits_1():
    # pgpool-II (getopt): "option requires an argument -- f", usage, exit 1
    result = run_pgpool("-f")
    assert result.returncode == 1, result.stderr
    assert "-f" in result.stderr or "config-file" in result.stderr


def test_unknown_command_word_exits_1():
    # pgpool-II: `pgpool foo` prints its usage and exits 1
    result = run_pgpool("foo")
    assert result.returncode == 1, result.stderr
    assert "pgpool" in result.stderr


def test_bad_shutdown_mode_exits_1(daemon):
    result = run_pgpool("-f", str(daemon.conf_path), "-m", "bogus", "stop")
    assert result.returncode == 1
    assert "bogus" in result.stderr


def test_stop_and_reload_without_a_running_server(daemon):
    stop = run_pgpool("-f", str(daemon.conf_path), "-m", "fast", "stop")
    assert stop.returncode == 3
    assert "could not read pid file" in stop.stderr
    reload = run_pgpool("-f", str(daemon.conf_path), "reload")
    assert reload.returncode != 0
    assert "could not read pid file" in reload.stderr


# -- pid file --------------------------------------------------------------------------------------

def test_foreground_writes_and_removes_pid_file(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 2})
    path = pid_file(pgpool)
    assert read_pid(path) == pgpool.pid
    wait_workers(pgpool, 2)
    assert pgpool.stop(signal.SIGTERM) == 0
    assert not path.exists()


def test_second_instance_refuses_to_start(start_pgpool):
    first = start_pgpool({"num_init_children": 2})
    second = run_pgpool("-n", "-f", str(first.conf_path), "-F", str(first.pcp_conf_path), timeout=20)
    assert second.returncode != 0
    found = re.search(r"pid file found\. is another pgpool\((\d+)\)", second.stdout + second.stderr)
    assert found, second.stderr
    assert int(found.group(1)) == first.pid
    assert first.is_alive()
    assert read_pid(pid_file(first)) == first.pid
    with first.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # its Unix socket was left alone too
    assert psql_value("SELECT 2", str(first.workdir), first.port) == "2"


def test_stale_pid_file_is_replaced(workdir, start_pgpool):
    (workdir / "pgpool.pid").write_text(f"{dead_pid()}\n")
    pgpool = start_pgpool({"num_init_children": 2}, workdir=workdir)
    assert read_pid(workdir / "pgpool.pid") == pgpool.pid
    assert "pid file found but it seems bogus" in pgpool.log_text()
    with pgpool.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- daemon mode -----------------------------------------------------------------------------------

def test_daemon_mode_serves_and_stops(daemon):
    started = time.monotonic()
    result = run_pgpool("-f", str(daemon.conf_path), "-F", str(daemon.pcp_conf_path), timeout=30)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    path = pid_file(daemon)
    pid = wait_for(lambda: try_read_pid(path), what="pid file")
    daemon.daemon_pid = pid
    assert live(pid)
    assert os.getsid(pid) != os.getsid(0), "the daemon must leave our session"
    workers = wait_workers(daemon, 2, parent=pid)
    with daemon.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert serving_pid(conn, pid) in workers
    # the daemon logs to logdir/pgpool.log; `pgpool reload` sends it SIGHUP
    assert "pgpool-II successfully started" in daemon.log_text()
    reload = run_pgpool("-f", str(daemon.conf_path), "reload")
    assert reload.returncode == 0, reload.stderr
    wait_for(lambda: log_has(daemon, r"LOG:  reload config files\."), what="reload logged")
    assert live(pid)

    started = time.monotonic()
    stop = run_pgpool("-f", str(daemon.conf_path), "-m", "fast", "stop", timeout=30)
    assert time.monotonic() - started < 5
    assert stop.returncode == 0, stop.stderr
    assert re.search(rf"stop request sent to pgpool \(pid: {pid}\)\. waiting for termination\.*done\.",
                     stop.stdout + stop.stderr), stop.stderr
    assert not live(pid)
    assert not path.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(daemon.dsn(), connect_timeout=3)


def test_reload_command_sends_sighup(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 1})
    result = run_pgpool("-f", str(pgpool.conf_path), "reload")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: log_has(pgpool, r"LOG:  reload config files\."), what="reload logged")
    assert pgpool.is_alive()


# -- signals -----------------------------------------------------------------------------------------

def test_sigterm_is_smart_shutdown(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 2})
    workers = wait_workers(pgpool, 2)
    client = pgpool.connect()
    assert client.execute("SELECT 1").fetchone() == (1,)
    pgpool.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert pgpool.is_alive(), "smart shutdown must wait for the connected client"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pgpool.dsn(), connect_timeout=2).close()
    assert client.execute("SELECT 2").fetchone() == (2,)
    client.close()
    assert pgpool.proc.wait(10) == 0
    assert not pid_file(pgpool).exists()
    wait_for(lambda: not any(live(pid) for pid in workers), timeout=5, what="workers gone")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["fast", "immediate"])
def test_fast_and_immediate_shutdown_disconnect_clients(start_pgpool, sig):
    pgpool = start_pgpool({"num_init_children": 2})
    workers = wait_workers(pgpool, 2)
    client = pgpool.connect()
    client.execute("SELECT 1")
    started = time.monotonic()
    pgpool.send_signal(sig)
    assert pgpool.proc.wait(10) == 0
    assert time.monotonic() - started < 3
    with pytest.raises(psycopg.OperationalError):
        client.execute("SELECT 1")
    client.close()
    wait_for(lambda: not any(live(pid) for pid in workers), timeout=5, what="workers gone")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pgpool.dsn(), connect_timeout=2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["smart", "fast"])
def test_shutdown_right_after_start(pgpool_factory, sig):
    """A shutdown signal that arrives while the workers are still starting is not lost."""
    pgpool = pgpool_factory({"num_init_children": 4}, wait=False)
    wait_for(lambda: "pgpool-II successfully started" in pgpool.log_text() or not pgpool.is_alive(),
             timeout=30, interval=0.01, what="start logged")
    started = time.monotonic()
    pgpool.send_signal(sig)
    try:
        assert pgpool.proc.wait(5) == 0
    except subprocess.TimeoutExpired:
        workers = sorted(child_pids(pgpool.pid))
        pgpool.stop(signal.SIGKILL)
        pytest.fail(f"pgpool still running {time.monotonic() - started:.1f}s after {sig.name}; workers {workers}")


# -- SIGHUP reload -----------------------------------------------------------------------------------

def test_reload_applies_to_the_next_session(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 1})
    assert show_value(pgpool, "log_statement") == "off"
    time.sleep(0.5)     # the worker is back waiting for a client
    pgpool.reload(log_statement=True)
    wait_for(lambda: log_has(pgpool, r"reload config files\."), what="reload logged")
    time.sleep(0.5)
    # the one worker was idle when the reload came: its very next session uses the new file
    with pgpool.connect() as conn:
        assert conn.execute("PGPOOL SHOW log_statement").fetchone()[0] == "on"
        conn.execute("SELECT 'srvtest reload marker'")
    wait_for(lambda: log_has(pgpool, r"LOG:  statement: SELECT 'srvtest reload marker'"), timeout=3,
             what="statement logged")


def test_reload_client_idle_limit(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 1})
    time.sleep(0.5)     # the worker is back waiting for a client
    pgpool.reload(client_idle_limit=1)
    wait_for(lambda: log_has(pgpool, r"reload config files\."), what="reload logged")
    time.sleep(0.5)
    with pgpool.connect() as conn:
        conn.execute("SELECT 1")
        time.sleep(2.5)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    assert pgpool.is_alive()


def test_reload_log_line_prefix_reaches_workers(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 1})
    pgpool.reload(log_line_prefix="reloaded %p: ", log_statement=True)
    wait_for(lambda: log_has(pgpool, r"reload config files\."), what="reload logged")
    # (the first session after a reload may still see the old file: see test_reload_applies_to_the_next_session)
    wait_for(lambda: show_value(pgpool, "log_line_prefix") == "reloaded %p: ", timeout=5, what="worker reloaded")
    with pgpool.connect() as conn:
        worker = serving_pid(conn, pgpool.pid)
        conn.execute("SELECT 'prefix marker'")
    wait_for(lambda: log_has(pgpool, r"^[^\n]*LOG:  statement: SELECT 'prefix marker'$"), timeout=3,
             what="statement logged")
    assert log_has(pgpool, rf"^reloaded {worker}: LOG:  statement: SELECT 'prefix marker'$"), pgpool.log_text()


def test_reload_restart_only_parameters_keep_their_value(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 1})
    old_port = pgpool.port
    new_port = free_ports(1, avoid={pgpool.port, pgpool.pcp_port})[0]
    pgpool.reload(num_init_children=2, port=new_port)
    wait_for(lambda: log_has(pgpool, r"num_init_children.*restart") and log_has(pgpool, r'"port".*restart'),
             what="restart needed logged")
    time.sleep(0.5)
    for _ in range(3):     # every session of the (only) worker, before and after its own reload
        assert show_value(pgpool, "num_init_children") == "1"
        assert show_value(pgpool, "port") == str(old_port)
    assert len(child_pids(pgpool.pid)) == 1 + EXTRA_CHILD_PROCESSES
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pgpool.dsn().replace(f"port={old_port}", f"port={new_port}"), connect_timeout=2)


def test_reload_with_broken_config_keeps_serving(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 2, "log_statement": False})
    workers = child_pids(pgpool.pid)
    pgpool.reload(num_init_children="abc", log_statement=True)
    wait_for(lambda: log_has(pgpool, r"ERROR:  .*num_init_children.*abc"), what="config error logged")
    time.sleep(0.5)
    for _ in range(4):
        assert show_value(pgpool, "num_init_children") == "2"
        assert show_value(pgpool, "log_statement") == "off"
    assert pgpool.is_alive()
    assert child_pids(pgpool.pid) == workers


# -- workers ------------------------------------------------------------------------------------------

def test_num_init_children_workers_and_respawn(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 3})
    workers = wait_workers(pgpool, 3)
    assert not any(psutil.Process(pid).children() for pid in workers)
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for(lambda: (pids := child_pids(pgpool.pid)) and victim not in pids and len(pids) == 3 and pids,
                        timeout=5, what="worker respawned")
    assert len(replaced - workers) == 1
    assert pgpool.is_alive()
    assert wait_workers(pgpool, 3) == replaced


def test_child_max_connections(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 1, "child_max_connections": 2})
    served_by = []
    for _ in range(6):
        with pgpool.connect() as conn:
            served_by.append(serving_pid(conn, pgpool.pid))
    runs = [len(list(group)) for _, group in itertools.groupby(served_by)]
    # each worker serves 2 sessions, then a fresh one takes over (the harness's check used the first)
    assert len(set(served_by)) == len(runs), served_by
    assert runs[0] in (1, 2) and all(n == 2 for n in runs[1:-1]) and runs[-1] <= 2, served_by
    assert len(runs) >= 3, served_by
    wait_workers(pgpool, 1)


def test_child_life_time(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 1, "child_life_time": 2})
    with pgpool.connect() as conn:
        worker = serving_pid(conn, pgpool.pid)
    idle_from = time.monotonic()
    time.sleep(1)
    assert worker in child_pids(pgpool.pid), "replaced before child_life_time"
    wait_for(lambda: worker not in child_pids(pgpool.pid) and len(child_pids(pgpool.pid)) == 1,
             timeout=6, what="worker replaced")
    assert time.monotonic() - idle_from >= 1.5
    with pgpool.connect() as conn:
        assert serving_pid(conn, pgpool.pid) != worker


# -- the connection pool ------------------------------------------------------------------------------

def test_connection_life_time(pg_cluster, start_pgpool, pooled_databases):
    pgpool = start_pgpool({"num_init_children": 1, "connection_life_time": 1})
    app = "srvtest-life"
    with pgpool.connect(dbname="srvtest_a", application_name=app) as conn:
        conn.execute("SELECT 1")
    # kept in the pool right after the client left...
    assert backend_count(pg_cluster.primary, "srvtest_a", app) == 1
    closed_from = time.monotonic()
    # ...and closed once idle for connection_life_time
    wait_for(lambda: backend_count(pg_cluster.primary, "srvtest_a", app) == 0, timeout=5, interval=0.2,
             what="pooled connection closed")
    assert time.monotonic() - closed_from >= 0.5
    for node in pg_cluster.standbys:
        assert backend_count(node, "srvtest_a", app) == 0


def test_pooled_connection_is_reused(pg_cluster, start_pgpool, pooled_databases):
    pgpool = start_pgpool({"num_init_children": 1, "load_balance_mode": False})
    app = "srvtest-reuse"
    backend_pids = []
    for _ in range(2):
        with pgpool.connect(dbname="srvtest_a", application_name=app) as conn:
            backend_pids.append(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
    assert backend_pids[0] == backend_pids[1]
    assert backend_count(pg_cluster.primary, "srvtest_a", app) == 1


def test_max_pool_evicts_the_oldest_slot(pg_cluster, start_pgpool, pooled_databases):
    pgpool = start_pgpool({"num_init_children": 1, "max_pool": 1})
    app = "srvtest-maxpool"
    primary = pg_cluster.primary
    with pgpool.connect(dbname="srvtest_a", application_name=app) as conn:
        conn.execute("SELECT 1")
    assert backend_count(primary, "srvtest_a", app) == 1
    with pgpool.connect(dbname="srvtest_b", application_name=app) as conn:
        worker = serving_pid(conn, pgpool.pid)
        pools = [r for r in rows(conn, "SHOW pool_pools") if int(r["pool_pid"]) == worker]
        assert {r["pool_id"] for r in pools} == {"0"}
        assert {r["database"] for r in pools} == {"srvtest_b"}
    wait_for(lambda: backend_count(primary, "srvtest_a", app) == 0, timeout=3, what="srvtest_a slot evicted")
    assert backend_count(primary, "srvtest_b", app) == 1


# -- Unix socket -----------------------------------------------------------------------------------------

def test_unix_socket(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 2})
    socket_path = pgpool.workdir / f".s.PGSQL.{pgpool.port}"
    assert socket_path.is_socket()
    assert psql_value("SELECT 'via socket'", str(pgpool.workdir), pgpool.port) == "via socket"
    with psycopg.connect(pgpool.dsn(via_socket=True), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.host == str(pgpool.workdir)
    assert pgpool.stop() == 0
    assert not socket_path.exists()


# -- pgpool_status ------------------------------------------------------------------------------------------

def node_statuses(pgpool: PgpoolProcess) -> dict[str, str]:
    with pgpool.connect() as conn:
        return {r["node_id"]: r["status"] for r in rows(conn, "SHOW pool_nodes")}


def test_pgpool_status_restores_down_node(workdir, start_pgpool):
    (workdir / "pgpool_status").write_text("up\ndown\n")
    pgpool = start_pgpool({"num_init_children": 2}, workdir=workdir)
    assert node_statuses(pgpool) == {"0": "up", "1": "down"}


def test_discard_status_option(workdir, start_pgpool):
    (workdir / "pgpool_status").write_text("up\ndown\n")
    pgpool = start_pgpool({"num_init_children": 2}, workdir=workdir, extra_args=("-D",))
    statuses = node_statuses(pgpool)
    assert statuses["0"] == "up"
    assert statuses["1"] in ("up", "waiting")
    assert (workdir / "pgpool_status").read_text().split() == ["up", "up"]


def test_garbage_pgpool_status(workdir, start_pgpool):
    (workdir / "pgpool_status").write_bytes(bytes(range(256)) * 4)
    pgpool = start_pgpool({"num_init_children": 2}, workdir=workdir)
    assert node_statuses(pgpool) == {"0": "up", "1": "up"}
    assert log_has(pgpool, r"WARNING:  .*pgpool_status")


# -- logging --------------------------------------------------------------------------------------------------

def test_log_line_prefix_and_connection_logging(start_pgpool):
    pgpool = start_pgpool({"num_init_children": 2, "log_line_prefix": "%t: pid %p: ",
                             "log_connections": True, "log_disconnections": True})
    with pgpool.connect(dbname="postgres") as conn:
        conn.execute("SELECT 1")
        worker = serving_pid(conn, pgpool.pid)
        port = client_port(conn)
    wait_for(lambda: log_has(pgpool, rf"pid {worker}: LOG:  frontend disconnection: .* port={port}$"), timeout=5,
             what="disconnection logged")
    text = pgpool.log_text()
    lines = text.splitlines()
    assert not [line for line in lines if not PREFIX_RE.match(line)]
    started = [PREFIX_RE.match(line) for line in lines if "pgpool-II successfully started" in line]
    assert [int(m.group(1)) for m in started] == [pgpool.pid]
    assert re.search(rf"pid {worker}: LOG:  new connection received\n[^\n]*pid {worker}: DETAIL:  "
                     rf"connecting host=127\.0\.0\.1 port={port}\n", text), text
    assert re.search(rf"pid {worker}: LOG:  frontend disconnection: session time: \d+:\d\d:\d\d\.\d\d\d "
                     rf"user=postgres database=postgres host=127\.0\.0\.1 port={port}\n", text), text
