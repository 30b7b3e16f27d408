"""What a node request does, decided as pgpool-II 4.3's failover() decides it, without touching processes.

`plan_request(table, request)` -> Plan: refusal or status changes, the new main node, the
failover_command / failback_command lines to run, whether the new primary must be searched for,
and which workers to restart.  After the primary is known, `plan_follow` says which nodes the
follow primary step degenerates and whether a follow_child runs follow_primary_command;
Log texts are pgpool-II's.

Deliberate differences from pgpool-II 4.3.5:
- a failed primary always restarts every worker (4.3.5 restarts only some when the primary is not
  the lowest-numbered live node);
- requests for node ids past the configured backends are refused (4.3.5 "fails back" or
  "degenerates" a node with an empty host name);
- a request flagged REQ_FLAG_FULL_RESTART (a health check that timed out) restarts every worker,
  as a request without pgpool-II's REQ_DETAIL_SWITCHOVER does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from pgpool.ha.escapes import EscapeValues, expand
from pgpool.state import shm as S

# Flag bit of this module (the others are in pgpool.state.shm): restart every worker.
REQ_FLAG_FULL_RESTART = 512

STREAMING = "streaming_replication"
RAW = "raw"
RESTART_ALL, RESTART_NONE = "all", "none"
VALID_STATUSES = (S.CON_UP, S.CON_CONNECT_WAIT)


@dataclass(frozen=True)
class Node:
    """One configured backend as the planner sees it."""
    id: int
    status: int
    hostname: str = ""
    port: int = 0
    data_directory: str = ""
    quarantine: bool = False
    allow_failover: bool = True
    always_primary: bool = False

    @property
    def valid(self) -> bool:
        return self.status in VALID_STATUSES


@dataclass(frozen=True)
class Table:
    """The backend table and the settings a plan depends on."""
    nodes: tuple[Node, ...]
    primary: int                  # -1: none
    main: int
    mode: str = STREAMING
    failover_command: str = ""
    failback_command: str = ""
    follow_primary_command: str = ""
    follow_ongoing: bool = False  # a follow_child holds the follow primary lock

    @property
    def streaming(self) -> bool:
        return self.mode == STREAMING

    def node(self, node_id: int) -> Node | None:
        return self.nodes[node_id] if 0 <= node_id < len(self.nodes) else None

    def valid(self, node_id: int) -> bool:
        n = self.node(node_id)
        return n is not None and n.valid

    def host(self, node_id: int) -> str:
        """pgpool's "host(port)" of a node; "(0)" for an unknown id."""
        n = self.node(node_id)
        return f"{n.hostname}({n.port})" if n else "(0)"

    def with_status(self, changes: dict[int, int]) -> Table:
        return replace(self, nodes=tuple(replace(n, status=changes.get(n.id, n.status))
                                         for n in self.nodes))


@dataclass(frozen=True)
class Request:
    kind: int                     # S.REQ_NODE_DOWN / REQ_NODE_UP / REQ_PROMOTE
    node: int
    flags: int = 0
    requester: int = 0            # pid of the asking process


@dataclass(frozen=True)
class Plan:
    kind: int
    node: int                     # the node acted on (promote -s: the old primary)
    refused: str = ""             # non-empty: log this and do nothing else
    logs: tuple[str, ...] = ()    # LOG lines when the operation starts
    down: tuple[int, ...] = ()    # nodes set down
    up: int = -1                  # node set to "waiting" (failback)
    new_main: int = -1
    old_main: int = -1
    old_primary: int = -1
    commands: tuple[str, ...] = ()   # expanded command lines, run in order
    command_name: str = ""        # "failover_command" / "failback_command"
    primary: int | None = None    # the new primary when known now; None = search for it
    restart: str = RESTART_NONE
    restart_log: str = ""
    promote_node: int = -1        # promote -s: the node failover_command is to promote


@dataclass(frozen=True)
class FollowPlan:
    degenerate: tuple[int, ...] = ()   # nodes set down before follow_primary_command runs
    logs: tuple[str, ...] = ()
    fork: bool = False                 # start a follow_child


def next_main(table: Table, changes: dict[int, int] | None = None) -> int:
    """pgpool's get_next_main_node(): the lowest-numbered valid node, -1 if none."""
    t = table.with_status(changes) if changes else table
    return next((n.id for n in t.nodes if n.valid), -1)


def degenerate_refusal(table: Table, node: int, requester: int) -> str:
    """Why a detach request for `node` is refused (pgpool's degenerate_backend_set_ex), "" if it
    may go ahead."""
    if not 0 <= node < S.MAX_BACKENDS:
        return (f"invalid degenerate backend request, node id: {node} is out of range. node id "
                f"must be between [0 and {S.MAX_BACKENDS}]")
    n = table.node(node)
    # raw mode uses only the main node: the others cannot be detached (pgpool's VALID_BACKEND)
    usable = n is not None and n.valid and (table.mode != RAW or node == table.main)
    if not usable and not (n is not None and n.quarantine):
        status = n.status if n else S.CON_UNUSED
        return (f"invalid degenerate backend request, node id : {node} status: [{status}] is not "
                "valid for failover")
    if not n.allow_failover:
        return (f"degenerate backend request for node_id: {node} from pid [{requester}] is canceled "
                "because failover is disallowed on the node")
    return ""


# ---- phase 1: the request ------------------------------------------------------------------

def plan_request(table: Table, req: Request) -> Plan:
    return _PLANNERS[req.kind](table, req)


def _plan_node_down(table: Table, req: Request) -> Plan:
    promote = bool(req.flags & S.REQ_FLAG_SWITCHOVER)
    node = table.primary if promote else req.node
    n = table.node(node)
    if n is None or not (n.valid or n.quarantine):
        return Plan(S.REQ_NODE_DOWN, node, refused="failover: no backends are degenerated")
    if not promote and not n.allow_failover:
        return Plan(S.REQ_NODE_DOWN, node, refused=degenerate_refusal(table, node, req.requester))
    changes = {node: S.CON_DOWN}
    new_main = next_main(table, changes)
    logs = [f"starting degeneration. shutdown host {table.host(node)}"]
    if new_main < 0:
        logs.append("failover: no valid backend node found")
    effective_primary = table.primary if table.primary >= 0 else table.main
    if table.streaming and not req.flags & REQ_FLAG_FULL_RESTART and node != effective_primary:
        restart = RESTART_NONE       # sessions drop the node themselves (pgpool restarts some)
        restart_log = (f"Do not restart children because we are switching over node id {node} host: "
                       f"{n.hostname} port: {n.port} and we are in streaming replication mode")
    else:
        restart, restart_log = RESTART_ALL, "Restart all children"
    promote_node = req.node if promote else -1
    values = EscapeValues(node, promote_node if promote else new_main, table.main, table.primary)
    if not table.streaming:
        primary = new_main
    elif table.primary >= 0 and table.primary != node:
        primary = table.primary          # a standby failed: the primary stays
    else:
        primary = None
    return Plan(S.REQ_NODE_DOWN, node, logs=tuple(logs), down=(node,), new_main=new_main,
                old_main=table.main, old_primary=table.primary,
                commands=_command(table.failover_command, table.nodes, values),
                command_name="failover_command", primary=primary, restart=restart,
                restart_log=restart_log, promote_node=promote_node)


def _plan_node_up(table: Table, req: Request) -> Plan:
    node = req.node
    if not 0 <= node < S.MAX_BACKENDS:
        return Plan(S.REQ_NODE_UP, node, refused=(
            f"invalid failback request, node id: {node} is invalid. node id must be between "
            f"[0 and {S.MAX_BACKENDS}]"))
    n = table.node(node)
    if n is None or n.status != S.CON_DOWN:
        status = n.status if n else S.CON_UNUSED
        return Plan(S.REQ_NODE_UP, node, refused=(
            f"invalid failback request, status: [{status}] of node id : {node} is invalid for failback"))
    all_down = not any(x.valid for x in table.nodes)
    new_main = next_main(table, {node: S.CON_CONNECT_WAIT})
    if table.streaming and not all_down and table.primary >= 0 and table.primary != node:
        restart = RESTART_NONE
        restart_log = (f"Do not restart children because we are failing back node id {node} host: "
                       f"{n.hostname} port: {n.port} and we are in streaming replication mode and "
                       "not all backends were down")
    else:
        restart, restart_log = RESTART_ALL, "Restart all children"
    # %P of failback_command is pgpool's PRIMARY_NODE_ID: the primary if valid, else the main node
    old_primary = table.primary if table.valid(table.primary) else table.main
    values = EscapeValues(node, new_main, table.main, old_primary)
    return Plan(S.REQ_NODE_UP, node, logs=(f"starting fail back. reconnect host {table.host(node)}",),
                up=node, new_main=new_main, old_main=table.main, old_primary=table.primary,
                commands=_command(table.failback_command, table.nodes, values),
                command_name="failback_command",
                primary=None if table.streaming else new_main,
                restart=restart, restart_log=restart_log)


def _plan_promote(table: Table, req: Request) -> Plan:
    node = req.node
    if not table.streaming or not table.valid(node):
        return Plan(S.REQ_PROMOTE, node, refused="failover: no backends are promoted")
    return Plan(S.REQ_PROMOTE, node, logs=(f"starting promotion. promote host {table.host(node)}",),
                new_main=table.main, old_main=table.main, old_primary=table.primary, primary=node,
                restart=RESTART_ALL, restart_log="Restart all children")


_PLANNERS = {S.REQ_NODE_DOWN: _plan_node_down, S.REQ_NODE_UP: _plan_node_up,
             S.REQ_PROMOTE: _plan_promote}


def _command(template: str, nodes: Sequence[Node], values: EscapeValues) -> tuple[str, ...]:
    line = expand(template, nodes, values) if template else ""
    return (line,) if line else ()


# ---- searching for the primary ---------------------------------------------------------------

def search_shortcut(table: Table) -> tuple[int | None, str]:
    """(primary, log line) when the primary is known without asking the nodes, else (None, "").

    As pgpool's find_primary_node_repeatedly / find_primary_node: a running follow primary keeps the
    current primary, a node flagged ALWAYS_PRIMARY is the primary, and with every node down there
    is nothing to find."""
    if table.follow_ongoing:
        return table.primary, ("find_primary_node_repeatedly: follow primary is ongoing. return "
                               f"current primary: {table.primary}")
    flagged = next((n.id for n in table.nodes if n.always_primary), None)
    if flagged is not None:
        return flagged, ""
    if not any(n.valid for n in table.nodes):
        return -1, ("find_primary_node_repeatedly: all of the backends are down. Giving up finding "
                    "primary node")
    return None, ""


def search_candidates(table: Table) -> tuple[int, ...]:
    """Nodes asked pg_is_in_recovery() when searching for the primary."""
    return tuple(n.id for n in table.nodes if n.valid)


# ---- phase 2: follow primary ------------------------------------------------------------------

def plan_follow(table: Table, plan: Plan, new_primary: int) -> FollowPlan:
    """Nodes the follow primary step marks down (every node but the new primary) when the primary
    failed, none existed and one appeared, or a node was promoted (pgpool-II 4.3 failover())."""
    if not table.streaming or not (table.follow_primary_command or plan.kind == S.REQ_PROMOTE):
        return FollowPlan()
    old = plan.old_primary
    wanted = ((plan.kind == S.REQ_NODE_DOWN and old >= 0 and old in plan.down)
              or (plan.kind == S.REQ_NODE_DOWN and old < 0 and new_primary >= 0)
              or (plan.kind == S.REQ_PROMOTE and table.valid(plan.node)))
    if not wanted:
        return FollowPlan()
    degenerate = tuple(n.id for n in table.nodes if new_primary >= 0 and n.id != new_primary)
    logs = [f"starting follow degeneration. shutdown host {table.host(i)}" for i in degenerate]
    logs.append(f"failover: {len(degenerate)} follow backends have been degenerated" if degenerate
                else "failover: no follow backends are degenerated")
    return FollowPlan(degenerate, tuple(logs), bool(degenerate and table.follow_primary_command))


def follow_values(node: int, old_primary: int, new_primary: int) -> EscapeValues:
    """Escapes of follow_primary_command: %m the new primary, %M and %P the old primary."""
    return EscapeValues(node, new_primary, old_primary, old_primary)


# ---- the end of an operation ------------------------------------------------------------------

def done_message(table: Table, plan: Plan) -> str:
    host = table.host(plan.node)
    return {S.REQ_NODE_UP: f"failback done. reconnect host {host}",
            S.REQ_PROMOTE: f"promotion done. promoted host {host}",
            S.REQ_NODE_DOWN: f"failover done. shutdown host {host}"}[plan.kind]
