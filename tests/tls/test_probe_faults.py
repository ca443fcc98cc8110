"""The probe against a misbehaving server (tests/harness/fakesmtp.py): every fault ends
in time with a result that names it, and the client stays polite."""

from __future__ import annotations

import socket
import time

import pytest

from hook.tls.starttls import Extra, Failure, Target, per_address, probe, probe_deep, probe_many
from tests.harness.fakesmtp import NAME, Behaviour, fake_smtp


def test_normal_server_gives_chain_protocol_and_starttls() -> None:
    """A well-behaved STARTTLS server: chain, TLS 1.3, STARTTLS seen, EHLO then STARTTLS
    then QUIT, one command at a time (never pipelined)."""
    with fake_smtp() as srv:
        res = probe(Target(srv.host, srv.port), timeout=3)
    assert res.handshake is not None, res.detail
    assert res.handshake.starttls_advertised
    assert res.handshake.protocol == "TLSv1.3"
    assert len(res.handshake.chain) >= 1
    assert [c.split()[0] for c in srv.commands] == ["EHLO", "STARTTLS", "QUIT"]


def test_sni_is_the_servername_or_host_name_never_an_address() -> None:
    """SNI carries ``servername`` when given, and nothing when probing by IP address."""
    with fake_smtp() as srv:
        assert probe(Target(srv.host, srv.port, servername=NAME), timeout=3).ok
        assert probe(Target(srv.host, srv.port), timeout=3).ok
    assert srv.snis == [NAME, None]


def test_ipv6_loopback() -> None:
    """The probe speaks IPv6 (``::1``) like IPv4; the label brackets the address."""
    with fake_smtp(host="::1") as srv:
        res = probe(Target("::1", srv.port), timeout=3)
    assert res.ok, res.detail
    assert res.target.label == f"[::1]:{srv.port}"


def test_slow_multiline_greeting_is_read_in_full_before_ehlo() -> None:
    """A greeting in three lines 0.3 s apart (like postscreen's): the client waits for the
    last line and only then says EHLO (speaking early gets a postscreen client dropped)."""
    with fake_smtp(Behaviour.SLOW_MULTILINE) as srv:
        res = probe(Target(srv.host, srv.port), timeout=5)
    assert res.ok, res.detail
    assert res.seconds >= 0.6
    assert srv.commands[0].startswith("EHLO")


@pytest.mark.parametrize("behaviour", [Behaviour.TARPIT, Behaviour.DRIP])
def test_tarpit_ends_within_the_timeout(behaviour: Behaviour) -> None:
    """A server that never greets (or drips one byte at a time) ends as ``timeout`` within
    the overall deadline, not after each read's timeout."""
    with fake_smtp(behaviour) as srv:
        res = probe(Target(srv.host, srv.port), timeout=1.0)
    assert res.failure is Failure.TIMEOUT, res
    assert 0.9 <= res.seconds < 1.5


def test_read_timeout_bounds_one_silent_read() -> None:
    """``read_timeout`` ends a silent greeting wait before the overall deadline."""
    with fake_smtp(Behaviour.TARPIT) as srv:
        res = probe(Target(srv.host, srv.port), timeout=5, read_timeout=0.3)
    assert res.failure is Failure.TIMEOUT
    assert res.seconds < 1.0


def test_garbage_greeting_is_a_protocol_error() -> None:
    """Binary junk instead of ``220`` is ``protocol_error`` quickly, no EHLO sent."""
    with fake_smtp(Behaviour.GARBAGE) as srv:
        res = probe(Target(srv.host, srv.port), timeout=3)
    assert res.failure is Failure.PROTOCOL_ERROR, res
    assert res.seconds < 1.0
    assert srv.commands == []


def test_ten_megabyte_banner_is_cut_off() -> None:
    """A 10 MB multi-line greeting is refused after 64 KB: ``protocol_error`` well
    within the timeout, without buffering the flood."""
    with fake_smtp(Behaviour.HUGE_BANNER) as srv:
        res = probe(Target(srv.host, srv.port), timeout=5)
    assert res.failure is Failure.PROTOCOL_ERROR, res
    assert "longer than" in res.detail
    assert res.seconds < 1.0


def test_421_greeting_is_busy() -> None:
    """``421`` in the greeting means busy (retry later), not broken."""
    with fake_smtp(Behaviour.BUSY_421) as srv:
        res = probe(Target(srv.host, srv.port), timeout=3)
    assert res.failure is Failure.BUSY
    assert "421" in res.detail


def test_454_to_starttls_is_starttls_refused_and_client_quits() -> None:
    """``454`` to STARTTLS (Postfix with a broken key pair) is ``starttls_refused``; the
    client then says QUIT instead of dropping the line."""
    with fake_smtp(Behaviour.REFUSE_454) as srv:
        res = probe(Target(srv.host, srv.port), timeout=3)
    assert res.failure is Failure.STARTTLS_REFUSED
    assert "454" in res.detail
    assert [c.split()[0] for c in srv.commands] == ["EHLO", "STARTTLS", "QUIT"]


def test_no_starttls_in_ehlo() -> None:
    """An EHLO reply without STARTTLS is ``no_starttls`` (and STARTTLS is never sent)."""
    with fake_smtp(Behaviour.NO_STARTTLS) as srv:
        res = probe(Target(srv.host, srv.port), timeout=3)
    assert res.failure is Failure.NO_STARTTLS
    assert [c.split()[0] for c in srv.commands] == ["EHLO", "QUIT"]


def test_plaintext_on_implicit_port_says_so() -> None:
    """An SMTP greeting where TLS was expected is ``wrong_tls_mode``, at once, saying
    "try --starttls"."""
    with fake_smtp(Behaviour.PLAINTEXT, implicit=True) as srv:
        res = probe(Target(srv.host, srv.port, implicit_tls=True), timeout=3)
    assert res.failure is Failure.WRONG_MODE, res
    assert "plaintext" in res.detail and "try --starttls" in res.detail
    assert res.seconds < 1.0


@pytest.mark.parametrize("implicit", [False, True])
def test_reset_mid_handshake(implicit: bool) -> None:
    """A TCP reset during the TLS handshake is ``handshake_failed``, at once."""
    with fake_smtp(Behaviour.RESET_HANDSHAKE, implicit=implicit) as srv:
        res = probe(Target(srv.host, srv.port, implicit_tls=implicit), timeout=3)
    assert res.failure is Failure.HANDSHAKE_FAILED, res
    assert res.seconds < 1.0


def test_injected_plaintext_after_starttls_is_refused() -> None:
    """Bytes after the ``220`` to STARTTLS (the CVE-2011-0411 pattern) are a protocol
    error: the client does not start TLS on a poisoned stream."""
    with fake_smtp(Behaviour.INJECT) as srv:
        res = probe(Target(srv.host, srv.port), timeout=3)
    assert res.failure is Failure.PROTOCOL_ERROR
    assert "injection" in res.detail


def test_implicit_tls_reads_greeting_inside_tls() -> None:
    """Implicit TLS (465): handshake first, then the greeting inside TLS, then QUIT."""
    with fake_smtp(implicit=True) as srv:
        res = probe(Target(srv.host, srv.port, implicit_tls=True), timeout=3)
    assert res.ok, res.detail
    assert srv.commands == ["QUIT"]


def test_refused_connection_is_unreachable() -> None:
    """Nothing listening: ``unreachable``, at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = probe(Target("127.0.0.1", port), timeout=3)
    assert res.failure is Failure.UNREACHABLE
    assert res.seconds < 0.5


def test_deep_checks_against_a_modern_server_refuse_everything() -> None:
    """A server on OpenSSL defaults refuses the anonymous and TLS 1.0/1.1 handshakes:
    ``probe_deep`` reports them as refused, not accepted or inconclusive."""
    with fake_smtp() as srv:
        deep = probe_deep(Target(srv.host, srv.port), timeout=3)
    assert deep.accepted == ()
    assert set(deep.refused) == set(Extra)
    assert deep.anonymous_cipher is None


def test_probe_many_bounds_connections_per_host() -> None:
    """Twelve probes of one tarpit host with ``per_host=3``: they run three at a time, so
    the batch takes four timeouts; the results come back in order."""
    with fake_smtp(Behaviour.TARPIT) as srv:
        start = time.monotonic()
        results = probe_many([Target(srv.host, srv.port)] * 12, timeout=0.3, per_host=3)
        took = time.monotonic() - start
    assert [r.failure for r in results] == [Failure.TIMEOUT] * 12
    assert 1.1 <= took < 2.5
    assert srv.connections == 12


def test_handshake_timeout_bounds_a_stalled_handshake() -> None:
    """A server that says 220 to STARTTLS and then never answers the ClientHello ends at
    ``handshake_timeout``, long before the overall deadline."""
    with fake_smtp(Behaviour.STALL_HANDSHAKE) as srv:
        res = probe(Target(srv.host, srv.port), timeout=5, handshake_timeout=0.3)
    assert res.failure is Failure.TIMEOUT, res
    assert res.seconds < 1.0


def test_a_dual_stack_name_is_probed_on_every_address() -> None:
    """A name with an A and an AAAA record becomes one target per address, each sending
    the name as SNI; here the IPv6 server refuses STARTTLS and only that one fails."""
    with fake_smtp() as v4, fake_smtp(Behaviour.REFUSE_454, host="::1", port=v4.port) as v6:
        def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
            assert host == "mx.example.test"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))]

        targets = per_address(Target("mx.example.test", v4.port), resolve)
        results = probe_many(targets, timeout=3)
    assert [t.host for t in targets] == ["127.0.0.1", "::1"]
    assert {t.servername for t in targets} == {"mx.example.test"}
    assert [r.failure for r in results] == [None, Failure.STARTTLS_REFUSED]
    assert v4.snis == ["mx.example.test"]
    assert [c.split()[0] for c in v6.commands] == ["EHLO", "STARTTLS", "QUIT"]
    assert per_address(Target("127.0.0.1", 25), resolve) == [Target("127.0.0.1", 25)]
