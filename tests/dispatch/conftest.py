"""Helpers for dispatcher tests: a sandbox SMSC and a channel pool bound to it, over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from hongyan.channels.base import ChannelSpec
from hongyan.channels.sandbox.smsc import SandboxConfig, SandboxSmsc
from hongyan.dispatch import outbox
from hongyan.dispatch.dispatcher import ChannelPool, Dispatcher
from hongyan.dispatch.outbox import NewMessage
from hongyan.dispatch.states import Lane
from hongyan.runtime import Runtime
from hongyan.tenants import service
from tests.content.support import approved_version

CREDS = {"hongyan": "pw-1"}


def make_tenant(runtime: Runtime, slug: str = "tea") -> int:
    with runtime.engine.begin() as conn:
        return service.create_tenant(conn, runtime.clock, slug=slug, name=slug).id


def put(runtime: Runtime, tenant: int, to: str, text: str, **kw: object) -> int:
    if kw.get("lane") is Lane.MARKETING and "template_version_id" not in kw:
        # Marketing enters the outbox with an approved template only (hongyan.content.gate).
        kw["template_version_id"] = approved_version(runtime, tenant, text)
    with runtime.engine.begin() as conn:
        return outbox.enqueue(
            conn, runtime.clock, runtime.keyring, tenant, NewMessage(to, text, **kw), max_parts=6
        )[0]  # type: ignore[arg-type]


def state(runtime: Runtime, tenant: int, mid: int) -> dict[str, object]:
    with runtime.engine.connect() as conn:
        return outbox.get(conn, tenant, mid)


def smpp_spec(name: str, host: str, port: int, **kw: object) -> ChannelSpec:
    config = {"host": host, "port": port, "system_id": "hongyan", "source_addr": "10690"}
    config.update(kw.pop("config", {}))  # type: ignore[call-overload]
    return ChannelSpec(
        name=name, kind="smpp", config=config, secrets={"password": CREDS["hongyan"]}, **kw
    )  # type: ignore[arg-type]


@asynccontextmanager
async def sandboxes(*configs: SandboxConfig) -> AsyncIterator[list[tuple[SandboxSmsc, int]]]:
    started = []
    try:
        for cfg in configs:
            smsc = SandboxSmsc(cfg)
            _, port = await smsc.start()
            started.append((smsc, port))
        yield started
    finally:
        for smsc, _ in started:
            await smsc.stop()


@asynccontextmanager
async def dispatcher_on(runtime: Runtime, specs: list[ChannelSpec]) -> AsyncIterator[Dispatcher]:
    pool = ChannelPool(runtime)
    await pool.sync(specs)
    for channel in pool.channels.values():
        await channel.wait_ready(5)  # type: ignore[attr-defined]
    d = Dispatcher(runtime, pool, owner="d1")
    try:
        yield d
    finally:
        await pool.stop()
        await d.flush()


async def drain(d: Dispatcher, smsc: SandboxSmsc, receipts: int, rounds: int = 500) -> None:
    """Wait until the sandbox sent ``receipts`` receipts and the dispatcher applied them."""
    for _ in range(rounds):
        await d.flush()
        if len(smsc.receipts) >= receipts and not d.pool.reports:
            await asyncio.sleep(0.05)
            await d.flush()
            return
        await asyncio.sleep(0.01)
