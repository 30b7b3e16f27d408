"""Run real client programs (psql, pgbench, pcp_* tools) as subprocesses against a host and port."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from pgpool.tools.cluster import find_bindir

REAL_PCP_DIR = Path("/usr/sbin")


def client_program(name: str) -> str:
    """Path of a PostgreSQL client program (psql, pgbench, ...): PostgreSQL 15's bin dir, else PATH."""
    try:
        candidate = find_bindir() / name
        if candidate.is_file():
            return str(candidate)
    except FileNotFoundError:
        pass
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found")
    return found


def _env(password: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password:
        env["PGPASSWORD"] = password
    env["PGCONNECT_TIMEOUT"] = "10"
    return env


def psql(sql: str, host: str, port: int, user: str = "postgres", dbname: str = "postgres",
         password: str | None = None, args: tuple[str, ...] = ("-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"),
         check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``sql`` with psql -c; returns the completed process (text stdout/stderr)."""
    cmd = [client_program("psql"), "-h", host, "-p", str(port), "-U", user, "-d", dbname, *args, "-c", sql]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(password), timeout=timeout,
                          stdin=subprocess.DEVNULL, check=check)


def psql_value(sql: str, host: str, port: int, **kwargs) -> str:
    """The stripped unaligned, tuples-only output of ``sql``."""
    return psql(sql, host, port, **kwargs).stdout.strip()


def pgbench(args: list[str], host: str, port: int, user: str = "postgres", dbname: str = "postgres",
            password: str | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run pgbench with ``args`` (e.g. ["-i", "-s", "1"] or ["-S", "-c", "8", "-T", "10"])."""
    cmd = [client_program("pgbench"), "-h", host, "-p", str(port), "-U", user, *args, dbname]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(password), timeout=timeout,
                          stdin=subprocess.DEVNULL, check=check)


def pgbench_tps(output: str) -> float:
    """The tps figure from pgbench's report."""
    match = re.search(r"^tps = ([0-9.]+)", output, re.MULTILINE)
    if not match:
        raise ValueError(f"no tps in pgbench output:\n{output}")
    return float(match.group(1))


def pcp(tool: str, pgpool, *args: str, real: bool = False, check: bool = False,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """Run pcp tool ``tool`` (e.g. "pcp_node_count") against a PgpoolProcess.

    ``real`` picks pgpool-II's own client from /usr/sbin; otherwise ours (the console script beside
    this Python, or ``python -m pcp.cli`` with the tool name as argv[0])."""
    if real:
        cmd = [str(REAL_PCP_DIR / tool)]
    else:
        script = Path(sys.executable).parent / tool
        cmd = [str(script)] if script.exists() else [sys.executable, "-c",
                                                      "import sys; from pcp.cli import main; sys.argv[0] = "
                                                      f"{tool!r}; sys.exit(main())"]
    return subprocess.run([*cmd, *pgpool.pcp_args(), *args], capture_output=True, text=True,
                          env=pgpool.pcp_env(), timeout=timeout, stdin=subprocess.DEVNULL, check=check)
