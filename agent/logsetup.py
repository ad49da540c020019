"""Logging to stderr in a form journald and a terminal both read well.

Under systemd (``JOURNAL_STREAM`` set) journald adds its own timestamps, so lines
carry none, and each line starts with a ``<N>`` syslog priority prefix that journald
turns into the entry's priority (sd-daemon(3)).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{prio}>" + super().format(record)


def under_journald() -> bool:
    """True when stderr is connected to the systemd journal."""
    return bool(os.environ.get("JOURNAL_STREAM"))


_handler: logging.Handler | None = None


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    """Configure the root logger once; calling again only changes the level."""
    global _handler
    root = logging.getLogger()
    root.setLevel(LEVELS[level])
    if _handler is not None:
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    if under_journald():
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
    root.addHandler(handler)
    _handler = handler
