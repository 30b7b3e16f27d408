"""The shared-memory segment: backend table, process slots, pool slots and the request ring.

One anonymous shared mmap is made by the parent before the first fork; every process sees the
same bytes through ctypes structures laid over it. Ownership rules (no locks on the data path):
- the backend table's status and role are written only by the parent, which bumps `generation`
  after each change; the streaming-replication check process writes the replication fields
  (standby_delay, replication_state, replication_sync_state), as in pgpool-II;
- a process slot (and its pool slots) is written only by the worker that owns it;
- the request ring is the one multi-writer structure, guarded by a lock.
"""

import ctypes
import mmap
import multiprocessing
import time

MAX_BACKENDS = 128
NAMEDATALEN = 64

# Backend status, as pgpool-II numbers them (BACKEND_STATUS in pool.h).
CON_UNUSED, CON_CONNECT_WAIT, CON_UP, CON_DOWN = 0, 1, 2, 3
STATUS_NAMES = {CON_UNUSED: "unused", CON_CONNECT_WAIT: "waiting", CON_UP: "up", CON_DOWN: "down"}

# Roles (SERVER_ROLE in pool.h).
ROLE_MAIN, ROLE_REPLICA, ROLE_PRIMARY, ROLE_STANDBY = 0, 1, 2, 3
ROLE_NAMES = {ROLE_MAIN: "main", ROLE_REPLICA: "replica", ROLE_PRIMARY: "primary",
              ROLE_STANDBY: "standby"}

# Worker status (ProcessInfo.status).
PS_WAIT_FOR_CONNECTION, PS_EXECUTE_COMMAND, PS_IDLE, PS_IDLE_IN_TRANSACTION = 0, 1, 2, 3
PROCESS_STATUS_NAMES = {PS_WAIT_FOR_CONNECTION: "Wait for connection",
                        PS_EXECUTE_COMMAND: "Execute command", PS_IDLE: "Idle",
                        PS_IDLE_IN_TRANSACTION: "Idle in transaction"}

# Failover request kinds.
REQ_NODE_UP, REQ_NODE_DOWN, REQ_PROMOTE, REQ_CLOSE_IDLE = 1, 2, 3, 4
REQUEST_RING_SIZE = 16
# Request flag bits (who asked and how).
REQ_FLAG_HEALTH_CHECK = 1      # from a health-check process
REQ_FLAG_BACKEND_ERROR = 2     # a worker lost a backend connection (failover_on_backend_error)
REQ_FLAG_SHUTDOWN = 4          # a backend reported 57P01/57P02 (failover_on_backend_shutdown)
REQ_FLAG_PCP = 8               # pcp_detach_node / pcp_attach_node / pcp_promote_node
REQ_FLAG_SWITCHOVER = 16       # pcp_promote_node -s: detach the primary, promote the given node
REQ_FLAG_GRACEFUL = 32         # graceful variant (wait for sessions)
REQ_FLAG_AUTO_FAILBACK = 64    # auto_failback of a streaming standby
REQ_FLAG_FALSE_PRIMARY = 128   # detach_false_primary
REQ_FLAG_RECOVERY = 256        # failback at the end of online recovery


class BackendSlot(ctypes.Structure):
    _fields_ = [
        ("status", ctypes.c_int32),
        ("role", ctypes.c_int32),
        ("quarantine", ctypes.c_int32),
        ("weight", ctypes.c_double),
        ("standby_delay", ctypes.c_uint64),
        ("status_changed_time", ctypes.c_int64),
        ("replication_state", ctypes.c_char * 32),
        ("replication_sync_state", ctypes.c_char * 32),
        # WAL positions seen by the sr_check process (or an on-demand probe): the primary's
        # current LSN / a standby's replay LSN, and when (time.time()) they were read
        ("wal_lsn", ctypes.c_uint64),
        ("lsn_time", ctypes.c_double),
        # standby_delay is in microseconds (pg_stat_replication.replay_lag,
        # delay_threshold_by_time) instead of bytes
        ("standby_delay_by_time", ctypes.c_int32),
    ]


class HealthStats(ctypes.Structure):
    """Per-node health-check statistics (one writer: that node's health-check process)."""
    _fields_ = [
        ("total_count", ctypes.c_uint64),
        ("success_count", ctypes.c_uint64),
        ("fail_count", ctypes.c_uint64),
        ("skip_count", ctypes.c_uint64),
        ("retry_count", ctypes.c_uint64),
        ("max_retry_count", ctypes.c_uint64),
        ("total_duration_ms", ctypes.c_uint64),
        ("max_duration_ms", ctypes.c_uint64),
        ("min_duration_ms", ctypes.c_uint64),
        ("last_health_check", ctypes.c_int64),
        ("last_successful_health_check", ctypes.c_int64),
        ("last_skip_health_check", ctypes.c_int64),
        ("last_failed_health_check", ctypes.c_int64),
    ]


class RywEntry(ctypes.Structure):
    """One read-your-writes record: a (user, database) key hash and the LSN of its last commit."""
    _fields_ = [("key", ctypes.c_uint64), ("lsn", ctypes.c_uint64)]


RYW_SLOTS = 1024
ROUTE_COUNTERS = 64          # per-process counters of routing rules (SHOW pool_routing)


class Header(ctypes.Structure):
    _fields_ = [
        ("generation", ctypes.c_uint64),
        ("num_backends", ctypes.c_int32),
        ("primary_node_id", ctypes.c_int32),
        ("main_node_id", ctypes.c_int32),
        ("switching", ctypes.c_int32),
        ("conn_counter", ctypes.c_int64),
        ("parent_pid", ctypes.c_int32),
        ("req_head", ctypes.c_int32),
        ("req_tail", ctypes.c_int32),
        ("follow_primary_lock", ctypes.c_int32),     # pid of the follow-primary process, 0 = free
        ("in_recovery", ctypes.c_int32),             # 0 none, 1 online recovery, 2 graceful detach
        ("_pad", ctypes.c_int32),
        ("failover_count", ctypes.c_uint64),         # bumped by the parent after each failover/failback
    ]


class Request(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int32), ("node_id", ctypes.c_int32),
                ("flags", ctypes.c_int32), ("requester", ctypes.c_int32)]


def _make_types(max_pool: int, num_backends: int):
    """ctypes types whose array sizes depend on the configuration (fixed at start)."""

    class ConnSlot(ctypes.Structure):
        """One backend connection of a pool slot."""
        _fields_ = [
            ("pid", ctypes.c_int32),
            ("key", ctypes.c_int32),
            ("connected", ctypes.c_int32),
            # the backend pid some session asked pg_terminate_backend() for (the one write
            # from another worker, pgpool-II's swallow_termination): when it equals `pid`,
            # the loss of this connection ends its session and is no node failure
            ("terminating_pid", ctypes.c_int32),
        ]

    class PoolSlot(ctypes.Structure):
        _fields_ = [
            ("database", ctypes.c_char * NAMEDATALEN),
            ("user", ctypes.c_char * NAMEDATALEN),
            ("major", ctypes.c_int32),
            ("minor", ctypes.c_int32),
            ("counter", ctypes.c_int32),
            ("load_balancing_node", ctypes.c_int32),
            ("create_time", ctypes.c_int64),
            ("client_connection_time", ctypes.c_int64),
            ("client_disconnection_time", ctypes.c_int64),
            ("in_use", ctypes.c_int32),
            ("_pad", ctypes.c_int32),
            ("conns", ConnSlot * num_backends),
        ]

    class ProcessSlot(ctypes.Structure):
        _fields_ = [
            ("pid", ctypes.c_int32),
            ("status", ctypes.c_int32),
            ("start_time", ctypes.c_int64),
            ("client_connection_count", ctypes.c_int32),
            ("connected", ctypes.c_int32),
            ("current_pool", ctypes.c_int32),
            ("need_to_restart", ctypes.c_int32),
            ("client_start_time", ctypes.c_int64),
            ("last_activity", ctypes.c_int64),
            ("pools", PoolSlot * max_pool),
            # statistics, one writer (this worker): per node SELECT and statement kind counters
            ("select_cnt", ctypes.c_uint64 * num_backends),
            ("insert_cnt", ctypes.c_uint64 * num_backends),
            ("update_cnt", ctypes.c_uint64 * num_backends),
            ("delete_cnt", ctypes.c_uint64 * num_backends),
            ("ddl_cnt", ctypes.c_uint64 * num_backends),
            ("other_cnt", ctypes.c_uint64 * num_backends),
            ("error_cnt", ctypes.c_uint64 * num_backends),
            ("fatal_cnt", ctypes.c_uint64 * num_backends),
            ("panic_cnt", ctypes.c_uint64 * num_backends),
            ("route_cnt", ctypes.c_uint64 * ROUTE_COUNTERS),
        ]

    return ConnSlot, PoolSlot, ProcessSlot


class SharedState:
    """Owner of the shared segment; created in the parent, inherited by every child."""

    def __init__(self, num_children: int, max_pool: int, num_backends: int):
        self.num_children = num_children
        self.max_pool = max_pool
        self.num_backends = max(1, num_backends)
        _, self.PoolSlot, self.ProcessSlot = _make_types(max_pool, MAX_BACKENDS)
        sizes = [ctypes.sizeof(Header), ctypes.sizeof(BackendSlot) * MAX_BACKENDS,
                 ctypes.sizeof(Request) * REQUEST_RING_SIZE,
                 ctypes.sizeof(HealthStats) * MAX_BACKENDS,
                 ctypes.sizeof(RywEntry) * RYW_SLOTS,
                 ctypes.sizeof(self.ProcessSlot) * num_children]
        self._mm = mmap.mmap(-1, sum(sizes) + 64, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        off = 0
        self.header = Header.from_buffer(self._mm, off)
        off += sizes[0]
        self.backends = (BackendSlot * MAX_BACKENDS).from_buffer(self._mm, off)
        off += sizes[1]
        self.requests = (Request * REQUEST_RING_SIZE).from_buffer(self._mm, off)
        off += sizes[2]
        self.health = (HealthStats * MAX_BACKENDS).from_buffer(self._mm, off)
        off += sizes[3]
        self.ryw = (RywEntry * RYW_SLOTS).from_buffer(self._mm, off)
        off += sizes[4]
        self.processes = (self.ProcessSlot * num_children).from_buffer(self._mm, off)
        self.header.num_backends = self.num_backends
        self.header.primary_node_id = -1
        self.header.main_node_id = 0
        self._req_lock = multiprocessing.Lock()
        self.ryw_lock = multiprocessing.Lock()

    # ---- backend table (parent writes) ------------------------------------------------

    def set_backend(self, node_id: int, *, status: int | None = None, role: int | None = None,
                    weight: float | None = None, touch: bool = True) -> None:
        b = self.backends[node_id]
        if status is not None and status != b.status:
            b.status = status
            if touch:
                b.status_changed_time = int(time.time())
        if role is not None:
            b.role = role
        if weight is not None:
            b.weight = weight
        self.header.generation += 1

    def bump(self) -> None:
        self.header.generation += 1

    # ---- request ring (any process writes, parent drains) -----------------------------

    def push_request(self, kind: int, node_id: int, flags: int = 0, requester: int = 0) -> bool:
        with self._req_lock:
            h = self.header
            nxt = (h.req_tail + 1) % REQUEST_RING_SIZE
            if nxt == h.req_head:
                return False
            r = self.requests[h.req_tail]
            r.kind, r.node_id, r.flags, r.requester = kind, node_id, flags, requester
            h.req_tail = nxt
            return True

    def pop_requests(self) -> list[tuple[int, int, int, int]]:
        out = []
        with self._req_lock:
            h = self.header
            while h.req_head != h.req_tail:
                r = self.requests[h.req_head]
                out.append((r.kind, r.node_id, r.flags, r.requester))
                h.req_head = (h.req_head + 1) % REQUEST_RING_SIZE
        return out

    # ---- process slots ------------------------------------------------------------------

    def reset_process_slot(self, index: int, pid: int) -> None:
        ctypes.memset(ctypes.addressof(self.processes[index]), 0,
                      ctypes.sizeof(self.ProcessSlot))
        p = self.processes[index]
        p.pid = pid
        p.start_time = int(time.time())
        p.current_pool = -1

    def connected_clients(self) -> int:
        return sum(1 for p in self.processes if p.connected)

    def find_cancel_target(self, pid: int, key: int):
        """The pool slot whose main backend has (pid, key): list of (node, pid, key) of all
        its backends, or None."""
        nb = self.num_backends
        for p in self.processes:
            if not p.connected:
                continue
            for pool in p.pools:
                if not pool.in_use:
                    continue
                for node in range(nb):
                    c = pool.conns[node]
                    if c.connected and c.pid == pid and c.key == key:
                        return [(n, pool.conns[n].pid, pool.conns[n].key) for n in range(nb)
                                if pool.conns[n].connected]
        return None

    def find_backend_pid(self, pid: int):
        """Where pgpool's backend connection with PostgreSQL pid `pid` is (pgpool-II's
        pool_coninfo_backend_pid): (process slot, pool slot, node), or None."""
        nb = self.num_backends
        for i, p in enumerate(self.processes):
            for j, pool in enumerate(p.pools):
                if not pool.in_use:
                    continue
                for node in range(nb):
                    c = pool.conns[node]
                    if c.connected and c.pid == pid:
                        return i, j, node
        return None
