"""pgpool.conf parser: pgpool-II 4.3 syntax and value rules -> a typed Config, or a ConfigError naming file and line.

Syntax (as pgpool's flex scanner): one `name = value` or `name value` per line, `#` starts a comment,
values are quoted strings ('...', a backslash escapes the next character and is kept as written), numbers
with optional unit letters (10s, 1min, 64MB), or unquoted words ([A-Za-z_][A-Za-z0-9_.:/-]*).  Doubled quotes
('it''s') are a syntax error, as in pgpool.  `include = 'file'` reads another file (relative to the including
one).  Per-node parameters carry their node index as a suffix (backend_hostname0).

Deliberate differences from pgpool-II 4.3.5 (which only logs INFO and carries on): an unknown parameter, a bad
boolean, or a value pgpool would silently misread is an error here; parameter names of older (and 4.4) releases
are mapped onto their 4.3 names with a warning.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field

from pgpool.config.errors import ConfigError
from pgpool.config.files import read_pgpool_node_id
from pgpool.config.settings import (
    ENUM_ALIASES, INIT, MAX_BACKENDS, MEMORY_UNITS, PER_NODE, SETTINGS, TIME_UNITS, TLS_VERSIONS, Setting,
)

MAX_INCLUDE_DEPTH = 10
TLS_ORDER = dict(TLS_VERSIONS)
DEFAULT_SOCKET_DIR = "/tmp"   # backend_hostnameN left empty means a Unix socket here


# ---------------------------------------------------------------------------------------------------------
# Scanner: the token classes of pgpool's pool_config.l, longest match first, ties to the earlier rule.

_TOKENS = (
    ("KEY", re.compile(r"[A-Za-z_\x80-\xff][A-Za-z_0-9\x80-\xff]*")),
    ("STRING", re.compile(r"'(?:[^'\n\\]|\\.)*'")),
    ("UNQUOTED", re.compile(r"[A-Za-z_\x80-\xff][A-Za-z_0-9\x80-\xff.:/-]*")),
    ("INTEGER", re.compile(r"[-+]?(?:0x[0-9a-fA-F]+|[0-9]+)[a-zA-Z]*")),
    ("REAL", re.compile(r"[-+]?[0-9]*\.[0-9]*(?:[Ee][-+]?[0-9]+)?")),
    ("EQUALS", re.compile(r"=")),
)
_SPACE = re.compile(r"[ \t\r]+|#[^\n]*")


def _scan(text: str):
    """Yield (kind, text, line) tokens; kind EOL ends a line, ERROR is an unexpected character."""
    pos, line, end = 0, 1, len(text)
    while pos < end:
        if text[pos] == "\n":
            yield "EOL", "\n", line
            line += 1
            pos += 1
            continue
        m = _SPACE.match(text, pos)
        if m:
            pos = m.end()
            continue
        best = None
        for kind, rx in _TOKENS:
            m = rx.match(text, pos)
            if m and m.end() > pos and (best is None or m.end() > best[1].end()):
                best = (kind, m)
        if best is None:
            yield "ERROR", text[pos], line
            pos += 1
            continue
        yield best[0], best[1].group(0), line
        pos = best[1].end()
    yield "EOL", "", line


@dataclass(frozen=True)
class Item:
    """One `name = value` assignment as read from a file."""

    name: str
    value: str
    file: str
    line: int


def read_items(text: str, filename: str, depth: int = 0) -> list[Item]:
    """All assignments of a config text in file order, `include` directives expanded."""
    items: list[Item] = []
    tokens = _scan(text)
    for kind, tok, line in tokens:
        if kind == "EOL":
            continue
        if kind != "KEY":
            raise ConfigError(f'syntax error in configuration file "{filename}" line {line}: unexpected "{tok}"',
                              file=filename, line=line)
        name = tok
        kind, tok, vline = next(tokens)
        if kind == "EQUALS":
            kind, tok, vline = next(tokens)
        if kind == "ERROR":
            raise ConfigError(f'syntax error in configuration file "{filename}" line {vline}: unexpected character '
                              f'"{tok}" in the value of parameter "{name}" (quote the value)',
                              file=filename, line=vline, parameter=name)
        if kind in ("EOL", "EQUALS"):
            shown = "end of line" if kind == "EOL" else f'"{tok}"'
            raise ConfigError(f'syntax error in configuration file "{filename}" line {vline}: '
                              f'missing value for parameter "{name}" (found {shown})',
                              file=filename, line=vline, parameter=name)
        value = tok[1:-1] if kind == "STRING" else tok
        if name == "include":
            items.extend(_read_include(value, filename, depth, vline))
        else:
            items.append(Item(name, value, filename, vline))
    return items


def _read_include(path: str, including: str, depth: int, line: int) -> list[Item]:
    if depth >= MAX_INCLUDE_DEPTH:
        raise ConfigError(f'could not open configuration file "{path}": maximum nesting depth exceeded',
                          file=including, line=line)
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(os.path.abspath(including)), path)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f'could not open configuration file "{path}" included from "{including}" line {line}: '
                          f'{e.strerror}', file=including, line=line) from None
    return read_items(text, path, depth + 1)


# ---------------------------------------------------------------------------------------------------------
# Values

def parse_bool(text: str) -> bool | None:
    """pgpool/PostgreSQL boolean: true/false/yes/no/on/off/1/0 and unique prefixes; None if not a boolean."""
    t = text.lower()
    if not t:
        return None
    for word, value in (("true", True), ("false", False), ("yes", True), ("no", False)):
        if word.startswith(t):
            return value
    if len(t) >= 2 and "on".startswith(t):
        return True
    if len(t) >= 2 and "off".startswith(t):
        return False
    return {"1": True, "0": False}.get(t)


_NUMBER = re.compile(r"\s*([-+]?(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]*(?:[eE][-+]?[0-9]+)?))\s*(.*?)\s*$")
_UNIT_BASES = {"s": TIME_UNITS, "ms": TIME_UNITS, "min": TIME_UNITS, "kB": MEMORY_UNITS, "B": MEMORY_UNITS}


def _c_number(text: str) -> float | None:
    """strtol(base 0: 0x.. hex, 0.. octal) with a fall back to strtod, as pgpool's parse_int."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", body):
        return sign * int(body, 16)
    if re.fullmatch(r"0[0-7]+", body):
        return sign * int(body, 8)
    try:
        return float(text)
    except ValueError:
        return None


def parse_number(s: Setting, text: str) -> tuple[float | None, str]:
    """Value in the setting's base unit, or (None, reason)."""
    m = _NUMBER.match(text)
    value = _c_number(m.group(1)) if m and m.group(1) not in ("", "+", "-", ".") else None
    if value is None or math.isnan(value):
        return None, ""
    unit = m.group(2)
    if unit:
        table = _UNIT_BASES.get(s.unit or "")
        if table is None:
            return None, "this parameter does not accept units"
        if unit not in table:
            names = ", ".join(f'"{u}"' for u in table)
            return None, f"valid units for this parameter are {names}"
        value = value * table[unit] / table[s.unit]
    return value, ""


def describe_allowed(s: Setting) -> str:
    """What a setting accepts, for error messages."""
    if s.type == "bool":
        return "expected a boolean (on/off, true/false, yes/no, 1/0)"
    if s.type == "enum":
        hidden = ENUM_ALIASES.get(s.name, {})
        names = [n for n in s.enum_names if n not in hidden or s.name == "check_temp_table"]
        return "expected one of " + ", ".join(dict.fromkeys(n or "'' (none)" for n in names))
    if s.type in ("int", "real"):
        kind = "an integer" if s.type == "int" else "a number"
        unit = f" (unit {s.unit} unless given, e.g. 30{'s' if s.unit in ('s', 'ms', 'min') else 'kB'})" if s.unit else ""
        return f"expected {kind} between {_fmt_num(s.min)} and {_fmt_num(s.max)}{unit}"
    return "expected a string"


def _fmt_num(v) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def convert(s: Setting, text: str):
    """Typed value of text for setting s; raises ValueError(reason) when the value is not acceptable."""
    if s.type == "bool":
        v = parse_bool(text)
        if v is None:
            raise ValueError(describe_allowed(s))
        return v
    if s.type in ("int", "real"):
        v, why = parse_number(s, text)
        if v is None:
            raise ValueError(why or describe_allowed(s))
        if s.type == "int":
            v = int(round(v)) if abs(v) < 2**63 else v
        if not (s.min <= v <= s.max):
            raise ValueError(f"{_fmt_num(v)} is outside the valid range "
                             f"({_fmt_num(s.min)} .. {_fmt_num(s.max)})")
        return int(v) if s.type == "int" else float(v)
    if s.type == "enum":
        low = text.lower()
        if low not in s.enum_code:
            raise ValueError(describe_allowed(s))
        canon = next(n for n, _ in s.enum_values if n.lower() == low)
        return ENUM_ALIASES.get(s.name, {}).get(canon, canon)
    if s.type == "list":
        return split_list(s, text)
    return text


def split_list(s: Setting, text: str, strip: bool = True) -> list[str]:
    """Items of a list setting (empty items dropped; regex `;` lists allow `\\;` and `\\'` escapes)."""
    if s.regex and s.sep == ";":
        parts, cur, i = [], "", 0
        while i < len(text):
            if text[i] == "\\" and i + 1 < len(text):
                cur += text[i:i + 2]
                i += 2
                continue
            if text[i] == ";":
                parts.append(cur)
                cur = ""
            else:
                cur += text[i]
            i += 1
        parts.append(cur)
        parts = [p.replace("\\'", "'") for p in parts]
    else:
        parts = text.split(s.sep)
    items = [p.strip() if strip else p for p in parts]
    return [p for p in items if p.strip()]


# ---------------------------------------------------------------------------------------------------------
# Names of other releases

# old name -> (4.3 name, note); the value keeps its meaning.
RENAMED = {
    "white_function_list": ("read_only_function_list", "renamed in pgpool-II 4.2"),
    "black_function_list": ("write_function_list", "renamed in pgpool-II 4.2"),
    "black_query_pattern_list": ("primary_routing_query_pattern_list", "renamed in pgpool-II 4.2"),
    "white_memqcache_table_list": ("cache_safe_memqcache_table_list", "renamed in pgpool-II 4.2"),
    "black_memqcache_table_list": ("cache_unsafe_memqcache_table_list", "renamed in pgpool-II 4.2"),
    "follow_master_command": ("follow_primary_command", "renamed in pgpool-II 4.2"),
    "fail_over_on_backend_error": ("failover_on_backend_error", "renamed in pgpool-II 4.0"),
    "unix_socket_directories": ("socket_dir", "pgpool-II 4.4 name"),
    "pcp_unix_socket_directories": ("pcp_socket_dir", "pgpool-II 4.4 name"),
    "delegate_ip": ("delegate_IP", "pgpool-II 4.4 name"),
}
# Parameters of the old clustering-mode switches, folded into backend_clustering_mode.
LEGACY_MODE_KEYS = ("master_slave_mode", "master_slave_sub_mode", "replication_mode")
_SUB_MODES = {"stream": "streaming_replication", "slony": "slony", "logical": "logical_replication"}
# Parameters that no longer exist and have no 4.3 equivalent: accepted with a warning, no effect.
OBSOLETE = {
    "debug_level": "removed in pgpool-II 3.4, use log_min_messages",
    "print_timestamp": "removed in pgpool-II 3.4, use log_line_prefix",
    "parallel_mode": "parallel query mode was removed in pgpool-II 3.5",
    "pgpool2_hostname": "parallel query mode was removed in pgpool-II 3.5",
    "system_db_hostname": "the system database was removed in pgpool-II 3.5",
    "system_db_port": "the system database was removed in pgpool-II 3.5",
    "system_db_dbname": "the system database was removed in pgpool-II 3.5",
    "system_db_schema": "the system database was removed in pgpool-II 3.5",
    "system_db_user": "the system database was removed in pgpool-II 3.5",
    "system_db_password": "the system database was removed in pgpool-II 3.5",
    "enable_query_cache": "the old query cache was removed, use memory_cache_enabled",
    "backend_socket_dir": "removed, set backend_hostnameN to the socket directory",
    "replication_timeout": "removed in pgpool-II 3.x",
    "process_management_mode": "pgpool-II 4.4 parameter, 4.3 always pre-forks num_init_children",
    "process_management_strategy": "pgpool-II 4.4 parameter",
    "min_spare_children": "pgpool-II 4.4 parameter",
    "max_spare_children": "pgpool-II 4.4 parameter",
    "log_backend_messages": "pgpool-II 4.4 parameter",
    "log_pcp_processes": "pgpool-II 4.4 parameter",
    "unix_socket_group": "pgpool-II 4.4 parameter",
    "unix_socket_permissions": "pgpool-II 4.4 parameter",
    "pcp_unix_socket_group": "pgpool-II 4.4 parameter",
    "pcp_unix_socket_permissions": "pgpool-II 4.4 parameter",
}
# Watchdog names of pgpool-II <= 4.1: the node numbering changed, so they cannot be mapped automatically.
REMOVED_WATCHDOG = {
    "wd_hostname": "hostnameN", "wd_heartbeat_port": "heartbeat_portN",
    "other_pgpool_hostname": "hostnameN", "other_pgpool_port": "pgpool_portN", "other_wd_port": "wd_portN",
    "heartbeat_destination": "heartbeat_hostnameN", "heartbeat_destination_port": "heartbeat_portN",
}


# ---------------------------------------------------------------------------------------------------------
# Name lookup (pgpool's find_option: exact name, else longest per-node name that prefixes it)

_BY_LENGTH = sorted(PER_NODE, key=lambda s: -len(s.name))


def lookup(name: str) -> tuple[Setting, int | None] | None:
    """(setting, node index or None) for a parameter name as written in a file; None if unknown.

    Raises ConfigError for a per-node name with a malformed or out-of-range index.
    """
    s = SETTINGS.get(name)
    if s is not None and not s.per_node:
        return s, None
    for s in _BY_LENGTH:
        if name.startswith(s.name):
            suffix = name[len(s.name):]
            if suffix == "":
                return s, None
            if not suffix.isdigit():
                raise ConfigError(f'invalid index value for parameter "{name}": index part contains the invalid '
                                  f'non digit character', parameter=name)
            index = int(suffix)
            if index >= s.per_node:
                raise ConfigError(f'invalid index {index} for parameter "{name}": allowed index is between 0 '
                                  f'and {s.per_node - 1}', parameter=name)
            return s, index
    return None


# ---------------------------------------------------------------------------------------------------------
# Config

@dataclass(frozen=True)
class BackendConfig:
    """One configured PostgreSQL node."""

    node_id: int
    hostname: str
    port: int
    weight: float
    data_directory: str
    flag: str                 # canonical: ALLOW_TO_FAILOVER | DISALLOW_TO_FAILOVER [|ALWAYS_PRIMARY]
    application_name: str
    health_check: dict        # period, timeout, user, password, database, max_retries, retry_delay, connect_timeout

    @property
    def allow_to_failover(self) -> bool:
        return self.flag.startswith("ALLOW_TO_FAILOVER")

    @property
    def always_primary(self) -> bool:
        return self.flag.endswith("ALWAYS_PRIMARY")


@dataclass(frozen=True)
class WatchdogNodeConfig:
    """One pgpool node of the watchdog cluster (hostnameN, wd_portN, pgpool_portN)."""

    node_id: int
    hostname: str
    wd_port: int
    pgpool_port: int


@dataclass(frozen=True)
class HeartbeatConfig:
    """One heartbeat destination (heartbeat_hostnameN, heartbeat_portN, heartbeat_deviceN)."""

    node_id: int
    hostname: str
    port: int
    device: str


_HEALTH_KEYS = {"health_check_period": "period", "health_check_timeout": "timeout", "health_check_user": "user",
                "health_check_password": "password", "health_check_database": "database",
                "health_check_max_retries": "max_retries", "health_check_retry_delay": "retry_delay",
                "connect_timeout": "connect_timeout"}


def canonical_backend_flag(text: str) -> str:
    """Canonical backend_flag text; raises ValueError for unknown or contradictory flags."""
    parts = [p for p in text.split("|") if p]
    unknown = [p for p in parts if p not in ("ALLOW_TO_FAILOVER", "DISALLOW_TO_FAILOVER", "ALWAYS_PRIMARY")]
    if unknown:
        raise ValueError(f"unknown backend flag {unknown[0]!r}; expected ALLOW_TO_FAILOVER, DISALLOW_TO_FAILOVER "
                         f"and/or ALWAYS_PRIMARY separated by |")
    if "ALLOW_TO_FAILOVER" in parts and "DISALLOW_TO_FAILOVER" in parts:
        raise ValueError("cannot set ALLOW_TO_FAILOVER and DISALLOW_TO_FAILOVER at the same time")
    flag = "DISALLOW_TO_FAILOVER" if "DISALLOW_TO_FAILOVER" in parts else "ALLOW_TO_FAILOVER"
    return flag + ("|ALWAYS_PRIMARY" if "ALWAYS_PRIMARY" in parts else "")


def check_log_destination(text: str) -> str:
    """log_destination: stderr and/or syslog, comma separated."""
    bad = [d for d in (p.strip() for p in text.split(",")) if d not in ("stderr", "syslog")]
    if bad:
        raise ValueError(f"unknown destination {bad[0]!r}; expected stderr and/or syslog")
    return text


def check_redirect_list(text: str) -> str:
    """database/app_name_redirect_preference_list: 'regex:node[(ratio)],...', node = primary, standby or an id."""
    for entry in filter(None, (e.strip() for e in text.split(","))):
        regex, sep, target = entry.rpartition(":")
        m = re.fullmatch(r"(primary|standby|[0-9]+)(?:\(([0-9.]+)\))?", target.strip(), re.I)
        if not sep or not regex or not m or (m.group(1).isdigit() and int(m.group(1)) >= MAX_BACKENDS):
            raise ValueError(f'wrong redirect node spec in "{entry}"; expected <regex>:<primary|standby|node id>'
                             f"[(<ratio>)]")
        if m.group(2) is not None and not 0.0 <= float(m.group(2)) <= 1.0:
            raise ValueError(f'redirect ratio in "{entry}" must be between 0.0 and 1.0')
        try:
            re.compile(regex)
        except re.error as e:
            raise ValueError(f'wrong regular expression "{regex}": {e}') from None
    return text


# Extra checks and normalisation of particular parameters (value -> value, ValueError if not acceptable).
VALIDATORS = {
    "backend_flag": canonical_backend_flag,
    "log_destination": check_log_destination,
    "database_redirect_preference_list": check_redirect_list,
    "app_name_redirect_preference_list": check_redirect_list,
}


@dataclass
class Config:
    """A complete, validated pgpool configuration."""

    values: dict = field(default_factory=dict)        # name -> typed value (global / index-free)
    node_values: dict = field(default_factory=dict)   # per-node name -> {index: typed value}
    raw: dict = field(default_factory=dict)           # name or nameN -> text as written (for SHOW)
    explicit: set = field(default_factory=set)        # names (and nameN) set in the file
    raw_where: dict = field(default_factory=dict)     # name or nameN -> (file, line) of its assignment
    source_file: str | None = None
    pgpool_node_id: int = 0                           # from the pgpool_node_id file when use_watchdog is on
    warnings: list = field(default_factory=list)      # (file, line, message) for mapped/obsolete names
    backends: list = field(default_factory=list)
    watchdog_nodes: list = field(default_factory=list)
    heartbeats: list = field(default_factory=list)

    @classmethod
    def defaults(cls) -> "Config":
        """A Config with every default and no backends."""
        cfg = cls(values={s.name: _default(s) for s in SETTINGS.values()},
                  node_values={s.name: {} for s in PER_NODE})
        cfg._finish()
        return cfg

    def __getattr__(self, name: str):
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)

    def set(self, name: str, value) -> None:
        """Change one scalar setting (command-line override, session PGPOOL SET, reload)."""
        self.values[name] = value
        if name not in _FIELD_NAMES:
            self.__dict__[name] = value

    def refresh_attributes(self) -> None:
        """Mirror `values` into plain attributes: the data path reads settings per query, and a
        plain attribute costs a fraction of a __getattr__ call."""
        d = self.__dict__
        for k, v in self.values.items():
            if k not in _FIELD_NAMES:
                d[k] = v

    def __getitem__(self, name: str):
        found = lookup(name)
        if found is None:
            raise KeyError(name)
        s, index = found
        if index is None:
            return self.values[s.name]
        return self.node_value(s.name, index)

    def get(self, name: str, default=None):
        try:
            return self[name]
        except (KeyError, ConfigError):
            return default

    @property
    def clustering_mode(self) -> str:
        return self.values["backend_clustering_mode"]

    def node_value(self, name: str, index: int):
        """Value of per-node parameter name for node index (falls back to the index-free default)."""
        return self.node_values[name].get(index, self.values[name])

    def changed_needing_restart(self, new: "Config") -> list[str]:
        """Names of init-context parameters whose value differs in new (a reload cannot apply them)."""
        changed = []
        for s in SETTINGS.values():
            if s.context != INIT:
                continue
            if s.per_node:
                if self.node_values[s.name] != new.node_values[s.name] or self.values[s.name] != new.values[s.name]:
                    changed.append(s.name)
            elif self.values[s.name] != new.values[s.name]:
                changed.append(s.name)
        return changed

    def _finish(self) -> None:
        """Build the backend / watchdog / heartbeat views and check cross-parameter rules."""
        self.refresh_attributes()
        nv = self.node_values
        ids = sorted(set(nv["backend_hostname"]) | set(nv["backend_port"]))
        for expected, got in enumerate(ids):
            if got != expected:
                raise self._error(f"backend ids must be contiguous from 0: backend_hostname{expected} / "
                                  f"backend_port{expected} is missing but node {got} is configured",
                                  f"backend_hostname{got}")
        self.backends = []
        for i in ids:
            if i not in nv["backend_port"]:
                raise self._error(f"backend_hostname{i} is set but backend_port{i} is not", f"backend_hostname{i}")
            self.backends.append(BackendConfig(
                node_id=i,
                hostname=nv["backend_hostname"].get(i) or DEFAULT_SOCKET_DIR,
                port=nv["backend_port"][i],
                weight=float(self.node_value("backend_weight", i)),
                data_directory=self.node_value("backend_data_directory", i),
                flag=self.node_value("backend_flag", i),
                application_name=self.node_value("backend_application_name", i),
                health_check={short: self.node_value(name, i) for name, short in _HEALTH_KEYS.items()}))
        self.watchdog_nodes = [
            WatchdogNodeConfig(i, self.node_value("hostname", i), nv["wd_port"].get(i, 0), nv["pgpool_port"].get(i, 0))
            for i in sorted(set(nv["wd_port"]) | set(nv["pgpool_port"]))]
        self.heartbeats = [
            HeartbeatConfig(i, self.node_value("heartbeat_hostname", i), nv["heartbeat_port"].get(i, 0),
                            self.node_value("heartbeat_device", i))
            for i in sorted(set(nv["heartbeat_hostname"]) | set(nv["heartbeat_port"]))]
        v = self.values
        low, high = v["ssl_min_protocol_version"], v["ssl_max_protocol_version"]
        if high and TLS_ORDER[high] < TLS_ORDER[low]:
            raise self._error(f"ssl_max_protocol_version ({high}) cannot be lower than "
                              f"ssl_min_protocol_version ({low})", "ssl_max_protocol_version")
        if v["reserved_connections"] >= v["num_init_children"]:
            raise self._error(f"reserved_connections ({v['reserved_connections']}) must be less than "
                              f"num_init_children ({v['num_init_children']})", "reserved_connections")
        if (v["recovery_1st_stage_command"] or v["recovery_2nd_stage_command"]) and any(
                not b.data_directory for b in self.backends):
            raise self._error("recovery_1st_stage_command and recovery_2nd_stage_command require "
                              "backend_data_directoryN to be set for every backend", "recovery_1st_stage_command")
        if v["replication_mode"] and v["failover_when_quorum_exists"] and "failover_when_quorum_exists" in self.explicit:
            raise self._error("failover_when_quorum_exists is not allowed in native replication mode",
                              "failover_when_quorum_exists")

    def _error(self, message: str, parameter: str) -> ConfigError:
        where = self.raw_where.get(parameter)
        loc = f' in file "{where[0]}" line {where[1]}' if where else (
            f' in file "{self.source_file}"' if self.source_file else "")
        return ConfigError(f"invalid configuration{loc}: {message}", file=where[0] if where else self.source_file,
                           line=where[1] if where else None, parameter=parameter)


_FIELD_NAMES = frozenset(f for f in Config.__dataclass_fields__) | {"clustering_mode"}


def _default(s: Setting):
    if s.type == "list":
        return split_list(s, s.default)
    return s.default


def parse_items(items: list[Item], source_file: str | None) -> Config:
    """Apply assignments over the defaults; later assignments win, as in pgpool."""
    cfg = Config(values={s.name: _default(s) for s in SETTINGS.values()},
                 node_values={s.name: {} for s in PER_NODE}, source_file=source_file)
    legacy: dict[str, Item] = {}
    for item in items:
        name = item.name
        if name in LEGACY_MODE_KEYS and name != "replication_mode":
            legacy[name] = item
            continue
        if name in OBSOLETE:
            cfg.warnings.append((item.file, item.line, f'parameter "{name}" is ignored: {OBSOLETE[name]}'))
            continue
        base = re.sub(r"\d+$", "", name)
        if base in REMOVED_WATCHDOG:
            raise ConfigError(f'parameter "{name}" in file "{item.file}" line {item.line} was removed in pgpool-II '
                              f'4.2: describe every pgpool node with {REMOVED_WATCHDOG[base]} (same list on all '
                              f'nodes) and put the local node id in pgpool_node_id',
                              file=item.file, line=item.line, parameter=name)
        if name in RENAMED:
            new, note = RENAMED[name]
            cfg.warnings.append((item.file, item.line, f'parameter "{name}" is now "{new}" ({note})'))
            name = new
        try:
            found = lookup(name)
        except ConfigError as e:
            raise ConfigError(f'{e.message} in file "{item.file}" line {item.line}', file=item.file,
                              line=item.line, parameter=name) from None
        if found is None:
            close = difflib.get_close_matches(name, list(SETTINGS), n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            raise ConfigError(f'unrecognized configuration parameter "{name}" in file "{item.file}" line '
                              f'{item.line}{hint}', file=item.file, line=item.line, parameter=name)
        s, index = found
        if s.per_node and index is None and not s.node_default:
            raise ConfigError(f'parameter "{name}" in file "{item.file}" line {item.line} expects a node index '
                              f'postfix, e.g. "{name}0"', file=item.file, line=item.line, parameter=name)
        try:
            value = convert(s, item.value)
            if s.name in VALIDATORS:
                value = VALIDATORS[s.name](value)
            if s.name == "socket_dir" and item.name == "unix_socket_directories" and "," in value:
                raise ValueError("pgpool-II 4.3 supports a single socket directory")
        except ValueError as e:
            raise ConfigError(f'invalid value for parameter "{name}": "{item.value}" in file "{item.file}" line '
                              f'{item.line}: {e}', file=item.file, line=item.line, parameter=name) from None
        key = name if index is None else f"{s.name}{index}"
        cfg.raw[key] = item.value
        cfg.explicit.add(key)
        cfg.raw_where[key] = (item.file, item.line)
        if index is None:
            cfg.values[s.name] = value
        else:
            cfg.node_values[s.name][index] = value
    _apply_legacy_modes(cfg, legacy)
    cfg._finish()
    return cfg


def _apply_legacy_modes(cfg: Config, legacy: dict[str, Item]) -> None:
    """Fold master_slave_mode / master_slave_sub_mode / replication_mode into backend_clustering_mode."""
    if not legacy and not cfg.values["replication_mode"]:
        return
    first = min((legacy.values()), key=lambda i: i.line, default=None)
    where = (first.file, first.line) if first else cfg.raw_where.get("replication_mode", (cfg.source_file, None))
    if "backend_clustering_mode" in cfg.explicit:
        cfg.warnings.append((*where, "master_slave_mode/master_slave_sub_mode/replication_mode are ignored "
                                     "because backend_clustering_mode is set"))
        return

    def flag(key: str) -> bool:
        item = legacy.get(key)
        value = parse_bool(item.value) if item else False
        if value is None:
            raise ConfigError(f'invalid value for parameter "{key}": "{item.value}" in file "{item.file}" line '
                              f'{item.line}: expected a boolean (on/off, true/false, yes/no, 1/0)',
                              file=item.file, line=item.line, parameter=key)
        return value

    if cfg.values["replication_mode"]:
        mode = "native_replication"
    elif flag("master_slave_mode"):
        sub = legacy.get("master_slave_sub_mode")
        text = (sub.value if sub else "slony").lower()
        if text not in _SUB_MODES:
            raise ConfigError(f'invalid value for parameter "master_slave_sub_mode": "{sub.value}" in file '
                              f'"{sub.file}" line {sub.line}: expected one of stream, slony, logical',
                              file=sub.file, line=sub.line, parameter="master_slave_sub_mode")
        mode = _SUB_MODES[text]
    else:
        mode = "raw"
    cfg.values["backend_clustering_mode"] = mode
    cfg.warnings.append((*where, f"legacy clustering mode parameters mapped to backend_clustering_mode = '{mode}'"))


def parse_config_text(text: str, filename: str = "pgpool.conf") -> Config:
    """Parse pgpool.conf text; raises ConfigError."""
    return parse_items(read_items(text, filename), filename)


def load_config(path: str) -> Config:
    """Read and parse a pgpool.conf file; raises ConfigError (also when the file cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f'could not open configuration file "{path}": {e.strerror}', file=path) from None
    cfg = parse_items(read_items(text, path), path)
    if cfg.use_watchdog:
        cfg.pgpool_node_id = read_pgpool_node_id(path)
        if not any(w.node_id == cfg.pgpool_node_id and w.wd_port > 0 for w in cfg.watchdog_nodes):
            raise ConfigError(f'invalid watchdog configuration in file "{path}": no watchdog configuration for local '
                              f'pgpool node, pgpool node id: {cfg.pgpool_node_id} (set hostname{cfg.pgpool_node_id}, '
                              f'wd_port{cfg.pgpool_node_id} and pgpool_port{cfg.pgpool_node_id})', file=path)
    return cfg
