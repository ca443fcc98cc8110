"""The exception tree of postfix-certwatch.

::

    Error                      root; str(err) is a message an admin can act on
    ├── ConfigError            the TOML file or a value in it is wrong (names file + key)
    ├── BundleError            a certificate/key file is unusable (names the file)
    ├── PostfixError           a postfix/postconf command failed (carries its output)
    └── LineageError           RENEWED_LINEAGE / --lineage is not a usable lineage

Foreign exceptions (``OSError``, ``ssl.SSLError``, ``ValueError`` from cryptography)
are translated at the I/O edge with ``raise ... from exc``.
"""

from __future__ import annotations


class Error(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(Error):
    """The configuration file or one of its values is invalid."""


class BundleError(Error):
    """A certificate or private key file cannot be used.

    The message always names the file and the problem.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class PostfixError(Error):
    """A postfix or postconf command failed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message + (f"\n{output.strip()}" if output.strip() else ""))
        self.output = output


class LineageError(Error):
    """The lineage given by certbot or on the command line cannot be used."""
