"""Statement kinds for SHOW pool_backend_stats, from a statement's first keyword."""

_STAT_KINDS = {b"select": "select", b"with": "select", b"insert": "insert", b"update": "update",
               b"delete": "delete", b"create": "ddl", b"alter": "ddl", b"drop": "ddl",
               b"truncate": "ddl", b"comment": "ddl", b"grant": "ddl", b"revoke": "ddl"}


def stat_kind(sql: bytes) -> str:
    """Statement kind for pool_backend_stats, from the first keyword only."""
    word = sql.lstrip()[:10].split(None, 1)
    if not word:
        return "other"
    return _STAT_KINDS.get(word[0].rstrip(b";(").lower(), "other")
