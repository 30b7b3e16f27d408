"""pgpool.proxy.tls: contexts from pgpool.conf settings (errors name the setting) and real handshakes
over socket pairs (client certificates, CRLs, SSLRequest towards a server, channel-binding data)."""

import hashlib
import os
import queue
import socket
import ssl
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives import hashes

from pgpool.auth import exchange, scram
from pgpool.config.errors import ConfigError
from pgpool.config.parser import Config, parse_config_text
from pgpool.proxy import tls
from pgpool.tools import certs


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pki = certs.make_pki(tmp_path_factory.mktemp("pki"))
    pki.client("alice")
    pki.other_ca = certs.make_ca("another CA")
    pki.client("eve", ca=pki.other_ca)
    pki.revoked = pki.client("mallory")
    certs.make_crl(pki.ca, [pki.revoked], pki.directory / "ca.crl")
    certs.issue(pki.ca, "localhost", server_names=["localhost"]).write(pki.directory, "enc", passphrase="pass word")
    certs.issue(pki.ca, "other", server_names=["localhost"]).write(pki.directory, "other")
    (pki.directory / "garbage.pem").write_text("not a certificate\n")
    (pki.directory / "loose.key").write_bytes(pki.server.key_path.read_bytes())
    os.chmod(pki.directory / "loose.key", 0o644)
    return pki


def config(pki, **settings) -> Config:
    cfg = Config.defaults()
    for name, value in {**pki.pgpool_settings(), **settings}.items():
        cfg.set(name, value)
    return cfg


def client_context(pki, cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    if cert:
        ctx.load_cert_chain(pki.directory / f"client-{cert}.crt", pki.directory / f"client-{cert}.key")
    return ctx


def handshake(front: tls.FrontendTls, client: ssl.SSLContext):
    """(server-side TlsSocket or the exception, client-side SSLSocket or the exception)."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)

    def serve():
        try:
            server_side = tls.accept(a, front)
            server_side.recv(1)
            server_side.sendall(b"y")
            return server_side
        except (tls.TlsHandshakeError, OSError) as exc:
            a.close()
            return exc

    with ThreadPoolExecutor(1) as pool:
        server = pool.submit(serve)
        try:
            client_side = client.wrap_socket(b, server_hostname="localhost")
            client_side.sendall(b"x")          # TLS 1.3: the server's verdict on the client arrives later
            client_side.recv(1)
        except (ssl.SSLError, OSError) as exc:
            client_side = exc
        return server.result(10), client_side


# ---- building the contexts ---------------------------------------------------------------------

@pytest.mark.parametrize("settings, setting, message", [
    ({"ssl_cert": ""}, "ssl_cert", 'ssl = on but "ssl_cert" is not set'),
    ({"ssl_cert": "missing.crt"}, "ssl_cert", "could not load server certificate file"),
    ({"ssl_cert": "garbage.pem"}, "ssl_cert", "could not load server certificate file"),
    ({"ssl_key": ""}, "ssl_key", 'ssl = on but "ssl_key" is not set'),
    ({"ssl_key": "missing.key"}, "ssl_key", "could not access private key file"),
    ({"ssl_key": "."}, "ssl_key", "is not a regular file"),
    ({"ssl_key": "other.key"}, "ssl_key", "check of private key failed: key values mismatch"),
    ({"ssl_key": "enc.key", "ssl_cert": "enc.crt"}, "ssl_passphrase_command", "requires a passphrase"),
    ({"ssl_key": "enc.key", "ssl_cert": "enc.crt", "ssl_passphrase_command": "echo wrong"},
     "ssl_key", "bad decrypt"),
    ({"ssl_key": "enc.key", "ssl_cert": "enc.crt", "ssl_passphrase_command": "exit 3"},
     "ssl_passphrase_command", 'command "exit 3" failed'),
    ({"ssl_ecdh_curve": "nosuchcurve"}, "ssl_ecdh_curve", "ECDH: unrecognized curve name: nosuchcurve"),
    ({"ssl_ciphers": "NOSUCHCIPHER"}, "ssl_ciphers", "no cipher can be selected"),
    ({"ssl_ca_cert": "missing-ca.crt"}, "ssl_ca_cert", "could not load root certificate file"),
    ({"ssl_crl_file": "missing.crl"}, "ssl_crl_file", "could not load SSL certificate revocation list file"),
])
def test_frontend_config_errors(pki, settings, setting, message):
    with pytest.raises(tls.TlsConfigError) as info:
        tls.frontend_context(config(pki, **settings), str(pki.directory))
    assert info.value.setting == setting
    assert message in info.value.message


@pytest.mark.parametrize("settings, warning", [
    ({"ssl_key": "loose.key"}, "has group or world access"),
    ({"ssl_dh_params_file": "missing.pem"}, "ssl_dh_params_file"),
])
def test_frontend_warnings_keep_tls(pki, settings, warning):
    problems = []
    front = tls.frontend_context(config(pki, **settings), str(pki.directory), problems)
    assert [level for level, _ in problems] == ["WARNING"]
    assert warning in problems[0][1]
    assert isinstance(handshake(front, client_context(pki))[0], tls.TlsSocket)


def test_passphrase_command_unlocks_key(pki):
    cfg = config(pki, ssl_key="enc.key", ssl_cert="enc.crt", ssl_passphrase_command="echo 'pass word'")
    front = tls.frontend_context(cfg, str(pki.directory))
    assert isinstance(handshake(front, client_context(pki))[0], tls.TlsSocket)


@pytest.mark.parametrize("command, output", [
    ("printf '%%s|' '%p'", f"{tls.PASSPHRASE_PROMPT}|"),
    ("echo 100%%", "100%"),
    ("printf 'first\\nsecond\\n'", "first"),
])
def test_run_passphrase_command(command, output):
    assert tls.run_passphrase_command(command) == output


def test_relative_paths_are_relative_to_the_config_dir(pki):
    cfg = config(pki, ssl_cert="server.crt", ssl_key="server.key", ssl_ca_cert="ca.crt", ssl_crl_file="ca.crl")
    front = tls.frontend_context(cfg, str(pki.directory))
    assert front.verify_clients
    assert front.context.verify_mode == ssl.CERT_OPTIONAL
    assert front.context.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN == ssl.VERIFY_CRL_CHECK_CHAIN


@pytest.mark.parametrize("prefer", [True, False])
def test_prefer_server_ciphers(pki, prefer):
    front = tls.frontend_context(config(pki, ssl_prefer_server_ciphers=prefer), str(pki.directory))
    assert bool(front.context.options & ssl.OP_CIPHER_SERVER_PREFERENCE) is prefer
    assert front.context.options & ssl.OP_NO_TICKET
    assert front.context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_build_reports_and_disables_only_the_broken_side(pki, tmp_path):
    conf = tmp_path / "pgpool.conf"
    setup = tls.build(config(pki, ssl_cert="nowhere.crt"), str(conf))
    assert setup.frontend is None and setup.backend is not None
    assert setup.problems[0][0] == "WARNING"
    assert "(check ssl_cert); SSL towards clients is disabled" in setup.problems[0][1]
    assert str(tmp_path / "nowhere.crt") in setup.problems[0][1]
    off = tls.build(config(pki, ssl=False), str(conf))
    assert (off.frontend, off.backend, off.problems) == (None, None, [])


# ---- client certificates -------------------------------------------------------------------------

@pytest.mark.parametrize("client_cert, ok, cn", [
    (None, True, None),              # no certificate: TLS works, cert authentication will fail later
    ("alice", True, "alice"),
    ("eve", False, None),            # signed by another CA: the handshake fails
])
def test_client_certificates(pki, client_cert, ok, cn):
    front = tls.frontend_context(config(pki), str(pki.directory))
    server_side, client_side = handshake(front, client_context(pki, client_cert))
    if ok:
        assert tls.peer_common_name(server_side) == cn
    else:
        assert isinstance(server_side, tls.TlsHandshakeError)
        assert "certificate verify failed" in str(server_side) or "unknown ca" in str(server_side)


@pytest.mark.parametrize("crl, ok", [(True, False), (False, True)])
def test_revoked_client_certificate(pki, crl, ok):
    settings = {"ssl_crl_file": "ca.crl"} if crl else {}
    front = tls.frontend_context(config(pki, **settings), str(pki.directory))
    server_side, _ = handshake(front, client_context(pki, "mallory"))
    assert isinstance(server_side, tls.TlsSocket) is ok
    if not ok:
        assert "certificate revoked" in str(server_side)


def test_no_ca_means_no_certificate_request(pki):
    front = tls.frontend_context(config(pki, ssl_ca_cert=""), str(pki.directory))
    server_side, _ = handshake(front, client_context(pki, "alice"))
    assert not front.verify_clients
    assert tls.peer_common_name(server_side) is None


# ---- channel binding -----------------------------------------------------------------------------

def test_end_point_hash_follows_the_signature_hash(pki):
    der = pki.server.cert.public_bytes(certs.serialization.Encoding.DER)
    assert tls.end_point_hash(der) == hashlib.sha256(der).digest()
    sha384 = certs.issue(pki.ca, "x", server_names=["localhost"], hash_algorithm=hashes.SHA384())
    der384 = sha384.cert.public_bytes(certs.serialization.Encoding.DER)
    assert tls.end_point_hash(der384) == hashlib.sha384(der384).digest()
    assert tls.end_point_hash(b"not DER") is None


def test_client_sees_the_same_end_point(pki):
    front = tls.frontend_context(config(pki), str(pki.directory))
    _, client_side = handshake(front, client_context(pki))
    assert tls.peer_end_point(client_side) == front.end_point != None  # noqa: E711


# ---- towards PostgreSQL: SSLRequest ---------------------------------------------------------------

def fake_server(answer: bytes, front: tls.FrontendTls | None):
    """A listener that reads the SSLRequest, answers ``answer`` and (after 'S') accepts TLS."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(10)
        request = conn.recv(8)
        if not answer:
            conn.close()
            return request, None
        conn.sendall(answer)
        if answer == b"S":
            try:
                conn = front.context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                return request, None
        data = conn.recv(5)
        conn.close()
        return request, data
    return listener, serve


@pytest.mark.parametrize("answer, settings, outcome", [
    (b"S", {}, "tls"),
    (b"S", {"ssl_ca_cert": ""}, "tls"),                       # no CA: not verified
    (b"N", {}, "plain"),
    (b"E", {}, "unhandled response: E"),
    (b"", {}, "unhandled response: end of file"),
    (b"S", {"ssl_ca_cert": "other.crt"}, "certificate verify failed"),
])
def test_negotiate_backend(pki, answer, settings, outcome):
    front = tls.frontend_context(config(pki), str(pki.directory))
    ctx = tls.backend_context(config(pki, **settings), str(pki.directory))
    listener, serve = fake_server(answer, front)
    with listener, ThreadPoolExecutor(1) as pool:
        server = pool.submit(serve)
        sock = socket.create_connection(listener.getsockname(), timeout=10)
        try:
            result = tls.negotiate_backend(sock, ctx)
        except tls.TlsHandshakeError as exc:
            assert outcome in str(exc)
            sock.close()
            request, _ = server.result(10)
            assert request == tls.SSL_REQUEST
            return
        result.sendall(b"hello")
        request, data = server.result(10)
        result.close()
    assert request == tls.SSL_REQUEST
    assert data == b"hello"
    assert isinstance(result, tls.TlsSocket) is (outcome == "tls")


def test_backend_context_errors(pki):
    with pytest.raises(tls.TlsConfigError) as info:
        tls.backend_context(config(pki, ssl_ca_cert="missing-ca.crt"), str(pki.directory))
    assert info.value.setting == "ssl_ca_cert"
    assert "SSL verification setup failed" in info.value.message
    plain = tls.backend_context(config(pki, ssl_ca_cert=""), str(pki.directory))
    assert plain.verify_mode == ssl.CERT_NONE and not plain.check_hostname


# ---- SCRAM-SHA-256-PLUS (tls-server-end-point) ---------------------------------------------------

END_POINT = hashlib.sha256(b"our certificate").digest()


def scram_exchange(server: scram.ScramServer, client: scram.ScramClient, plus: bool):
    """Run one exchange; the server-final message (None: wrong password) or the ScramError."""
    try:
        server_first = server.first(client.first(), plus=plus)
        final = server.final(client.final(server_first))
        if final is not None:
            client.verify(final)
        return final
    except scram.ScramError as exc:
        return exc


def test_plus_is_offered_only_with_binding_data():
    assert scram.ScramServer("pw", channel_binding=END_POINT).mechanisms() == ["SCRAM-SHA-256-PLUS",
                                                                               "SCRAM-SHA-256"]
    assert scram.ScramServer("pw").mechanisms() == ["SCRAM-SHA-256"]
    assert scram.choose_mechanism(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"], can_bind=True) == "SCRAM-SHA-256-PLUS"
    assert scram.choose_mechanism(["SCRAM-SHA-256"], can_bind=True) == "SCRAM-SHA-256"
    assert scram.choose_mechanism(["SCRAM-SHA-256-PLUS"], can_bind=True) == "SCRAM-SHA-256-PLUS"


@pytest.mark.parametrize("server_binding, client_kwargs, plus, error", [
    (END_POINT, {"channel_binding": END_POINT}, True, None),
    (None, {"tls": True}, False, None),                        # "y": client could bind, server cannot
    (END_POINT, {}, False, None),                               # "n": client without TLS binding support
    (END_POINT, {"channel_binding": b"other certificate"}, True, "SCRAM channel binding check failed"),
    (END_POINT, {"tls": True}, False, "SCRAM channel binding negotiation error"),
    (END_POINT, {}, True, "SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding"),
    (END_POINT, {"channel_binding": END_POINT}, False, "SCRAM-SHA-256 without channel binding"),
    (None, {"channel_binding": END_POINT}, True, "client requires SCRAM channel binding"),
], ids=["plus", "y-flag", "n-flag", "wrong-data", "downgrade", "plus-without-data", "data-without-plus",
        "no-tls"])
def test_scram_channel_binding(server_binding, client_kwargs, plus, error):
    server = scram.ScramServer("pw", channel_binding=server_binding)
    outcome = scram_exchange(server, scram.ScramClient("pw", **client_kwargs), plus)
    if error is None:
        assert isinstance(outcome, bytes) and outcome.startswith(b"v=")
    else:
        assert isinstance(outcome, scram.ScramError) and error in str(outcome)


def test_scram_plus_wrong_password_is_still_a_wrong_password():
    server = scram.ScramServer("pw", channel_binding=END_POINT)
    assert scram_exchange(server, scram.ScramClient("nope", channel_binding=END_POINT), True) is None


def test_unsupported_channel_binding_type():
    server = scram.ScramServer("pw", channel_binding=END_POINT)
    with pytest.raises(scram.ScramError, match='unsupported SCRAM channel-binding type "tls-unique"'):
        server.first(b"p=tls-unique,,n=,r=abc", plus=True)


class Pipe:
    """One end of an in-memory message connection."""

    def __init__(self, inbox: queue.Queue, outbox: queue.Queue):
        self.inbox, self.outbox = inbox, outbox

    def send(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack_from("!i", data, pos + 1)
            self.outbox.put((data[pos:pos + 1], data[pos + 5:pos + 1 + length]))
            pos += 1 + length

    def recv_message(self):
        return self.inbox.get(timeout=10)


@pytest.mark.parametrize("frontend_binding, backend_binding, ok", [
    (END_POINT, END_POINT, True),
    (END_POINT, b"man in the middle", False),
    (None, END_POINT, True),                      # server offers plain SCRAM only: client says "y"
], ids=["bound", "mismatch", "not-offered"])
def test_exchange_plus_between_pgpool_sides(frontend_binding, backend_binding, ok):
    """pgpool's frontend side (offering -PLUS on TLS) against its backend side (choosing it)."""
    a, b = queue.Queue(), queue.Queue()
    server_io, client_io = Pipe(a, b), Pipe(b, a)
    with ThreadPoolExecutor(2) as pool:
        server = pool.submit(exchange.authenticate_frontend, server_io, "scram-sha-256", "alice", "db",
                             scram.build_verifier("pw"), ssl=True, channel_binding=frontend_binding)

        def client():
            try:
                exchange.authenticate_backend(client_io, "alice", "pw", channel_binding=backend_binding)
                return "ok"
            except (exchange.AuthError, exchange.BackendAuthError) as exc:
                return exc
        client_result = pool.submit(client)
        try:
            server.result(10)
            client_io.inbox.put((b"R", struct.pack("!i", 0)))     # AuthenticationOk from "PostgreSQL"
            assert ok and client_result.result(10) == "ok"
        except exchange.AuthError as exc:
            assert not ok
            assert exc.message == "SCRAM channel binding check failed"
            client_io.inbox.put((b"E", exc.to_bytes()[5:]))
            assert isinstance(client_result.result(10), exchange.BackendAuthError)


# ---- TlsSocket: the socket interface pgpool uses, over a real TLS connection ------------------------

@pytest.fixture
def tls_pair(pki):
    """(server-side TlsSocket, client-side SSLSocket) after a handshake over a socket pair."""
    front = tls.frontend_context(config(pki), str(pki.directory))
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    with ThreadPoolExecutor(1) as pool:
        server = pool.submit(tls.accept, a, front)
        client = client_context(pki).wrap_socket(b, server_hostname="localhost")
        server_side = server.result(10)
    yield server_side, client
    server_side.close()
    client.close()


def test_tls_socket_moves_data_both_ways(tls_pair):
    server, client = tls_pair
    big = os.urandom(300_000)                       # many TLS records, more than a socket buffer
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(server.sendall, big)
        got = bytearray()
        while len(got) < len(big):
            got += client.recv(65536)
        sending.result(10)
    assert bytes(got) == big
    client.sendall(b"hello")
    assert server.recv(5) == b"hello"
    assert server.version() == "TLSv1.3"
    assert server.fileno() == server.sock.fileno()


def test_tls_socket_pending_counts_decrypted_bytes(tls_pair):
    server, client = tls_pair
    client.sendall(b"abcdef")
    assert server.recv(2) == b"ab"
    assert server.pending() == 4                    # poll() would not see these
    assert server.recv(10) == b"cdef"


@pytest.mark.parametrize("ending", ["close_notify", "ragged"])
def test_tls_socket_end_of_stream_is_empty_read(tls_pair, ending):
    """The peer's close_notify and a plain close without it both read as b"" (SSLSocket's
    suppress_ragged_eofs), never as an exception."""
    server, client = tls_pair
    if ending == "close_notify":
        client.setblocking(False)
        with pytest.raises(ssl.SSLWantReadError):
            client.unwrap()                         # sent; the server's answer is not awaited
    client.close()
    assert server.recv(100) == b""


def test_tls_socket_timeout_and_close_notify(tls_pair):
    server, client = tls_pair
    server.settimeout(0.05)
    with pytest.raises(socket.timeout):
        server.recv(1)                              # the plain socket's timeout governs TLS reads
    server.close_notify()                           # the peer never answers: returns at once
    client.settimeout(5)
    assert client.recv(1) == b""                    # the client saw close_notify


# ---- ssl_min_protocol_version / ssl_max_protocol_version (ours, as PostgreSQL's) ------------------

def versioned_client(pki, highest: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = client_context(pki)
    ctx.maximum_version = highest
    return ctx


@pytest.mark.parametrize("settings, client_highest, outcome", [
    ({}, ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
    ({}, ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
    ({"ssl_min_protocol_version": "TLSv1.3"}, ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
    ({"ssl_min_protocol_version": "TLSv1.3"}, ssl.TLSVersion.TLSv1_2, "refused"),
    ({"ssl_max_protocol_version": "TLSv1.2"}, ssl.TLSVersion.TLSv1_3, "TLSv1.2"),
], ids=["default", "default-client-1.2", "min-1.3", "min-1.3-client-1.2", "max-1.2"])
def test_protocol_version_limits(pki, settings, client_highest, outcome):
    front = tls.frontend_context(config(pki, **settings), str(pki.directory))
    server_side, client_side = handshake(front, versioned_client(pki, client_highest))
    if outcome == "refused":
        assert isinstance(server_side, tls.TlsHandshakeError)
        assert "unsupported protocol" in str(server_side)
        assert isinstance(client_side, (ssl.SSLError, OSError))
    else:
        assert server_side.version() == outcome == client_side.version()


@pytest.mark.parametrize("text, message", [
    ("ssl_min_protocol_version = 'TLSv1.3'\nssl_max_protocol_version = 'TLSv1.2'\n",
     'in file "pgpool.conf" line 2: ssl_max_protocol_version (TLSv1.2) cannot be lower than '
     "ssl_min_protocol_version (TLSv1.3)"),
    ("ssl_min_protocol_version = 'SSLv3'\n",
     'invalid value for parameter "ssl_min_protocol_version": "SSLv3" in file "pgpool.conf" line 1: '
     "expected one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"),
    ("ssl_max_protocol_version = 'tls1.3'\n",
     "expected one of '' (none), TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"),
])
def test_protocol_version_settings_errors_name_file_and_line(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config_text(text)
    assert message in str(info.value)


def test_protocol_version_names_are_case_insensitive():
    cfg = parse_config_text("ssl_min_protocol_version = 'tlsv1.3'\nssl_max_protocol_version = ''\n")
    assert (cfg.ssl_min_protocol_version, cfg.ssl_max_protocol_version) == ("TLSv1.3", "")
