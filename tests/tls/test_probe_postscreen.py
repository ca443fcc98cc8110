"""The probe through postscreen, as a real MX runs port 25: it waits for postscreen's
multi-line greeting (a client that speaks first is a PREGREET spambot) and does
STARTTLS through postscreen's tlsproxy."""

from __future__ import annotations

import socket
import time

from hook.certs.validate import load_trust
from hook.tls.judgement import judge
from hook.tls.starttls import Target, probe
from hook.verdict import Status
from tests.harness.stack import DOMAIN, LO, Stack, wait_until


def test_probe_passes_postscreen_pregreet_test(stack: Stack) -> None:
    """With ``postscreen_greet_action = enforce`` and a 1 s greet wait, a client that
    talks early is logged as PREGREET (the control); our probe waits for the final
    ``220``, is never flagged, and gets the certificate over STARTTLS (tlsproxy)."""
    pf = stack.postfix
    pf.postscreen = True
    pf.set_main(postscreen_access_list="", postscreen_greet_action="enforce",
                postscreen_greet_wait="1s", postscreen_dnsbl_sites="")
    pf.write_config()
    pf.reload()
    time.sleep(0.5)

    with socket.create_connection((LO, pf.smtp_port), timeout=5) as rude:
        rude.sendall(b"EHLO spambot.example\r\n")  # before the greeting is complete
        time.sleep(1.5)
    wait_until("postscreen PREGREET log line", lambda: "PREGREET" in pf.log_tail(50), 5)
    marks = pf.log_tail(200).count("PREGREET")

    res = probe(Target(LO, pf.smtp_port, servername=DOMAIN), timeout=10)
    assert res.handshake is not None, res.detail
    assert res.seconds >= 1.0  # it waited for postscreen's greet wait
    verdict = judge(res, trust=load_trust(stack.pebble.root, system=False), names=[DOMAIN])
    assert verdict.status is Status.OK, verdict.problems
    time.sleep(0.2)
    log = pf.log_tail(200)
    assert log.count("PREGREET") == marks, log
    assert "postscreen" in log and "PASS NEW" in log
