"""How workers, PCP workers and check processes ask the parent for a node operation, and the table they judge it on.

`register` is pgpool's register_node_operation_request: append to the shared request ring and wake
the parent with SIGUSR1.  `snapshot` turns shared memory and the configuration into the planner's
Table, so that a requester refuses exactly what the parent would.
"""

from __future__ import annotations

import os
import signal

from pgpool import log
from pgpool.ha.plan import Node, Table


def snapshot(shm, cfg) -> Table:
    """The backend table as the planner sees it now."""
    nodes = []
    for b in cfg.backends:
        slot = shm.backends[b.node_id]
        nodes.append(Node(b.node_id, slot.status, b.hostname, b.port, b.data_directory,
                          bool(slot.quarantine), b.allow_to_failover, b.always_primary))
    h = shm.header
    return Table(tuple(nodes), h.primary_node_id, h.main_node_id, cfg.clustering_mode,
                 cfg.failover_command, cfg.failback_command, cfg.follow_primary_command,
                 h.follow_primary_lock != 0)


def register(shm, kind: int, node: int, flags: int = 0) -> bool:
    """Queue a request for the parent and wake it; False (logged) when the ring is full."""
    if not shm.push_request(kind, node, flags, os.getpid()):
        log.log("LOG", "failed to register node operation request",
                detail=f"the request queue is full; request kind {kind} for node {node} is lost")
        return False
    if shm.header.parent_pid > 0:       # 0 = a segment made by a tool or test: no parent
        try:
            os.kill(shm.header.parent_pid, signal.SIGUSR1)
        except OSError:
            pass
    return True


def failover_settled(shm, before: int) -> bool:
    """True once a failover / failback / promotion finished after the count `before` was read and
    nothing is queued or running any more (what graceful PCP requests wait for)."""
    h = shm.header
    return h.failover_count > before and not h.switching and h.req_head == h.req_tail


def parent_alive(shm) -> bool:
    if shm.header.parent_pid <= 0:
        return False
    try:
        os.kill(shm.header.parent_pid, 0)
        return True
    except OSError:
        return False

