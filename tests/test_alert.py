"""Alerts: the mail handed to sendmail and the JSON webhook, and failures that are
returned (never raised)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from hook.alert import Alert, send
from hook.config import AlertConfig

ALERT = Alert(summary="stale: service 127.0.0.1:25/starttls", problem="stale",
              action="reload Postfix (postfix reload) or run the deploy hook",
              lineage="mx.example.org", service="127.0.0.1:25/starttls",
              detail="serves 1234, the certificate on disk is 5678", host="mx1.example.org")


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    received: list[dict[str, object]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204 if self.path == "/ok" else 500)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_mail_goes_to_sendmail_with_every_field(tmp_path: Path) -> None:
    """The message piped to the sendmail command names host, lineage, service, problem
    and what to do, with -f FROM -- TO and filterable X- headers."""
    capture = tmp_path / "sendmail.sh"
    capture.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat > {tmp_path}/msg\n')
    capture.chmod(0o755)
    cfg = AlertConfig(mail_to=("admin@example.org",), mail_from="certwatch@mx1.example.org",
                      sendmail_command=(str(capture), "-i"))
    (d,) = send(ALERT, cfg)
    assert d.ok and d.channel == "mail"
    assert (tmp_path / "argv").read_text().split() == [
        "-i", "-f", "certwatch@mx1.example.org", "--", "admin@example.org"]
    msg = message_from_bytes((tmp_path / "msg").read_bytes(), policy=policy.default)
    assert msg["Subject"] == ("[postfix-certwatch] CRITICAL mx1.example.org: stale: service "
                              "127.0.0.1:25/starttls")
    assert msg["X-Postfix-Certwatch-Problem"] == "stale"
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_content()
    for needle in ("host:      mx1.example.org", "lineage:   mx.example.org",
                   "service:   127.0.0.1:25/starttls", "problem:   stale",
                   "What to do: reload Postfix"):
        assert needle in body


def test_webhook_posts_json_and_reports_http_errors(
        webhook: tuple[str, list[dict[str, object]]]) -> None:
    """The webhook gets every Alert field plus subject/text; a 500 is a failed delivery,
    not an exception."""
    url, received = webhook
    (ok,) = send(ALERT, AlertConfig(webhook_url=f"{url}/ok"))
    assert ok.ok and ok.detail == "HTTP 204"
    doc = received[0]
    assert doc["source"] == "postfix-certwatch" and doc["lineage"] == "mx.example.org"
    assert doc["problem"] == "stale" and str(doc["text"]).startswith("[postfix-certwatch]")
    (bad,) = send(ALERT, AlertConfig(webhook_url=f"{url}/fail"))
    assert not bad.ok and "500" in bad.detail


def test_failures_are_returned_not_raised(tmp_path: Path) -> None:
    """A missing or failing sendmail and an unreachable webhook come back as failed
    deliveries; with nothing configured nothing is sent."""
    assert send(ALERT, AlertConfig()) == ()
    missing = AlertConfig(mail_to=("a@b",), sendmail_command=(str(tmp_path / "nope"),))
    (d,) = send(ALERT, missing)
    assert not d.ok and "nope" in d.detail
    failing = AlertConfig(mail_to=("a@b",), sendmail_command=("/bin/sh", "-c", "echo no >&2; exit 75"))
    (d,) = send(ALERT, failing)
    assert not d.ok and "exited 75" in d.detail and "no" in d.detail
    (w,) = send(ALERT, AlertConfig(webhook_url="http://127.0.0.1:9/"), timeout=2)
    assert not w.ok
