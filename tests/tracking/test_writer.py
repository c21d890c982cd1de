"""The standalone redirector's writer process, as a real child process over its socket pair:
lookups and click commits answered, and a child that dies fails only what it held and is
started again for the next batch."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from hongyan.db.tables import clicks
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from hongyan.tracking.redirector import LinkInfo
from hongyan.tracking.writer import RemoteWriter, WriterGone
from tests.tracking.support import click_row, issue_for
from tests.tracking.test_redirector_crash import _env


@pytest.fixture
def child_env(runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child reads its settings from the environment, as the redirector's own does."""
    for key, value in _env(runtime, tmp_path).items():
        monkeypatch.setenv(key, value)


def _links(runtime: Runtime, n: int) -> tuple[int, list[str]]:
    with runtime.engine.begin() as conn:
        tid = tenants.create_tenant(conn, runtime.clock, slug="tea", name="T").id
    urls = issue_for(
        runtime, tenant_id=tid, contact_ids=list(range(1, n + 1)), link_url="https://shop.example/"
    )["link"]
    return tid, [u.rsplit("/", 1)[1] for u in urls]


def _stored(runtime: Runtime, tid: int) -> list[int]:
    with runtime.engine.connect() as conn:
        return sorted(
            conn.execute(
                sa.select(clicks.c.link_id)
                .where(clicks.c.tenant_id == tid)
                .execution_options(hongyan_tenant=tid)
            ).scalars()
        )


def _click(info: LinkInfo, runtime: Runtime) -> tuple[int, tuple[object, ...]]:
    row = click_row(
        link_id=info.id, campaign_id=info.campaign_id, variant=info.variant,
        contact_id=info.contact_id, at=runtime.clock.now(), ip_hash=b"\x01" * 16,
        user_agent="Mozilla/5.0 Mobile",
    )  # fmt: skip
    return (info.tenant_id, row)


@pytest.mark.usefixtures("child_env")
def test_the_child_looks_up_and_commits(runtime: Runtime) -> None:
    tid, codes = _links(runtime, 3)

    async def scenario() -> tuple[dict[str, LinkInfo], int | None]:
        remote = RemoteWriter()
        await remote.start()
        got = await remote.call("load", [*codes, "zzzzzzz"])
        found = {code: LinkInfo(*values) for code, values in got.items()}
        rows = [_click(found[c], runtime) for c in codes[:2]]
        await asyncio.gather(remote.call("store", rows[:1]), remote.call("store", rows[1:]))
        assert remote._child is not None
        proc = remote._child.proc
        await remote.close()
        assert proc is not None
        return found, proc.returncode

    found, returncode = asyncio.run(scenario())
    assert set(found) == set(codes)  # the unknown code is simply absent
    info = found[codes[0]]
    assert (info.tenant_id, info.target, info.variant) == (tid, "https://shop.example/", "A")
    assert info.expires_at is not None and info.expires_at > runtime.clock.now()
    assert info.expires_at - runtime.clock.now() == timedelta(days=14)
    assert _stored(runtime, tid) == sorted(found[c].id for c in codes[:2])
    assert returncode == 0  # it finished what it held and left when its socket closed


@pytest.mark.usefixtures("child_env")
def test_a_dead_child_fails_its_batch_and_is_started_again(runtime: Runtime) -> None:
    tid, codes = _links(runtime, 2)

    async def scenario() -> bool:
        remote = RemoteWriter()
        await remote.start()
        got = await remote.call("load", codes)
        rows = [_click(LinkInfo(*got[c]), runtime) for c in codes]
        assert remote._child is not None
        first = remote._child.proc
        first.send_signal(signal.SIGKILL)
        first.wait()
        # The batch sent to the dead child fails (its requests answer 503, nothing claimed) ...
        with pytest.raises(WriterGone):
            await remote.call("store", rows)
        # ... and the next batch starts another child, which commits it.
        await remote.call("store", rows)
        restarted = remote._child is not None and remote._child.proc is not first
        await remote.close()
        return restarted

    assert asyncio.run(scenario())
    assert len(_stored(runtime, tid)) == 2


@pytest.mark.usefixtures("child_env")
def test_a_failed_batch_is_an_error_not_a_silence(runtime: Runtime) -> None:
    async def scenario() -> None:
        remote = RemoteWriter()
        try:
            with pytest.raises(RuntimeError, match="unknown request"):
                await remote.call("drop", None)
            assert await remote.call("load", []) == {}  # the child lives on
        finally:
            await remote.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("child_env")
def test_close_waits_for_the_answers_in_flight(runtime: Runtime) -> None:
    _tid, codes = _links(runtime, 2)

    async def scenario() -> dict[str, object]:
        remote = RemoteWriter()
        await remote.start()
        lookup = asyncio.ensure_future(remote.call("load", codes))
        await asyncio.sleep(0)  # the frame is written; its answer has not come yet
        await remote.close()
        return dict(lookup.result())

    assert set(asyncio.run(scenario())) == set(codes)


def test_a_child_that_cannot_start_fails_the_startup(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _env(runtime, tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HONGYAN_DATABASE_URL", "mysql://nobody@127.0.0.1:1/none")

    async def scenario() -> None:
        remote = RemoteWriter()
        try:
            with pytest.raises(WriterGone):
                await remote.start()
        finally:
            await remote.close()

    asyncio.run(scenario())
