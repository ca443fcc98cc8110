"""Log parsing benchmark: a generated mail log of N lines (default one million) read with
the daemon's own :class:`~hook.postfix.FileFollower` and parsed into TLS events.

    .venv/bin/python -m bench.peers_bench [--lines 1000000] [--json]

The log mixes what a busy MX writes: about 1 line in 8 is a TLS line (established in
and out, handshake failures, verification failures), the rest are connect/disconnect,
queue manager and delivery lines. Target: at least 100,000 lines a second.
Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from hook.peers import FileFollower, LineParser

TARGET = 100_000
TEMPLATES = (
    "postfix/smtpd[{pid}]: connect from mail{n}.example.net[192.0.2.{a}]",
    "postfix/smtpd[{pid}]: Anonymous TLS connection established from mail{n}.example.net[192.0.2.{a}]: "
    "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 "
    "server-signature ECDSA (prime256v1) server-digest SHA256",
    "postfix/smtpd[{pid}]: {q}: client=mail{n}.example.net[192.0.2.{a}]",
    "postfix/cleanup[{pid}]: {q}: message-id=<{q}@example.net>",
    "postfix/qmgr[{pid}]: {q}: from=<user{n}@example.net>, size=4{a}1, nrcpt=1 (queue active)",
    "postfix/smtpd[{pid}]: disconnect from mail{n}.example.net[192.0.2.{a}] ehlo=2 starttls=1 "
    "mail=1 rcpt=1 data=1 quit=1 commands=7",
    "postfix/local[{pid}]: {q}: to=<user{n}@example.org>, relay=local, delay=0.1, "
    "delays=0.05/0.01/0/0.04, dsn=2.0.0, status=sent (delivered to mailbox)",
    "postfix/qmgr[{pid}]: {q}: removed",
    "postfix/smtp[{pid}]: Trusted TLS connection established to mx{n}.example.com[198.51.100.{a}]:25: "
    "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
    "postfix/smtp[{pid}]: {q}: to=<user{n}@example.com>, relay=mx{n}.example.com[198.51.100.{a}]:25, "
    "delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as ABC{a})",
    "postfix/smtpd[{pid}]: SSL_accept error from unknown[203.0.113.{a}]: lost connection",
    "postfix/smtpd[{pid}]: lost connection after STARTTLS from unknown[203.0.113.{a}]",
    "postfix/smtp[{pid}]: certificate verification failed for mx{n}.example.com[198.51.100.{a}]:25: "
    "self-signed certificate",
    "postfix/anvil[{pid}]: statistics: max connection rate 3/60s for (smtp:192.0.2.{a}) at Dec  2 03:00:00",
    "postfix/smtpd[{pid}]: disconnect from unknown[203.0.113.{a}] ehlo=1 starttls=0/1 commands=1/2",
    "postfix/postscreen[{pid}]: CONNECT from [192.0.2.{a}]:5{a} to [127.0.0.1]:25",
)
WEIGHTS = (14, 6, 10, 10, 10, 12, 10, 10, 3, 8, 1, 1, 1, 2, 1, 1)


def generate(path: Path, lines: int, seed: int = 13) -> None:
    rnd = random.Random(seed)  # noqa: S311 - a reproducible test log, not secrets
    start = time.time() - 86400
    picks = rnd.choices(range(len(TEMPLATES)), WEIGHTS, k=lines)
    with path.open("w") as out:
        for i, k in enumerate(picks):
            stamp = time.strftime("%b %d %H:%M:%S", time.localtime(start + i * 86400 / lines))
            body = TEMPLATES[k].format(pid=1000 + i % 977, n=i % 500, a=i % 250, q=f"{i:011X}")
            out.write(f"{stamp} mx {body}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.peers_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="certwatch-peers-bench-") as tmp:
        log = Path(tmp) / "mail.log"
        generate(log, args.lines)
        size = log.stat().st_size
        started = time.perf_counter()
        follower = FileFollower(log, first_tail=size)
        parser = LineParser()
        read = events = 0
        while batch := follower.read():
            read += len(batch)
            events += sum(1 for line in batch if parser.parse(line) is not None)
        seconds = time.perf_counter() - started
        follower.close()
    rate = read / seconds if seconds else 0.0
    result = {"lines": read, "tls_events": events, "bytes": size, "seconds": round(seconds, 3),
              "lines_per_second": round(rate), "target_lines_per_second": TARGET,
              "mb_per_second": round(size / seconds / 1e6, 1) if seconds else 0.0}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"parsed {read:,} lines ({events:,} TLS events, {size / 1e6:.0f} MB) in {seconds:.2f} s")
        print(f"rate   {rate:,.0f} lines/s   (target >= {TARGET:,} lines/s)")
    ok = read == args.lines and rate >= TARGET
    print("peers_bench:", "PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
