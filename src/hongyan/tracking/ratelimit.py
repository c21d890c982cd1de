"""Misses per address (pure): a flood of unknown codes from one address is refused for a while.

A sliding count in fixed windows: at most ``limit`` misses per ``window`` seconds per address;
beyond it, every request from the address (hits too) gets 429 until the window ends, so
enumerating codes costs the guesser minutes per few dozen tries. Memory is bounded: at most
``max_addresses`` are remembered, the oldest window forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class MissLimiter:
    limit: int = 20
    window: float = 60.0
    max_addresses: int = 100_000
    _seen: OrderedDict[bytes, tuple[float, int]] = field(default_factory=OrderedDict)

    def blocked(self, address: bytes, now: float) -> bool:
        """Whether ``address`` is over its limit at ``now``."""
        entry = self._seen.get(address)
        if entry is None:
            return False
        start, count = entry
        if now - start >= self.window:
            del self._seen[address]
            return False
        return count >= self.limit

    def miss(self, address: bytes, now: float) -> None:
        """Count one miss for ``address``."""
        entry = self._seen.get(address)
        if entry is None or now - entry[0] >= self.window:
            self._seen.pop(address, None)
            self._seen[address] = (now, 1)
            while len(self._seen) > self.max_addresses:
                self._seen.popitem(last=False)
            return
        self._seen[address] = (entry[0], entry[1] + 1)
