"""Webhook signatures, for our sender and for receivers (pure; no I/O).

Every request carries ``X-Hongyan-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
HMAC-SHA256 over ``b"<t>." + <raw request body>`` keyed with the endpoint's secret (the whole
``whsec_…`` string, UTF-8). Binding the timestamp into the MAC lets a receiver refuse replays:
:func:`verify_signature` accepts a request only when the timestamp is within ``tolerance``
seconds of the receiver's clock (five minutes by default) and the MAC matches. A header may carry
several ``v1=`` values; any one matching is enough, so a future overlap of two secrets needs no
change on the receiving side. Unknown schemes (``v0=``, ``v2=``) are ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime

__all__ = ["DEFAULT_TOLERANCE", "HEADER", "sign", "signature", "verify_signature"]

HEADER = "X-Hongyan-Signature"
DEFAULT_TOLERANCE = 300.0
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(r"[0-9a-f]{64}")


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)
    mac.update(f"{timestamp}.".encode("ascii"))
    mac.update(body)
    return mac.hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Hongyan-Signature`` header value for ``body`` sent at ``timestamp``."""
    if timestamp < 0:
        raise ValueError("timestamp must not be negative")
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def _parse(header: str) -> tuple[int, list[str]] | None:
    timestamps: list[int] = []
    macs: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if not _TIMESTAMP.fullmatch(value):
                return None
            timestamps.append(int(value))
        elif key == "v1" and _HEX.fullmatch(value):
            macs.append(value)
    if len(timestamps) != 1 or not macs:
        return None
    return timestamps[0], macs


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    now: datetime | float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """True when ``header`` signs exactly ``body`` with ``secret`` and its timestamp is within
    ``tolerance`` seconds of ``now`` (a datetime or unix seconds), in either direction.

    Anything malformed (no ``t=``, two ``t=``, no valid ``v1=``) is simply False.
    """
    if tolerance <= 0:
        raise ValueError("tolerance must be positive")
    parsed = _parse(header)
    if parsed is None:
        return False
    timestamp, macs = parsed
    current = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(current - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    # Compare against every candidate (no early exit), each in constant time.
    matched = False
    for mac in macs:
        matched |= hmac.compare_digest(mac, expected)
    return matched
