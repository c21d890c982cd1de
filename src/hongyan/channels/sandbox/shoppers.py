"""Simulated shoppers: the sandbox's recipients click the links of delivered messages and buy
with their coupons, so a demo (and a test) has a real funnel.

For each delivered message (the part that completes it delivered), the recipient decides in
submit order, from a generator seeded with the sandbox's seed: it clicks with the click rate of
the first rule whose ``contains`` text is in the message (else the default rates), and a
clicker buys with that rule's buy rate. A click is a real ``GET`` of the message's short link
on the platform (the link's host replaced by ``base_url``, since the tenant's short domain does
not resolve here) with a phone's user agent; a purchase is an ``order`` event posted to the
platform's events API (``POST /api/v1/events``) with the message's coupon code when it has one,
an amount drawn from ``amount_fen``, and an order id. What the shoppers did is counted here
(``clicks``, ``buys`` per rule) and written to the sandbox's record file (``click``, ``buy``
rows), so a test can compare the platform's funnel with them exactly. Rules give variants
different rates: a planted better variant.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from hongyan.tracking.codes import coupons_in

log = logging.getLogger("hongyan.sandbox.shoppers")

_LINK = re.compile(r"https?://[A-Za-z0-9.-]+(?::\d+)?/([0-9A-Za-z]{7})(?![0-9A-Za-z])")
PHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47 NetType/WIFI Language/zh_CN"
)


@dataclass(frozen=True)
class ShopperRule:
    """Rates for messages whose text contains ``contains`` ("" matches every message)."""

    contains: str
    click: float
    buy: float

    def __post_init__(self) -> None:
        if not (0 <= self.click <= 1 and 0 <= self.buy <= 1):
            raise ValueError("click and buy rates are between 0 and 1")


def parse_rule(text: str) -> ShopperRule:
    """``TEXT:CLICK:BUY`` (e.g. ``立减50元:0.6:0.4``) as a rule."""
    contains, _, rest = text.rpartition(":")
    contains, _, click = contains.rpartition(":")
    try:
        return ShopperRule(contains, float(click), float(rest))
    except ValueError as exc:
        raise ValueError(f"a shopper rule is TEXT:CLICK:BUY with rates 0..1, not {text!r}") from exc


@dataclass(frozen=True)
class ShopperConfig:
    base_url: str  # the platform: short links are fetched here, events posted here
    api_key: str
    rules: tuple[ShopperRule, ...] = ()
    click: float = 0.0  # default rates, for messages no rule matches
    buy: float = 0.0
    delay: float = 0.5  # seconds from the receipt to the click; the purchase follows
    spread: float = 2.0  # clicks spread over this many more seconds (people are not in step)
    concurrency: int = 4  # requests in flight at most
    amount_fen: tuple[int, int] = (2_000, 30_000)
    seed: int = 0

    def rule_for(self, text: str) -> ShopperRule:
        for rule in self.rules:
            if rule.contains in text:
                return rule
        return ShopperRule("", self.click, self.buy)


@dataclass(frozen=True)
class Plan:
    """What one recipient will do (pure: decided when the message is delivered)."""

    rule: str
    destination: str
    code: str
    coupon: str | None
    buys: bool
    amount_fen: int
    order_id: str


def plan(
    config: ShopperConfig, rng: random.Random, destination: str, text: str, n: int
) -> Plan | None:
    """Whether and how the recipient of a delivered ``text`` clicks and buys (None: neither).
    Draws the same numbers for every message, so a seed gives the same decisions."""
    rule = config.rule_for(text)
    r_click, r_buy = rng.random(), rng.random()
    amount = rng.randint(*config.amount_fen)
    link = _LINK.search(text)
    if link is None or r_click >= rule.click:
        return None
    coupons = coupons_in(text)
    return Plan(
        rule=rule.contains,
        destination=destination,
        code=link.group(1),
        coupon=coupons[0] if coupons else None,
        buys=r_buy < rule.buy,
        amount_fen=amount,
        order_id=f"sbx-{config.seed}-{n}",
    )


@dataclass
class Shoppers:
    config: ShopperConfig
    record: Callable[[str, Mapping[str, Any]], None] = lambda kind, row: None
    clicks: Counter[str] = field(default_factory=Counter)
    buys: Counter[str] = field(default_factory=Counter)
    revenue_fen: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.config.seed}:shoppers")  # noqa: S311 - simulation
        self._n = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._gate: asyncio.Semaphore | None = None

    @property
    def busy(self) -> int:
        return len(self._tasks)

    def delivered(self, destination: str, text: str, after: float) -> None:
        """A message was delivered (its receipt goes out in ``after`` seconds)."""
        self._n += 1
        p = plan(self.config, self._rng, destination, text, self._n)
        if p is None:
            return
        wait = after + self.config.delay + self._rng.uniform(0, self.config.spread)
        task = asyncio.get_running_loop().create_task(self._act(p, wait))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.config.base_url, timeout=30)
        return self._client

    async def _act(self, p: Plan, wait: float) -> None:
        await asyncio.sleep(wait)
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.config.concurrency)
        async with self._gate:
            await self._shop(p)

    async def _shop(self, p: Plan) -> None:
        http = self._http()
        try:
            r = await http.get(f"/{p.code}", headers={"user-agent": PHONE_UA})
            if r.status_code != 302:
                self.errors.append(f"click {p.code}: {r.status_code}")
                return
            self.clicks[p.rule] += 1
            self.record("click", {"rule": p.rule, "code": p.code, "to": p.destination})
            if not p.buys:
                return
            await asyncio.sleep(self.config.delay)
            event = {
                "event_id": p.order_id,
                "kind": "order",
                "phone": "+" + p.destination.lstrip("+"),
                "occurred_at": datetime.now(UTC).isoformat(),
                "order_id": p.order_id,
                "amount_fen": p.amount_fen,
            }
            if p.coupon:
                event["coupon_code"] = p.coupon
            r = await http.post(
                "/api/v1/events",
                json={"events": [event]},
                headers={"authorization": f"Bearer {self.config.api_key}"},
            )
            if r.status_code != 200:
                self.errors.append(f"order {p.order_id}: {r.status_code} {r.text[:200]}")
                return
            self.buys[p.rule] += 1
            self.revenue_fen[p.rule] += p.amount_fen
            self.record(
                "buy",
                {"rule": p.rule, "order_id": p.order_id, "coupon": p.coupon,
                 "amount_fen": p.amount_fen},
            )  # fmt: skip
        except httpx.HTTPError as exc:
            self.errors.append(f"{p.code}: {exc!r}")
            log.warning("sandbox shopper: %r", exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
