"""How a session authenticates: pool_hba.conf + pool_passwd, or pass-through to the main backend.

- enable_pool_hba = on: the pool_hba.conf method authenticates the client against pool_passwd,
  then pgpool logs in to each backend with the password it learned (cleartext method) or the
  pool_passwd entry.
- enable_pool_hba = off: the main backend's own challenge is relayed to the client
  (pass-through); other backends get the password captured from a cleartext exchange or the
  pool_passwd entry. For reuse of a pooled slot the exchange is replayed as pgpool-II does:
  cleartext passwords are compared, md5 reuses the original salt and response; a SCRAM
  pass-through session cannot be verified again without pool_passwd and is not cached.
"""

import hmac
import struct

from pgpool.auth import exchange
from pgpool.protocol import messages as m
from pgpool.proxy.backend import BackendError

_I32 = struct.Struct("!i")


def _session_end(message: str, reply: bytes):
    from pgpool.proxy.session import SessionEnd
    return SessionEnd(message, reply)


def hba_method(worker, is_unix: bool, client_host: str, database: str, user: str) -> str:
    hba = worker.hba
    if hba is None:
        err = exchange.no_hba_entry_error(client_host, user, database, False)
        raise _session_end(str(err), err.to_bytes())
    rule = hba.match("local" if is_unix else "host", False, None if is_unix else client_host,
                     database, user)
    if rule is None or rule.method == "reject":
        err = exchange.no_hba_entry_error(client_host, user, database, False)
        raise _session_end(str(err), err.to_bytes())
    return rule.method


def _stored_secret(worker, user: str) -> str | None:
    pp = worker.pool_passwd
    if pp is None:
        return None
    entry = pp.lookup(user)
    return entry.password if entry is not None else None


def authenticate_client(worker, io, method: str, user: str, database: str) -> str | None:
    """pool_hba.conf authentication; returns the cleartext password when the method revealed it."""
    try:
        return exchange.authenticate_frontend(io, method, user, database,
                                              _stored_secret(worker, user),
                                              client_host=getattr(io, "client_host", "[local]"))
    except exchange.AuthError as e:
        raise _session_end(f"authentication failed for user \"{user}\": {e}", e.to_bytes()) from e


def authenticate_backend(worker, conn, user: str, client_password: str | None, ps) -> None:
    password = client_password or _stored_secret(worker, user)
    try:
        exchange.authenticate_backend(conn, user, password)
    except exchange.BackendAuthError as e:
        raise BackendError(conn.node_id, e.fields.get("M", "authentication failed"),
                           e.fields) from e
    except exchange.AuthError as e:
        raise BackendError(conn.node_id, str(e),
                           {"S": e.severity, "C": e.sqlstate, "M": e.message,
                            "D": e.detail or ""}) from e


def pass_through(io, conn, ps) -> str | None:
    """Relay the main backend's authentication exchange to the client.

    Returns the client's cleartext password if the exchange revealed one. Records in ps.auth
    what a later reuse of the slot needs to authenticate the client again."""
    password = None
    while True:
        kind, payload = conn.recv_message()
        if kind == b"E":
            raise BackendError(conn.node_id, "backend refused authentication",
                               m.parse_error_fields(payload))
        if kind == b"N":
            continue
        if kind != b"R":
            raise BackendError(conn.node_id, f"unexpected message \"{kind.decode(errors='replace')}\""
                                             " during authentication")
        code = _I32.unpack_from(payload)[0]
        if code == exchange.AUTH_OK:
            ps.auth.setdefault("kind", 0)
            return password
        io.send(m.message(b"R", payload))
        if code == exchange.AUTH_SASL_FINAL:
            continue                   # the server's signature; AuthenticationOk follows
        kind, reply = io.recv_message()
        if kind != b"p":
            raise _session_end("client sent an unexpected message during authentication",
                               m.error_response("FATAL", "08P01",
                                                "expected password response, got message type "
                                                f"{kind.decode(errors='replace')}"))
        conn.send(m.message(b"p", reply))
        if code == exchange.AUTH_CLEARTEXT:
            password = reply.rstrip(b"\0").decode("utf-8", "replace")
            ps.auth.update(kind=code, password=password)
        elif code == exchange.AUTH_MD5:
            ps.auth.update(kind=code, salt=payload[4:8], response=reply)
        elif code in (exchange.AUTH_SASL, exchange.AUTH_SASL_CONTINUE):
            ps.auth.update(kind=exchange.AUTH_SASL, no_cache=True)
        else:
            ps.auth.update(kind=code, no_cache=True)


def reauthenticate(worker, io, ps, frontend_method: str | None, startup) -> None:
    """Authenticate a client that is about to reuse a pooled slot."""
    if frontend_method is not None:
        authenticate_client(worker, io, frontend_method, startup.user, startup.database)
        return
    kind = ps.auth.get("kind", 0)
    failed = _session_end(f"password authentication failed for user \"{startup.user}\"",
                          m.error_response("FATAL", "28P01",
                                           f"password authentication failed for user "
                                           f"\"{startup.user}\""))
    if kind == 0:
        return
    if kind == exchange.AUTH_CLEARTEXT:
        io.send(m.auth_request(exchange.AUTH_CLEARTEXT))
        k, reply = io.recv_message()
        got = reply.rstrip(b"\0").decode("utf-8", "replace")
        if k != b"p" or not hmac.compare_digest(got, ps.auth["password"]):
            raise failed
        return
    if kind == exchange.AUTH_MD5:
        io.send(m.auth_request(exchange.AUTH_MD5, ps.auth["salt"]))
        k, reply = io.recv_message()
        if k != b"p" or not hmac.compare_digest(reply, ps.auth["response"]):
            raise failed
        return
    raise failed

