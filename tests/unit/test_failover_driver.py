"""pgpool.ha.failover.Failover's driver: requests queue behind a running job, and a job waiting
for a process is resumed only by that process's exit code (a request arriving meanwhile once
resumed it with None: "failover failed: TypeError" and no failover)."""

from types import SimpleNamespace

from pgpool.ha import failover as F
from pgpool.state import shm as S


class FakeServer:
    def __init__(self):
        self.shm = SimpleNamespace(header=SimpleNamespace(switching=0, failover_count=0))


def driver(monkeypatch):
    """A Failover whose jobs wait for a pretend process (pid 1000 + node) and record what they got."""
    got = []

    def run(self, request):
        pid = 1000 + request.node
        self.scripts.add(pid)
        code = yield F._Child(pid)
        got.append((request.node, code))
        assert 0 <= code < F.PRIMARY_NOT_FOUND       # what _search does with a probe's code

    monkeypatch.setattr(F.Failover, "_run", run)
    return F.Failover(FakeServer()), got


def test_request_arriving_mid_job_waits_its_turn(monkeypatch):
    fo, got = driver(monkeypatch)
    fo.submit([(S.REQ_NODE_DOWN, 0, 0, 1)])
    assert fo.waiting == F._Child(1000) and fo.server.shm.header.switching == 1
    fo.submit([(S.REQ_NODE_DOWN, 0, 0, 2)])          # the same node reported again meanwhile
    fo.submit([(S.REQ_NODE_DOWN, 2, 0, 3)])
    assert got == [] and fo.waiting == F._Child(1000) and len(fo.queue) == 2
    assert fo.child_exited(1000, 1)
    assert got == [(0, 1)] and fo.waiting == F._Child(1000)     # the second request's turn
    assert fo.child_exited(1000, 1)
    assert fo.waiting == F._Child(1002)
    assert fo.child_exited(1002, 0)
    assert got == [(0, 1), (0, 1), (2, 0)]
    assert fo.job is None and not fo.busy and fo.server.shm.header.switching == 0
    assert fo.server.shm.header.failover_count == 3


def test_exit_of_another_process_does_not_resume_the_job(monkeypatch):
    fo, got = driver(monkeypatch)
    fo.submit([(S.REQ_NODE_DOWN, 1, 0, 1)])
    assert not fo.child_exited(4242, 0)              # not ours
    assert got == [] and fo.waiting == F._Child(1001)
