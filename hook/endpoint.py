"""Checking what a user types before anything is probed: hosts, server names, ports,
targets and timeouts.

Pure functions over strings; each refusal is a :class:`~hook.errors.ConfigError` whose
message is one line naming the input (shortened when it is huge) and what is wrong:
``target '127.0.0.1:²': port '²' is not a number of ASCII digits 1-65535``.

* a host is an IPv4 or IPv6 address, or a DNS name: at most 253 characters, labels of
  1-63 characters after IDNA encoding, no spaces or control characters;
* a server name (SNI) is a DNS name, never an address;
* a port is ASCII digits, 1-65535 (``²`` and ``٢٥`` are digits to Python, not to us);
* a target is ``HOST:PORT``, ``[IPv6]:PORT``, ``HOST`` or a bare IPv6 address (port 25);
  a ``[`` without its ``]`` is refused, not guessed at;
* a timeout is a finite number of seconds above 0 and at most :data:`MAX_TIMEOUT`.
"""

from __future__ import annotations

import ipaddress
import math
import re

from hook.errors import ConfigError

MAX_TIMEOUT = 300.0
"""Seconds: a probe timeout above this is a typo (and would outlive any monitoring check)."""
DEFAULT_PORT = 25
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")


def shown(text: str, limit: int = 60) -> str:
    """``text`` quoted for a one-line message: control characters escaped, long input cut."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def dns_name_problem(name: str) -> str | None:
    """Why ``name`` is not a usable DNS host name (None: it is)."""
    if not name:
        return "empty name"
    if any(c.isspace() or not c.isprintable() for c in name):
        return "contains a space or a control character"
    bare = name[:-1] if name.endswith(".") else name
    if len(bare) > 253:
        return f"{len(bare)} characters, a DNS name has at most 253"
    ascii_labels = []
    for label in bare.split("."):
        encoded, problem = _label_problem(label)
        if problem is not None:
            return problem
        ascii_labels.append(encoded)
    if len(".".join(ascii_labels)) > 253:
        return "longer than 253 characters once IDNA-encoded"
    return None


def _label_problem(label: str) -> tuple[str, str | None]:
    """One label, IDNA-encoded, and why it is not usable (None: it is)."""
    if not label:
        return label, "has an empty label ('..', or a leading dot)"
    try:
        encoded = label.encode("idna").decode("ascii") if not label.isascii() else label
    except UnicodeError as exc:
        return label, f"label {shown(label, 20)} is not valid IDNA ({exc})"
    if len(encoded) > 63:
        return encoded, f"label {shown(label, 20)} is {len(encoded)} characters, at most 63"
    if not _LABEL.fullmatch(encoded.lower()):
        return encoded, (f"label {shown(label, 20)} may hold only letters, digits and '-' "
                         "(not first or last)")
    return encoded, None


def check_host(host: str, what: str = "host") -> str:
    """An address or a DNS name, else :class:`ConfigError`."""
    if is_address(host):
        return host
    why = dns_name_problem(host)
    if why:
        raise ConfigError(f"{what} {shown(host)}: {why}")
    return host


def check_servername(name: str) -> str:
    """A DNS name for SNI (an address is not a server name: RFC 6066 section 3)."""
    if is_address(name):
        raise ConfigError(f"server name {shown(name)}: an address cannot be sent as SNI; "
                          "give the host name the certificate must cover")
    why = dns_name_problem(name)
    if why:
        raise ConfigError(f"server name {shown(name)}: {why}")
    return name


def parse_port(text: str, where: str) -> int:
    # at most 5 digits before int(): Python refuses to convert more than 4300 (ValueError)
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 0 < int(text) < 65536:
        raise ConfigError(f"{where}: port {shown(text)} is not a number of ASCII digits "
                          "1-65535")
    return int(text)


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``HOST`` or a bare IPv6 address (port 25)."""
    where = f"target {shown(text)}"
    if text.startswith("["):
        inside, closed, rest = text[1:].partition("]")
        if not closed:
            raise ConfigError(f"{where}: '[' without ']' (IPv6 with a port: [::1]:25)")
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            raise ConfigError(f"{where}: {shown(inside)} in brackets is not an IPv6 "
                              "address") from None
        if rest and not rest.startswith(":"):
            raise ConfigError(f"{where}: expected ':PORT' after ']', got {shown(rest)}")
        return inside, parse_port(rest[1:], where) if rest else DEFAULT_PORT
    if "]" in text:
        raise ConfigError(f"{where}: ']' without '[' (IPv6 with a port: [::1]:25)")
    if text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ConfigError(f"{where}: not an IPv6 address; with a port, write it as "
                              "[::1]:25") from None
        return text, DEFAULT_PORT
    host, colon, port = text.partition(":")
    if not host:
        raise ConfigError(f"{where}: no host before ':'")
    check_host(host, f"{where}: host")
    return host, parse_port(port, where) if colon else DEFAULT_PORT


def check_timeout(value: float, what: str, maximum: float = MAX_TIMEOUT) -> float:
    """Finite, above 0, at most ``maximum`` seconds."""
    if not math.isfinite(value) or value <= 0 or value > maximum:
        raise ConfigError(f"{what}: expected a number of seconds above 0 and at most "
                          f"{maximum:g}, got {value!r}")
    return value
