"""Every frontend x backend authentication method pair through pgpool, ours and pgpool-II 4.3 side by side.

A primary + standby whose pg_hba.conf gives each test user one backend method (trust, password,
md5, scram-sha-256); pool_hba.conf gives each user one frontend method.  Logins use libpq
(psycopg) for the success matrix and a raw protocol client for failures, so the ErrorResponse
fields (severity, SQLSTATE, message, detail) can be compared with pgpool-II's exactly.  After the
failures the same pgpool still serves everyone and no node was detached.
"""

from __future__ import annotations

import hashlib
import struct

import psycopg
import pytest

from pgpool.auth import scram
from pgpool.tools.cluster import PgCluster
from tests.harness import rawpg
from tests.harness.pgpool_process import OUR_PGPOOL, REAL_PGPOOL, PgpoolProcess
from tests.harness.wait import wait_for

BACKEND = {"trust": "trust", "password": "password", "md5": "md5", "scram": "scram-sha-256"}
FRONTEND = {"trust": "trust", "password": "password", "md5": "md5", "scram": "scram-sha-256"}
PASSWORD = "s3cret pw"
PAIRS = [(f, b) for f in FRONTEND for b in BACKEND]
COMMANDS = {"ours": OUR_PGPOOL, "pgpool-II": REAL_PGPOOL}

# users whose pool_passwd entry is something else than TEXT<password>: user -> (front, back, entry)
SPECIAL = {
    "md5hash_md5": ("md5", "md5", "md5hash"),            # md5 hash is enough for md5 on both sides
    "md5hash_scram": ("md5", "scram", "md5hash"),        # ... but not for SCRAM towards PostgreSQL
    "scramfront_md5hash": ("scram", "trust", "md5hash"),  # ... nor for SCRAM towards the client
    "verifier_trust": ("scram", "trust", "verifier"),    # a SCRAM verifier authenticates the client
    "plain_md5": ("md5", "md5", "plain"),                # no prefix: plain text
    "noentry": ("md5", "trust", None),                   # no pool_passwd line at all
    "expired": ("scram", "scram", "text"),               # PostgreSQL role VALID UNTIL the past
}


def user_of(front: str, back: str) -> str:
    return f"f_{front}_b_{back}"


def pool_passwd_line(user: str, kind: str | None) -> str:
    entries = {"text": f"TEXT{PASSWORD}", "plain": PASSWORD,
               "md5hash": "md5" + hashlib.md5((PASSWORD + user).encode()).hexdigest(),
               "verifier": scram.build_verifier(PASSWORD)}
    return "" if kind is None else f"{user}:{entries[kind]}\n"


@pytest.fixture(scope="module")
def cluster():
    cluster = PgCluster.create(num_standbys=1)
    try:
        users = {user_of(f, b): b for f, b in PAIRS} | {u: b for u, (_f, b, _e) in SPECIAL.items()}
        sql = []
        for user, back in users.items():
            encryption = "md5" if back == "md5" else "scram-sha-256"
            sql.append(f"SET password_encryption = '{encryption}'; CREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}';")
        cluster.primary.psql("".join(sql) + "ALTER ROLE expired VALID UNTIL '2000-01-01';")
        hba = ("local all all trust\nlocal replication all trust\nhost all postgres 127.0.0.1/32 trust\n"
               + "".join(f"host all {u} 127.0.0.1/32 {BACKEND[b]}\n" for u, b in users.items()))
        for node in cluster.nodes:
            (node.datadir / "pg_hba.conf").write_text(hba)
            node.reload()
        yield cluster
    finally:
        cluster.destroy()


def pool_hba() -> str:
    lines = ["local all all trust", "host all postgres 127.0.0.1/32 trust", "host all rejected 127.0.0.1/32 reject"]
    lines += [f"host all {user_of(f, b)} 127.0.0.1/32 {FRONTEND[f]}" for f, b in PAIRS]
    lines += [f"host all {u} 127.0.0.1/32 {FRONTEND[f]}" for u, (f, _b, _e) in SPECIAL.items()]
    return "\n".join(lines) + "\n"


def start_pgpool(cluster, command, hba: str | None, passwd: str, **settings) -> PgpoolProcess:
    pgpool = PgpoolProcess(cluster, {"num_init_children": 4, "max_pool": 2, **settings}, pool_hba=hba,
                           command=command)
    pgpool.workdir.mkdir(parents=True, exist_ok=True)
    pgpool.passwd_path.write_text(passwd)
    pgpool.passwd_path.chmod(0o600)
    return pgpool.start()


@pytest.fixture(scope="module", params=list(COMMANDS))
def pgpool(request, cluster):
    passwd = "".join(pool_passwd_line(user_of(f, b), "text") for f, b in PAIRS)
    passwd += "".join(pool_passwd_line(u, e) for u, (_f, _b, e) in SPECIAL.items())
    pgpool = start_pgpool(cluster, COMMANDS[request.param], pool_hba(), passwd)
    pgpool.name = request.param
    yield pgpool
    pgpool.cleanup()


def libpq_login(pgpool, user: str, password: str = PASSWORD) -> str:
    dsn = pgpool.dsn(user=user, password=password, sslmode="disable", gssencmode="disable")
    with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
        # a read (may be load-balanced to the standby) and a write check (primary): both nodes logged in
        return conn.execute("SELECT current_user, pg_catalog.pg_is_in_recovery()").fetchone()[0]


def raw_login(port: int, user: str, password: str | None) -> dict:
    """Log in with a raw protocol client; {"ok": True} or {"error": ErrorResponse fields}."""
    with rawpg.RawConn("127.0.0.1", port) as conn:
        conn.send(rawpg.startup_packet({"user": user, "database": "postgres"}))
        client = None
        while True:
            msg = conn.recv_message()
            if msg is None:
                return {"error": "connection closed"}
            kind, payload = msg
            if kind == b"E":
                return {"error": rawpg.parse_fields(payload)}
            if kind == b"Z":
                return {"ok": True}
            if kind != b"R":
                continue
            code = struct.unpack_from("!i", payload)[0]
            if code == 3:
                conn.send(rawpg.message(b"p", password.encode() + b"\0"))
            elif code == 5:
                inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                answer = b"md5" + hashlib.md5(inner + payload[4:8]).hexdigest().encode()
                conn.send(rawpg.message(b"p", answer + b"\0"))
            elif code == 10:
                client = scram.ScramClient(password)
                first = client.first()
                conn.send(rawpg.message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
            elif code == 11:
                conn.send(rawpg.message(b"p", client.final(payload[4:])))


def error_of(result: dict) -> tuple:
    err = result.get("error")
    assert isinstance(err, dict), result
    return err.get("S"), err.get("C"), err.get("M"), err.get("D")


# ---- the success matrix -----------------------------------------------------------------------------

@pytest.mark.parametrize("front, back", PAIRS, ids=[f"{f}-to-{b}" for f, b in PAIRS])
def test_method_pair(pgpool, front, back):
    user = user_of(front, back)
    assert libpq_login(pgpool, user) == user


# ---- pool_passwd entry kinds and failures, compared with pgpool-II -----------------------------------

EXPECTED = {
    # user, password -> None (logs in) or the ErrorResponse (severity, SQLSTATE, message, detail prefix)
    ("md5hash_md5", PASSWORD): None,
    ("plain_md5", PASSWORD): None,
    ("verifier_trust", PASSWORD): None,
    (user_of("md5", "trust"), "wrong"): ("ERROR", "28P01", "md5 authentication failed", "password does not match"),
    (user_of("password", "md5"), "wrong"): ("ERROR", "28P01", "clear text authentication failed",
                                            "password does not match"),
    (user_of("scram", "md5"), "wrong"): ("ERROR", "28P01", "authentication failed",
                                         'username "f_scram_b_md5" or password does not exist in backend'),
    ("verifier_trust", "wrong"): ("ERROR", "28P01", "authentication failed",
                                  'username "verifier_trust" or password does not exist in backend'),
    ("noentry", PASSWORD): ("FATAL", "28000", "md5 authentication failed",
                            'pool_passwd file does not contain an entry for "noentry"'),
    ("scramfront_md5hash", PASSWORD): ("FATAL", "28000", "SCRAM authentication failed",
                                       'pool_passwd file does not contain valid SCRAM entry for "scramfront_md5hash"'),
    ("rejected", PASSWORD): ("FATAL", "28000", "client authentication failed",
                             'no pool_hba.conf entry for host "127.0.0.1", user "rejected", database "postgres", SSL off'),
    ("not_listed", PASSWORD): ("FATAL", "28000", "client authentication failed",
                               'no pool_hba.conf entry for host "127.0.0.1", user "not_listed", database "postgres", '
                               "SSL off"),
}


# pgpool-II 4.3 cannot use a SCRAM verifier from pool_passwd; ours can
PGPOOL_II_DIFFERS = {
    ("verifier_trust", pw): ("ERROR", "XX000", "SCRAM authentication failed",
                             'username "verifier_trust" has invalid password type') for pw in (PASSWORD, "wrong")
}


@pytest.mark.parametrize("user, password", list(EXPECTED), ids=[f"{u}-{'good' if p == PASSWORD else 'bad'}"
                                                                for u, p in EXPECTED])
def test_outcomes(pgpool, user, password):
    result = raw_login(pgpool.port, user, password)
    expected = EXPECTED[(user, password)]
    if pgpool.name == "pgpool-II":
        expected = PGPOOL_II_DIFFERS.get((user, password), expected)
    if expected is None:
        assert result == {"ok": True}
        return
    severity, sqlstate, message, detail = error_of(result)
    assert (severity, message) == expected[:1] + expected[2:3]
    assert detail.startswith(expected[3])
    if pgpool.name == "ours":            # pgpool-II sends XX000 for most of these; ours are PostgreSQL's
        assert sqlstate == expected[1]


def test_scram_backend_needs_a_clear_password(pgpool):
    """md5 hash in pool_passwd, SCRAM towards PostgreSQL: refused with a message saying why."""
    result = raw_login(pgpool.port, "md5hash_scram", PASSWORD)
    severity, sqlstate, message, detail = error_of(result)
    assert severity in ("ERROR", "FATAL")
    assert "authenticat" in message
    if pgpool.name == "ours":
        assert sqlstate == "28P01"
        assert 'needs the plain text password of user "md5hash_scram"' in detail


def test_expired_backend_password(pgpool):
    """pool_passwd still knows the password, PostgreSQL says it expired: ours relays PostgreSQL's
    FATAL 28P01 (which does not say why), pgpool-II 4.3 an ERROR XX000 of its own; no node is
    detached and others log in."""
    result = raw_login(pgpool.port, "expired", PASSWORD)
    if pgpool.name == "ours":
        assert error_of(result)[:3] == ("FATAL", "28P01", 'password authentication failed for user "expired"')
    else:
        assert error_of(result) == ("ERROR", "XX000", "backend authentication failed",
                                    "backend response with kind 'E' when expecting 'R'")
    assert libpq_login(pgpool, user_of("scram", "scram")) == user_of("scram", "scram")
    with psycopg.connect(pgpool.dsn(sslmode="disable"), autocommit=True, connect_timeout=10) as conn:
        assert [row[3] for row in conn.execute("SHOW pool_nodes").fetchall()] == ["up", "up"]


def test_failures_leave_everything_working(pgpool):
    for _ in range(3):
        for user, password in EXPECTED:
            raw_login(pgpool.port, user, password)
    assert libpq_login(pgpool, user_of("scram", "scram")) == user_of("scram", "scram")
    with psycopg.connect(pgpool.dsn(sslmode="disable"), autocommit=True, connect_timeout=10) as conn:
        statuses = [row[3] for row in conn.execute("SHOW pool_nodes").fetchall()]
    assert statuses == ["up", "up"]
    assert pgpool.is_alive()


# ---- enable_pool_hba = off: the backend's method drives the exchange --------------------------------

PASS_THROUGH = [
    # user, pool_passwd has it, allow_clear_text_frontend_auth, logs in
    (user_of("md5", "scram"), True, False, True),         # pgpool answers SCRAM with pool_passwd
    (user_of("md5", "md5"), True, False, True),
    (user_of("md5", "password"), False, False, True),     # cleartext is relayed and reused
    (user_of("md5", "trust"), False, False, True),
    (user_of("scram", "scram"), False, True, True),       # password asked in clear text
    (user_of("scram", "md5"), False, True, True),
    (user_of("password", "scram"), False, False, False),  # no password for the standby: refused
]


@pytest.fixture(scope="module", params=list(COMMANDS))
def no_hba_pgpools(request, cluster):
    with_entries = "".join(pool_passwd_line(u, "text") for u, has, _c, _ok in PASS_THROUGH if has)
    pools = {clear: start_pgpool(cluster, COMMANDS[request.param], None, with_entries,
                                 allow_clear_text_frontend_auth=clear) for clear in (False, True)}
    yield pools
    for p in pools.values():
        p.cleanup()


@pytest.mark.parametrize("user, _has, clear, ok", PASS_THROUGH, ids=[f"{u}-{c}" for u, _h, c, _o in PASS_THROUGH])
def test_pass_through(no_hba_pgpools, user, _has, clear, ok):
    pgpool = no_hba_pgpools[clear]
    if ok:
        assert libpq_login(pgpool, user) == user
        assert libpq_login(pgpool, user) == user          # again: a pooled slot is reused
        if not user.endswith("_trust"):
            with pytest.raises(psycopg.OperationalError):
                libpq_login(pgpool, user, "wrong password")
    else:
        with pytest.raises(psycopg.OperationalError):
            libpq_login(pgpool, user)


# ---- pool_hba.conf with errors: at start and on reload ----------------------------------------------

@pytest.mark.parametrize("name", list(COMMANDS))
def test_bad_pool_hba(cluster, name):
    """At start: pgpool runs but refuses everyone; on reload: the previous rules stay in force."""
    user = user_of("md5", "trust")
    bad = "local all all trust\nhost all all 127.0.0.1/32 bogus\nhost all all 10.0.0.0/33 trust\n"
    # one child: pgpool-II children re-read pool_hba.conf lazily, each on its next connection
    pgpool = PgpoolProcess(cluster, {"num_init_children": 1}, pool_hba=bad, command=COMMANDS[name])
    pgpool.passwd_path.write_text(pool_passwd_line(user, "text"))
    try:
        pgpool.start(wait=False)
        first = wait_for(lambda: raw_login_when_up(pgpool, user), timeout=30, what="pgpool to answer")
        assert error_of(first)[2:] == ("client authentication failed", "missing or erroneous pool_hba.conf file")
        log = pgpool.log_text()
        assert 'invalid authentication method "bogus"' in log
        assert f'line 2 of configuration file "{pgpool.hba_path}"' in log
        assert 'invalid CIDR mask in address "10.0.0.0/33"' in log

        pgpool.pool_hba = f"local all all trust\nhost all {user} 127.0.0.1/32 md5\n"
        pgpool.reload()
        wait_for(lambda: raw_login(pgpool.port, user, PASSWORD) == {"ok": True}, timeout=20, what="good rules")
        pgpool.pool_hba = f"local all all trust\nhost all {user} 127.0.0.1/32 reject\nlocal all all nope\n"
        pgpool.reload()
        wait_for(lambda: 'invalid authentication method "nope"' in pgpool.log_text(), timeout=20, what="reload")
        assert raw_login(pgpool.port, user, PASSWORD) == {"ok": True}       # the md5 rule still applies
    finally:
        pgpool.cleanup()


def raw_login_when_up(pgpool, user: str) -> dict | None:
    try:
        return raw_login(pgpool.port, user, PASSWORD)
    except OSError:
        return None
