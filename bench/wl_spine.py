"""The message spine: messages planned → submitted over SMPP on loopback → receipts → final state.

Runs the real dispatcher against the sandbox SMSC on SQLite (and on PostgreSQL when
HONGYAN_TEST_PG answers). Anchor, in the same run: a bare asyncio loop sending the same
submit_sm PDUs to the same sandbox through the same client window, with no database.
Size: HONGYAN_BENCH_SPINE_N messages (default 20,000; the issue's full run is 200,000).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hongyan.channels.base import ChannelSpec
from hongyan.channels.sandbox.smsc import SandboxConfig, SandboxSmsc
from hongyan.channels.smpp.client import Report, SmppClient, SmppConfig
from hongyan.clock import SystemClock
from hongyan.db import migrate
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import messages
from hongyan.dispatch.dispatcher import ChannelPool, Dispatcher
from hongyan.dispatch.outbox import dest_context
from hongyan.runtime import Runtime
from hongyan.security.keyring import KeyRing, mask_phone
from hongyan.settings import Settings
from hongyan.tenants import service

N = int(os.environ.get("HONGYAN_BENCH_SPINE_N", "20000"))
CREDS = {"bench": "pw"}
TEXT = "【鸿雁茶饮】您的订单已发货，预计明天送达。"


def _settings(url: str, var: Path) -> Settings:
    return Settings(
        env="test",
        var_dir=var,
        database_url=url,
        data_keys=f"k1:{KeyRing.generate_key()}",
        active_key="k1",
        index_key=KeyRing.generate_key(),
        session_secret=KeyRing.generate_key(),
    )


def _plan(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        t = service.create_tenant(conn, runtime.clock, slug="bench", name="bench").id
        now = runtime.clock.now()
        rows = []
        for i in range(N):
            to = f"+86138{i:08d}"
            ctx = dest_context(t)
            rows.append(
                {
                    "lane": 1,
                    "category": "notification",
                    "source": "bench",
                    "dest_cipher": runtime.keyring.encrypt(to, ctx),
                    "dest_index": runtime.keyring.blind_index(to, ctx),
                    "dest_masked": mask_phone(to),
                    "body": TEXT,
                    "encoding": "ucs2",
                    "parts": 1,
                    "state": "planned",
                    "due_at": now,
                    "expires_at": now + timedelta(hours=24),
                    "created_at": now,
                }
            )
        TenantScope(t).insert_many(conn, messages, rows)


async def _spine(runtime: Runtime) -> dict[str, Any]:
    smsc = SandboxSmsc(SandboxConfig(credentials=CREDS))
    host, port = await smsc.start()
    spec = ChannelSpec(
        name="bench",
        kind="smpp",
        config={"host": host, "port": port, "system_id": "bench"},
        secrets={"password": "pw"},
        window=64,
    )
    pool = ChannelPool(runtime)
    await pool.sync([spec])
    await pool.channels["bench"].wait_ready(5)  # type: ignore[attr-defined]
    d = Dispatcher(runtime, pool, owner="bench", batch=1000)
    final = (
        sa.select(sa.func.count())
        .select_from(messages)
        .where(messages.c.state.in_(["delivered", "undelivered", "expired", "failed"]))
    )
    t0 = time.perf_counter()
    submitted_at = None
    while True:
        claimed = await d.run_once()
        if claimed == 0 and submitted_at is None:
            submitted_at = time.perf_counter() - t0
        with runtime.engine.connect() as conn:
            done = conn.execute(unscoped(final, "bench")).scalar_one()
        if done >= N:
            break
        if claimed == 0:
            await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - t0
    await pool.stop()
    await smsc.stop()
    return {
        "messages": N,
        "seconds": round(elapsed, 2),
        "per_s": round(N / elapsed),
        "all_submitted_after_s": round(submitted_at or elapsed, 2),
    }


async def _bare() -> dict[str, Any]:
    smsc = SandboxSmsc(SandboxConfig(credentials=CREDS))
    host, port = await smsc.start()
    got = 0
    done = asyncio.Event()

    async def on_report(_r: Report) -> None:
        nonlocal got
        got += 1
        if got >= N:
            done.set()

    client = SmppClient(SmppConfig(host, port, "bench", "pw", window=64), on_report=on_report)
    await client.connect()
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(1000)

    async def one(i: int) -> None:
        async with sem:
            await client.submit(f"+86138{i:08d}", TEXT)

    await asyncio.gather(*(one(i) for i in range(N)))
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - t0
    await client.close()
    await smsc.stop()
    return {"messages": N, "seconds": round(elapsed, 2), "per_s": round(N / elapsed)}


def _backend(url: str, var: Path) -> dict[str, Any]:
    runtime = Runtime.create(_settings(url, var), clock=SystemClock())
    try:
        migrate.upgrade(runtime.engine)
        _plan(runtime)
        return asyncio.run(_spine(runtime))
    finally:
        runtime.close()


def _postgres(var: Path) -> dict[str, Any] | None:
    base = os.environ.get("HONGYAN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    admin = sa.create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    name = f"hongyan_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception:  # no server: report SQLite only
        return None
    try:
        return _backend(sa.engine.make_url(base).set(database=name).render_as_string(False), var)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        sqlite = _backend(f"sqlite:///{var / 'spine.db'}", var)
        pg = _postgres(var)
    bare = asyncio.run(_bare())
    out: dict[str, Any] = {"anchor_bare_smpp_loop": bare, "sqlite_one_dispatcher": sqlite}
    out["sqlite_ratio_to_anchor"] = round(sqlite["per_s"] / bare["per_s"], 3)
    if pg:
        out["postgres_one_dispatcher"] = pg
        out["postgres_ratio_to_anchor"] = round(pg["per_s"] / bare["per_s"], 3)
    return out
