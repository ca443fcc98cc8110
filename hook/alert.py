"""Send an alert: a mail through the local sendmail (Postfix is right there) and/or a
JSON POST to a webhook. Used by the deploy hook on failure and by the daemon.

Sending never raises: a failed delivery is returned (and logged by the caller), because
an alert that cannot be sent must not turn a rollback into a crash.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from hook.config import AlertConfig


@dataclass(frozen=True)
class Alert:
    """What happened, where, and what to do: every alert names all of these."""

    summary: str
    problem: str
    """A problem code (hook.verdict.Code value) or a deploy outcome."""
    action: str
    """What the admin should do."""
    lineage: str = ""
    service: str = ""
    detail: str = ""
    host: str = field(default_factory=socket.gethostname)
    """The mail server's name: the callers pass :func:`hook.postfix.host_name` (Postfix's
    ``myhostname``); the default is the machine's own name, never a resolver lookup."""
    severity: str = "critical"

    def subject(self) -> str:
        return f"[postfix-certwatch] {self.severity.upper()} {self.host}: {self.summary}"

    def body(self) -> str:
        rows = [("host", self.host), ("lineage", self.lineage), ("service", self.service),
                ("problem", self.problem), ("severity", self.severity)]
        text = "".join(f"{k + ':':10} {v}\n" for k, v in rows if v)
        return f"{text}\n{self.detail}\n\nWhat to do: {self.action}\n"


@dataclass(frozen=True)
class Delivery:
    channel: str
    ok: bool
    detail: str = ""


def send(alert: Alert, config: AlertConfig, timeout: float = 30.0) -> tuple[Delivery, ...]:
    out = []
    if config.mail_to:
        out.append(_mail(alert, config, timeout))
    if config.webhook_url:
        out.append(_webhook(alert, config, timeout))
    return tuple(out)


def _mail(alert: Alert, config: AlertConfig, timeout: float) -> Delivery:
    sender = config.mail_from or f"root@{alert.host}"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(config.mail_to)
    msg["Subject"] = alert.subject()
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=alert.host)
    msg["Auto-Submitted"] = "auto-generated"
    # for mail filters: sort or page on these without parsing the subject
    msg["X-Postfix-Certwatch-Severity"] = alert.severity
    msg["X-Postfix-Certwatch-Problem"] = alert.problem
    body = alert.body()
    # Plain 8bit text, not quoted-printable: admins read these with `mail` and grep them.
    fits = max((len(line) for line in body.splitlines()), default=0) <= 998
    msg.set_content(body, cte="8bit" if fits else None)
    argv = [*config.sendmail_command, "-f", sender, "--", *config.mail_to]
    try:
        proc = subprocess.run(argv, input=msg.as_bytes(), capture_output=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Delivery("mail", False, f"{argv[0]}: {exc}")
    if proc.returncode != 0:
        return Delivery("mail", False, f"{' '.join(argv)} exited {proc.returncode}: "
                        f"{proc.stderr.decode(errors='replace').strip()}")
    return Delivery("mail", True, f"to {', '.join(config.mail_to)}")


def _webhook(alert: Alert, config: AlertConfig, timeout: float) -> Delivery:
    # every Alert field, plus "subject" and "text" (the mail's subject and body), which
    # chat webhooks (Slack, Mattermost, ...) display as they are
    body = json.dumps({"source": "postfix-certwatch", **asdict(alert), "subject": alert.subject(),
                       "text": f"{alert.subject()}\n{alert.body()}"}).encode()
    req = urllib.request.Request(config.webhook_url, data=body, method="POST",  # noqa: S310
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            status = resp.status
    except OSError as exc:
        return Delivery("webhook", False, f"{config.webhook_url}: {exc}")
    return Delivery("webhook", 200 <= status < 300, f"HTTP {status}")
