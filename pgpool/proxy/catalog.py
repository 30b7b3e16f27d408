"""Per-worker cache of catalog facts routing needs (function volatility), like pgpool's relcache."""

import time


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class CatalogCache:
    def __init__(self, cfg):
        self.expire = getattr(cfg, "relcache_expire", 0) or 0
        self.size = getattr(cfg, "relcache_size", 256) or 256
        self._volatile: dict[str, tuple[bool, float]] = {}

    def is_volatile(self, session, func_name: str) -> bool | None:
        """True if pg_proc says the function is VOLATILE; None when it cannot be asked now."""
        hit = self._volatile.get(func_name)
        now = time.monotonic()
        if hit is not None and (not self.expire or now - hit[1] < self.expire):
            return hit[0]
        conn = self._idle_primary(session)
        if conn is None:
            return None
        schema, _, name = func_name.rpartition(".")
        sql = ("SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
               f"ON n.oid = p.pronamespace WHERE p.proname = {_quote(name)} "
               "AND p.provolatile = 'v'" +
               (f" AND n.nspname = {_quote(schema)}" if schema else
                " AND pg_catalog.pg_function_is_visible(p.oid)"))
        try:
            rows, errors = conn.simple_query(sql)
        except (OSError, EOFError):
            return None
        if errors or not rows:
            return None
        result = rows[0][0] != "0"
        if len(self._volatile) >= self.size:
            self._volatile.clear()
        self._volatile[func_name] = (result, now)
        return result

    @staticmethod
    def _idle_primary(session):
        view = session.view
        conn = session.conns.get(view.primary) if view is not None else None
        if conn is None or conn.rbuf:
            return None
        relay = session.relay
        if relay is not None and (relay.node_q.get(conn.node_id) or relay.open_unit is not None):
            return None
        if conn.txn_status == b"E":
            return None             # a failed transaction cannot run the lookup
        return conn


