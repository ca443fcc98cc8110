"""What peers see: Postfix's own TLS log lines and the TLSRPT reports senders mail us.

What other packages use:

- the log lines (``tlslog``): a :class:`LineParser` turns a Postfix log line into a
  :class:`TlsEvent` (:class:`Direction`, level or :class:`Failure`, peer, protocol,
  cipher; no mail address kept);
- the log itself (``maillog``): :func:`choose_log_source` (Postfix's ``maillog_file``,
  ``/var/log/mail.log`` or ``maillog``, else the journal) gives a :class:`Choice`;
  :class:`FileFollower` (rotation and truncation survived, a :class:`FilePosition` to
  persist) and :class:`JournalFollower` (a persisted cursor) follow it;
  :func:`read_recent_events` reads the last hours; :class:`LogError` says why not;
- the diagnosis (``tlsdiag``): :func:`tally` counts events into a :class:`Tally`
  (:func:`is_ignored`: our own probes), :func:`log_findings` gives seed-000 style
  findings with the exact ``postconf -e`` lines, :class:`Comparison` holds the failures
  after a renewal against before;
- TLSRPT, RFC 8460 (``tlsrpt``): :func:`lookup_tlsrpt` (``_smtp._tls`` with its DNSSEC
  status) gives a :class:`TlsRptRecord`; :func:`read_report_file`,
  :func:`mailbox_messages` and :func:`reports_from_message` read :class:`TlsRptReport`
  s (JSON, gzip, mail; bounded), :func:`report_time`, :func:`summarise_reports`
  (:class:`TlsRptSummary`) and :func:`tlsrpt_findings` (failures naming our MX).

Importing it is cheap: dnspython and the email package load only when used.
"""

from hook.peers.maillog import (
    Choice,
    FileFollower,
    FilePosition,
    JournalFollower,
    LogError,
)
from hook.peers.maillog import choose as choose_log_source
from hook.peers.maillog import read_recent as read_recent_events
from hook.peers.tlsdiag import Comparison, Tally, is_ignored, tally
from hook.peers.tlsdiag import findings as log_findings
from hook.peers.tlslog import Direction, Failure, LineParser, TlsEvent
from hook.peers.tlsrpt import Report as TlsRptReport
from hook.peers.tlsrpt import Summary as TlsRptSummary
from hook.peers.tlsrpt import TlsRptRecord, mailbox_messages, report_time
from hook.peers.tlsrpt import findings as tlsrpt_findings
from hook.peers.tlsrpt import from_message as reports_from_message
from hook.peers.tlsrpt import lookup as lookup_tlsrpt
from hook.peers.tlsrpt import read_file as read_report_file
from hook.peers.tlsrpt import summarise as summarise_reports

__all__ = [
    "Choice",
    "Comparison",
    "Direction",
    "Failure",
    "FileFollower",
    "FilePosition",
    "JournalFollower",
    "LineParser",
    "LogError",
    "Tally",
    "TlsEvent",
    "TlsRptRecord",
    "TlsRptReport",
    "TlsRptSummary",
    "choose_log_source",
    "is_ignored",
    "log_findings",
    "lookup_tlsrpt",
    "mailbox_messages",
    "read_recent_events",
    "read_report_file",
    "report_time",
    "reports_from_message",
    "summarise_reports",
    "tally",
    "tlsrpt_findings",
]
