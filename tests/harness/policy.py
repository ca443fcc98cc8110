"""An MTA-STS policy server on loopback: HTTPS with a trustme certificate for
``mta-sts.example.test`` and ``mta-sts.lists.example.test``, answering what a test sets
per (Host header, path). Used by tests/renew_check/test_mtasts.py and the renew-check DNS tests."""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme

from daemon.renew_check import mtasts
from tests.harness.stack import LO

NAMES = ("mta-sts.example.test", "mta-sts.lists.example.test")


@dataclass
class PolicyServer:
    """HTTPS on 127.0.0.1: (Host header, path) -> (status, content type, body, headers)."""

    ca: trustme.CA
    port: int = 0
    responses: dict[tuple[str, str], tuple[int, str, bytes, dict[str, str]]] = field(default_factory=dict)

    @property
    def connect(self) -> str:
        """The ``dns.mta_sts_connect`` value that reaches this server."""
        return f"{LO}:{self.port}"

    def serve(self, domain: str, body: str, status: int = 200, ctype: str = "text/plain",
              headers: dict[str, str] | None = None) -> None:
        self.responses[(f"mta-sts.{domain}", mtasts.WELL_KNOWN)] = (status, ctype, body.encode(),
                                                                    headers or {})

    def write_ca(self, path: Path) -> Path:
        """The test CA as PEM (for ``dns.mta_sts_cafile``)."""
        self.ca.cert_pem.write_to_path(str(path))
        return path


@contextlib.contextmanager
def running_policy_server() -> Iterator[PolicyServer]:
    """Start the server in a thread; shut it down afterwards."""
    ca = trustme.CA(organization_name="certwatch test MTA-STS CA")
    cert = ca.issue_cert(*NAMES)
    state = PolicyServer(ca)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host = (self.headers.get("Host") or "").split(":")[0]
            status, ctype, body, headers = state.responses.get(
                (host, self.path), (404, "text/plain", b"no policy here\n", {}))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the tests read the results, not an access log

    server = ThreadingHTTPServer((LO, 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
