"""The shipped samples at work: failover.sh / follow_primary.sh really promote and re-point standbys,
pcp.conf / pool_hba.conf parse and are accepted, with pgpool-II 4.3 and with ours.

The failover test builds its own primary + 2 standbys (it kills and promotes nodes), installs the
two scripts as the documentation says (copy, chmod 755), points failover_command /
follow_primary_command at them with the documented %-escapes and kills the primary with
`pg_ctl -m immediate stop`.  Then kills the remaining standby to see the standby branch of
failover.sh (its replication slot is dropped).  The cluster is rebuilt between cases.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from pgpool.auth.hba import parse_hba_text
from pgpool.config.files import parse_pcp_conf
from pgpool.tools.cluster import PgCluster, find_bindir
from tests.conftest import phase_failed
from tests.harness.clients import pcp, psql_value
from tests.harness.pgpool_process import OUR_PGPOOL, REAL_PGPOOL, PgpoolProcess
from tests.harness.wait import wait_for

SAMPLES = Path(__file__).resolve().parents[2] / "sample"
FAILOVER_ESCAPES = "%d %h %p %D %m %H %M %P %r %R %N %S"
FOLLOW_ESCAPES = "%d %h %p %D %m %H %M %P %r %R"
REAL_PCP_BIN = "/usr/sbin"
HAVE_REAL = Path(REAL_PGPOOL[0]).exists()

NEEDS_REAL = pytest.mark.skipif(not HAVE_REAL, reason="pgpool-II (/usr/sbin/pgpool) is not installed")
IMPLEMENTATIONS = [pytest.param(REAL_PGPOOL, id="pgpool-II", marks=NEEDS_REAL), pytest.param(OUR_PGPOOL, id="ours")]
# (pgpool, how follow_primary.sh re-syncs the standby): pg_basebackup is forced by turning
# full_page_writes off on the standby that becomes the new primary (pg_rewind then refuses).
FAILOVER_CASES = [
    pytest.param(REAL_PGPOOL, "pg_rewind", id="pgpool-II-pg_rewind", marks=NEEDS_REAL),
    pytest.param(REAL_PGPOOL, "pg_basebackup", id="pgpool-II-pg_basebackup", marks=NEEDS_REAL),
    pytest.param(OUR_PGPOOL, "pg_rewind", id="ours-pg_rewind"),
]
RESYNC_LOG = {
    "pg_rewind": "follow_primary.sh: node 2: pg_rewind done",
    "pg_basebackup": "follow_primary.sh: node 2: pg_rewind failed: taking a new base backup with pg_basebackup",
}


# ---- the files themselves ---------------------------------------------------------------------

@pytest.mark.parametrize("script, escapes, count", [
    ("failover.sh.sample", FAILOVER_ESCAPES, 12),
    ("follow_primary.sh.sample", FOLLOW_ESCAPES, 10),
], ids=["failover", "follow_primary"])
def test_script_documents_its_arguments(script, escapes, count):
    text = (SAMPLES / script).read_text()
    subprocess.run(["bash", "-n", str(SAMPLES / script)], check=True)
    install_line = re.search(r"^#\s+\w+_command = '\S+ (.*)'$", text, re.MULTILINE).group(1)
    assert install_line == escapes
    documented = re.findall(r"^#\s+(\d+)\s+(%\w)\s", text, re.MULTILINE)
    assert [int(n) for n, _ in documented] == list(range(1, count + 1))
    assert " ".join(esc for _, esc in documented) == escapes


@pytest.mark.parametrize("script, args, status, output", [
    ("failover.sh.sample", ["0", "127.0.0.1", "1", "/nonexistent", "-1", "", "0", "0", "", "", "127.0.0.1", "1"],
     0, "failover.sh: end: no node is left, nothing to promote"),
    ("failover.sh.sample", ["0", "127.0.0.1", "1", "/d0", "1", "127.0.0.1", "0", "0", "2", "", "127.0.0.1", "1"],
     1, "failover.sh: end: backend_data_directory1 is not set in pgpool.conf: cannot promote"),
    ("follow_primary.sh.sample", ["1", "127.0.0.1", "1", "/nonexistent", "1", "127.0.0.1", "0", "0", "1", "/x"],
     0, "follow_primary.sh: node 1: end: nothing to do (new primary: 1)"),
    ("follow_primary.sh.sample", ["2", "127.0.0.1", "1", "/nonexistent", "1", "127.0.0.1", "0", "0", "2", "/x"],
     0, "follow_primary.sh: node 2: end: PostgreSQL does not run on 127.0.0.1:1, skipped (use pcp_recovery_node)"),
], ids=["failover-no-node-left", "failover-no-data-directory", "follow-is-new-primary", "follow-node-not-running"])
def test_script_cases_without_a_server(script, args, status, output):
    """Branches that touch no server: the exit status and the last line say what happened."""
    env = {"PATH": "/usr/bin:/bin", "PGBIN": str(find_bindir())}
    done = subprocess.run(["bash", str(SAMPLES / script), *args], capture_output=True, text=True, env=env,
                          timeout=30)
    assert done.returncode == status, done
    assert done.stdout.splitlines()[-1] == output


def test_pool_hba_sample_parses_with_our_parser():
    text = (SAMPLES / "pool_hba.conf.sample").read_text()
    hba = parse_hba_text(text, "pool_hba.conf")
    assert [(r.conn_type, r.method) for r in hba.rules] == [("local", "trust"), ("host", "trust"), ("host", "trust")]
    assert hba.warnings == []
    # the commented examples are valid lines too
    block = text.split("# Examples:\n", 1)[1].split("#\n", 1)[0]
    examples = [line[1:] for line in block.splitlines()]
    assert len(examples) == 4
    parsed = parse_hba_text("\n".join(examples), "examples")
    assert [r.method for r in parsed.rules] == ["scram-sha-256", "md5", "md5", "reject"]
    assert parsed.rules[2].hostname == ".internal.example.com"


def test_pcp_conf_sample_parses_with_our_parser():
    text = (SAMPLES / "pcp.conf.sample").read_text()
    assert parse_pcp_conf(text) == []
    example = re.search(r"^# (pgpool:[0-9a-f]{32})$", text, re.MULTILINE).group(1)
    assert parse_pcp_conf(text + example + "\n") == [("pgpool", hashlib.md5(b"secret").hexdigest())]


@pytest.mark.parametrize("command", IMPLEMENTATIONS)
def test_conf_samples_accepted_by_pgpool(pgpool_factory, tmp_path, command):
    """pgpool starts with the sample pool_hba.conf and pcp.conf; the hba lines admit local clients,
    the pcp.conf gains a user by appending a line (read at each PCP login)."""
    pcp_conf = tmp_path / "pcp.conf"
    shutil.copy(SAMPLES / "pcp.conf.sample", pcp_conf)
    pgpool = pgpool_factory({}, pool_hba=(SAMPLES / "pool_hba.conf.sample").read_text(),
                            extra_args=("-F", str(pcp_conf)), command=command)
    assert psql_value("SELECT 1", pgpool.host, pgpool.port) == "1"
    assert psql_value("SELECT 2", str(pgpool.workdir), pgpool.port) == "2"
    before = pcp("pcp_node_count", pgpool, real=True)
    assert before.stdout.strip() != "2"
    with pcp_conf.open("a") as fh:
        fh.write(f"{pgpool.pcp_user}:{hashlib.md5(pgpool.pcp_password.encode()).hexdigest()}\n")
    after = pcp("pcp_node_count", pgpool, real=True)
    assert after.stdout.strip() == "2", after


# ---- failover.sh and follow_primary.sh ---------------------------------------------------------

@pytest.fixture(scope="module")
def failover_cluster():
    """Primary + 2 standbys of this module only (the tests kill and promote its nodes), with
    full_page_writes on so that pg_rewind can work."""
    base = Path(tempfile.mkdtemp(prefix="pgpool-samples-failover-", dir="/tmp"))
    cluster = PgCluster.create(base, num_standbys=2, settings={"full_page_writes": "on"})
    yield cluster
    cluster.destroy()


def reshape(cluster) -> None:
    """Node 0 a running primary, nodes 1 and 2 standbys streaming from it (rebuilt if not), all
    with full_page_writes on."""
    cluster.primary.start()
    streaming = set(cluster.streaming_standbys())
    for node in cluster.standbys:
        if node.application_name not in streaming:
            cluster.rebuild_standby(node.node_id)
        elif node.psql("SHOW full_page_writes") == "off":
            node.psql("ALTER SYSTEM RESET full_page_writes")
            node.reload()
    cluster.wait_streaming()


@pytest.fixture
def scripted_pgpool(request, failover_cluster):
    """A pgpool on failover_cluster whose failover_command / follow_primary_command are the samples,
    installed in its work directory; the scripts get their settings from the environment."""
    reshape(failover_cluster)
    started: list[PgpoolProcess] = []

    def start(command) -> PgpoolProcess:
        workdir = Path(tempfile.mkdtemp(prefix="pgpool-samples-", dir="/tmp"))
        for name in ("failover.sh", "follow_primary.sh"):
            shutil.copy(SAMPLES / f"{name}.sample", workdir / name)
            (workdir / name).chmod(0o755)
        env = {
            "PGBIN": str(find_bindir()),
            "REPL_USER": "postgres",
            "PGPOOL_BIN": REAL_PCP_BIN,
            "PCP_HOST": "127.0.0.1",
            "PCPPASSFILE": str(workdir / ".pcppass"),
            "PG_START_LOG": str(failover_cluster.base_dir / "follow_primary.log"),
        }
        pgpool = PgpoolProcess(failover_cluster, {
            "health_check_period": 1,
            "health_check_max_retries": 0,
            "health_check_timeout": 5,
            "failover_command": f"{workdir}/failover.sh {FAILOVER_ESCAPES}",
            "search_primary_node_timeout": 60,
        }, workdir=workdir, command=command, env=env)
        started.append(pgpool)
        # the PCP port is picked when the process object is made; hand it to the script in its command
        pgpool.set(follow_primary_command=f"PCP_PORT={pgpool.pcp_port} PCP_USER={pgpool.pcp_user} "
                                          f"{workdir}/follow_primary.sh {FOLLOW_ESCAPES}")
        return pgpool.start()

    yield start
    failed = phase_failed(request)
    for pgpool in started:
        pgpool.stop()
        if failed:
            print(f"\n===== pgpool log ({pgpool.workdir}) =====\n{pgpool.log_text()}")
            follow_log = failover_cluster.base_dir / "follow_primary.log"
            if follow_log.exists():
                print(f"===== {follow_log} =====\n{follow_log.read_text(errors='replace')[-4000:]}")
            for node in failover_cluster.nodes:
                print(f"===== {node.name} log (tail) =====\n{node.log_text()[-3000:]}")
        shutil.rmtree(pgpool.workdir, ignore_errors=True)


def pool_nodes(pgpool: PgpoolProcess) -> dict[str, dict] | None:
    """SHOW pool_nodes through pgpool, by node_id (None while pgpool does not answer)."""
    try:
        with psycopg.connect(pgpool.dsn(), autocommit=True, connect_timeout=3, row_factory=dict_row) as conn:
            return {row["node_id"]: row for row in conn.execute("SHOW pool_nodes").fetchall()}
    except psycopg.Error:
        return None


def states(nodes: dict[str, dict] | None) -> dict[str, tuple[str, str, str]]:
    """node_id -> (status, role, replication_state)."""
    return {k: (v["status"], v["role"], v["replication_state"]) for k, v in (nodes or {}).items()}


@pytest.mark.parametrize("command, resync", FAILOVER_CASES)
def test_failover_and_follow_primary_samples(scripted_pgpool, failover_cluster, command, resync):
    cluster = failover_cluster
    node0, node1, node2 = cluster.nodes
    if resync == "pg_basebackup":
        node1.psql("ALTER SYSTEM SET full_page_writes = off")
        node1.reload()
    pgpool = scripted_pgpool(command)
    wait_for(lambda: states(pool_nodes(pgpool)).get("2", ("",) * 3)[2] == "streaming", timeout=20,
             what="pgpool sees node 2 streaming")
    assert [s[:2] for s in states(pool_nodes(pgpool)).values()] == [("up", "primary"), ("up", "standby"),
                                                                     ("up", "standby")]

    node0.stop("immediate")

    # failover.sh promotes node 1; follow_primary.sh re-points node 2 at it and attaches it again
    wanted = {"0": ("down", "standby"), "1": ("up", "primary"), "2": ("up", "standby")}
    wait_for(lambda: {k: v[:2] for k, v in states(pool_nodes(pgpool)).items()} == wanted, timeout=60,
             what=f"pool_nodes {wanted}")
    assert not node1.in_recovery()
    assert node2.in_recovery()
    slot = f"127_0_0_1_{node2.port}"
    assert node1.psql("SELECT application_name, state FROM pg_stat_replication") == f"{node2.application_name}|streaming"
    assert node1.psql(f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'") == "t"
    assert node2.psql("SELECT sender_port FROM pg_stat_wal_receiver") == str(node1.port)
    wait_for(lambda: states(pool_nodes(pgpool))["2"][2] == "streaming", timeout=20,
             what="pgpool sees node 2 streaming from node 1")
    with pgpool.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS samples_after_failover")
        conn.execute("CREATE TABLE samples_after_failover AS SELECT 42 AS answer")
    assert node1.psql("SELECT answer FROM samples_after_failover") == "42"
    log = pgpool.log_text()
    assert "failover.sh: end: node 1 is the new primary" in log
    assert "follow_primary.sh: node 2: end: the node follows the new primary and is attached" in log
    assert "follow_primary.sh: node 0: end: PostgreSQL does not run" in log
    assert RESYNC_LOG[resync] in log

    # a standby fails: failover.sh leaves the primary alone and drops the standby's slot
    node2.stop("immediate")
    wait_for(lambda: states(pool_nodes(pgpool)).get("2", ("",))[0] == "down", timeout=30, what="node 2 down")
    wait_for(lambda: node1.psql(f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'") == "0",
             timeout=20, what=f"slot {slot} dropped")
    assert not node1.in_recovery()
    assert states(pool_nodes(pgpool))["1"][:2] == ("up", "primary")
    assert "failover.sh: end: standby node 2 is down, the primary stays" in pgpool.log_text()
