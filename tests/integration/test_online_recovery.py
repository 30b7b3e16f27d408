"""Online recovery end to end: pcp_recovery_node rebuilds a lost standby with our SQL functions and sample scripts.

One module-scoped cluster of its own (primary + 2 standbys) and one of our pgpools.  The SQL of
sql/pgpool_recovery.sql is loaded into template1 and postgres, and sample/recovery_1st_stage.sample
and sample/pgpool_remote_start.sample are copied into the primary's data directory as pgpool users
install them.  Node 2 is recovered into a new data directory whose path holds a space.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from pgpool.tools.cluster import PgCluster
from tests.harness.clients import pcp, psql_value
from tests.harness.pgpool_process import PgpoolProcess
from tests.harness.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = {  # file in the primary's data directory -> its text
    "recovery_1st_stage": (REPO / "sample" / "recovery_1st_stage.sample").read_text(),
    "pgpool_remote_start": (REPO / "sample" / "pgpool_remote_start.sample").read_text(),
    "print_args": '#!/bin/bash\nprintf "%s\\n" "$@" > "$PWD/print_args.out"\n',
    # fails; first waits (30 s at most) while the file hold_recovery exists in the data directory
    "recovery_fails": '#!/bin/bash\nfor _ in {1..300}; do [ -e hold_recovery ] || break; sleep 0.1; done\n'
                      'echo "recovery_fails: no space left on the target" >&2\nexit 3\n',
}
TARGET = 2


def _install(cluster: PgCluster) -> None:
    """What a pgpool user does on the primary: the SQL functions, the scripts, a replication role."""
    primary = cluster.primary
    sql = cluster.base_dir / "pgpool_recovery.sql"
    shutil.copy(REPO / "sql" / "pgpool_recovery.sql", sql)
    for db in ("template1", "postgres"):
        cluster.runner.run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(primary.socket_dir),
                           "-p", str(primary.port), "-U", "postgres", "-d", db, "-f", str(sql))
    for name, text in SCRIPTS.items():
        path = primary.datadir / name
        path.write_text(text)
        path.chmod(0o755)
        cluster.runner.chown(path)
    primary.psql("CREATE ROLE repl REPLICATION LOGIN")


@pytest.fixture(scope="module")
def cluster():
    base = Path(tempfile.mkdtemp(prefix="pgpool-recovery-", dir="/tmp"))
    cluster = PgCluster.create(base, num_standbys=2)
    try:
        _install(cluster)
        yield cluster
    finally:
        cluster.runner.run("pg_ctl", "-D", str(recovered_dir(cluster)), "stop", "-m", "immediate", check=False)
        cluster.destroy()


def recovered_dir(cluster: PgCluster) -> Path:
    return cluster.base_dir / "node 2 recovered"


@pytest.fixture(scope="module")
def pgpool(cluster):
    pgpool = PgpoolProcess(cluster, {
        "recovery_user": "postgres",
        "recovery_1st_stage_command": "recovery_1st_stage",
        "recovery_timeout": 30,
        f"backend_data_directory{TARGET}": str(recovered_dir(cluster)),
    })
    pgpool.start(timeout=60)
    wait_for(lambda: pcp("pcp_node_count", pgpool).returncode == 0, timeout=15, what="PCP server")
    yield pgpool
    pgpool.cleanup()


def recover(pgpool, node: int, real: bool = False) -> subprocess.CompletedProcess:
    return pcp("pcp_recovery_node", pgpool, "-n", str(node), real=real, timeout=180)


def node_status(pgpool, node: int) -> str:
    """status column of pcp_node_info (up / down / waiting)."""
    out = pcp("pcp_node_info", pgpool, "-n", str(node), check=True).stdout.split()
    return out[4]


def serves(pgpool) -> bool:
    return psql_value("SELECT 1", pgpool.host, pgpool.port) == "1"


def test_sql_functions_quote_arguments_and_name_failing_scripts(cluster):
    primary = cluster.primary
    odd = "/data/it's a \"dir\" $(touch /tmp/pwned) `id` \\n"
    with psycopg.connect(primary.dsn(dbname="template1"), autocommit=True) as conn:
        assert conn.execute("SELECT pgpool_recovery('print_args', %s, %s, '5432', 7, '5433', 'db0')",
                            ("host one", odd)).fetchone() == (True,)
        args = (primary.datadir / "print_args.out").read_text().split("\n")[:-1]
        assert args == [str(primary.datadir), "host one", odd, "5432", "7", "5433", "db0"]
        # the overloads of older pgpool-II releases pass fewer arguments
        conn.execute("SELECT pgpool_recovery('print_args', 'h', 'd', '5432')")
        assert (primary.datadir / "print_args.out").read_text().split() == [str(primary.datadir), "h", "d",
                                                                            "5432"]
        with pytest.raises(psycopg.errors.ExternalRoutineException) as info:
            conn.execute("SELECT pgpool_recovery('recovery_fails', 'h', 'd', '1', 2, '3', 'p')")
        diag = info.value.diag
        assert diag.message_primary == (f'pgpool_recovery failed: script "{primary.datadir}/recovery_fails" '
                                        "failed")
        assert diag.message_detail == "child process exited with exit code 3"
        conn.execute("CREATE ROLE not_super LOGIN")
        try:
            conn.execute("SET ROLE not_super")
            for call in ("pgpool_recovery('print_args', 'h', 'd')", "pgpool_remote_start('h', 'd')"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be superuser to use"):
                    conn.execute(f"SELECT {call}")
        finally:
            conn.execute("RESET ROLE")
            conn.execute("DROP ROLE not_super")
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("node, message", [
    (0, "ERROR:  process recovery request failed\nDETAIL:  primary server cannot be recovered by online "
        "recovery.\n"),
    (1, "ERROR:  node recovery failed, node id: 1 is alive\n"),
    (5, "ERROR:  process recovery request failed\nDETAIL:  node id 5 is not valid\n"),
])
def test_refused_requests(pgpool, node, message):
    ours, real = recover(pgpool, node), recover(pgpool, node, real=True)
    assert (ours.returncode, ours.stdout, ours.stderr) == (1, "", message + "\n")
    assert real.stderr == ours.stderr          # pgpool-II's client prints the same text (and exits 0)
    assert pcp("pcp_node_count", pgpool).stdout == "3\n"   # the PCP server goes on


def test_recovery_of_a_lost_standby(cluster, pgpool):
    node = cluster.nodes[TARGET]
    node.stop("immediate")
    shutil.rmtree(node.datadir)
    assert pcp("pcp_detach_node", pgpool, "-n", str(TARGET)).returncode == 0
    wait_for(lambda: node_status(pgpool, TARGET) == "down", timeout=15, what="node 2 detached")

    result = recover(pgpool, TARGET)
    assert result.returncode == 0, f"{result.stderr}\n{pgpool.log_text()}"
    assert node_status(pgpool, TARGET) in ("up", "waiting")
    assert (recovered_dir(cluster) / "standby.signal").exists()
    assert node.psql("SELECT pg_is_in_recovery()") == "t"
    wait_for(lambda: "node2" in cluster.streaming_standbys(), timeout=30, what="node 2 streaming")
    # the primary's changes arrive, and reads are balanced to the node again
    cluster.primary.psql("CREATE TABLE recovered AS SELECT 42 AS answer")
    wait_for(lambda: node.psql("SELECT to_regclass('recovered') IS NOT NULL") == "t", timeout=30,
             what="the new table replayed on node 2")

    def balanced_to_target() -> bool:
        with pgpool.connect() as conn:
            return conn.execute("SELECT inet_server_port()").fetchone() == (node.port,)
    wait_for(balanced_to_target, timeout=30, interval=0, what="a session balanced to node 2")
    log = pgpool.log_text()
    assert 'starting recovery command: "SELECT pgpool_recovery(\'recovery_1st_stage\'' in log
    assert "recovery done" in log


def test_failing_first_stage_is_reported_and_pgpool_goes_on(cluster, pgpool):
    """The script's failure reaches the pcp client; a second request while it runs is refused."""
    cluster.runner.run("pg_ctl", "-D", str(recovered_dir(cluster)), "stop", "-m", "fast", "-w")
    assert pcp("pcp_detach_node", pgpool, "-n", str(TARGET)).returncode == 0
    wait_for(lambda: node_status(pgpool, TARGET) == "down", timeout=15, what="node 2 detached")
    pgpool.reload(recovery_1st_stage_command="recovery_fails")
    wait_for(lambda: "recovery_fails" in pcp("pcp_pool_status", pgpool).stdout, timeout=15,
             what="reloaded recovery_1st_stage_command")

    hold = cluster.primary.datadir / "hold_recovery"
    hold.touch()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(recover, pgpool, TARGET)
        try:
            wait_for(lambda: "pgpool_recovery('recovery_fails'" in pgpool.log_text(), timeout=15,
                     what="the first recovery running")
            second = recover(pgpool, TARGET)
        finally:
            hold.unlink()
        result = first.result()
    assert (second.returncode, second.stderr) == (
        1, "FATAL:  process recovery request failed\n"
           "DETAIL:  pgpool-II is already processing another recovery request.\n\n")
    assert (result.returncode, result.stderr) == (
        1, 'ERROR:  executing recovery, execution of command failed at "1st stage"\n'
           'DETAIL:  command:"recovery_fails"\n\n')
    assert "recovery_fails: no space left on the target" in cluster.primary.log_text()
    assert node_status(pgpool, TARGET) == "down"
    assert serves(pgpool)
    assert pcp("pcp_node_count", pgpool).stdout == "3\n"

    # nothing is left locked: with the real script the next recovery succeeds
    pgpool.reload(recovery_1st_stage_command="recovery_1st_stage")
    wait_for(lambda: "recovery_fails" not in pcp("pcp_pool_status", pgpool).stdout, timeout=15,
             what="reloaded recovery_1st_stage_command")
    result = recover(pgpool, TARGET)
    assert result.returncode == 0, f"{result.stderr}\n{pgpool.log_text()}"
    wait_for(lambda: "node2" in cluster.streaming_standbys(), timeout=30, what="node 2 streaming again")
    assert serves(pgpool)


# ---- native replication mode: CHECKPOINT, 1st stage, clients gone, CHECKPOINT, 2nd stage ----------

SECOND_STAGE = """#!/bin/bash
# native replication 2nd stage (clients are blocked): a fresh copy of the main node, started as a primary
# $1 main PGDATA  $2 target host  $3 target PGDATA  $4 main port  $5 node id  $6 target port  $7 main host
set -o errexit
rm -rf "$3"
"{bindir}/pg_basebackup" -h "$7" -p "$4" -U postgres -D "$3" -X stream -c fast
echo "port = $6" >> "$3/postgresql.auto.conf"
"""


@pytest.fixture(scope="module")
def native():
    """Two independent primaries with the same data (a promoted standby) under a native-mode pgpool
    whose sessions are not needed: only its PCP server and parent take part."""
    cluster = PgCluster.create(Path(tempfile.mkdtemp(prefix="pgpool-recovery-native-", dir="/tmp")),
                               num_standbys=1)
    pgpool = None
    try:
        cluster.standbys[0].promote()
        _install(cluster)
        scripts = {"native_1st_stage": "#!/bin/bash\ntouch \"$1/native_1st_stage.done\"\n",
                   "native_2nd_stage": SECOND_STAGE.format(bindir=cluster.runner.bindir)}
        for name, text in scripts.items():
            path = cluster.primary.datadir / name
            path.write_text(text)
            path.chmod(0o755)
            cluster.runner.chown(path)
        pgpool = PgpoolProcess(cluster, {
            "backend_clustering_mode": "native_replication", "load_balance_mode": False,
            "sr_check_period": 0, "recovery_user": "postgres", "recovery_timeout": 30,
            "recovery_1st_stage_command": "native_1st_stage",
            "recovery_2nd_stage_command": "native_2nd_stage"})
        pgpool.start(wait=False)
        wait_for(lambda: pcp("pcp_node_count", pgpool).returncode == 0, timeout=30, what="PCP server")
        yield cluster, pgpool
    finally:
        if pgpool is not None:
            pgpool.cleanup()
        cluster.destroy()


def test_native_replication_recovery_runs_both_stages(native):
    cluster, pgpool = native
    node = cluster.nodes[1]
    node.stop("fast")
    shutil.rmtree(node.datadir)
    assert pcp("pcp_detach_node", pgpool, "-n", "1").returncode == 0
    wait_for(lambda: node_status(pgpool, 1) == "down", timeout=15, what="node 1 detached")
    cluster.primary.psql("CREATE TABLE written_while_down AS SELECT 7 AS seven")

    result = recover(pgpool, 1)
    assert result.returncode == 0, f"{result.stderr}\n{pgpool.log_text()}"
    assert node_status(pgpool, 1) in ("up", "waiting")
    assert (cluster.primary.datadir / "native_1st_stage.done").exists()
    assert node.psql("SELECT seven FROM written_while_down") == "7"
    assert node.psql("SELECT pg_is_in_recovery()") == "f"
    log = pgpool.log_text()
    steps = ["node recovery, CHECKPOINT in the 1st stage done", "node recovery, 1st stage is done",
             "node recovery, starting 2nd stage", "node recovery, all connections from clients have been closed",
             "CHECKPOINT in the 2nd stage done", "pgpool_recovery('native_2nd_stage'", "recovery done"]
    positions = [log.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), log
