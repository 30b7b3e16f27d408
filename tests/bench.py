"""`make bench`: pgbench through direct PostgreSQL, our pgpool and pgpool-II, side by side.

Builds its own cluster under .run/bench, starts our pgpool and (when /usr/sbin/pgpool exists)
pgpool-II 4.3 with the same settings, then runs each workload against each target in
interleaved rounds and prints TPS, the median per target and the ratios. Not a test: nothing
passes or fails on timing.

Options (environment): BENCH_SECONDS (default 8), BENCH_ROUNDS (2), BENCH_CLIENTS (8),
BENCH_MODE (raw | streaming, default raw), BENCH_WORKLOADS (comma list of names below),
BENCH_BARE (1, default: also run the bare Python relay of tests/bare_relay.py to the primary —
the floor of what any Python prefork design costs per query on this machine; 0: skip it).
"""

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pgpool.tools.cluster import PgCluster, free_ports

ROOT = Path(__file__).resolve().parent.parent
DBNAME = "bench"
WORKLOADS = {
    "select-simple": ["-S", "-M", "simple"],
    "select-extended": ["-S", "-M", "extended"],
    "select-prepared": ["-S", "-M", "prepared"],
    "tpcb": ["-M", "simple"],
    "select-connect": ["-S", "-C", "-M", "simple"],
}


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port}")


def _pgpool_conf(workdir: Path, port: int, pcp_port: int, cluster: PgCluster, mode: str) -> str:
    nodes = cluster.nodes if mode == "streaming" else cluster.nodes[:1]
    lines = {
        "listen_addresses": "'127.0.0.1'", "port": port, "pcp_port": pcp_port,
        "pcp_listen_addresses": "'127.0.0.1'",
        "socket_dir": f"'{workdir}'", "pcp_socket_dir": f"'{workdir}'",
        "pid_file_name": f"'{workdir}/pgpool.pid'", "logdir": f"'{workdir}'",
        "backend_clustering_mode": "'streaming_replication'" if mode == "streaming" else "'raw'",
        "num_init_children": 32, "max_pool": 4, "enable_pool_hba": "off",
        "load_balance_mode": "on" if mode == "streaming" else "off",
        "sr_check_period": 0, "health_check_period": 0,
        "sr_check_user": "'postgres'", "health_check_user": "'postgres'",
        "failover_on_backend_error": "off", "log_min_messages": "'warning'",
        "child_life_time": 0, "connection_cache": "on",
    }
    out = [f"{k} = {v}" for k, v in lines.items()]
    for i, n in enumerate(nodes):
        out += [f"backend_hostname{i} = '127.0.0.1'", f"backend_port{i} = {n.state.port}",
                f"backend_weight{i} = 1", f"backend_data_directory{i} = '{n.datadir}'",
                f"backend_flag{i} = 'ALLOW_TO_FAILOVER'"]
    return "\n".join(out) + "\n"


class Target:
    def __init__(self, name: str, port: int, proc=None, workdir=None):
        self.name, self.port, self.proc, self.workdir = name, port, proc, workdir

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_pgpool(name: str, argv0: list[str], workdir: Path, cluster, mode: str) -> Target:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    port, pcp_port = free_ports(2)
    conf = workdir / "pgpool.conf"
    conf.write_text(_pgpool_conf(workdir, port, pcp_port, cluster, mode))
    (workdir / "pcp.conf").write_text("")
    (workdir / "pool_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    log = open(workdir / "pgpool.log", "w")
    proc = subprocess.Popen(argv0 + ["-n", "-D", "-f", str(conf), "-F", str(workdir / "pcp.conf"),
                                     "-a", str(workdir / "pool_hba.conf")],
                            stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)
    time.sleep(1.0)
    return Target(name, port, proc, workdir)


def pgbench(port: int, args: list[str], seconds: int, clients: int) -> float | None:
    cmd = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-n",
           "-c", str(clients), "-j", "2", "-T", str(seconds), *args, DBNAME]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    m = re.search(r"tps = ([0-9.]+)", r.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    if r.returncode != 0 or not m:
        sys.stderr.write(f"pgbench {' '.join(args)} on port {port} failed:\n{r.stderr[-2000:]}\n")
        return None
    if failed and int(failed.group(1)):
        sys.stderr.write(f"pgbench on port {port}: {failed.group(1)} failed transactions\n")
    return float(m.group(1))


def main() -> int:
    seconds = int(os.environ.get("BENCH_SECONDS", "8"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    clients = int(os.environ.get("BENCH_CLIENTS", "8"))
    mode = os.environ.get("BENCH_MODE", "raw")
    names = [w for w in os.environ.get("BENCH_WORKLOADS", ",".join(WORKLOADS)).split(",") if w]
    base = ROOT / ".run" / "bench"
    cluster = PgCluster.build_or_load(base / "cluster", num_standbys=1 if mode == "streaming" else 0,
                                      settings={"max_connections": 300})
    primary = cluster.primary
    # pgpool never pools connections to database postgres: benchmark in a database of its own
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(primary.state.port), "-U", "postgres",
                    "-c", f"CREATE DATABASE {DBNAME}", "postgres"], capture_output=True)
    subprocess.run(["pgbench", "-i", "-q", "-s", "10", "-h", "127.0.0.1", "-p",
                    str(primary.state.port), "-U", "postgres", DBNAME],
                   check=True, capture_output=True)
    targets = [Target("direct", primary.state.port)]
    if os.environ.get("BENCH_BARE", "1") != "0":
        bare_port = free_ports(1)[0]
        bare = subprocess.Popen([sys.executable, "-m", "tests.bare_relay", str(bare_port),
                                 str(primary.state.port)], cwd=ROOT)
        wait_port(bare_port)
        targets.append(Target("bare-relay", bare_port, bare))
    targets.append(start_pgpool("ours", [sys.executable, "-m", "pgpool.cli"], base / "ours",
                                cluster, mode))
    if shutil.which("pgpool", path="/usr/sbin:/usr/bin"):
        targets.append(start_pgpool("pgpool-II", [shutil.which("pgpool", path="/usr/sbin:/usr/bin")],
                                    base / "pgpool2", cluster, mode))
    else:
        print("pgpool-II (Debian package pgpool2) not installed: comparing with direct only")
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for r in range(rounds):
            for w in names:
                for t in targets:
                    tps = pgbench(t.port, WORKLOADS[w], seconds, clients)
                    if tps is not None:
                        results.setdefault((w, t.name), []).append(tps)
                    print(f"round {r + 1} {w:16s} {t.name:10s} "
                          f"{'failed' if tps is None else f'{tps:10.1f} tps'}", flush=True)
    finally:
        for t in targets:
            t.stop()
    print()
    print(f"mode={mode} clients={clients} seconds={seconds} rounds={rounds} (median TPS)")
    header = f"{'workload':16s}" + "".join(f"{t.name:>12s}" for t in targets)
    header += f"{'ours/direct':>13s}" + (f"{'ours/pgpool-II':>16s}" if len(targets) > 2 else "")
    print(header)
    for w in names:
        med = {t.name: statistics.median(results[(w, t.name)]) if results.get((w, t.name)) else None
               for t in targets}
        line = f"{w:16s}" + "".join(f"{med[t.name]:12.0f}" if med[t.name] else f"{'-':>12s}"
                                    for t in targets)
        ours, direct, p2 = med.get("ours"), med.get("direct"), med.get("pgpool-II")
        line += f"{ours / direct:13.2f}" if ours and direct else f"{'-':>13s}"
        if len(targets) > 2:
            line += f"{ours / p2:16.2f}" if ours and p2 else f"{'-':>16s}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
