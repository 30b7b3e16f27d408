"""Session fixtures shared by all tests: PostgreSQL clusters, a pgpool factory, failure logs."""

from __future__ import annotations

import pytest

from tests.harness.backends import build_cluster

LOG_TAIL_LINES = 60


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: needs real PostgreSQL (tests/integration)")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (rep_setup, rep_call, rep_teardown) for fixtures to see."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def phase_failed(request) -> bool:
    """True when the setup or call phase of the requesting test failed."""
    return any(getattr(getattr(request.node, f"rep_{phase}", None), "failed", False) for phase in ("setup", "call"))


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def pg_cluster():
    """Primary + 1 streaming standby, built once per session (PgCluster or DockerCluster interface)."""
    handle = build_cluster("cluster2", num_standbys=1)
    yield handle.cluster
    handle.close()


@pytest.fixture(scope="session")
def pg_cluster3():
    """Primary + 2 streaming standbys, built on first use."""
    handle = build_cluster("cluster3", num_standbys=2)
    yield handle.cluster
    handle.close()


@pytest.fixture
def pgpool_factory(request):
    """start(overrides=None, cluster=None, **PgpoolProcess kwargs) -> a started PgpoolProcess.

    ``cluster`` defaults to pg_cluster.  Every pgpool started is stopped at teardown; when the test
    failed, its log and the tail of each PostgreSQL server log are printed."""
    from tests.harness.pgpool_process import PgpoolProcess

    started: list[PgpoolProcess] = []

    def start(overrides: dict | None = None, cluster=None, wait: bool = True, timeout: float = 30, **kwargs):
        cluster = cluster or request.getfixturevalue("pg_cluster")
        pgpool = PgpoolProcess(cluster, overrides, **kwargs)
        started.append(pgpool)
        pgpool.start(timeout=timeout, wait=wait)
        return pgpool

    yield start
    failed = phase_failed(request)
    for pgpool in started:
        pgpool.stop()
        if failed:
            print(f"\n===== pgpool log ({pgpool.workdir}, pid {pgpool.pid}, exit {pgpool.proc and pgpool.proc.returncode})"
                  f" =====\n{pgpool.log_text()}")
            for node in pgpool.cluster.nodes:
                print(f"===== {node.name} server log (tail) =====\n{_tail(node.log_text())}")
        else:
            pgpool.cleanup()
