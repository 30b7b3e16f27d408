"""Test and development certificates: a private CA, server and client certificates, CRLs.

Used by the test suite (TLS towards clients and towards PostgreSQL, ``cert`` authentication)
and by ``make run`` when ``ssl = on``.  Built with ``cryptography`` (the library pyOpenSSL sits on;
pyOpenSSL itself no longer builds certificate extensions).  Keys are EC P-256 (fast to make);
files are PEM, keys written with mode 0600 as PostgreSQL and pgpool-II require.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DAYS = 3650
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass
class Issued:
    """A certificate and its key, in memory and (once written) on disk."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path | None = None
    key_path: Path | None = None

    @property
    def common_name(self) -> str:
        return self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, passphrase: str | None = None) -> bytes:
        encryption = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
                      else serialization.NoEncryption())
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL, encryption)

    def write(self, directory: str | os.PathLike, stem: str, passphrase: str | None = None,
              owner: tuple[int, int] | None = None) -> Issued:
        """Write ``<stem>.crt`` and ``<stem>.key`` (0600; ``owner`` = (uid, gid) to chown both)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_path, self.key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        self.cert_path.write_bytes(self.cert_pem())
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.key_pem(passphrase))
        os.chmod(self.key_path, 0o600)
        if owner is not None:
            for path in (self.cert_path, self.key_path):
                os.chown(path, *owner)
        return self


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pgpool-py test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(names) -> x509.SubjectAlternativeName:
    entries = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _builder(subject: str, issuer: x509.Name, public_key, days: int,
             not_before: datetime.datetime | None) -> x509.CertificateBuilder:
    start = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days)))


def make_ca(common_name: str = "pgpool-py test CA", days: int = DEFAULT_DAYS) -> Issued:
    """A self-signed CA certificate and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(common_name, _name(common_name), key.public_key(), days, None)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


def issue(ca: Issued, common_name: str, *, server_names=(), client: bool = False,
          days: int = DEFAULT_DAYS, not_before: datetime.datetime | None = None,
          hash_algorithm: hashes.HashAlgorithm | None = None) -> Issued:
    """A certificate signed by ``ca``: for a server (``server_names`` become its subjectAltName)
    and/or a client (``client``: clientAuth usage; PostgreSQL and pgpool match its CN to the user)."""
    key = ec.generate_private_key(ec.SECP256R1())
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server_names else []) + \
             ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    builder = (_builder(common_name, ca.cert.subject, key.public_key(), days, not_before)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                              critical=False))
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names:
        builder = builder.add_extension(_san(server_names), critical=False)
    return Issued(builder.sign(ca.key, hash_algorithm or hashes.SHA256()), key)


def make_crl(ca: Issued, revoked: list[Issued], path: str | os.PathLike, days: int = DEFAULT_DAYS) -> Path:
    """Write a PEM CRL of ``ca`` listing ``revoked``; returns its path."""
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
               .last_update(now).next_update(now + datetime.timedelta(days=days)))
    for item in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(item.cert.serial_number).revocation_date(now).build())
    path = Path(path)
    path.write_bytes(builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class Pki:
    """A CA with a server certificate (localhost, 127.0.0.1, ::1), written to one directory."""

    directory: Path
    ca: Issued
    server: Issued

    def client(self, user: str, ca: Issued | None = None, owner: tuple[int, int] | None = None) -> Issued:
        """A client certificate with CN ``user`` (signed by this CA unless ``ca``), written as
        ``client-<user>.crt`` / ``.key``."""
        return issue(ca or self.ca, user, client=True).write(self.directory, f"client-{user}", owner=owner)

    def pgpool_settings(self) -> dict[str, object]:
        """pgpool.conf settings for TLS towards clients and verified TLS towards PostgreSQL."""
        return {"ssl": True, "ssl_cert": str(self.server.cert_path), "ssl_key": str(self.server.key_path),
                "ssl_ca_cert": str(self.ca.cert_path)}


def make_pki(directory: str | os.PathLike, owner: tuple[int, int] | None = None) -> Pki:
    """Create ``ca.crt``/``ca.key`` and ``server.crt``/``server.key`` in ``directory``."""
    ca = make_ca().write(directory, "ca", owner=owner)
    server = issue(ca, "localhost", server_names=SERVER_NAMES).write(directory, "server", owner=owner)
    return Pki(Path(directory), ca, server)


def ensure_pki(directory: str | os.PathLike) -> Pki:
    """The PKI in ``directory``: reused when ca.* and server.* are already there, else made."""
    directory = Path(directory)
    paths = [directory / name for name in ("ca.crt", "ca.key", "server.crt", "server.key")]
    if not all(p.exists() for p in paths):
        return make_pki(directory)

    def load(stem: str) -> Issued:
        cert = x509.load_pem_x509_certificate((directory / f"{stem}.crt").read_bytes())
        key = serialization.load_pem_private_key((directory / f"{stem}.key").read_bytes(), None)
        return Issued(cert, key, directory / f"{stem}.crt", directory / f"{stem}.key")
    return Pki(directory, load("ca"), load("server"))
