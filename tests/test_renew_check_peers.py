"""``renew-check peers`` and the "seen by peers" section, in text (Nagios) and JSON, from
the real log of the private Postfix and TLSRPT report files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from daemon.renew_check.cli import main
from tests.harness.peerbed import running_peerbed
from tests.test_tlsrpt import mail, report

pytestmark = pytest.mark.stack


def test_peers_command_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Failed and anonymous-cipher inbound sessions and an untrusted outbound one appear in
    the last-24-h summary with seed 000's fixes; a report file and a mailed report are read;
    the Nagios first line has status and perfdata; --json has the same facts."""
    rpt = tmp_path / "r.json.gz"
    rpt.write_bytes(gzip.compress(json.dumps(report("file-1", {"certificate-expired": 2},
                                                   mx="mx.example.test")).encode()))
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.x.host").write_bytes(mail(report("mail-1", {}, mx="mx.example.test")))
    with running_peerbed() as bed:
        bed.inbound_ok()
        bed.inbound_broken()
        bed.inbound_anonymous()
        bed.send_out("may")
        bed.wait_for("Untrusted TLS connection established to")
        bed.wait_for("SSL_accept error from")
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[postfix]\nconfig_directory = "{bed.ours.config_dir}"\n'
                       f'[dns]\ndane = "off"\nmta_sts = false\n'
                       f'[peers]\ntlsrpt_mailbox = "{maildir}"\nignore_clients = []\n')
        rc = main(["--config", str(cfg), "peers", str(rpt)])
        text = capsys.readouterr().out
        first = text.splitlines()[0]
        assert rc == 1 and first.startswith("WARNING: seen by peers: 24h in ")
        # the harness's port check on the implicit-TLS port fails a handshake too
        assert " failed from 1 client(s))" in first and "1 untrusted" in first
        assert "2 report(s), 2 failed session(s) reported" in first
        assert "| peers_in_tls=" in first and "tlsrpt_failed=2" in first
        assert "postconf -e 'smtpd_tls_exclude_ciphers = aNULL'" in text
        assert "postconf -e 'smtp_tls_CAfile = " in text
        assert "tlsrpt_failure: TLSRPT from Sender Inc." in text
        assert "report Sender Inc. 2026-12-01 mail-1: 100 ok, 0 failed" in text
        assert main(["--config", str(cfg), "--json", "peers", str(rpt)]) == 1
        doc = json.loads(capsys.readouterr().out)
    peers = doc["peers"]
    assert doc["command"] == "peers" and peers["source"] == str(bed.maillog)
    assert peers["log"]["failed_inbound_sessions"] >= 1
    assert peers["log"]["anonymous_cipher"] == {"inbound": 1, "outbound": 0}
    assert {r["report_id"] for r in peers["reports"]} == {"file-1", "mail-1"}
    assert {p["code"] for p in peers["problems"]} == {"peer_anonymous_cipher", "peer_untrusted",
                                                      "tlsrpt_failure"}
