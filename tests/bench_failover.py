"""Failover benchmark: what a primary or standby crash costs the clients, ours vs pgpool-II 4.3.

Run from the repository root (as root or as the PostgreSQL OS user):

    .venv/bin/python -m tests.bench_failover          (or: make bench-failover)

Not a test: nothing passes or fails on timing.  It builds (or reuses) a primary + 1 standby under
.run/bench_failover, and for each pgpool (ours, and pgpool-II when /usr/sbin/pgpool exists) and
each scenario it restores the cluster, starts that pgpool with health_check_period = 1,
health_check_max_retries = 0 and failover_command = sample/failover.sh.sample (installed in the
pgpool's work directory), puts a load on it and kills a node with `pg_ctl -m immediate stop`:

- primary kill: seconds from the kill until an INSERT through pgpool (a new connection every
  0.1 s) succeeds on the promoted standby.
- standby kill (backend_weight of the standby 0, so every session works on the primary only):
  seconds until SHOW pool_nodes shows the standby down; the goal is that no client notices.

The load: `pgbench -S -c CLIENTS -P 1` (persistent connections, no -C; a client that hits an
error is aborted by pgbench) and a small psycopg loop (2 readers and 2 writers, ~20 statements/s
each, reconnecting after an error).  Counting runs from the kill until SETTLE seconds after the
measured event.  Rows of the table:

  pgbench aborted       pgbench clients aborted by an error (of CLIENTS)
  pgbench tps before    median tps over the seconds before the kill
  pgbench tps after     median tps from 1 s after the event on (0 = the sessions hang; "-" = none left)
  loop broken           loop statements that failed on an established session
  loop connect fail     loop connection attempts that failed
  loop hung             loop clients stuck in one statement for 2 s or more at the end
  loop ok               loop statements that succeeded

Each run leaves pgpool's log, pgbench's output and the loop's error messages in
.run/bench_failover/<target>-<scenario>.{log,pgbench,errors}.

Options (environment): FAILOVER_ROUNDS (1), FAILOVER_CLIENTS (8), FAILOVER_TIMEOUT (60 s),
FAILOVER_SETTLE (5 s), FAILOVER_TARGETS (comma list of: ours, pgpool-II).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from pgpool.tools.cluster import PgCluster, find_bindir
from tests.harness.pgpool_process import OUR_PGPOOL, REAL_PGPOOL, PgpoolProcess

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / ".run" / "bench_failover"
DBNAME = "benchfail"
SAMPLE = ROOT / "sample" / "failover.sh.sample"
FAILOVER_ESCAPES = "%d %h %p %D %m %H %M %P %r %R %N %S"
TARGETS = {"ours": OUR_PGPOOL, "pgpool-II": REAL_PGPOOL}
ABORTED = re.compile(r"client \d+ (script \d+ )?aborted")
PROGRESS = re.compile(r"^progress: [0-9.]+ s, ([0-9.]+) tps")
LOOP_SQL = {
    "read": "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
    "write": "INSERT INTO failover_probe (port) SELECT inet_server_port()",
}
LOOP_INTERVAL = 0.05
HUNG_AFTER = 2.0


@dataclass
class LoopStats:
    """What the psycopg loop clients saw."""

    ops: int = 0
    broken: int = 0             # statements that failed on an established session
    connect_failures: int = 0
    messages: Counter = field(default_factory=Counter)     # first line of each error -> count
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, error: Exception | None = None, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)
            if error is not None:
                text = str(error).strip()
                self.messages[text.splitlines()[0] if text else type(error).__name__] += 1


class Load:
    """pgbench -S plus the psycopg loop clients, through one pgpool, until stop()."""

    def __init__(self, pgpool: PgpoolProcess, clients: int):
        self.dsn = pgpool.dsn(dbname=DBNAME)
        self.stop_event = threading.Event()
        self.counting = threading.Event()
        self.stats = LoopStats()
        self.pgbench_lines: list[tuple[float, str]] = []
        self.pgbench = subprocess.Popen(
            [str(find_bindir() / "pgbench"), "-h", pgpool.host, "-p", str(pgpool.port), "-U", "postgres", "-n",
             "-S", "-c", str(clients), "-j", "2", "-T", "3600", "-P", "1", DBNAME],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        kinds = ("read", "read", "write", "write")
        self.last_activity = [time.monotonic()] * len(kinds)
        self.hung = 0
        self.threads = [threading.Thread(target=self._read_pgbench, daemon=True)]
        self.threads += [threading.Thread(target=self._loop, args=(slot, kind), daemon=True)
                         for slot, kind in enumerate(kinds)]
        for thread in self.threads:
            thread.start()

    def _read_pgbench(self) -> None:
        for line in self.pgbench.stderr:
            self.pgbench_lines.append((time.monotonic(), line.rstrip()))

    def _loop(self, slot: int, kind: str) -> None:
        conn = None
        while not self.stop_event.is_set():
            counted = self.counting.is_set()
            if conn is None:
                try:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                except psycopg.Error as exc:
                    self.stats.add(exc if counted else None, connect_failures=int(counted))
                    self.last_activity[slot] = time.monotonic()
                    time.sleep(0.1)
                    continue
            try:
                conn.execute(LOOP_SQL[kind])
                self.stats.add(ops=int(counted))
            except psycopg.Error as exc:
                self.stats.add(exc if counted else None, broken=int(counted))
                conn.close()
                conn = None
            self.last_activity[slot] = time.monotonic()
            time.sleep(LOOP_INTERVAL)
        if conn is not None:
            conn.close()

    def start_counting(self) -> float:
        self.counting.set()
        return time.monotonic()

    def stop(self) -> None:
        """Stop the clients (a second call does nothing).  Loop clients stuck in one statement
        for HUNG_AFTER seconds are counted as hung; they stay blocked until pgpool stops."""
        if self.stop_event.is_set():
            return
        self.counting.clear()
        now = time.monotonic()
        self.hung = sum(now - last > HUNG_AFTER for last in self.last_activity)
        self.stop_event.set()
        if self.pgbench.poll() is None:
            self.pgbench.send_signal(signal.SIGINT)
        try:
            self.pgbench.wait(10)
        except subprocess.TimeoutExpired:
            self.pgbench.kill()
            self.pgbench.wait()
        for thread in self.threads:
            thread.join(1)

    def results(self, kill_at: float, event_at: float | None) -> dict[str, object]:
        """Stop; the loop counts since start_counting(), pgbench's aborted clients and its median
        tps before the kill and from 1 s after the event on."""
        self.stop()
        tps = [(t, float(m.group(1))) for t, line in self.pgbench_lines if (m := PROGRESS.match(line))]
        before = [v for t, v in tps if t < kill_at]
        after = [v for t, v in tps if event_at is not None and t > event_at + 1]
        return {
            "pgbench aborted": sum(bool(ABORTED.search(line)) for _, line in self.pgbench_lines),
            "pgbench tps before": statistics.median(before) if before else None,
            "pgbench tps after": statistics.median(after) if after else None,
            "loop broken": self.stats.broken,
            "loop connect fail": self.stats.connect_failures,
            "loop hung": self.hung,
            "loop ok": self.stats.ops,
        }


def prepare() -> PgCluster:
    """The bench cluster (built on first use) with its database and pgbench tables."""
    cluster = PgCluster.build_or_load(BASE / "cluster", num_standbys=1)
    cluster.restore()
    primary = cluster.primary
    if primary.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{DBNAME}'") == "0":
        primary.psql(f"CREATE DATABASE {DBNAME}")
        cluster.runner.run("pgbench", "-i", "-q", "-s", "1", "-h", str(primary.socket_dir), "-p",
                           str(primary.port), "-U", "postgres", DBNAME, timeout=300)
    return cluster


def start_pgpool(cluster: PgCluster, command: tuple[str, ...], clients: int,
                 overrides: dict[str, object]) -> PgpoolProcess:
    pgpool = PgpoolProcess(cluster, {
        "health_check_period": 1,
        "health_check_max_retries": 0,
        "health_check_timeout": 5,
        "num_init_children": clients + 8,
        "max_pool": 2,
        "search_primary_node_timeout": 60,
        **overrides,
    }, command=command, env={"PGBIN": str(find_bindir())})
    script = pgpool.workdir / "failover.sh"
    shutil.copy(SAMPLE, script)
    script.chmod(0o755)
    pgpool.set(failover_command=f"{script} {FAILOVER_ESCAPES}")
    pgpool.start()
    return pgpool


def poll(predicate, timeout: float, interval: float = 0.1) -> float | None:
    """time.monotonic() when predicate() first held (None after timeout); exceptions count as false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return time.monotonic()
        except (psycopg.Error, OSError):
            pass
        time.sleep(interval)
    return None


def node_status(pgpool: PgpoolProcess, node_id: int) -> str:
    with psycopg.connect(pgpool.dsn(), autocommit=True, connect_timeout=2) as conn:
        return conn.execute("SHOW pool_nodes").fetchall()[node_id][3]


def write_lands_on(pgpool: PgpoolProcess, port: int) -> bool:
    with psycopg.connect(pgpool.dsn(dbname=DBNAME), autocommit=True, connect_timeout=2) as conn:
        row = conn.execute("INSERT INTO failover_probe (port) SELECT inet_server_port() RETURNING port").fetchone()
    return row[0] == port


def run_scenario(cluster: PgCluster, target: str, scenario: str, clients: int, timeout: float,
                 settle: float) -> dict[str, object]:
    """One pgpool, one kill; returns the measurements ("event s" None = did not happen in time)."""
    cluster.restore()   # node 0 primary, node 1 streaming from it (rebuilt after a promotion)
    cluster.primary.psql("DROP TABLE IF EXISTS failover_probe; CREATE TABLE failover_probe (port int)",
                         dbname=DBNAME)
    primary, standby = cluster.nodes
    overrides = {"backend_weight1": 0} if scenario == "standby kill" else {}
    pgpool = start_pgpool(cluster, TARGETS[target], clients, overrides)
    load = None
    try:
        if poll(lambda: node_status(pgpool, 1) == "up", 20) is None:
            raise RuntimeError(f"{target}: node 1 not up before the kill\n{pgpool.log_text()[-3000:]}")
        load = Load(pgpool, clients)
        time.sleep(3)
        kill_at = load.start_counting()
        if scenario == "primary kill":
            primary.stop("immediate")
            event_at = poll(lambda: write_lands_on(pgpool, standby.port), timeout)
        else:
            standby.stop("immediate")
            event_at = poll(lambda: node_status(pgpool, 1) == "down", timeout)
        time.sleep(settle)
        return {"event s": None if event_at is None else event_at - kill_at, **load.results(kill_at, event_at)}
    finally:
        name = BASE / f"{target}-{scenario.replace(' ', '-')}"
        if load is not None:
            load.stop()
            name.with_suffix(".pgbench").write_text("".join(line + "\n" for _, line in load.pgbench_lines))
            name.with_suffix(".errors").write_text("".join(f"{n:5d}  {msg}\n" for msg, n in
                                                           load.stats.messages.most_common()))
        name.with_suffix(".log").write_text(pgpool.log_text())
        pgpool.cleanup()


EVENT_LABEL = {"primary kill": "kill -> write on new primary (s)", "standby kill": "kill -> standby detached (s)"}
METRICS = ["event s", "pgbench aborted", "pgbench tps before", "pgbench tps after", "loop broken",
           "loop connect fail", "loop hung", "loop ok"]


def fmt(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def median(values: list[object]) -> object:
    """Median of the rounds; None (event did not happen) wins, so a single failure shows."""
    if any(v is None for v in values):
        return None
    return statistics.median(values)


def main() -> int:
    rounds = int(os.environ.get("FAILOVER_ROUNDS", "1"))
    clients = int(os.environ.get("FAILOVER_CLIENTS", "8"))
    timeout = float(os.environ.get("FAILOVER_TIMEOUT", "60"))
    settle = float(os.environ.get("FAILOVER_SETTLE", "5"))
    targets = [t for t in os.environ.get("FAILOVER_TARGETS", ",".join(TARGETS)).split(",") if t]
    if "pgpool-II" in targets and not Path(REAL_PGPOOL[0]).exists():
        print("pgpool-II (Debian package pgpool2) not installed: measuring ours only")
        targets.remove("pgpool-II")
    BASE.mkdir(parents=True, exist_ok=True)
    cluster = prepare()
    results: dict[tuple[str, str], list[dict[str, object]]] = {}
    for r in range(rounds):
        for scenario in EVENT_LABEL:
            for target in targets:
                try:
                    result = run_scenario(cluster, target, scenario, clients, timeout, settle)
                except Exception as exc:  # a pgpool that cannot start still gets a row
                    print(f"round {r + 1} {scenario} {target}: {exc}", file=sys.stderr)
                    result = dict.fromkeys(METRICS)
                results.setdefault((scenario, target), []).append(result)
                print(f"round {r + 1} {scenario:12s} {target:10s} "
                      + " ".join(f"{k}={fmt(v)}" for k, v in result.items()), flush=True)
    cluster.restore()
    cluster.stop()      # kept in .run/bench_failover for the next run
    print()
    print(f"clients={clients} (+4 loop clients) rounds={rounds} timeout={timeout:g}s settle={settle:g}s "
          f"(median of rounds; '-' = did not happen within the timeout); logs in {BASE}")
    print(f"{'scenario':14s}{'metric':36s}" + "".join(f"{t:>12s}" for t in targets))
    for scenario in EVENT_LABEL:
        for metric in METRICS:
            label = EVENT_LABEL[scenario] if metric == "event s" else metric
            cells = [median([res[metric] for res in results[(scenario, t)]]) for t in targets]
            print(f"{scenario if metric == 'event s' else '':14s}{label:36s}" + "".join(f"{fmt(c):>12s}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
