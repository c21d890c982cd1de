"""`hongyan redirector` as a real process, SIGKILLed under load: every click it answered is
stored (group commit answers only after the batch's commit)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from hongyan.db.tables import clicks, links
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from tests.cli.test_serve import _free_port
from tests.tracking.support import issue_for


def _env(runtime: Runtime, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HONGYAN_")}
    s = runtime.settings
    env.update(
        HONGYAN_VAR_DIR=str(tmp_path / "var"),
        HONGYAN_DATABASE_URL=s.database_url,
        HONGYAN_DATA_KEYS=s.data_keys,
        HONGYAN_ACTIVE_KEY=s.active_key,
        HONGYAN_INDEX_KEY=s.index_key,
        HONGYAN_SESSION_SECRET=s.session_secret,
    )
    return env


CLI = [sys.executable, "-m", "hongyan.cli"]


def _start(env: dict[str, str], port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*CLI, "redirector", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"redirector did not start: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        time.sleep(0.2)


async def _load(port: int, codes: list[str], kill_after: int, pid: int) -> set[str]:
    """Request each code once (64 at a time); SIGKILL the server after ``kill_after`` answers.
    Returns the codes answered with a redirect."""
    answered: set[str] = set()
    queue = list(reversed(codes))
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=5
    ) as client:

        async def worker() -> None:
            while queue:
                code = queue.pop()
                try:
                    r = await client.get(f"/{code}", headers={"user-agent": "Mozilla/5.0 Mobile"})
                except httpx.HTTPError:
                    return
                if r.status_code == 302:
                    answered.add(code)
                    if len(answered) == kill_after:
                        os.kill(pid, signal.SIGKILL)

        await asyncio.gather(*(worker() for _ in range(64)))
    return answered


def test_sigkill_loses_no_answered_click(runtime: Runtime, tmp_path: Path) -> None:
    with runtime.engine.begin() as conn:
        tid = tenants.create_tenant(conn, runtime.clock, slug="tea", name="T").id
    n = 3000
    urls = issue_for(
        runtime,
        tenant_id=tid,
        contact_ids=list(range(1, n + 1)),
        link_url="https://shop.example/",
        expires_at=None,
    )["link"]
    codes = [u.rsplit("/", 1)[1] for u in urls]
    port = _free_port()
    proc = _start(_env(runtime, tmp_path), port)
    try:
        answered = asyncio.run(_load(port, codes, 1500, proc.pid))
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert len(answered) >= 1500
    with runtime.engine.connect() as conn:
        stored = set(
            conn.execute(
                sa.select(links.c.code)
                .join(clicks, clicks.c.link_id == links.c.id)
                .where(links.c.tenant_id == tid, clicks.c.tenant_id == tid)
                .execution_options(hongyan_tenant=tid)
            ).scalars()
        )
    assert answered <= stored, f"{len(answered - stored)} answered clicks were lost"
    assert len(stored) < n  # the kill did stop it midway


@pytest.mark.sqlite_only
def test_workers_share_the_port(runtime: Runtime, tmp_path: Path) -> None:
    with runtime.engine.begin() as conn:
        tid = tenants.create_tenant(conn, runtime.clock, slug="tea", name="T").id
    urls = issue_for(
        runtime,
        tenant_id=tid,
        contact_ids=[1, 2, 3],
        link_url="https://shop.example/",
        expires_at=None,  # the process's clock is the system's, the test's stands still
    )["link"]
    port = _free_port()
    proc = _start(_env(runtime, tmp_path), port, workers=2)
    try:
        for url in urls:
            r = httpx.get(f"http://127.0.0.1:{port}/{url.rsplit('/', 1)[1]}", timeout=10)
            assert r.status_code == 302 and r.headers["location"] == "https://shop.example/"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    with runtime.engine.connect() as conn:
        n = conn.execute(
            sa.select(sa.func.count())
            .select_from(clicks)
            .where(clicks.c.tenant_id == tid)
            .execution_options(hongyan_tenant=tid)
        ).scalar_one()
    assert n == 3
