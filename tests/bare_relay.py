"""The benchmark's yardstick: the barest Python prefork relay (no routing, no protocol state).

`python -m tests.bare_relay LISTEN_PORT BACKEND_PORT [WORKERS]` forks WORKERS (default 32)
processes that accept on one socket; each relays one client at a time to BACKEND_PORT with
TCP_NODELAY, one recv and one send per chunk each way, waiting in select(). DESIGN.md's
"bare Python prefork relay": what a Python design costs per query on this machine before it
does anything; `make bench` runs it beside our pgpool and pgpool-II. Not part of the product.
"""

import os
import select
import signal
import socket
import sys


def _serve(listener: socket.socket, backend_port: int) -> None:
    while True:
        client, _ = listener.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            backend = socket.create_connection(("127.0.0.1", backend_port))
        except OSError:
            client.close()
            continue
        backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = {client: backend, backend: client}
        try:
            while True:
                ready, _, _ = select.select((client, backend), (), ())
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        raise EOFError
                    peer[s].sendall(data)
        except (EOFError, OSError):
            pass
        finally:
            client.close()
            backend.close()


def prefork(listen_port: int, workers: int, serve) -> None:
    """Listen on 127.0.0.1:`listen_port`, fork `workers` processes running `serve(listener)`,
    and wait until SIGINT or SIGTERM, which kills them (shared by tests/bare_tls.py)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", listen_port))
    listener.listen(128)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            serve(listener)
            os._exit(0)
        children.append(pid)

    def stop(_signum, _frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while True:
        signal.pause()


def main() -> int:
    listen_port, backend_port = int(sys.argv[1]), int(sys.argv[2])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    prefork(listen_port, workers, lambda listener: _serve(listener, backend_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
