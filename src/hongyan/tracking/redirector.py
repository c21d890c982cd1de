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
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from hongyan.clock import Clock
from hongyan.security.keyring import KeyRing
from hongyan.tracking import bots, codes
from hongyan.tracking.clicks import WRITERS, ClickRecorder
from hongyan.tracking.ratelimit import MissLimiter
from hongyan.tracking.writer import RemoteWriter

log = logging.getLogger("hongyan.redirector")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

IP_CONTEXT = "clicks:ip"
CACHE_SIZE = 200_000


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3x, once per lookup
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

    def as_tuple(self) -> tuple[Any, ...]:  # crosses from the writer process as a plain tuple
        return (
            self.id, self.tenant_id, self.campaign_id, self.variant, self.contact_id,
            self.target, self.expires_at, self.number_province, self.number_city, self.carrier,
            self.journey_id,
        )  # fmt: skip


LINK_COLUMNS = (
    "code", "id", "tenant_id", "campaign_id", "variant", "contact_id", "target", "expires_at",
    "number_province", "number_city", "carrier", "journey_id",
)  # fmt: skip


def load_links(engine: Engine, wanted: list[str]) -> dict[str, LinkInfo]:
    """The links of ``wanted`` codes, by code. Unscoped on purpose: the code (globally unique)
    names the tenant. The driver's own cursor: SQLAlchemy's statement handling cost more than
    the lookup in this, the one query a click may need."""
    if not wanted:
        return {}
    cols = ", ".join(LINK_COLUMNS)
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cur = dbapi.cursor()
        try:
            if conn.dialect.name == "postgresql":
                cur.execute(f"SELECT {cols} FROM links WHERE code = ANY(%s)", (wanted,))  # noqa: S608
                rows = cur.fetchall()
            else:
                marks = ", ".join("?" for _ in wanted)
                cur.execute(f"SELECT {cols} FROM links WHERE code IN ({marks})", wanted)  # noqa: S608
                rows = [(*r[:7], _utc(r[7]), *r[8:]) for r in cur.fetchall()]
        finally:
            cur.close()
        conn.rollback()
    return {r[0]: LinkInfo(*r[1:]) for r in rows}


def _utc(value: Any) -> datetime | None:
    """A timestamp as SQLite's driver returns it (text, stored in UTC), timezone-aware."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


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
        remote: RemoteWriter | None = None,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.clock = clock
        # Standalone (``hongyan redirector``): lookups and commits in the writer process.
        self.remote = remote
        # To the writer process one batch at a time: its round trip is short, so with more in
        # flight batches only got smaller (31 clicks against 60 with one) and the rate lower.
        self.recorder = ClickRecorder(engine, remote=remote, writers=1 if remote else WRITERS)
        self.limiter = limiter or MissLimiter()
        self.trust_forwarded = trust_forwarded
        self._cache: dict[str, LinkInfo] = {}
        # HMAC of an address (under the key ring's index key; 16 bytes kept), cached: clicks
        # come from far fewer addresses than clicks (carrier NAT, office networks).
        self._ip_hash = functools.lru_cache(maxsize=65536)(self._hash_address)
        # Requests waiting for a code's lookup, each with its own future (a client that goes
        # away cancels only its own; asyncio.shield around one shared future cost more).
        self._wanted: dict[str, list[asyncio.Future[LinkInfo | None]]] = {}
        self._loader: asyncio.Task[None] | None = None
        self._lookups = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="links")

    def _hash_address(self, address: str) -> bytes:
        return self.keyring.blind_index(address, IP_CONTEXT)[:16]

    # -- lookups ----------------------------------------------------------------------------
    # Codes not in the cache are looked up together: every request that misses the cache while
    # a lookup runs joins the next one (one ``WHERE code IN (…)`` per batch, in one thread), so
    # a burst of new codes costs a few queries, not one each.
    async def link(self, code: str) -> LinkInfo | None:
        info = self._cache.get(code)
        if info is not None:
            return info
        loop = asyncio.get_running_loop()
        future: asyncio.Future[LinkInfo | None] = loop.create_future()
        waiting = self._wanted.get(code)
        if waiting is None:
            self._wanted[code] = [future]
            if self._loader is None or self._loader.done():
                self._loader = loop.create_task(self._load_waiting())
        else:
            waiting.append(future)
        return await future

    async def _load_waiting(self) -> None:
        loop = asyncio.get_running_loop()
        while self._wanted:
            batch = dict(list(self._wanted.items())[:1000])
            for code in batch:
                del self._wanted[code]
            try:
                if self.remote is not None:
                    got = await self.remote.call("load", list(batch))
                    found = {code: LinkInfo(*values) for code, values in got.items()}
                else:
                    found = await loop.run_in_executor(
                        self._lookups, load_links, self.engine, list(batch)
                    )
            except Exception as exc:
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                continue
            if len(self._cache) + len(found) > CACHE_SIZE:
                self._cache.clear()
            self._cache.update(found)
            for code, futures in batch.items():
                info = found.get(code)
                for future in futures:
                    if not future.done():
                        future.set_result(info)

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
                if self.remote is not None:
                    await self.remote.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.recorder.close()
                if self.remote is not None:
                    await self.remote.close()
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
        try:
            info = await self.link(code)
        except Exception:  # the lookup failed (the database, the writer process): not a 500
            log.exception("could not look up a link")
            await _respond(send, 503, UNAVAILABLE_PAGE, head=head)
            return
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
        # The click as the recorder stores it: its row in clicks.COLUMNS order.
        row = (
            info.id, info.campaign_id, info.variant, info.contact_id, now,
            self._ip_hash(address) if address else None, user_agent[:300],
            bots.classify(method, user_agent), info.number_province, info.number_city,
            info.carrier, info.journey_id,
        )  # fmt: skip
        try:
            await self.recorder.record(info.tenant_id, row)
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


def create(runtime: Any, *, trust_forwarded: bool = False, standalone: bool = False) -> Redirector:
    """The redirector for a :class:`~hongyan.runtime.Runtime`; ``standalone`` (the
    ``hongyan redirector`` process): its database work in a writer process of its own."""
    return Redirector(
        runtime.engine, runtime.keyring, runtime.clock, trust_forwarded=trust_forwarded,
        remote=RemoteWriter() if standalone else None,
    )  # fmt: skip


def from_environment() -> Redirector:
    """The redirector of a worker process (``hongyan redirector --workers N``): each worker
    builds its own runtime from the environment, as the command did."""
    import os

    from hongyan.runtime import Runtime
    from hongyan.settings import get_settings

    settings = get_settings()
    runtime = Runtime.create(settings, generate_secrets=settings.env != "production")
    return create(
        runtime, trust_forwarded=os.environ.get("HONGYAN_TRUST_FORWARDED") == "1", standalone=True
    )


def install(app: Any, runtime: Any) -> Redirector:
    """Mount ``/{code}`` at the end of the main app's routes (after the API and the console)."""
    from starlette.routing import Route

    redirector = create(runtime)
    app.router.routes.append(Route("/{code}", _Mounted(redirector), methods=["GET", "HEAD"]))
    app.state.redirector = redirector
    return redirector
