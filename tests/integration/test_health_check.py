"""Health check, auto_failback and detach_false_primary against real PostgreSQL 15 (and the real pgpool-II).

Process-level tests fork health_check.main() with a real parent Server object over shared memory
made here (this test process stands in for the parent: it receives the SIGUSR1 and reads the
request ring). Whole-pgpool tests start our pgpool; those that kill or promote nodes use this
module's own cluster (primary + 2 standbys; TCP logins of the role hc_user need SCRAM).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from pgpool import log
from pgpool.auth.pool_passwd import PoolPasswd
from pgpool.config import parse_config_text
from pgpool.processes.health_check import main as health_check_main
from pgpool.processes.parent import Server
from pgpool.processes.sr_check import check_once, lsn_to_int, probe_replay_lsns
from pgpool.state import health_stats as hs
from pgpool.state import shm as S
from pgpool.tools.cluster import PgCluster, format_conf, free_ports
from tests.harness.clients import pcp, psql
from tests.harness.pgpool_process import REAL_PGPOOL, PgpoolProcess
from tests.harness.wait import wait_for

HC_USER, HC_PASSWORD = "hc_user", "hc-secret"


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def own():
    """This module's cluster: node0 primary, node1/node2 streaming standbys; trust for every
    login except hc_user over TCP (SCRAM)."""
    cluster = PgCluster.create(Path(f"/tmp/pgpool-hc-{os.getpid()}"), num_standbys=2)
    try:
        cluster.primary.psql(f"CREATE ROLE {HC_USER} LOGIN PASSWORD '{HC_PASSWORD}'")
        for node in cluster.nodes:
            hba = node.datadir / "pg_hba.conf"
            hba.write_text(f"host all {HC_USER} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            node.reload()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def parent_signals():
    """This process stands in for the pgpool parent: SIGUSR1 (a queued request) is counted."""
    got = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    yield got
    signal.signal(signal.SIGUSR1, previous)


# ---- process-level harness -------------------------------------------------------------------

def settings_for(cluster, **extra) -> dict:
    settings = {"backend_clustering_mode": "streaming_replication", "sr_check_user": "postgres",
                "sr_check_period": 1, "health_check_period": 1, "health_check_user": HC_USER,
                "health_check_password": HC_PASSWORD, "health_check_max_retries": 0,
                "health_check_retry_delay": 0, "pool_passwd": "", **cluster.pgpool_backend_settings()}
    settings.update(extra)
    return settings


class Checker:
    """One forked health-check process over shared memory this test owns."""

    def __init__(self, cluster, tmp_path: Path, node: int, statuses: dict | None = None,
                 pool_passwd: str | None = None, **extra):
        self.conf = tmp_path / "pgpool.conf"
        self.settings = settings_for(cluster, **extra)
        if pool_passwd is not None:
            (tmp_path / "pool_passwd").write_text(pool_passwd)
            self.settings["pool_passwd"] = "pool_passwd"
        self.conf.write_text(format_conf(self.settings))
        cfg = parse_config_text(self.conf.read_text(), str(self.conf))
        self.server = Server(cfg, str(self.conf), None, None)
        self.server.pool_passwd = PoolPasswd(tmp_path / "pool_passwd") if pool_passwd is not None else None
        shm = self.shm = self.server.shm = S.SharedState(1, 1, len(cfg.backends))
        for b in cfg.backends:
            shm.set_backend(b.node_id, status=(statuses or {}).get(b.node_id, S.CON_UP),
                            role=S.ROLE_PRIMARY if b.node_id == 0 else S.ROLE_STANDBY)
        shm.header.primary_node_id = 0
        shm.header.parent_pid = os.getpid()
        self.node = node
        self.logfile = tmp_path / f"health_check{node}.log"
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                log.configure(cfg, fd=os.open(self.logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
                code = health_check_main(self.server, node)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            finally:
                os._exit(code)

    @property
    def stats(self):
        return self.shm.health[self.node]

    def log_text(self) -> str:
        return self.logfile.read_text() if self.logfile.exists() else ""

    def requests(self) -> list[tuple[int, int, int]]:
        """Requests queued so far (kind, node, flags), taken off the ring."""
        return [(kind, node, flags) for kind, node, flags, _ in self.shm.pop_requests()]

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 10) -> int:
        def done():
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            return (os.waitstatus_to_exitcode(status),) if pid else None
        return wait_for(done, timeout, 0.05, "health check process exit")[0]

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.fixture
def checkers():
    started: list[Checker] = []

    def start(*args, **kwargs) -> Checker:
        started.append(Checker(*args, **kwargs))
        return started[-1]

    yield start
    for c in started:
        c.stop()


# ---- one process: counting, logins, failures ---------------------------------------------------

def test_scram_login_with_pool_passwd_password_counts_successes(own, tmp_path, checkers):
    # empty health_check_password: the password comes from pool_passwd (as pgpool-II does)
    c = checkers(own, tmp_path, 1, health_check_password="", pool_passwd=f"{HC_USER}:{HC_PASSWORD}\n")
    wait_for(lambda: c.stats.success_count >= 2, 15, what="two successful health checks")
    s = c.stats
    assert s.fail_count == s.skip_count == s.retry_count == 0
    assert s.total_count >= s.success_count >= 2
    assert s.last_successful_health_check >= s.last_health_check - 1 > 0
    assert s.max_duration_ms >= s.min_duration_ms
    row = hs.row(1, "h", 1, "up", "standby", 0, s, 1)
    assert row[16] == hs.timestamp(s.last_health_check) and row[18] == row[19] == ""
    assert "failed" not in c.log_text()
    assert c.requests() == []


def test_wrong_password_retries_then_reports_the_node(own, tmp_path, checkers, parent_signals):
    c = checkers(own, tmp_path, 1, health_check_password="wrong", health_check_max_retries=2)
    wait_for(lambda: c.stats.fail_count >= 1, 15, what="a failed health check")
    assert wait_for(c.requests, 5, what="a request") == [(S.REQ_NODE_DOWN, 1, S.REQ_FLAG_HEALTH_CHECK)]
    wait_for(lambda: parent_signals, 5, what="SIGUSR1 to the parent")
    text = c.log_text()
    assert f'password authentication failed for user "{HC_USER}"' in text
    assert "HINT:  check health_check_user and health_check_password" in text
    for line in ("health check retrying on DB node: 1 (round:1)",
                 "health check retrying on DB node: 1 (round:2)",
                 "health check failed on node 1 (timeout:0)",
                 f"received degenerate backend request for node_id: 1 from pid [{c.pid}]"):
        assert line in text
    s = c.stats
    assert (s.retry_count, s.max_retry_count, s.last_failed_health_check > 0) == (2, 2, True)


def test_disallow_to_failover_node_is_never_reported(own, tmp_path, checkers, parent_signals):
    c = checkers(own, tmp_path, 2, health_check_password="wrong", backend_flag2="DISALLOW_TO_FAILOVER")
    wait_for(lambda: c.stats.fail_count >= 2, 15, what="two failed health checks")
    assert "health check failed on node 2 but failover is disallowed for the node" in c.log_text()
    assert c.requests() == [] and parent_signals == []


def test_timeout_is_reported_as_one_and_asks_for_a_full_restart(own, tmp_path, checkers, parent_signals):
    """A server that accepts and never answers: health_check_timeout ends the attempt."""
    mute = socket.create_server(("127.0.0.1", 0))
    port = mute.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        mute.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(mute.accept()[0])
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        c = checkers(own, tmp_path, 3, backend_hostname3="127.0.0.1", backend_port3=port,
                     health_check_timeout=1)
        got = wait_for(c.requests, 15, what="a request")
        assert got == [(S.REQ_NODE_DOWN, 3, S.REQ_FLAG_HEALTH_CHECK | 512)]   # plan.REQ_FLAG_FULL_RESTART
        text = c.log_text()
        assert "health check failed on node 3 (timeout:1)" in text
        assert "health check timer expired" in text
        assert c.stats.max_duration_ms >= 1000
    finally:
        stop.set()
        t.join()
        for s in held:
            s.close()
        mute.close()


def test_health_check_test_down_request_file(own, tmp_path, checkers, parent_signals):
    down = tmp_path / "backend_down_request"
    down.write_text("1\tdown\n")
    c = checkers(own, tmp_path, 1, health_check_test=True, logdir=str(tmp_path))
    assert wait_for(c.requests, 15, what="a request") == [(S.REQ_NODE_DOWN, 1, S.REQ_FLAG_HEALTH_CHECK)]
    assert "backend_down_request asks node 1 to fail" in c.log_text()
    down.write_text("1\tup\n")
    before = c.stats.success_count
    wait_for(lambda: c.stats.success_count > before, 15, what="a success once the file says up")


def test_down_node_is_skipped_and_auto_failback_is_asked_once(own, tmp_path, checkers, parent_signals):
    c = checkers(own, tmp_path, 1, statuses={1: S.CON_DOWN}, auto_failback=True,
                 auto_failback_interval=60)
    c.shm.backends[1].replication_state = b"streaming"      # as the sr_check worker writes it
    got = wait_for(c.requests, 15, what="an auto failback request")
    assert got == [(S.REQ_NODE_UP, 1, S.REQ_FLAG_AUTO_FAILBACK)]
    assert "request auto failback, node id:1" in c.log_text()
    wait_for(lambda: c.stats.skip_count >= 3, 15, what="more rounds")
    assert c.requests() == []                               # auto_failback_interval holds the next one
    s = c.stats
    assert (s.success_count, s.fail_count, s.total_count >= s.skip_count) == (0, 0, True)


def test_down_node_not_streaming_on_the_primary_is_not_failed_back(own, tmp_path, checkers, parent_signals):
    # shared memory says streaming (stale), the primary's pg_stat_replication has no such name
    c = checkers(own, tmp_path, 1, statuses={1: S.CON_DOWN}, auto_failback=True,
                 backend_application_name1="not_this_one")
    c.shm.backends[1].replication_state = b"streaming"
    wait_for(lambda: c.stats.skip_count >= 2, 15, what="two skipped rounds")
    assert c.requests() == []
    (tmp_path / "plain").mkdir()
    plain = checkers(own, tmp_path / "plain", 2, statuses={2: S.CON_DOWN})
    wait_for(lambda: plain.stats.skip_count >= 1, 15, what="a skipped round")
    assert (plain.stats.success_count, plain.stats.last_skip_health_check > 0) == (0, True)


def test_signals_reload_restart_and_exit(own, tmp_path, checkers):
    c = checkers(own, tmp_path, 1, health_check_period=0, health_check_period1=0)
    time.sleep(1.2)
    assert c.stats.total_count == 0                          # period 0: nothing happens
    c.conf.write_text(format_conf({**c.settings, "health_check_period1": 1}))
    c.signal(signal.SIGHUP)
    wait_for(lambda: c.stats.success_count >= 1, 15, what="a check after the reload")
    c.signal(signal.SIGUSR1)
    assert c.wait_exit() == 1
    assert "health check process received restart request" in c.log_text()
    again = checkers(own, tmp_path, 1)
    wait_for(lambda: again.stats.total_count >= 1, 15, what="a round")
    again.signal(signal.SIGTERM)
    assert again.wait_exit() == 0


# ---- sr_check: WAL positions and the state of down standbys --------------------------------------

def sr_shm(cfg, statuses: dict | None = None) -> S.SharedState:
    shm = S.SharedState(1, 1, len(cfg.backends))
    for b in cfg.backends:
        shm.set_backend(b.node_id, status=(statuses or {}).get(b.node_id, S.CON_UP),
                        role=S.ROLE_PRIMARY if b.node_id == 0 else S.ROLE_STANDBY)
    shm.header.primary_node_id = 0
    return shm


def current_lsn(node) -> int:
    return lsn_to_int(node.psql("SELECT pg_current_wal_lsn()"))


def test_check_once_records_wal_positions_and_down_standby_state(pg_cluster):
    cfg = parse_config_text(format_conf(settings_for(pg_cluster, health_check_user="postgres")), "t.conf")
    shm = sr_shm(cfg, {1: S.CON_DOWN})           # the standby is detached but still streams
    before_lsn, before = current_lsn(pg_cluster.primary), time.time()
    check_once(cfg, shm)
    after_lsn, after = current_lsn(pg_cluster.primary), time.time()
    primary, standby = shm.backends[0], shm.backends[1]
    assert before_lsn <= primary.wal_lsn <= after_lsn and before <= primary.lsn_time <= after
    assert (standby.replication_state, standby.replication_sync_state) == (b"streaming", b"async")
    assert standby.lsn_time == 0                  # a down node is not asked
    shm.backends[1].status = S.CON_UP
    check_once(cfg, shm)
    assert 0 < shm.backends[1].wal_lsn <= current_lsn(pg_cluster.primary)
    assert shm.backends[1].lsn_time > 0


def test_probe_replay_lsns_on_demand(pg_cluster):
    cfg = parse_config_text(format_conf(settings_for(pg_cluster, backend_hostname2="127.0.0.1",
                                                     backend_port2=free_ports(1)[0])), "t.conf")
    shm = sr_shm(cfg)
    shm.backends[2].wal_lsn, shm.backends[2].lsn_time = 77, 1.0
    pg_cluster.primary.psql("CREATE TABLE IF NOT EXISTS hc_probe (i int); INSERT INTO hc_probe VALUES (1)")
    written = current_lsn(pg_cluster.primary)
    standby = pg_cluster.standbys[0]
    wait_for(lambda: lsn_to_int(standby.psql("SELECT pg_last_wal_replay_lsn()")) >= written, 15,
             what="the standby replaying the insert")
    asked = time.time()
    probe_replay_lsns(cfg, shm, [0, 1, 2])
    assert shm.backends[1].wal_lsn >= written and shm.backends[1].lsn_time >= asked
    assert shm.backends[0].wal_lsn >= written
    assert (shm.backends[2].wal_lsn, shm.backends[2].lsn_time) == (77, 1.0)   # unreachable: kept
    pg_cluster.primary.psql("DROP TABLE hc_probe")


# ---- whole pgpool -------------------------------------------------------------------------------

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
FIELD_PATTERNS = [r"\d+", r"\S+", r"\d+", r"up|down|waiting|unused|quarantine", r"primary|standby",
                  TIME] + [r"\d+"] * 5 + [r"\d+\.\d{6}", r"\d+", r"\d+", r"\d+", r"\d+\.\d{6}"] \
                 + [f"(?:{TIME})?"] * 4


def show_rows(pgpool) -> list[list[str]]:
    out = psql("SHOW pool_health_check_stats", pgpool.host, pgpool.port, args=("-X", "-A", "-q", "-F", "|"))
    lines = out.stdout.splitlines()
    assert lines[0].split("|") == list(hs.COLUMNS)
    return [line.split("|") for line in lines[1:-1]]


def shape(row: list[str]) -> list[bool]:
    """Which fields are non-empty; asserts each field has pgpool-II's format."""
    assert len(row) == 20
    for value, pattern in zip(row, FIELD_PATTERNS):
        assert re.fullmatch(pattern, value), (value, pattern, row)
    return [bool(v) for v in row]


def agreeing_views(pgpool, node: int, real_tool: bool):
    """SHOW pool_health_check_stats row and pcp_health_check_stats line taken back to back
    (re-read when a round ran in between)."""
    for _ in range(5):
        row = show_rows(pgpool)[node]
        out = pcp("pcp_health_check_stats", pgpool, "-n", str(node), real=real_tool)
        if out.stdout == " ".join(row) + "\n":
            return row, out
        time.sleep(0.3)
    return row, out


def test_stats_agree_and_look_like_pgpool2(pg_cluster, pgpool_factory):
    overrides = {"health_check_period": 0, "health_check_period1": 1}   # per-node override
    ours = pgpool_factory(overrides)
    wait_for(lambda: int(show_rows(ours)[1][7]) >= 2, 15, what="two checks of node 1")
    rows = show_rows(ours)
    assert rows[0][6:] == ["0", "0", "0", "0", "0", "0.000000", "0", "0", "0", "0.000000", "", "", "", ""]
    for tool in (False, True):              # our pcp_health_check_stats and pgpool-II's, both on our server
        row, out = agreeing_views(ours, 1, tool)
        assert out.stdout == " ".join(row) + "\n" and out.returncode == 0
    bad = pcp("pcp_health_check_stats", ours, "-n", "2", real=True)
    assert "stats data for node ID 2 does not exist" in bad.stderr
    ours_shapes = [shape(r) for r in show_rows(ours)]
    ours.stop()

    if not Path(REAL_PGPOOL[0]).exists():
        pytest.skip("pgpool-II is not installed: nothing to compare the format with")
    real = PgpoolProcess(pg_cluster, overrides, command=REAL_PGPOOL)
    try:
        real.start(timeout=60)
        wait_for(lambda: int(show_rows(real)[1][7]) >= 2, 15, what="two checks by pgpool-II")
        real_rows = show_rows(real)
        assert [shape(r) for r in real_rows] == ours_shapes
        assert real_rows[0][6:] == rows[0][6:]
        real_pcp = pcp("pcp_health_check_stats", real, "-n", "1", real=True)
        assert len(real_pcp.stdout.split(" ")) == len(out.stdout.split(" "))
    finally:
        real.cleanup()


def pool_nodes(pgpool) -> list[list[str]]:
    out = psql("SHOW pool_nodes", pgpool.host, pgpool.port, args=("-X", "-A", "-t", "-q"))
    return [line.split("|") for line in out.stdout.splitlines()]


def node_status(pgpool, node: int) -> str:
    return pool_nodes(pgpool)[node][3]


def test_killed_standby_is_detached(own, pgpool_factory):
    # failover_on_backend_error off: the health check, not a session, must find the dead node
    pgpool = pgpool_factory({"health_check_period": 1, "health_check_max_retries": 1,
                             "health_check_retry_delay": 1, "failover_on_backend_error": False},
                            cluster=own)
    wait_for(lambda: int(show_rows(pgpool)[2][7]) >= 1, 15, what="a check of node 2")
    own.nodes[2].stop("immediate")
    try:
        wait_for(lambda: node_status(pgpool, 2) == "down", 20, what="node 2 down in SHOW pool_nodes")
        row = show_rows(pgpool)[2]
        assert (row[3], row[8], row[10], row[12]) == ("down", "1", "1", "1")   # fail, retry, max retry
        text = pgpool.log_text()
        assert "health check retrying on DB node: 2 (round:1)" in text
        assert "health check failed on node 2 (timeout:0)" in text
        assert [r[3] for r in pool_nodes(pgpool)[:2]] == ["up", "up"]
        with pgpool.connect() as conn:                     # still serving
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        own.nodes[2].start()
        own.wait_streaming()


def log_times(text: str, needle: str) -> list[float]:
    """Unix times of the log lines containing `needle` (default log_line_prefix)."""
    out = []
    for line in text.splitlines():
        if needle in line:
            stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3})", line)
            out.append(time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S"))
                       + int(stamp.group(2)) / 1000)
    return out


def test_auto_failback_reattaches_a_detached_streaming_standby(own, pgpool_factory):
    interval = 4
    pgpool = pgpool_factory({"health_check_period": 1, "sr_check_period": 1, "auto_failback": True,
                             "auto_failback_interval": interval}, cluster=own)
    wait_for(lambda: pool_nodes(pgpool)[1][11] == "streaming", 15, what="node 1 streaming")
    for _ in range(2):
        assert pcp("pcp_detach_node", pgpool, "-n", "1").returncode == 0
        wait_for(lambda: node_status(pgpool, 1) == "down", 10, what="node 1 detached")
        assert pool_nodes(pgpool)[1][11] == "streaming"     # state kept for a down standby
        wait_for(lambda: node_status(pgpool, 1) in ("up", "waiting"), 30, what="node 1 failed back")
    asked = log_times(pgpool.log_text(), "request auto failback, node id:1")
    assert len(asked) == 2 and asked[1] - asked[0] >= interval


def test_promoted_standby_is_detached_as_false_primary(own, pgpool_factory):
    pgpool = pgpool_factory({"sr_check_period": 1, "detach_false_primary": True}, cluster=own)
    wait_for(lambda: pool_nodes(pgpool)[2][11] == "streaming", 15, what="node 2 streaming")
    own.nodes[2].promote()
    try:
        wait_for(lambda: node_status(pgpool, 2) == "down", 20, what="node 2 detached")
        text = pgpool.log_text()
        assert "verify_backend_node_status: primary 2 owns only 0 standbys out of 1" in text
        assert "pgpool_worker_child: invalid node found 2" in text
        nodes = pool_nodes(pgpool)
        assert [(n[3], n[6]) for n in nodes[:2]] == [("up", "primary"), ("up", "standby")]
    finally:
        own.rebuild_standby(2)
        own.wait_streaming()
