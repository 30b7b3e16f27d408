"""TLS (SSL) for pgpool: the contexts towards clients and towards PostgreSQL, and both handshakes.

Follows pgpool-II 4.3 (src/utils/pool_ssl.c):

- Towards clients (``ssl = on``): one server context built at startup from ``ssl_cert``,
  ``ssl_key`` (with ``ssl_passphrase_command`` for an encrypted key), ``ssl_ca_cert`` /
  ``ssl_ca_cert_dir`` (client certificates are then requested and verified when presented, for
  ``cert`` authentication), ``ssl_crl_file``, ``ssl_ciphers``, ``ssl_prefer_server_ciphers``,
  ``ssl_ecdh_curve`` and ``ssl_dh_params_file``; no session tickets.  If it cannot be built, the
  problem is logged naming the setting and clients asking for SSL are told 'N' (pgpool-II keeps
  running the same way).
- Towards PostgreSQL (``ssl = on``): every backend connection starts with an SSLRequest; 'S' gets
  a TLS handshake, 'N' continues in plain text.  The server certificate is verified against
  ``ssl_ca_cert`` / ``ssl_ca_cert_dir`` when set (chain only, no host name check, as pgpool-II).

pgpool-II 4.3 has no protocol-version settings; ours are PostgreSQL's ``ssl_min_protocol_version``
(default TLSv1.2) and ``ssl_max_protocol_version`` (default none), for client connections.  OpenSSL 3
refuses TLS 1.0 and 1.1 at its default security level whatever the minimum says (``ssl_ciphers``
with ``@SECLEVEL=0`` allows them).  Towards PostgreSQL TLS 1.2 is the minimum.
File settings may be relative to the directory of pgpool.conf (pgpool-II resolves ssl_cert,
ssl_key, ssl_ca_cert and ssl_crl_file so; here every TLS file setting is).
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import struct
import subprocess
from dataclasses import dataclass, field

from pgpool import log
from pgpool.config import settings
from pgpool.protocol import messages as m

SSL_REQUEST = struct.pack("!ii", 8, m.SSL_REQUEST_CODE)
PASSPHRASE_PROMPT = "Enter PEM pass phrase:"
MIN_VERSION = ssl.TLSVersion.TLSv1_2          # towards PostgreSQL (libpq's default minimum too)
# ssl_min/max_protocol_version names (PostgreSQL's: TLSv1.2) -> ssl.TLSVersion (TLSv1_2)
TLS_VERSIONS = {name: ssl.TLSVersion[name.replace(".", "_")] for name, _ in settings.TLS_VERSIONS}
KEY_MODE_DETAIL = ("File must have permissions u=rw (0600) or less if owned by the Pgpool-II user, "
                   "or permissions u=rw,g=r (0640) or less if owned by root.")


class TlsConfigError(Exception):
    """A TLS setting that cannot be used; ``setting`` names it."""

    def __init__(self, setting: str, message: str):
        super().__init__(message)
        self.setting, self.message = setting, message


class TlsHandshakeError(ConnectionError):
    """A TLS handshake (or the SSLRequest exchange before it) failed: a connection error."""


@dataclass(frozen=True)
class FrontendTls:
    """The server-side context and the ``tls-server-end-point`` channel-binding data of our
    certificate (None when its signature algorithm has no usable hash)."""

    context: ssl.SSLContext
    end_point: bytes | None
    verify_clients: bool


@dataclass
class TlsSetup:
    frontend: FrontendTls | None = None
    backend: ssl.SSLContext | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)   # (level, message)


def _reason(exc: BaseException) -> str:
    """OpenSSL's reason string ("key values mismatch") or the OS error text."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def resolve(path: str, config_dir: str) -> str:
    """``path`` made absolute relative to the directory of pgpool.conf ('' stays '')."""
    return path if not path or os.path.isabs(path) else os.path.join(config_dir, path)


def end_point_hash(der: bytes) -> bytes | None:
    """RFC 5929 tls-server-end-point data: the certificate hashed with its signature's hash
    (SHA-256 in place of MD5 / SHA-1); None when the signature has no single hash (Ed25519)."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    try:
        algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm):
        return None
    if algorithm is None:
        return None
    if isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(der)
    return digest.finalize()


def run_passphrase_command(command: str, prompt: str = PASSPHRASE_PROMPT) -> str:
    """Run ``ssl_passphrase_command`` (``%p`` = prompt, ``%%`` = %) and return its first output
    line without the newline; TlsConfigError when it cannot run or exits non-zero."""
    expanded, i = [], 0
    while i < len(command):
        pair = command[i:i + 2]
        if pair in ("%p", "%%"):
            expanded.append(prompt if pair == "%p" else "%")
            i += 2
        else:
            expanded.append(command[i])
            i += 1
    text = "".join(expanded)
    try:
        proc = subprocess.run(text, shell=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TlsConfigError("ssl_passphrase_command", f'could not execute command "{text}": {exc}') from None
    if proc.returncode != 0:
        raise TlsConfigError("ssl_passphrase_command", f'command "{text}" failed')
    line = proc.stdout.decode("utf-8", "surrogateescape").split("\n", 1)[0]
    return line


def _read_certificate(path: str) -> bytes:
    """The DER form of the first certificate in PEM file ``path`` (checks that it loads)."""
    if not path:
        raise TlsConfigError("ssl_cert", 'ssl = on but "ssl_cert" is not set')
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    try:
        with open(path, "rb") as fh:
            return x509.load_pem_x509_certificates(fh.read())[0].public_bytes(Encoding.DER)
    except OSError as exc:
        raise TlsConfigError("ssl_cert", f'could not load server certificate file "{path}": '
                                         f"{_reason(exc)}") from None
    except ValueError:
        raise TlsConfigError("ssl_cert", f'could not load server certificate file "{path}": '
                                         "no PEM certificate found") from None


def _check_key_file(path: str, problems: list) -> None:
    if not path:
        raise TlsConfigError("ssl_key", 'ssl = on but "ssl_key" is not set')
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TlsConfigError("ssl_key", f'could not access private key file "{path}": {_reason(exc)}') from None
    if not stat.S_ISREG(st.st_mode):
        raise TlsConfigError("ssl_key", f'private key file "{path}" is not a regular file')
    loose = (st.st_uid == os.geteuid() and st.st_mode & 0o077) or (st.st_uid == 0 and st.st_mode & 0o037)
    if loose:
        problems.append(("WARNING", f'private key file "{path}" has group or world access: {KEY_MODE_DETAIL}'))


def _load_key_pair(context: ssl.SSLContext, cert: str, key: str, passphrase_command: str) -> None:
    asked: list[str] = []
    failure: list[TlsConfigError] = []

    def passphrase() -> str:
        asked.append("yes")
        if not passphrase_command:
            return ""
        try:
            return run_passphrase_command(passphrase_command)
        except TlsConfigError as exc:
            failure.append(exc)
            return ""

    try:
        context.load_cert_chain(cert, key, password=passphrase)
    except (ssl.SSLError, OSError) as exc:
        if failure:
            raise failure[0] from None
        reason = _reason(exc)
        if "key values mismatch" in reason:
            raise TlsConfigError("ssl_key", f"check of private key failed: {reason}") from None
        if asked and not passphrase_command:
            raise TlsConfigError("ssl_passphrase_command",
                                 f'private key file "{key}" cannot be loaded because it requires a passphrase '
                                 "and ssl_passphrase_command is not set") from None
        if asked:
            reason = "bad decrypt (wrong passphrase from ssl_passphrase_command)"
        elif isinstance(exc, ssl.SSLError) and not exc.reason:
            reason = "no PEM private key found, or it is damaged"
        raise TlsConfigError("ssl_key", f'could not load private key file "{key}": {reason}') from None


def frontend_context(cfg, config_dir: str, problems: list | None = None) -> FrontendTls:
    """The server context for client connections; TlsConfigError names the first bad setting.
    Warnings (loose key file mode, unusable DH file) are appended to ``problems``."""
    problems = [] if problems is None else problems
    cert = resolve(cfg.ssl_cert, config_dir)
    key = resolve(cfg.ssl_key, config_dir)
    der = _read_certificate(cert)
    _check_key_file(key, problems)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[cfg.ssl_min_protocol_version]
    if cfg.ssl_max_protocol_version:
        context.maximum_version = TLS_VERSIONS[cfg.ssl_max_protocol_version]
    # No session tickets: OP_NO_TICKET stops TLS 1.2's; TLS 1.3 would still send 2 stateful
    # ones per handshake, for a per-process session cache no client can use (its next
    # connection lands on another worker).  PostgreSQL sends none either.
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    _load_key_pair(context, cert, key, cfg.ssl_passphrase_command)
    if cfg.ssl_dh_params_file:
        dh_file = resolve(cfg.ssl_dh_params_file, config_dir)
        try:
            context.load_dh_params(dh_file)
        except (ssl.SSLError, OSError) as exc:
            problems.append(("WARNING", f'could not load DH parameters file "{dh_file}" (ssl_dh_params_file): '
                                        f"{_reason(exc)}; using the built-in parameters"))
    try:
        context.set_ecdh_curve(cfg.ssl_ecdh_curve)
    except ValueError:
        raise TlsConfigError("ssl_ecdh_curve", f"ECDH: unrecognized curve name: {cfg.ssl_ecdh_curve}") from None
    try:
        context.set_ciphers(cfg.ssl_ciphers)
    except ssl.SSLError:
        raise TlsConfigError("ssl_ciphers", f'could not set the cipher list "{cfg.ssl_ciphers}": '
                                            "no cipher can be selected") from None
    if cfg.ssl_prefer_server_ciphers:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    ca_cert = resolve(cfg.ssl_ca_cert, config_dir)
    if ca_cert:
        ca_dir = resolve(cfg.ssl_ca_cert_dir, config_dir) or None
        try:
            context.load_verify_locations(ca_cert, ca_dir)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError("ssl_ca_cert", f'could not load root certificate file "{ca_cert}": '
                                                f"{_reason(exc)}") from None
    if cfg.ssl_crl_file:
        crl = resolve(cfg.ssl_crl_file, config_dir)
        try:
            context.load_verify_locations(crl)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError("ssl_crl_file", f'could not load SSL certificate revocation list file "{crl}": '
                                                 f"{_reason(exc)}") from None
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    if ca_cert:
        # ask for a client certificate, verify it when presented, do not require one
        context.verify_mode = ssl.CERT_OPTIONAL
    return FrontendTls(context, end_point_hash(der), bool(ca_cert))


def backend_context(cfg, config_dir: str) -> ssl.SSLContext:
    """The client context for connections to PostgreSQL: verifies the server's certificate chain
    against ssl_ca_cert / ssl_ca_cert_dir when either is set (no host name check, as pgpool-II)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MIN_VERSION
    context.check_hostname = False
    ca_cert = resolve(cfg.ssl_ca_cert, config_dir) or None
    ca_dir = resolve(cfg.ssl_ca_cert_dir, config_dir) or None
    if ca_cert or ca_dir:
        try:
            context.load_verify_locations(ca_cert, ca_dir)
        except (ssl.SSLError, OSError) as exc:
            setting = "ssl_ca_cert" if ca_cert else "ssl_ca_cert_dir"
            raise TlsConfigError(setting, f'SSL verification setup failed: could not load "{ca_cert or ca_dir}": '
                                          f"{_reason(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def build(cfg, config_file: str) -> TlsSetup:
    """Both contexts for ``cfg`` (none when ssl is off); what went wrong is in ``problems``."""
    setup = TlsSetup()
    if not cfg.ssl:
        return setup
    config_dir = os.path.dirname(os.path.abspath(config_file))
    try:
        setup.frontend = frontend_context(cfg, config_dir, setup.problems)
    except TlsConfigError as exc:
        setup.problems.append(("WARNING", f"{exc.message} (check {exc.setting}); SSL towards clients is "
                                          "disabled: clients asking for it are answered 'N'"))
    try:
        setup.backend = backend_context(cfg, config_dir)
    except TlsConfigError as exc:
        setup.problems.append(("WARNING", f"{exc.message} (check {exc.setting}); connections to "
                                          "PostgreSQL will not use SSL"))
    return setup


# The contexts of this process: set at startup by configure() (before the workers fork).
_current = TlsSetup()


def configure(cfg, config_file: str) -> TlsSetup:
    """Build the contexts for ``cfg``, log what went wrong, make them this process's."""
    global _current
    setup = build(cfg, config_file)
    for level, message in setup.problems:
        log.log(level, message)
    _current = setup
    return setup


def frontend() -> FrontendTls | None:
    return _current.frontend


def backend() -> ssl.SSLContext | None:
    return _current.backend


# ---- handshakes ---------------------------------------------------------------------------------

class TlsSocket:
    """A TLS connection over a plain socket, with the part of the socket interface pgpool uses.

    It drives the ssl module's C-level connection object directly.  ``ssl.SSLSocket`` would cost
    about 100 µs more per connection on this data path: it moves the descriptor into a second
    socket object, checks it with five system calls, and puts three Python layers under every read
    and write.  That is a tenth of a connection-per-transaction client's handshake.  The plain
    socket stays the owner of the descriptor: its timeout and blocking mode govern the TLS calls,
    as they do for SSLSocket."""

    __slots__ = ("sock", "conn")

    def __init__(self, sock: socket.socket, conn):
        self.sock = sock
        self.conn = conn          # the _ssl connection object (SSLContext._wrap_socket)

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, size: int) -> bytes:
        """Up to ``size`` decrypted bytes; b"" at the end of the stream, whether the peer said
        close_notify or just closed (SSLSocket's suppress_ragged_eofs)."""
        try:
            return self.conn.read(size)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""

    def sendall(self, data) -> None:
        write = self.conn.write
        sent = write(data)          # without partial writes, a blocking write is whole
        while sent < len(data):
            data = data[sent:]
            sent = write(data)

    def pending(self) -> int:
        """Decrypted bytes already read from the socket (poll() cannot see them)."""
        return self.conn.pending()

    def getpeercert(self, binary_form: bool = False):
        return self.conn.getpeercert(binary_form)

    def version(self) -> str | None:
        return self.conn.version()

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def setsockopt(self, *args) -> None:
        self.sock.setsockopt(*args)

    def close_notify(self) -> None:
        """Say close_notify without waiting for the peer's (the socket is made non-blocking)."""
        try:
            self.sock.setblocking(False)
            self.conn.shutdown()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.sock.close()


def _handshake(sock: socket.socket, context: ssl.SSLContext, server_side: bool) -> TlsSocket:
    conn = context._wrap_socket(sock, server_side, None)   # noqa: SLF001 (see TlsSocket)
    conn.do_handshake()
    return TlsSocket(sock, conn)


def accept(sock: socket.socket, tls: FrontendTls) -> TlsSocket:
    """The server side of the handshake after 'S' was sent (TlsHandshakeError on failure)."""
    try:
        return _handshake(sock, tls.context, True)
    except ssl.SSLCertVerificationError as exc:
        raise TlsHandshakeError("SSL handshake with the client failed: certificate verify failed: "
                                f"{exc.verify_message}") from exc
    except (ssl.SSLError, OSError) as exc:
        raise TlsHandshakeError(f"SSL handshake with the client failed: {_reason(exc)}") from exc


def negotiate_backend(sock: socket.socket, context: ssl.SSLContext) -> socket.socket | TlsSocket:
    """Ask PostgreSQL for SSL (SSLRequest); the TLS socket after 'S', ``sock`` itself after 'N'."""
    try:
        sock.sendall(SSL_REQUEST)
        answer = sock.recv(1)
    except OSError as exc:
        raise TlsHandshakeError(f"error while attempting to negotiate a secure connection: {exc}") from exc
    if answer == b"N":
        return sock
    if answer != b"S":
        shown = answer.decode("latin-1") if answer else "end of file"
        raise TlsHandshakeError("error while attempting to negotiate a secure connection, "
                                f"unhandled response: {shown}")
    try:
        return _handshake(sock, context, False)
    except ssl.SSLCertVerificationError as exc:
        raise TlsHandshakeError(f"SSL handshake with PostgreSQL failed: certificate verify failed: "
                                f"{exc.verify_message}") from exc
    except (ssl.SSLError, OSError) as exc:
        raise TlsHandshakeError(f"SSL handshake with PostgreSQL failed: {_reason(exc)}") from exc


def peer_common_name(sock: TlsSocket) -> str | None:
    """The CN of the client's verified certificate (None when it sent none)."""
    cert = sock.getpeercert()
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def peer_end_point(sock: TlsSocket) -> bytes | None:
    """tls-server-end-point data of the server at the other end of ``sock`` (for SCRAM-PLUS)."""
    der = sock.getpeercert(binary_form=True)
    return end_point_hash(der) if der else None
