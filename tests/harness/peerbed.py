"""Two private Postfix instances on loopback that make Postfix write its real TLS log lines.

``ours`` is the instance we watch (logging through ``maillog_file``); ``peer`` is a second
Postfix serving a self-signed certificate, reached by ``ours`` through ``relayhost``::

    with running_peerbed() as bed:
        bed.inbound_ok()            # "Trusted/Untrusted/Anonymous TLS connection established from"
        bed.inbound_anonymous()     # an aNULL cipher: "Anonymous TLS connection established from"
        bed.inbound_broken()        # STARTTLS, then garbage: "SSL_accept error from"
        bed.send_out("may")         # "Untrusted TLS connection established to"
        bed.send_out("verify")      # "certificate verification failed for", mail deferred

Nothing is faked: the lines are whatever Postfix 3.x writes. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness.minica import MiniCA
from tests.harness.stack import LO, PostfixInstance, new_base, wait_until

PEER = "peer.example.test"
OURS = "mx.example.test"


@dataclass
class RelayingPostfix(PostfixInstance):
    """A private Postfix that also has the ``smtp`` client transport (it relays)."""

    def master_cf(self) -> str:
        return super().master_cf() + "smtp      unix  -       -       n       -       -       smtp\n"


@dataclass
class PeerBed:
    base: Path
    ours: PostfixInstance
    peer: PostfixInstance
    ca: MiniCA

    @property
    def maillog(self) -> Path:
        return self.ours.maillog

    # ------------------------------------------------------------------ inbound
    def inbound_ok(self) -> None:
        """A client that does STARTTLS with a normal cipher and sends one mail."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP(LO, self.ours.smtp_port, timeout=10) as s:
            s.starttls(context=ctx)
            s.ehlo("client.example.test")
            s.sendmail("a@client.example.test", [f"postmaster@{OURS}"], b"Subject: t\r\n\r\nhi\r\n")

    def inbound_anonymous(self) -> None:
        """A client that offers only anonymous (aNULL) ciphers, TLS 1.2 (no certificate sent)."""
        subprocess.run(["openssl", "s_client", "-connect", f"{LO}:{self.ours.smtp_port}",
                        "-starttls", "smtp", "-tls1_2", "-cipher", "aNULL:@SECLEVEL=0", "-quiet"],
                       input=b"QUIT\r\n", capture_output=True, timeout=15, check=False)

    def inbound_broken(self) -> None:
        """STARTTLS accepted, then bytes that are not a TLS ClientHello."""
        with self._after_starttls("broken.example.test") as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"\x00" * 64)
            with contextlib.suppress(OSError):
                s.recv(100)

    def inbound_dropped(self) -> None:
        """STARTTLS accepted, then the client hangs up ("lost connection after STARTTLS")."""
        with self._after_starttls("gone.example.test"):
            pass

    @contextlib.contextmanager
    def _after_starttls(self, helo: str) -> Iterator[socket.socket]:
        """A plain connection to ``ours`` port 25 that has just had STARTTLS accepted."""
        with socket.create_connection((LO, self.ours.smtp_port), timeout=10) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"EHLO " + helo.encode() + b"\r\n")
            while (line := f.readline()) and line[3:4] == b"-":
                pass
            s.sendall(b"STARTTLS\r\n")
            f.readline()
            yield s

    # ------------------------------------------------------------------ outbound
    def send_out(self, level: str, **extra: str) -> None:
        """Relay one mail from ``ours`` to ``peer`` with ``smtp_tls_security_level = level``."""
        self.ours.set_main(smtp_tls_security_level=level, **extra)
        self.ours.reload()
        subprocess.run(["/usr/sbin/sendmail", "-C", str(self.ours.config_dir), "-f",
                        f"root@{OURS}", f"someone@{PEER}"],
                       input=b"Subject: out\r\n\r\nhello\r\n", check=True, timeout=30)

    def flush(self) -> None:
        self.ours.postfix("flush", check=False)

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        wait_until(f"{text!r} in {self.maillog}",
                   lambda: text in self.maillog.read_text(errors="replace")
                   if self.maillog.exists() else False, timeout)


@contextlib.contextmanager
def running_peerbed(base: Path | None = None) -> Iterator[PeerBed]:
    root = base or new_base("certwatch-peers-")
    ca = MiniCA()
    peer = PostfixInstance(root / "peer", hostname=PEER)
    ours = RelayingPostfix(root / "ours", hostname=OURS)
    certs = root / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    certs.chmod(0o755)
    peer.chain_files = str(ca.issue([PEER], self_signed=True).write_chain_file(certs / "peer.pem"))
    ours.chain_files = str(ca.issue([OURS]).write_chain_file(certs / "ours.pem"))
    peer.extra_main.update(mydestination=f"$myhostname, localhost, {PEER}")
    ours.extra_main.update(
        default_transport="smtp", relay_transport="smtp",
        relayhost=f"[{LO}]:{peer.smtp_port}", smtp_tls_loglevel="1",
        smtp_tls_security_level="may", smtp_tls_CAfile="", smtp_tls_CApath="",
        # a retry right away, so that "deferred" lines come quickly when asked for
        minimal_backoff_time="1s", maximal_backoff_time="2s", queue_run_delay="1s")
    try:
        peer.start()
        ours.start()
        yield PeerBed(root, ours, peer, ca)
    finally:
        ours.stop()
        peer.stop()
        if base is None and not os.environ.get("CERTWATCH_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover - by hand: print the lines Postfix writes
    with running_peerbed() as bed:
        bed.inbound_ok()
        bed.inbound_anonymous()
        bed.inbound_broken()
        bed.inbound_dropped()
        bed.send_out("may")
        bed.wait_for("status=sent")
        bed.send_out("verify")
        try:
            bed.wait_for("certificate verification failed")
        finally:
            print(bed.maillog.read_text())
        bed.send_out("encrypt", smtp_tls_exclude_ciphers="aNULL")
        time.sleep(2)
        print(bed.maillog.read_text())
