"""Logging that masks phone numbers wherever they appear, as text or as JSON lines."""

from __future__ import annotations

import json
import logging
import sys
from typing import TextIO

from clinic.phones import mask_in_text


class MaskingFormatter(logging.Formatter):
    """Format, then mask: numbers hide inside arguments, exceptions and free text alike."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_in_text(super().format(record))


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
