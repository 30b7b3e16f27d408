"""TLS through pgpool with real clients: psql (sslmode=require / verify-full), psycopg, pgbench.

A primary + standby running with ssl = on (certificate from a test CA made by pgpool.tools.certs)
and a pg_hba.conf that accepts the test users over SSL only -- so every successful query also
proves that pgpool spoke TLS to PostgreSQL and verified its certificate against ssl_ca_cert.
pool_hba.conf mixes hostssl / hostnossl / cert / scram-sha-256 lines; the same checks run against
pgpool-II 4.3 where it has the feature (ours adds SCRAM-SHA-256-PLUS).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import ssl
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from pgpool.tools import certs
from pgpool.tools.cluster import PgCluster
from tests.harness import rawpg
from tests.harness.clients import pgbench, psql
from tests.harness.pgpool_process import OUR_PGPOOL, REAL_PGPOOL, PgpoolProcess
from tests.harness.wait import wait_for

PASSWORD = "tls pass"
COMMANDS = {"ours": OUR_PGPOOL, "pgpool-II": REAL_PGPOOL}
USERS = ("sslonly", "plainonly", "certuser", "anyuser")

POOL_HBA = """\
local     all  all                     trust
hostssl   all  certuser   127.0.0.1/32 cert
hostssl   all  sslonly    127.0.0.1/32 scram-sha-256
hostnossl all  sslonly    127.0.0.1/32 reject
hostnossl all  plainonly  127.0.0.1/32 md5
hostssl   all  plainonly  127.0.0.1/32 reject
host      all  postgres   127.0.0.1/32 trust
host      all  anyuser    127.0.0.1/32 scram-sha-256
"""


@pytest.fixture(scope="module")
def pki():
    directory = Path(tempfile.mkdtemp(prefix="pgpool-tls-"))
    directory.chmod(0o755)
    pki = certs.make_pki(directory)
    pg = pwd.getpwnam("postgres")
    # PostgreSQL's own certificate (its key must belong to the postgres user)
    pki.pg_server = certs.issue(pki.ca, "localhost", server_names=certs.SERVER_NAMES).write(
        directory, "pg-server", owner=(pg.pw_uid, pg.pw_gid))
    for user in ("certuser", "sslonly"):
        pki.client(user)
    pki.other_ca = certs.make_ca("untrusted CA").write(directory, "other-ca")
    pki.client("intruder", ca=pki.other_ca)
    os.rename(directory / "client-intruder.crt", directory / "client-certuser-untrusted.crt")
    os.rename(directory / "client-intruder.key", directory / "client-certuser-untrusted.key")
    yield pki
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(pki):
    settings = {"ssl": "on", "ssl_cert_file": str(pki.pg_server.cert_path),
                "ssl_key_file": str(pki.pg_server.key_path)}
    cluster = PgCluster.create(num_standbys=1, settings=settings)
    try:
        cluster.primary.psql("SET password_encryption = 'scram-sha-256';"
                             + "".join(f"CREATE ROLE {u} LOGIN PASSWORD '{PASSWORD}';" for u in USERS))
        hba = ("local all all trust\nlocal replication all trust\nhost all postgres 127.0.0.1/32 trust\n"
               "hostssl all all 127.0.0.1/32 scram-sha-256\n")    # test users: SSL only, towards PostgreSQL too
        for node in cluster.nodes:
            (node.datadir / "pg_hba.conf").write_text(hba)
            node.reload()
        pgbench(["-i", "-s", "1", "-q"], "127.0.0.1", cluster.primary.port)
        cluster.primary.psql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO anyuser")
        wait_for(lambda: cluster.standbys[0].psql("SELECT count(*) FROM pg_class WHERE relname = 'pgbench_branches'")
                 == "1", timeout=30, what="pgbench tables on the standby")
        yield cluster
    finally:
        cluster.destroy()


def start(cluster, pki, command, wait: bool = True, **settings) -> PgpoolProcess:
    pgpool = PgpoolProcess(cluster, {"num_init_children": 4, **pki.pgpool_settings(), **settings},
                           pool_hba=POOL_HBA, command=command)
    pgpool.passwd_path.write_text("".join(f"{u}:TEXT{PASSWORD}\n" for u in USERS))
    pgpool.passwd_path.chmod(0o600)
    return pgpool.start(wait=wait)


@pytest.fixture(scope="module", params=list(COMMANDS))
def pgpool(request, cluster, pki):
    pgpool = start(cluster, pki, COMMANDS[request.param])
    pgpool.name = request.param
    yield pgpool
    pgpool.cleanup()


def conninfo(pki, user: str, sslmode: str, host: str = "127.0.0.1", cert: str | None = None, **extra) -> str:
    parts = {"host": host, "user": user, "dbname": "postgres", "sslmode": sslmode, "gssencmode": "disable",
             "sslrootcert": str(pki.ca.cert_path), **extra}
    if cert:
        parts.update(sslcert=str(pki.directory / f"client-{cert}.crt"), sslkey=str(pki.directory / f"client-{cert}.key"))
    return " ".join(f"{k}='{v}'" for k, v in parts.items())


def run_psql(pgpool, pki, user: str, sslmode: str, sql: str = "SELECT current_user", **kw):
    return psql(sql, "127.0.0.1" if kw.get("host") is None else kw["host"], pgpool.port, user=user,
                dbname=conninfo(pki, user, sslmode, **kw), password=PASSWORD, check=False)


def connect(pgpool, pki, user: str, sslmode: str, **kw) -> psycopg.Connection:
    return psycopg.connect(conninfo(pki, user, sslmode, **kw), port=pgpool.port, password=PASSWORD,
                           connect_timeout=10, autocommit=True)


# ---- client side: sslmode, certificates, hostssl / hostnossl ---------------------------------------

@pytest.mark.parametrize("sslmode, host", [("require", "127.0.0.1"), ("verify-ca", "127.0.0.1"),
                                           ("verify-full", "localhost"), ("verify-full", "127.0.0.1")])
def test_psql_over_tls(pgpool, pki, sslmode, host):
    proc = run_psql(pgpool, pki, "sslonly", sslmode, "\\conninfo", host=host)
    assert proc.returncode == 0, proc.stderr
    assert "SSL connection (protocol: TLSv1." in proc.stdout


def test_verify_full_rejects_an_untrusted_server(pgpool, pki):
    proc = run_psql(pgpool, pki, "sslonly", "verify-full", host="localhost",
                    sslrootcert=str(pki.other_ca.cert_path))
    assert proc.returncode != 0
    assert "certificate verify failed" in proc.stderr


@pytest.mark.parametrize("user, sslmode, ok, detail", [
    ("sslonly", "require", True, None),
    ("sslonly", "disable", False, 'no pool_hba.conf entry for host "127.0.0.1", user "sslonly", database "postgres", '
                                  "SSL off"),
    ("plainonly", "disable", True, None),           # pgpool speaks TLS to PostgreSQL (hostssl there) anyway
    ("plainonly", "require", False, 'no pool_hba.conf entry for host "127.0.0.1", user "plainonly", '
                                    'database "postgres", SSL on'),
])
def test_hostssl_and_hostnossl(pgpool, pki, user, sslmode, ok, detail):
    proc = run_psql(pgpool, pki, user, sslmode)
    if ok:
        assert proc.returncode == 0 and proc.stdout.strip() == user, proc.stderr
    else:
        assert proc.returncode != 0
        assert detail in proc.stderr


@pytest.mark.parametrize("cert, ok, message", [
    ("certuser", True, None),
    ("sslonly", False, "CERT authentication failed"),          # valid certificate, CN of another user
    (None, False, "CERT authentication failed"),               # no certificate
    ("certuser-untrusted", False, ""),                         # CN right, signed by an unknown CA
])
def test_cert_authentication(pgpool, pki, cert, ok, message):
    proc = run_psql(pgpool, pki, "certuser", "require", cert=cert)
    if ok:
        assert proc.returncode == 0 and proc.stdout.strip() == "certuser", proc.stderr
        assert 'SSL certificate authentication for user "certuser" with Pgpool-II is successful' in pgpool.log_text()
    else:
        assert proc.returncode != 0
        assert message in proc.stderr


def test_channel_binding(pgpool, pki):
    """libpq's channel_binding=require needs SCRAM-SHA-256-PLUS: ours offers it over TLS."""
    if pgpool.name != "ours":
        pytest.skip("pgpool-II 4.3 offers SCRAM-SHA-256 only")
    with connect(pgpool, pki, "sslonly", "require", channel_binding="require") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("sslonly",)
    with pytest.raises(psycopg.OperationalError, match="channel binding"):
        connect(pgpool, pki, "plainonly", "disable", channel_binding="require")


# ---- server side: TLS to PostgreSQL, large replies, pgbench ----------------------------------------

def test_backend_connections_use_tls(pgpool, pki):
    with connect(pgpool, pki, "anyuser", "require") as conn:
        for sql in ("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    "/*NO LOAD BALANCE*/ SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"):
            assert conn.execute(sql).fetchone() == (True,)


@pytest.mark.parametrize("sslmode", ["require", "disable"])
def test_large_results_and_copy(pgpool, pki, sslmode):
    """Records larger than one TLS record (16 kB), many rows, COPY both ways, pipelined queries."""
    user = "anyuser"
    with connect(pgpool, pki, user, sslmode) as conn:
        assert conn.execute("SELECT length(repeat('x', 1000000))").fetchone() == (1000000,)
        assert conn.execute("SELECT repeat('y', 300000)").fetchone()[0] == "y" * 300000
        rows = conn.execute("SELECT g, md5(g::text) FROM generate_series(1, 50000) g").fetchall()
        assert len(rows) == 50000 and rows[-1][0] == 50000
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE t (a int, b text)")
            with conn.cursor().copy("COPY t FROM STDIN") as copy:
                for i in range(20000):
                    copy.write_row((i, "z" * 50))
            with conn.cursor().copy("COPY t TO STDOUT") as copy:
                assert sum(1 for _ in copy.rows()) == 20000
        with conn.pipeline():
            results = [conn.execute("SELECT %s::int", (i,)) for i in range(200)]
        assert [r.fetchone()[0] for r in results] == list(range(200))


def test_pgbench_over_tls(pgpool, pki, cluster):
    proc = pgbench(["-S", "-C", "-c", "2", "-t", "25", "-n"], "127.0.0.1", pgpool.port, user="anyuser",
                   dbname=conninfo(pki, "anyuser", "require"), password=PASSWORD)
    assert "number of transactions actually processed: 50/50" in proc.stdout


# ---- ssl_min_protocol_version / ssl_max_protocol_version (ours only: pgpool-II 4.3 has neither) ----

def test_protocol_version_limits(cluster, pki):
    pgpool = start(cluster, pki, OUR_PGPOOL, ssl_min_protocol_version="TLSv1.3")
    try:
        proc = run_psql(pgpool, pki, "sslonly", "require", "\\conninfo")
        assert proc.returncode == 0 and "SSL connection (protocol: TLSv1.3" in proc.stdout, proc.stderr
        proc = run_psql(pgpool, pki, "sslonly", "require", ssl_max_protocol_version="TLSv1.2")
        assert proc.returncode != 0 and "SSL error" in proc.stderr and "protocol version" in proc.stderr
        assert "pool_ssl: SSL handshake with client 127.0.0.1 failed" in pgpool.log_text()
        proc = run_psql(pgpool, pki, "anyuser", "disable")          # plain text is not affected
        assert proc.returncode == 0 and proc.stdout.strip() == "anyuser", proc.stderr
    finally:
        pgpool.cleanup()
    pgpool = start(cluster, pki, OUR_PGPOOL, ssl_max_protocol_version="TLSv1.2")
    try:
        proc = run_psql(pgpool, pki, "sslonly", "require", "\\conninfo")
        assert proc.returncode == 0 and "SSL connection (protocol: TLSv1.2" in proc.stdout, proc.stderr
    finally:
        pgpool.cleanup()


# ---- configuration problems ----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(COMMANDS))
def test_unusable_certificate_disables_client_tls_only(cluster, pki, name):
    """ssl_cert pointing nowhere: pgpool starts, says why, answers SSLRequest with 'N'."""
    pgpool = start(cluster, pki, COMMANDS[name], ssl_cert="no-such-server.crt")
    try:
        assert "no-such-server.crt" in pgpool.log_text()
        if name == "ours":
            assert "(check ssl_cert); SSL towards clients is disabled" in pgpool.log_text()
        proc = run_psql(pgpool, pki, "anyuser", "require")
        assert proc.returncode != 0 and "server does not support SSL" in proc.stderr
        proc = run_psql(pgpool, pki, "anyuser", "prefer")
        assert proc.returncode == 0 and proc.stdout.strip() == "anyuser", proc.stderr
    finally:
        pgpool.cleanup()


def test_untrusted_backend_certificate_is_refused(cluster, pki):
    """ssl_ca_cert that did not sign PostgreSQL's certificate: backend connections fail, clearly."""
    pgpool = start(cluster, pki, OUR_PGPOOL, wait=False, ssl_ca_cert=str(pki.other_ca.cert_path),
                   failover_on_backend_error=False, search_primary_node_timeout=1)
    try:
        proc = None
        for _ in range(50):
            proc = run_psql(pgpool, pki, "anyuser", "require")
            if "Connection refused" not in proc.stderr:
                break
            time.sleep(0.2)
        assert proc.returncode != 0
        assert "certificate verify failed" in proc.stderr + pgpool.log_text()
    finally:
        pgpool.cleanup()


# ---- the SSLRequest exchange itself --------------------------------------------------------------

def test_cancel_over_tls(pgpool, pki):
    with connect(pgpool, pki, "anyuser", "require") as conn:
        with pytest.raises(psycopg.errors.QueryCanceled):
            with ThreadPoolExecutor(1) as pool:
                pool.submit(lambda: (time.sleep(0.5), conn.cancel()))
                conn.execute("/*NO LOAD BALANCE*/ SELECT pg_sleep(20)")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_plain_bytes_after_ssl_request_are_refused(pgpool):
    """A StartupMessage sent right behind the SSLRequest (before the handshake) is not accepted."""
    with rawpg.RawConn("127.0.0.1", pgpool.port) as conn:
        conn.send(rawpg.ssl_request() + rawpg.startup_packet({"user": "anyuser", "database": "postgres"}))
        reply = conn.read_to_close(timeout=10)
    if pgpool.name == "ours":
        assert reply.errors()[0]["M"] == "received unencrypted data after SSL request"
        assert reply.errors()[0]["C"] == "08P01"
    assert reply.closed


def test_silent_client_after_ssl_request_times_out(cluster, pki):
    pgpool = start(cluster, pki, OUR_PGPOOL, authentication_timeout=1)
    try:
        with rawpg.RawConn("127.0.0.1", pgpool.port) as conn:
            conn.send(rawpg.ssl_request())
            assert conn.recv_bytes(1) == b"S"
            started = time.monotonic()
            assert conn.recv_bytes(1, timeout=15) == b""          # closed by pgpool, not by us
            assert time.monotonic() - started < 14
        # after the handshake: asked for a password, the client says nothing
        with socket.create_connection(("127.0.0.1", pgpool.port), timeout=15) as raw:
            raw.sendall(rawpg.ssl_request())
            assert raw.recv(1) == b"S"
            client = ssl.create_default_context(cafile=str(pki.ca.cert_path)).wrap_socket(raw, server_hostname="localhost")
            client.sendall(rawpg.startup_packet({"user": "anyuser", "database": "postgres"}))
            started = time.monotonic()
            data = b""
            while chunk := client.recv(65536):
                data += chunk
            assert data[:1] == b"R"                                # the SASL request, then nothing more
            assert time.monotonic() - started < 14
        assert run_psql(pgpool, pki, "anyuser", "require").returncode == 0     # the worker serves on
    finally:
        pgpool.cleanup()
