"""The parent's failover machinery: node requests executed step by step from its main loop, which never blocks.

pgpool-II runs failover() inside its main process and blocks there while failover_command runs
and while it searches for the new primary.  Here each request becomes a job — a generator that
performs pgpool's steps in pgpool's order and yields whenever it must wait: for a command it
started (`scripts.spawn`, reaped by the parent's SIGCHLD handling) or for a primary probe (a
forked process asking pg_is_in_recovery(), once a second up to search_primary_node_timeout).  The
parent calls `submit` with new requests, `child_exited` from its reaper and `poll` on every loop
turn; meanwhile it keeps reaping and respawning workers and obeys shutdown signals, and `kill`
stops a running command's process group.

Shared memory: header.switching is 1 while a job is queued or running; header.failover_count is
bumped after each request is done (refused ones included), which PCP waiters poll.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from dataclasses import dataclass

from pgpool import log
from pgpool.ha import plan as P
from pgpool.ha import scripts
from pgpool.ha.follow import follow_child_main, release_lock
from pgpool.ha.requests import snapshot
from pgpool.state import probe
from pgpool.state import shm as S

PRIMARY_NOT_FOUND = 255          # exit code of a primary probe that found none
PRIMARY_POLL_SECONDS = 1.0       # pgpool's find_primary_node_repeatedly pace
PROBE_TIMEOUT = 10.0


@dataclass
class _Child:
    """The job waits for this process to exit; the job gets its exit code."""
    pid: int


@dataclass
class _Sleep:
    """The job waits until this monotonic time."""
    until: float


def probe_primary(cfg, candidates, quiet: bool = False, passwd=None) -> int:
    """Body of a primary probe process: the lowest candidate answering pg_is_in_recovery() = false,
    else PRIMARY_NOT_FOUND; logs each node as pgpool's find_primary_node does (`quiet`: only a
    primary found)."""
    found = PRIMARY_NOT_FOUND
    for node in candidates:
        r = probe.is_in_recovery(cfg, node, timeout=PROBE_TIMEOUT, passwd=passwd)
        if r is False:
            log.log("LOG", f"find_primary_node: primary node is {node}")
            found = min(found, node)
        elif quiet:
            continue
        elif r is None:
            log.log("LOG", f"find_primary_node: make_persistent_db_connection_noerror failed on node {node}")
        else:
            log.log("LOG", f"find_primary_node: standby node is {node}")
    return found


class Failover:
    """Runs node requests for the parent `server`, which provides cfg, shm and:
    write_status(), children {pid: index}, workers_started_after(t) -> [pid],
    kill_workers(pids, sig), fork_helper(name, body) -> pid, assign_roles(primary),
    restart_sr_check(), start_health_checks()."""

    def __init__(self, server):
        self.server = server
        self.queue: deque[P.Request] = deque()
        self.job = None
        self.waiting: _Child | _Sleep | None = None
        self.scripts: set[int] = set()        # running commands (each its own process group)
        self.probes: set[int] = set()         # running primary probes (job's or retry's)
        self.retry_pid = 0
        self.follow_pid = 0
        self.follow_queue: deque[tuple[int, int]] = deque()

    # ---- intake and driving -----------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.job is not None or bool(self.queue)

    def submit(self, requests) -> None:
        """Requests popped from the shared ring: (kind, node, flags, requester)."""
        for kind, node, flags, requester in requests:
            if kind == S.REQ_CLOSE_IDLE:
                self.server.kill_workers(self.server.worker_pids(), signal.SIGUSR1)
            elif kind in (S.REQ_NODE_DOWN, S.REQ_NODE_UP, S.REQ_PROMOTE):
                self.queue.append(P.Request(kind, node, flags, requester))
        if self.job is None:
            self._advance()     # a running job waits for its process or time; the rest queue

    def poll(self) -> None:
        if isinstance(self.waiting, _Sleep) and time.monotonic() >= self.waiting.until:
            self._advance()

    def timeout(self) -> float | None:
        """Seconds until poll() has something to do (None: only a child's exit will)."""
        if isinstance(self.waiting, _Sleep):
            return max(0.0, self.waiting.until - time.monotonic())
        return None

    def child_exited(self, pid: int, code: int) -> bool:
        """The parent reaped `pid`; True if it was one of ours."""
        if pid in self.scripts or pid in self.probes:
            self.scripts.discard(pid)
            self.probes.discard(pid)
            if pid == self.retry_pid:
                self.retry_pid = 0
                self._retry_done(code)
            elif isinstance(self.waiting, _Child) and self.waiting.pid == pid:
                self._advance(code)
            return True
        if pid == self.follow_pid:
            release_lock(self.server.shm, pid)
            self.follow_pid = 0
            if code != 0:
                log.log("LOG", f"follow_child process with pid: {pid} {scripts.outcome(code)}")
            self._next_follow()
            return True
        return False

    def _advance(self, value=None) -> None:
        shm = self.server.shm
        while True:
            if self.job is None:
                if not self.queue:
                    shm.header.switching = 0
                    self.waiting = None
                    return
                shm.header.switching = 1
                self.job = self._run(self.queue.popleft())
                value = None
            try:
                self.waiting = self.job.send(value)
                return
            except StopIteration:
                pass
            except Exception as e:   # noqa: BLE001 - a bug must not take the parent down
                log.log("ERROR", f"failover failed: {e.__class__.__name__}: {e}")
            self.job = None
            shm.header.failover_count += 1

    # ---- shutdown --------------------------------------------------------------------------

    def pids(self) -> list[int]:
        return sorted(self.scripts | self.probes | ({self.follow_pid} - {0}))

    def kill(self, sig: int) -> None:
        """Stop what runs: commands and the follow_child with their process groups, probes."""
        for pgid in self.scripts | ({self.follow_pid} - {0}):
            scripts.kill_group(pgid, sig)
        for pid in self.probes:
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    def stop(self) -> None:
        """Forget queued and running work (shutdown); processes are stopped with kill()."""
        if self.job is not None:
            self.job.close()
        self.job, self.waiting = None, None
        self.queue.clear()
        self.follow_queue.clear()

    # ---- one request ------------------------------------------------------------------------

    def _run(self, req: P.Request):
        srv, shm = self.server, self.server.shm
        plan = P.plan_request(snapshot(shm, srv.cfg), req)
        if plan.refused:
            log.log("LOG", plan.refused)
            return
        started = time.monotonic()
        for line in plan.logs:
            log.log("LOG", line)
        for node in plan.down:
            shm.set_backend(node, status=S.CON_DOWN)
        if plan.up >= 0:
            shm.set_backend(plan.up, status=S.CON_CONNECT_WAIT)
        if plan.down or plan.up >= 0:
            srv.write_status()
        if plan.kind != S.REQ_NODE_UP:          # pgpool restarts workers before failover_command
            self._restart(plan, since=None)
        for line in plan.commands:
            yield from self._command(plan.command_name, line)
        if plan.kind == S.REQ_NODE_UP:          # ... and decides after failback_command
            self._restart(plan, since=None)
        primary = plan.primary
        if primary is None:
            if plan.kind == S.REQ_NODE_DOWN and plan.old_primary >= 0:
                shm.backends[plan.old_primary].role = S.ROLE_STANDBY
            primary = yield from self._search()
        table = snapshot(shm, srv.cfg)
        follow = P.plan_follow(table, plan, primary)
        for line in follow.logs:
            log.log("LOG", line)
        for node in follow.degenerate:
            shm.set_backend(node, status=S.CON_DOWN)
        if follow.degenerate:
            srv.write_status()
        new_main = P.next_main(snapshot(shm, srv.cfg)) if follow.degenerate else plan.new_main
        srv.assign_roles(primary)
        log.log("LOG", f"failover: set new primary node: {primary}")
        if new_main >= 0:
            shm.header.main_node_id = new_main
            log.log("LOG", f"failover: set new main node: {new_main}")
        shm.bump()
        if follow.fork:
            self.follow_queue.append((plan.old_primary, primary))
            self._next_follow()
        self._restart(plan, since=started)
        srv.restart_sr_check()
        if plan.kind == S.REQ_NODE_UP:
            srv.start_health_checks()
        log.log("LOG", P.done_message(table, plan))

    def _restart(self, plan: P.Plan, since: float | None) -> None:
        """Restart workers per the plan's policy: every worker at the start of the operation
        (since=None) and, at its end, those started meanwhile. A standby's failure restarts
        nobody: sessions drop the lost node themselves."""
        srv = self.server
        if since is None and plan.restart_log:
            log.log("LOG", plan.restart_log)
        if plan.restart != P.RESTART_ALL:
            return
        pids = list(srv.children) if since is None else srv.workers_started_after(since)
        srv.kill_workers(pids, signal.SIGQUIT)

    def _command(self, name: str, line: str):
        log.log("LOG", f"execute command: {line}")
        try:
            pid = scripts.spawn(line)
        except OSError as e:
            log.log("WARNING", f"could not execute {name}: {e}", detail=f"command: {line}")
            return
        self.scripts.add(pid)
        scripts.report(name, line, (yield _Child(pid)))

    def _search(self):
        """pgpool's find_primary_node_repeatedly, one probe process a second."""
        srv = self.server
        found, message = P.search_shortcut(snapshot(srv.shm, srv.cfg))
        if message:
            log.log("LOG", message)
        if found is not None:
            return found
        log.log("LOG", "find_primary_node_repeatedly: waiting for finding a primary node")
        timeout = srv.cfg.search_primary_node_timeout
        deadline = time.monotonic() + timeout if timeout > 0 else None
        while True:
            pid = self._start_probe()
            code = yield _Child(pid)
            if 0 <= code < PRIMARY_NOT_FOUND:
                return code
            if deadline is not None and time.monotonic() + PRIMARY_POLL_SECONDS > deadline:
                return -1
            yield _Sleep(time.monotonic() + PRIMARY_POLL_SECONDS)

    def _start_probe(self, quiet: bool = False) -> int:
        srv = self.server
        candidates = P.search_candidates(snapshot(srv.shm, srv.cfg))
        pid = srv.fork_helper("primary_probe", lambda: probe_primary(srv.cfg, candidates, quiet,
                                                                            srv.pool_passwd))
        self.probes.add(pid)
        return pid

    # ---- follow primary --------------------------------------------------------------------

    def _next_follow(self) -> None:
        if self.follow_pid or not self.follow_queue:
            return
        old_primary, new_primary = self.follow_queue.popleft()
        srv = self.server
        pid = srv.fork_helper("follow_child",
                              lambda: follow_child_main(srv, old_primary, new_primary))
        srv.shm.header.follow_primary_lock = pid
        self.follow_pid = pid

    # ---- no primary: look again now and then (outside any request) ----------------------------

    def retry_primary_search(self) -> None:
        """Start one probe round if there is no primary and nothing else runs."""
        if self.busy or self.retry_pid:
            return
        table = snapshot(self.server.shm, self.server.cfg)
        if table.primary >= 0 or not table.streaming:
            return
        found, _ = P.search_shortcut(table)
        if found is not None:
            self._retry_done(found)
            return
        self.retry_pid = self._start_probe(quiet=True)

    def _retry_done(self, code: int) -> None:
        srv = self.server
        if self.busy or srv.shm.header.primary_node_id >= 0 or not 0 <= code < PRIMARY_NOT_FOUND:
            return
        srv.assign_roles(code)
        srv.shm.bump()
        log.log("LOG", f"failover: set new primary node: {code}")
