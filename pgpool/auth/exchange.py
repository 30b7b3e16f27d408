"""Authentication message exchanges: pgpool as the server to a client, and as a client to PostgreSQL.

Message I/O is abstract (see the contract): ``io.send(bytes)`` writes whole messages and
``io.recv_message() -> (kind, payload)`` reads one (EOFError on disconnect, which is passed on:
psql, for one, hangs up on a password request and reconnects after prompting).

``authenticate_frontend`` runs the method pool_hba.conf chose and raises AuthError (a ready
ErrorResponse) on failure; it does not send AuthenticationOk.  ``authenticate_backend`` answers
PostgreSQL's requests after the StartupMessage and returns once AuthenticationOk arrived; an
ErrorResponse from PostgreSQL raises BackendAuthError with its fields for the caller to relay.
"""

from __future__ import annotations

import hmac
import os
import struct
from typing import Callable, Protocol

from pgpool.auth import md5 as md5mod
from pgpool.auth import pam
from pgpool.auth import scram
from pgpool.auth.pool_passwd import (AES_DECRYPT_FAILED, KEY_HINT, PasswordType, UnsupportedPasswordError,
                                     password_type, plain_password)
from pgpool.protocol.messages import auth_request, error_response, parse_error_fields, password_message

# Authentication request codes (PostgreSQL's AUTH_REQ_*).
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

INVALID_AUTHORIZATION = "28000"
INVALID_PASSWORD = "28P01"
PROTOCOL_VIOLATION = "08P01"
FEATURE_NOT_SUPPORTED = "0A000"
HINT_SEE_LOG = "see pgpool log for details"

_I32 = struct.Struct("!i")


class MessageIO(Protocol):
    def send(self, data: bytes) -> None: ...

    def recv_message(self) -> tuple[bytes, bytes]: ...


class AuthError(Exception):
    """Authentication failed; the fields of the ErrorResponse to send (``to_bytes()``)."""

    def __init__(self, message: str, detail: str | None = None, sqlstate: str = INVALID_PASSWORD,
                 severity: str = "ERROR", hint: str | None = None):
        super().__init__(message if detail is None else f"{message}: {detail}")
        self.message, self.detail, self.sqlstate = message, detail, sqlstate
        self.severity, self.hint = severity, hint

    def to_bytes(self) -> bytes:
        return error_response(self.severity, self.sqlstate, self.message, self.detail, self.hint)


class BackendAuthError(Exception):
    """PostgreSQL answered the login with an ErrorResponse; ``fields`` by type letter
    ('S', 'C', 'M', 'D', ...) and ``payload`` (the raw message body, to relay unchanged)."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.fields = parse_error_fields(payload)
        super().__init__(f"{self.fields.get('S', 'ERROR')}: {self.fields.get('M', 'authentication failed')}")

    @property
    def sqlstate(self) -> str | None:
        return self.fields.get("C")

    def to_bytes(self) -> bytes:
        return b"E" + _I32.pack(len(self.payload) + 4) + self.payload


def no_hba_entry_error(client_host: str, user: str, database: str, ssl: bool) -> AuthError:
    """What pgpool-II answers when no pool_hba.conf line matches (or a ``reject`` line does);
    ``client_host`` is the client's IP address, or "[local]" for a Unix socket."""
    return AuthError("client authentication failed",
                     f'no pool_hba.conf entry for host "{client_host}", user "{user}", database "{database}", '
                     f'{"SSL on" if ssl else "SSL off"}',
                     INVALID_AUTHORIZATION, "FATAL", HINT_SEE_LOG)


# ---- frontend side (pgpool is the server) ---------------------------------------------------------

def _read_password_packet(io: MessageIO) -> bytes:
    kind, payload = io.recv_message()
    if kind != b"p":
        received = kind.decode(errors="replace")
        raise AuthError("authentication failed",
                        f"unexpected password response received. expected 'p' received '{received}'",
                        PROTOCOL_VIOLATION, "FATAL")
    return payload


def _cstring(payload: bytes) -> str:
    if not payload.endswith(b"\0") or b"\0" in payload[:-1]:
        raise AuthError("invalid password packet size", sqlstate=PROTOCOL_VIOLATION, severity="FATAL")
    return payload[:-1].decode("utf-8", "surrogateescape")


def _missing_entry(method_name: str, user: str) -> AuthError:
    return AuthError(f"{method_name} authentication failed",
                     f'pool_passwd file does not contain an entry for "{user}"',
                     INVALID_AUTHORIZATION, "FATAL")


def _stored_plain(secret: str, failure: str) -> str | None:
    """The cleartext of a stored password (None for md5 / SCRAM); an AES one that does not
    decrypt -> AuthError (pgpool-II's wording)."""
    try:
        return plain_password(secret)
    except UnsupportedPasswordError:
        raise AuthError(failure, AES_DECRYPT_FAILED, INVALID_PASSWORD, "FATAL", KEY_HINT) from None


def _auth_password(io: MessageIO, user: str, stored: str | None, ctx: dict) -> str:
    """Cleartext password: without a stored password the client's is accepted as given (pgpool
    passes it on to PostgreSQL, which checks it); else it must match the stored one."""
    io.send(auth_request(AUTH_CLEARTEXT))
    password = _cstring(_read_password_packet(io))
    if stored is None:
        return password
    failure = "clear text authentication failed"
    kind = password_type(stored)
    if kind is PasswordType.MD5:
        ok = md5mod.verify_plain_password(password, stored, user)
    elif kind is PasswordType.SCRAM_SHA_256:
        ok = scram.verify_plain_password(password, stored)
    else:
        ok = hmac.compare_digest(password.encode("utf-8", "surrogateescape"),
                                 _stored_plain(stored, failure).encode("utf-8", "surrogateescape"))
    if not ok:
        raise AuthError(failure, "password does not match")
    return password


def _auth_md5(io: MessageIO, user: str, stored: str | None, ctx: dict) -> None:
    if stored is None:
        raise _missing_entry("md5", user)
    failure = "md5 authentication failed"
    if password_type(stored) is PasswordType.MD5:
        secret = stored
    else:
        secret = _stored_plain(stored, failure)
        if secret is None:
            raise AuthError(failure, f'pool_passwd file does not contain valid md5 entry for "{user}"',
                            INVALID_AUTHORIZATION, "FATAL")
    salt = ctx["random"](md5mod.SALT_LEN)
    io.send(auth_request(AUTH_MD5, salt))
    response = _cstring(_read_password_packet(io))
    if not md5mod.verify_salted_response(response, secret, user, salt):
        raise AuthError(failure, "password does not match")


def _sasl_initial_response(payload: bytes) -> tuple[str, bytes | None]:
    """(mechanism, initial client response or None) of a SASLInitialResponse."""
    end = payload.find(b"\0")
    if end < 0 or len(payload) < end + 5:
        raise AuthError("malformed SASLInitialResponse message", sqlstate=PROTOCOL_VIOLATION, severity="FATAL")
    mechanism = payload[:end].decode("ascii", "replace")
    (length,) = _I32.unpack_from(payload, end + 1)
    data = payload[end + 5:]
    if length == -1:
        return mechanism, None
    if length != len(data):
        raise AuthError("malformed SASLInitialResponse message", sqlstate=PROTOCOL_VIOLATION, severity="FATAL")
    return mechanism, data


def _auth_scram(io: MessageIO, user: str, stored: str | None, ctx: dict) -> None:
    if stored is None:
        raise _missing_entry("SCRAM", user)
    failure = "SCRAM authentication failed"
    secret = stored if password_type(stored) is PasswordType.SCRAM_SHA_256 else _stored_plain(stored, failure)
    if secret is None:
        raise AuthError(failure, f'pool_passwd file does not contain valid SCRAM entry for "{user}"',
                        INVALID_AUTHORIZATION, "FATAL")
    try:
        server = scram.ScramServer(secret, nonce=ctx["nonce"], channel_binding=ctx["channel_binding"])
    except ValueError:
        raise AuthError(failure, f'pool_passwd file does not contain valid SCRAM entry for "{user}"',
                        INVALID_AUTHORIZATION, "FATAL") from None
    offered = server.mechanisms()
    io.send(auth_request(AUTH_SASL, b"".join(name.encode() + b"\0" for name in offered) + b"\0"))
    mechanism, first = _sasl_initial_response(_read_password_packet(io))
    if mechanism == scram.MECHANISM_PLUS and mechanism not in offered:
        raise AuthError("client selected an invalid SASL authentication mechanism",
                        "SCRAM channel binding (SCRAM-SHA-256-PLUS) is offered on SSL connections only",
                        FEATURE_NOT_SUPPORTED, "FATAL")
    if mechanism not in offered:
        raise AuthError("client selected an invalid SASL authentication mechanism",
                        sqlstate=PROTOCOL_VIOLATION, severity="FATAL")
    try:
        if first is None:                   # no initial response: ask for it with an empty challenge
            io.send(auth_request(AUTH_SASL_CONTINUE))
            first = _read_password_packet(io)
        io.send(auth_request(AUTH_SASL_CONTINUE, server.first(first, plus=mechanism == scram.MECHANISM_PLUS)))
        final = server.final(_read_password_packet(io))
    except scram.ScramError as exc:
        raise AuthError(exc.message, exc.detail, exc.sqlstate, "FATAL") from None
    if final is None:
        raise AuthError("authentication failed", f'username "{user}" or password does not exist in backend')
    io.send(auth_request(AUTH_SASL_FINAL, final))


def _auth_trust(io: MessageIO, user: str, stored: str | None, ctx: dict) -> None:
    return None


def _auth_reject(io: MessageIO, user: str, stored: str | None, ctx: dict) -> None:
    raise no_hba_entry_error(ctx["client_host"], user, ctx["database"], ctx["ssl"])


def _auth_cert(io: MessageIO, user: str, stored: str | None, ctx: dict) -> None:
    """The CN of the client's verified certificate must equal the user name (case-insensitive,
    as pgpool-II); without SSL or a certificate there is none."""
    cn = ctx["cert_cn"] if ctx["ssl"] else None
    if cn is None or cn.lower() != user.lower():
        raise AuthError("CERT authentication failed", "no valid certificate presented", INVALID_AUTHORIZATION)


def _auth_pam(io: MessageIO, user: str, stored: str | None, ctx: dict) -> str:
    """PAM: the client's cleartext password is checked by PAM service ``pam_service``; it is
    returned, so pgpool can log in to PostgreSQL with it (pgpool-II uses pool_passwd only)."""
    try:
        pam.check_service(ctx["pam_service"])
        io.send(auth_request(AUTH_CLEARTEXT))
        password = _cstring(_read_password_packet(io))
        pam.authenticate(user, password, ctx["pam_service"])
    except pam.PamError as exc:
        raise AuthError(exc.message, exc.detail, exc.sqlstate, "FATAL", exc.hint) from None
    return password


def _auth_not_yet(method_name: str) -> Callable[..., None]:
    def refuse(io: MessageIO, user: str, stored: str | None, ctx: dict) -> None:
        raise AuthError(f"{method_name} authentication with pgpool failed for user \"{user}\"",
                        f"{method_name} authentication is not supported yet", FEATURE_NOT_SUPPORTED,
                        "FATAL", HINT_SEE_LOG)
    return refuse


FRONTEND_METHODS: dict[str, Callable[[MessageIO, str, str | None, dict], str | None]] = {
    "trust": _auth_trust,
    "reject": _auth_reject,
    "password": _auth_password,
    "md5": _auth_md5,
    "scram-sha-256": _auth_scram,
    "cert": _auth_cert,
    "pam": _auth_pam,
    "ldap": _auth_not_yet("LDAP"),
}

# the methods that check the client against its pool_passwd entry (the others get None for it)
POOL_PASSWD_METHODS = frozenset(("password", "md5", "scram-sha-256"))


def authenticate_frontend(io: MessageIO, method: str, user: str, database: str, stored_secret: str | None,
                          *, client_host: str = "[local]", ssl: bool = False, cert_cn: str | None = None,
                          channel_binding: bytes | None = None, pam_service: str = "pgpool",
                          random: Callable[[int], bytes] = os.urandom, scram_nonce: str | None = None) -> str | None:
    """Authenticate a client with pool_hba.conf ``method`` against ``stored_secret`` (the user's
    pool_passwd password, None when there is no entry).  Returns the client's cleartext password
    when the method revealed it ("password", "pam"), else None.  Raises AuthError; does not send
    AuthenticationOk.  ``ssl``: the client is on TLS; ``cert_cn``: the CN of its verified
    certificate; ``channel_binding``: our tls-server-end-point data (SCRAM-SHA-256-PLUS is then
    offered); ``pam_service``: the pool_hba.conf line's PAM service.  ``random`` / ``scram_nonce``
    make the md5 salt / SCRAM nonce reproducible."""
    try:
        handler = FRONTEND_METHODS[method]
    except KeyError:
        raise AuthError("client authentication failed",
                        f'authentication with pgpool failed for user "{user}": invalid authentication method',
                        INVALID_AUTHORIZATION, "FATAL", HINT_SEE_LOG) from None
    ctx = {"client_host": client_host, "database": database, "ssl": ssl, "cert_cn": cert_cn,
           "channel_binding": channel_binding if ssl else None, "pam_service": pam_service,
           "random": random, "nonce": scram_nonce}
    return handler(io, user, stored_secret, ctx)


# ---- backend side (pgpool is the client) ----------------------------------------------------------

def _backend_failure(detail: str, sqlstate: str = INVALID_PASSWORD) -> AuthError:
    return AuthError("failed to authenticate with backend", detail, sqlstate, "FATAL")


def _plain_for_backend(password: str | None, what: str, user: str) -> str:
    if password is None or password_type(password) in (PasswordType.MD5, PasswordType.SCRAM_SHA_256):
        raise _backend_failure(f'{what} authentication needs the plain text password of user "{user}" '
                               "(pool_passwd has none)", INVALID_PASSWORD)
    try:
        return plain_password(password)
    except UnsupportedPasswordError:
        raise _backend_failure(AES_DECRYPT_FAILED, INVALID_PASSWORD) from None


def _backend_recv(io: MessageIO) -> tuple[int, bytes]:
    """The next authentication request (code, data); ErrorResponse -> BackendAuthError."""
    while True:
        kind, payload = io.recv_message()
        if kind == b"E":
            raise BackendAuthError(payload)
        if kind == b"N":                     # a notice during login: nothing to answer
            continue
        if kind != b"R" or len(payload) < 4:
            raise _backend_failure(f"backend response with kind '{kind.decode(errors='replace')}' "
                                   "when expecting 'R'", PROTOCOL_VIOLATION)
        return _I32.unpack_from(payload)[0], payload[4:]


def _backend_scram(io: MessageIO, user: str, password: str | None, mechanisms_data: bytes,
                   channel_binding: bytes | None) -> None:
    mechanisms = [m.decode("ascii", "replace") for m in mechanisms_data.split(b"\0") if m]
    try:
        mechanism = scram.choose_mechanism(mechanisms, can_bind=channel_binding is not None)
        plus = mechanism == scram.MECHANISM_PLUS
        client = scram.ScramClient(_plain_for_backend(password, "SCRAM", user),
                                   channel_binding=channel_binding if plus else None,
                                   tls=channel_binding is not None)
        io.send(password_message(mechanism.encode() + b"\0" + _I32.pack(len(client.first())) + client.first()))
        code, data = _backend_recv(io)
        if code != AUTH_SASL_CONTINUE:
            raise _backend_failure(f"expected SASLContinue, received authentication request {code}",
                                   PROTOCOL_VIOLATION)
        io.send(password_message(client.final(data)))
        code, data = _backend_recv(io)
        if code != AUTH_SASL_FINAL:
            raise _backend_failure(f"expected SASLFinal, received authentication request {code}",
                                   PROTOCOL_VIOLATION)
        client.verify(data)
    except scram.ScramError as exc:
        raise _backend_failure(f"SCRAM authentication failed for user:{user}: {exc}", exc.sqlstate) from None


def authenticate_backend(io: MessageIO, user: str, password: str | None, *,
                         channel_binding: bytes | None = None, first: tuple[int, bytes] | None = None) -> None:
    """Log in to PostgreSQL as ``user`` after the StartupMessage was sent.  ``password`` is plain
    (``TEXT``-prefixed allowed) or an ``md5...`` hash (enough for md5, not for cleartext or SCRAM).
    ``channel_binding``: the server's tls-server-end-point data on a TLS connection (then
    SCRAM-SHA-256-PLUS is used when offered, else the "y" flag says we could bind); ``first``:
    the first request (code, data) when the caller already read it.  Returns when
    AuthenticationOk has been read."""
    while True:
        code, data = first if first is not None else _backend_recv(io)
        first = None
        if code == AUTH_OK:
            return
        if code == AUTH_CLEARTEXT:
            plain = _plain_for_backend(password, "clear text password", user)
            io.send(password_message(plain.encode() + b"\0"))
        elif code == AUTH_MD5:
            if password is None:
                raise _backend_failure(f'md5 authentication needs a password for user "{user}"')
            secret = password if password_type(password) is PasswordType.MD5 \
                else _plain_for_backend(password, "md5", user)
            io.send(password_message(md5mod.salted_response(user, secret, data[:md5mod.SALT_LEN]).encode() + b"\0"))
        elif code == AUTH_SASL:
            _backend_scram(io, user, password, data, channel_binding)
        else:
            raise _backend_failure(f"unsupported auth kind received from backend: authkind:{code}",
                                   FEATURE_NOT_SUPPORTED)
