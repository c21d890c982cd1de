"""The message spine: messages planned → submitted over SMPP on loopback → receipts → final state.

Everything runs as it does in production, each piece in its own process so that no two share a
GIL: the carrier sandbox (``SandboxSmsc``, every message delivered, its receipt 1 s after the
submit as a carrier's would come), and one or
two ``hongyan dispatcher`` processes on a channel row added as an operator would. The messages
are planned in one transaction while the dispatchers are already bound; the clock starts at that
commit and stops at the last ``done_at`` the dispatchers wrote. Runs: SQLite with one
dispatcher, PostgreSQL (when ``HONGYAN_TEST_PG`` answers) with one and with two.

Anchor, in the same run: a bare asyncio loop that sends the same submit_sm PDUs through the same
channel class (same binds, same window) to a fresh sandbox process of the same configuration,
with no database, and waits for every receipt.

Size: ``HONGYAN_BENCH_SPINE_N`` messages (default 20,000; the issue's full run is 200,000).
``HONGYAN_BENCH_SPINE_ONLY`` (``sqlite``, ``pg1``, ``pg2``, comma-separated) picks runs; the
channel's window, binds, the dispatch batch and the receipt delay have their own variables.
Each run also checks itself: the carrier received exactly N submits, and every message ended
``delivered``. CPU seconds per process show where the machine's time went.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hongyan.channels import service as channel_store
from hongyan.channels.base import ChannelSpec, Inbound, Outgoing, Report
from hongyan.channels.sandbox.smsc import SandboxConfig, SandboxSmsc
from hongyan.channels.smpp.channel import SmppChannel
from hongyan.clock import SystemClock
from hongyan.db import migrate
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import messages
from hongyan.dispatch.outbox import dest_context
from hongyan.dispatch.states import Lane
from hongyan.runtime import Runtime, settle_heap
from hongyan.security.keyring import KeyRing, mask_phone
from hongyan.settings import Settings
from hongyan.tenants import service

N = int(os.environ.get("HONGYAN_BENCH_SPINE_N", "20000"))
WINDOW = int(os.environ.get("HONGYAN_BENCH_SPINE_WINDOW", "64"))  # per bind
BINDS = int(os.environ.get("HONGYAN_BENCH_SPINE_BINDS", "1"))  # per dispatcher
BATCH = int(os.environ.get("HONGYAN_BENCH_SPINE_BATCH", "1000"))
# A carrier's receipt reports the handset's delivery: seconds after the submit, never in the same
# millisecond (`hongyan sandbox` waits 1 s by default too).
RECEIPT_DELAY = float(os.environ.get("HONGYAN_BENCH_SPINE_RECEIPT_DELAY", "1.0"))
SYSTEM_ID, PASSWORD = "bench", "pw"
TEXT = "【鸿雁茶饮】您的订单已发货，预计明天送达。"
WHY = "the benchmark counts every tenant's messages"


def _number(i: int) -> str:
    return f"+86138{i:08d}"


# --------------------------------------------------------------------------- the carrier


def _carrier_main(pipe: Connection) -> None:
    """The sandbox SMSC in its own process; answers ``bound`` and ``stop`` over the pipe."""

    async def main() -> None:
        config = SandboxConfig(credentials={SYSTEM_ID: PASSWORD}, receipt_delay=RECEIPT_DELAY)
        smsc = SandboxSmsc(config)
        _, port = await smsc.start()
        pipe.send(port)
        while True:
            while not pipe.poll():
                await asyncio.sleep(0.01)
            command = pipe.recv()
            if command == "bound":
                pipe.send(smsc.bound())
                continue
            if command == "receipts":
                pipe.send(len(smsc.receipts))
                continue
            await smsc.stop()
            pipe.send(
                {
                    "submits": len(smsc.submits),
                    "numbers": len({s.destination for s in smsc.submits}),
                    "receipts": len(smsc.receipts),
                    "cpu_s": round(time.process_time(), 2),
                }
            )
            return

    settle_heap()  # as `hongyan sandbox` does
    asyncio.run(main())


class Carrier:
    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=_carrier_main, args=(child,), daemon=True)
        self.process.start()
        if not self.pipe.poll(30):
            raise RuntimeError("the sandbox process did not start")
        self.port: int = self.pipe.recv()

    def bound(self) -> int:
        self.pipe.send("bound")
        return int(self.pipe.recv())

    def receipts(self) -> int:
        self.pipe.send("receipts")
        return int(self.pipe.recv())

    def stop(self) -> dict[str, Any]:
        self.pipe.send("stop")
        stats: dict[str, Any] = self.pipe.recv() if self.pipe.poll(30) else {}
        self.process.join(10)
        return stats


def _spec(port: int) -> ChannelSpec:
    return ChannelSpec(
        name="bench",
        kind="smpp",
        config={"host": "127.0.0.1", "port": port, "system_id": SYSTEM_ID},
        secrets={"password": PASSWORD},
        window=WINDOW,
        binds=BINDS,
    )


# --------------------------------------------------------------------------- the anchor


async def _bare(port: int) -> dict[str, Any]:
    """The same channel and PDUs, no database: submit N, wait for N receipts."""
    got = 0
    done = asyncio.Event()

    async def on_report(_r: Report) -> None:
        nonlocal got
        got += 1
        if got >= N:
            done.set()

    async def on_inbound(_i: Inbound) -> None:
        return None

    channel = SmppChannel(_spec(port))
    await channel.start(on_report, on_inbound)
    if not await channel.wait_ready(10):
        raise RuntimeError("the anchor could not bind")
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(WINDOW * BINDS * 2)

    async def one(i: int) -> None:
        async with sem:
            await channel.submit(Outgoing(i, _number(i), TEXT, Lane.NOTIFICATION))

    await asyncio.gather(*(one(i) for i in range(N)))
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - t0
    await channel.stop()
    return {"messages": N, "seconds": round(elapsed, 2), "per_s": round(N / elapsed)}


def _anchor() -> dict[str, Any]:
    carrier = Carrier()
    settle_heap()  # as the dispatcher does: the anchor's client gets the same collector settings
    cpu0 = time.process_time()
    try:
        result = asyncio.run(_bare(carrier.port))
    finally:
        stats = carrier.stop()
    result["cpu_s"] = {
        "client": round(time.process_time() - cpu0, 2),
        "carrier": stats.get("cpu_s"),
    }
    return result


# --------------------------------------------------------------------------- the spine


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


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HONGYAN_")}
    env.update(
        {
            "HONGYAN_ENV": "test",
            "HONGYAN_VAR_DIR": str(settings.var_dir),
            "HONGYAN_DATABASE_URL": settings.resolved_database_url(),
            "HONGYAN_DATA_KEYS": settings.data_keys,
            "HONGYAN_ACTIVE_KEY": settings.active_key,
            "HONGYAN_INDEX_KEY": settings.index_key,
            "HONGYAN_SESSION_SECRET": settings.session_secret,
            "HONGYAN_DISPATCH_BATCH": str(BATCH),
            "HONGYAN_LOG_LEVEL": "WARNING",
        }
    )
    return env


def _rows(runtime: Runtime, tenant: int) -> list[dict[str, Any]]:
    ctx = dest_context(tenant)
    now = runtime.clock.now()
    keyring = runtime.keyring
    return [
        {
            "lane": 1,
            "category": "notification",
            "source": "bench",
            "dest_cipher": keyring.encrypt(_number(i), ctx),
            "dest_index": keyring.blind_index(_number(i), ctx),
            "dest_masked": mask_phone(_number(i)),
            "body": TEXT,
            "encoding": "ucs2",
            "parts": 1,
            "state": "planned",
            "due_at": now,
            "expires_at": now + timedelta(hours=24),
            "created_at": now,
        }
        for i in range(N)
    ]


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (Linux); 0 where that is not readable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _postgres_cpu(runtime: Runtime) -> dict[int, float]:
    """CPU seconds of the server processes serving this run's database (PostgreSQL only)."""
    if runtime.engine.dialect.name != "postgresql":
        return {}
    with runtime.engine.connect() as conn:
        pids = conn.execute(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        return {int(pid): _cpu_seconds(int(pid)) for pid in pids}


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return float(sum(values) - idle), float(sum(values))


def _spine(url: str, var: Path, dispatchers: int) -> dict[str, Any]:
    settings = _settings(url, var)
    runtime = Runtime.create(settings, clock=SystemClock())
    carrier = Carrier()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        migrate.upgrade(runtime.engine)
        with runtime.engine.begin() as conn:
            tenant = service.create_tenant(conn, runtime.clock, slug="bench", name="bench").id
            spec = _spec(carrier.port)
            channel_store.add_channel(
                conn,
                runtime.clock,
                runtime.keyring,
                name=spec.name,
                kind=spec.kind,
                config=dict(spec.config),
                secrets=dict(spec.secrets),
                window=spec.window,
                binds=spec.binds,
            )
        env = _env(settings)
        log = (var / f"dispatchers-{uuid.uuid4().hex[:6]}.log").open("ab")
        for _ in range(dispatchers):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", "from hongyan.cli.main import app; app()", "dispatcher"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + 60
        while carrier.bound() < dispatchers * BINDS:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"dispatchers did not bind; see {log.name}")
            time.sleep(0.05)
        rows = _rows(runtime, tenant)
        cpu0 = [_cpu_seconds(p.pid) for p in procs]
        busy0, total0 = _machine_busy()
        pg_plan0 = _postgres_cpu(runtime)
        with runtime.engine.connect() as conn:
            trans = conn.begin()
            TenantScope(tenant).insert_many(conn, messages, rows)
            t0 = datetime.now(UTC)
            trans.commit()
        # The server's work from here on is the dispatch's; before, it was planning the rows.
        pg0 = _postgres_cpu(runtime)
        plan_cpu = sum(c - pg_plan0.get(pid, 0.0) for pid, c in pg0.items())
        del rows
        # Done when no message is left short of a final state. The database is asked only once
        # the carrier has sent every receipt: that look scans the table, and asking it while the
        # dispatchers work would put the benchmark's own cost on the database it measures.
        open_one = (
            sa.select(messages.c.id)
            .where(messages.c.state.in_(["planned", "sending", "submitted"]))
            .limit(1)
        )
        deadline = time.monotonic() + 120 + N / 200
        while True:
            time.sleep(0.1)
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                log.flush()
                tail = Path(log.name).read_text(errors="replace").splitlines()[-40:]
                raise RuntimeError(
                    "messages not final when the run gave up; the dispatchers' log ends:\n"
                    + "\n".join(tail)
                )
            if carrier.receipts() < N:
                continue
            with runtime.engine.connect() as conn:
                if conn.execute(unscoped(open_one, WHY)).first() is None:
                    break
        busy1, total1 = _machine_busy()
        pg1 = _postgres_cpu(runtime)
        cpu = [round(_cpu_seconds(p.pid) - c, 2) for p, c in zip(procs, cpu0, strict=True)]
        with runtime.engine.connect() as conn:
            row = conn.execute(
                unscoped(
                    sa.select(
                        sa.func.max(messages.c.submitted_at),
                        sa.func.max(messages.c.done_at),
                        sa.func.count().filter(messages.c.state == "delivered"),
                    ),
                    WHY,
                )
            ).one()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        stats = carrier.stop()
        runtime.close()
    submitted, finished, delivered = row
    elapsed = (finished - t0).total_seconds()
    if stats.get("submits") != N or delivered != N:
        raise RuntimeError(f"run not clean: carrier {stats}, {delivered} of {N} delivered")
    return {
        "messages": N,
        "dispatchers": dispatchers,
        "seconds": round(elapsed, 2),
        "per_s": round(N / elapsed),
        "all_submitted_after_s": round((submitted - t0).total_seconds(), 2),
        "carrier_submits": stats["submits"],
        "cpu_s": {
            "dispatchers": cpu,
            "carrier": stats.get("cpu_s"),
            # The backends of this run's database alive at its end (the dispatchers' pools),
            # from the commit of the planned rows on; inserting them is `postgres_planning`.
            "postgres": round(sum(c - pg0.get(pid, 0.0) for pid, c in pg1.items()), 2)
            if pg1
            else None,
            "postgres_planning": round(plan_cpu, 2) if pg1 else None,
        },
        "machine_busy": round((busy1 - busy0) / max(1.0, total1 - total0), 2),
    }


def _postgres(var: Path, dispatchers: int) -> dict[str, Any] | None:
    base = os.environ.get("HONGYAN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    admin = sa.create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3},
    )
    name = f"hongyan_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception:  # no server: report SQLite only
        admin.dispose()
        return None
    try:
        url = sa.engine.make_url(base).set(database=name).render_as_string(False)
        return _spine(url, var, dispatchers)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def cpu_budget(result: dict[str, Any]) -> dict[str, Any]:
    """CPU microseconds each process spent per message, and the rate this machine's cores could
    reach if every one of them did nothing else: a ceiling no tuning of the pipeline's overlap
    can pass, only doing less work per message."""
    cpu = result["cpu_s"]
    parts = {
        "dispatchers": sum(cpu["dispatchers"]),
        "carrier": cpu.get("carrier") or 0.0,
        "postgres": cpu.get("postgres") or 0.0,
    }
    n = result["messages"]
    us = {k: round(v * 1e6 / n, 1) for k, v in parts.items() if v}
    total = sum(us.values())
    cores = os.cpu_count() or 1
    return {
        "us_per_message": {**us, "total": round(total, 1)},
        "cores": cores,
        "ceiling_per_s": round(cores * 1e6 / total) if total else None,
    }


def run() -> dict[str, Any]:
    only = {s for s in os.environ.get("HONGYAN_BENCH_SPINE_ONLY", "").split(",") if s}
    out: dict[str, Any] = {
        "config": {
            "window": WINDOW,
            "binds_per_dispatcher": BINDS,
            "batch": BATCH,
            "receipt_delay_s": RECEIPT_DELAY,
        },
        "anchor_bare_smpp_loop": _anchor(),
    }
    bare = out["anchor_bare_smpp_loop"]["per_s"]
    print(f"spine anchor: {out['anchor_bare_smpp_loop']}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        runs: list[tuple[str, Any]] = []
        if not only or "sqlite" in only:
            runs.append(
                ("sqlite_one_dispatcher", lambda: _spine(f"sqlite:///{var / 's.db'}", var, 1))
            )
        if not only or "pg1" in only:
            runs.append(("postgres_one_dispatcher", lambda: _postgres(var, 1)))
        if not only or "pg2" in only:
            runs.append(("postgres_two_dispatchers", lambda: _postgres(var, 2)))
        for key, fn in runs:
            result = fn()
            if result is None:
                continue
            result["ratio_to_anchor"] = round(result["per_s"] / bare, 3)
            result["cpu_budget"] = cpu_budget(result)
            out[key] = result
            print(f"spine {key}: {result}", file=sys.stderr, flush=True)
    return out
