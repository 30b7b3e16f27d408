"""pgpool.tools.certs: the generated CA, server and client certificates verify with OpenSSL (stdlib ssl)."""

import datetime
import socket
import ssl
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from pgpool.tools import certs


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return certs.make_pki(tmp_path_factory.mktemp("pki"))


def test_files_and_modes(pki):
    for name in ("ca.crt", "ca.key", "server.crt", "server.key"):
        assert (pki.directory / name).is_file()
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((pki.directory / key).stat().st_mode) == 0o600
    assert pki.server.common_name == "localhost"
    assert pki.pgpool_settings() == {"ssl": True, "ssl_cert": str(pki.directory / "server.crt"),
                                     "ssl_key": str(pki.directory / "server.key"),
                                     "ssl_ca_cert": str(pki.directory / "ca.crt")}


@pytest.mark.parametrize("extension, check", [
    (x509.BasicConstraints, lambda v: v.ca is False),
    (x509.SubjectAlternativeName, lambda v: v.get_values_for_type(x509.DNSName) == ["localhost"]
     and {str(a) for a in v.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}),
    (x509.ExtendedKeyUsage, lambda v: [u._name for u in v] == ["serverAuth"]),
])
def test_server_certificate_extensions(pki, extension, check):
    assert check(pki.server.cert.extensions.get_extension_for_class(extension).value)


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "::1"])
def test_server_certificate_verifies(pki, name):
    """A client trusting only the CA completes a handshake with full host name checking."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.server.cert_path, pki.server.key_path)
    client = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    a, b = socket.socketpair()
    with a, b, ThreadPoolExecutor(1) as pool:
        accepted = pool.submit(server.wrap_socket, a, server_side=True)
        tls = client.wrap_socket(b, server_hostname=name)
        accepted.result(10)
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_client_certificate(pki):
    client = pki.client("alice")
    assert client.common_name == "alice"
    assert client.cert.issuer == pki.ca.cert.subject
    usage = client.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u._name for u in usage] == ["clientAuth"]
    assert client.cert_path.name == "client-alice.crt"


def test_encrypted_key(tmp_path, pki):
    issued = certs.issue(pki.ca, "enc", server_names=["localhost"]).write(tmp_path, "enc", passphrase="s3cret")
    assert b"ENCRYPTED" in issued.key_path.read_bytes()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ssl.SSLError):
        ctx.load_cert_chain(issued.cert_path, issued.key_path, password="wrong")
    ctx.load_cert_chain(issued.cert_path, issued.key_path, password="s3cret")


def test_crl_lists_revoked_serials(tmp_path, pki):
    bad = certs.issue(pki.ca, "mallory", client=True)
    path = certs.make_crl(pki.ca, [bad], tmp_path / "ca.crl")
    crl = x509.load_pem_x509_crl(path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(bad.cert.serial_number) is not None
    assert crl.is_signature_valid(pki.ca.key.public_key())


def test_validity_and_hash(pki):
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    old = certs.issue(pki.ca, "old", client=True, days=1, not_before=past)
    assert old.cert.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc)
    sha384 = certs.issue(pki.ca, "h", server_names=["localhost"], hash_algorithm=hashes.SHA384())
    assert isinstance(sha384.cert.signature_hash_algorithm, hashes.SHA384)


def test_ensure_pki_reuses_existing(pki):
    again = certs.ensure_pki(pki.directory)
    assert again.ca.cert == pki.ca.cert and again.server.cert == pki.server.cert
