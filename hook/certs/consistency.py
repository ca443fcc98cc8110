"""Is a lineage what certbot writes? The four files agree with each other, or it is refused.

certbot writes ``cert.pem`` (the leaf), ``chain.pem`` (the issuers), ``fullchain.pem``
(both, leaf first) and ``privkey.pem`` (the key, nothing else), each nothing but PEM
blocks. A lineage that differs was not written by certbot alone (a hand edit, a broken
script, a hostile user), and the hook refuses it before anything is written:

* ``cert.pem`` holds exactly one certificate, the first one of ``fullchain.pem``;
* ``chain.pem`` (when it exists) holds the rest of ``fullchain.pem``, in order;
* no file holds anything but PEM blocks and whitespace (no junk before, between or
  after them);
* no private key outside ``privkey.pem``, and nothing but one key inside it.

Pure functions over bytes (:func:`problems_of`) plus a reader (:func:`check`) that goes
through :meth:`hook.certs.lineage.Lineage.read` (bounded, never out of the lineage).
Each problem names the file and the cause.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections.abc import Iterator, Mapping

from hook.certs.lineage import Lineage
from hook.errors import BundleError

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n")
_END = re.compile(rb"(?=-----END ([A-Z0-9 ]+)-----)")
FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")
FIX = ("let certbot write the lineage (certbot renew --cert-name NAME --force-renewal), or "
       "put back the files of one renewal; never edit them by hand")


def blocks(data: bytes) -> tuple[list[tuple[str, bytes]], str | None]:
    """The PEM blocks of ``data`` as (label, DER), and what else there is (None: only
    whitespace besides the blocks)."""
    found: list[tuple[str, bytes]] = []
    pos = 0
    junk: str | None = None
    for start, label, body, end in _scan(data):
        if data[pos:start].strip() and junk is None:
            junk = _where(data, pos, start, "before" if not found else "between PEM blocks")
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            der = b""
            junk = junk or f"a {label} block that is not base64"
        found.append((label, der))
        pos = end
    if data[pos:].strip() and junk is None:
        junk = _where(data, pos, len(data), "after the PEM blocks" if found else "no PEM block")
    return found, junk


def _scan(data: bytes) -> Iterator[tuple[int, str, bytes, int]]:
    """Each ``-----BEGIN L-----`` line with the first ``-----END L-----`` after it, as
    (start, label, body, end); a BEGIN with no END is skipped. In linear time: one
    ``re.S`` pattern with a back reference searched to the end of the data again for each
    BEGIN without an END (256 KiB of them: 17 s)."""
    ends: dict[bytes, list[int]] = {}
    for found in _END.finditer(data):
        ends.setdefault(found.group(1), []).append(found.start())
    pos = 0
    while (m := _BEGIN.search(data, pos)) is not None:
        at = ends.get(m.group(1), [])
        i = bisect.bisect_left(at, m.end())
        if i == len(at):
            pos = m.end()
            continue
        end = at[i] + len(b"-----END -----") + len(m.group(1))
        yield m.start(), m.group(1).decode(), data[m.end():at[i]], end
        pos = end


def _where(data: bytes, start: int, end: int, place: str) -> str:
    extra = data[start:end].strip()
    return f"{len(extra)} bytes of non-PEM data {place}"


def problems_of(contents: Mapping[str, bytes | None]) -> list[str]:
    """Problems with a lineage's files (name -> bytes; None: the file does not exist)."""
    out: list[str] = []
    parsed: dict[str, list[tuple[str, bytes]]] = {}
    for name in FILES:
        data = contents.get(name)
        if data is None:
            continue
        found, junk = blocks(data)
        parsed[name] = found
        if junk:
            out.append(f"{name}: {junk}; certbot writes nothing but PEM blocks")
        labels = [label for label, _ in found]
        keys = [label for label in labels if label.endswith("PRIVATE KEY")]
        if name == "privkey.pem":
            others = [label for label in labels if not label.endswith("PRIVATE KEY")]
            if others or len(keys) > 1:
                out.append(f"{name}: holds {', '.join(labels)}; certbot writes one private key "
                           "and nothing else")
        elif keys:
            out.append(f"{name}: holds a private key ({keys[0]}); a key belongs in "
                       "privkey.pem only (anything that reads this file would see it)")
    full = [der for label, der in parsed.get("fullchain.pem", []) if label == "CERTIFICATE"]
    if "cert.pem" in parsed and full:
        certs = [der for label, der in parsed["cert.pem"] if label == "CERTIFICATE"]
        if len(certs) != 1:
            out.append(f"cert.pem: holds {len(certs)} certificates; certbot writes the leaf "
                       "alone")
        elif certs[0] != full[0]:
            out.append("cert.pem: is not the first certificate of fullchain.pem; the two "
                       "files belong to different renewals")
    if "chain.pem" in parsed and full:
        chain = [der for label, der in parsed["chain.pem"] if label == "CERTIFICATE"]
        if chain != full[1:]:
            out.append(f"chain.pem: holds {len(chain)} certificate(s) that are not the rest "
                       f"of fullchain.pem ({len(full) - 1} after the leaf)")
    return out


def check(lineage: Lineage) -> list[str]:
    """:func:`problems_of` for the lineage on disk, each problem with the full path."""
    contents: dict[str, bytes | None] = {}
    for name in FILES:
        path = lineage.live / name
        if name == "chain.pem" and not (path.exists() or path.is_symlink()):
            contents[name] = None
            continue
        try:
            contents[name] = lineage.read(path)
        except BundleError as exc:
            return [str(exc)]
    return [f"{lineage.live}/{p}" for p in problems_of(contents)]
