"""Authentication against real peers: authenticate_backend with PostgreSQL 15 (md5, SCRAM, password,
trust, errors) and authenticate_frontend with libpq (psycopg) as the client."""

import socket
import struct
import threading

import psycopg
import pytest

from pgpool.auth import md5, scram
from pgpool.auth.exchange import AuthError, BackendAuthError, authenticate_backend, authenticate_frontend
from pgpool.protocol.messages import (auth_ok, backend_key_data, parameter_status, ready_for_query,
                                      startup_message, terminate)

cluster_mod = pytest.importorskip("pgpool.tools.cluster")

USERS = {  # user: (pg_hba method, password_encryption, password)
    "md5user": ("md5", "md5", "md5 pass"),
    "scramuser": ("scram-sha-256", "scram-sha-256", "scr\u00e4m pass"),
    "scram_under_md5": ("md5", "scram-sha-256", "both"),       # PostgreSQL then asks for SCRAM
    "pwuser": ("password", "scram-sha-256", "clear pass"),
    "trustuser": ("trust", "md5", "unused"),
}


class SocketIO:
    """MessageIO over a socket (what the proxy provides in production)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def recv_message(self):
        kind, length = struct.unpack("!ci", self._exact(5))
        return kind, self._exact(length - 4)

    def read_startup(self) -> bytes:
        (length,) = struct.unpack("!i", self._exact(4))
        return self._exact(length - 4)


@pytest.fixture(scope="module")
def pg():
    try:
        cluster = cluster_mod.PgCluster.create(num_standbys=0)
    except FileNotFoundError as exc:
        pytest.skip(f"PostgreSQL server binaries are not installed: {exc}")
    try:
        node = cluster.primary
        for user, (_method, encryption, password) in USERS.items():
            node.psql(f"SET password_encryption = '{encryption}'; "
                      f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        hba = "local all all trust\n" + "".join(f"host all {user} 127.0.0.1/32 {method}\n"
                                               for user, (method, _e, _p) in USERS.items())
        (node.datadir / "pg_hba.conf").write_text(hba)
        node.reload()
        yield node
    finally:
        cluster.destroy()


def login(node, user, password):
    """Connect over TCP, send the StartupMessage, authenticate; then read up to ReadyForQuery."""
    with socket.create_connection((node.host, node.port), timeout=10) as sock:
        io = SocketIO(sock)
        io.send(startup_message({"user": user, "database": "postgres"}))
        authenticate_backend(io, user, password)
        kinds = []
        while not kinds or kinds[-1] != b"Z":
            kinds.append(io.recv_message()[0])
        io.send(terminate())
        assert b"K" in kinds and b"S" in kinds
        return kinds


@pytest.mark.parametrize("user, password", [
    ("md5user", "md5 pass"),
    ("md5user", "TEXTmd5 pass"),
    ("md5user", md5.encrypt_password("md5 pass", "md5user")),    # only the hash, as in pool_passwd
    ("scramuser", "scr\u00e4m pass"),
    ("scram_under_md5", "both"),
    ("pwuser", "clear pass"),
    ("trustuser", None),
])
def test_login_succeeds(pg, user, password):
    login(pg, user, password)


@pytest.mark.parametrize("user, password", [
    ("md5user", "wrong"),
    ("md5user", md5.encrypt_password("wrong", "md5user")),
    ("scramuser", "scram pass"),
    ("pwuser", "wrong"),
])
def test_wrong_password_relays_postgresql_error(pg, user, password):
    with pytest.raises(BackendAuthError) as info:
        login(pg, user, password)
    assert info.value.sqlstate == "28P01"
    assert info.value.fields["M"] == f'password authentication failed for user "{user}"'
    assert info.value.fields["S"] == "FATAL"


def test_no_pg_hba_entry(pg):
    with pytest.raises(BackendAuthError) as info:
        login(pg, "postgres", "x")
    assert info.value.sqlstate == "28000"
    assert "no pg_hba.conf entry" in info.value.fields["M"]


@pytest.mark.parametrize("user, password", [
    ("scramuser", md5.encrypt_password("scr\u00e4m pass", "scramuser")),
    ("pwuser", md5.encrypt_password("clear pass", "pwuser")),
    ("scramuser", None),
])
def test_hash_is_not_enough(pg, user, password):
    with pytest.raises(AuthError, match="needs the plain text password"):
        login(pg, user, password)


def test_stored_secrets_match_postgresql(pg):
    scram_stored = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'scramuser'")
    parsed = scram.ScramVerifier.parse(scram_stored)
    assert scram.build_verifier("scr\u00e4m pass", parsed.salt, parsed.iterations) == scram_stored
    assert scram.verify_plain_password("scr\u00e4m pass", scram_stored)
    md5_stored = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'md5user'")
    assert md5_stored == md5.encrypt_password("md5 pass", "md5user")


# ---- libpq (psycopg) as the client of authenticate_frontend ------------------------------------

def serve_one(listener: socket.socket, method: str, stored: str | None, outcome: dict) -> None:
    conn, _ = listener.accept()
    with conn:
        io = SocketIO(conn)
        body = io.read_startup()
        params = body[4:].split(b"\0")
        startup = dict(zip(params[0::2], params[1::2]))
        user = startup[b"user"].decode()
        try:
            outcome["result"] = authenticate_frontend(io, method, user, "postgres", stored,
                                                      client_host="127.0.0.1")
        except AuthError as exc:
            outcome["result"] = exc
            io.send(exc.to_bytes())
            return
        except EOFError:
            outcome["result"] = "client hung up"
            return
        io.send(auth_ok() + parameter_status("server_version", "15.0") +
                parameter_status("client_encoding", "UTF8") + backend_key_data(1234, 5678) + ready_for_query(b"I"))
        outcome["after"] = io.recv_message()[0]            # libpq's Terminate on close


def libpq_login(method, stored, password, user="alice", extra=""):
    listener = socket.create_server(("127.0.0.1", 0))
    outcome: dict = {}
    t = threading.Thread(target=serve_one, args=(listener, method, stored, outcome))
    t.start()
    try:
        dsn = (f"host=127.0.0.1 port={listener.getsockname()[1]} user={user} dbname=postgres "
               f"sslmode=disable gssencmode=disable connect_timeout=10 {extra}")
        with psycopg.connect(dsn, password=password):
            pass
        outcome["client"] = "ok"
    except psycopg.OperationalError as exc:
        outcome["client"] = str(exc)
    finally:
        t.join(10)
        listener.close()
    return outcome


@pytest.mark.parametrize("method, stored, password", [
    ("md5", md5.encrypt_password("secret", "alice"), "secret"),
    ("md5", "TEXTsecret", "secret"),
    ("scram-sha-256", "secret", "secret"),
    ("scram-sha-256", scram.build_verifier("s\u00e9cret"), "s\u00e9cret"),
    ("password", "secret", "secret"),
    ("password", None, "whatever"),
])
def test_libpq_client_logs_in(method, stored, password):
    outcome = libpq_login(method, stored, password)
    assert outcome["client"] == "ok"
    assert outcome["after"] == b"X"
    assert outcome["result"] == (password if method == "password" else None)


@pytest.mark.parametrize("method, stored, text", [
    ("md5", md5.encrypt_password("secret", "alice"), "md5 authentication failed"),
    ("scram-sha-256", scram.build_verifier("secret"),
     'authentication failed\nDETAIL:  username "alice" or password does not exist in backend'),
    ("password", "secret", "clear text authentication failed\nDETAIL:  password does not match"),
    ("md5", None, 'md5 authentication failed\nDETAIL:  pool_passwd file does not contain an entry for "alice"'),
])
def test_libpq_client_wrong_password(method, stored, text):
    outcome = libpq_login(method, stored, "wrong")
    assert isinstance(outcome["result"], AuthError)
    assert text in outcome["client"]


def test_libpq_channel_binding_required_is_refused():
    """libpq itself refuses a server that does not offer SCRAM-SHA-256-PLUS."""
    outcome = libpq_login("scram-sha-256", "secret", "secret", extra="channel_binding=require")
    assert outcome["client"] != "ok"
    assert "channel binding" in outcome["client"]
    assert outcome["result"] == "client hung up"
