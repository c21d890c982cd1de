"""A live dispatcher keeps the leases of what it holds: a slow carrier is not a dead dispatcher."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from hongyan.channels.sandbox.smsc import SandboxConfig
from hongyan.clock import SystemClock
from hongyan.dispatch.dispatcher import ChannelPool, Dispatcher
from hongyan.runtime import Runtime
from tests.dispatch.conftest import CREDS, make_tenant, put, sandboxes, smpp_spec, state

N = 12
LEASE = timedelta(seconds=0.9)
LATE = 2.5  # every submit is answered this late: more than two leases


def test_a_slow_carrier_does_not_make_a_live_dispatcher_send_twice(runtime: Runtime) -> None:
    runtime.clock = SystemClock()  # leases run out in real time
    tenant = make_tenant(runtime)
    ids = [put(runtime, tenant, f"+861380000{i:04d}", "【鸿雁】您的订单已发货") for i in range(N)]

    def settled() -> bool:
        return all(state(runtime, tenant, m)["state"] not in ("planned", "sending") for m in ids)

    async def scenario() -> list[object]:
        config = SandboxConfig(credentials=CREDS, late_rate=1.0, late_delay=LATE)
        async with sandboxes(config) as [(smsc, port)]:
            pool = ChannelPool(runtime)
            await pool.sync([smpp_spec("slow", "127.0.0.1", port)])
            for channel in pool.channels.values():
                await channel.wait_ready(5)  # type: ignore[attr-defined]
            d = Dispatcher(runtime, pool, owner="d1", lease=LEASE)
            stop = asyncio.Event()
            running = asyncio.create_task(d.run(stop, idle=0.05))
            deadline = time.monotonic() + 60
            while not settled() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            stop.set()
            await running
            await pool.stop()
            return list(smsc.submits)

    submits = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert [state(runtime, tenant, m)["state"] for m in ids] == ["delivered"] * N
    # Without renewal the dispatcher took its own run-out leases over and sent each again.
    assert len(submits) == N
