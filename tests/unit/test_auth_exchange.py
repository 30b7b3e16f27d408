"""Authentication exchanges over an in-memory MessageIO: scripted peers and pgpool <-> pgpool.

Real clients and a real PostgreSQL are exercised in tests/integration/test_auth_backend.py.
"""

import queue
import struct
import threading

import pytest

from pgpool.auth import md5, scram
from pgpool.auth.exchange import (AuthError, BackendAuthError, authenticate_backend, authenticate_frontend,
                                  no_hba_entry_error)
from pgpool.protocol.messages import auth_ok, auth_request, error_response, message, password_message

SALT = b"\x0a\x0b\x0c\x0d"
MD5_ALICE = md5.encrypt_password("secret", "alice")


def split(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("!i", data, pos + 1)
        out.append((data[pos:pos + 1], data[pos + 5:pos + 1 + length]))
        pos += 1 + length
    return out


class PipeIO:
    """One end of an in-memory connection: messages sent here are received at the peer."""

    def __init__(self, inbox: queue.Queue, outbox: queue.Queue):
        self.inbox, self.outbox = inbox, outbox
        self.sent: list[tuple[bytes, bytes]] = []

    def send(self, data: bytes) -> None:
        for msg in split(data):
            self.sent.append(msg)
            self.outbox.put(msg)

    def recv_message(self):
        msg = self.inbox.get(timeout=10)
        if msg is None:
            raise EOFError
        return msg


def pipe() -> tuple[PipeIO, PipeIO]:
    a, b = queue.Queue(), queue.Queue()
    return PipeIO(a, b), PipeIO(b, a)


def scripted(*incoming: bytes) -> PipeIO:
    """An IO whose peer already sent ``incoming`` (then hangs up)."""
    io, _ = pipe()
    for data in incoming:
        for msg in split(data):
            io.inbox.put(msg)
    io.inbox.put(None)
    return io


def cstr(s: str) -> bytes:
    return password_message(s.encode() + b"\0")


def sasl_initial(mechanism: str, data: bytes) -> bytes:
    return password_message(mechanism.encode() + b"\0" + struct.pack("!i", len(data)) + data)


# ---- frontend: scripted clients ------------------------------------------------------------

def test_trust_sends_nothing():
    io = scripted()
    assert authenticate_frontend(io, "trust", "alice", "db", None) is None
    assert io.sent == []


def test_reject_is_no_hba_entry():
    with pytest.raises(AuthError) as info:
        authenticate_frontend(scripted(), "reject", "alice", "db", None, client_host="10.0.0.1", ssl=True)
    err = info.value
    assert (err.severity, err.sqlstate, err.message) == ("FATAL", "28000", "client authentication failed")
    assert err.detail == 'no pool_hba.conf entry for host "10.0.0.1", user "alice", database "db", SSL on'
    assert err.hint == "see pgpool log for details"
    assert err.to_bytes() == error_response("FATAL", "28000", err.message, err.detail, err.hint)
    assert no_hba_entry_error("[local]", "a", "d", False).detail.endswith('database "d", SSL off')


@pytest.mark.parametrize("stored", [None, "secret", "TEXTsecret", MD5_ALICE, scram.build_verifier("secret")])
def test_password_method_accepts(stored):
    io = scripted(cstr("secret"))
    assert authenticate_frontend(io, "password", "alice", "db", stored) == "secret"
    assert io.sent == [(b"R", struct.pack("!i", 3))]


@pytest.mark.parametrize("stored", ["secret", "TEXTsecret", MD5_ALICE, scram.build_verifier("secret")])
def test_password_method_wrong_password(stored):
    with pytest.raises(AuthError) as info:
        authenticate_frontend(scripted(cstr("wrong")), "password", "alice", "db", stored)
    assert (info.value.sqlstate, info.value.message, info.value.detail) == (
        "28P01", "clear text authentication failed", "password does not match")


def test_password_method_aes_without_key():
    with pytest.raises(AuthError, match="unable to decrypt password from pool_passwd"):
        authenticate_frontend(scripted(cstr("x")), "password", "alice", "db", "AESxxxx")


def test_password_method_wrong_message_kind():
    with pytest.raises(AuthError, match="expected 'p' received 'Q'"):
        authenticate_frontend(scripted(message(b"Q", b"select 1\0")), "password", "alice", "db", None)


def test_client_hangs_up():
    with pytest.raises(EOFError):
        authenticate_frontend(scripted(), "password", "alice", "db", None)


@pytest.mark.parametrize("stored", ["secret", "TEXTsecret", MD5_ALICE])
def test_md5_method(stored):
    good = md5.salted_response("alice", "secret", SALT)
    io = scripted(cstr(good))
    assert authenticate_frontend(io, "md5", "alice", "db", stored, random=lambda n: SALT) is None
    assert io.sent == [(b"R", struct.pack("!i", 5) + SALT)]
    with pytest.raises(AuthError) as info:
        authenticate_frontend(scripted(cstr(md5.salted_response("alice", "bad", SALT))), "md5", "alice", "db",
                              stored, random=lambda n: SALT)
    assert (info.value.sqlstate, info.value.message, info.value.detail) == (
        "28P01", "md5 authentication failed", "password does not match")


@pytest.mark.parametrize("method, stored, detail", [
    ("md5", None, 'pool_passwd file does not contain an entry for "alice"'),
    ("md5", scram.build_verifier("x"), 'pool_passwd file does not contain valid md5 entry for "alice"'),
    ("scram-sha-256", None, 'pool_passwd file does not contain an entry for "alice"'),
    ("scram-sha-256", MD5_ALICE, 'pool_passwd file does not contain valid SCRAM entry for "alice"'),
    ("scram-sha-256", "SCRAM-SHA-256$broken", 'pool_passwd file does not contain valid SCRAM entry for "alice"'),
])
def test_unusable_pool_passwd_entry(method, stored, detail):
    io = scripted()
    with pytest.raises(AuthError) as info:
        authenticate_frontend(io, method, "alice", "db", stored)
    assert (info.value.severity, info.value.sqlstate, info.value.detail) == ("FATAL", "28000", detail)
    assert io.sent == []                          # refused before asking the client anything


@pytest.mark.parametrize("method", ["md5", "scram-sha-256"])
def test_aes_entry_that_does_not_decrypt(method):
    with pytest.raises(AuthError, match="unable to decrypt password from pool_passwd") as info:
        authenticate_frontend(scripted(), method, "alice", "db", "AESxxxx")
    assert (info.value.sqlstate, info.value.hint) == ("28P01", "verify the valid pool_key exists")


def test_scram_exchange_messages():
    client = scram.ScramClient("pencil", nonce="rOprNGfwEbeRWgbNEkqO", username="user")
    # the client's messages depend on the server's, so drive the exchange through a pipe
    server_io, client_io = pipe()
    verifier = scram.build_verifier("pencil")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "r", authenticate_frontend(server_io, "scram-sha-256", "user", "db", verifier)))
    t.start()
    kind, payload = client_io.recv_message()
    assert (kind, payload) == (b"R", struct.pack("!i", 10) + b"SCRAM-SHA-256\0\0")
    client_io.send(sasl_initial("SCRAM-SHA-256", client.first()))
    kind, payload = client_io.recv_message()
    assert kind == b"R" and payload[:4] == struct.pack("!i", 11)
    client_io.send(password_message(client.final(payload[4:])))
    kind, payload = client_io.recv_message()
    assert kind == b"R" and payload[:4] == struct.pack("!i", 12)
    client.verify(payload[4:])
    t.join(5)
    assert result == {"r": None}


@pytest.mark.parametrize("first, message, sqlstate", [
    (sasl_initial("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=abc"),
     "client selected an invalid SASL authentication mechanism", "0A000"),
    (sasl_initial("SCRAM-SHA-1", b"n,,n=,r=abc"), "client selected an invalid SASL authentication mechanism", "08P01"),
    (sasl_initial("SCRAM-SHA-256", b"p=tls-server-end-point,,n=,r=abc"),
     "client requires SCRAM channel binding, but it is not supported", "0A000"),
    (password_message(b"SCRAM-SHA-256\0\0\0"), "malformed SASLInitialResponse message", "08P01"),
    (password_message(b"SCRAM-SHA-256\0\0\0\0\x09abc"), "malformed SASLInitialResponse message", "08P01"),
])
def test_scram_refusals(first, message, sqlstate):
    with pytest.raises(AuthError) as info:
        authenticate_frontend(scripted(first), "scram-sha-256", "alice", "db", "secret")
    assert (info.value.message, info.value.sqlstate) == (message, sqlstate)


def test_scram_without_initial_response():
    """A SASLInitialResponse without data gets an empty SASLContinue, then the client-first."""
    server_io, client_io = pipe()
    client = scram.ScramClient("secret")
    t = threading.Thread(target=authenticate_frontend, args=(server_io, "scram-sha-256", "a", "d", "secret"))
    t.start()
    client_io.recv_message()
    client_io.send(password_message(b"SCRAM-SHA-256\0" + struct.pack("!i", -1)))
    assert client_io.recv_message() == (b"R", struct.pack("!i", 11))
    client_io.send(password_message(client.first()))
    kind, payload = client_io.recv_message()
    client_io.send(password_message(client.final(payload[4:])))
    kind, payload = client_io.recv_message()
    client.verify(payload[4:])
    t.join(5)
    assert not t.is_alive()


def test_unknown_and_later_methods():
    with pytest.raises(AuthError, match="invalid authentication method"):
        authenticate_frontend(scripted(), "ident", "alice", "db", None)
    with pytest.raises(AuthError, match="LDAP authentication is not supported yet"):
        authenticate_frontend(scripted(), "ldap", "alice", "db", None)
    with pytest.raises(AuthError, match='PAM service "no-such-pam-service" is not configured'):
        authenticate_frontend(scripted(), "pam", "alice", "db", None, pam_service="no-such-pam-service")


@pytest.mark.parametrize("ssl, cn, ok", [(True, "ALICE", True), (True, "bob", False), (True, None, False),
                                         (False, "alice", False)])
def test_cert(ssl, cn, ok):
    call = lambda: authenticate_frontend(scripted(), "cert", "alice", "db", None, ssl=ssl, cert_cn=cn)  # noqa: E731
    if ok:
        assert call() is None
    else:
        with pytest.raises(AuthError, match="CERT authentication failed"):
            call()


# ---- pgpool as client against pgpool as server ------------------------------------------------

def run_pair(method, stored, password, user="alice"):
    server_io, client_io = pipe()
    outcome = {}

    def server():
        try:
            outcome["server"] = authenticate_frontend(server_io, method, user, "db", stored)
            server_io.send(auth_ok())
        except AuthError as exc:
            outcome["server"] = exc
            server_io.send(exc.to_bytes())
    t = threading.Thread(target=server)
    t.start()
    try:
        authenticate_backend(client_io, user, password)
        outcome["client"] = "ok"
    except (AuthError, BackendAuthError) as exc:
        outcome["client"] = exc
    t.join(5)
    return outcome


@pytest.mark.parametrize("method, stored, password", [
    ("trust", None, None),
    ("password", None, "anything"),
    ("password", MD5_ALICE, "secret"),
    ("md5", MD5_ALICE, "secret"),
    ("md5", MD5_ALICE, MD5_ALICE),                      # pgpool holding only the hash
    ("md5", "TEXTsecret", "TEXTsecret"),
    ("scram-sha-256", "secret", "secret"),
    ("scram-sha-256", scram.build_verifier("secret"), "secret"),
])
def test_pair_succeeds(method, stored, password):
    outcome = run_pair(method, stored, password)
    assert outcome["client"] == "ok"
    assert outcome["server"] == ("anything" if stored is None and method == "password" else
                                 "secret" if method == "password" else None)


@pytest.mark.parametrize("method, stored, password, message", [
    ("md5", MD5_ALICE, "wrong", "md5 authentication failed"),
    ("scram-sha-256", "secret", "wrong", "authentication failed"),
    ("password", "secret", "wrong", "clear text authentication failed"),
])
def test_pair_wrong_password(method, stored, password, message):
    outcome = run_pair(method, stored, password)
    assert isinstance(outcome["server"], AuthError)
    client_error = outcome["client"]
    assert isinstance(client_error, BackendAuthError)
    assert client_error.fields["M"] == message and client_error.sqlstate == "28P01"
    assert client_error.to_bytes() == outcome["server"].to_bytes()


# ---- backend: scripted servers -------------------------------------------------------------------

def test_backend_trust_and_notice():
    io = scripted(message(b"N", b"SNOTICE\0Mhello\0\0"), auth_ok())
    authenticate_backend(io, "alice", None)
    assert io.sent == []


def test_backend_cleartext():
    io = scripted(auth_request(3), auth_ok())
    authenticate_backend(io, "alice", "TEXTsecret")
    assert io.sent == [(b"p", b"secret\0")]


@pytest.mark.parametrize("password", ["secret", MD5_ALICE])
def test_backend_md5(password):
    io = scripted(auth_request(5, SALT), auth_ok())
    authenticate_backend(io, "alice", password)
    assert io.sent == [(b"p", md5.salted_response("alice", "secret", SALT).encode() + b"\0")]


@pytest.mark.parametrize("request_, password, detail", [
    (auth_request(3), MD5_ALICE, "needs the plain text password"),
    (auth_request(3), None, "needs the plain text password"),
    (auth_request(5, SALT), None, "md5 authentication needs a password"),
    (auth_request(10, b"SCRAM-SHA-256\0\0"), MD5_ALICE, "needs the plain text password"),
    (auth_request(10, b"SCRAM-SHA-256-PLUS\0\0"), "secret", "none of the server's SASL"),
    (auth_request(3), "AESxyz", "unable to decrypt password from pool_passwd"),
    (auth_request(7), "secret", "unsupported auth kind received from backend: authkind:7"),
    (message(b"Z", b"I"), "secret", "backend response with kind 'Z' when expecting 'R'"),
])
def test_backend_refusals(request_, password, detail):
    with pytest.raises(AuthError, match="failed to authenticate with backend") as info:
        authenticate_backend(scripted(request_), "alice", password)
    assert detail in info.value.detail


def test_backend_error_response_is_relayable():
    err = error_response("FATAL", "28P01", 'password authentication failed for user "alice"')
    with pytest.raises(BackendAuthError) as info:
        authenticate_backend(scripted(auth_request(5, SALT), err), "alice", "wrong")
    assert info.value.sqlstate == "28P01"
    assert info.value.fields["S"] == "FATAL"
    assert info.value.to_bytes() == err


def test_backend_scram_bad_server_signature():
    """A server that does not know the password cannot forge SASLFinal."""
    server_io, client_io = pipe()

    def fake_server():
        server_io.send(auth_request(10, b"SCRAM-SHA-256\0\0"))
        _, payload = server_io.recv_message()
        first = payload[payload.index(b"\0") + 5:]
        server = scram.ScramServer("not-the-password")
        server_io.send(auth_request(11, server.first(first)))
        server_io.recv_message()
        server_io.send(auth_request(12, b"v=" + b"A" * 43 + b"="))
    t = threading.Thread(target=fake_server)
    t.start()
    with pytest.raises(AuthError, match="incorrect server signature"):
        authenticate_backend(client_io, "alice", "secret")
    t.join(5)
