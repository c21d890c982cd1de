"""The long-running dispatcher: keep the channels up, pass over the outbox, keep house.

``hongyan dispatcher`` runs one; ``hongyan serve`` and ``hongyan demo`` run one inside the server.
Channels come from the ``channels`` table (``hongyan channels add``), re-read every
``reload_every`` seconds so an operator's change needs no restart, plus the one named by
``HONGYAN_SMPP_URL`` (``smpp://system_id:password@host:port``, channel name ``smpp``) when set.
Every ``heartbeat_every`` seconds the dispatcher writes its heartbeat to the ``dispatchers``
table and divides each channel's rate by the number of live dispatchers; it also expires
submitted messages whose receipts never came (validity + ``receipt_grace``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import timedelta
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from hongyan.campaigns.windows import QuietHours, Rules, WindowInvalid
from hongyan.channels import service as channel_store
from hongyan.channels.base import ChannelSpec
from hongyan.channels.service import Route
from hongyan.db.engine import BEGIN_IMMEDIATE, INDEX_PLANS
from hongyan.db.scope import unscoped
from hongyan.db.tables import dispatchers, policies, tenants
from hongyan.dispatch import receipts
from hongyan.dispatch.dispatcher import ChannelPool, Dispatcher
from hongyan.errors import ConfigurationError
from hongyan.runtime import Runtime

log = logging.getLogger("hongyan.dispatch")
LIVE_FOR = timedelta(seconds=15)


def parse_smpp_url(url: str, *, name: str = "smpp") -> ChannelSpec:
    parts = urlsplit(url)
    if parts.scheme != "smpp" or not parts.hostname or not parts.username:
        raise ConfigurationError(
            "HONGYAN_SMPP_URL must look like smpp://system_id:password@host:port",
            "HONGYAN_SMPP_URL 格式应为 smpp://system_id:password@host:port",
        )
    return ChannelSpec(
        name=name,
        kind="smpp",
        config={
            "host": parts.hostname,
            "port": parts.port or 2775,
            "system_id": unquote(parts.username),
        },
        secrets={"password": unquote(parts.password or "")},
    )


def quiet_hours(conn: sa.Connection) -> dict[int, tuple[ZoneInfo, Rules]]:
    """Every tenant's time zone and quiet hours, from its policy (read on each reload)."""
    rows = conn.execute(
        unscoped(
            sa.select(
                tenants.c.id, tenants.c.timezone, policies.c.quiet_start, policies.c.quiet_end
            ).join(policies, policies.c.tenant_id == tenants.c.id),
            "the dispatcher holds every tenant's quiet hours",
        )
    )
    found: dict[int, tuple[ZoneInfo, Rules]] = {}
    for tenant_id, zone, start, end in rows:
        try:
            found[tenant_id] = (ZoneInfo(zone), Rules(QuietHours.parse(start, end)))
        except (WindowInvalid, ValueError, KeyError) as exc:
            log.error(
                "tenant %s: quiet hours %s–%s in %s unusable (%s)", tenant_id, start, end, zone, exc
            )
    return found


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Housekeeping:
    """The dispatcher's periodic database chores, each in its own short transaction."""

    def __init__(self, runtime: Runtime, name: str) -> None:
        self.runtime = runtime
        self.name = name
        self.started = runtime.clock.now()

    def heartbeat(self, channels: list[str]) -> int:
        """Write this dispatcher's heartbeat; returns how many dispatchers are live."""
        now = self.runtime.clock.now()
        why = "dispatchers are platform machinery"
        with self.runtime.engine.begin() as conn:
            done = conn.execute(
                unscoped(
                    sa.update(dispatchers)
                    .where(dispatchers.c.name == self.name)
                    .values(seen_at=now, channels=channels),
                    why,
                )
            )
            if done.rowcount == 0:
                conn.execute(
                    unscoped(sa.insert(dispatchers), why),
                    {
                        "name": self.name,
                        "started_at": self.started,
                        "seen_at": now,
                        "channels": channels,
                    },
                )
            conn.execute(
                unscoped(
                    sa.delete(dispatchers).where(dispatchers.c.seen_at < now - 20 * LIVE_FOR), why
                )
            )
            return int(
                conn.execute(
                    unscoped(
                        sa.select(sa.func.count()).where(dispatchers.c.seen_at >= now - LIVE_FOR),
                        why,
                    )
                ).scalar_one()
            )

    def leave(self) -> None:
        with self.runtime.engine.begin() as conn:
            conn.execute(
                unscoped(
                    sa.delete(dispatchers).where(dispatchers.c.name == self.name),
                    "dispatchers are platform machinery",
                )
            )

    def load(
        self, extra: list[ChannelSpec]
    ) -> tuple[
        list[ChannelSpec], dict[int, list[Route]], dict[int, str], dict[int, tuple[ZoneInfo, Rules]]
    ]:
        with self.runtime.engine.connect() as conn:
            specs = channel_store.load_specs(conn, self.runtime.keyring)
            routes = channel_store.all_routes(conn)
            exts = {
                r.id: r.sms_ext
                for r in conn.execute(
                    sa.select(tenants.c.id, tenants.c.sms_ext).where(tenants.c.sms_ext.is_not(None))
                )
            }
            quiet = quiet_hours(conn)
        names = {s.name for s in specs}
        return specs + [s for s in extra if s.name not in names], routes, exts, quiet

    def sweep(self, grace: timedelta) -> int:
        with self.runtime.engine.connect() as conn:
            conn.execution_options(**{BEGIN_IMMEDIATE: True, INDEX_PLANS: True})
            with conn.begin():
                return receipts.expire_unreceipted(conn, self.runtime.clock, grace=grace)


async def run(
    runtime: Runtime,
    stop: asyncio.Event,
    *,
    extra: list[ChannelSpec] | None = None,
    idle: float = 0.2,
    reload_every: float = 10.0,
    heartbeat_every: float = 5.0,
    receipt_grace: timedelta | None = None,
    batch: int | None = None,
    name: str | None = None,
) -> None:
    """Dispatch until ``stop`` is set; batch, lease and grace default to the settings."""
    settings = runtime.settings
    batch = batch or settings.dispatch_batch
    grace = receipt_grace or timedelta(seconds=settings.receipt_grace_seconds)
    extra = list(extra or [])
    if runtime.settings.smpp_url and not any(s.name == "smpp" for s in extra):
        extra.append(parse_smpp_url(runtime.settings.smpp_url))
    name = name or worker_name()
    chores = Housekeeping(runtime, name)
    pool = ChannelPool(runtime)
    dispatcher = Dispatcher(
        runtime,
        pool,
        owner=name,
        batch=batch,
        lease=timedelta(seconds=settings.dispatch_lease_seconds),
    )
    loop = asyncio.get_running_loop()
    due = {"reload": 0.0, "beat": 0.0}

    async def chores_once() -> None:
        now = loop.time()
        if now >= due["reload"]:
            specs, routes, exts, quiet = await dispatcher.db_call(chores.load, extra)
            dispatcher.routes, dispatcher.extensions, dispatcher.quiet = routes, exts, quiet
            await pool.sync(specs)
            due["reload"] = now + reload_every
        if now >= due["beat"]:
            live = await dispatcher.db_call(chores.heartbeat, sorted(pool.channels))
            pool.set_live(live)
            expired = await dispatcher.db_call(chores.sweep, grace)
            if expired:
                log.info("expired %d messages whose receipts never came", expired)
            due["beat"] = now + heartbeat_every

    async def keep_house() -> None:
        while not stop.is_set():
            await _sleep(stop, max(0.05, min(due.values()) - loop.time()))
            if not stop.is_set():
                await chores_once()

    try:
        await chores_once()  # channels first, then messages
        # The dispatcher's own loop (claims, submits, records, receipts) and the chores side by
        # side; either failing stops the other.
        work = [
            asyncio.create_task(dispatcher.run(stop, idle=idle)),
            asyncio.create_task(keep_house()),
        ]
        try:
            await asyncio.gather(*work)
        finally:
            for task in work:
                task.cancel()
            await asyncio.gather(*work, return_exceptions=True)
    finally:
        await dispatcher.flush()
        await pool.stop()
        await dispatcher.flush()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(chores.leave)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
