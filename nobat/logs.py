"""Logging that masks phone numbers wherever they appear, as text or as JSON lines, and
keeps values from outside (AGI requests, HTTP headers) from forging lines of their own."""

from __future__ import annotations

import json
import linecache
import logging
import re
import sys
from types import TracebackType
from typing import TextIO

from clinic.phones import mask_in_text

ExcInfo = (tuple[type[BaseException], BaseException, TracebackType | None]
           | tuple[None, None, None])
"""What sys.exc_info() returns, as logging hands it to a formatter."""

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match[0]
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100
                                else f"\\u{ord(char):04x}")


def escape_controls(text: str) -> str:
    """Write control characters (a newline, a carriage return, an escape) as \\n, \\r,
    \\x1b: a value someone sent can then never start a line of its own."""
    return _CONTROLS.sub(_escaped, text)


class MaskingFormatter(logging.Formatter):
    """Format, then mask: numbers hide inside arguments, exceptions and free text alike.
    The arguments, where values from callers and clients arrive, have their control
    characters escaped; the message's own line breaks (a list of problems) stay."""

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.args, tuple) and record.args:
            record = logging.makeLogRecord({**record.__dict__, "args": tuple(
                escape_controls(arg) if isinstance(arg, str) else arg for arg in record.args)})
        return mask_in_text(super().format(record))

    def formatException(self, ei: ExcInfo) -> str:
        """Format the traceback, then forget the source files it read: Python keeps every
        file a logged traceback touched in memory for good (2.4 MB over a clinic day's
        faults, most of them SQLAlchemy's and asyncpg's long modules)."""
        before = set(linecache.cache)
        try:
            return super().formatException(ei)
        finally:
            for name in linecache.cache.keys() - before:
                linecache.cache.pop(name, None)


class JsonFormatter(MaskingFormatter):
    """One JSON object a line, for journald and log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return mask_in_text(json.dumps(entry, ensure_ascii=False))


def setup_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send masked logs on, replacing any handlers set before: JSON lines to stdout for
    journald and collectors, text to stderr for a person at a terminal, unless `stream`
    says where (classic AGI's stdout is its channel to Asterisk, so it passes stderr)."""
    if stream is None:
        stream = sys.stdout if fmt == "json" else sys.stderr
    handler = logging.StreamHandler(stream)
    formatter = JsonFormatter() if fmt == "json" else MaskingFormatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per timer otherwise
