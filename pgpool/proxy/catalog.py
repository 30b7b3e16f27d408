"""Per-worker cache of catalog facts routing needs (pgpool's relcache): function volatility,
unlogged and temporary relations, looked up through the session's own backend connections.

Answers are cached per (database, question, name) in the worker, at most `relcache_size`
entries, each for `relcache_expire` seconds (0 = until the worker exits or reloads); the
temporary-relation answer is not cached here (it belongs to one session: the router keeps it).
A lookup runs only on a connection with nothing outstanding, as pgpool's own extended-protocol
exchange (backend.internal_query), so that the client's unnamed statement and portal survive;
the query cannot fail (no casts, no regclass), so it never aborts the client's transaction.
When no connection is free the answer is None (unknown) and nothing is cached.
"""

import time

from pgpool.proxy.backend import BackendError, internal_query, run_internal

LOOKUP_TIMEOUT = 10.0       # seconds a catalog lookup may take before it counts as unanswered


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _schema_test(schema: str, visible: str) -> str:
    """SQL condition: in `schema` when qualified, else visible on the search path."""
    return f"n.nspname = {_quote(schema)}" if schema else f"pg_catalog.{visible}"


def volatile_query(function: str) -> str:
    schema, _, name = function.rpartition(".")
    return ("SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
            f"ON n.oid = p.pronamespace WHERE p.proname = {_quote(name)} "
            f"AND p.provolatile = 'v' AND {_schema_test(schema, 'pg_function_is_visible(p.oid)')}")


def unlogged_query(relation: str) -> str:
    schema, _, name = relation.rpartition(".")
    return ("SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            f"ON n.oid = c.relnamespace WHERE c.relname = {_quote(name)} "
            f"AND c.relpersistence = 'u' AND {_schema_test(schema, 'pg_table_is_visible(c.oid)')}")


def temp_query(relation: str) -> str:
    return ("SELECT count(*) FROM pg_catalog.pg_class c WHERE c.relname = "
            f"{_quote(relation)} AND c.relnamespace = pg_catalog.pg_my_temp_schema()")


class CatalogCache:
    """The worker's relcache; bind() gives the Catalog a session's router asks."""

    def __init__(self, cfg):
        self.expire = cfg.relcache_expire
        self.size = cfg.relcache_size
        self.on_load_balance_node = cfg.relcache_query_target == "load_balance_node"
        self._entries: dict[tuple[str, str, str], tuple[bool, float]] = {}

    def bind(self, session) -> "SessionCatalog":
        return SessionCatalog(self, session)

    def is_volatile(self, session, function: str) -> bool | None:
        """True if pg_proc says the function is VOLATILE; None when it cannot be asked now."""
        return self._cached(session, "volatile", function, volatile_query, True)

    def is_unlogged(self, session, relation: str) -> bool | None:
        return self._cached(session, "unlogged", relation, unlogged_query, True)

    @staticmethod
    def is_temp(session, relation: str) -> bool | None:
        """Is `relation` one of this session's temporary relations (asked on the primary)?"""
        return _count(session, session.view.primary, temp_query(relation))

    def _cached(self, session, question: str, name: str, make_sql, anywhere: bool):
        key = (session.startup.database, question, name)
        hit = self._entries.get(key)
        if hit is not None and (not hit[1] or time.monotonic() < hit[1]):
            return hit[0]
        node = session.view.primary
        if anywhere and self.on_load_balance_node and session.route_state is not None:
            lb = session.route_state.load_balance_node
            node = lb if lb in session.conns else node
        answer = _count(session, node, make_sql(name))
        if answer is not None and self.size > 0:
            entries = self._entries
            if key not in entries and len(entries) >= self.size:
                del entries[next(iter(entries))]          # the oldest entry
            entries[key] = (answer, time.monotonic() + self.expire if self.expire else 0.0)
        return answer


class SessionCatalog:
    """pgpool.router.Catalog for one session (a cached answer costs one dict lookup)."""

    __slots__ = ("cache", "session", "entries", "database")

    def __init__(self, cache: CatalogCache, session):
        self.cache = cache
        self.session = session
        self.entries = cache._entries
        self.database = session.startup.database

    def is_volatile(self, function: str) -> bool | None:
        hit = self.entries.get((self.database, "volatile", function))
        if hit is not None and (not hit[1] or time.monotonic() < hit[1]):
            return hit[0]
        return self.cache.is_volatile(self.session, function)

    def is_temp(self, relation: str) -> bool | None:
        return self.cache.is_temp(self.session, relation)

    def is_unlogged(self, relation: str) -> bool | None:
        hit = self.entries.get((self.database, "unlogged", relation))
        if hit is not None and (not hit[1] or time.monotonic() < hit[1]):
            return hit[0]
        return self.cache.is_unlogged(self.session, relation)


def _idle_conn(session, node):
    """The session's connection to `node` if nothing is outstanding on it, else None."""
    conn = session.conns.get(node) if node is not None else None
    if conn is None or conn.rbuf or conn.txn_status == b"E":
        return None             # (a failed transaction cannot run the lookup)
    relay = session.relay
    if relay is not None and (relay.node_q.get(node) or relay.open_unit is not None):
        return None
    return conn


def _count(session, node, sql: str) -> bool | None:
    """Run a count(*) lookup on the session's connection to `node`: count > 0, or None."""
    conn = _idle_conn(session, node)
    if conn is None:
        return None
    if session.cfg.log_per_node_statement:
        session.log("LOG", f"DB node id: {node} backend pid: {conn.pid} statement: {sql}")
    try:
        value = run_internal(conn, internal_query(sql), LOOKUP_TIMEOUT)
    except (OSError, EOFError, BackendError):
        return None
    return None if value is None else value != b"0"
