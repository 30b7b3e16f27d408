"""read_your_writes against a real primary and a deliberately lagging standby.

The standby applies every commit 300 ms late (recovery_min_apply_delay) and takes every
load-balanced read (backend_weight0 = 0). A row written and then read at once is stale on the
standby: with read_your_writes off such stale reads happen; with session (same connection) or
global (another connection of the same user and database) none do, whether the read waits for
the standby or goes to the primary. Reads report the node that answered (cluster_name).
"""

from __future__ import annotations


import psycopg
import pytest

from tests.harness.pgpool_process import PgpoolProcess
from tests.harness.backends import scratch_cluster

APPLY_DELAY_MS = 300
ROUNDS = 20


@pytest.fixture(scope="module")
def lagging_cluster():
    with scratch_cluster("ryw", 1, {"recovery_min_apply_delay": f"{APPLY_DELAY_MS}ms"},
                         "CREATE TABLE ryw (id int PRIMARY KEY, writer text)") as c:
        yield c


@pytest.fixture(scope="module")
def pool(request, lagging_cluster):
    pgpool = PgpoolProcess(lagging_cluster, {"backend_weight0": 0, "backend_weight1": 1,
                                             "num_init_children": 6, "sr_check_period": 1})
    try:
        pgpool.start()
        yield pgpool
    finally:
        if request.session.testsfailed:
            print(f"===== pgpool log =====\n{pgpool.log_text()[-20000:]}")
        pgpool.cleanup()


class Ids:
    """Fresh row ids across the tests of this module."""
    next = 0

    @classmethod
    def take(cls) -> int:
        cls.next += 1
        return cls.next


def connect(pool, mode: str, simple: bool = False, autocommit: bool = True) -> psycopg.Connection:
    """A connection through pgpool with read_your_writes = mode; `simple`: the simple query
    protocol (client-side binding), else psycopg's extended protocol."""
    conn = psycopg.connect(pool.dsn(), autocommit=True, connect_timeout=10,
                           cursor_factory=psycopg.ClientCursor if simple else psycopg.Cursor)
    conn.execute(f"PGPOOL SET read_your_writes = {mode}")
    conn.autocommit = autocommit
    return conn


def read(conn, row: int) -> tuple[bool, str]:
    """(row visible, node that answered) for a load-balanced read."""
    found, node = conn.execute("SELECT count(*) = 1, current_setting('cluster_name') FROM ryw "
                               "WHERE id = %s", (row,)).fetchone()
    return found, node


def write(conn, row: int, explicit: bool = False) -> None:
    if explicit:
        with conn.transaction():
            conn.execute("INSERT INTO ryw VALUES (%s, 'txn')", (row,))
    else:
        conn.execute("INSERT INTO ryw VALUES (%s, 'autocommit')", (row,))


def moved_reads(conn) -> int:
    """The read_your_writes counter of SHOW pool_routing: reads sent to the primary instead."""
    return int(next(r[3] for r in conn.execute("SHOW pool_routing") if r[0] == "read_your_writes"))


def rounds(writer, reader, explicit: bool = False) -> tuple[int, set[str]]:
    """Write a row, read it at once, ROUNDS times: (stale reads, nodes that answered)."""
    stale, nodes = 0, set()
    for _ in range(ROUNDS):
        row = Ids.take()
        write(writer, row, explicit)
        found, node = read(reader, row)
        stale += not found
        nodes.add(node)
    return stale, nodes


@pytest.mark.parametrize("simple", [False, True], ids=["extended", "simple"])
def test_off_reads_stale_rows_from_the_lagging_standby(pool, simple):
    with connect(pool, "off", simple) as conn:
        stale, nodes = rounds(conn, conn)
    assert stale > 0
    assert nodes == {"node1"}


@pytest.mark.parametrize("simple", [False, True], ids=["extended", "simple"])
def test_session_mode_sees_its_own_writes(pool, simple):
    with connect(pool, "session", simple) as conn:
        moved = moved_reads(conn)
        conn.execute("PGPOOL SET read_your_writes_max_wait = 0")     # no waiting: the primary
        stale, nodes = rounds(conn, conn)
        assert (stale, nodes) == (0, {"node0"})
        assert moved_reads(conn) == moved + ROUNDS
        conn.execute("PGPOOL SET read_your_writes_max_wait = 2000")  # long enough to wait
        stale, nodes = rounds(conn, conn)
        assert (stale, nodes) == (0, {"node1"})
        # long after the last write the standby has it: reads stay balanced without waiting
        row = Ids.take()
        write(conn, row)
        conn.execute("SELECT pg_sleep(%s)", (APPLY_DELAY_MS / 1000 * 3,))
        assert read(conn, row) == (True, "node1")


def test_session_mode_sees_commits_of_explicit_transactions(pool):
    with connect(pool, "session", autocommit=False) as writer, connect(pool, "session") as probe:
        stale = 0
        for _ in range(5):
            row = Ids.take()
            write(writer, row, explicit=True)
            writer.commit()
            found, node = read(writer, row)
            writer.commit()
            stale += not found
        assert stale == 0
        assert read(probe, row)[1] in ("node0", "node1")


def test_global_mode_sees_other_sessions_writes(pool):
    with connect(pool, "global", simple=True) as writer, connect(pool, "global") as reader:
        stale, _ = rounds(writer, reader)
        assert stale == 0
        reader.execute("PGPOOL SET read_your_writes_max_wait = 2000")
        stale, nodes = rounds(writer, reader, explicit=True)
        assert (stale, nodes) == (0, {"node1"})


def test_session_mode_does_not_wait_for_other_sessions(pool):
    """session mode guarantees a session its own writes only: another session's fresh row is
    read stale from the standby (what global mode is for)."""
    with connect(pool, "session") as writer, connect(pool, "session") as reader:
        stale, nodes = rounds(writer, reader)
    assert stale > 0 and nodes == {"node1"}


def test_pipelined_write_then_read(pool):
    """A read pipelined behind a committed write (in its own Sync, possibly before the commit
    position is known) still sees it."""
    with connect(pool, "session") as conn:
        conn.execute("PGPOOL SET read_your_writes_max_wait = 2000")
        for _ in range(5):
            row = Ids.take()
            with conn.pipeline() as pipeline:
                conn.execute("INSERT INTO ryw VALUES (%s, 'pipeline')", (row,))
                pipeline.sync()
                cur = conn.execute("SELECT count(*) = 1 FROM ryw WHERE id = %s", (row,))
            assert cur.fetchone() == (True,)
