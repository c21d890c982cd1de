"""A burst of concurrent writes through a real server on SQLite: every request is answered 2xx.

More requests than the server has worker threads, each a write transaction: before requests
took turns (hongyan.api.app._TakeTurnsOnSqlite), the threads filled with transactions waiting for
SQLite's write lock while its holder waited for a thread, and requests failed with "database is
locked" after busy_timeout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import uvicorn

from hongyan.api.app import create_app
from hongyan.clock import SystemClock
from hongyan.db import migrate
from hongyan.runtime import Runtime
from hongyan.security import apikeys
from hongyan.security.roles import Role
from hongyan.tenants import service as tenants
from tests.cli.test_serve import _free_port
from tests.conftest import test_settings as make_settings

REQUESTS = 120  # anyio's default thread limiter has 40


@pytest.mark.sqlite_only
def test_a_burst_of_writes_is_all_answered(tmp_path: Path, database_url: str) -> None:
    runtime = Runtime.create(make_settings(tmp_path, database_url), clock=SystemClock())
    try:
        migrate.upgrade(runtime.engine)
        with runtime.engine.begin() as conn:
            tid = tenants.create_tenant(conn, runtime.clock, slug="burst", name="burst").id
            key = apikeys.create(conn, runtime.clock, tid, "burst", Role.OPERATOR).key
        statuses = asyncio.run(_burst(runtime, key))
    finally:
        runtime.close()
    assert statuses == [200] * REQUESTS


async def _burst(runtime: Runtime, key: str) -> list[int]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        limits = httpx.Limits(max_connections=REQUESTS)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            limits=limits,
            timeout=120,
        ) as client:

            async def post(i: int) -> int:
                event = {
                    "event_id": f"burst-{i}",
                    "kind": "order",
                    "phone": f"+86138{i:08d}",
                    "occurred_at": "2026-11-11T10:00:00+08:00",
                    "amount": 99,
                    "order_id": f"o-{i}",
                }
                response = await client.post("/api/v1/events", json={"events": [event]})
                return response.status_code

            return list(await asyncio.gather(*(post(i) for i in range(REQUESTS))))
    finally:
        server.should_exit = True
        await serving
