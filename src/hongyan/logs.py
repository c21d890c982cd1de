"""Logging that never carries a phone number or a secret.

A filter on the root handlers rewrites every record's final message: digit runs that look like
phone numbers are masked, and API keys or bearer tokens are cut to their public prefix.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from hongyan.security.keyring import mask_phone

# A bare run of 7-15 digits (with an optional +), or a Chinese mobile written 3-4-4.
PHONE = re.compile(r"(?<![\w.+])(?:\+?\d{7,15}|1\d{2}[- ]\d{4}[- ]\d{4})(?!\w)")
API_KEY = re.compile(r"\b(hy_[0-9a-f]{12})_[A-Za-z0-9_\-]+")
BEARER = re.compile(r"(?i)(bearer\s+)\S+")


def redact(text: str) -> str:
    text = API_KEY.sub(r"\1_…", text)
    text = BEARER.sub(r"\1…", text)

    def phone(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        return mask_phone(match.group(0)) if len(digits) >= 7 else match.group(0)

    return PHONE.sub(phone, text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream it was at
    start-up (a test runner that swaps and closes stderr would otherwise leave the handler
    writing to a closed file)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure(level: int = logging.INFO) -> None:
    """Root logging for the processes hongyan starts; idempotent."""
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        handler = _StderrHandler()
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        for h in logging.getLogger(name).handlers:
            h.addFilter(RedactingFilter())
