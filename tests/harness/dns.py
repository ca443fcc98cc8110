"""A DNSSEC test stack on loopback: Knot (authoritative, signing) + Unbound (validating).

Everything binds to 127.0.0.1 on free ports picked at start, under one temporary
directory; nothing touches /etc/knot, /etc/unbound or port 53, and only the two
processes this module starts are ever stopped (by PID). Zones (all under ``test.``):

* ``example.test.``  signed online by knotd (ECDSA P-256 CSK, NSEC); Unbound trusts its DS,
  so answers are validated (AD). Records can be changed at runtime (:meth:`DnsStack.set_rrset`):
  knotd re-signs on commit, then Unbound's cache for the zone is flushed.
* ``insecure.test.`` not signed; Unbound has it as ``domain-insecure`` (answers without AD).
* ``bogus.test.``    signed by knotd, but Unbound's trust anchor for it is deliberately wrong
  (one digest nibble flipped), so every answer under it fails validation: SERVFAIL.
* ``tampered.test.`` signed offline (``kzonesign``), then its ``_25._tcp.mail`` TLSA data
  changed behind the signature; served as-is. That RRset is bogus, the rest validates.

Every zone has ``@ MX 10 mail`` and ``mail A 127.0.0.1``, plus the zone's entry in
:data:`ZONE_EXTRA`. A stub zone for ``.`` points at Knot too, so no query ever leaves
loopback (names outside the four zones get REFUSED from Knot, SERVFAIL from Unbound).

Facts this harness works around (measured on Debian 12, knot 3.2.6, unbound 1.17.1):

* Unbound answers NXDOMAIN for anything under ``test.`` unless ``local-zone: "test."
  nodefault``, and never asks 127.0.0.1 unless ``do-not-query-localhost: no``.
* A UDP query sent to knotd before its workers run is dropped: wait for ``knotc status``.
* As root, Unbound would chroot and switch to user ``unbound``: ``chroot: ""``,
  ``username: ""`` keep it in our directory.
* ``ede: yes`` makes Unbound explain a SERVFAIL (Extended DNS Error, RFC 8914), e.g.
  "DNSSEC Bogus" with the validator's reason as extra text.
* Installing the Debian packages would start the system services: ``scripts/setup.sh``
  installs them behind a ``policy-rc.d`` that says no.

To poke at it by hand: ``python -m tests.harness.dns`` (prints the ports and the
``kdig``/``dig`` line to use, stops on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from tests.harness.stack import LO, make_dir, new_base, wait_until

SIGNED = "example.test"
UNSIGNED = "insecure.test"
BOGUS = "bogus.test"
TAMPERED = "tampered.test"
ZONES = (SIGNED, UNSIGNED, BOGUS, TAMPERED)
TAMPERED_TLSA = "3 1 1 " + "5a" * 32
"""What tampered.test's ``_25._tcp.mail`` TLSA was signed with; it serves another value."""
TTL = 60

ZONE_EXTRA: dict[str, str] = {
    # example.test.: MX names for the coverage checks and an MTA-STS record.
    #   lists.example.test.  MX points here (127.0.0.1) but at a name no test cert covers
    #   backup.example.test. MX here (mail) and at a host elsewhere (192.0.2.25, TEST-NET)
    SIGNED: """\
lists        MX    10 mx2
mx2          A     127.0.0.1
backup       MX    10 mail
backup       MX    20 mx.insecure.test.
_mta-sts     TXT   "v=STSv1; id=20261126T0957;"
mta-sts      A     127.0.0.1
""",
    UNSIGNED: """\
mx           A     192.0.2.25
""",
    BOGUS: "",
    TAMPERED: f"_25._tcp.mail TLSA  {TAMPERED_TLSA}\n",
}


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP (a DNS server needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LO, 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind((LO, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no loopback port free for both UDP and TCP")


def query(port: int, name: str, rdtype: str, *, timeout: float = 1.0) -> dns.message.Message:
    """One DNSSEC-OK query (AD asked for) to 127.0.0.1:port, TCP fallback on truncation."""
    q = dns.message.make_query(name, rdtype, want_dnssec=True)
    q.flags |= dns.flags.AD
    response, _ = dns.query.udp_with_fallback(q, LO, port=port, timeout=timeout)
    return response


def normalize(rdtype: str, rdata: str) -> str:
    """Canonical presentation of one RDATA (e.g. upper/lower-case hex) for comparisons."""
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype),
                               rdata).to_text().lower()


def _rdatas(msg: dns.message.Message, name: str, rdtype: str) -> set[str]:
    rtype = dns.rdatatype.from_text(rdtype)
    return {rd.to_text().lower() for rrset in msg.answer
            if rrset.rdtype == rtype and rrset.name.to_text().rstrip(".").lower() == name.lower()
            for rd in rrset}


def _signed(msg: dns.message.Message, rdtype: str) -> bool:
    rtype = dns.rdatatype.from_text(rdtype)
    return any(rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == rtype for rrset in msg.answer)


def _run(argv: Sequence[str], timeout: float = 15.0) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


@dataclass
class DnsStack:
    """knotd + unbound on loopback; see the module docstring for the zones."""

    base: Path
    auth_port: int = field(default_factory=free_udp_tcp_port)
    resolver_port: int = field(default_factory=free_udp_tcp_port)
    knotd: subprocess.Popen[bytes] | None = None
    unbound: subprocess.Popen[bytes] | None = None
    trust_anchors: str = ""
    startup_seconds: float = 0.0

    @property
    def knot_conf(self) -> Path:
        return self.base / "knot.conf"

    @property
    def unbound_conf(self) -> Path:
        return self.base / "unbound.conf"

    @property
    def signer_conf(self) -> Path:
        return self.base / "signer" / "signer.conf"

    def _sign_and_tamper(self) -> None:
        """Sign tampered.test offline (own KASP db), then change its TLSA data."""
        signer = make_dir(self.base / "signer")
        make_dir(signer / "db")
        make_dir(signer / "out")
        self.signer_conf.write_text(f"""\
database:
    storage: "{signer}/db"
policy:
  - id: test
    algorithm: ecdsap256sha256
    single-type-signing: on
    ksk-lifetime: 0
    zsk-lifetime: 0
    cds-cdnskey-publish: none
zone:
  - domain: {TAMPERED}.
    storage: "{self.base}/zones"
    file: "%s.zone"
    dnssec-signing: on
    dnssec-policy: test
""")
        _run(["kzonesign", "-c", str(self.signer_conf), "-o", str(signer / "out"), f"{TAMPERED}."])
        signed = signer / "out" / f"{TAMPERED}.zone"
        good = TAMPERED_TLSA.rsplit(maxsplit=1)[-1]
        text = signed.read_text()
        if text.lower().count(good) != 1:
            raise RuntimeError(f"kzonesign output has no single TLSA {good}: {signed}")
        start = text.lower().index(good)
        signed.write_text(text[:start] + "a5" * 32 + text[start + len(good):])

    # -- start -----------------------------------------------------------------------
    def start(self) -> None:
        t0 = time.monotonic()
        for d in ("run", "db", "zones"):
            make_dir(self.base / d)
        for zone in ZONES:
            (self.base / "zones" / f"{zone}.zone").write_text(zone_text(zone))
        self.knot_conf.write_text(self._knot_conf())
        self._sign_and_tamper()
        _run(["knotc", "-c", str(self.knot_conf), "conf-check"])
        self.knotd = self._spawn("knotd", ["knotd", "-c", str(self.knot_conf)])
        wait_until("knotd control socket", self._knot_status_ok, 15)
        wait_until("knotd serving the signed zones", self._auth_ready, 15)

        anchors = [self._ds(TAMPERED, self.signer_conf)]
        for zone in (SIGNED, BOGUS):
            ds = self._ds(zone)
            if zone == BOGUS:  # a wrong anchor: flip the last digest nibble
                ds = ds[:-1] + ("0" if ds[-1].upper() != "0" else "1")
            anchors.append(ds)
        self.trust_anchors = "\n".join(anchors) + "\n"
        (self.base / "trust-anchors.ds").write_text(self.trust_anchors)
        self.unbound_conf.write_text(self._unbound_conf())
        _run(["unbound-checkconf", str(self.unbound_conf)])
        self.unbound = self._spawn("unbound", ["unbound", "-d", "-c", str(self.unbound_conf)])
        wait_until("unbound-control status", self._unbound_status_ok, 15)
        wait_until("a validated answer from unbound", self._validates, 15)
        self.startup_seconds = round(time.monotonic() - t0, 3)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.base / f"{name}.log").open("wb") as log:
            return subprocess.Popen(argv, cwd=self.base, stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def _check_alive(self) -> None:
        for name, proc in (("knotd", self.knotd), ("unbound", self.unbound)):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): {self.log_tail(name)}")

    def _knot_status_ok(self) -> bool:
        self._check_alive()
        return self.knotc("status", check=False) is not None

    def _auth_ready(self) -> bool:
        try:
            for zone in ZONES:
                if query(self.auth_port, zone, "SOA").rcode() != dns.rcode.NOERROR:
                    return False
            return all(_signed(query(self.auth_port, z, "DNSKEY"), "DNSKEY")
                       for z in (SIGNED, BOGUS, TAMPERED))
        except (OSError, dns.exception.DNSException):
            return False

    def _unbound_status_ok(self) -> bool:
        self._check_alive()
        return self.unbound_control("status", check=False) is not None

    def _validates(self) -> bool:
        try:
            msg = query(self.resolver_port, f"mail.{SIGNED}", "A")
        except (OSError, dns.exception.DNSException):
            return False
        return msg.rcode() == dns.rcode.NOERROR and bool(msg.flags & dns.flags.AD)

    def _ds(self, zone: str, conf: Path | None = None) -> str:
        out = _run(["keymgr", "-c", str(conf or self.knot_conf), f"{zone}.", "ds"])
        for line in out.splitlines():
            fields = line.split()
            # "example.test. DS 12345 13 2 HEX": algorithm 13 (P-256), digest type 2 (SHA-256)
            if len(fields) >= 6 and fields[1] == "DS" and fields[3] == "13" and fields[4] == "2":
                return " ".join([*fields[:5], "".join(fields[5:])])
        raise RuntimeError(f"keymgr printed no SHA-256 DS for {zone}: {out!r}")

    # -- runtime changes -------------------------------------------------------------
    def knotc(self, *args: str, check: bool = True) -> str | None:
        try:
            return _run(["knotc", "-c", str(self.knot_conf), "-t", "5", *args])
        except (RuntimeError, subprocess.TimeoutExpired):
            if check:
                raise
            return None

    def unbound_control(self, *args: str, check: bool = True) -> str | None:
        try:
            return _run(["unbound-control", "-c", str(self.unbound_conf), *args], timeout=5)
        except (RuntimeError, subprocess.TimeoutExpired):
            if check:
                raise
            return None

    def set_rrset(self, name: str, rdtype: str, rdatas: Sequence[str], ttl: int = TTL) -> None:
        """Replace the ``rdtype`` RRset at ``name`` (absolute, in one of our zones) with
        ``rdatas`` (empty: delete it); return once the resolver serves the new data."""
        name = name.rstrip(".").lower()
        zone = next((z for z in ZONES if name == z or name.endswith("." + z)), None)
        if zone is None:
            raise ValueError(f"{name} is in none of {', '.join(ZONES)}")
        if zone == TAMPERED:
            raise ValueError(f"{zone} is signed offline: its records cannot be changed at runtime")
        if self.knotc("zone-begin", zone, check=False) is None:  # a stale transaction
            self.knotc("zone-abort", zone, check=False)
            self.knotc("zone-begin", zone)
        try:
            self.knotc("zone-unset", zone, f"{name}.", rdtype, check=False)  # may not exist
            for rdata in rdatas:
                self.knotc("zone-set", zone, f"{name}.", str(ttl), rdtype, *rdata.split())
            self.knotc("zone-commit", zone)
        except Exception:
            self.knotc("zone-abort", zone, check=False)
            raise
        want = {normalize(rdtype, r) for r in rdatas}

        def at_auth() -> bool:
            msg = query(self.auth_port, name, rdtype)
            return _rdatas(msg, name, rdtype) == want and (
                zone == UNSIGNED or not want or _signed(msg, rdtype))

        wait_until(f"knotd to serve the new {rdtype} at {name}", at_auth, 10)
        for cmd in (("flush_zone", zone), ("flush_bogus",), ("flush_negative",), ("flush_requestlist",)):
            self.unbound_control(*cmd)
        if zone == BOGUS:
            return

        def at_resolver() -> bool:
            msg = query(self.resolver_port, name, rdtype)
            return _rdatas(msg, name, rdtype) == want and (
                zone == UNSIGNED or bool(msg.flags & dns.flags.AD))

        wait_until(f"unbound to serve the new {rdtype} at {name}", at_resolver, 10)

    # -- stop ------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the two processes this stack started (resolver first), by PID only."""
        for proc in (self.unbound, self.knotd):
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.base / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- config files ----------------------------------------------------------------
    def _knot_conf(self) -> str:
        zones = "".join(
            f"  - domain: {z}.\n" + (
                "    dnssec-signing: on\n    dnssec-policy: test\n" if z in (SIGNED, BOGUS) else "")
            for z in ZONES)
        zones += f'    file: "{self.base}/signer/out/{TAMPERED}.zone"\n'  # last zone: tampered
        return f"""\
# knot 3.2: authoritative test server, loopback only (tests/harness/dns.py)
server:
    rundir: "{self.base}/run"
    pidfile: "{self.base}/run/knotd.pid"
    listen: {LO}@{self.auth_port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: "{self.base}/run/knot.sock"
database:
    storage: "{self.base}/db"
log:
  - target: stderr
    any: info
policy:
  - id: test
    algorithm: ecdsap256sha256
    single-type-signing: on
    ksk-lifetime: 0
    zsk-lifetime: 0
    nsec3: off
    cds-cdnskey-publish: none
template:
  - id: default
    storage: "{self.base}/zones"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: changes
zone:
{zones}"""

    def _unbound_conf(self) -> str:
        stubs = "".join(f'stub-zone:\n    name: "{z}."\n    stub-addr: {LO}@{self.auth_port}\n'
                        for z in (*ZONES, ""))
        return f"""\
# unbound 1.17: validating resolver for the test zones, loopback only (tests/harness/dns.py)
server:
    directory: "{self.base}"
    chroot: ""
    username: ""
    pidfile: "{self.base}/run/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    log-servfail: yes
    ede: yes
    num-threads: 1
    interface: {LO}
    port: {self.resolver_port}
    outgoing-interface: {LO}
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    local-zone: "test." nodefault
    module-config: "validator iterator"
    trust-anchor-file: "{self.base}/trust-anchors.ds"
    trust-anchor-signaling: no
    domain-insecure: "{UNSIGNED}."
    harden-dnssec-stripped: yes
remote-control:
    control-enable: yes
    control-interface: "{self.base}/run/unbound.ctl"
    control-use-cert: no
{stubs}"""


def zone_text(zone: str) -> str:
    return f"""\
$ORIGIN {zone}.
$TTL {TTL}
@            SOA   ns hostmaster 1 3600 900 604800 {TTL}
@            NS    ns
ns           A     127.0.0.1
@            MX    10 mail
mail         A     127.0.0.1
{ZONE_EXTRA.get(zone, "")}"""


@contextlib.contextmanager
def running_dns(base: Path | None = None) -> Iterator[DnsStack]:
    """Start the DNS stack; stop it (by PID) and remove its directory afterwards."""
    root = base or new_base("certwatch-dns-")
    stack = DnsStack(root)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        if base is None and not os.environ.get("CERTWATCH_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    with running_dns() as d:
        print(f"knotd   {LO}:{d.auth_port} (pid {d.knotd.pid if d.knotd else '?'})\n"
              f"unbound {LO}:{d.resolver_port} (pid {d.unbound.pid if d.unbound else '?'}), "
              f"up in {d.startup_seconds} s; state in {d.base}\n"
              f"try: dig @{LO} -p {d.resolver_port} +dnssec _25._tcp.mail.{SIGNED} TLSA "
              "(bind9-dnsutils; or kdig from knot-dnsutils)\n"
              "Ctrl-C stops both.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
