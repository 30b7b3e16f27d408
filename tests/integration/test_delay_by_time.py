"""delay_threshold_by_time against a real lagging standby: replay_lag decides where reads go.

Own cluster: a primary and one standby that applies commits only after recovery_min_apply_delay,
while a writer commits on the primary all along, so pg_stat_replication.replay_lag is real and
seconds long (the standby's application_name is its backend_application_name). Every node but
the standby has weight 0, so a read leaves the standby only because of its delay.
"""

from __future__ import annotations

import re
import threading

import psycopg
import pytest

from pgpool import log
from pgpool.config import parse_config_text
from pgpool.processes.sr_check import check_once
from pgpool.state import shm as S
from pgpool.tools.cluster import format_conf
from tests.harness.clients import pcp, psql_value
from tests.harness.wait import wait_for
from tests.harness.backends import scratch_cluster

APPLY_DELAY_S = 8           # recovery_min_apply_delay of the standby
WRITE_PAUSE_S = 0.3         # between two commits of the writer
READ = "SELECT current_setting('cluster_name')"     # "node0" primary, "node1" standby


@pytest.fixture(scope="module")
def cluster():
    # the primary ignores recovery_min_apply_delay; the standby reports replay every second
    with scratch_cluster("delay-by-time", 1, {"recovery_min_apply_delay": f"{APPLY_DELAY_S}s",
                                              "wal_receiver_status_interval": "1s"},
                         "CREATE TABLE ticks (at timestamptz)") as c:
        yield c


@pytest.fixture(scope="module")
def lagging(cluster):
    """A writer commits on the primary until the module ends; yields once replay_lag > 2 s."""
    stop = threading.Event()

    def write():
        with psycopg.connect(cluster.primary.dsn(), autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO ticks VALUES (now())")
                stop.wait(WRITE_PAUSE_S)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        wait_for(lambda: cluster.primary.psql(
            "SELECT coalesce(replay_lag > interval '2 seconds', false) FROM pg_stat_replication "
            "WHERE application_name = 'node1'") == "t",
            timeout=APPLY_DELAY_S + 20, interval=0.5, what="replay_lag over 2 s")
        yield cluster
    finally:
        stop.set()
        writer.join(10)


def read_node(pgpool) -> str:
    return psql_value(READ, pgpool.host, pgpool.port)


def test_sr_check_stores_replay_lag_in_microseconds(lagging, tmp_path):
    settings = {"backend_clustering_mode": "streaming_replication", "sr_check_user": "postgres",
                "sr_check_database": "postgres", "sr_check_period": 1, "pool_passwd": "",
                "log_standby_delay": "always", "delay_threshold_by_time": 1,
                **lagging.pgpool_backend_settings()}
    cfg = parse_config_text(format_conf(settings), "t.conf")
    shm = S.SharedState(num_children=1, max_pool=1, num_backends=2)
    for node, role in ((0, S.ROLE_PRIMARY), (1, S.ROLE_STANDBY)):
        shm.set_backend(node, status=S.CON_UP, role=role, weight=1.0)
    shm.header.primary_node_id = 0
    logfile = tmp_path / "sr_check.log"
    with logfile.open("w") as out:
        log.configure(cfg, fd=out.fileno())
        try:
            check_once(cfg, shm)
            by_time = (shm.backends[1].standby_delay, shm.backends[1].standby_delay_by_time)
            # the same lag in bytes once delay_threshold_by_time is 0 again
            check_once(parse_config_text(format_conf({**settings, "delay_threshold_by_time": 0}),
                                         "t.conf"), shm)
        finally:
            log.configure(parse_config_text("", "t.conf"), fd=2)
    delay, flag = by_time
    assert flag == 1 and 2_000_000 < delay < (APPLY_DELAY_S + 30) * 1_000_000
    assert shm.backends[1].standby_delay_by_time == 0 and shm.backends[1].standby_delay > 0
    assert (shm.backends[0].standby_delay, shm.backends[1].replication_state) == (0, b"streaming")
    seconds = f"{delay // 1_000_000}.{delay % 1_000_000:06d}"
    assert (f"Replication of node: 1 is behind {seconds} second(s) from the primary server "
            f"(node: 0)") in logfile.read_text()


def test_reads_leave_a_standby_whose_replay_lag_is_over_the_threshold(lagging, pgpool_factory):
    pgpool = pgpool_factory({"backend_weight0": 0, "backend_weight1": 1, "sr_check_period": 1,
                             "log_standby_delay": "always"}, cluster=lagging)
    # no threshold: the lag is not looked at, reads stay on the standby
    assert read_node(pgpool) == "node1"

    pgpool.reload(delay_threshold_by_time=1)
    wait_for(lambda: read_node(pgpool) == "node0", timeout=15, interval=0.3,
             what="reads on the primary with delay_threshold_by_time = 1s")
    wait_for(lambda: "Replication of node: 1 is behind " in pgpool.log_text(), timeout=10,
             what="the delay logged in seconds")
    # SHOW pool_nodes: seconds, as pgpool-II 4.4 shows them
    with pgpool.connect() as conn:
        delays = [row[10] for row in conn.execute("SHOW pool_nodes").fetchall()]
    assert delays[0] == "0" and re.fullmatch(r"\d+\.\d{6} seconds?", delays[1]), delays
    assert float(delays[1].split()[0]) > 1, delays
    # pcp_node_info of pgpool-II 4.3 (its NodeInfo layout) prints the delay in microseconds
    out = pcp("pcp_node_info", pgpool, "-n", "1", real=True, check=True).stdout.split()
    assert int(out[8]) > 1_000_000, out

    # a threshold above the lag: back on the standby, even though delay_threshold (bytes)
    # alone would refuse it -- the time threshold replaces it
    pgpool.reload(delay_threshold_by_time=600, delay_threshold=1)
    wait_for(lambda: read_node(pgpool) == "node1", timeout=15, interval=0.3,
             what="reads on the standby with delay_threshold_by_time = 10min")

    # by time off again: delay_threshold (1 byte) rules and the byte lag sends reads away
    pgpool.reload(delay_threshold_by_time=0)
    wait_for(lambda: read_node(pgpool) == "node0", timeout=15, interval=0.3,
             what="reads on the primary with delay_threshold = 1")
