"""The PgCluster interface backed by PostgreSQL 15 containers (testcontainers), for PGPOOL_TEST_BACKEND=docker.

Node 0 is a PostgresContainer primary; each standby is a postgres:15 container that clones it with
pg_basebackup over a private Docker network and then streams from it.  pgpool (on the host)
reaches every node on its published port.
"""

from __future__ import annotations

import shlex
import time

from testcontainers.community.postgres import PostgresContainer
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

IMAGE = "postgres:15"
PGDATA = "/var/lib/postgresql/data"
SERVER_ARGS = ("-c wal_level=replica -c hot_standby=on -c max_wal_senders=10 -c max_connections=200 "
               "-c fsync=off -c synchronous_commit=off -c wal_keep_size=64MB -c hot_standby_feedback=on")
PASSWORD = "postgres"


def docker_available() -> bool:
    """True when a Docker engine answers."""
    try:
        import docker
        docker.from_env(timeout=5).ping()
    except Exception:  # noqa: BLE001 - any failure means "no usable engine"
        return False
    return True


class DockerNode:
    """One PostgreSQL container of a DockerCluster."""

    def __init__(self, cluster: DockerCluster, node_id: int, container: DockerContainer):
        self.cluster, self.node_id, self.container = cluster, node_id, container
        self.application_name = f"node{node_id}"
        self.name = self.application_name
        self.datadir = PGDATA

    @property
    def host(self) -> str:
        return self.container.get_container_host_ip()

    @property
    def port(self) -> int:
        return int(self.container.get_exposed_port(5432))

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={user} password={PASSWORD}"

    def _exec(self, cmd: list[str]) -> str:
        result = self.container.get_wrapped_container().exec_run(cmd, user="postgres")
        output = result.output.decode(errors="replace")
        if result.exit_code != 0:
            raise RuntimeError(f"{shlex.join(cmd)} exited with {result.exit_code}\n{output}")
        return output

    def psql(self, sql: str, dbname: str = "postgres", user: str = "postgres") -> str:
        return self._exec(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", dbname,
                           "-c", sql]).strip()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.psql("SELECT 1") == "1":
                    return
            except Exception:  # noqa: BLE001 - container still starting
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def is_running(self) -> bool:
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        return wrapped.status == "running"

    def start(self) -> None:
        if not self.is_running():
            self.container.get_wrapped_container().start()
            self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (its container exits with it); ``immediate`` kills the container."""
        if not self.is_running():
            return
        if mode == "immediate":
            self.container.get_wrapped_container().kill()
        else:
            self.container.get_wrapped_container().stop()

    def promote(self) -> None:
        self._exec(["pg_ctl", "-D", PGDATA, "promote", "-w"])

    def in_recovery(self) -> bool:
        return self.psql("SELECT pg_is_in_recovery()") == "t"

    def log_text(self) -> str:
        out, err = self.container.get_logs()
        return (out + err).decode(errors="replace")


class DockerCluster:
    """Primary + ``num_standbys`` streaming standbys in containers; same interface as PgCluster."""

    superuser = "postgres"
    password = PASSWORD
    auth = "scram-sha-256"

    def __init__(self, num_standbys: int = 1):
        self.network = Network().create()
        # The image's pg_hba allows every database but not replication: add it before initdb hooks run.
        hba_hook = "echo 'host replication all all scram-sha-256' >> \"$PGDATA/pg_hba.conf\""
        primary = (PostgresContainer(IMAGE, username="postgres", password=PASSWORD, dbname="postgres", driver=None)
                   .with_network(self.network).with_network_aliases("node0")
                   .with_command(["bash", "-c", f"echo {shlex.quote(hba_hook)} > /docker-entrypoint-initdb.d/repl.sh"
                                  f" && exec docker-entrypoint.sh postgres {SERVER_ARGS}"]))
        primary.start()
        self.nodes = [DockerNode(self, 0, primary)]
        for node_id in range(1, num_standbys + 1):
            self._add_standby(node_id)
        self.wait_streaming()

    def _add_standby(self, node_id: int) -> DockerNode:
        conninfo = f"host=node0 user=postgres password={PASSWORD} application_name=node{node_id}"
        script = (f"until gosu postgres pg_basebackup -h node0 -U postgres -D {PGDATA} -X stream -R -c fast; "
                  f"do rm -rf {PGDATA}/*; sleep 1; done; "
                  f"echo \"primary_conninfo = '{conninfo}'\" >> {PGDATA}/postgresql.auto.conf; "
                  f"exec docker-entrypoint.sh postgres {SERVER_ARGS}")
        container = (DockerContainer(IMAGE).with_env("PGPASSWORD", PASSWORD).with_exposed_ports(5432)
                     .with_network(self.network).with_network_aliases(f"node{node_id}")
                     .with_command(["bash", "-c", script]))
        container.start()
        node = DockerNode(self, node_id, container)
        node.wait_ready()
        self.nodes.append(node)
        return node

    @property
    def primary(self) -> DockerNode:
        return self.nodes[0]

    @property
    def standbys(self) -> list[DockerNode]:
        return self.nodes[1:]

    def streaming_standbys(self) -> list[str]:
        return self.primary.psql("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' "
                                 "ORDER BY application_name").splitlines()

    def wait_streaming(self, timeout: float = 60) -> None:
        wanted = sorted(node.application_name for node in self.standbys)
        deadline = time.monotonic() + timeout
        while sorted(self.streaming_standbys()) != wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"standbys {wanted} not streaming; have {self.streaming_standbys()}")
            time.sleep(0.5)

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self, mode: str = "fast") -> None:
        for node in reversed(self.nodes):
            node.stop(mode)

    def restore(self) -> None:
        """Rebuild the standbys that no longer stream from node 0 (containers are cheap to recreate)."""
        self.primary.start()
        streaming = set(self.streaming_standbys())
        for node in list(self.standbys):
            if node.application_name not in streaming:
                node.container.stop()
                self.nodes.remove(node)
                self._add_standby(node.node_id)
        self.nodes.sort(key=lambda n: n.node_id)
        self.wait_streaming()

    def destroy(self) -> None:
        for node in self.nodes:
            node.container.stop()
        self.network.remove()

    def pgpool_backend_settings(self) -> dict[str, object]:
        settings: dict[str, object] = {}
        for node in self.nodes:
            i = node.node_id
            settings.update({f"backend_hostname{i}": node.host, f"backend_port{i}": node.port,
                             f"backend_weight{i}": 1, f"backend_data_directory{i}": PGDATA,
                             f"backend_flag{i}": "ALLOW_TO_FAILOVER", f"backend_application_name{i}": node.application_name})
        return settings
