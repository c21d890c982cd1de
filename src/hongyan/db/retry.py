"""Running a transaction again when the database says it may succeed the next time.

A long-running worker (the dispatcher) must not die of what a database does in normal life: a
deadlock between two transactions (PostgreSQL aborts one of them, ``40P01``), a serialization
failure (``40001``), SQLite's writer lock held too long by another process ("database is
locked"), or a connection dropped by a server restart or a network blip. Each of these rolls the
transaction back, so running the whole transaction again is safe. Only a connection lost during
``COMMIT`` is ambiguous (the work may have been committed); the callers' transactions are written
so that a second run of a committed one changes nothing that matters (compare-and-set state
changes; see :mod:`hongyan.dispatch.dispatcher`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

log = logging.getLogger("hongyan.db")
T = TypeVar("T")

# SQLSTATEs after which the same transaction may succeed: serialization failure, deadlock,
# lock not available, and the server going away (admin shutdown, crash, cannot connect now).
RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03"})
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a database error after which the transaction may be run again."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state in RETRY_SQLSTATES or (isinstance(state, str) and state.startswith("08")):
        return True  # 08xxx: connection exceptions
    if isinstance(exc, sa.exc.OperationalError):
        text = str(orig).lower()
        return any(s in text for s in _SQLITE_BUSY)
    return False


def retrying(
    work: Callable[[], T],
    *,
    budget: float = 30.0,
    first_delay: float = 0.02,
    max_delay: float = 2.0,
    what: str = "a transaction",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``work()``, run again after a transient database error (:func:`is_transient`) with a
    jittered exponential backoff, until ``budget`` seconds have passed; then the last error."""
    deadline = time.monotonic() + budget
    delay = first_delay
    attempt = 1
    while True:
        try:
            return work()
        except sa.exc.DBAPIError as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning(
                "%s failed (attempt %d), running it again in %.2f s: %s",
                what,
                attempt,
                delay,
                str(exc.orig).splitlines()[0] if exc.orig else exc,
            )
            sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter, not a secret)
            delay = min(max_delay, delay * 2)
            attempt += 1
