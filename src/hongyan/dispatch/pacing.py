"""Pacing: a channel's messages-per-second, shared by every live dispatcher.

A carrier account is contracted for a rate (say 200 messages a second) whatever the number of
machines sending on it; each dispatcher takes ``rate / live dispatchers`` (the live ones are those
whose heartbeat in the ``dispatchers`` table is fresh) and spends it through a token bucket.
"""

from __future__ import annotations

import asyncio
import time


def share(rate: float, live: int) -> float:
    """This dispatcher's part of a channel's rate (0 means no limit)."""
    if rate <= 0:
        return 0.0
    return rate / max(1, live)


class TokenBucket:
    """Tokens at ``rate`` per second, at most ``burst`` saved; ``rate`` 0 never waits."""

    def __init__(
        self, rate: float, burst: float | None = None, *, now: float | None = None
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self.tokens = self.burst
        self.stamp = time.monotonic() if now is None else now

    def set_rate(self, rate: float, now: float | None = None) -> None:
        """Change the rate from ``now`` on (default: the monotonic clock, as :meth:`take`)."""
        self._refill(time.monotonic() if now is None else now)
        self.rate = rate
        self.burst = max(1.0, rate / 10)
        self.tokens = min(self.tokens, self.burst)

    def _refill(self, now: float) -> None:
        # A clock that steps back neither takes tokens away nor counts the same time twice.
        if self.rate > 0:
            elapsed = max(0.0, now - self.stamp)
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.stamp = max(self.stamp, now)

    def delay(self, now: float) -> float:
        """Take one token; the seconds to wait before using it (pure given ``now``)."""
        if self.rate <= 0:
            return 0.0
        self._refill(now)
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def take(self) -> None:
        wait = self.delay(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
