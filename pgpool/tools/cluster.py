"""Build and run a local PostgreSQL 15 streaming-replication cluster (for `make run`, tests, pgpool_setup).

A cluster lives in one base directory: one data directory per node (``node0`` is the primary),
each node's server log beside it, the Unix sockets of every node in the base directory itself and a
small JSON state file (``cluster.json``) so that :meth:`PgCluster.load` can start an existing
cluster again instead of rebuilding it.  When the caller is root, every PostgreSQL program runs as
the ``postgres`` user and the directories belong to it (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "cluster.json"
NODE_CONF = "node.conf"
SUPERUSER = "postgres"
AUTH_METHODS = ("trust", "md5", "scram-sha-256")
STOP_MODES = ("smart", "fast", "immediate")

# Settings shared by every node (written to postgresql.conf of the primary, copied by pg_basebackup).
BASE_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": 200,
    "shared_buffers": "16MB",
    "wal_level": "replica",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_keep_size": "64MB",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "wal_log_hints": "on",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "log_connections": "off",
    "unix_socket_permissions": "0777",
}


def _conf_value(value: object) -> str:
    """Render one value in postgresql.conf / pgpool.conf syntax."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def format_conf(settings: dict[str, object]) -> str:
    """``name = value`` lines for a postgresql.conf or pgpool.conf style file."""
    return "".join(f"{name} = {_conf_value(value)}\n" for name, value in settings.items())


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl, postgres, pg_basebackup (PostgreSQL 15 preferred)."""
    candidates = [os.environ.get("PGPOOL_PG_BINDIR"), "/usr/lib/postgresql/15/bin"]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql-15 "
                            "or set PGPOOL_PG_BINDIR")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = "127.0.0.1", avoid: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """``count`` distinct loopback ports that are free right now."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in ports and port not in avoid and port >= 1024:
            ports.append(port)
    return ports


class CommandError(RuntimeError):
    """A PostgreSQL program failed; the message carries its output."""


class Runner:
    """Runs PostgreSQL programs as the ``postgres`` user when we are root, else as ourselves."""

    def __init__(self, bindir: Path | None = None, os_user: str | None = None):
        self.bindir = Path(bindir) if bindir else find_bindir()
        self.as_root = os.geteuid() == 0
        self.os_user = os_user or (SUPERUSER if self.as_root else pwd.getpwuid(os.geteuid()).pw_name)
        entry = pwd.getpwnam(self.os_user)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, entry.pw_dir

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", HOME=self.home if self.as_root else env.get("HOME", self.home))
        return env

    def chown(self, path: Path) -> None:
        """Give ``path`` (recursively) to the PostgreSQL OS user."""
        if not self.as_root:
            return
        for root, dirs, files in os.walk(path):
            os.chown(root, self.uid, self.gid)
            for name in dirs + files:
                os.lchown(os.path.join(root, name), self.uid, self.gid)

    def run(self, program: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``bindir/program args`` and return the completed process (text output)."""
        exe = self.bindir / program
        cmd = [str(exe if exe.exists() else program), *args]
        drop = {"user": self.uid, "group": self.gid, "extra_groups": []} if self.as_root else {}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=timeout,
                              cwd="/", stdin=subprocess.DEVNULL, **drop)
        if check and proc.returncode != 0:
            raise CommandError(f"{' '.join(cmd)} exited with {proc.returncode}\n{proc.stdout}{proc.stderr}")
        return proc


@dataclass
class NodeState:
    """What the state file records about one node."""

    node_id: int
    port: int
    role: str                      # role it was built with: "primary" or "standby"
    application_name: str


@dataclass
class ClusterState:
    """What the state file records about a cluster."""

    auth: str = "trust"
    password: str | None = None
    nodes: list[NodeState] = field(default_factory=list)
    extra_settings: dict[str, object] = field(default_factory=dict)


class PgNode:
    """One PostgreSQL server of a :class:`PgCluster`."""

    host = "127.0.0.1"

    def __init__(self, cluster: PgCluster, state: NodeState):
        self.cluster = cluster
        self.state = state

    node_id = property(lambda self: self.state.node_id)
    port = property(lambda self: self.state.port)
    application_name = property(lambda self: self.state.application_name)
    name = property(lambda self: f"node{self.state.node_id}")
    datadir = property(lambda self: self.cluster.base_dir / self.name)
    logfile = property(lambda self: self.cluster.base_dir / f"{self.name}.log")
    socket_dir = property(lambda self: self.cluster.base_dir)

    def __repr__(self) -> str:
        return f"<PgNode {self.name} port={self.port} built_as={self.state.role}>"

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER, via_socket: bool = False) -> str:
        """A libpq connection string for this node (TCP on 127.0.0.1 unless ``via_socket``)."""
        host = self.socket_dir if via_socket else self.host
        parts = [f"host={host}", f"port={self.port}", f"dbname={dbname}", f"user={user}"]
        if self.cluster.password and not via_socket:
            parts.append(f"password={self.cluster.password}")
        return " ".join(parts)

    def ctl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``pg_ctl -D datadir args``."""
        return self.cluster.runner.run("pg_ctl", "-D", str(self.datadir), *args, check=check, timeout=timeout)

    def is_running(self) -> bool:
        """True when the postmaster of this data directory is alive."""
        return self.datadir.is_dir() and self.ctl("status", check=False).returncode == 0

    def start(self, timeout: int = 60) -> None:
        """Start the server (no-op when running) and wait until it accepts connections."""
        if self.is_running():
            return
        self.ctl("start", "-w", "-t", str(timeout), "-l", str(self.logfile), timeout=timeout + 30)

    def stop(self, mode: str = "fast", timeout: int = 60) -> None:
        """Stop the server with pg_ctl's ``mode`` (smart, fast, immediate); no-op when stopped."""
        if mode not in STOP_MODES:
            raise ValueError(f"stop mode must be one of {STOP_MODES}")
        if self.is_running():
            self.ctl("stop", "-m", mode, "-w", "-t", str(timeout), timeout=timeout + 30)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def reload(self) -> None:
        self.ctl("reload")

    def promote(self, timeout: int = 60) -> None:
        """Promote this standby to a primary and wait until it is one."""
        self.ctl("promote", "-w", "-t", str(timeout), timeout=timeout + 30)

    def in_recovery(self) -> bool:
        return self.psql("SELECT pg_is_in_recovery()") == "t"

    def psql(self, sql: str, dbname: str = "postgres", user: str = SUPERUSER, timeout: float = 60) -> str:
        """Run ``sql`` through psql on the Unix socket; return unaligned tuples-only output, stripped."""
        proc = self.cluster.runner.run(
            "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
            "-p", str(self.port), "-U", user, "-d", dbname, "-c", sql, timeout=timeout)
        return proc.stdout.strip()

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until ``SELECT 1`` succeeds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.psql("SELECT 1", timeout=10) == "1":
                    return
            except (CommandError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def write_node_conf(self) -> None:
        """Per-node settings (port, cluster_name and, for a standby, primary_conninfo)."""
        settings: dict[str, object] = {"port": self.port, "cluster_name": self.name,
                                       "unix_socket_directories": str(self.socket_dir)}
        primary = self.cluster.nodes[0]
        if self.state.role == "standby":
            settings["primary_conninfo"] = (f"host={primary.socket_dir} port={primary.port} user={SUPERUSER} "
                                            f"application_name={self.application_name}")
        path = self.datadir / NODE_CONF
        path.write_text(format_conf(settings))
        self.cluster.runner.chown(path)


class PgCluster:
    """A primary (node 0) plus streaming standbys, built with initdb and pg_basebackup."""

    def __init__(self, base_dir: str | os.PathLike, state: ClusterState, runner: Runner | None = None):
        self.base_dir = Path(base_dir).resolve()
        self.state = state
        self.runner = runner or Runner()
        self.nodes = [PgNode(self, node) for node in state.nodes]

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, base_dir: str | os.PathLike | None = None, num_standbys: int = 1, auth: str = "trust",
               password: str | None = None, settings: dict[str, object] | None = None,
               start: bool = True, runner: Runner | None = None) -> PgCluster:
        """Build a new cluster in ``base_dir`` (a fresh temp dir when None); it must not hold one yet.

        ``auth`` applies to TCP connections (``md5`` or ``scram-sha-256`` need ``password``, set for
        the ``postgres`` superuser); Unix-socket connections are always trusted.
        """
        if auth not in AUTH_METHODS:
            raise ValueError(f"auth must be one of {AUTH_METHODS}")
        if auth != "trust" and not password:
            raise ValueError(f"auth {auth} needs a password")
        base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="pgpool-cluster-"))
        if (base / STATE_FILE).exists():
            raise FileExistsError(f"{base} already holds a cluster; use PgCluster.load()")
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)
        runner = runner or Runner()
        runner.chown(base)
        ports = free_ports(num_standbys + 1)
        state = ClusterState(auth=auth, password=password, extra_settings=dict(settings or {}), nodes=[
            NodeState(i, ports[i], "primary" if i == 0 else "standby", f"node{i}") for i in range(num_standbys + 1)])
        cluster = cls(base, state, runner)
        cluster._init_primary()
        cluster.save()
        cluster.primary.start()
        for node in cluster.standbys:
            cluster._base_backup(node)
            node.start()
        cluster.save()
        if start:
            cluster.wait_streaming()
        else:
            cluster.stop()
        return cluster

    @classmethod
    def load(cls, base_dir: str | os.PathLike, start: bool = True, runner: Runner | None = None) -> PgCluster:
        """Open the cluster built in ``base_dir``; start its nodes unless ``start`` is False.

        Ports taken meanwhile by another program are replaced by free ones.
        """
        raw = json.loads((Path(base_dir) / STATE_FILE).read_text())
        nodes = [NodeState(**node) for node in raw.pop("nodes")]
        cluster = cls(base_dir, ClusterState(nodes=nodes, **raw), runner)
        if start:
            cluster._move_busy_ports()
            cluster.start()
            cluster.wait_streaming()
        return cluster

    @classmethod
    def build_or_load(cls, base_dir: str | os.PathLike, num_standbys: int = 1, **kwargs) -> PgCluster:
        """Reuse the cluster in ``base_dir`` when there is one with as many nodes, else build it."""
        if (Path(base_dir) / STATE_FILE).exists():
            cluster = cls.load(base_dir, start=False, runner=kwargs.get("runner"))
            if len(cluster.nodes) == num_standbys + 1:
                cluster._move_busy_ports()
                cluster.start()
                cluster.wait_streaming()
                return cluster
            cluster.destroy()
        return cls.create(base_dir, num_standbys=num_standbys, **kwargs)

    def save(self) -> None:
        state = asdict(self.state)
        path = self.base_dir / STATE_FILE
        path.write_text(json.dumps(state, indent=2) + "\n")
        path.chmod(0o600)

    def _init_primary(self) -> None:
        primary = self.primary
        args = ["-D", str(primary.datadir), "-U", SUPERUSER, "--no-locale", "-E", "UTF8", "-A", "trust"]
        pwfile = None
        if self.state.auth != "trust":
            pwfile = self.base_dir / "pwfile"
            pwfile.write_text(self.state.password + "\n")
            self.runner.chown(pwfile)
            args += ["--auth-local=trust", f"--auth-host={self.state.auth}", f"--pwfile={pwfile}"]
        try:
            self.runner.run("initdb", *args, timeout=300)
        finally:
            if pwfile:
                pwfile.unlink()
        settings = dict(BASE_SETTINGS)
        if self.state.auth != "trust":
            settings["password_encryption"] = self.state.auth
        settings.update(self.state.extra_settings)
        conf = primary.datadir / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write("\n# pgpool test cluster\n" + format_conf(settings) + f"include_if_exists = '{NODE_CONF}'\n")
        host_method = self.state.auth
        (primary.datadir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "local replication all trust\n"
            f"host all all 127.0.0.1/32 {host_method}\n"
            f"host all all ::1/128 {host_method}\n"
            f"host replication all 127.0.0.1/32 {host_method}\n"
            f"host replication all ::1/128 {host_method}\n")
        self.runner.chown(primary.datadir)
        primary.write_node_conf()

    def _base_backup(self, node: PgNode) -> None:
        """(Re)create ``node`` as a streaming standby of node 0 with pg_basebackup -R."""
        primary = self.primary
        node.stop("immediate")
        if node.datadir.exists():
            shutil.rmtree(node.datadir)
        node.state.role = "standby"
        self.runner.run("pg_basebackup", "-D", str(node.datadir), "-h", str(primary.socket_dir),
                        "-p", str(primary.port), "-U", SUPERUSER, "-X", "stream", "-R", "-c", "fast",
                        timeout=600)
        # -R wrote a primary_conninfo into postgresql.auto.conf, which would override node.conf's.
        auto = node.datadir / "postgresql.auto.conf"
        auto.write_text("".join(line for line in auto.read_text().splitlines(keepends=True)
                                if not line.startswith("primary_conninfo")))
        node.write_node_conf()

    def _move_busy_ports(self) -> None:
        """Give stopped nodes whose port is taken a new free port (standbys follow the primary's)."""
        taken = {n.port for n in self.nodes}
        moved = False
        for node in self.nodes:
            if not node.is_running() and not port_is_free(node.port):
                node.state.port = free_ports(1, avoid=taken)[0]
                taken.add(node.port)
                moved = True
        if moved:
            for node in self.nodes:
                node.write_node_conf()
            self.save()

    # -- views --------------------------------------------------------------------------------
    @property
    def primary(self) -> PgNode:
        return self.nodes[0]

    @property
    def standbys(self) -> list[PgNode]:
        return self.nodes[1:]

    @property
    def password(self) -> str | None:
        return self.state.password

    @property
    def auth(self) -> str:
        return self.state.auth

    superuser = SUPERUSER

    def __repr__(self) -> str:
        return f"<PgCluster {self.base_dir} nodes={self.nodes}>"

    # -- control -----------------------------------------------------------------------------
    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self, mode: str = "fast") -> None:
        for node in reversed(self.nodes):
            node.stop(mode)

    def destroy(self) -> None:
        """Stop every node at once and remove the base directory."""
        for node in self.nodes:
            if node.datadir.exists():
                node.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def add_standby(self, application_name: str | None = None) -> PgNode:
        """Build one more streaming standby of node 0 and start it."""
        node_id = len(self.nodes)
        state = NodeState(node_id, free_ports(1, avoid={n.port for n in self.nodes})[0], "standby",
                          application_name or f"node{node_id}")
        self.state.nodes.append(state)
        node = PgNode(self, state)
        self.nodes.append(node)
        self._base_backup(node)
        self.save()
        node.start()
        return node

    def rebuild_standby(self, node_id: int) -> PgNode:
        """Throw away node ``node_id``'s data and make it a fresh streaming standby of node 0."""
        node = self.nodes[node_id]
        self._base_backup(node)
        self.save()
        node.start()
        return node

    def streaming_standbys(self) -> list[str]:
        """application_name of every standby that streams from node 0 right now."""
        out = self.primary.psql("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' "
                                "ORDER BY application_name")
        return out.splitlines()

    def wait_streaming(self, timeout: float = 60) -> None:
        """Wait until every standby streams from node 0."""
        wanted = sorted(node.application_name for node in self.standbys)
        deadline = time.monotonic() + timeout
        while sorted(self.streaming_standbys()) != wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"standbys {wanted} not streaming; have {self.streaming_standbys()}")
            time.sleep(0.2)

    def restore(self) -> None:
        """Bring the cluster back to its built shape: node 0 a running primary, the others streaming
        standbys of it (a standby that was promoted or no longer starts is rebuilt)."""
        self.primary.start()
        if self.primary.in_recovery():
            self.primary.promote()
        streaming = set(self.streaming_standbys())
        for node in self.standbys:
            if node.application_name in streaming:
                continue
            try:
                node.start()
                healthy = node.in_recovery()
            except CommandError:
                healthy = False
            if not healthy:
                self.rebuild_standby(node.node_id)
        try:
            self.wait_streaming(timeout=15)
        except TimeoutError:
            for node in self.standbys:
                if node.application_name not in self.streaming_standbys():
                    self.rebuild_standby(node.node_id)
            self.wait_streaming()

    def pgpool_backend_settings(self) -> dict[str, object]:
        """backend_hostnameN/portN/weightN/data_directoryN/flagN/application_nameN for pgpool.conf."""
        settings: dict[str, object] = {}
        for node in self.nodes:
            i = node.node_id
            settings.update({
                f"backend_hostname{i}": node.host,
                f"backend_port{i}": node.port,
                f"backend_weight{i}": 1,
                f"backend_data_directory{i}": str(node.datadir),
                f"backend_flag{i}": "ALLOW_TO_FAILOVER",
                f"backend_application_name{i}": node.application_name,
            })
        return settings
