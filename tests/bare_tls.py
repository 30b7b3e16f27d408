"""The connection-setup yardstick: the barest Python prefork TLS proxy (no auth, no routing).

`python -m tests.bare_tls LISTEN_PORT BACKEND_PORT CERT KEY CA [WORKERS]` forks WORKERS (default
32) processes that accept on one socket.  Each opens one TLS connection to PostgreSQL (user
postgres, database bench, trusted) and keeps it.  For each client it answers the SSLRequest 'S'
and does the TLS handshake: ssl_ecdh_curve prime256v1, with client certificates asked for when
CA is given, as pgpool does with ssl_ca_cert.  It then reads the startup packet and replays the
kept connection's startup reply.  Each query is relayed until ReadyForQuery; at Terminate it
runs DISCARD ALL and sends close_notify.

This is what a `pgbench -S -C` connection costs a Python design on this machine before it
checks, logs or counts anything.  `python -m tests.bench_auth_tls` runs it beside our pgpool and
pgpool-II in its TLS scenarios.  Not part of the product.
"""

import socket
import ssl
import struct
import sys

from pgpool.proxy import tls
from tests.bare_relay import prefork

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
DISCARD_ALL = b"Q\0\0\0\x10DISCARD ALL\0"


def _until_ready(sock) -> bytes:
    """Read whole messages until the last one read is ReadyForQuery."""
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError
        buf += chunk
        pos = 0
        while len(buf) - pos >= 5:
            end = pos + 1 + struct.unpack_from("!i", buf, pos + 1)[0]
            if end > len(buf):
                break
            if buf[pos:pos + 1] == b"Z" and end == len(buf):
                return buf
            pos = end


def _backend(port: int) -> tuple[tls.TlsSocket, bytes]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    sock = tls.negotiate_backend(socket.create_connection(("127.0.0.1", port)), context)
    body = struct.pack("!i", 196608) + b"user\0postgres\0database\0bench\0\0"
    sock.sendall(struct.pack("!i", len(body) + 4) + body)
    return sock, _until_ready(sock)


def _serve(listener: socket.socket, context: ssl.SSLContext, backend_port: int) -> None:
    backend, hello = _backend(backend_port)
    while True:
        plain, _ = listener.accept()
        try:
            plain.recv(8)                                   # SSLRequest
            plain.sendall(b"S")
            client = tls.accept(plain, tls.FrontendTls(context, None, False))
            client.recv(8192)                               # the startup packet
            client.sendall(hello)
            while True:
                data = client.recv(65536)
                if not data or data[:1] == b"X":
                    break
                backend.sendall(data)
                client.sendall(_until_ready(backend))
            backend.sendall(DISCARD_ALL)
            _until_ready(backend)
            client.close_notify()
        except (OSError, EOFError):
            pass
        finally:
            plain.close()


def main() -> int:
    listen_port, backend_port = int(sys.argv[1]), int(sys.argv[2])
    cert, key, ca = sys.argv[3:6]
    workers = int(sys.argv[6]) if len(sys.argv) > 6 else 32
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    context.load_cert_chain(cert, key)
    context.set_ecdh_curve("prime256v1")
    if ca:
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    prefork(listen_port, workers, lambda listener: _serve(listener, context, backend_port))
    return 0

if __name__ == "__main__":
    sys.exit(main())
