"""A worker's connection pool: up to `max_pool` sets of backend connections, reused by key.

As in pgpool-II a slot is keyed by (user, database, protocol version) and reused only when the
whole startup packet matches; the oldest idle slot is evicted when all are taken; databases
postgres, template0, template1 and regression are never cached.
"""

import functools
import time
from typing import NamedTuple

from pgpool.protocol import messages as m
from pgpool.proxy.backend import BackendConn, any_broken

NEVER_CACHED_DATABASES = frozenset({"postgres", "template0", "template1", "regression"})


class PooledSession:
    """The backend connections one client session uses (one per node it connects to)."""

    __slots__ = ("slot", "key", "user", "database", "conns", "main_node", "create_time",
                 "close_time", "counter", "auth", "major", "minor")

    def __init__(self, slot: int, key: tuple, user: str, database: str,
                 conns: dict[int, BackendConn], main_node: int, major: int = 3, minor: int = 0):
        self.slot = slot
        self.key = key
        self.user = user
        self.database = database
        self.conns = conns
        self.main_node = main_node
        self.create_time = int(time.time())
        self.close_time = 0.0
        self.counter = 1            # uses of this slot, as pgpool-II counts them (first = 1)
        self.auth: dict = {}
        self.major, self.minor = major, minor

    @property
    def main(self) -> BackendConn:
        return self.conns[self.main_node]

    def close(self) -> None:
        for c in self.conns.values():
            c.close()
        self.conns = {}


def pool_key(params: dict[str, str]) -> tuple:
    """The reuse key: the whole startup packet, options sorted by name."""
    return tuple(sorted(params.items()))


class ResetPlan(NamedTuple):
    """What is sent to a backend connection when its client leaves."""

    request: bytes              # the Query messages, in one write
    count: int                  # how many ReadyForQuery end the replies
    must_succeed: tuple         # per query: does an error in it make the connection unusable


def reset_plan(reset_query_list, in_transaction: bool) -> ResetPlan:
    """What to send when a client leaves: reset_query_list (a list, or a string split at ';'),
    its queries in one write (the replies read afterwards); ABORT is left out when no
    transaction is open, and its failure does not matter."""
    setting = reset_query_list if isinstance(reset_query_list, str) else tuple(reset_query_list)
    return _reset_plan(setting, in_transaction)


@functools.lru_cache(maxsize=16)
def _reset_plan(setting: str | tuple[str, ...], in_transaction: bool) -> ResetPlan:
    items = setting.split(";") if isinstance(setting, str) else setting
    run = [q.strip() for q in items
           if q.strip() and (in_transaction or q.strip().upper() != "ABORT")]
    return ResetPlan(b"".join(m.query(q) for q in run), len(run),
                     tuple(q.upper() != "ABORT" for q in run))


class ConnectionPool:
    def __init__(self, max_pool: int, shm=None, proc_index: int = 0):
        self.slots: list[PooledSession | None] = [None] * max_pool
        self.shm = shm
        self.proc_index = proc_index

    def _shm_slot(self, i: int):
        if self.shm is None:
            return None
        return self.shm.processes[self.proc_index].pools[i]

    def take(self, key: tuple) -> PooledSession | None:
        """An idle cached slot for this key whose sockets still work, else None."""
        for i, ps in enumerate(self.slots):
            if ps is None or ps.key != key:
                continue
            if any_broken(ps.conns.values()):
                self.discard(i)
                return None
            ps.counter += 1
            return ps
        return None

    def free_slot(self) -> int:
        """Index of an empty slot, evicting the slot idle the longest when all are used."""
        for i, ps in enumerate(self.slots):
            if ps is None:
                return i
        oldest = min(range(len(self.slots)), key=lambda i: self.slots[i].close_time)
        self.discard(oldest)
        return oldest

    def put(self, ps: PooledSession) -> None:
        self.slots[ps.slot] = ps
        s = self._shm_slot(ps.slot)
        if s is not None:
            s.database = ps.database.encode()[:63]
            s.user = ps.user.encode()[:63]
            s.major, s.minor = ps.major, ps.minor
            s.create_time = ps.create_time
            s.counter = ps.counter
            s.in_use = 1
            conns = s.conns
            for node in range(self.shm.num_backends):
                if node not in ps.conns and conns[node].connected:
                    conns[node].connected = 0
            for node, c in ps.conns.items():
                sc = s.conns[node]
                sc.pid, sc.key, sc.connected = c.pid, c.key, 1

    def discard(self, i: int) -> None:
        ps = self.slots[i]
        if ps is not None:
            ps.close()
        self.slots[i] = None
        s = self._shm_slot(i)
        if s is not None:
            s.in_use = 0
            s.database = b""
            s.user = b""
            s.counter = 0
            conns = s.conns
            for node in range(self.shm.num_backends):
                conns[node].connected = 0

    def expire(self, life_time: int, now: float | None = None) -> None:
        """Close idle slots older than connection_life_time seconds (0 = never)."""
        if life_time <= 0:
            return
        now = now or time.time()
        for i, ps in enumerate(self.slots):
            if ps is not None and ps.close_time and now - ps.close_time >= life_time:
                self.discard(i)

    def next_expiry(self, life_time: int) -> float | None:
        if life_time <= 0:
            return None
        times = [ps.close_time + life_time for ps in self.slots if ps is not None and ps.close_time]
        return min(times) if times else None

    def close_all(self) -> None:
        for i in range(len(self.slots)):
            self.discard(i)
