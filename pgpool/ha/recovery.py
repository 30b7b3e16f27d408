"""Online recovery (pcp_recovery_node), run inside a PCP worker, with pgpool-II 4.3's checks, stages and texts.

A recovery is a plan of steps chosen by clustering mode (PLANS).  The driver logs in to the
primary (streaming replication) or main node (native replication / snapshot isolation) database
template1 as recovery_user and calls the SQL functions of sql/pgpool_recovery.sql there:
`pgpool_recovery(<recovery_1st_stage_command>, ...)`, in native modes a CHECKPOINT before it and a
2nd stage after it (new clients blocked with shm.header.in_recovery = 1, wait until client sessions
end, CHECKPOINT, `pgpool_recovery(<recovery_2nd_stage_command>, ...)`), then
`pgpool_remote_start(...)`; it waits until the target node accepts connections and asks the parent
to attach it (REQ_NODE_UP with REQ_FLAG_RECOVERY), waiting up to 5 s for the parent to finish.
As in pgpool-II, clients are blocked only during a 2nd stage: in streaming replication mode
in_recovery stays 0 and sessions go on while the 1st stage copies the data.  Failures raise
RecoveryError carrying pgpool's ERROR / FATAL text for the PCP client.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass

from pgpool import log
from pgpool.ha import requests
from pgpool.auth.pool_passwd import (PasswordType, UnsupportedPasswordError, config_user_password,
                                     password_type)
from pgpool.proxy.backend import BackendError
from pgpool.state import probe
from pgpool.state import shm as S

STREAMING = "streaming_replication"
RECOVERY_IDLE, RECOVERY_ONLINE = 0, 1          # shm.header.in_recovery values used here
POLL_SECONDS = 3                                # pgpool polls the target / client count every 3 s
POSTGRES_DB_TRIES = 4                           # tries on database postgres before template1
FAILBACK_WAIT_SECONDS = 5
CONNECT_TIMEOUT = 10.0
STAGE_NAMES = {1: "1st stage", 2: "2nd stage"}

# The steps of a recovery, per clustering mode (modes missing here cannot recover).
_NATIVE_PLAN = (("checkpoint", 1), ("stage", 1), ("wait_clients_gone",), ("checkpoint", 2),
                ("stage", 2), ("remote_start",), ("wait_started",), ("failback",))
PLANS = {
    STREAMING: (("stage", 1), ("remote_start",), ("wait_started",), ("failback",)),
    "native_replication": _NATIVE_PLAN,
    "snapshot_isolation": _NATIVE_PLAN,
}

# What the request queue holds while the parent switches -> why a recovery must wait.
_BUSY_DETAILS = {S.REQ_NODE_UP: "failback is in progress", S.REQ_NODE_DOWN: "failover is in progress",
                 S.REQ_PROMOTE: "promote node operation is in progress"}


class RecoveryError(Exception):
    """A refused or failed recovery: pgpool's message (and detail) for the PCP client."""

    def __init__(self, message: str, detail: str | None = None, severity: str = "ERROR"):
        super().__init__(message)
        self.message, self.detail, self.severity = message, detail, severity


# ---- pure parts ---------------------------------------------------------------------------------

def busy_error(switching: bool, pending_kind: int | None) -> RecoveryError | None:
    """pgpool refuses a recovery while the parent switches and requests are still queued."""
    if not switching or pending_kind is None:
        return None
    return RecoveryError("failed to process PCP request at the moment",
                         _BUSY_DETAILS.get(pending_kind, "operation is in progress"))


def request_error(node: int, num_backends: int, mode: str, primary_node_id: int) -> RecoveryError | None:
    """The PCP worker's checks of a recovery request (before anything runs)."""
    if not 0 <= node < num_backends:
        return RecoveryError("process recovery request failed", f"node id {node} is not valid")
    if mode == STREAMING and node == primary_node_id:
        return RecoveryError("process recovery request failed",
                             "primary server cannot be recovered by online recovery.")
    if mode not in PLANS:
        return RecoveryError("process recovery request failed",
                             "recovery request is only allowed in replication and streaming replication modes.")
    return None


def target_error(node: int, status: int) -> RecoveryError | None:
    """start_recovery's checks of the target node's status."""
    if status == S.CON_UNUSED:
        return RecoveryError(f"node recovery failed, node id: {node} is unused")
    if status != S.CON_DOWN:
        return RecoveryError(f"node recovery failed, node id: {node} is alive")
    return None


def script_host(hostname: str) -> str:
    """The host name a recovery script gets: Unix-socket (or empty) hosts become localhost."""
    return "localhost" if not hostname or hostname.startswith("/") else hostname


def sql_literal(value: str) -> str:
    """A SQL string literal of `value`, right whatever standard_conforming_strings is."""
    quoted = value.replace("'", "''")
    if "\\" in value:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"


@dataclass(frozen=True)
class Node:
    """What a recovery needs to know of a backend."""
    node_id: int
    hostname: str
    port: int
    data_directory: str


def recovery_sql(script: str, source: Node, target: Node) -> str:
    """pgpool-II 4.3's call of the stage script (7-argument pgpool_recovery)."""
    args = [sql_literal(script), sql_literal(script_host(target.hostname)),
            sql_literal(target.data_directory), sql_literal(str(source.port)), str(target.node_id),
            sql_literal(str(target.port)), sql_literal(script_host(source.hostname))]
    return f"SELECT pgpool_recovery({', '.join(args)})"


def remote_start_sql(target: Node) -> str:
    return (f"SELECT pgpool_remote_start({sql_literal(script_host(target.hostname))}, "
            f"{sql_literal(target.data_directory)})")


def start_check_schedule(recovery_timeout: int) -> list[tuple[str, int, bool]]:
    """(database, retry number, sleep after a failure) for each attempt to reach the started node:
    4 tries on postgres, then 1 + recovery_timeout / 3 on template1, POLL_SECONDS apart (none
    after the last)."""
    retries = max(0, recovery_timeout) // POLL_SECONDS
    return ([("postgres", i, True) for i in range(POSTGRES_DB_TRIES)]
            + [("template1", i, i < retries) for i in range(retries + 1)])


def libpq_error_text(fields: dict) -> str:
    """A backend error as libpq's PQresultErrorMessage shows it (severity, message, detail)."""
    text = f"{fields.get('S', 'ERROR')}:  {fields.get('M', '')}\n"
    if fields.get("D"):
        text += f"DETAIL:  {fields['D']}\n"
    return text


# ---- one recovery at a time ---------------------------------------------------------------------

@contextmanager
def exclusive(parent_pid: int):
    """Hold pgpool's "recovery in progress" mark: a Linux abstract Unix socket named after the
    parent's pid, bound while the block runs and released by the kernel even if this worker dies.
    FATAL RecoveryError when another PCP worker holds it."""
    mark = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        mark.bind(f"\0pgpool-py-recovery-{parent_pid}")
    except OSError:
        mark.close()
        raise RecoveryError("process recovery request failed",
                            "pgpool-II is already processing another recovery request.",
                            severity="FATAL") from None
    try:
        yield
    finally:
        mark.close()


# ---- the driver ------------------------------------------------------------------------------------

def _node(cfg, node_id: int) -> Node:
    b = cfg.backends[node_id]
    return Node(node_id, b.hostname, b.port, b.data_directory)


class OnlineRecovery:
    """Runs PLANS[mode] for one target node over one connection to the source node."""

    def __init__(self, cfg, shm, node: int, passwd=None):
        self.cfg, self.shm, self.passwd = cfg, shm, passwd
        self.mode = cfg.clustering_mode
        self.source_id = shm.header.primary_node_id if self.mode == STREAMING else shm.header.main_node_id
        self.target = _node(cfg, node)
        self.conn = None

    # -- helpers ------------------------------------------------------------------------------

    def _password(self) -> str | None:
        try:
            return config_user_password(self.cfg.recovery_user, self.cfg.recovery_password, self.passwd)
        except UnsupportedPasswordError as e:
            raise RecoveryError(f"the password of recovery_user {self.cfg.recovery_user} is invalid format",
                                str(e)) from None

    def _connect(self, node: int, database: str):
        conn = probe.connect_as(self.cfg, node, self.cfg.recovery_user, self._password(), database,
                                CONNECT_TIMEOUT)
        conn.sock.settimeout(None)       # stage scripts run as long as they need (statement_timeout 0)
        return conn

    def _connect_source(self) -> None:
        if not 0 <= self.source_id < len(self.cfg.backends):
            raise RecoveryError(f"node recovery failed, unable to connect to main node: {self.source_id} ",
                                "there is no primary node")
        try:
            self.conn = self._connect(self.source_id, "template1")
        except (OSError, EOFError, BackendError) as e:
            log.log("LOG", f"node recovery: could not log in to node {self.source_id} as "
                           f'"{self.cfg.recovery_user}"', detail=str(e))
            if password_type(self.cfg.recovery_password) is PasswordType.MD5:
                raise RecoveryError(f"the password of recovery_user {self.cfg.recovery_user} is invalid format",
                                    "recovery_password is not allowed to be md5 hashed format") from None
            raise RecoveryError(f"node recovery failed, unable to connect to main node: {self.source_id} ",
                                str(e)) from None

    def _query(self, sql: str, failure: RecoveryError | None) -> dict | None:
        """Run `sql` on the source; the backend's error fields (or None).  With `failure`, an
        error raises it instead (after logging what the backend said)."""
        try:
            _rows, errors = self.conn.simple_query(sql)
            fields = errors[0] if errors else None
        except (OSError, EOFError, BackendError) as e:
            fields = {"S": "ERROR", "M": f"lost the connection to node {self.source_id}: {e}"}
        if fields is not None and failure is not None:
            log.log("LOG", f"node recovery: {fields.get('M', '')}", detail=fields.get("D"))
            raise failure
        return fields

    # -- steps ----------------------------------------------------------------------------------

    def _checkpoint(self, stage: int) -> None:
        log.debug("recovery execute checkpoint, start checkpoint")
        self._query("CHECKPOINT", RecoveryError("executing recovery, execute CHECKPOINT failed"))
        if stage == 1:
            log.log("LOG", "node recovery, CHECKPOINT in the 1st stage done")
        else:
            log.log("LOG", "node recovery", detail="CHECKPOINT in the 2nd stage done")

    def _stage(self, stage: int) -> None:
        script = self.cfg.recovery_1st_stage_command if stage == 1 else self.cfg.recovery_2nd_stage_command
        if script:
            sql = recovery_sql(script, _node(self.cfg, self.source_id), self.target)
            name = STAGE_NAMES[stage]
            log.log("LOG", "executing recovery", detail=f'starting recovery command: "{sql}"')
            log.log("LOG", "executing recovery", detail="disabling statement_timeout")
            self._query("SET statement_timeout To 0",
                        RecoveryError(f'executing recovery, SET STATEMENT_TIMEOUT failed at "{name}"'))
            self._query(sql, RecoveryError(f'executing recovery, execution of command failed at "{name}"',
                                           f'command:"{script}"'))
        if stage == 1:
            log.log("LOG", "node recovery, 1st stage is done")

    def _wait_clients_gone(self) -> None:
        """Native modes: block new clients (workers wait while in_recovery is 1) and wait up to
        recovery_timeout for the sessions to end."""
        log.log("LOG", "node recovery, starting 2nd stage")
        self.shm.header.in_recovery = RECOVERY_ONLINE
        retries = max(0, self.cfg.recovery_timeout) // POLL_SECONDS
        for attempt in range(retries + 1):
            if self.shm.connected_clients() == 0:
                log.log("LOG", "node recovery, all connections from clients have been closed")
                return
            if attempt < retries:
                time.sleep(POLL_SECONDS)
        log.log("LOG", "wait_connection_closed: existing connections did not close in "
                       f"{self.cfg.recovery_timeout} sec.")
        raise RecoveryError("node recovery failed, waiting connection closed in the other pgpools timeout")

    def _remote_start(self) -> None:
        log.debug("executing remote start", detail="start pgpool_remote_start")
        fields = self._query(remote_start_sql(self.target), None)
        if fields is not None:
            raise RecoveryError(f'executing remote start failed with error: "{libpq_error_text(fields)}"')
        log.debug("executing remote start", detail="finish pgpool_remote_start")

    def _wait_started(self) -> None:
        t, user = self.target, self.cfg.recovery_user
        for database, retry, sleep_after in start_check_schedule(self.cfg.recovery_timeout):
            log.log("LOG", "checking if postmaster is started",
                    detail=f"trying to connect to postmaster on hostname:{t.hostname} database:{database} "
                           f"user:{user} (retry {retry} times)")
            try:
                self._connect(t.node_id, database).close()
                return
            except (OSError, EOFError, BackendError):
                log.log("LOG", "checking if postmaster is started",
                        detail=f"failed to connect to postmaster on hostname:{t.hostname} "
                               f"database:{database} user:{user}")
            if sleep_after:
                time.sleep(POLL_SECONDS)
        raise RecoveryError("recovery is checking if postmaster is started",
                            f'postmaster on hostname:"{t.hostname}" database:"{database}" user:"{user}" '
                            f"failed to start in {self.cfg.recovery_timeout} second")

    def _failback(self) -> None:
        node = self.target.node_id
        log.log("LOG", f"node recovery, node: {node} restarted")
        before = self.shm.header.failover_count
        if not requests.register(self.shm, S.REQ_NODE_UP, node, S.REQ_FLAG_RECOVERY):
            raise RecoveryError("node recovery failed, failed to send failback request",
                                "the failover request queue is full")
        deadline = time.monotonic() + FAILBACK_WAIT_SECONDS
        while not requests.failover_settled(self.shm, before):
            if time.monotonic() > deadline:
                log.log("LOG", "node recovery", detail="waiting for wake up request is timeout"
                                                       f"({FAILBACK_WAIT_SECONDS} seconds)")
                return
            time.sleep(0.1)

    # -- run ----------------------------------------------------------------------------------

    def run(self) -> None:
        node = self.target.node_id
        log.log("LOG", f"starting recovering node {node}")
        error = target_error(node, self.shm.backends[node].status)
        if error is not None:
            raise error
        self._connect_source()
        try:
            for step, *args in PLANS[self.mode]:
                getattr(self, f"_{step}")(*args)
        finally:
            self.conn.close()
        log.log("LOG", "recovery done")


def recover_node(cfg, shm, node: int, passwd=None) -> None:
    """Serve pcp_recovery_node for `node` (returns when the node is attached again).

    RecoveryError: refused (ERROR; FATAL when another recovery runs) or failed; shared memory's
    in_recovery is back to 0 and waiting workers are woken whatever happened."""
    h = shm.header
    pending = shm.requests[h.req_head].kind if h.req_head != h.req_tail else None
    for error in (busy_error(bool(h.switching), pending),
                  request_error(node, len(cfg.backends), cfg.clustering_mode, h.primary_node_id)):
        if error is not None:
            raise error
    with exclusive(h.parent_pid):
        log.debug("PCP: processing recovery request", detail="start online recovery")
        try:
            OnlineRecovery(cfg, shm, node, passwd).run()
        finally:
            if h.in_recovery == RECOVERY_ONLINE:
                h.in_recovery = RECOVERY_IDLE
                try:
                    os.kill(h.parent_pid, signal.SIGUSR2)    # the parent wakes waiting workers
                except OSError:
                    pass
