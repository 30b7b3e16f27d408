"""%-escapes of failover_command, failback_command and follow_primary_command, as pgpool-II 4.3 expands them.

One parser serves the three commands (pgpool's trigger_failover_command):

    %d %h %p %D   id, host, port, data directory of the node the command is about
    %m            new main node id (follow_primary_command: the new primary)
    %H %r %R      host, port, data directory of the %m node
    %M            old main node id (follow_primary_command: the old primary)
    %P            old primary node id
    %N %S         host, port of the old primary
    %%            a percent sign

A node id that names no configured backend (-1, or past the last one) prints `""` (two double
quotes) for its host, port and directory; the id itself prints as is (-1).  Unknown escapes and a
trailing lone `%` print nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

MISSING = '""'


@dataclass(frozen=True)
class NodeAddress:
    """What the escapes need to know about one configured backend."""
    hostname: str
    port: int
    data_directory: str


@dataclass(frozen=True)
class EscapeValues:
    """The node ids one command line is expanded with."""
    node: int            # %d: the detached / attached / following node
    new_main: int        # %m
    old_main: int        # %M
    old_primary: int     # %P


def _address(backends: Sequence[NodeAddress], node: int) -> NodeAddress | None:
    return backends[node] if 0 <= node < len(backends) else None


def _field(backends, node: int, attr: str) -> str:
    info = _address(backends, node)
    return MISSING if info is None else str(getattr(info, attr))


# escape letter -> text, given (backends, values)
_ESCAPES = {
    "d": lambda b, v: str(v.node),
    "h": lambda b, v: _field(b, v.node, "hostname"),
    "p": lambda b, v: _field(b, v.node, "port"),
    "D": lambda b, v: _field(b, v.node, "data_directory"),
    "m": lambda b, v: str(v.new_main),
    "H": lambda b, v: _field(b, v.new_main, "hostname"),
    "r": lambda b, v: _field(b, v.new_main, "port"),
    "R": lambda b, v: _field(b, v.new_main, "data_directory"),
    "M": lambda b, v: str(v.old_main),
    "P": lambda b, v: str(v.old_primary),
    "N": lambda b, v: _field(b, v.old_primary, "hostname"),
    "S": lambda b, v: _field(b, v.old_primary, "port"),
    "%": lambda b, v: "%",
}


def expand(template: str, backends: Sequence[NodeAddress], values: EscapeValues) -> str:
    """The command line `template` with its %-escapes replaced."""
    out = []
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        if i + 1 < n:
            fill = _ESCAPES.get(template[i + 1])
            if fill is not None:
                out.append(fill(backends, values))
        i += 2
    return "".join(out)
