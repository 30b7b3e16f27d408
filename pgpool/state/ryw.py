"""Read-your-writes bookkeeping: WAL positions of commits, per session and per (user, database).

After a session commits a write the proxy learns the primary's WAL insert position (see
`commit_target`). In `session` mode the session keeps it; in `global` mode it also goes into the
shared table `shm.ryw` under a hash of (user, database), so that every session of that user and
database waits for it. A load-balanced read may use a standby only once the standby's replay
position has reached the awaited position (`SessionPositions.target`).

The shared table is open addressing over `RYW_SLOTS` slots, `PROBE` slots per key and no
deletion (positions only grow, an old entry is simply always reached). When every slot of a
key's window belongs to other keys, the position is merged (max) into the window's first slot and
a lookup of a key absent from a full window answers the window's highest position: never lower
than the truth, at worst a read waits for a commit of another user.
"""

import hashlib

MODES = ("off", "session", "global")
PROBE = 8
UNKNOWN = (1 << 64) - 1     # a commit whose position could not be learned: wait for nothing, use the primary

XLOG_BLCKSZ = 8192
WAL_SEGMENT_SIZE = 16 * 1024 * 1024
SHORT_PAGE_HEADER = 24      # SizeOfXLogShortPHD
LONG_PAGE_HEADER = 40       # SizeOfXLogLongPHD (first page of a segment)


def parse_lsn(text: str | bytes | None) -> int | None:
    """PostgreSQL's "16/B374D848" as an integer; None for NULL or text that is not an LSN."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    high, sep, low = text.strip().partition("/")
    try:
        hi, lo = int(high, 16), int(low, 16)
    except ValueError:
        return None
    if not sep or not 0 <= hi <= 0xFFFFFFFF or not 0 <= lo <= 0xFFFFFFFF:
        return None
    return (hi << 32) | lo


def commit_target(insert_lsn: int, segment_size: int = WAL_SEGMENT_SIZE) -> int:
    """The replay position a standby must reach to have replayed everything inserted before
    `insert_lsn` (pg_current_wal_insert_lsn() just after the commit).

    At a page boundary PostgreSQL reports the insert position after the new page's header, while
    a standby's replay position is the end of the last record, i.e. the boundary itself; waiting
    for the header would wait for a record that may never come."""
    if insert_lsn % segment_size == LONG_PAGE_HEADER:
        return insert_lsn - LONG_PAGE_HEADER
    if insert_lsn % XLOG_BLCKSZ == SHORT_PAGE_HEADER:
        return insert_lsn - SHORT_PAGE_HEADER
    return insert_lsn


def key_of(user: str, database: str) -> int:
    """Non-zero 64-bit key of a (user, database) pair (0 marks an empty slot)."""
    digest = hashlib.blake2b(f"{user}\0{database}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


def _window(table, key: int):
    size = len(table)
    start = key % size
    return [table[(start + i) % size] for i in range(min(PROBE, size))]


def record(table, lock, key: int, lsn: int) -> None:
    """Raise the shared position of `key` to at least `lsn` (under `lock`; no I/O inside)."""
    with lock:
        window = _window(table, key)
        for slot in window:
            if slot.key == key:
                if slot.lsn < lsn:
                    slot.lsn = lsn
                return
            if slot.key == 0:
                slot.lsn = lsn          # the position first: a reader that sees the key sees it
                slot.key = key
                return
        if window[0].lsn < lsn:
            window[0].lsn = lsn


def lookup(table, key: int) -> int:
    """The shared position of `key` (0 = nothing recorded); read without the lock."""
    window = _window(table, key)
    for slot in window:
        if slot.key == key:
            return slot.lsn
        if slot.key == 0:
            return 0
    return max(slot.lsn for slot in window)


class SessionPositions:
    """One session's read-your-writes state: the mode, its own last commit position, captures
    still in flight, and the replay positions already seen per standby (they only grow)."""

    __slots__ = ("mode", "max_wait", "key", "table", "lock", "own", "pending", "replayed")

    def __init__(self, mode: str, max_wait_ms: int, key: int, table=None, lock=None):
        self.mode = mode
        self.max_wait = max_wait_ms / 1000.0
        self.key = key
        self.table = table
        self.lock = lock
        self.own = 0
        self.pending = 0
        self.replayed: dict[int, int] = {}

    def committed(self, lsn: int | None) -> None:
        """A capture finished: `lsn` is the primary's insert position after the commit, or None
        when it could not be read (then reads use the primary until the next capture)."""
        self.pending = max(0, self.pending - 1)
        if lsn is None:
            self.own = UNKNOWN
            return
        target = commit_target(lsn)
        self.own = target
        if self.mode == "global" and self.table is not None:
            record(self.table, self.lock, self.key, target)

    def target(self) -> int:
        """The replay position a standby must have reached before this session reads from it."""
        if self.mode == "global" and self.table is not None:
            shared = lookup(self.table, self.key)
            if shared > self.own and self.own != UNKNOWN:
                return shared
        return self.own

    def saw(self, node: int, replay_lsn: int | None) -> bool:
        """Note a standby's replay position; True if it satisfies the current target."""
        if replay_lsn is not None and replay_lsn > self.replayed.get(node, 0):
            self.replayed[node] = replay_lsn
        return self.replayed.get(node, 0) >= self.target()
