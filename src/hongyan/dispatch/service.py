"""The long-running dispatcher: keep a channel bound, pass over the outbox, reconnect on loss.

``hongyan dispatcher`` runs one; ``hongyan serve`` and ``hongyan demo`` run one inside the server
when a channel is configured (``HONGYAN_SMPP_URL=smpp://system_id:password@host:port``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from urllib.parse import unquote, urlsplit

from hongyan.channels.smpp.client import SmppClient, SmppConfig, SmppError
from hongyan.dispatch.dispatcher import Dispatcher
from hongyan.errors import ConfigurationError
from hongyan.runtime import Runtime

log = logging.getLogger("hongyan.dispatch")


def parse_smpp_url(url: str) -> SmppConfig:
    parts = urlsplit(url)
    if parts.scheme != "smpp" or not parts.hostname or not parts.username:
        raise ConfigurationError(
            "HONGYAN_SMPP_URL must look like smpp://system_id:password@host:port",
            "HONGYAN_SMPP_URL 格式应为 smpp://system_id:password@host:port",
        )
    return SmppConfig(
        host=parts.hostname,
        port=parts.port or 2775,
        system_id=unquote(parts.username),
        password=unquote(parts.password or ""),
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def run(
    runtime: Runtime,
    config: SmppConfig,
    stop: asyncio.Event,
    *,
    channel: str = "smpp",
    idle: float = 0.2,
    reconnect_max: float = 30.0,
) -> None:
    """Dispatch until ``stop`` is set; reconnects with capped exponential backoff."""
    holder: list[Dispatcher] = []

    async def on_report(report: object) -> None:
        await holder[0].on_report(report)  # type: ignore[arg-type]

    delay = 0.5
    while not stop.is_set():
        client = SmppClient(config, on_report=on_report)
        dispatcher = Dispatcher(runtime, channel, client, owner=worker_name())
        holder[:] = [dispatcher]
        try:
            await client.connect()
        except (OSError, SmppError) as exc:
            log.warning(
                "channel %s: cannot bind to %s:%s (%s); retry in %.1fs",
                channel,
                config.host,
                config.port,
                exc,
                delay,
            )
            await _sleep(stop, delay)
            delay = min(reconnect_max, delay * 2)
            continue
        log.info("channel %s bound to %s:%s", channel, config.host, config.port)
        delay = 0.5
        try:
            while not stop.is_set() and not client.closed.is_set():
                if await dispatcher.run_once() == 0:
                    await _sleep(stop, idle)
        finally:
            await dispatcher.flush_reports()
            await client.close()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
