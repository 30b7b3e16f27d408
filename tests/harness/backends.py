"""Choose and build the PostgreSQL cluster the tests run against (local binaries, or Docker on request)."""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pgpool.tools.cluster import PgCluster

BACKEND_ENV = "PGPOOL_TEST_BACKEND"        # "local" (default) or "docker"
CLUSTER_DIR_ENV = "PGPOOL_TEST_CLUSTER_DIR"  # reuse (and keep) local clusters under this directory


def backend_name() -> str:
    """"docker" when asked for and a Docker engine answers, else "local"."""
    wanted = os.environ.get(BACKEND_ENV, "local").strip().lower()
    if wanted != "docker":
        return "local"
    from tests.harness.docker_cluster import docker_available
    if docker_available():
        return "docker"
    print(f"{BACKEND_ENV}=docker but no Docker engine answers; using local PostgreSQL binaries", file=sys.stderr)
    return "local"


class ClusterHandle:
    """A built cluster plus how to dispose of it at the end of the session."""

    def __init__(self, cluster, keep: bool):
        self.cluster, self.keep = cluster, keep

    def close(self) -> None:
        if self.keep:
            self.cluster.stop()
        else:
            self.cluster.destroy()


def build_cluster(name: str, num_standbys: int) -> ClusterHandle:
    """A running primary + ``num_standbys`` streaming standbys for a test session.

    Local clusters go to a fresh /tmp directory (removed at the end), or, when PGPOOL_TEST_CLUSTER_DIR
    is set, to ``$PGPOOL_TEST_CLUSTER_DIR/<name>`` where they are reused across sessions and kept."""
    if backend_name() == "docker":
        from tests.harness.docker_cluster import DockerCluster
        return ClusterHandle(DockerCluster(num_standbys), keep=False)
    keep_dir = os.environ.get(CLUSTER_DIR_ENV)
    if keep_dir:
        return ClusterHandle(PgCluster.build_or_load(Path(keep_dir) / name, num_standbys=num_standbys), keep=True)
    base = Path(tempfile.mkdtemp(prefix=f"pgpool-{name}-", dir="/tmp"))
    return ClusterHandle(PgCluster.create(base, num_standbys=num_standbys), keep=False)


@contextmanager
def scratch_cluster(name: str, num_standbys: int, settings: dict | None = None,
                    setup_sql: str | None = None):
    """A local primary + ``num_standbys`` standbys of a test module's own, in a fresh /tmp
    directory (for tests that break or reconfigure their cluster): ``setup_sql`` runs on the
    primary first; everything is destroyed at the end."""
    cluster = PgCluster.create(Path(tempfile.mkdtemp(prefix=f"pgpool-{name}-", dir="/tmp")),
                               num_standbys=num_standbys, settings=settings)
    try:
        if setup_sql:
            cluster.primary.psql(setup_sql)
        yield cluster
    finally:
        cluster.destroy()
