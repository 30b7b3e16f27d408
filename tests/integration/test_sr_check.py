"""The streaming-replication check against a real primary + streaming standby: state, delay, logs, signals."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pgpool import log
from pgpool.config import parse_config_text
from pgpool.processes.parent import Server
from pgpool.processes.sr_check import check_once, main
from pgpool.state import shm as S
from pgpool.tools.cluster import format_conf, free_ports
from tests.harness.wait import wait_for as _wait_for

WRITE_ROWS = 5000        # ~5 MB of WAL


def settings_for(cluster, **extra) -> dict:
    settings = {"backend_clustering_mode": "streaming_replication", "sr_check_user": "postgres",
                "sr_check_password": "", "sr_check_database": "postgres", "sr_check_period": 1,
                "pool_passwd": "", **cluster.pgpool_backend_settings()}
    settings.update(extra)
    return settings


def make_config(settings: dict):
    return parse_config_text(format_conf(settings), "sr_check_test.conf")


def make_shm(cfg, primary: int = 0) -> S.SharedState:
    """Shared memory as the parent leaves it after start: every node up, roles set, primary known."""
    shm = S.SharedState(num_children=1, max_pool=1, num_backends=len(cfg.backends))
    for b in cfg.backends:
        shm.set_backend(b.node_id, status=S.CON_UP, weight=b.weight,
                        role=S.ROLE_PRIMARY if b.node_id == primary else S.ROLE_STANDBY)
    shm.header.primary_node_id = primary
    shm.bump()
    return shm


# the shared polling helper, with this file's usual pace
def wait_for(predicate, timeout: float = 30, interval: float = 0.2, what: str = "condition"):
    return _wait_for(predicate, timeout, interval, what)


@pytest.fixture
def log_lines(tmp_path):
    """Send pgpool.log output to a file; yields a function returning the lines written so far."""
    path = tmp_path / "sr_check.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def configure(cfg):
        log.configure(cfg, fd=fd)

    def read() -> list[str]:
        return path.read_text().splitlines()

    read.configure = configure
    yield read
    log.configure(parse_config_text("", "t.conf"), fd=2)
    os.close(fd)


@pytest.fixture
def paused_standby(pg_cluster):
    """The standby with WAL replay paused; replay is resumed (and caught up) afterwards."""
    standby = pg_cluster.standbys[0]
    standby.psql("SELECT pg_wal_replay_pause()")
    wait_for(lambda: standby.psql("SELECT pg_get_wal_replay_pause_state()") == "paused")
    try:
        yield standby
    finally:
        standby.psql("SELECT pg_wal_replay_resume()")
        pg_cluster.primary.psql("DROP TABLE IF EXISTS sr_check_filler")
        lsn = pg_cluster.primary.psql("SELECT pg_current_wal_lsn()")
        wait_for(lambda: standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") == "t")


def test_streaming_standby_state_and_small_delay(pg_cluster):
    cfg = make_config(settings_for(pg_cluster))
    shm = make_shm(cfg)
    generation = shm.header.generation
    check_once(cfg, shm)
    standby = shm.backends[1]
    assert standby.replication_state == b"streaming"
    assert standby.replication_sync_state == b"async"
    assert standby.standby_delay < 1024 * 1024
    primary = shm.backends[0]
    assert (primary.replication_state, primary.replication_sync_state, primary.standby_delay) == (b"", b"", 0)
    assert shm.header.generation > generation


def test_delay_grows_while_replay_is_paused(pg_cluster, paused_standby, log_lines):
    cfg = make_config(settings_for(pg_cluster, log_standby_delay="always"))
    log_lines.configure(cfg)
    shm = make_shm(cfg)
    pg_cluster.primary.psql("CREATE TABLE sr_check_filler AS "
                            f"SELECT repeat('x', 1000) AS pad FROM generate_series(1, {WRITE_ROWS})")
    check_once(cfg, shm)
    delay = shm.backends[1].standby_delay
    # ~1000 bytes of WAL per row, less whatever was replayed before the pause took effect
    assert delay > WRITE_ROWS * 1000 // 2
    assert shm.backends[1].replication_state == b"streaming"    # WAL still arrives, only replay waits
    assert f"Replication of node:1 is behind {delay} bytes from the primary server (node:0)" \
        in "\n".join(log_lines())
    standby = paused_standby
    standby.psql("SELECT pg_wal_replay_resume()")

    def caught_up():
        check_once(cfg, shm)
        return shm.backends[1].standby_delay < delay
    wait_for(caught_up)


def test_threshold_logging_only_over_threshold(pg_cluster, paused_standby, log_lines):
    settings = settings_for(pg_cluster, log_standby_delay="if_over_threshold", delay_threshold=1024)
    cfg = make_config(settings)
    log_lines.configure(cfg)
    shm = make_shm(cfg)
    check_once(cfg, shm)                 # nothing written yet: under the threshold, no line
    assert not [ln for ln in log_lines() if "is behind" in ln]
    pg_cluster.primary.psql("CREATE TABLE sr_check_filler AS "
                            f"SELECT repeat('x', 1000) AS pad FROM generate_series(1, {WRITE_ROWS})")
    check_once(cfg, shm)
    assert [ln for ln in log_lines() if "Replication of node:1 is behind" in ln]


def test_unmatched_application_name_leaves_state_empty(pg_cluster):
    cfg = make_config(settings_for(pg_cluster, backend_application_name1="not_streaming"))
    shm = make_shm(cfg)
    check_once(cfg, shm)
    assert (shm.backends[1].replication_state, shm.backends[1].replication_sync_state) == (b"", b"")
    assert shm.backends[1].standby_delay < 1024 * 1024      # the delay needs no name


def test_unreachable_node_is_skipped_and_logged_once_per_streak(pg_cluster, log_lines):
    dead_port = free_ports(1, avoid={n.port for n in pg_cluster.nodes})[0]
    cfg = make_config(settings_for(pg_cluster, backend_hostname2="127.0.0.1", backend_port2=dead_port,
                                   backend_application_name2="node2"))
    log_lines.configure(cfg)
    shm = make_shm(cfg)
    shm.backends[2].standby_delay = 12345
    failing: set[int] = set()
    check_once(cfg, shm, failing=failing)
    check_once(cfg, shm, failing=failing)
    assert shm.backends[1].replication_state == b"streaming"
    assert (shm.backends[2].replication_state, shm.backends[2].standby_delay) == (b"", 12345)
    failures = [ln for ln in log_lines() if "failed to make persistent db connection" in ln]
    assert len(failures) == 1 and failing == {2}
    assert any(f'connection to host:"127.0.0.1:{dead_port}" failed' in ln for ln in log_lines())


def test_down_primary_or_wrong_mode_measures_nothing(pg_cluster):
    cfg = make_config(settings_for(pg_cluster))
    shm = make_shm(cfg)
    shm.backends[0].status = S.CON_DOWN
    shm.backends[1].standby_delay = 777
    check_once(cfg, shm)
    assert (shm.backends[1].replication_state, shm.backends[1].standby_delay) == (b"", 777)
    raw = make_config(settings_for(pg_cluster, backend_clustering_mode="raw"))
    shm = make_shm(raw)
    generation = shm.header.generation
    check_once(raw, shm)
    assert shm.header.generation == generation and shm.backends[1].replication_state == b""


def test_bad_sr_check_user_does_not_raise(pg_cluster):
    cfg = make_config(settings_for(pg_cluster, sr_check_user="no_such_role"))
    shm = make_shm(cfg)
    check_once(cfg, shm)
    assert shm.backends[1].replication_state == b""


# ---- the process ----------------------------------------------------------------------------

def start_worker(cluster, tmp_path, switching: bool = False, **extra):
    """Fork a child running main() with a real parent Server object; returns (pid, server, conf, log)."""
    conf = tmp_path / "pgpool.conf"
    conf.write_text(format_conf(settings_for(cluster, **extra)))
    cfg = make_config(settings_for(cluster, **extra))
    server = Server(cfg, str(conf), None, None)
    server.shm = make_shm(cfg)
    server.shm.header.switching = int(switching)
    logfile = tmp_path / "worker.log"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            log.configure(cfg, fd=os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            code = main(server)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            os._exit(code)
    return pid, server, conf, logfile


def wait_exit(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_main_exits_promptly_on_shutdown_signals(pg_cluster, tmp_path, sig):
    pid, server, _, _ = start_worker(pg_cluster, tmp_path, sr_check_period=60)
    wait_for(lambda: server.shm.backends[1].replication_state == b"streaming", timeout=10)
    started = time.monotonic()
    os.kill(pid, sig)
    assert wait_exit(pid, timeout=5) == 0
    assert time.monotonic() - started < 2


def test_main_reloads_on_sighup_and_restarts_on_sigusr1(pg_cluster, tmp_path):
    pid, server, conf, logfile = start_worker(pg_cluster, tmp_path, backend_application_name1="nobody")
    try:
        time.sleep(1.5)           # at least one check ran with the unmatched name
        assert server.shm.backends[1].replication_state == b""
        conf.write_text(format_conf(settings_for(pg_cluster)))
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: server.shm.backends[1].replication_state == b"streaming", timeout=10)
        os.kill(pid, signal.SIGUSR1)
        assert wait_exit(pid, timeout=5) == 1
        assert "worker process received restart request" in logfile.read_text()
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_main_skips_checks_while_switching(pg_cluster, tmp_path):
    pid, server, _, _ = start_worker(pg_cluster, tmp_path, switching=True)
    try:
        time.sleep(2)
        assert server.shm.backends[1].replication_state == b""
        server.shm.header.switching = 0
        wait_for(lambda: server.shm.backends[1].replication_state == b"streaming", timeout=10)
    finally:
        os.kill(pid, signal.SIGTERM)
        assert wait_exit(pid, timeout=5) == 0
