"""Generate sample/pgpool.conf.sample from the settings table: `python -m pgpool.config.sample > sample/pgpool.conf.sample`.

Every parameter appears commented out with its default (only backend_clustering_mode is set, as in
pgpool-II's sample), grouped in pgpool's sections, with its description and whether a change needs a restart.
"""

from __future__ import annotations

import sys

from pgpool.config.settings import INIT, SECTIONS, SESSION, SETTINGS, Setting

_INDENT = " " * 35
_RULE = "#" + "-" * 78

_HEADER = """\
# ----------------------------
# pgPool-II configuration file
# ----------------------------
#
# This file consists of lines of the form:
#
#   name = value
#
# Whitespace may be used.  Comments are introduced with "#" anywhere on a line.
# String values are written in single quotes; numbers may carry a unit
# (time: us, ms, s, min, h, d; size: B, kB, MB, GB, TB).  Parameters that exist
# once per node carry the node number as a suffix (backend_hostname0, ...).
#
# This file is read on server startup and when the server receives a SIGHUP
# signal (or "pgpool reload" / pcp_reload_config).  Parameters marked
# "(change requires restart)" need a restart to take effect; parameters marked
# "(can be changed with PGPOOL SET)" can also be changed inside a session.
#
# Generated from pgpool/config/settings.py by pgpool.config.sample.
"""

# Example values for per-node parameters (node 0); other per-node parameters show their default.
_NODE_EXAMPLES = {
    "backend_hostname": "'localhost'", "backend_port": "5432", "backend_weight": "1",
    "backend_data_directory": "'/var/lib/postgresql/data'", "backend_application_name": "'server0'",
    "hostname": "'host0'", "wd_port": "9000", "pgpool_port": "9999",
    "heartbeat_hostname": "'host0'", "heartbeat_port": "9694",
}
_UNITS = {
    "s": (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)),
    "ms": (("min", 60000), ("s", 1000), ("ms", 1)),
    "min": (("d", 1440), ("h", 60), ("min", 1)),
    "kB": (("GB", 1024**2), ("MB", 1024), ("kB", 1)),
    "B": (("GB", 1024**3), ("MB", 1024**2), ("kB", 1024), ("B", 1)),
}


def render_value(s: Setting, value=None) -> str:
    """A value as it would be written in pgpool.conf (defaults to the setting's default)."""
    value = s.default if value is None else value
    if s.type == "bool":
        return "on" if value else "off"
    if s.type == "int":
        if s.name == "log_file_mode":
            return f"0{value:o}"
        if s.unit and value > 0:
            name, size = next((n, z) for n, z in _UNITS[s.unit] if value % z == 0)
            return f"{value // size}{name}"
        return str(value)
    if s.type == "real":
        return f"{value:g}"
    return "'" + str(value) + "'"


def _entry(s: Setting, name: str, value: str, commented: bool = True) -> list[str]:
    notes = [s.description]
    if s.type == "enum":
        shown = dict.fromkeys(n or "'' (none)" for n, _ in s.enum_values)
        notes.append("One of: " + ", ".join(shown))
    if s.context == INIT:
        notes.append("(change requires restart)")
    elif s.context == SESSION:
        notes.append("(can be changed with PGPOOL SET)")
    return [f"{'#' if commented else ''}{name} = {value}"] + [f"{_INDENT}# {n}" for n in notes]


def _section_lines(index: int, members: list[Setting]) -> list[str]:
    title, sub = SECTIONS[index]
    lines = []
    if index == 0 or SECTIONS[index - 1][0] != title:
        lines += ["", _RULE, f"# {title}", _RULE, ""]
    if sub:
        lines += [f"# - {sub} -", ""]
    for s in members:
        if s.per_node and not s.node_default:
            lines += _entry(s, f"{s.name}0", _NODE_EXAMPLES.get(s.name, render_value(s)))
        else:
            lines += _entry(s, s.name, render_value(s), commented=s.name != "backend_clustering_mode")
    lines.append("")
    return lines


def generate() -> str:
    """The whole sample file."""
    lines = [_HEADER.rstrip("\n")]
    for index in range(len(SECTIONS)):
        members = [s for s in SETTINGS.values() if s.section == index]
        lines += _section_lines(index, members)
        if SECTIONS[index][0] == "HEALTH CHECK GLOBAL PARAMETERS":
            lines += ["", _RULE, "# HEALTH CHECK PER NODE PARAMETERS (OPTIONAL)", _RULE, ""]
            lines += [f"#{s.name}0 = {render_value(s)}" for s in members]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(generate())
