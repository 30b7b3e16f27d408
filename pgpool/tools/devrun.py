"""`make run`: a local primary + standby and pgpool in front of them, in the foreground, until Ctrl-C.

Everything lives in ``<checkout>/.run/``: the PostgreSQL nodes (reused on the next run), pgpool.conf,
pcp.conf (postgres/postgres), pool_hba.conf, the sockets, the pid file and the logs.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import subprocess
import sys
from pathlib import Path

from pgpool.tools import certs
from pgpool.tools.cluster import PgCluster, format_conf

PCP_USER = PCP_PASSWORD = "postgres"
POOL_HBA = ("local   all  all                trust\n"
            "host    all  all  127.0.0.1/32  trust\n"
            "host    all  all  ::1/128       trust\n")


def checkout_dir() -> Path:
    """The source checkout this module belongs to (where setup.cfg is), else the current directory."""
    repo = Path(__file__).resolve().parents[2]
    return repo if (repo / "setup.cfg").exists() else Path.cwd()


def pgpool_settings(cluster: PgCluster, run_dir: Path, port: int, pcp_port: int) -> dict[str, object]:
    """pgpool.conf settings for a development pgpool in front of ``cluster``."""
    settings: dict[str, object] = {
        "backend_clustering_mode": "streaming_replication",
        "listen_addresses": "localhost",
        "port": port,
        "pcp_listen_addresses": "localhost",
        "pcp_port": pcp_port,
        "socket_dir": str(run_dir),
        "pcp_socket_dir": str(run_dir),
        "pid_file_name": str(run_dir / "pgpool.pid"),
        "logdir": str(run_dir),
        "num_init_children": 32,
        "max_pool": 4,
        "load_balance_mode": True,
        "sr_check_period": 10,
        "sr_check_user": "postgres",
        "health_check_period": 10,
        "health_check_user": "postgres",
        "enable_pool_hba": False,  # pool_hba.conf is written (all trust) for when it is switched on
        "pool_passwd": "pool_passwd",
    }
    settings.update(cluster.pgpool_backend_settings())
    return settings


def write_files(cluster: PgCluster, run_dir: Path, port: int, pcp_port: int, ssl: bool = False) -> Path:
    """Write pgpool.conf, pcp.conf and pool_hba.conf into ``run_dir``; return pgpool.conf's path.
    ``ssl``: ssl = on with a test CA and server certificate in ``run_dir/certs`` (made once)."""
    conf = run_dir / "pgpool.conf"
    settings = pgpool_settings(cluster, run_dir, port, pcp_port)
    if ssl:
        settings.update(certs.ensure_pki(run_dir / "certs").pgpool_settings())
    conf.write_text("# written by pgpool.tools.devrun (make run)\n" + format_conf(settings))
    (run_dir / "pcp.conf").write_text(f"{PCP_USER}:{hashlib.md5(PCP_PASSWORD.encode()).hexdigest()}\n")
    (run_dir / "pool_hba.conf").write_text(POOL_HBA)
    return conf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devrun", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=checkout_dir() / ".run", help="run directory (default .run/)")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--pcp-port", type=int, default=9898)
    parser.add_argument("--standbys", type=int, default=1)
    parser.add_argument("--ssl", action="store_true", help="ssl = on, certificates from a test CA in .run/certs")
    parser.add_argument("--pgpool", default=f"{sys.executable} -m pgpool.cli",
                        help="pgpool command to run (default: this venv's pgpool)")
    args = parser.parse_args(argv)

    run_dir = args.dir.resolve()
    print(f"PostgreSQL cluster in {run_dir} ...", flush=True)
    cluster = PgCluster.build_or_load(run_dir, num_standbys=args.standbys)
    conf = write_files(cluster, run_dir, args.port, args.pcp_port, ssl=args.ssl)
    command = [*args.pgpool.split(), "-n", "-f", str(conf), "-F", str(run_dir / "pcp.conf"),
               "-a", str(run_dir / "pool_hba.conf")]
    nodes = ", ".join(f"{n.name}={'primary' if n.node_id == 0 else 'standby'}:{n.port}" for n in cluster.nodes)
    print(f"backends: {nodes}\n"
          f"pgpool on port {args.port}, PCP on {args.pcp_port} (user {PCP_USER} / password {PCP_PASSWORD})\n"
          f"connect:  psql -h 127.0.0.1 -p {args.port} -U postgres postgres\n"
          + (f"over TLS: psql 'host=localhost port={args.port} user=postgres sslmode=verify-full "
             f"sslrootcert={run_dir / 'certs' / 'ca.crt'}'\n" if args.ssl else "") +
          f"Ctrl-C stops pgpool, then PostgreSQL.\n", flush=True)
    proc = subprocess.Popen(command, cwd=run_dir)
    # Ctrl-C (SIGINT) or TERM to us: fast shutdown of pgpool, then PostgreSQL. Handlers are set
    # explicitly: a SIGINT inherited as ignored (a background job) would not raise
    # KeyboardInterrupt.
    def stop(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        status = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        print("stopping PostgreSQL ...", flush=True)
        cluster.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
