"""Live probes of a backend, as SHOW pool_nodes and pcp_node_info report them (pg_status, pg_role)."""

import socket

from pgpool.auth import exchange
from pgpool.auth.pool_passwd import config_user_password
from pgpool.protocol import messages as m
from pgpool.proxy.backend import BackendConn, BackendError, open_socket, read_startup_reply


def _hc(cfg, node: int) -> dict:
    return cfg.backends[node].health_check


def ping(host: str, port: int, timeout: float, user: str = "postgres",
         database: str = "postgres") -> bool:
    """True if the server answers a startup packet (as PQping: any answer but "starting up").
    The packet names a real user (pgpool's health_check_user) so the server logs no error."""
    try:
        s = open_socket(host, port, timeout)
    except OSError:
        return False
    try:
        s.settimeout(timeout)
        s.sendall(m.startup_message({"user": user or "postgres", "database": database or "postgres"}))
        data = s.recv(4096)
        if not data:
            return False
        if data[:1] == b"E":
            fields = m.parse_error_fields(data[5:])
            return fields.get("C") not in ("57P03",)   # cannot_connect_now
        return True
    except OSError:
        return False
    finally:
        s.close()


def pg_status(cfg, node: int) -> str:
    hc = _hc(cfg, node)
    if not hc.get("period"):
        return "unknown"
    b = cfg.backends[node]
    timeout = (hc.get("connect_timeout") or 10000) / 1000.0
    return "up" if ping(b.hostname, b.port, timeout, hc.get("user"), hc.get("database")) \
        else "down"


def connect_as(cfg, node: int, user: str, password: str | None, database: str,
               timeout: float = 10.0) -> BackendConn:
    """A logged-in connection to a backend (for sr_check style queries)."""
    b = cfg.backends[node]
    conn = BackendConn(node, open_socket(b.hostname, b.port, timeout))
    conn.sock.settimeout(timeout)
    conn.send(m.startup_message({"user": user, "database": database,
                                 "application_name": "pgpool"}))
    try:
        exchange.authenticate_backend(conn, user, password or None)
    except (exchange.BackendAuthError, exchange.AuthError) as e:
        conn.close()
        raise BackendError(node, str(e)) from e
    read_startup_reply(conn)
    return conn


def is_in_recovery(cfg, node: int, timeout: float = 10.0, passwd=None) -> bool | None:
    """pg_is_in_recovery() on a node as sr_check_user (password from the setting, else from
    pool_passwd `passwd`, as pgpool-II does); None if it cannot be asked."""
    password = config_user_password(cfg.sr_check_user, cfg.sr_check_password, passwd)
    try:
        conn = connect_as(cfg, node, cfg.sr_check_user, password, cfg.sr_check_database, timeout)
    except (OSError, EOFError, BackendError):
        return None
    try:
        rows, errors = conn.simple_query("SELECT pg_is_in_recovery()")
        if errors or not rows:
            return None
        return rows[0][0] == "t"
    except (OSError, EOFError, socket.timeout):
        return None
    finally:
        conn.close()


def pg_role(cfg, node: int, role: str, status: str, passwd=None) -> str:
    if cfg.clustering_mode != "streaming_replication":
        return role
    if cfg.sr_check_period == 0 or status != "up":
        return "unknown"
    r = is_in_recovery(cfg, node, passwd=passwd)
    if r is None:
        return "unknown"
    return "standby" if r else "primary"
