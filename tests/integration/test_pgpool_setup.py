"""pgpool_setup: argument handling and generated files (tables), and a real run: build two nodes in
an empty directory, start them with startall, query pgpool (SHOW pool_nodes, PCP), shutdownall."""

import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pgpool.config import load_config
from pgpool.tools import pgpool_setup as ps
from pgpool.tools.cluster import find_bindir, port_is_free
from tests.harness.clients import psql
from tests.harness.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
OURS = [sys.executable, "-m", "pgpool.tools.pgpool_setup"]
REAL_PCP_NODE_COUNT = "/usr/sbin/pcp_node_count"


@pytest.mark.parametrize("argv, environ, expected", [
    ([], {}, ps.Options()),
    (["-m", "r", "-n", "3", "-p", "12000"], {}, ps.Options(mode="r", num_clusters=3, base_port=12000)),
    (["-m", "n", "-pg", "13000", "--no-stop", "-d", "-e", "-t"], {},
     ps.Options(mode="n", pg_base_port=13000, no_stop=True, debug=True, no_pg=True, test=True)),
    (["-m", "i"], {"BASEPORT": "15000", "NUMCLUSTERS": "4", "ENABLE_TEST": "true"},
     ps.Options(mode="i", base_port=15000, num_clusters=4, test=True)),
    (["-p", "16000"], {"BASEPORT": "15000"}, ps.Options(base_port=16000)),
])
def test_parse_args(argv, environ, expected):
    assert ps.parse_args(argv, environ) == expected


@pytest.mark.parametrize("argv, message", [
    (["-m", "x"], ""), (["--help"], ""), (["-o"], ""), (["bogus"], ""),
    (["-m"], "option -m needs a value"), (["-n", "two"], '-n: "two" is not a number'),
    (["-n", "0"], "the number of clusters (-n) must be at least 1"),
    (["-m", "l"], "logical replication mode is not supported by this pgpool_setup"),
    (["-m", "y"], "slony mode is not supported by this pgpool_setup"),
    (["-s"], "replication slots (-s) are not supported by this pgpool_setup"),
    (["-r"], "pg_rewind (-r) is not supported by this pgpool_setup"),
    (["-c"], "testing RPM sample files (-c) is not supported by this pgpool_setup"),
])
def test_parse_args_refusals(argv, message):
    with pytest.raises(ps.UsageError) as info:
        ps.parse_args(argv, {})
    assert str(info.value) == message


def layout(tmp_path, **options) -> ps.Layout:
    return ps.Layout(tmp_path, ps.Options(**options), Path("/pg/bin"), "pgpool", "runuser -u postgres --")


@pytest.mark.parametrize("options, ports", [
    ({}, (11000, 11001, [11002, 11003])),
    ({"base_port": 20000, "num_clusters": 3}, (20000, 20001, [20002, 20003, 20004])),
    ({"base_port": 20000, "pg_base_port": 30000, "num_clusters": 1}, (20000, 20001, [30000])),
])
def test_ports(tmp_path, options, ports):
    lay = layout(tmp_path, **options)
    assert (lay.pgpool_port, lay.pcp_port, lay.pg_ports) == ports
    assert ps.readme_port_text(lay).splitlines()[-2:] == [f"pgpool port is {ports[0]}", f"pcp port is {ports[1]}"]


@pytest.mark.parametrize("mode, clustering_mode, has_failover", [
    ("s", "streaming_replication", True), ("r", "native_replication", False), ("n", "raw", False),
    ("i", "snapshot_isolation", False),
])
def test_pgpool_conf_is_valid_for_each_mode(tmp_path, mode, clustering_mode, has_failover):
    lay = layout(tmp_path, mode=mode, test=True)
    (tmp_path / "pgpool.conf").write_text(ps.pgpool_conf_text(lay))
    cfg = load_config(str(tmp_path / "pgpool.conf"))
    assert cfg.backend_clustering_mode == clustering_mode
    assert [(b.hostname, b.port, b.data_directory) for b in cfg.backends] == [
        ("localhost", 11002, str(tmp_path / "data0")), ("localhost", 11003, str(tmp_path / "data1"))]
    assert (cfg.port, cfg.pcp_port, cfg.logdir) == (11000, 11001, str(tmp_path / "log"))
    assert cfg.pid_file_name == str(tmp_path / "run" / "pgpool.pid")
    assert cfg.health_check_test is True and cfg.sr_check_user == "postgres"
    assert bool(cfg.failover_command) is has_failover


def test_scripts(tmp_path):
    lay = layout(tmp_path, num_clusters=2, debug=True)
    start, stop = ps.startall_text(lay), ps.shutdownall_text(lay)
    assert start.startswith("#!/bin/sh\n") and f"dir={tmp_path}\n" in start
    assert "AS_POSTGRES='runuser -u postgres --'" in start
    assert start.index('-D "$dir/data0"') < start.index('-D "$dir/data1"') < start.index("$PGPOOL -d -D -n")
    assert stop.index("$PGPOOL -f") < stop.index('-D "$dir/data1" -m f stop') < stop.index('-D "$dir/data0" -m f')
    assert '$PGPOOL -f "$dir/etc/pgpool.conf" reload' in ps.reload_text(lay)
    assert "promote" in ps.failover_text(lay)


def test_refuses_a_directory_that_is_not_empty(tmp_path):
    (tmp_path / "something").write_text("")
    proc = subprocess.run(OURS, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1
    assert proc.stdout.endswith("Current directory is not empty. Please remove files and directories then "
                                "try again.\n")


def consecutive_free_ports(count: int) -> int:
    # below the ephemeral range (32768-): there, connections in TIME_WAIT (a pgbench -C run
    # leaves thousands) occupy every other port
    for _ in range(500):
        base = random.randrange(10000, 32000)
        if all(port_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no run of free ports")


@pytest.fixture
def setup_dir():
    """An empty directory PostgreSQL (as postgres) can reach, with short socket paths."""
    path = Path(tempfile.mkdtemp(prefix="pgsetup-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    if (path / "shutdownall").exists():
        subprocess.run([str(path / "shutdownall")], capture_output=True, timeout=120)
    shutil.rmtree(path, ignore_errors=True)


def test_two_nodes_start_serve_and_stop(setup_dir):
    try:
        find_bindir()
    except FileNotFoundError as exc:
        pytest.skip(f"PostgreSQL server binaries are not installed: {exc}")
    base = consecutive_free_ports(4)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([*OURS, "-n", "2", "-p", str(base)], cwd=setup_dir, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Starting set up in streaming replication mode" in out
    assert "(2 rows)" in out                                     # SHOW pool_nodes while it ran
    assert out.endswith(f"#1 port is {base + 2}\n#2 port is {base + 3}\npgpool port is {base}\n"
                        f"pcp port is {base + 1}\nThe info above is in README.port.\n")
    for name in ("data0", "data1", "etc/pgpool.conf", "etc/pcp.conf", "etc/pool_hba.conf", "etc/pool_passwd",
                 "startall", "shutdownall", "pgpool_reload", "pcppass", "README.port", "bashrc.ports"):
        assert (setup_dir / name).exists(), name
    assert not (setup_dir / "run" / "pgpool.pid").exists()      # everything was stopped again

    subprocess.run([str(setup_dir / "startall")], check=True, capture_output=True, timeout=120)

    def pool_nodes():
        result = psql("SHOW pool_nodes", "localhost", base, dbname="test", check=False)
        return result.returncode == 0 and [line.split("|") for line in result.stdout.splitlines()]
    rows = wait_for(pool_nodes, timeout=30, interval=0.5, what="pgpool answering after startall")
    assert [(r[0], r[2], r[3], r[6]) for r in rows] == [("0", str(base + 2), "up", "primary"),
                                                        ("1", str(base + 3), "up", "standby")]
    psql("CREATE TABLE t (i int); INSERT INTO t VALUES (1)", "localhost", base, dbname="test")
    wait_for(lambda: psql("SELECT count(*) FROM t", "localhost", base + 3, dbname="test",
                          check=False).stdout.strip() == "1", timeout=30, what="the standby replaying the insert")
    if os.path.exists(REAL_PCP_NODE_COUNT):
        pcp = subprocess.run([REAL_PCP_NODE_COUNT, "-h", "localhost", "-p", str(base + 1), "-U", "postgres", "-w"],
                             capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, PCPPASSFILE=str(setup_dir / "pcppass")))
        assert (pcp.returncode, pcp.stdout) == (0, "2\n"), pcp.stderr

    subprocess.run([str(setup_dir / "shutdownall")], check=True, capture_output=True, timeout=120)
    assert not (setup_dir / "run" / "pgpool.pid").exists()
    assert psql("SELECT 1", "localhost", base, check=False).returncode != 0
    assert psql("SELECT 1", "localhost", base + 2, check=False).returncode != 0
