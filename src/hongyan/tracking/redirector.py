"""The redirector: ``GET /{code}`` records the click and answers 302 to the link's target.

A plain ASGI application (no framework routing on the hot path), run alone by
``hongyan redirector`` so clicks never compete with the API, and also mounted at the end of the
main app's routes (``hongyan serve``). Per request:

* the path must have a link code's shape, else 404 without a database read;
* an address over its miss limit (unknown codes of the right shape;
  :class:`~hongyan.tracking.ratelimit.MissLimiter`) gets 429;
* the link is found by code (a per-process cache; codes never change their link), unknown → 404
  page, expired → 410 with a friendly page in Chinese (and English);
* the click (time, link, campaign or journey, variant or journey step, contact, HMAC of the
  address, user agent, bot kind) is committed through the group-commit
  :class:`~hongyan.tracking.clicks.ClickRecorder`, and only then is the 302 sent: an answered
  click is a stored click. A journey's link is handled exactly as a campaign's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import html
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hongyan.clock import Clock
from hongyan.db.scope import unscoped
from hongyan.db.tables import links
from hongyan.security.keyring import KeyRing
from hongyan.tracking import bots, codes
from hongyan.tracking.clicks import Click, ClickRecorder
from hongyan.tracking.ratelimit import MissLimiter

log = logging.getLogger("hongyan.redirector")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

IP_CONTEXT = "clicks:ip"
CACHE_SIZE = 200_000


@dataclass(frozen=True)
class LinkInfo:
    id: int
    tenant_id: int
    campaign_id: int | None
    variant: str | None
    contact_id: int | None
    target: str
    expires_at: datetime | None
    number_province: str | None = None
    number_city: str | None = None
    carrier: str | None = None
    journey_id: int | None = None  # a journey's link: handled as a campaign's, counted for it


def _page(title_zh: str, text_zh: str, text_en: str) -> bytes:
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title_zh)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;"
        "padding:0 1rem;color:#333;text-align:center}h1{font-size:1.4rem}"
        "p.en{color:#888;font-size:.9rem}</style></head><body>"
        f"<h1>{html.escape(title_zh)}</h1><p>{html.escape(text_zh)}</p>"
        f'<p class="en">{html.escape(text_en)}</p></body></html>'
    ).encode()


EXPIRED_PAGE = _page(
    "活动已结束",
    "这个链接已过期，感谢您的关注。欢迎留意我们的下一次活动。",
    "This link has expired. Thank you for your interest.",
)
NOT_FOUND_PAGE = _page(
    "链接不存在", "请检查短信中的链接是否完整。", "This link does not exist. Please check it."
)
LIMITED_PAGE = _page("请求过于频繁", "请稍后再试。", "Too many requests. Please try again later.")
UNAVAILABLE_PAGE = _page("服务繁忙", "请稍后再试。", "The service is busy. Please try again.")


class Redirector:
    """The redirect handler and its state (cache, miss limiter, click recorder)."""

    def __init__(
        self,
        engine: Engine,
        keyring: KeyRing,
        clock: Clock,
        *,
        limiter: MissLimiter | None = None,
        trust_forwarded: bool = False,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.clock = clock
        self.recorder = ClickRecorder(engine)
        self.limiter = limiter or MissLimiter()
        self.trust_forwarded = trust_forwarded
        self._cache: dict[str, LinkInfo] = {}
        # HMAC of an address (under the key ring's index key; 16 bytes kept), cached: clicks
        # come from far fewer addresses than clicks (carrier NAT, office networks).
        self._ip_hash = functools.lru_cache(maxsize=65536)(self._hash_address)
        self._wanted: dict[str, asyncio.Future[LinkInfo | None]] = {}
        self._loader: asyncio.Task[None] | None = None
        self._lookups = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="links")

    def _hash_address(self, address: str) -> bytes:
        return self.keyring.blind_index(address, IP_CONTEXT)[:16]

    # -- lookups ----------------------------------------------------------------------------
    # Codes not in the cache are looked up together: every request that misses the cache while
    # a lookup runs joins the next one (one ``WHERE code IN (…)`` per batch, in one thread), so
    # a burst of new codes costs a few queries, not one each.
    _LOOKUP = unscoped(
        sa.select(
            links.c.code,
            links.c.id,
            links.c.tenant_id,
            links.c.campaign_id,
            links.c.variant,
            links.c.contact_id,
            links.c.target,
            links.c.expires_at,
            links.c.number_province,
            links.c.number_city,
            links.c.carrier,
            links.c.journey_id,
        ).where(links.c.code.in_(sa.bindparam("codes", expanding=True))),
        "redirect: the code (globally unique) names the tenant",
    )

    def _load(self, wanted: list[str]) -> dict[str, LinkInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(self._LOOKUP, {"codes": wanted}).all()
        return {r[0]: LinkInfo(*r[1:]) for r in rows}

    async def link(self, code: str) -> LinkInfo | None:
        info = self._cache.get(code)
        if info is not None:
            return info
        future = self._wanted.get(code)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self._wanted[code] = future
            if self._loader is None or self._loader.done():
                self._loader = loop.create_task(self._load_waiting())
        return await asyncio.shield(future)

    async def _load_waiting(self) -> None:
        loop = asyncio.get_running_loop()
        while self._wanted:
            batch = dict(list(self._wanted.items())[:1000])
            for code in batch:
                del self._wanted[code]
            try:
                found = await loop.run_in_executor(self._lookups, self._load, list(batch))
            except Exception as exc:
                for future in batch.values():
                    if not future.done():
                        future.set_exception(exc)
                continue
            if len(self._cache) + len(found) > CACHE_SIZE:
                self._cache.clear()
            self._cache.update(found)
            for code, future in batch.items():
                if not future.done():
                    future.set_result(found.get(code))

    # -- ASGI -------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/healthz":
            await _respond(send, 200, b"ok", b"text/plain; charset=utf-8")
            return
        await self.handle(scope, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.recorder.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _address(self, scope: Scope) -> str:
        if self.trust_forwarded:
            for name, value in scope.get("headers", ()):
                if name == b"x-forwarded-for":
                    return str(value.decode("latin-1").split(",")[0].strip())
        client = scope.get("client")
        return str(client[0]) if client else ""

    async def handle(self, scope: Scope, send: Send) -> None:
        method: str = scope["method"]
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"", b"text/plain", extra=[(b"allow", b"GET, HEAD")])
            return
        head = method == "HEAD"
        address = self._address(scope)
        addr_key = address.encode()
        now_mono = time.monotonic()
        if self.limiter.blocked(addr_key, now_mono):
            await _respond(send, 429, LIMITED_PAGE, head=head, extra=[(b"retry-after", b"60")])
            return
        code = scope["path"][1:]
        if not codes.is_link_code(code):  # /favicon.ico and the like: not a guess at a code
            await _respond(send, 404, NOT_FOUND_PAGE, head=head)
            return
        info = await self.link(code)
        if info is None:
            self.limiter.miss(addr_key, now_mono)
            await _respond(send, 404, NOT_FOUND_PAGE, head=head)
            return
        now = self.clock.now()
        if info.expires_at is not None and info.expires_at <= now:
            await _respond(send, 410, EXPIRED_PAGE, head=head)
            return
        user_agent = ""
        for name, value in scope.get("headers", ()):
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
                break
        click = Click(
            tenant_id=info.tenant_id,
            link_id=info.id,
            campaign_id=info.campaign_id,
            variant=info.variant,
            contact_id=info.contact_id,
            at=now,
            ip_hash=self._ip_hash(address) if address else None,
            user_agent=user_agent,
            bot=bots.classify(method, user_agent),
            number_province=info.number_province,
            number_city=info.number_city,
            carrier=info.carrier,
            journey_id=info.journey_id,
        )
        try:
            await self.recorder.record(click)
        except Exception:
            log.exception("could not store a click")
            await _respond(send, 503, UNAVAILABLE_PAGE, head=head)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [
                    (b"location", info.target.encode()),
                    (b"cache-control", b"no-store"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"text/html; charset=utf-8",
    *,
    head: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


class _Mounted:
    """The redirect as a raw ASGI endpoint (Starlette passes instances through unwrapped)."""

    def __init__(self, redirector: Redirector) -> None:
        self.redirector = redirector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.redirector.handle(scope, send)


def create(runtime: Any, *, trust_forwarded: bool = False) -> Redirector:
    """The redirector for a :class:`~hongyan.runtime.Runtime`."""
    return Redirector(
        runtime.engine, runtime.keyring, runtime.clock, trust_forwarded=trust_forwarded
    )


def from_environment() -> Redirector:
    """The redirector of a worker process (``hongyan redirector --workers N``): each worker
    builds its own runtime from the environment, as the command did."""
    import os

    from hongyan.runtime import Runtime
    from hongyan.settings import get_settings

    settings = get_settings()
    runtime = Runtime.create(settings, generate_secrets=settings.env != "production")
    return create(runtime, trust_forwarded=os.environ.get("HONGYAN_TRUST_FORWARDED") == "1")


def install(app: Any, runtime: Any) -> Redirector:
    """Mount ``/{code}`` at the end of the main app's routes (after the API and the console)."""
    from starlette.routing import Route

    redirector = create(runtime)
    app.router.routes.append(Route("/{code}", _Mounted(redirector), methods=["GET", "HEAD"]))
    app.state.redirector = redirector
    return redirector
