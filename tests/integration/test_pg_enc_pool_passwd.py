"""AES pool_passwd end to end: entries written by pgpool-II's pg_enc and by ours, pgpool started with
the key (-k or PGPOOLKEYFILE), clients logging in with SCRAM / md5 / cleartext through pool_hba.conf
against a PostgreSQL that wants SCRAM; a wrong key refuses those users cleanly and keeps serving."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgpool.auth import aes
from tests.harness.rawpg import RawConn, startup_packet

cluster_mod = pytest.importorskip("pgpool.tools.cluster")

REAL_PG_ENC = "/usr/sbin/pg_enc"
ROOT = Path(__file__).resolve().parents[2]
SUPER_PASSWORD = "super pw"
KEY = "e2e pool key"
USERS = {"alice": "alice pw", "bob": "b\u00f6b:pw\\x"}        # user: password in PostgreSQL
POOL_HBA = ("local all all trust\n"
            "host all postgres 127.0.0.1/32 password\n"
            "host all bob 127.0.0.1/32 md5\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")


@pytest.fixture(scope="module")
def scram_cluster():
    try:
        cluster = cluster_mod.PgCluster.create(num_standbys=0, auth="scram-sha-256", password=SUPER_PASSWORD)
    except FileNotFoundError as exc:
        pytest.skip(f"PostgreSQL server binaries are not installed: {exc}")
    try:
        for user, password in USERS.items():
            cluster.primary.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def keys(tmp_path):
    good, wrong = tmp_path / "key", tmp_path / "wrongkey"
    good.write_text(KEY + "\n")
    wrong.write_text("not the key\n")
    good.chmod(0o600)
    wrong.chmod(0o600)
    return good, wrong


def pg_enc(command, conf: Path, key: Path, user: str, password: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([*command, "-m", "-f", str(conf), "-k", str(key), "-u", user, password], check=True,
                   capture_output=True, env=env, stdin=subprocess.DEVNULL, timeout=30)


def start_pgpool(pgpool_factory, cluster, keys, sr_check_password: str, **kwargs):
    """pgpool with AES entries for alice (pgpool-II's pg_enc), bob and postgres (ours)."""
    pgpool = pgpool_factory({"sr_check_password": sr_check_password, "num_init_children": 2}, cluster=cluster,
                            wait=False, pool_hba=POOL_HBA, **kwargs)
    real = [REAL_PG_ENC] if os.path.exists(REAL_PG_ENC) else [sys.executable, "-m", "pgpool.tools.pg_enc"]
    pg_enc(real, pgpool.conf_path, keys[0], "alice", USERS["alice"])
    ours = [sys.executable, "-m", "pgpool.tools.pg_enc"]
    pg_enc(ours, pgpool.conf_path, keys[0], "bob", USERS["bob"])
    pg_enc(ours, pgpool.conf_path, keys[0], "postgres", SUPER_PASSWORD)
    pgpool.wait_ready(password=SUPER_PASSWORD)
    return pgpool


def login(pgpool, user: str, password: str) -> str:
    with psycopg.connect(pgpool.dsn(user=user, password=password), connect_timeout=10) as conn:
        return conn.execute("SELECT current_user").fetchone()[0]


def refusal(pgpool, user: str) -> dict[str, str]:
    """The ErrorResponse pgpool answers a StartupMessage with (before any password exchange)."""
    with RawConn(pgpool.host, pgpool.port) as conn:
        conn.send(startup_packet({"user": user, "database": "postgres"}))
        reply = conn.read_to_close()
    assert reply.kinds() == b"E", reply.messages
    return reply.errors()[0]


def test_entries_from_both_tools_work_with_key_file_option(pgpool_factory, scram_cluster, keys):
    # an AES password in pgpool.conf too: finding the primary needs it decrypted
    pgpool = start_pgpool(pgpool_factory, scram_cluster, keys, aes.encrypt_password(SUPER_PASSWORD, KEY),
                          extra_args=("-k", str(keys[0])))
    lines = (pgpool.workdir / "pool_passwd").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["alice", "bob", "postgres"]
    assert all(line.split(":")[1].startswith("AES") for line in lines)
    assert login(pgpool, "alice", USERS["alice"]) == "alice"        # SCRAM, entry by pgpool-II's pg_enc
    assert login(pgpool, "bob", USERS["bob"]) == "bob"              # md5 from the decrypted password
    assert login(pgpool, "postgres", SUPER_PASSWORD) == "postgres"  # cleartext, compared with it
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        login(pgpool, "alice", "wrong")
    with pytest.raises(psycopg.OperationalError, match="password does not match"):
        login(pgpool, "bob", "wrong")
    assert login(pgpool, "alice", USERS["alice"]) == "alice"        # still serving
    log = pgpool.log_text()
    assert "unable to decrypt" not in log and "could not get the password" not in log
    assert "primary node is 0" in log


def test_wrong_key_refuses_cleanly_and_keeps_serving(pgpool_factory, scram_cluster, keys):
    pgpool = start_pgpool(pgpool_factory, scram_cluster, keys, SUPER_PASSWORD, env={"PGPOOLKEYFILE": str(keys[1])})
    for user in ("alice", "bob"):
        error = refusal(pgpool, user)
        assert (error["S"], error["C"]) == ("FATAL", "28000")
        assert error["D"] == f'pool_passwd file does not contain an entry for "{user}"'
    log = pgpool.log_text()
    assert 'WARNING:  unable to decrypt password from pool_passwd for user "alice"' in log
    assert "decryption failed" in log and "verify the valid pool_key exists" in log
    assert "Traceback" not in log
    # cleartext logins still work: PostgreSQL checks the password pgpool could not
    assert login(pgpool, "postgres", SUPER_PASSWORD) == "postgres"
    assert refusal(pgpool, "alice")["C"] == "28000"
