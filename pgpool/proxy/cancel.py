"""CancelRequest handling: find the session by its key in shared memory, cancel on every node."""

from pgpool import log
from pgpool.protocol import messages as m
from pgpool.proxy.backend import open_socket


def forward_cancel(worker, pid: int, key: int) -> bool:
    """Send a CancelRequest to each backend of the session whose main backend has (pid, key),
    with that backend's own pid and key. Returns False when no session matches."""
    targets = worker.shm.find_cancel_target(pid, key)
    if targets is None:
        log.log("LOG", f"cancel request for unknown backend key: pid {pid}")
        return False
    backends = worker.cfg.backends
    for node, bpid, bkey in targets:
        b = backends[node]
        try:
            s = open_socket(b.hostname, b.port, 5.0)
        except OSError as e:
            log.log("LOG", f"failed to forward cancel request to node {node}: {e}")
            continue
        try:
            s.sendall(m.cancel_request(bpid, bkey))
            s.settimeout(5.0)
            s.recv(1)         # the server closes the connection when done
        except OSError:
            pass
        finally:
            s.close()
    return True
