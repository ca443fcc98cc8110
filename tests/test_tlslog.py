"""The TLS log line parser (hook.peers.tlslog): real lines of the private Postfix
(tests/fixtures/maillog-tls.txt, written by tests/harness/peerbed.py) and edge cases."""

from __future__ import annotations

import time
from pathlib import Path

from hook.peers.tlslog import Direction, Failure, Level, LineParser, parse_lines, parse_message

FIXTURE = Path(__file__).parent / "fixtures" / "maillog-tls.txt"
NOW = time.mktime((2026, 12, 2, 12, 0, 0, 0, 0, -1))


def test_real_lines_become_typed_events() -> None:
    """Every TLS line Postfix 3.7 wrote in the test bed is recognised, with peer, protocol
    and cipher; the anonymous (aNULL) cipher is told apart from a client without a cert."""
    events = parse_lines(FIXTURE.read_text().splitlines(), now=NOW)
    kinds = {(e.direction, e.level, e.failure) for e in events}
    assert (Direction.INBOUND, Level.ANONYMOUS, None) in kinds
    assert (Direction.INBOUND, None, Failure.HANDSHAKE) in kinds
    assert (Direction.INBOUND, None, Failure.TLS_LIBRARY) in kinds
    assert (Direction.INBOUND, None, Failure.LOST_AFTER_STARTTLS) in kinds
    assert (Direction.OUTBOUND, Level.UNTRUSTED, None) in kinds
    assert (Direction.OUTBOUND, None, Failure.VERIFICATION_FAILED) in kinds
    assert (Direction.OUTBOUND, None, Failure.NOT_VERIFIED) in kinds
    anon = [e for e in events if e.level is Level.ANONYMOUS]
    assert {e.anonymous_cipher for e in anon} == {True, False}
    adh = next(e for e in anon if e.anonymous_cipher)
    assert (adh.protocol, adh.cipher, adh.address) == ("TLSv1.2", "ADH-AES256-GCM-SHA384", "127.0.0.1")
    out = next(e for e in events if e.level is Level.UNTRUSTED)
    assert (out.host, out.port, out.process) == ("127.0.0.1", 25, "smtp")
    assert all(time.localtime(e.time)[:3] == (2026, 12, 2) for e in events)


def test_no_mail_address_is_kept() -> None:
    """A status= line yields the relay and the TLS reason only."""
    line = ("Oct  3 19:41:13 c7-01 postfix/smtp[18280]: 0E6B42E31: to=<vagrant@c7-02.home>, "
            "relay=c7-02.home[192.168.0.153]:25, delay=0.02, delays=0.01/0.01/0/0, dsn=4.7.5, "
            "status=deferred (Server certificate not trusted)")
    e = LineParser(NOW).parse(line)
    assert e is not None and e.failure is Failure.NOT_TRUSTED
    assert (e.host, e.address, e.port) == ("c7-02.home", "192.168.0.153", 25)
    assert "@" not in repr(e)


def test_seed_lines_and_other_failures() -> None:
    """The lines of the admin's write-up (seed 000, CentOS 7) and the rarer failures."""
    p = LineParser(NOW)
    e = p.parse("Oct  4 01:04:26 c7-01 postfix/smtp[8559]: E9A724C80EA: to=<vagrant@c7-02.home>, "
                "relay=c7-02.home[192.168.0.153]:25, delay=0, dsn=4.7.4, status=deferred (TLS is "
                "required, but was not offered by host c7-02.home[192.168.0.153])")
    assert e is not None and e.failure is Failure.TLS_NOT_OFFERED and e.host == "c7-02.home"
    e = p.parse("Oct  3 20:10:47 c7-02 postfix/smtp[7123]: Verified TLS connection established to "
                "mail.an-net.tokyo[192.168.0.152]:25: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 "
                "(256/256 bits)")
    assert e is not None and e.level is Level.VERIFIED and e.host == "mail.an-net.tokyo"
    assert time.localtime(e.time).tm_year == 2026  # October: this year, not the future
    e = p.parse("Dec  1 10:00:00 mx postfix/smtp[1]: ABC: to=<a@b.example>, relay=mx.b.example"
                "[2001:db8::25]:25, delay=1, dsn=4.7.5, status=deferred (Cannot start TLS: "
                "handshake failure)")
    assert e is not None and e.failure is Failure.CANNOT_START_TLS
    assert (e.address, e.reason) == ("2001:db8::25", "handshake failure")
    e = p.parse("2026-12-02T03:17:40.123456+00:00 mx postfix-out/smtp[9]: SSL_connect error to "
                "mx.c.example[192.0.2.7]:25: lost connection")
    assert e is not None and e.failure is Failure.HANDSHAKE and e.direction is Direction.OUTBOUND
    assert e.time == 1796181460.123456
    e = p.parse("Dec  2 03:00:00 mx postfix/tlsproxy[5]: Untrusted TLS connection established from "
                "c.example[192.0.2.9]: TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)")
    assert e is not None and e.direction is Direction.INBOUND and e.level is Level.UNTRUSTED


def test_not_ours_and_garbage() -> None:
    """Lines of other programs, non-TLS Postfix lines and garbage give nothing, never raise."""
    p = LineParser(NOW)
    for line in ("", "garbage", "Dec  2 03:00:00 mx sshd[1]: TLS connection established from x[1.2.3.4]",
                 "Dec  2 03:00:00 mx postfix/qmgr[1]: ABC: removed",
                 "Dec  2 03:00:00 mx postfix/smtpd[1]: connect from unknown[1.2.3.4]",
                 "Dec  2 03:00:00 mx postfix/smtpd[1]: Trusted TLS connection established from",
                 "Feb 31 99:99:99 mx postfix/smtpd[1]: SSL_accept error from x[1.2.3.4]: -1",
                 "\x00" * 1000 + "TLS"):
        e = p.parse(line)
        assert e is None or e.failure is Failure.HANDSHAKE
    assert parse_message("TLS library problem: x", "postfix/pickup", 1, 0.0) is None


def test_own_probes_are_not_peers() -> None:
    """By default ([peers] ignore_clients) loopback clients, i.e. renew-check's deep probe
    offering an aNULL cipher on purpose, are not counted, so they raise no finding."""
    from hook.config import PeersConfig  # noqa: PLC0415
    from hook.peers import tlsdiag  # noqa: PLC0415

    events = parse_lines(FIXTURE.read_text().splitlines(), now=NOW)
    mine = tlsdiag.tally(events, PeersConfig().ignore_clients)
    assert mine.anonymous_in_count == 0 and mine.failed_sessions == 0
    assert mine.untrusted_out_count > 0  # outbound sessions are never ignored
    every = tlsdiag.tally(events)
    assert every.anonymous_in_count == 1 and every.failed_sessions == 3


def test_one_smtpd_process_failing_two_sessions_counts_two() -> None:
    """An smtpd process serves one client after another: Debian's Postfix on a booted host
    logged a client that hung up mid-handshake and an aNULL-only client within a
    millisecond, both by smtpd[2324]. Two failed sessions, each logging ``SSL_accept
    error`` and ``lost connection after STARTTLS``; the lost connection alone (a client
    gone after STARTTLS) is a session of its own."""
    from hook.peers import tlsdiag  # noqa: PLC0415

    h = "2026-12-02T03:43:{} mail postfix/smtpd[2324]: "
    lost = "lost connection after STARTTLS from unknown[127.0.0.1]"
    log = [h.format("11.850708") + "SSL_accept error from unknown[127.0.0.1]: lost connection",
           h.format("11.850768") + lost,
           h.format("11.851568") + "SSL_accept error from unknown[127.0.0.1]: -1",
           h.format("11.851616") + "warning: TLS library problem: error:0A0000C1:SSL routines::"
                                   "no shared cipher:../ssl/statem/statem_srvr.c:2226:",
           h.format("11.851642") + lost,
           h.format("12.000000") + lost]
    t = tlsdiag.tally(parse_lines(log, now=NOW))
    assert t.failed_sessions == 3
    assert t.failures[("inbound", "handshake")] == 2


def test_trusted_then_untrusted_advice_inspects_the_chain() -> None:
    """A server seen Verified, then Untrusted (a CA is configured): the advice is to look at
    its chain with posttls-finger and at our CA bundle, not to exclude aNULL (an aNULL
    session logs 'Anonymous', not 'Untrusted')."""
    from hook.peers import tlsdiag  # noqa: PLC0415

    h = "2026-12-02T03:43:1{} mail postfix/smtp[77]: "
    log = [h.format(0) + "Verified TLS connection established to mx.peer.example[192.0.2.7]:25: "
                         "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
           h.format(1) + "Untrusted TLS connection established to mx.peer.example[192.0.2.7]:25: "
                         "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"]
    t = tlsdiag.tally(parse_lines(log, now=NOW))
    assert t.untrusted_out_count == 1 and t.verified_out == {"mx.peer.example"}
    (p,) = tlsdiag.findings(t, {"smtp_tls_CApath": "/etc/ssl/certs"},
                            bundle=Path("/etc/ssl/certs/ca-certificates.crt"))
    assert "aNULL" not in p.fix and "exclude_ciphers" not in p.fix
    assert "posttls-finger -c -l verify -P /etc/ssl/certs 'mx.peer.example'" in p.fix
    assert "smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt" in p.fix
    assert "(/etc/ssl/certs)" in p.fix
