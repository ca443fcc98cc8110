"""The exception tree of postfix-certwatch: every exception class defined under
``hook/`` and ``daemon/``, with the module it lives in when that is not this one
(tests/test_errors.py keeps the drawing and the code in step).

::

    Exception
    ├── Error                  root; str(err) is a message an admin can act on
    │   ├── ConfigError        the TOML file or a value in it is wrong (names file + key)
    │   ├── BundleError        a certificate/key file is unusable (names the file)
    │   │   └── _NoAccess      [daemon.renew_check.survey] this user may not read it (UNKNOWN, not CRITICAL)
    │   ├── PostfixError       a postfix/postconf command failed (carries its output)
    │   ├── LineageError       RENEWED_LINEAGE / --lineage is not a usable lineage
    │   ├── DeployError        [hook.pipeline.lock] the pipeline could not run at all (lock held)
    │   ├── DeadlinePassed     [hook.deploy_hook.deadline] past deploy.hook_deadline
    │   ├── LogError           [hook.peers.maillog] Postfix's log (a file, the journal) cannot be read
    │   └── MtaStsError        [daemon.renew_check.mtasts] an MTA-STS policy could not be fetched/parsed
    ├── SMTPProtocolError      [hook.tls.smtp] the peer broke SMTP (garbage, oversized reply, early close)
    ├── DeadlineExceeded       [hook.tls.smtp] the probe's overall deadline passed
    └── _Fail                  [hook.tls.starttls] a probe step failed; becomes a Failure in the result
    OSError
    └── UnsafeFile             [hook.files] a path to read is no regular file of a sane size

``UnsafeFile`` is an ``OSError`` so that every ``except OSError`` at an I/O edge
reports it with the path. Otherwise only the ``Error`` branch leaves a module: the SMTP
client's two errors and ``_Fail`` are caught inside the probe, which returns a failed
probe as a result, never raises.

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
