"""pool_hba.conf method ``pam`` with a real PAM stack: a local test user and a test service file.

The test creates an operating-system user with a password and /etc/pam.d/<service> (pam_unix,
nodelay), runs ours and pgpool-II 4.3 (built with PAM) on the same pool_hba.conf, and removes
both afterwards.  Needs root (useradd, /etc/pam.d, reading /etc/shadow through pam_unix).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import psycopg
import pytest

from pgpool.tools.cluster import PgCluster
from tests.harness.pgpool_process import OUR_PGPOOL, REAL_PGPOOL, PgpoolProcess

PAM_DIR = "/etc/pam.d"
OS_PASSWORD = "pam-Pa55 word"
COMMANDS = {"ours": OUR_PGPOOL, "pgpool-II": REAL_PGPOOL}


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "PAM tests create a system user and a PAM service file: they need root"
    if not all(shutil.which(tool) for tool in ("useradd", "userdel", "chpasswd")):
        return "useradd/userdel/chpasswd are not installed"
    if not os.path.isdir(PAM_DIR):
        return f"{PAM_DIR} does not exist (no Linux-PAM here)"
    try:
        import pam  # noqa: F401
    except ImportError as exc:
        return f"python-pam cannot be imported: {exc}"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture(scope="module")
def os_user():
    """A local user with a password and a PAM service checking local passwords; removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    user, service = f"pgpam{tag}", f"pgpool-test-{tag}"
    service_file = os.path.join(PAM_DIR, service)
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{user}:{OS_PASSWORD}\n", text=True, check=True)
        with open(service_file, "w") as fh:
            fh.write("auth     required pam_unix.so nodelay\naccount  required pam_unix.so\n")
        yield user, service
    finally:
        if os.path.exists(service_file):
            os.unlink(service_file)
        subprocess.run(["userdel", user], check=False)


@pytest.fixture(scope="module")
def cluster(os_user):
    user, _service = os_user
    cluster = PgCluster.create(num_standbys=0)
    try:
        cluster.primary.psql(f"SET password_encryption = 'md5'; CREATE ROLE {user} LOGIN PASSWORD '{OS_PASSWORD}';"
                             "CREATE ROLE pgpam_nosuchosuser LOGIN;")
        node = cluster.primary
        (node.datadir / "pg_hba.conf").write_text("local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
                                                  f"host all {user} 127.0.0.1/32 md5\nhost all all 127.0.0.1/32 trust\n")
        node.reload()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module", params=list(COMMANDS))
def pgpool(request, cluster, os_user):
    user, service = os_user
    hba = (f"local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
           f"host all {user} 127.0.0.1/32 pam pamservice={service}\n"
           f"host all pgpam_nosuchosuser 127.0.0.1/32 pam pamservice={service}\n"
           f"host all pgpam_default_service 127.0.0.1/32 pam\n")
    pgpool = PgpoolProcess(cluster, {"num_init_children": 2}, pool_hba=hba, command=COMMANDS[request.param])
    # pgpool-II logs in to PostgreSQL with pool_passwd only; ours would use the PAM password as well
    pgpool.passwd_path.write_text(f"{user}:TEXT{OS_PASSWORD}\n")
    pgpool.start()
    pgpool.name = request.param
    yield pgpool
    pgpool.cleanup()


def login(pgpool, user: str, password: str) -> str:
    dsn = pgpool.dsn(user=user, password=password, sslmode="disable", gssencmode="disable")
    with psycopg.connect(dsn, connect_timeout=15, autocommit=True) as conn:
        return conn.execute("SELECT current_user").fetchone()[0]


def test_pam_login(pgpool, os_user):
    user, _service = os_user
    assert login(pgpool, user, OS_PASSWORD) == user


@pytest.mark.parametrize("who, password, detail", [
    ("user", "wrong password", "pam_authenticate failed: Authentication failure"),
    ("pgpam_nosuchosuser", "whatever", "pam_authenticate failed: "),
])
def test_pam_refusals(pgpool, os_user, who, password, detail):
    user = os_user[0] if who == "user" else who
    with pytest.raises(psycopg.OperationalError) as info:
        login(pgpool, user, password)
    text = str(info.value)
    assert "FATAL:  failed authentication against PAM" in text
    assert f"DETAIL:  {detail}" in text
    assert login(pgpool, os_user[0], OS_PASSWORD) == os_user[0]      # still serving


def test_missing_service_is_a_clear_error(pgpool):
    """Without /etc/pam.d/pgpool pgpool-II falls back to PAM's "other" service; ours says what is missing."""
    if os.path.exists(os.path.join(PAM_DIR, "pgpool")):
        pytest.skip("/etc/pam.d/pgpool exists on this machine")
    if pgpool.name != "ours":
        pytest.skip("pgpool-II silently uses PAM's 'other' service")
    with pytest.raises(psycopg.OperationalError) as info:
        login(pgpool, "pgpam_default_service", "x")
    assert 'DETAIL:  PAM service "pgpool" is not configured' in str(info.value)
    assert "HINT:  create /etc/pam.d/pgpool" in str(info.value)


def test_pam_password_reaches_postgresql_without_pool_passwd(cluster, os_user):
    """Ours passes the password PAM accepted on to PostgreSQL (md5 here), pool_passwd not needed."""
    user, service = os_user
    hba = f"local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all {user} 127.0.0.1/32 pam pamservice={service}\n"
    pgpool = PgpoolProcess(cluster, {"num_init_children": 2}, pool_hba=hba)
    try:
        pgpool.start()
        assert login(pgpool, user, OS_PASSWORD) == user
    finally:
        pgpool.cleanup()
