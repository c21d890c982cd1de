"""A dispatcher outlives what a database does in normal life: its connections are cut under it
again and again (as a server restart or a network blip would), and it goes on until every
message is final, each sent once."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hongyan.channels.sandbox.smsc import SandboxConfig
from hongyan.clock import SystemClock
from hongyan.db.scope import unscoped
from hongyan.db.tables import messages
from hongyan.dispatch.dispatcher import ChannelPool, Dispatcher
from hongyan.runtime import Runtime
from tests.conftest import pg_admin
from tests.dispatch.conftest import CREDS, make_tenant, put, sandboxes, smpp_spec, state

N = 300
CUTS = 6


def test_cut_connections_do_not_stop_the_dispatcher(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("cutting a server's connections is PostgreSQL's (SQLite has none)")
    admin = pg_admin()
    assert admin is not None
    database = runtime.engine.url.database
    runtime.clock = SystemClock()
    tenant = make_tenant(runtime)
    ids = [put(runtime, tenant, f"+86139{i:08d}", "【鸿雁】您的验证码是 1234") for i in range(N)]

    def open_ids() -> int:
        with runtime.engine.connect() as conn:
            return int(
                conn.execute(
                    unscoped(
                        sa.select(sa.func.count()).where(
                            messages.c.state.in_(["planned", "sending", "submitted"])
                        ),
                        "the test looks at every message",
                    )
                ).scalar_one()
            )

    def cut() -> int:
        # Every server process of the test database but the admin's: the dispatcher's pool.
        with admin.connect() as conn:
            return len(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).all()
            )

    async def scenario() -> tuple[list[object], int]:
        # Submits answered a little late, so the run lasts long enough to be cut several times.
        config = SandboxConfig(credentials=CREDS, late_rate=1.0, late_delay=0.05)
        async with sandboxes(config) as [(smsc, port)]:
            pool = ChannelPool(runtime)
            await pool.sync([smpp_spec("main", "127.0.0.1", port, window=8)])
            for channel in pool.channels.values():
                await channel.wait_ready(5)  # type: ignore[attr-defined]
            d = Dispatcher(runtime, pool, owner="d1", batch=40, lease=timedelta(seconds=5))
            stop = asyncio.Event()
            running = asyncio.create_task(d.run(stop, idle=0.05))
            cuts = 0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                assert not running.done(), running.exception()
                if cuts < CUTS:
                    cuts += await asyncio.to_thread(cut) > 0
                elif await asyncio.to_thread(open_ids) == 0:
                    break
            stop.set()
            await running
            await pool.stop()
            return list(smsc.submits), cuts

    submits, cuts = asyncio.run(asyncio.wait_for(scenario(), 180))
    assert cuts == CUTS
    assert {state(runtime, tenant, m)["state"] for m in ids} == {"delivered"}
    # Cutting a connection rolls its transaction back: nothing that reached the carrier is
    # claimed again, so every message was sent exactly once.
    assert len(submits) == N
