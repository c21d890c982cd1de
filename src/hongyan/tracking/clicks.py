"""Recording clicks durably with group commit.

A redirect is answered only once its click is committed, so a crash of the redirector loses no
answered click. One transaction per click would cap the redirector at the database's commit
rate; instead a writer takes every click waiting, inserts them in one transaction (one bulk
insert per tenant) and then releases all their requests together. While a batch commits, the
next one gathers (and another writer, of :data:`WRITERS`, may already write it), so under load
batches grow by themselves and the commit cost is shared; alone, a click waits for one small
transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from hongyan.db.bulk import insert_rows
from hongyan.db.engine import BEGIN_IMMEDIATE
from hongyan.db.scope import TenantScope
from hongyan.db.tables import clicks

if TYPE_CHECKING:
    from hongyan.tracking.writer import RemoteWriter

COLUMNS = (
    "link_id", "campaign_id", "variant", "contact_id", "at", "ip_hash", "user_agent", "bot",
    "number_province", "number_city", "carrier", "journey_id",
)  # fmt: skip
MAX_BATCH = 5000
WRITERS = 3


def store_rows(engine: Engine, batch: list[tuple[int, tuple[Any, ...]]]) -> None:
    """Commit (tenant, row in :data:`COLUMNS` order) pairs: one transaction for the batch, one
    bulk insert per tenant in it."""
    by_tenant: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for tenant_id, row in batch:
        by_tenant[tenant_id].append(row)
    with engine.connect().execution_options(**{BEGIN_IMMEDIATE: True}) as conn, conn.begin():
        for tenant_id, rows in by_tenant.items():
            insert_rows(conn, TenantScope(tenant_id), clicks, COLUMNS, rows)


class ClickRecorder:
    """Group commit: ``await record(click)`` returns once the click is committed."""

    def __init__(
        self,
        engine: Engine,
        max_batch: int = MAX_BATCH,
        writers: int = WRITERS,
        remote: RemoteWriter | None = None,
    ) -> None:
        self.engine = engine
        # The standalone redirector commits through its writer process (tracking/writer.py);
        # mounted in the main app, the recorder commits in threads of its own process.
        self.remote = remote
        self.max_batch = max_batch
        self.writers = writers
        # (tenant, the click's row in COLUMNS order) and the request's future
        self._pending: list[tuple[tuple[int, tuple[Any, ...]], asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._live = 0  # writer tasks not yet done
        self._closing = False
        # A few writers: while one batch commits (a WAL flush), the next is written by another,
        # so the commit latency does not bound the rate. On SQLite they take turns (one writer
        # at a time), which costs nothing.
        self._pool = concurrent.futures.ThreadPoolExecutor(writers, thread_name_prefix="clicks")
        self.batches = 0
        self.stored = 0

    def _ensure_started(self) -> None:
        # Checked on every click: a counter, not a look at each writer task.
        if self._live == 0:
            self._wake = asyncio.Event()
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._run()) for _ in range(self.writers)]
            self._live = len(self._tasks)
            for task in self._tasks:
                task.add_done_callback(self._writer_done)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        self._live -= 1

    async def record(self, tenant_id: int, row: tuple[Any, ...]) -> None:
        """Return once the click (its row in :data:`COLUMNS` order) is committed."""
        if self._closing:
            raise RuntimeError("the click recorder is closed")
        self._ensure_started()
        assert self._wake is not None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(((tenant_id, row), future))
        self._wake.set()
        await future

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                rows = [pair for pair, _ in batch]
                if self.remote is not None:
                    await self.remote.call("store", rows)
                else:
                    await loop.run_in_executor(self._pool, store_rows, self.engine, rows)
            except Exception as exc:  # the requests answer 503; nothing is claimed as stored
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.stored += len(batch)
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def close(self) -> None:
        """Store what is waiting, then stop."""
        self._closing = True
        if self._tasks and self._wake is not None:
            self._wake.set()
            await asyncio.gather(*self._tasks)
        self._pool.shutdown(wait=True)
