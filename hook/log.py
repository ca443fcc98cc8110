"""Logging, configured once per process: JSON lines off a terminal, structlog's console
renderer on one.

Off a terminal (certbot capturing the hook's stdout, journald capturing the daemon's)
the lines come from :class:`JsonLines`, which writes what structlog's JSON pipeline wrote
(the event's fields, then ``event``, ``level``, ``timestamp``, and ``exception`` with the
traceback) without importing structlog: its import pulls in asyncio, about 50 ms of the
hook's start and 5 MB of the daemon's memory. Code that logs only calls
``log.info/warning/error/exception(event, **fields)``, which both provide.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import traceback
from typing import Any, TextIO

_json_out: JsonLines | None = None


class JsonLines:
    """One JSON object per line, flushed at once, safe across threads."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def _emit(self, level: str, event: str, fields: dict[str, Any], exc: bool = False) -> None:
        record = {**fields, "event": event, "level": level,
                  "timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")}
        if exc:
            record["exception"] = traceback.format_exc().rstrip("\n")
        line = json.dumps(record, default=repr)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._emit("critical", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields, exc=True)


def configure(stream: TextIO | None = None, *, json: bool | None = None) -> None:
    """Configure logging for an entry point (call once, from ``main``)."""
    global _json_out  # noqa: PLW0603 - one configuration per process, like structlog's
    out = stream or sys.stderr
    as_json = (not out.isatty()) if json is None else json
    if as_json:
        _json_out = JsonLines(out)
        return
    _json_out = None
    import structlog  # noqa: PLC0415 - only on a terminal (see the module docstring)

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=out.isatty()),
        ],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> Any:
    if _json_out is not None:
        return _json_out
    import structlog  # noqa: PLC0415

    return structlog.get_logger(name)
