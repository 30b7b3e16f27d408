"""SHOW pool_status rows and PGPOOL SHOW / SET / RESET, answered from a Config as pgpool-II 4.3 does (pure).

Every function returns (columns, rows) or new session overrides, or raises CommandError carrying pgpool's
exact message text (SQLSTATE XX000).  Session overrides are a dict name -> typed value, owned by the caller.
"""

from __future__ import annotations

import re
import time

from pgpool.config.parser import Config, ConfigError, convert, lookup, split_list
from pgpool.config.settings import (
    ENUM_ALIASES, GROUPS, SESSION, SETTINGS, Setting,
)

SQLSTATE = "XX000"
DETAIL_COLUMNS = ["item", "value", "description"]


class CommandError(ConfigError):
    """An ERROR answer to a PGPOOL command; message/detail/hint are pgpool's texts."""

    def __init__(self, message: str, detail: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.detail = detail
        self.sqlstate = SQLSTATE


# ---------------------------------------------------------------------------------------------------------
# Value display (pgpool's ShowOption)

_UNIT_ORDER = {  # base unit -> units from greatest to smallest, with their size in the base unit
    "s": (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)),
    "ms": (("d", 86400000), ("h", 3600000), ("min", 60000), ("s", 1000), ("ms", 1)),
    "min": (("d", 1440), ("h", 60), ("min", 1)),
    "kB": (("TB", 1024**3), ("GB", 1024**2), ("MB", 1024), ("kB", 1)),
    "B": (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("kB", 1024), ("B", 1)),
}

def _with_unit(value: int, unit: str | None) -> str:
    """Largest unit that divides value evenly, as pgpool's convert_int_from_base_unit."""
    if not unit or value <= 0:
        return str(value)
    for name, size in _UNIT_ORDER[unit]:
        if value % size == 0:
            return f"{value // size}{name}"
    return str(value)


def _enum_display(s: Setting, value: str, raw: str | None) -> str:
    """pgpool shows the first enum name having the stored code ("debug" for debug2, "on" kept for check_temp_table)."""
    code = s.enum_code[(raw if raw is not None else value).lower()]
    return next(n for n, c in s.enum_values if c == code)


def _enum_code(s: Setting, value: str, raw: str | None) -> int:
    return s.enum_code[(raw if raw is not None else value).lower()]


def show_value(cfg: Config, s: Setting, index: int | None = None, overrides: dict | None = None) -> str:
    """Text of one value as PGPOOL SHOW prints it."""
    if s.secret:
        return "*****"
    if index is not None:
        value = cfg.node_value(s.name, index)
        if s.type == "real":
            return str(int(value))
        return str(value)
    overridden = overrides is not None and s.name in overrides
    value = overrides[s.name] if overridden else cfg.values[s.name]
    raw = None if overridden else cfg.raw.get(s.name)
    if s.type == "bool":
        return "on" if value else "off"
    if s.type == "int":
        return str(value) if s.per_node else _with_unit(value, s.unit)
    if s.type == "enum":
        return _enum_display(s, value, raw)
    if s.type == "list":
        return raw if raw is not None else s.default
    return str(value)


# ---------------------------------------------------------------------------------------------------------
# Slots of the per-node parameters that exist (pgpool's *SlotEmptyCheckFunc)

def _slots(cfg: Config, s: Setting) -> list[int]:
    if s.name.startswith("backend_") or s.group == "health_check":
        return [b.node_id for b in cfg.backends]
    if s.name.startswith("heartbeat_"):
        return [h.node_id for h in cfg.heartbeats if h.port]
    return [w.node_id for w in cfg.watchdog_nodes if w.pgpool_port]


def _array_rows(cfg: Config, s: Setting) -> list[list[str]]:
    rows = [[s.name, show_value(cfg, s), s.description]] if s.node_default else []
    rows += [[f"{s.name}{i}", show_value(cfg, s, i), s.description] for i in _slots(cfg, s)]
    return rows


def _group_rows(cfg: Config, group: str) -> list[list[str]]:
    members = [SETTINGS[n] for n in GROUPS[group][1]]
    rows = [[s.name, show_value(cfg, s), s.description] for s in members if s.node_default]
    for i in _slots(cfg, members[0]):
        rows += [[f"{s.name}{i}", show_value(cfg, s, i), s.description] for s in members]
    return rows


def _show_all_order() -> list[Setting]:
    """Scalars in pgpool's PGPOOL SHOW ALL order: its table order, then its (unstable) sort by name length;
    our extension parameters (not in pgpool's table) follow in table order."""
    table = sorted((s for s in SETTINGS.values() if not s.extension), key=lambda s: s.seq)
    entries = []
    seqs = {s.seq for s in table}
    for s in table:
        entries.append(s)
        if s.seq + 1 not in seqs and s.seq + 1 <= len(table):   # pgpool lists backend_flag twice
            entries.append(s)
    for i in range(len(entries)):
        for j in range(i + 1, len(entries)):
            if len(entries[i].name) < len(entries[j].name):
                entries[i], entries[j] = entries[j], entries[i]
    ours = [s for s in SETTINGS.values() if s.extension]
    return [s for s in entries + ours if not s.per_node and not s.hidden]


_SHOW_ALL = _show_all_order()


def pgpool_show(cfg: Config, name: str, overrides: dict | None = None) -> tuple[list[str], list[list[str]]]:
    """PGPOOL SHOW <name> | ALL | <group>: (columns, rows)."""
    if name == "all":
        rows = []
        for group in GROUPS:
            rows += _group_rows(cfg, group)
        rows += [[s.name, show_value(cfg, s, None, overrides), s.description] for s in _SHOW_ALL]
        return DETAIL_COLUMNS, rows
    try:
        found = lookup(name)
    except ConfigError:
        found = None
        base = next(s for s in sorted(SETTINGS.values(), key=lambda s: -len(s.name))
                    if s.per_node and name.startswith(s.name))
        suffix = name[len(base.name):]
        if not suffix.isdigit():
            raise CommandError(f'invalid index value for parameter "{name}" ',
                               "index part contains the invalid non digit character") from None
        raise CommandError(f'invalid index {int(suffix)} for configuration parameter "{base.name}"',
                           f"allowed index is between 0 and {base.per_node - 1}") from None
    if found is None or found[0].hidden:
        if name in GROUPS:
            return DETAIL_COLUMNS, _group_rows(cfg, name)
        raise CommandError(f'config variable "{name}" not found')
    s, index = found
    if s.per_node and index is None:
        return DETAIL_COLUMNS, _array_rows(cfg, s)
    return [name], [[show_value(cfg, s, index, overrides)]]


# ---------------------------------------------------------------------------------------------------------
# PGPOOL SET / RESET

def _session_setting(name: str) -> Setting:
    try:
        found = lookup(name)
    except ConfigError as e:
        raise CommandError(e.message) from None
    if found is None:
        raise CommandError(f'unrecognized configuration parameter "{name}"')
    s, _ = found
    if s.context != SESSION:
        raise CommandError(f'invalid Context, value for parameter "{name}" cannot be changed')
    return s


def _set_hint(s: Setting) -> str | None:
    if s.type == "enum":
        hidden = ENUM_ALIASES.get(s.name, {})
        return "Available values: " + ", ".join(n for n in s.enum_names if n not in hidden) + "."
    if s.type == "bool":
        return "Valid values are on, off, true, false, yes, no, 1 and 0."
    return None


def pgpool_set(cfg: Config, overrides: dict, name: str, value: str) -> dict:
    """PGPOOL SET name = value: the new session overrides (the input dict is not changed)."""
    s = _session_setting(name)
    try:
        typed = convert(s, value)
    except ValueError as e:
        text = str(e)
        if "outside the valid range" in text:
            raise CommandError(f'{text.split(" is outside")[0]} is outside the valid range for parameter '
                               f'"{name}" ({int(s.min)} .. {int(s.max)})') from None
        unit_hint = text[0].upper() + text[1:] + "." if text.startswith("valid units") else None
        raise CommandError(f'invalid value for parameter "{name}": "{value}"', hint=unit_hint or _set_hint(s)) from None
    return {**overrides, s.name: typed}


def pgpool_reset(cfg: Config, overrides: dict, name: str) -> dict:
    """PGPOOL RESET name | ALL: the new session overrides."""
    if name == "all":
        return {}
    s = _session_setting(name)
    return {k: v for k, v in overrides.items() if k != s.name}


def effective(cfg: Config, overrides: dict, name: str):
    """Value of a scalar setting in a session (override or configured)."""
    return overrides[name] if name in overrides else cfg.values[name]


# ---------------------------------------------------------------------------------------------------------
# Command text

_CMD = re.compile(r"""\s*pgpool\s+(show|set|reset)\s+("(?:[^"]|"")+"|[A-Za-z_][A-Za-z_0-9$]*)\s*(.*?)\s*;?\s*$""",
                  re.I | re.S)
_VALUE = re.compile(r"""(?:=|to\b)\s*('(?:[^']|'')*'|[-+]?[0-9]+(?:\.[0-9]+)?|[A-Za-z_][A-Za-z_0-9$]*)$""", re.I | re.S)


def parse_pgpool_command(sql: str) -> tuple[str, str, str | None] | None:
    """("show"|"set"|"reset", name, value or None) for a PGPOOL command text, else None.

    Names are folded to lower case unless double-quoted, as PostgreSQL's parser does; 'quoted' values are
    unquoted ('' -> ').
    """
    m = _CMD.match(sql)
    if not m:
        return None
    verb, name, rest = m.group(1).lower(), m.group(2), m.group(3)
    name = name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()
    if verb == "set":
        v = _VALUE.match(rest)
        if not v:
            return None
        value = v.group(1)
        value = value[1:-1].replace("''", "'") if value.startswith("'") else value
        return verb, name, value
    return (verb, name, None) if not rest else None


# ---------------------------------------------------------------------------------------------------------
# SHOW pool_status (pgpool's get_config(): its own list, descriptions and integer encodings)

_MAX_VALUE = 511   # POOLCONFIG_MAXVALLEN - 1
_MAX_DESC = 79     # POOLCONFIG_MAXDESCLEN - 1

# (item, description); the item is the parameter of the same name unless noted in _STATUS_SOURCE.
_STATUS = (
    ("backend_clustering_mode", "clustering mode"),
    ("listen_addresses", "host name(s) or IP address(es) to listen on"),
    ("port", "pgpool accepting port number"),
    ("socket_dir", "pgpool socket directory"),
    ("pcp_listen_addresses", "host name(s) or IP address(es) for pcp process to listen on"),
    ("pcp_port", "PCP port # to bind"),
    ("pcp_socket_dir", "PCP socket directory"),
    ("enable_pool_hba", "if true, use pool_hba.conf for client authentication"),
    ("pool_passwd", "file name of pool_passwd for md5 authentication"),
    ("authentication_timeout", "maximum time in seconds to complete client authentication"),
    ("allow_clear_text_frontend_auth",
     "allow to use clear text password auth when pool_passwd does not contain password"),
    ("ssl", "SSL support"),
    ("ssl_key", "SSL private key file"),
    ("ssl_cert", "SSL public certificate file"),
    ("ssl_ca_cert", "single PEM format file containing CA root certificate(s)"),
    ("ssl_ca_cert_dir", "directory containing CA root certificate(s)"),
    ("ssl_crl_file", "SSL certificate revocation list file"),
    ("ssl_ciphers", "allowed SSL ciphers"),
    ("ssl_prefer_server_ciphers", "Use server's SSL cipher preferences"),
    ("ssl_ecdh_curve", "the curve to use in ECDH key exchange"),
    ("ssl_dh_params_file", "path to the Diffie-Hellman parameters contained file"),
    ("ssl_passphrase_command", "external command to be invoked when a passphrase for decrypting an SSL file such "
                               "as a private key needs to be obtained"),
    ("num_init_children", "# of children initially pre-forked"),
    ("listen_backlog_multiplier", "determines the size of the queue for pending connections"),
    ("serialize_accept", "whether to serialize accept() call"),
    ("reserved_connections", "number of reserved connections"),
    ("max_pool", "max # of connection pool per child"),
    ("child_life_time", "if idle for this seconds, child exits"),
    ("child_max_connections", "if max_connections received, child exits"),
    ("connection_life_time", "if idle for this seconds, connection closes"),
    ("client_idle_limit", "if idle for this seconds, child connection closes"),
    ("log_destination", "logging destination"),
    ("log_line_prefix", "printf-style string to output at beginning of each log line"),
    ("log_error_verbosity", "controls how much detail about error should be emitted"),
    ("client_min_messages", "controls which message should be sent to client"),
    ("log_min_messages", "controls which message should be emitted to server log"),
    ("log_connections", "if true, print incoming connections to the log"),
    ("log_disconnections", "if true, print closing connections to the log"),
    ("log_hostname", "if true, resolve hostname for ps and log print"),
    ("log_statement", "if non 0, logs all SQL statements"),
    ("log_per_node_statement", "if non 0, logs all SQL statements on each node"),
    ("log_client_messages", "if non 0, logs any client messages"),
    ("log_standby_delay", "how to log standby delay"),
    ("syslog_facility", "syslog local facility"),
    ("syslog_ident", "syslog program ident string"),
    ("pid_file_name", "path to pid file"),
    ("logdir", "PgPool status file logging directory"),
    ("connection_cache", "if true, cache connection pool"),
    ("reset_query_list", "queries issued at the end of session"),
    ("replicate_select", "non 0 if SELECT statement is replicated"),
    ("insert_lock", "insert lock"),
    ("lobj_lock_table", "table name used for large object replication control"),
    ("replication_stop_on_mismatch", "stop replication mode on fatal error"),
    ("failover_if_affected_tuples_mismatch", "failover if affected tuples are mismatch"),
    ("load_balance_mode", "non 0 if operating in load balancing mode"),
    ("ignore_leading_white_space", "ignore leading white spaces"),
    ("read_only_function_list", "functions those do not write to database"),
    ("write_function_list", "functions those write to database"),
    ("primary_routing_query_pattern_list", "query patterns that should be sent to primary node"),
    ("disable_load_balance_on_write", "Load balance behavior when write query is received"),
    ("dml_adaptive_object_relationship_list", "list of relationships between objects"),
    ("statement_level_load_balance", "statement level load balancing"),
    ("sr_check_period", "sr check period"),
    ("sr_check_user", "sr check user"),
    ("sr_check_database", "sr check database"),
    ("delay_threshold", "standby delay threshold"),
    ("prefer_lower_delay_standby", "load balancing considering streaming delay"),
    ("follow_primary_command", "follow primary command"),
    ("database_redirect_preference_list", "redirect by database name"),
    ("app_name_redirect_preference_list", "redirect by application name"),
    ("allow_sql_comments", "allow SQL comments"),
    ("health_check_period", "health check period"),
    ("health_check_timeout", "health check timeout"),
    ("health_check_user", "health check user"),
    ("health_check_database", "health check database"),
    ("health_check_max_retries", "health check max retries"),
    ("health_check_retry_delay", "health check retry delay"),
    ("connect_timeout", "connect timeout"),
    ("failover_command", "failover command"),
    ("failback_command", "failback command"),
    ("failover_on_backend_error", "failover on backend error"),
    ("failover_on_backend_shutdown", "failover on backend shutdown"),
    ("detach_false_primary", "detach false primary"),
    ("auto_failback", "auto_failback"),
    ("auto_failback_interval", "auto_failback_interval"),
    ("recovery_user", "online recovery user"),
    ("recovery_1st_stage_command", "execute a command in first stage."),
    ("recovery_2nd_stage_command", "execute a command in second stage."),
    ("recovery_timeout", "max time in seconds to wait for the recovering node's postmaster"),
    ("search_primary_node_timeout", "max time in seconds to search for primary node after failover"),
    ("client_idle_limit_in_recovery", "if idle for this seconds, child connection closes in recovery 2nd stage"),
    ("relcache_expire", "relation cache expiration time in seconds"),
    ("relcache_size", "number of relation cache entry"),
    ("check_temp_table", "enable temporary table check"),
    ("check_unlogged_table", "enable unlogged table check"),
    ("enable_shared_relcache", "If true, relation cache stored in memory cache"),
    ("relcache_query_target", "Target node to send relcache queries"),
    ("use_watchdog", "non 0 if operating in use_watchdog"),
    ("wd_ipc_socket_dir", "watchdog ipc socket directory"),
    ("wd_lifecheck_method", "method of watchdog lifecheck"),
    ("clear_memqcache_on_escalation", "If true, clear all the query caches in shared memory when escalation occurs"),
    ("wd_escalation_command", "command executed when escalation occurs"),
    ("wd_de_escalation_command", "command executed when leader pgpool resigns occurs"),
    ("trusted_servers", "upper server list to observe connection"),
    ("delegate_IP", "delegate IP address of leader pgpool"),
    ("wd_priority", "watchdog priority"),
    ("wd_interval", "life check interval (second)"),
    ("ping_path", "path to ping command"),
    ("if_cmd_path", "path to interface up/down command"),
    ("if_up_cmd", "virtual interface up command with full parameters"),
    ("if_down_cmd", "virtual interface down command with full parameters"),
    ("arping_path", "path to arping command"),
    ("arping_cmd", "send ARP REQUEST to neighbour host"),
    ("wd_heartbeat_keepalive", "interval time of sending heartbeat signal (sec)"),
    ("wd_heartbeat_deadtime", "deadtime interval for heartbeat signal (sec)"),
    ("wd_life_point", "retry times of life check"),
    ("wd_lifecheck_query", "lifecheck query to pgpool from watchdog"),
    ("wd_lifecheck_dbname", "database name connected for lifecheck"),
    ("wd_lifecheck_user", "watchdog user monitoring pgpools in lifecheck"),
    ("<watchdog nodes>", ""),
    ("<heartbeats>", ""),
    ("wd_monitoring_interfaces_list", "interfaces to monitor by watchdog"),
    ("memory_cache_enabled", "If true, use the memory cache functionality, false by default"),
    ("memqcache_method", "Cache store method. either shmem(shared memory) or Memcached. shmem by default"),
    ("memqcache_memcached_host", "Memcached host name. Mandatory if memqcache_method=memcached"),
    ("memqcache_memcached_port", "Memcached port number. Mandatory if memqcache_method=memcached"),
    ("memqcache_total_size",
     "Total memory size in bytes for storing memory cache. Mandatory if memqcache_method=shmem"),
    ("memqcache_max_num_cache", "Total number of cache entries"),
    ("memqcache_expire", "Memory cache entry life time specified in seconds. 60 by default"),
    ("memqcache_auto_cache_invalidation",
     "If true, invalidation of query cache is triggered by corresponding DDL/DML/DCL(and memqcache_expire)."),
    ("memqcache_maxcache", "Maximum SELECT result size in bytes"),
    ("memqcache_cache_block_size", "Cache block size in bytes. 8192 by default"),
    ("memqcache_cache_oiddir", "Temporary work directory to record table oids"),
    ("memqcache_stats_start_time", "Start time of query cache stats"),
    ("memqcache_no_cache_hits", "Number of SELECTs not hitting query cache"),
    ("memqcache_cache_hits", "Number of SELECTs hitting query cache"),
    ("cache_safe_memqcache_table_list", "tables to memqcache"),
    ("cache_unsafe_memqcache_table_list", "tables not to memqcache"),
    ("<backends>", ""),
)
_STATUS_SOURCE = {"memqcache_cache_oiddir": "memqcache_oiddir"}
# String parameters whose compiled-in default is NULL: printed as "(null)" until set.
_NULL_DEFAULT = {"database_redirect_preference_list", "app_name_redirect_preference_list",
                 "dml_adaptive_object_relationship_list"}


def _status_value(cfg: Config, name: str) -> str:
    s = SETTINGS[_STATUS_SOURCE.get(name, name)]
    value = cfg.values[s.name]
    if s.type == "bool":
        return "1" if value else "0"
    if s.type == "enum":
        if s.name == "syslog_facility":
            return value
        return str(_enum_code(s, value, cfg.raw.get(s.name)))
    if s.type == "list":
        return s.sep.join(split_list(s, cfg.raw.get(s.name, s.default), strip=False))
    if s.name in _NULL_DEFAULT and s.name not in cfg.explicit:
        return "(null)"
    return str(value)


def _watchdog_rows(cfg: Config, local_id: int) -> list[tuple[str, str, str]]:
    rows = []
    for w in cfg.watchdog_nodes:
        if not w.pgpool_port:
            continue
        if w.node_id == local_id:
            rows += [(f"hostname{w.node_id}", w.hostname, "hostname or IP address of local pgpool node"),
                     (f"pgpool_port{w.node_id}", str(w.pgpool_port), "local pgpool port number"),
                     (f"wd_port{w.node_id}", str(w.wd_port), "local watchdog port number")]
        else:
            rows += [(f"hostname{w.node_id}", w.hostname, f"hostname or IP address of pgpool node #{w.node_id}"),
                     (f"pgpool_port{w.node_id}", str(w.pgpool_port), f"pgpool port number of pgpool node #{w.node_id}"),
                     (f"wd_port{w.node_id}", str(w.wd_port), f"watchdog port number of pgpool node #{w.node_id}")]
    return rows


def _heartbeat_rows(cfg: Config, local_id: int) -> list[tuple[str, str, str]]:
    rows = []
    for h in cfg.heartbeats:
        if not h.port:
            continue
        i = h.node_id
        if i == local_id:
            rows += [(f"heartbeat_hostname{i}", h.hostname, "IP address or hostname for receiving heartbeat"),
                     (f"heartbeat_device{i}", h.device, "name of NIC device for receiving hearbeat"),
                     (f"heartbeat_port{i}", str(h.port), "port number for receiving heartbeat")]
        else:
            rows += [(f"heartbeat_hostname{i}", h.hostname,
                      f"destination IP address or hostname for sending heartbeat to pgpool node #{i}"),
                     (f"heartbeat_device{i}", h.device, f"name of NIC device for sending hearbeat to pgpool node #{i}"),
                     (f"heartbeat_port{i}", str(h.port), f"destination port for sending heartbeat to pgpool node #{i}")]
    return rows


def _backend_rows(cfg: Config, status: list[str] | None, delay: list[int] | None) -> list[tuple[str, str, str]]:
    total = sum(b.weight for b in cfg.backends)
    rows = []
    for b in cfg.backends:
        i = b.node_id
        weight = b.weight / total if total else 0.0
        rows += [(f"backend_hostname{i}", b.hostname, f"backend #{i} hostname"),
                 (f"backend_port{i}", str(b.port), f"backend #{i} port number"),
                 (f"backend_weight{i}", f"{weight:f}", f"weight of backend #{i}"),
                 (f"backend_data_directory{i}", b.data_directory, f"data directory for backend #{i}"),
                 (f"backend_status{i}", status[i] if status else "waiting", f"status of backend #{i}"),
                 (f"standby_delay{i}", str(delay[i] if delay else 0), f"standby delay of backend #{i}"),
                 (f"backend_flag{i}", b.flag, f"backend #{i} flag"),
                 (f"backend_application_name{i}", b.application_name, f"application_name for backend #{i}")]
    return rows


def seconds_text(microseconds: int) -> str:
    """A delay in microseconds as seconds with six decimals, exactly ("2.500000")."""
    return f"{microseconds // 1000000}.{microseconds % 1000000:06d}"


def replication_delay_text(delay: int, by_time: bool) -> str:
    """SHOW pool_nodes' replication_delay of a standby: bytes, or, when measured by time
    (delay_threshold_by_time), seconds as pgpool-II 4.4 shows them: "0.250000 second",
    "2.000000 seconds" (plural from two seconds on)."""
    if not by_time:
        return str(delay)
    return f"{seconds_text(delay)} {'seconds' if delay >= 2000000 else 'second'}"


def pool_status_rows(cfg: Config, *, backend_status: list[str] | None = None, standby_delay: list[int] | None = None,
                     cache_stats: dict | None = None, pgpool_node_id: int = 0,
                     ) -> tuple[list[str], list[list[str]]]:
    """SHOW pool_status (and PCP pool status): item, value, description rows in pgpool's order.

    backend_status: per node "up"/"down"/"waiting"/"unused"/"quarantine"; standby_delay: per node bytes;
    cache_stats: {"start_time": epoch, "num_selects": n, "num_cache_hits": n}.
    """
    stats = cache_stats or {}
    runtime = {
        "memqcache_stats_start_time": time.ctime(stats.get("start_time", 0)) + "\n",
        "memqcache_no_cache_hits": str(stats.get("num_selects", 0)),
        "memqcache_cache_hits": str(stats.get("num_cache_hits", 0)),
    }
    expanders = {
        "<watchdog nodes>": lambda: _watchdog_rows(cfg, pgpool_node_id),
        "<heartbeats>": lambda: _heartbeat_rows(cfg, pgpool_node_id),
        "<backends>": lambda: _backend_rows(cfg, backend_status, standby_delay),
    }
    rows = []
    for item, desc in _STATUS:
        if item in expanders:
            rows += [list(r) for r in expanders[item]()]
            continue
        value = runtime[item] if item in runtime else _status_value(cfg, item)
        rows.append([item, value[:_MAX_VALUE], desc[:_MAX_DESC]])
    return DETAIL_COLUMNS, rows
