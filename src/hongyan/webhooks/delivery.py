"""The webhook worker: claim due deliveries under a lease, POST them signed, log every attempt.

One pass (:meth:`Worker.pass_once`):

1. **Claim** up to ``batch`` deliveries that are ``pending`` and due, or ``sending`` with a lease
   that ran out (a worker died mid-pass), in one statement: ``UPDATE … WHERE id IN (SELECT …
   FOR UPDATE SKIP LOCKED) RETURNING`` on PostgreSQL, so any number of workers take disjoint
   batches; SQLite's single writer gives the same to its one process. The claim sets
   ``sending``, the lease and ``attempts + 1`` (an attempt is counted when it starts, so a worker
   that keeps dying on one delivery still runs out of attempts).
2. **Send** each, at most ``concurrency`` at a time, with :mod:`httpx` (no redirects followed, no
   proxy from the environment, no keep-alive, a deadline on the whole request). Unless
   ``HONGYAN_WEBHOOK_ALLOW_PRIVATE`` is set, the host is resolved first, every address is
   checked (:func:`hongyan.webhooks.policy.forbidden_address`) and the request goes to the
   checked address, with the original ``Host`` header and TLS server name, so a DNS answer that
   changes between check and connect cannot redirect it inside the network. Headers:
   ``Content-Type: application/json``, ``X-Hongyan-Event``, ``X-Hongyan-Delivery`` (the delivery
   id, stable across retries: de-duplicate on it), ``X-Hongyan-Attempt`` and
   ``X-Hongyan-Signature`` (:mod:`hongyan.webhooks.signing`).
3. **Record**, in one transaction: a ``webhook_attempts`` row per request made (status code or
   error, duration) and the delivery's new state, compare-and-set on this worker's lease:
   ``delivered`` on any 2xx; otherwise ``pending`` again after
   :func:`~hongyan.webhooks.policy.retry_delay`, or ``dead`` after
   :data:`~hongyan.webhooks.policy.MAX_ATTEMPTS`. A delivery whose endpoint was deactivated is
   ``dead`` without a request; one whose endpoint was deleted is gone (its rows went with it).

Delivery is at least once: a worker that dies after the receiver answered but before step 3
committed leaves the delivery to be sent again when its lease runs out. Order is not kept
between deliveries (a retried one arrives after newer ones): use the payload's timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlunsplit

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan import __version__
from hongyan.clock import Clock
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import (
    inbound_messages,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)
from hongyan.errors import HongyanError
from hongyan.runtime import Runtime
from hongyan.security.keyring import KeyRing, KeyRingError
from hongyan.webhooks.policy import MAX_ATTEMPTS, check_url_shape, forbidden_address, retry_delay
from hongyan.webhooks.service import secret_context
from hongyan.webhooks.signing import DEFAULT_TOLERANCE, HEADER, sign, verify_signature

__all__ = [
    "DEFAULT_TOLERANCE",
    "Claimed",
    "Outcome",
    "Worker",
    "claim",
    "record",
    "run",
    "verify_signature",
]

log = logging.getLogger("hongyan.webhooks")
WHY = "the webhook worker serves every tenant"
USER_AGENT = f"hongyan-webhooks/{__version__}"
ERROR_CHARS = 300


@dataclass(frozen=True)
class Claimed:
    id: int
    tenant_id: int
    endpoint_id: int
    event: str
    payload: Any
    attempts: int  # including the one about to be made
    url: str | None  # None: the endpoint is gone
    secret_cipher: bytes | None
    active: bool


@dataclass(frozen=True)
class Outcome:
    delivery: Claimed
    ok: bool
    status_code: int | None = None
    error: str | None = None
    duration_ms: int = 0
    sent: bool = True  # False: no request was made (endpoint deactivated or gone)


class Refused(Exception):
    """This attempt may not be made (address refused, URL no longer acceptable)."""


def claim(
    conn: Connection, clock: Clock, *, owner: str, limit: int, lease: timedelta
) -> list[Claimed]:
    """Take up to ``limit`` due deliveries (or ones whose lease ran out), oldest due first."""
    now = clock.now()
    d = webhook_deliveries.c
    due = sa.or_(
        sa.and_(d.state == "pending", d.next_at <= now),
        sa.and_(d.state == "sending", d.lease_until < now),
    )
    pick = sa.select(d.id).where(due).order_by(d.next_at, d.id).limit(limit)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        sa.update(webhook_deliveries)
        .where(d.id.in_(pick.scalar_subquery()))
        .values(
            state="sending", lease_owner=owner, lease_until=now + lease, attempts=d.attempts + 1
        )
        .returning(d.id, d.tenant_id, d.endpoint_id, d.event, d.payload, d.attempts)
    )
    rows = conn.execute(unscoped(stmt, WHY)).all()
    if not rows:
        return []
    e = webhook_endpoints.c
    endpoints = {
        r.id: r
        for r in conn.execute(
            unscoped(
                sa.select(e.id, e.url, e.secret_cipher, e.active).where(
                    e.id.in_({r.endpoint_id for r in rows})
                ),
                WHY,
            )
        )
    }
    out = []
    for r in sorted(rows, key=lambda r: r.id):
        ep = endpoints.get(r.endpoint_id)
        out.append(
            Claimed(
                id=r.id,
                tenant_id=r.tenant_id,
                endpoint_id=r.endpoint_id,
                event=r.event,
                payload=r.payload,
                attempts=r.attempts,
                url=ep.url if ep else None,
                secret_cipher=bytes(ep.secret_cipher) if ep else None,
                active=bool(ep.active) if ep else False,
            )
        )
    return out


def record(
    conn: Connection,
    clock: Clock,
    *,
    owner: str,
    outcomes: Sequence[Outcome],
    rng: random.Random,
    max_attempts: int = MAX_ATTEMPTS,
) -> None:
    """Write the outcomes of one pass: new states (only while ``owner`` holds the lease), then
    the attempt log for the deliveries that still exist."""
    if not outcomes:
        return
    now = clock.now()
    updates = []
    for o in outcomes:
        c = o.delivery
        row: dict[str, Any] = {
            "_id": c.id,
            "_status": o.status_code,
            "_error": (o.error or "")[:ERROR_CHARS] or None,
            "_delivered_at": None,
            "_next_at": now,
        }
        if o.ok:
            row["_state"] = "delivered"
            row["_delivered_at"] = now
        elif not o.sent or c.attempts >= max_attempts:
            row["_state"] = "dead"
        else:
            row["_state"] = "pending"
            row["_next_at"] = now + retry_delay(c.attempts, rng)
        updates.append(row)
    d = webhook_deliveries.c
    # Writes first: on SQLite that takes the write lock before anything is read; on PostgreSQL
    # the updated rows are locked against a concurrent delete until this transaction ends.
    conn.execute(
        unscoped(
            sa.update(webhook_deliveries)
            .where(
                d.id == sa.bindparam("_id"),
                d.state == "sending",
                d.lease_owner == owner,
            )
            .values(
                state=sa.bindparam("_state"),
                next_at=sa.bindparam("_next_at"),
                last_status=sa.bindparam("_status"),
                last_error=sa.bindparam("_error"),
                delivered_at=sa.bindparam("_delivered_at"),
                lease_owner=None,
                lease_until=None,
            ),
            WHY,
        ),
        updates,
    )
    sent = [o for o in outcomes if o.sent]
    if not sent:
        return
    alive = sa.select(d.id).where(d.id.in_([o.delivery.id for o in sent]))
    if conn.dialect.name == "postgresql":
        alive = alive.with_for_update(read=True, key_share=True)  # FOR KEY SHARE
    existing = set(conn.execute(unscoped(alive, WHY)).scalars())
    by_tenant: dict[int, list[dict[str, Any]]] = {}
    for o in sent:
        if o.delivery.id in existing:
            by_tenant.setdefault(o.delivery.tenant_id, []).append(
                {
                    "delivery_id": o.delivery.id,
                    "at": now,
                    "status_code": o.status_code,
                    "error": (o.error or "")[:ERROR_CHARS] or None,
                    "duration_ms": o.duration_ms,
                }
            )
    for tenant_id, rows in by_tenant.items():
        TenantScope(tenant_id).insert_many(conn, webhook_attempts, rows)


def _reply_key(c: Claimed) -> tuple[int, int] | None:
    reply = c.payload.get("reply") if isinstance(c.payload, dict) else None
    if isinstance(reply, dict) and reply.get("from") is None and isinstance(reply.get("id"), int):
        return (c.tenant_id, reply["id"])
    return None


def fill_numbers(conn: Connection, keyring: KeyRing, claimed: list[Claimed]) -> list[Claimed]:
    """Restore each reply's full number (``reply.from``, stored as null, see
    :func:`hongyan.webhooks.events.at_rest`) from the encrypted inbox row of the same tenant.
    A reply whose inbox row is gone is sent with ``from: null``."""
    keys = {k for k in map(_reply_key, claimed) if k is not None}
    if not keys:
        return claimed
    i = inbound_messages.c
    stmt = sa.select(i.id, i.tenant_id, i.phone_cipher).where(i.id.in_({k[1] for k in keys}))
    numbers: dict[tuple[int, int], str] = {}
    for r in conn.execute(unscoped(stmt, WHY)):
        try:
            numbers[(r.tenant_id, r.id)] = keyring.decrypt(
                bytes(r.phone_cipher), f"tenant:{r.tenant_id}:phone"
            )
        except KeyRingError:
            log.warning("inbox row %s: the number does not decrypt; sent as null", r.id)
    out = []
    for c in claimed:
        key = _reply_key(c)
        if key is not None and key in numbers:
            reply = {**c.payload["reply"], "from": numbers[key]}
            c = replace(c, payload={**c.payload, "reply": reply})
        out.append(c)
    return out


@dataclass(frozen=True)
class Target:
    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to now (the system resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


Resolve = Callable[[str, int], Awaitable[list[str]]]


async def pin(
    url: str, *, https_only: bool, allow_private: bool, resolve: Resolve = resolve_host
) -> Target:
    """Where to send: the URL as stored when private addresses are allowed; otherwise the
    host resolved now, every address checked, and the request aimed at the checked address."""
    try:
        parts = check_url_shape(url, https_only=https_only)
    except HongyanError as exc:
        raise Refused(f"URL no longer acceptable: {exc.message_en}") from exc
    if allow_private:
        return Target(url, {}, {})
    host = parts.hostname or ""
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    try:
        found = await resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise Refused(f"cannot resolve {host}: {exc}") from exc
    addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
    if not addresses:
        raise Refused(f"cannot resolve {host}")
    refused = sorted({str(a) for a in addresses if forbidden_address(a)})
    if refused:
        raise Refused(f"{host} resolves to a refused address ({', '.join(refused)})")
    ip = addresses[0]
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    pinned = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path, parts.query, ""))
    extensions: dict[str, Any] = {"sni_hostname": host} if https else {}
    return Target(pinned, {"Host": parts.netloc}, extensions)


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class Worker:
    """One worker's state: its lease name, its HTTP client, its limits."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        owner: str | None = None,
        batch: int = 50,
        concurrency: int = 16,
        timeout: float = 10.0,
        lease: timedelta | None = None,
        rng: random.Random | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        if batch < 1 or concurrency < 1 or timeout <= 0:
            raise ValueError("batch, concurrency and timeout must be positive")
        self.runtime = runtime
        self.owner = owner or f"webhooks:{socket.gethostname()}:{os.getpid()}"
        self.batch = batch
        self.timeout = timeout
        # Long enough for a whole pass of slow receivers, with room to record the results.
        self.lease = lease or timedelta(seconds=timeout * math.ceil(batch / concurrency) + 30)
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self.max_attempts = max_attempts
        self._slots = asyncio.Semaphore(concurrency)
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(timeout),
            # No keep-alive: connections go to pinned addresses, and one kept for one host
            # name must not carry a request (and its TLS server name) for another.
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
            headers={"User-Agent": USER_AGENT},
        )

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _claim(self) -> list[Claimed]:
        with self.runtime.engine.begin() as conn:
            claimed = claim(
                conn, self.runtime.clock, owner=self.owner, limit=self.batch, lease=self.lease
            )
            return fill_numbers(conn, self.runtime.keyring, claimed)

    def _record(self, outcomes: list[Outcome]) -> None:
        with self.runtime.engine.begin() as conn:
            record(
                conn,
                self.runtime.clock,
                owner=self.owner,
                outcomes=outcomes,
                rng=self.rng,
                max_attempts=self.max_attempts,
            )

    async def pass_once(self) -> int:
        """Claim, send and record one batch; returns how many deliveries it handled."""
        claimed = await asyncio.to_thread(self._claim)
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._attempt(c) for c in claimed))
        await asyncio.to_thread(self._record, list(outcomes))
        return len(claimed)

    async def _attempt(self, c: Claimed) -> Outcome:
        if c.url is None or c.secret_cipher is None:
            return Outcome(c, ok=False, error="endpoint deleted", sent=False)
        if not c.active:
            return Outcome(c, ok=False, error="endpoint deactivated", sent=False)
        settings = self.runtime.settings
        async with self._slots:
            started = time.monotonic()
            status: int | None = None
            error: str | None = None
            try:
                secret = self.runtime.keyring.decrypt(c.secret_cipher, secret_context(c.tenant_id))
                target = await pin(
                    c.url,
                    https_only=settings.env == "production",
                    allow_private=settings.webhook_allow_private,
                )
                body = json.dumps(c.payload, ensure_ascii=False, separators=(",", ":")).encode()
                stamp = int(self.runtime.clock.now().timestamp())
                headers = {
                    **target.headers,
                    "Content-Type": "application/json",
                    "X-Hongyan-Event": c.event,
                    "X-Hongyan-Delivery": str(c.id),
                    "X-Hongyan-Attempt": str(c.attempts),
                    HEADER: sign(secret, body, stamp),
                }
                code, snippet = await asyncio.wait_for(
                    self._post(target, body, headers), self.timeout
                )
                status = code
                if 300 <= code < 400:
                    error = f"HTTP {code}: redirects are not followed"
                elif not 200 <= code < 300:
                    error = f"HTTP {code}" + (f": {snippet}" if snippet else "")
            except Refused as exc:
                error = f"refused: {exc}"
            except KeyRingError as exc:
                error = f"cannot decrypt the endpoint secret: {exc}"
            except (TimeoutError, httpx.TimeoutException) as exc:
                error = f"timed out after {self.timeout:g} s ({type(exc).__name__})"
            except httpx.HTTPError as exc:
                error = _error_text(exc)
            except OSError as exc:  # a socket error httpx did not wrap
                error = _error_text(exc)
            except Exception as exc:  # a bug must not strand the batch in `sending`
                log.exception("webhook delivery %s: unexpected error", c.id)
                error = f"internal error: {_error_text(exc)}"
            duration = int((time.monotonic() - started) * 1000)
        ok = status is not None and 200 <= status < 300
        return Outcome(c, ok=ok, status_code=status, error=error, duration_ms=duration)

    async def _post(self, target: Target, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        async with self._client.stream(
            "POST", target.url, content=body, headers=headers, extensions=target.extensions
        ) as response:
            snippet = b""
            if not 200 <= response.status_code < 300:
                async for chunk in response.aiter_bytes():
                    snippet += chunk
                    if len(snippet) >= 200:
                        break
            text = snippet[:200].decode("utf-8", errors="replace").strip()
            return response.status_code, " ".join(text.split())


async def run(runtime: Runtime, stop: asyncio.Event, *, idle: float = 0.5) -> None:
    """Deliver webhooks until ``stop`` is set: pass after pass, resting ``idle`` seconds when
    nothing is due and backing off (up to 30 s) while the database is unreachable."""
    failures = 0
    async with Worker(runtime) as worker:
        log.info("webhook worker %s started", worker.owner)
        while not stop.is_set():
            try:
                handled = await worker.pass_once()
                failures = 0
            except Exception:
                failures += 1
                handled = 0
                log.exception("webhook pass failed (%d in a row)", failures)
            if handled:
                continue
            wait = idle if not failures else min(30.0, idle * 2**failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
        log.info("webhook worker %s stopped", worker.owner)
