"""SMTP clients that the real-host test runs *inside* the booted container (with the
installed venv's Python, standard library only), so that the system Postfix logs real
inbound TLS sessions and failures to the journal::

    python host_clients.py HOST PORT KIND...

KIND: ``ok`` (STARTTLS, EHLO, QUIT: "TLS connection established from"), ``dropped``
(STARTTLS accepted, then the first bytes of a TLS record and the client is gone:
"SSL_accept error ... lost connection" + "lost connection after STARTTLS"), ``anon``
(only anonymous aNULL ciphers, TLS 1.2; refused by ``smtpd_tls_exclude_ciphers = aNULL``:
"SSL_accept error", "TLS library problem: ... no shared cipher", "lost connection after
STARTTLS").
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import sys


def ok(host: str, port: int) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(host, port, timeout=10) as s:
        s.starttls(context=ctx)
        s.ehlo("ok.example.test")


def dropped(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO gone.example.test\r\n")
        while (line := f.readline()) and line[3:4] == b"-":
            pass
        s.sendall(b"STARTTLS\r\n")
        assert f.readline().startswith(b"220"), "STARTTLS refused"
        s.sendall(bytes.fromhex("160301"))  # a handshake record's header, then gone


def anon(host: str, port: int) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("aNULL:@SECLEVEL=0")
    with smtplib.SMTP(host, port, timeout=10) as s:
        try:
            s.starttls(context=ctx)
        except (ssl.SSLError, OSError):
            return  # refused: what an aNULL-only client meets after the recommended fix
        s.quit()


KINDS = {"ok": ok, "dropped": dropped, "anon": anon}

if __name__ == "__main__":
    for kind in sys.argv[3:]:
        KINDS[kind](sys.argv[1], int(sys.argv[2]))
