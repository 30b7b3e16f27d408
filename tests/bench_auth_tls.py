"""Connection-per-transaction benchmark (pgbench -S -C) with SCRAM and with TLS: ours vs pgpool-II 4.3.

    python -m tests.bench_auth_tls            (BENCH_SECONDS=8 BENCH_ROUNDS=2 BENCH_CLIENTS=8,
                                               BENCH_SCENARIOS=trust,scram,tls-trust,tls-scram)

Builds a one-node cluster with ssl = on (certificates from pgpool.tools.certs), a database
"bench" (pgbench -i -s 1) and a SCRAM user; starts ours and pgpool-II with identical settings
for each scenario and runs pgbench in interleaved rounds.  Scenarios:

  trust      no TLS, no password (the reference: connection handling alone)
  scram      client -> pgpool SCRAM (pool_hba.conf scram-sha-256), no TLS anywhere
  tls-trust  client -> pgpool TLS (sslmode=require), trust; pgpool -> PostgreSQL TLS
  tls-scram  both: TLS and SCRAM

Prints TPS and the CPU time of each pgpool's process tree per connection (user + system, the
steadier figure on a busy machine) per round, the medians and ours/pgpool-II.  With tls-trust
it also runs tests/bare_tls.py ("bare-tls": the barest Python TLS proxy, no checks) as the
yardstick of what a Python design pays per connection here (BENCH_BARE=0 leaves it out).  Not
a test: nothing passes or fails.
"""

from __future__ import annotations

import os
import pwd
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import psutil

from pgpool.tools import certs
from pgpool.tools.cluster import PgCluster, free_ports
from tests.bench import wait_port
from tests.harness.clients import client_program
from tests.harness.pgpool_process import OUR_PGPOOL, REAL_PGPOOL, PgpoolProcess

USER, PASSWORD, DB = "benchuser", "bench pass", "bench"
SCENARIOS = {            # name: (pgpool ssl, pool_hba method, client sslmode)
    "trust": (False, "trust", "disable"),
    "scram": (False, "scram-sha-256", "disable"),
    "tls-trust": (True, "trust", "require"),
    "tls-scram": (True, "scram-sha-256", "require"),
}


class Bare(NamedTuple):
    """tests/bare_tls.py running: what run_pgbench needs of a target."""

    port: int
    pid: int
    proc: subprocess.Popen


def start_bare(cluster: PgCluster, pki) -> Bare:
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-m", "tests.bare_tls", str(port), str(cluster.primary.port),
                             str(pki.server.cert_path), str(pki.server.key_path), str(pki.ca.cert_path)])
    try:
        wait_port(port)
    except RuntimeError:
        proc.terminate()
        raise
    return Bare(port, proc.pid, proc)


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far."""
    total = 0.0
    parent = psutil.Process(pid)
    for proc in [parent, *parent.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue            # ended meanwhile
        total += times.user + times.system
    return total


def run_pgbench(pgpool: PgpoolProcess | Bare, sslmode: str, seconds: int, clients: int) -> tuple[float, float] | None:
    """(TPS, CPU µs of the pgpool per connection), None when pgbench failed."""
    conninfo = f"host=127.0.0.1 port={pgpool.port} user={USER} dbname={DB} sslmode={sslmode} gssencmode=disable"
    cmd = [client_program("pgbench"), "-n", "-S", "-C", "-c", str(clients), "-j", "2", "-T", str(seconds), conninfo]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"PGPASSWORD": PASSWORD}
    cpu = tree_cpu(pgpool.pid)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 120)
    cpu = tree_cpu(pgpool.pid) - cpu
    found = re.search(r"^tps = ([0-9.]+)", proc.stdout, re.MULTILINE)
    done = re.search(r"^number of transactions actually processed: (\d+)", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not found or not done or not int(done.group(1)):
        sys.stderr.write(f"pgbench on port {pgpool.port} failed:\n{proc.stderr[-1500:]}\n")
        return None
    return float(found.group(1)), cpu * 1e6 / int(done.group(1))


def medians(rows: list[tuple[float, float]]) -> tuple[float, float]:
    """Median TPS and median CPU per connection of some rounds (0, 0 for none)."""
    if not rows:
        return 0.0, 0.0
    return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)


def main() -> int:
    seconds = int(os.environ.get("BENCH_SECONDS", "8"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    clients = int(os.environ.get("BENCH_CLIENTS", "8"))
    scenarios = [s for s in os.environ.get("BENCH_SCENARIOS", ",".join(SCENARIOS)).split(",") if s]
    pki_dir = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    pki_dir.chmod(0o755)
    pki = certs.make_pki(pki_dir)
    pg = pwd.getpwnam("postgres")
    pg_cert = certs.issue(pki.ca, "localhost", server_names=certs.SERVER_NAMES).write(
        pki_dir, "pg", owner=(pg.pw_uid, pg.pw_gid))
    cluster = PgCluster.create(num_standbys=0, settings={
        "ssl": "on", "ssl_cert_file": str(pg_cert.cert_path), "ssl_key_file": str(pg_cert.key_path),
        "max_connections": 200})
    pools: list[PgpoolProcess] = []
    bares: list[Bare] = []
    with_bare = os.environ.get("BENCH_BARE", "1") != "0"
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        node = cluster.primary
        node.psql(f"CREATE DATABASE {DB}")
        node.psql(f"SET password_encryption = 'scram-sha-256'; CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        subprocess.run([client_program("pgbench"), "-i", "-q", "-s", "1", "-h", str(node.socket_dir),
                        "-p", str(node.port), "-U", "postgres", DB], check=True, capture_output=True)
        node.psql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {USER}", dbname=DB)
        (node.datadir / "pg_hba.conf").write_text("local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
                                                  "host all all 127.0.0.1/32 scram-sha-256\n")
        node.reload()
        for scenario in scenarios:
            ssl_on, method, sslmode = SCENARIOS[scenario]
            hba = f"local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all {USER} 127.0.0.1/32 {method}\n"
            settings = {"backend_clustering_mode": "raw", "num_init_children": 32, "max_pool": 4,
                        "load_balance_mode": False, "sr_check_period": 0, "log_min_messages": "warning",
                        "child_life_time": 0, "ssl": ssl_on}
            if ssl_on:
                settings |= {k: v for k, v in pki.pgpool_settings().items() if k != "ssl"}
            targets = {}
            for name, command in (("ours", OUR_PGPOOL), ("pgpool-II", REAL_PGPOOL)):
                pgpool = PgpoolProcess(cluster, settings, pool_hba=hba, command=command)
                pgpool.passwd_path.write_text(f"{USER}:TEXT{PASSWORD}\n")
                pools.append(pgpool.start())
                targets[name] = pgpool
            if scenario == "tls-trust" and with_bare:
                bares.append(start_bare(cluster, pki))
                targets["bare-tls"] = bares[-1]
            for r in range(rounds):
                for name, pgpool in targets.items():
                    got = run_pgbench(pgpool, sslmode, seconds, clients)
                    if got is not None:
                        results.setdefault((scenario, name), []).append(got)
                    print(f"round {r + 1} {scenario:10s} {name:10s} "
                          f"{'failed' if got is None else f'{got[0]:8.1f} tps {got[1]:8.0f} µs CPU/connection'}",
                          flush=True)
            for target in targets.values():
                if isinstance(target, Bare):
                    target.proc.terminate()
                    target.proc.wait(30)
                else:
                    target.cleanup()
    finally:
        for pgpool in pools:
            pgpool.cleanup()
        for bare in bares:
            bare.proc.kill()
        cluster.destroy()
    print(f"\npgbench -S -C -c {clients} -j 2 -T {seconds}, {rounds} rounds, medians "
          "(TPS; CPU = µs of the pgpool's processes per connection)")
    print(f"{'scenario':12s}{'ours':>10s}{'pgpool-II':>12s}{'ours/pgpool-II':>16s}"
          f"{'CPU ours':>10s}{'CPU pgpool-II':>15s}{'bare-tls':>10s}{'CPU bare-tls':>14s}")
    for scenario in scenarios:
        to, co = medians(results.get((scenario, "ours"), []))
        tr, cr = medians(results.get((scenario, "pgpool-II"), []))
        ratio = f"{to / tr:16.2f}" if to and tr else f"{'-':>16s}"
        tb, cb = medians(results.get((scenario, "bare-tls"), []))
        bare = f"{tb:10.0f}{cb:14.0f}" if tb else f"{'-':>10s}{'-':>14s}"
        print(f"{scenario:12s}{to:10.0f}{tr:12.0f}{ratio}{co:10.0f}{cr:15.0f}{bare}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
