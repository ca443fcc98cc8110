"""structlog, configured once per process: JSON lines off a terminal, console on one."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import structlog


def configure(stream: TextIO | None = None, *, json: bool | None = None) -> None:
    """Configure structlog for an entry point (call once, from ``main``)."""
    out = stream or sys.stderr
    as_json = (not out.isatty()) if json is None else json
    renderer: Any = (structlog.processors.JSONRenderer(sort_keys=False) if as_json
                     else structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> Any:
    return structlog.get_logger(name)
