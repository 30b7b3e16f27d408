"""The test harness itself: local clusters stream, survive reuse and restore, and a pgpool runs under it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from pgpool.tools.cluster import PgCluster, free_ports
from tests.harness.clients import pcp, pgbench, pgbench_tps, psql_value
from tests.harness.pgpool_process import REAL_PGPOOL, PgpoolProcess, PgpoolStartError
from tests.harness.wait import wait_for

needs_real_pgpool = pytest.mark.skipif(not Path(REAL_PGPOOL[0]).exists(), reason="pgpool-II (pgpool2) not installed")


@pytest.fixture
def scratch_dir():
    base = Path(os.environ.get("TMPDIR", "/tmp"))
    path = base / f"pgpool-scratch-{os.getpid()}-{time.monotonic_ns()}"
    yield path
    if (path / "cluster.json").exists():
        PgCluster.load(path, start=False).destroy()


def test_primary_and_standby_roles(pg_cluster):
    assert pg_cluster.primary.psql("SELECT pg_is_in_recovery()") == "f"
    assert [node.psql("SELECT pg_is_in_recovery()") for node in pg_cluster.standbys] == ["t"]
    assert len({node.port for node in pg_cluster.nodes}) == 2


def test_standby_streams_with_its_application_name(pg_cluster):
    rows = pg_cluster.primary.psql("SELECT application_name, state FROM pg_stat_replication")
    assert rows == "node1|streaming"
    assert pg_cluster.standbys[0].psql("SELECT status FROM pg_stat_wal_receiver") == "streaming"


def test_write_on_primary_is_visible_on_standby(pg_cluster):
    primary, standby = pg_cluster.primary, pg_cluster.standbys[0]
    primary.psql("DROP TABLE IF EXISTS harness_t; CREATE TABLE harness_t (v text); "
                 "INSERT INTO harness_t VALUES ('hello')")
    assert wait_for(lambda: standby.psql("SELECT to_regclass('harness_t') IS NOT NULL") == "t"
                    and standby.psql("SELECT v FROM harness_t")) == "hello"
    with pytest.raises(Exception, match="read-only transaction"):
        standby.psql("INSERT INTO harness_t VALUES ('no')")


def test_nodes_accept_tcp_clients(pg_cluster):
    for node in pg_cluster.nodes:
        with psycopg.connect(node.dsn(), connect_timeout=5) as conn:
            assert conn.execute("SELECT current_setting('port')::int").fetchone()[0] == node.port
        assert psql_value("SELECT 42", node.host, node.port) == "42"


def test_pgbench_helper_against_primary(pg_cluster):
    node = pg_cluster.primary
    pgbench(["-i", "-s", "1", "-q"], node.host, node.port)
    out = pgbench(["-S", "-c", "2", "-T", "2"], node.host, node.port).stdout
    assert pgbench_tps(out) > 0


def test_stop_load_reuses_cluster(scratch_dir):
    cluster = PgCluster.create(scratch_dir, num_standbys=1)
    cluster.primary.psql("CREATE TABLE kept AS SELECT 7 AS v")
    ports = [node.port for node in cluster.nodes]
    cluster.stop()
    assert not any(node.is_running() for node in cluster.nodes)

    reused = PgCluster.build_or_load(scratch_dir, num_standbys=1)
    assert [node.port for node in reused.nodes] == ports
    assert all(node.is_running() for node in reused.nodes)
    assert reused.primary.psql("SELECT v FROM kept") == "7"
    assert reused.streaming_standbys() == ["node1"]
    with pytest.raises(FileExistsError):
        PgCluster.create(scratch_dir)


def test_load_moves_a_port_taken_meanwhile(scratch_dir):
    import socket
    cluster = PgCluster.create(scratch_dir, num_standbys=1)
    cluster.stop()
    old_port = cluster.primary.port
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        reused = PgCluster.load(scratch_dir)
    assert reused.primary.port != old_port
    assert reused.streaming_standbys() == ["node1"]


def test_promote_then_restore(scratch_dir):
    cluster = PgCluster.create(scratch_dir, num_standbys=1)
    standby = cluster.standbys[0]
    standby.promote()
    assert standby.psql("SELECT pg_is_in_recovery()") == "f"
    assert cluster.streaming_standbys() == []
    cluster.restore()
    assert standby.psql("SELECT pg_is_in_recovery()") == "t"
    assert cluster.streaming_standbys() == ["node1"]


@pytest.mark.parametrize("auth", ["md5", "scram-sha-256"])
def test_password_auth_cluster(scratch_dir, auth):
    cluster = PgCluster.create(scratch_dir, num_standbys=1, auth=auth, password="s3cret")
    node = cluster.primary
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"host=127.0.0.1 port={node.port} user=postgres dbname=postgres password=wrong",
                        connect_timeout=5)
    with psycopg.connect(node.dsn(), connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    assert node.psql("SHOW password_encryption") == auth
    assert cluster.streaming_standbys() == ["node1"]


def test_three_node_cluster(pg_cluster3):
    assert pg_cluster3.streaming_standbys() == ["node1", "node2"]
    assert pg_cluster3.pgpool_backend_settings()["backend_application_name2"] == "node2"


def test_pgpool_process_config(pg_cluster):
    pgpool = PgpoolProcess(pg_cluster, {"num_init_children": 7, "health_check_period": None})
    try:
        pgpool.write_config()
        conf = pgpool.conf_path.read_text()
        assert "num_init_children = 7\n" in conf
        assert "health_check_period" not in conf
        assert f"backend_port1 = {pg_cluster.standbys[0].port}\n" in conf
        assert f"port = {pgpool.port}\n" in conf
        assert "backend_flag0 = 'ALLOW_TO_FAILOVER'\n" in conf
        assert pgpool.argv()[-4:] == ["-f", str(pgpool.conf_path), "-F", str(pgpool.pcp_conf_path)]
    finally:
        pgpool.cleanup()


def test_pgpool_start_failure_reports_log(pg_cluster):
    pgpool = PgpoolProcess(pg_cluster, command=(sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"))
    try:
        with pytest.raises(PgpoolStartError, match="(?s)exited with 3.*boom"):
            pgpool.start(timeout=10)
    finally:
        pgpool.cleanup()


@needs_real_pgpool
def test_harness_runs_real_pgpool(pgpool_factory, pg_cluster):
    pgpool = pgpool_factory(command=REAL_PGPOOL)
    with pgpool.connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
        nodes = conn.execute("SHOW pool_nodes").fetchall()
    assert len(nodes) == 2
    count = pcp("pcp_node_count", pgpool, real=True, check=True)
    assert count.stdout.strip() == "2"
    pid = pgpool.pid
    assert pgpool.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@needs_real_pgpool
def test_devrun_with_real_pgpool(scratch_dir):
    port, pcp_port = free_ports(2)
    proc = subprocess.Popen([sys.executable, "-m", "pgpool.tools.devrun", "--dir", str(scratch_dir),
                             "--port", str(port), "--pcp-port", str(pcp_port), "--pgpool", REAL_PGPOOL[0]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        def answers():
            try:
                return psql_value("SELECT 1", "127.0.0.1", port) == "1"
            except subprocess.CalledProcessError:
                return False
        wait_for(answers, timeout=60, interval=0.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"psql -h 127.0.0.1 -p {port} -U postgres postgres" in out
    cluster = PgCluster.load(scratch_dir, start=False)
    assert not any(node.is_running() for node in cluster.nodes)
    assert "backend_clustering_mode = 'streaming_replication'" in (scratch_dir / "pgpool.conf").read_text()
