"""Run one pgpool (ours, or the real pgpool-II) as a subprocess for a test: config, start, readiness, stop, log."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from pgpool.tools.cluster import format_conf, free_ports

# pgpool.conf settings every test pgpool gets unless a test overrides them (None removes a key).
DEFAULT_SETTINGS: dict[str, object] = {
    "backend_clustering_mode": "streaming_replication",
    "listen_addresses": "127.0.0.1",
    "pcp_listen_addresses": "127.0.0.1",
    "num_init_children": 4,
    "max_pool": 2,
    "load_balance_mode": True,
    "sr_check_period": 1,
    "sr_check_user": "postgres",
    "health_check_period": 0,
    "health_check_user": "postgres",
    "enable_pool_hba": False,
}

OUR_PGPOOL = (sys.executable, "-m", "pgpool.cli")
REAL_PGPOOL = ("/usr/sbin/pgpool",)


def repo_env() -> dict[str, str]:
    """os.environ with this checkout first on PYTHONPATH (so `python -m pgpool.cli` works uninstalled)."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else repo
    return env


class PgpoolStartError(RuntimeError):
    """pgpool exited or did not answer in time; the message carries its log."""


class PgpoolProcess:
    """One pgpool instance with its own work directory (config files, sockets, pid file, log).

    ``cluster`` is a PgCluster (or the Docker cluster) whose nodes become backend 0..N-1.
    ``overrides`` are pgpool.conf settings applied on top of DEFAULT_SETTINGS and the per-instance
    ones (ports, directories, backends).  ``command`` selects the program: OUR_PGPOOL (default) or
    REAL_PGPOOL for comparisons with pgpool-II.
    """

    def __init__(self, cluster, overrides: dict[str, object] | None = None, *,
                 workdir: str | os.PathLike | None = None, pcp_user: str = "postgres",
                 pcp_password: str = "postgres", pool_hba: str | None = None,
                 pool_passwd: dict[str, str] | None = None, extra_args: tuple[str, ...] = (),
                 command: tuple[str, ...] = OUR_PGPOOL, env: dict[str, str] | None = None):
        self.cluster = cluster
        self.own_workdir = workdir is None
        # Short path: Unix socket paths are limited to ~107 bytes.
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="pgpool-", dir="/tmp"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pcp_user, self.pcp_password = pcp_user, pcp_password
        self.pool_hba, self.pool_passwd = pool_hba, pool_passwd
        self.extra_args, self.command, self.extra_env = tuple(extra_args), tuple(command), env or {}
        # Both servers answer PCP: wait for its port too, so a test can use pcp_* at once.
        self.wait_for_pcp = True
        self.port, self.pcp_port = free_ports(2)
        self.host = "127.0.0.1"
        self.settings = self._settings(overrides or {})
        self.conf_path = self.workdir / "pgpool.conf"
        self.pcp_conf_path = self.workdir / "pcp.conf"
        self.hba_path = self.workdir / "pool_hba.conf"
        self.passwd_path = self.workdir / "pool_passwd"
        self.pcppass_path = self.workdir / ".pcppass"
        self.log_path = self.workdir / "pgpool.log"
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    # -- files --------------------------------------------------------------------------------
    def _settings(self, overrides: dict[str, object]) -> dict[str, object]:
        password = self.cluster.password or ""
        settings: dict[str, object] = dict(DEFAULT_SETTINGS)
        settings.update({
            "port": self.port,
            "pcp_port": self.pcp_port,
            "socket_dir": str(self.workdir),
            "pcp_socket_dir": str(self.workdir),
            "pid_file_name": str(self.workdir / "pgpool.pid"),
            "logdir": str(self.workdir),
            "pool_passwd": "pool_passwd",
            "sr_check_password": password,
            "health_check_password": password,
            "enable_pool_hba": self.pool_hba is not None,
        })
        settings.update(self.cluster.pgpool_backend_settings())
        settings.update(overrides)
        return {name: value for name, value in settings.items() if value is not None}

    def set(self, **settings: object) -> None:
        """Change settings in the config (write_config() or reload() to apply)."""
        self.settings.update(settings)

    def write_config(self) -> None:
        """Write pgpool.conf, pcp.conf, .pcppass and, when given, pool_hba.conf and pool_passwd."""
        self.conf_path.write_text(format_conf(self.settings))
        pcp_hash = hashlib.md5(self.pcp_password.encode()).hexdigest()
        self.pcp_conf_path.write_text(f"{self.pcp_user}:{pcp_hash}\n")
        self.pcppass_path.write_text(f"*:*:{self.pcp_user}:{self.pcp_password}\n")
        self.pcppass_path.chmod(0o600)
        if self.pool_hba is not None:
            self.hba_path.write_text(self.pool_hba)
        if self.pool_passwd is not None:
            self.passwd_path.write_text("".join(
                f"{user}:md5{hashlib.md5((pw + user).encode()).hexdigest()}\n" for user, pw in self.pool_passwd.items()))
            self.passwd_path.chmod(0o600)

    # -- process ------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def argv(self) -> list[str]:
        args = [*self.command, "-n", "-f", str(self.conf_path), "-F", str(self.pcp_conf_path)]
        if self.pool_hba is not None:
            args += ["-a", str(self.hba_path)]
        return args + list(self.extra_args)

    def start(self, timeout: float = 30, wait: bool = True) -> PgpoolProcess:
        """Write the config, spawn pgpool in its own session and (by default) wait until it answers."""
        if self.is_alive():
            raise RuntimeError("pgpool already running")
        self.write_config()
        env = dict(repo_env(), **self.extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, cwd=self.workdir, env=env, start_new_session=True)
        if wait:
            self.wait_ready(timeout)
        return self

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 30, user: str = "postgres", dbname: str = "postgres",
                   password: str | None = None) -> None:
        """Wait until pgpool answers ``SELECT 1`` on its port (and, for pgpool-II or once our PCP
        server exists, its PCP port accepts connections)."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.is_alive():
                raise PgpoolStartError(f"pgpool exited with {self.proc.returncode}\n{self.log_text()}")
            try:
                if self.wait_for_pcp:
                    with socket.create_connection((self.host, self.pcp_port), timeout=2):
                        pass
                with psycopg.connect(self.dsn(user=user, dbname=dbname, password=password), connect_timeout=3,
                                     autocommit=True) as conn:
                    conn.execute("SELECT 1").fetchone()
                return
            except (OSError, psycopg.Error) as exc:
                last_error = exc
                time.sleep(0.2)
        raise PgpoolStartError(f"pgpool did not answer within {timeout}s: {last_error}\n{self.log_text()}")

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the pgpool parent."""
        if self.is_alive():
            os.kill(self.proc.pid, sig)

    def reload(self, **settings: object) -> None:
        """Apply ``settings`` to the config file and send SIGHUP."""
        self.set(**settings)
        self.write_config()
        self.send_signal(signal.SIGHUP)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """Stop pgpool: ``sig`` to the parent, SIGKILL to its whole process group after ``timeout``.

        Returns the parent's exit status (None if it was never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.proc.wait(10)
        self._kill_group()  # stray children whose parent is gone
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def cleanup(self) -> None:
        """Stop and remove the work directory (if this object made it)."""
        self.stop()
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PgpoolProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # -- clients ------------------------------------------------------------------------------
    def log_text(self) -> str:
        if self._log_file:
            self._log_file.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def dsn(self, user: str = "postgres", dbname: str = "postgres", password: str | None = None,
            via_socket: bool = False, **params: object) -> str:
        """libpq conninfo for this pgpool (TCP by default; the cluster's password when none is given)."""
        password = password if password is not None else self.cluster.password
        host = str(self.workdir) if via_socket else self.host
        return psycopg.conninfo.make_conninfo(host=host, port=self.port, user=user, dbname=dbname,
                                              password=password or None, **params)

    def connect(self, autocommit: bool = True, **kwargs) -> psycopg.Connection:
        """A psycopg connection through this pgpool."""
        return psycopg.connect(self.dsn(**kwargs), autocommit=autocommit, connect_timeout=10)

    def pcp_args(self) -> list[str]:
        """Connection options for a pcp_* tool (password from pcp_env()'s PCPPASSFILE)."""
        return ["-h", self.host, "-p", str(self.pcp_port), "-U", self.pcp_user, "-w"]

    def pcp_env(self) -> dict[str, str]:
        return dict(repo_env(), PCPPASSFILE=str(self.pcppass_path))
