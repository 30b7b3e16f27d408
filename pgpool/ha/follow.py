"""The follow_child process: runs follow_primary_command for every down node after a primary change.

Forked by the parent at the end of a failover (pgpool-II's fork_follow_child), so the parent keeps
serving meanwhile: a `pcp_attach_node` issued by the command is handled while it runs.  The
process starts a session of its own (shutdown stops it and its commands with one killpg), holds
the follow primary lock (shm.header.follow_primary_lock = its pid; a primary search meanwhile
keeps the current primary; the parent runs one follow_child at a time) and runs the command, in
node order, for each node that is down at the moment its turn comes.
"""

from __future__ import annotations

import os

from pgpool import log
from pgpool.ha import scripts
from pgpool.ha.escapes import expand
from pgpool.ha.plan import follow_values
from pgpool.state import shm as S


def release_lock(shm, pid: int) -> None:
    """Free the follow primary lock if `pid` holds it (the parent calls this when it reaps `pid`)."""
    if shm.header.follow_primary_lock == pid:
        shm.header.follow_primary_lock = 0


def follow_child_main(server, old_primary: int, new_primary: int) -> int:
    """Body of the follow_child process; returns its exit code."""
    log.set_process("follow_child")
    os.setsid()
    shm = server.shm
    shm.header.follow_primary_lock = os.getpid()     # the parent runs one follow_child at a time
    try:
        log.log("LOG", "start triggering follow command.")
        cfg = server.cfg
        for b in cfg.backends:
            if shm.backends[b.node_id].status != S.CON_DOWN:
                continue
            line = expand(cfg.follow_primary_command, cfg.backends,
                          follow_values(b.node_id, old_primary, new_primary))
            if not line:
                continue
            log.log("LOG", f"execute command: {line}")
            scripts.report("follow_primary_command", line, scripts.run(line, own_group=False))
    finally:
        release_lock(shm, os.getpid())
    return 0
