"""空号检测 as a job (contacts/number_status_jobs.py): progress after each batch with no
connection held while the provider answers, one check at a time per tenant, a failure that
says why, and checks whose process died marked failed by ``retention run`` and by the next
check, on SQLite and PostgreSQL. The API over it: tests/api/test_number_checks_api.py."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from hongyan.clock import FixedClock
from hongyan.contacts import number_status, number_status_jobs, retention
from hongyan.contacts.number_status_jobs import CheckAbandoned, CheckUnderWay
from hongyan.db.scope import TenantScope
from hongyan.db.tables import audit_log, contact_imports
from hongyan.errors import NotFound
from hongyan.runtime import Runtime
from hongyan.settings import Settings
from hongyan.tenants import service as tenants
from tests.contacts.test_number_status import _import, _numbers, _suppressed


class Scripted:
    """A provider that answers from a table (numbers it does not list are active), after
    checking that the check holds no database connection while it answers, and may do
    something on a given call (``on_call[n]``, n from 1)."""

    name = "scripted"

    def __init__(self, runtime: Runtime, empty: Sequence[str] = ()) -> None:
        self.runtime, self.empty = runtime, set(empty)
        self.batches: list[list[str]] = []
        self.on_call: dict[int, Callable[[], None]] = {}

    def check(self, numbers: Sequence[str]) -> dict[str, str]:
        assert self.runtime.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        self.batches.append(list(numbers))
        if len(self.batches) in self.on_call:
            self.on_call[len(self.batches)]()
        return {n: "empty" if n in self.empty else "active" for n in numbers}


def _start(runtime: Runtime, tenant_id: int) -> int:
    with runtime.engine.begin() as conn:
        return number_status_jobs.start(conn, runtime.clock, runtime.settings, tenant_id, "user:1")


def _job(runtime: Runtime, tenant_id: int, job_id: int) -> dict[str, Any]:
    with runtime.engine.connect() as conn:
        return number_status_jobs.get(conn, tenant_id, job_id)


def _audits(runtime: Runtime, tenant_id: int) -> list[Any]:
    a = audit_log.c
    with runtime.engine.connect() as conn:
        return conn.execute(
            TenantScope(tenant_id)
            .select(audit_log, a.actor, a.target, a.detail)
            .where(a.action == "contacts.check_numbers")
        ).all()


def _run(
    runtime: Runtime, tenant_id: int, job_id: int, provider: Any
) -> number_status.CheckSummary:
    """Run check ``job_id`` as a user would start it, two numbers a batch."""
    return number_status_jobs.run(
        runtime.engine, runtime.clock, runtime.keyring, tenant_id, job_id, provider,
        actor="user:1", batch=2,
    )  # fmt: skip


def test_a_job_reports_its_progress_batch_by_batch(runtime: Runtime, tenant_id: int) -> None:
    numbers = _numbers(5, start=500)
    _import(runtime, tenant_id, numbers)
    provider = Scripted(runtime, empty=[numbers[1]])
    job_id = _start(runtime, tenant_id)
    pending = _job(runtime, tenant_id, job_id)
    assert (pending["state"], pending["progress"], pending["processed"]) == ("pending", 0.0, 0)
    assert pending["total"] is None and pending["result"] is None
    seen: list[tuple[int, int, str, int, int]] = []

    def progress(done: int, total: int) -> None:
        job = _job(runtime, tenant_id, job_id)  # what a poll reads at that moment
        seen.append((done, total, job["state"], job["processed"], job["result"]["checked"]))

    summary = number_status_jobs.run(
        runtime.engine, runtime.clock, runtime.keyring, tenant_id, job_id, provider,
        actor="user:1", progress=progress, batch=2,
    )  # fmt: skip
    assert [len(b) for b in provider.batches] == [2, 2, 1]
    assert seen == [(2, 5, "running", 2, 2), (4, 5, "running", 4, 4), (5, 5, "running", 5, 5)]
    done = _job(runtime, tenant_id, job_id)
    assert (done["state"], done["progress"], done["processed"], done["total"]) == (
        "done", 1.0, 5, 5,
    )  # fmt: skip
    assert (
        done["result"]
        == summary.as_dict()
        == {
            "provider": "scripted",
            "checked": 5,
            "active": 4,
            "empty": 1,
            "unknown": 0,
            "skipped": 0,
            "by_provider": {"scripted": {"active": 4, "empty": 1, "unknown": 0}},
            "failures": [],
        }
    )
    assert done["error"] is None and done["started_at"] and done["finished_at"]
    assert _suppressed(runtime, tenant_id) == {"138****0501": "scripted"}
    [entry] = _audits(runtime, tenant_id)
    assert (entry.actor, entry.target) == ("user:1", f"number_check:{job_id}")
    assert entry.detail == {
        "provider": "scripted", "checked": 5, "active": 4, "empty": 1, "unknown": 0,
    }  # fmt: skip


def test_a_failed_check_says_why_and_keeps_what_it_found(runtime: Runtime, tenant_id: int) -> None:
    numbers = _numbers(4, start=600)
    _import(runtime, tenant_id, numbers)
    provider = Scripted(runtime, empty=numbers)  # every number it is asked about is 空号

    def explode() -> None:
        raise RuntimeError("the vendor's SDK fell over")

    provider.on_call[2] = explode
    job_id = _start(runtime, tenant_id)
    with pytest.raises(RuntimeError):
        _run(runtime, tenant_id, job_id, provider)
    failed = _job(runtime, tenant_id, job_id)
    assert failed["state"] == "failed" and failed["finished_at"]
    assert failed["error"]["code"] == "number_check_failed"
    assert failed["error"]["message"]["zh"] and "internal error" in failed["error"]["message"]["en"]
    # the first batch stays done: its empty numbers are suppressed, and the job says so
    assert (failed["processed"], failed["total"], failed["result"]["empty"]) == (2, 4, 2)
    first = provider.batches[0]
    assert sorted(_suppressed(runtime, tenant_id)) == sorted(f"138****{n[-4:]}" for n in first)
    [entry] = _audits(runtime, tenant_id)
    assert entry.detail["error"] == "number_check_failed" and entry.detail["checked"] == 2
    # and the tenant may check again: the numbers found empty are not asked about again
    again = Scripted(runtime)
    number_status_jobs.run(
        runtime.engine, runtime.clock, runtime.keyring, tenant_id, _start(runtime, tenant_id),
        again, actor="user:1",
    )  # fmt: skip
    assert sorted(again.batches[0]) == sorted(set(numbers) - set(first))


def test_two_checks_started_at_once_make_one_job(runtime: Runtime, tenant_id: int) -> None:
    """The second start waits for the first one's transaction (PostgreSQL: the tenant's
    advisory lock; SQLite: the write lock), then sees its job and is refused."""
    outcome: dict[str, Any] = {}

    def second() -> None:
        try:
            outcome["made"] = _start(runtime, tenant_id)
        except CheckUnderWay as exc:
            outcome["refused"] = exc.details["id"]

    with runtime.engine.begin() as conn:
        first = number_status_jobs.start(conn, runtime.clock, runtime.settings, tenant_id, "user:1")
        other = threading.Thread(target=second)
        other.start()
        other.join(0.5)
        assert other.is_alive()  # waiting for this transaction
    other.join(15)
    assert outcome == {"refused": first}
    with pytest.raises(CheckUnderWay) as caught:
        _start(runtime, tenant_id)
    body = caught.value.body()
    assert caught.value.status == 409 and body["code"] == "number_check_running"
    assert body["message"]["zh"] and body["message"]["en"]
    assert body["details"] == {"id": first, "url": f"/api/v1/contacts/check-numbers/{first}"}
    with runtime.engine.begin() as conn:  # another tenant is not held back
        deli = tenants.create_tenant(conn, runtime.clock, slug="deli", name="熟食").id
    assert _start(runtime, deli) != first


def _left_running(runtime: Runtime, tenant_id: int, processed: int, total: int) -> int:
    """A check whose process died after writing its progress."""
    job_id = _start(runtime, tenant_id)
    with runtime.engine.begin() as conn:
        conn.execute(
            TenantScope(tenant_id)
            .update(contact_imports)
            .where(contact_imports.c.id == job_id)
            .values(
                state="running",
                started_at=runtime.clock.now(),
                result={
                    "total": total,
                    "processed": processed,
                    "summary": None,
                    "alive_at": runtime.clock.now().isoformat(),
                },
            )
        )
    return job_id


def test_checks_whose_process_died_are_marked_failed(runtime: Runtime, tenant_id: int) -> None:
    """``retention run`` marks a check silent for ``stuck_after`` failed, saying how far it got,
    as it does for imports (which it leaves to their own rule); so does the next check of the
    same tenant, without waiting for the retention run."""
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    with runtime.engine.begin() as conn:
        deli = tenants.create_tenant(conn, clock, slug="deli", name="熟食").id
    died = _left_running(runtime, tenant_id, processed=1000, total=3000)
    never = _start(runtime, deli)  # its thread never ran
    quiet = number_status_jobs.stuck_after(runtime.settings)
    clock.advance(quiet - timedelta(minutes=1))
    with pytest.raises(CheckUnderWay):
        _start(runtime, tenant_id)
    assert retention.run(runtime)["stuck_number_checks"] == 0
    clock.advance(timedelta(minutes=2))
    swept = retention.run(runtime)
    assert (swept["stuck_number_checks"], swept["stuck_imports"]) == (2, 0)
    dead = _job(runtime, tenant_id, died)
    assert (dead["state"], dead["error"]["code"]) == ("failed", "number_check_abandoned")
    assert "after 1000 of 3000 contacts" in dead["error"]["message"]["en"]
    assert "1000" in dead["error"]["message"]["zh"]
    assert "before it checked any number" in _job(runtime, deli, never)["error"]["message"]["en"]
    second = _start(runtime, tenant_id)  # the tenant may check again
    assert second > died
    # Left pending by a process that died before its thread ran: the tenant's next check
    # marks it failed by itself.
    clock.advance(quiet + timedelta(minutes=1))
    third = _start(runtime, tenant_id)
    assert _job(runtime, tenant_id, second)["error"]["code"] == "number_check_abandoned"
    assert _job(runtime, tenant_id, third)["state"] == "pending"


def test_a_check_taken_for_dead_stops_at_its_next_batch(runtime: Runtime, tenant_id: int) -> None:
    """A live check wrongly marked abandoned (its batch took longer than ``stuck_after``) does
    not run on beside the check that may follow: its next write finds the job no longer
    running, and it stops without asking about another batch."""
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    _import(runtime, tenant_id, _numbers(4, start=700))
    provider = Scripted(runtime)

    def sweep() -> None:
        clock.advance(number_status_jobs.stuck_after(runtime.settings) + timedelta(minutes=1))
        assert retention.run(runtime)["stuck_number_checks"] == 1

    provider.on_call[1] = sweep
    job_id = _start(runtime, tenant_id)
    with pytest.raises(CheckAbandoned):
        _run(runtime, tenant_id, job_id, provider)
    assert len(provider.batches) == 1
    job = _job(runtime, tenant_id, job_id)
    assert (job["state"], job["error"]["code"]) == ("failed", "number_check_abandoned")
    assert not _audits(runtime, tenant_id)


def test_how_long_a_check_may_be_silent() -> None:
    hour = timedelta(hours=1)
    assert number_status_jobs.stuck_after(Settings(env="test")) == hour
    paid: dict[str, Any] = {
        "number_status_provider": "http",
        "number_status_url": "https://s.example/api",
        "number_status_key": SecretStr("k"),
    }
    assert number_status_jobs.stuck_after(Settings(env="test", **paid)) == hour  # 10 × 20 s
    slow = Settings(env="test", **paid, number_status_batch=10, number_status_timeout=60)
    # 100 requests a batch, each up to 2 × 60 s: 12,000 s, three times that
    assert number_status_jobs.stuck_after(slow) == timedelta(seconds=36_000)
    assert number_status.BATCH == 1000


def test_a_check_is_stopped_by_hand_after_the_batch_in_hand(
    runtime: Runtime, tenant_id: int
) -> None:
    """``cancel`` fails the job at once and audits who stopped it; the run stores and counts
    the batch it was asking about, then asks nothing more. An ended check cannot be stopped,
    another tenant's is not found, and a check stopped before its thread ran never starts."""
    numbers = _numbers(6, start=800)
    _import(runtime, tenant_id, numbers)
    provider = Scripted(runtime, empty=numbers)
    job_id = _start(runtime, tenant_id)

    def stop() -> None:
        with runtime.engine.begin() as conn:
            stopped = number_status_jobs.cancel(conn, runtime.clock, tenant_id, job_id, "user:7")
        assert (stopped["state"], stopped["error"]["code"]) == ("failed", "number_check_cancelled")

    provider.on_call[1] = stop
    with pytest.raises(number_status_jobs.CheckCancelled):
        _run(runtime, tenant_id, job_id, provider)
    assert len(provider.batches) == 1
    job = _job(runtime, tenant_id, job_id)
    assert (job["state"], job["processed"], job["total"]) == ("failed", 2, 6)
    assert job["error"]["code"] == "number_check_cancelled" and job["finished_at"]
    assert "stopped by hand" in job["error"]["message"]["en"]
    [asked] = provider.batches
    empty = asked  # every number is empty: the batch in hand is stored and counted
    assert (job["result"]["checked"], job["result"]["empty"]) == (2, len(empty))
    assert _suppressed(runtime, tenant_id) == {f"138****{n[-4:]}": "scripted" for n in empty}
    [entry] = _audits(runtime, tenant_id)
    assert (entry.actor, entry.target) == ("user:7", f"number_check:{job_id}")
    assert entry.detail == {"provider": "receipts", "error": "number_check_cancelled"}
    with runtime.engine.begin() as conn, pytest.raises(number_status_jobs.CheckEnded):
        number_status_jobs.cancel(conn, runtime.clock, tenant_id, job_id, "user:7")
    # another tenant's check, or an import, is not found
    with runtime.engine.begin() as conn:
        deli = tenants.create_tenant(conn, runtime.clock, slug="deli", name="熟食").id
    [imported] = [j["id"] for j in _imports(runtime, tenant_id)]
    for tenant, number in ((deli, job_id), (tenant_id, imported), (tenant_id, 10**9)):
        with runtime.engine.begin() as conn, pytest.raises(NotFound):
            number_status_jobs.cancel(conn, runtime.clock, tenant, number, "user:7")
    # stopped while pending: its thread finds it taken and asks nothing
    waiting = _start(runtime, tenant_id)
    with runtime.engine.begin() as conn:
        number_status_jobs.cancel(conn, runtime.clock, tenant_id, waiting, "user:7")
    later = Scripted(runtime)
    with pytest.raises(CheckAbandoned):
        number_status_jobs.run(
            runtime.engine, runtime.clock, runtime.keyring, tenant_id, waiting, later,
            actor="user:1",
        )  # fmt: skip
    assert not later.batches
    assert _job(runtime, tenant_id, waiting)["error"]["code"] == "number_check_cancelled"
    # a check that ended cannot be stopped
    done = _start(runtime, tenant_id)
    number_status_jobs.run(
        runtime.engine, runtime.clock, runtime.keyring, tenant_id, done, Scripted(runtime),
        actor="user:1",
    )  # fmt: skip
    with runtime.engine.begin() as conn, pytest.raises(number_status_jobs.CheckEnded):
        number_status_jobs.cancel(conn, runtime.clock, tenant_id, done, "user:7")
    assert _job(runtime, tenant_id, done)["state"] == "done"


def _imports(runtime: Runtime, tenant_id: int) -> list[dict[str, Any]]:
    from hongyan.contacts import importer

    with runtime.engine.connect() as conn:
        return importer.list_jobs(conn, tenant_id)


def test_a_failed_check_is_resumed_where_it_stopped(runtime: Runtime, tenant_id: int) -> None:
    """``resume`` makes a failed check pending again; its run asks only about the contacts
    after the last one the stopped run went through (the batch it failed in included) and
    counts on from its summary. Refused for a check that did not fail, beside another check,
    for a stopped check still finishing its batch, and for another tenant's check."""
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    numbers = _numbers(6, start=900)
    _import(runtime, tenant_id, numbers)
    empty = set(numbers[::2])
    first = Scripted(runtime, empty=empty)

    def down() -> None:
        raise RuntimeError("the vendor is down")

    first.on_call[2] = down
    job_id = _start(runtime, tenant_id)
    with pytest.raises(RuntimeError):
        _run(runtime, tenant_id, job_id, first)
    failed = _job(runtime, tenant_id, job_id)
    assert (failed["state"], failed["processed"], failed["error"]["code"]) == (
        "failed", 2, "number_check_failed",
    )  # fmt: skip
    done_before = first.batches[0]
    with runtime.engine.begin() as conn:
        assert number_status_jobs.resume(conn, clock, runtime.settings, tenant_id, job_id, "user:2")
    pending = _job(runtime, tenant_id, job_id)
    assert (pending["state"], pending["error"], pending["finished_at"]) == ("pending", None, None)
    second = Scripted(runtime, empty=empty)
    summary = _run(runtime, tenant_id, job_id, second)
    asked = [n for b in second.batches for n in b]
    assert sorted(asked) == sorted(set(numbers) - set(done_before))  # the failed batch again
    done = _job(runtime, tenant_id, job_id)
    assert (done["state"], done["processed"], done["total"], done["progress"]) == (
        "done", 6, 6, 1.0,
    )  # fmt: skip
    assert done["result"] == summary.as_dict()
    assert (summary.counts["empty"], summary.counts["active"]) == (3, 3)
    assert summary.by_provider == {"scripted": {"active": 3, "empty": 3, "unknown": 0}}
    assert len(_suppressed(runtime, tenant_id)) == 3
    assert [a.detail.get("error") for a in _audits(runtime, tenant_id)] == [
        "number_check_failed", None,
    ]  # fmt: skip
    # a check that did not fail is not resumed
    with runtime.engine.begin() as conn, pytest.raises(number_status_jobs.CheckNotResumable):
        number_status_jobs.resume(conn, clock, runtime.settings, tenant_id, job_id, "user:2")
    # nor beside another check of the tenant
    stopped = _left_running(runtime, tenant_id, processed=0, total=6)
    with runtime.engine.begin() as conn:
        number_status_jobs.cancel(conn, clock, tenant_id, stopped, "user:1")
    with runtime.engine.begin() as conn, pytest.raises(number_status_jobs.CheckStopping):
        number_status_jobs.resume(conn, clock, runtime.settings, tenant_id, stopped, "user:2")
    clock.advance(number_status_jobs.stuck_after(runtime.settings) + timedelta(minutes=1))
    other = _start(runtime, tenant_id)
    with runtime.engine.begin() as conn, pytest.raises(CheckUnderWay):
        number_status_jobs.resume(conn, clock, runtime.settings, tenant_id, stopped, "user:2")
    with runtime.engine.begin() as conn:
        number_status_jobs.cancel(conn, clock, tenant_id, other, "user:1")  # pending: settled
    with runtime.engine.begin() as conn:
        deli = tenants.create_tenant(conn, clock, slug="deli", name="熟食").id
    with runtime.engine.begin() as conn, pytest.raises(NotFound):
        number_status_jobs.resume(conn, clock, runtime.settings, deli, stopped, "user:2")
    with runtime.engine.begin() as conn:  # its run never settled, but that was long ago
        number_status_jobs.resume(conn, clock, runtime.settings, tenant_id, stopped, "user:2")
    assert _job(runtime, tenant_id, stopped)["state"] == "pending"


def test_a_run_taken_for_dead_and_resumed_stops_beside_its_successor(
    runtime: Runtime, tenant_id: int
) -> None:
    """A slow run whose check was taken for dead, resumed and taken by another run finds at
    its next write that the job, running again, is no longer its own (the run id), and stops
    without asking about another batch."""
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    _import(runtime, tenant_id, _numbers(4, start=950))
    provider = Scripted(runtime)
    job_id = _start(runtime, tenant_id)

    def taken_over() -> None:
        clock.advance(number_status_jobs.stuck_after(runtime.settings) + timedelta(minutes=1))
        assert retention.run(runtime)["stuck_number_checks"] == 1
        with runtime.engine.begin() as conn:
            number_status_jobs.resume(conn, clock, runtime.settings, tenant_id, job_id, "user:2")
            row = TenantScope(tenant_id).select(contact_imports, contact_imports.c.result)
            result = conn.execute(row.where(contact_imports.c.id == job_id)).scalar_one()
            conn.execute(  # what the successor's run does as it takes the job
                TenantScope(tenant_id)
                .update(contact_imports)
                .where(contact_imports.c.id == job_id)
                .values(state="running", result={**result, "run": "successor"})
            )

    provider.on_call[1] = taken_over
    with pytest.raises(CheckAbandoned):
        _run(runtime, tenant_id, job_id, provider)
    assert len(provider.batches) == 1
    job = _job(runtime, tenant_id, job_id)
    assert job["state"] == "running" and job["processed"] == 0  # the successor's, untouched


def test_a_check_whose_storing_failed_resumes_with_that_batch(
    runtime: Runtime, tenant_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failing as a batch's empty numbers are stored: the batch is not counted,
    the resumed run asks about it again, and every number is counted once."""
    from hongyan.contacts import suppression

    numbers = _numbers(6, start=960)
    _import(runtime, tenant_id, numbers)
    real, calls = suppression.add, {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(suppression, "add", failing)
    first = Scripted(runtime, empty=numbers)
    job_id = _start(runtime, tenant_id)
    with pytest.raises(RuntimeError):
        _run(runtime, tenant_id, job_id, first)
    failed = _job(runtime, tenant_id, job_id)
    assert (failed["processed"], failed["result"]["empty"]) == (2, 2)
    monkeypatch.setattr(suppression, "add", real)
    with runtime.engine.begin() as conn:
        number_status_jobs.resume(
            conn, runtime.clock, runtime.settings, tenant_id, job_id, "user:2"
        )
    second = Scripted(runtime, empty=numbers)
    summary = _run(runtime, tenant_id, job_id, second)
    assert sorted(n for b in second.batches for n in b) == sorted(
        set(numbers) - set(first.batches[0])
    )
    assert (summary.counts["empty"], summary.skipped, summary.processed) == (6, 0, 6)
    assert len(_suppressed(runtime, tenant_id)) == 6
    with runtime.engine.connect() as conn:
        [resumed] = conn.execute(
            TenantScope(tenant_id)
            .select(audit_log, audit_log.c.actor, audit_log.c.detail)
            .where(audit_log.c.action == "contacts.check_numbers_resumed")
        ).all()
    assert (resumed.actor, resumed.detail) == ("user:2", {"after_contacts": 2})
