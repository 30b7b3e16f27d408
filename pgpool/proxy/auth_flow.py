"""How a session authenticates: pool_hba.conf + pool_passwd, or pass-through to the main backend.

- enable_pool_hba = on: the pool_hba.conf line's method authenticates the client (against
  pool_passwd, PAM or its TLS certificate), then pgpool logs in to each backend with the password
  it learned (password / pam methods) or the pool_passwd entry.  A pool_hba.conf that failed to
  load refuses everyone ("missing or erroneous pool_hba.conf file"), as pgpool-II.
- enable_pool_hba = off: driven by the main backend's request, as pgpool-II's pool_do_auth:
  SCRAM is answered by pgpool itself when pool_passwd has a usable password (the client is
  authenticated with it, then every backend); with allow_clear_text_frontend_auth the client is
  asked for its password in clear text when pool_passwd has none (md5 and SCRAM backends, several
  nodes).  Otherwise the main backend's challenge is relayed to the client (pgpool-II relays md5
  only; relaying SCRAM too lets a single-node setup work without pool_passwd) -- never offering
  SCRAM-SHA-256-PLUS, whose binding to PostgreSQL's certificate the client cannot see.  Other
  backends get the password captured from a cleartext exchange or the pool_passwd entry.
- Reuse of a pooled slot replays the exchange as pgpool-II does: cleartext passwords are
  compared, md5 reuses the original salt and response, SCRAM by pgpool uses pool_passwd again; a
  relayed SCRAM session cannot be verified again and is not cached.
"""

import hmac
import struct
from typing import NamedTuple

from pgpool import log
from pgpool.auth import exchange, scram
from pgpool.auth.pool_passwd import PasswordType, UnsupportedPasswordError, password_type, plain_password
from pgpool.protocol import messages as m
from pgpool.proxy import tls
from pgpool.proxy.backend import BackendError

_I32 = struct.Struct("!i")
HINT_SEE_LOG = "see pgpool log for details"
AUTH_BY_PGPOOL = -1              # ps.auth["kind"]: pgpool authenticated the client with pool_passwd


def _session_end(message: str, reply: bytes):
    from pgpool.proxy.session import SessionEnd
    return SessionEnd(message, reply)


class ClientInfo(NamedTuple):
    """What authentication needs to know about the client's connection."""

    host: str = "[local]"                 # IP address, "[local]" for a Unix socket
    tls: bool = False
    cert_cn: str | None = None            # CN of its verified certificate
    channel_binding: bytes | None = None  # our tls-server-end-point data (SCRAM-SHA-256-PLUS)

    @classmethod
    def of(cls, sock, host: str) -> "ClientInfo":
        if not isinstance(sock, tls.TlsSocket):
            return cls(host)
        front = tls.frontend()
        return cls(host, True, tls.peer_common_name(sock), front.end_point if front else None)


def hba_rule(worker, is_unix: bool, client_host: str, database: str, user: str, ssl_on: bool):
    """The pool_hba.conf line (HbaRule) that governs the connection; SessionEnd when there is none,
    it says ``reject``, or pool_hba.conf could not be loaded."""
    hba = worker.hba
    if hba is None:
        raise _session_end(f"pool_hba.conf is missing or erroneous; refusing user \"{user}\"",
                           m.error_response("FATAL", exchange.INVALID_AUTHORIZATION,
                                            "client authentication failed",
                                            "missing or erroneous pool_hba.conf file", HINT_SEE_LOG))
    rule = hba.match("local" if is_unix else "host", ssl_on, None if is_unix else client_host,
                     database, user)
    if rule is None or rule.method == "reject":
        err = exchange.no_hba_entry_error(client_host, user, database, ssl_on)
        raise _session_end(str(err), err.to_bytes())
    return rule


def _stored_secret(worker, user: str) -> str | None:
    pp = worker.pool_passwd
    if pp is None:
        return None
    entry = pp.lookup(user)
    return entry.password if entry is not None else None


def authenticate_client(worker, io, rule, user: str, database: str) -> str | None:
    """pool_hba.conf authentication by ``rule``; returns the cleartext password when the method
    revealed it (password, pam)."""
    client = io.client
    stored = _stored_secret(worker, user) if rule.method in exchange.POOL_PASSWD_METHODS else None
    try:
        password = exchange.authenticate_frontend(
            io, rule.method, user, database, stored, client_host=client.host,
            ssl=client.tls, cert_cn=client.cert_cn, channel_binding=client.channel_binding,
            pam_service=rule.pam_service)
    except exchange.AuthError as e:
        if rule.method == "cert" and client.cert_cn is not None:
            log.log("LOG", f"SSL certificate authentication for user \"{user}\" failed",
                    f"connecting user is \"{user}\" and ssl certificate CN is \"{client.cert_cn}\"")
        raise _session_end(f"authentication failed for user \"{user}\": {e}", e.to_bytes()) from e
    if rule.method == "cert":
        log.log("LOG", f"SSL certificate authentication for user \"{user}\" with Pgpool-II is successful")
    return password


def _channel_binding(conn) -> bytes | None:
    """The tls-server-end-point data of a backend connection on TLS."""
    return tls.peer_end_point(conn.sock) if isinstance(conn.sock, tls.TlsSocket) else None


def _backend_error(conn, e: Exception) -> BackendError:
    if isinstance(e, exchange.BackendAuthError):
        return BackendError(conn.node_id, e.fields.get("M", "authentication failed"), e.fields)
    return BackendError(conn.node_id, str(e), {"S": e.severity, "C": e.sqlstate, "M": e.message,
                                               "D": e.detail or ""})


def authenticate_backend(worker, conn, user: str, client_password: str | None, ps,
                         first: tuple[int, bytes] | None = None) -> None:
    """Log in to one backend with the client's password (when known) or pool_passwd's."""
    password = client_password or _stored_secret(worker, user)
    try:
        exchange.authenticate_backend(conn, user, password, channel_binding=_channel_binding(conn), first=first)
    except (exchange.BackendAuthError, exchange.AuthError) as e:
        raise _backend_error(conn, e) from e


def _scram_password(worker, user: str) -> str | None:
    """The pool_passwd password pgpool can answer SCRAM with on both sides (plain, TEXT, AES)."""
    secret = _stored_secret(worker, user)
    if secret is None or password_type(secret) in (PasswordType.MD5, PasswordType.SCRAM_SHA_256):
        return None
    try:
        return plain_password(secret)
    except UnsupportedPasswordError:
        return None


def _clear_text_from_client(io, user: str, detail: str) -> str:
    log.log("LOG", "using clear text authentication with frontend", detail,
            hint="you can disable this behavior by setting allow_clear_text_frontend_auth to off")
    try:
        return exchange.authenticate_frontend(io, "password", user, "", None, client_host=io.client.host)
    except exchange.AuthError as e:
        raise _session_end(f"authentication failed for user \"{user}\": {e}", e.to_bytes()) from e


def _read_request(conn) -> tuple[int, bytes]:
    """The main backend's first authentication request (code, data)."""
    while True:
        kind, payload = conn.recv_message()
        if kind == b"E":
            raise BackendError(conn.node_id, "backend refused authentication", m.parse_error_fields(payload))
        if kind == b"N":
            continue
        if kind != b"R" or len(payload) < 4:
            raise BackendError(conn.node_id, f"unexpected message \"{kind.decode(errors='replace')}\""
                                             " during authentication")
        return _I32.unpack_from(payload)[0], payload[4:]


def pass_through(worker, io, conn, ps, several: bool) -> str | None:
    """Authenticate the client driven by the main backend's request (enable_pool_hba = off) and
    log in to the main backend.  ``several``: other backends follow.  Returns the client's
    cleartext password when it became known.  Records in ps.auth how to verify the client
    again when the slot is reused."""
    user = ps.user
    code, data = _read_request(conn)
    if code in (exchange.AUTH_SASL, exchange.AUTH_MD5) and (code == exchange.AUTH_SASL or several):
        password = _scram_password(worker, user) if code == exchange.AUTH_SASL else None
        if password is not None:                    # pgpool answers SCRAM itself, as pgpool-II
            client = io.client
            try:
                exchange.authenticate_frontend(io, "scram-sha-256", user, ps.database, password,
                                               client_host=client.host, ssl=client.tls,
                                               channel_binding=client.channel_binding)
            except exchange.AuthError as e:
                raise _session_end(f"authentication failed for user \"{user}\": {e}", e.to_bytes()) from e
            authenticate_backend(worker, conn, user, password, ps, first=(code, data))
            ps.auth.update(kind=AUTH_BY_PGPOOL)
            return password
        if _stored_secret(worker, user) is None and worker.cfg.allow_clear_text_frontend_auth:
            method = "SCRAM" if code == exchange.AUTH_SASL else "md5"
            password = _clear_text_from_client(io, user, f"backend will still use {method} auth")
            authenticate_backend(worker, conn, user, password, ps, first=(code, data))
            ps.auth.update(kind=exchange.AUTH_CLEARTEXT, password=password)
            return password
    return _relay(io, conn, ps, code, data)


def _relay(io, conn, ps, code: int, data: bytes) -> str | None:
    """Relay the main backend's challenges to the client and its answers back."""
    password = None
    while True:
        if code == exchange.AUTH_OK:
            ps.auth.setdefault("kind", 0)
            return password
        if code == exchange.AUTH_SASL:
            offered = [name for name in data.split(b"\0") if name and name != scram.MECHANISM_PLUS.encode()]
            data = b"".join(name + b"\0" for name in offered) + b"\0"
        io.send(m.auth_request(code, data))
        if code != exchange.AUTH_SASL_FINAL:      # the server's signature needs no answer
            kind, reply = io.recv_message()
            if kind != b"p":
                raise _session_end("client sent an unexpected message during authentication",
                                   m.error_response("FATAL", "08P01",
                                                    "expected password response, got message type "
                                                    f"{kind.decode(errors='replace')}"))
            conn.send(m.message(b"p", reply))
            _remember(ps, code, data, reply)
            if code == exchange.AUTH_CLEARTEXT:
                password = reply.rstrip(b"\0").decode("utf-8", "replace")
        code, data = _read_request(conn)


def _remember(ps, code: int, data: bytes, reply: bytes) -> None:
    if code == exchange.AUTH_CLEARTEXT:
        ps.auth.update(kind=code, password=reply.rstrip(b"\0").decode("utf-8", "replace"))
    elif code == exchange.AUTH_MD5:
        ps.auth.update(kind=code, salt=data[:4], response=reply)
    else:
        ps.auth.update(kind=code, no_cache=True)


def reauthenticate(worker, io, ps, hba_rule, startup) -> None:
    """Authenticate a client that is about to reuse a pooled slot."""
    if hba_rule is not None:
        authenticate_client(worker, io, hba_rule, startup.user, startup.database)
        return
    kind = ps.auth.get("kind", 0)
    if kind == AUTH_BY_PGPOOL:
        password = _scram_password(worker, startup.user)
        if password is not None:
            client = io.client
            try:
                exchange.authenticate_frontend(io, "scram-sha-256", startup.user, startup.database, password,
                                               client_host=client.host, ssl=client.tls,
                                               channel_binding=client.channel_binding)
                return
            except exchange.AuthError as e:
                raise _session_end(f"authentication failed for user \"{startup.user}\": {e}",
                                   e.to_bytes()) from e
    failed = _session_end(f"password authentication failed for user \"{startup.user}\"",
                          m.error_response("FATAL", "28P01",
                                           f"password authentication failed for user "
                                           f"\"{startup.user}\""))
    if kind == 0:
        return
    if kind == exchange.AUTH_CLEARTEXT:
        io.send(m.auth_request(exchange.AUTH_CLEARTEXT))
        k, reply = io.recv_message()
        expected = ps.auth["password"].encode("utf-8", "replace") + b"\0"
        if k != b"p" or not hmac.compare_digest(reply, expected):
            raise failed
        return
    if kind == exchange.AUTH_MD5:
        io.send(m.auth_request(exchange.AUTH_MD5, ps.auth["salt"]))
        k, reply = io.recv_message()
        if k != b"p" or not hmac.compare_digest(reply, ps.auth["response"]):
            raise failed
        return
    raise failed
