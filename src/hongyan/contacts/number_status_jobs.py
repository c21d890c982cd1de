"""空号检测 as a job: the API's check runs in a thread and its caller follows it by polling.

A check of a tenant with hundreds of thousands of contacts against a paid service takes
minutes, longer than a request behind a proxy may wait. So ``POST /contacts/check-numbers``
makes a job and answers 202, a thread runs :func:`run`, and ``GET
/contacts/check-numbers/{id}`` reads how far it got. ``hongyan contacts check-numbers`` makes
the same job and runs it in the foreground.

The job is a row of ``contact_imports``, the contacts' job table (imports of kind ``contacts``
and ``events``), of kind :data:`KIND`: state ``pending`` → ``running`` → ``done`` or
``failed`` (and, resumed, ``pending`` again); ``result`` holds ``total`` (the tenant's
contacts when the check started; resumed, what it had gone through plus what was left),
``processed`` (contacts gone through so far: checked, or skipped as already 空号),
``summary`` (:meth:`~hongyan.contacts.number_status.CheckSummary.as_dict` so far, final once
done), ``after`` (the id of the last contact counted: where a resumed check goes on),
``run`` (the id of the run writing it, which every write checks), ``alive_at`` (when the
running check last wrote) and, once stopped by hand, ``settled`` (its run has counted its last
batch); ``error`` is the typed error of a failed check. The import views
(:func:`hongyan.contacts.importer.get_job`, ``list_jobs``) never show these rows, and
:func:`get` shows nothing else.

:func:`recent` lists a tenant's latest checks. :func:`cancel` stops one by hand: the job is
``failed`` with :data:`CANCELLED` at once, and its run stops at its next write (below).
:func:`resume` makes a failed or stopped check ``pending`` again: its run goes on after the last
contact whose batch was counted (``result.after``), counting on from the stored summary.

One check at a time per tenant: :func:`start` refuses a second while one is ``pending`` or
``running`` (:class:`CheckUnderWay`, 409). Its read and insert are serialised per tenant (a
transaction-level advisory lock on PostgreSQL; on SQLite a writing transaction begins
IMMEDIATE and holds the one write lock), so two requests at once make one job, not two.

A process that dies (killed, restarted by a deploy) leaves its check ``running``. A live check
writes its progress after every batch of contacts
(:data:`~hongyan.contacts.number_status.BATCH`), so one silent for :func:`stuck_after` (an
hour, more if the paid service's settings let a batch take longer) is taken as abandoned and
marked ``failed`` saying how far it got: by :func:`start` when the tenant asks for a new check
(so a dead check never blocks the tenant for long) and by ``hongyan retention run``, as it does
for imports left running. Every write of a running check is conditional on the row still being
``running``, so a check wrongly taken for dead stops at its next batch instead of running
beside its successor.

The audit record ``contacts.check_numbers`` is written when the job ends, done or failed, in
the transaction that ends it.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hongyan.clock import Clock
from hongyan.contacts import importer, number_status
from hongyan.contacts.number_status import CheckSummary, NumberStatusProvider
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contact_imports
from hongyan.errors import Conflict, HongyanError, NotFound
from hongyan.security import audit
from hongyan.security.keyring import KeyRing

if TYPE_CHECKING:
    from hongyan.runtime import Runtime
    from hongyan.settings import Settings

log = logging.getLogger("hongyan.contacts.number_status")

KIND = "numbers"
#: pg_advisory_xact_lock(class, tenant): starting a number check (see hongyan.campaigns.caps).
LOCK_CLASS = 7008
#: The least a check may go without writing before it is taken for abandoned.
STUCK_AFTER = timedelta(hours=1)
ACTIVE = ("pending", "running")


class CheckUnderWay(Conflict):
    code = "number_check_running"
    message_en = (
        "A number check is already under way for this tenant; follow it, or start another "
        "once it has ended"
    )
    message_zh = "本租户已有一项空号检测正在进行；请查看其进度，或待其结束后再发起"


class CheckAbandoned(Conflict):
    """The job is no longer this run's to write: it was taken for abandoned (or never started)."""

    code = "number_check_abandoned"
    message_en = "This number check was marked abandoned; start a new one"
    message_zh = "该空号检测已被判定为中止，请重新发起"


class CheckCancelled(CheckAbandoned):
    """The job was stopped by hand (:func:`cancel`)."""

    code = "number_check_cancelled"
    message_en = "This number check was stopped; the empty numbers found so far are suppressed"
    message_zh = "该空号检测已被停止；已检出的空号已加入屏蔽名单"


class CheckEnded(Conflict):
    code = "number_check_ended"
    message_en = "This number check has already ended; there is nothing to stop"
    message_zh = "该空号检测已经结束，无需停止"


#: The error of a check someone stopped (:func:`cancel`).
CANCELLED = "number_check_cancelled"


def url_of(job_id: int) -> str:
    return f"/api/v1/contacts/check-numbers/{job_id}"


def stuck_after(settings: Settings) -> timedelta:
    """How long a running check may go without writing before it is taken for abandoned.

    A live check writes after every batch of contacts. With the paid service, a batch is up to
    ``ceil(BATCH / number_status_batch)`` requests one after the other, each bounded by the
    timeout while connecting and again while the answer arrives; three times that, and never
    less than :data:`STUCK_AFTER`."""
    worst = 0.0
    if settings.number_status_provider != "receipts":
        requests = math.ceil(number_status.BATCH / max(1, settings.number_status_batch))
        worst = requests * 2 * float(settings.number_status_timeout)
    return max(STUCK_AFTER, timedelta(seconds=3 * worst))


# -- starting --------------------------------------------------------------------------------------


def _lock_tenant(conn: Connection, tenant_id: int) -> None:
    """Serialise :func:`start` per tenant until the transaction ends. SQLite: ``engine.begin()``
    and the API's request transaction begin IMMEDIATE, so a writing transaction already holds
    the database's one write lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_CLASS, tenant_id)))


def start(conn: Connection, clock: Clock, settings: Settings, tenant_id: int, actor: str) -> int:
    """The new check's job (``pending``), made in the caller's transaction: run it with
    :func:`run_in_background` once that has committed, or :func:`run` in the foreground.

    Refuses with :class:`CheckUnderWay` while another check of the tenant is pending or
    running; one silent for :func:`stuck_after` is first marked abandoned."""
    _lock_tenant(conn, tenant_id)
    abandon_stuck(conn, clock, settings, tenant_id)
    c = contact_imports.c
    under_way = conn.execute(
        TenantScope(tenant_id)
        .select(contact_imports, c.id)
        .where(c.kind == KIND, c.state.in_(ACTIVE))
        .order_by(c.id)
        .limit(1)
    ).scalar()
    if under_way is not None:
        raise CheckUnderWay(details={"id": int(under_way), "url": url_of(int(under_way))})
    return importer.create_job(
        conn,
        clock,
        tenant_id,
        kind=KIND,
        filename="",
        options={"provider": settings.number_status_provider},
        actor=actor,
    )


# -- the stuck ones --------------------------------------------------------------------------------


def _last_sign_of_life(job: Any) -> datetime:
    alive = (job.result or {}).get("alive_at")
    if alive:
        return datetime.fromisoformat(alive)
    at: datetime = job.started_at or job.created_at
    return at


def abandoned(result: dict[str, Any] | None) -> dict[str, Any]:
    """The error of a check whose process stopped: how far it got (what it found is kept)."""
    result = result or {}
    processed, total = int(result.get("processed") or 0), result.get("total")
    if not processed:
        zh = "空号检测进程已中止，尚未检测任何号码；请重新发起"
        en = "The checking process stopped before it checked any number; start a new check"
    else:
        of_zh = f"（共 {total} 个）" if total is not None else ""
        of_en = f" of {total}" if total is not None else ""
        zh = (
            f"空号检测进程已中止；已处理 {processed} 个联系人{of_zh}，其中检出的空号已加入"
            "屏蔽名单，重新发起检测时不再询问"
        )
        en = (
            f"The checking process stopped after {processed}{of_en} contacts; the empty "
            "numbers it found are suppressed, and a new check does not ask about them again"
        )
    return {"code": "number_check_abandoned", "message": {"zh": zh, "en": en}}


def abandon_stuck(conn: Connection, clock: Clock, settings: Settings, tenant_id: int) -> int:
    """Mark the tenant's checks that are pending or running but silent for
    :func:`stuck_after` ``failed`` (their process died); how many. In the caller's
    transaction."""
    scope = TenantScope(tenant_id)
    c = contact_imports.c
    now = clock.now()
    cutoff = now - stuck_after(settings)
    rows = conn.execute(
        scope.select(contact_imports, c.id, c.result, c.created_at, c.started_at)
        .where(c.kind == KIND, c.state.in_(ACTIVE))
        .with_for_update()
    ).all()
    stuck = [r for r in rows if _last_sign_of_life(r) < cutoff]
    for job in stuck:
        conn.execute(
            scope.update(contact_imports)
            .where(c.id == job.id, c.state.in_(ACTIVE))
            .values(state="failed", finished_at=now, error=abandoned(job.result))
        )
    return len(stuck)


def cancel(
    conn: Connection, clock: Clock, tenant_id: int, job_id: int, actor: str
) -> dict[str, Any]:
    """Stop a pending or running check, in the caller's transaction: it is ``failed`` with
    :data:`CANCELLED` at once and audited as ended by ``actor``. Its thread finds the job no
    longer running at its next write (after the batch in hand, whose empty numbers are stored
    and then counted, see :func:`run`) and asks the provider nothing more. A check that has
    ended is :class:`CheckEnded` (409); another tenant's, or an import, is not found."""
    scope = TenantScope(tenant_id)
    c = contact_imports.c
    row = conn.execute(
        scope.select(contact_imports, c.state, c.result, c.options)
        .where(c.id == job_id, c.kind == KIND)
        .with_for_update()
    ).first()
    if row is None:
        raise NotFound("No such number check", "找不到该空号检测任务")
    if row.state not in ACTIVE:
        raise CheckEnded(details={"id": job_id, "state": row.state})
    error = {
        "code": CANCELLED,
        "message": {
            "zh": "空号检测已被手动停止；已检出的空号已加入屏蔽名单，重新检测时不再询问",
            "en": "The number check was stopped by hand; the empty numbers found so far are "
            "suppressed, and a new check does not ask about them again",
        },
    }
    # A pending check has no run to finish a batch: it is settled at once.
    result = {**(row.result or {}), "settled": row.state == "pending"}
    conn.execute(
        scope.update(contact_imports)
        .where(c.id == job_id, c.state.in_(ACTIVE))
        .values(state="failed", finished_at=clock.now(), error=error, result=result)
    )
    # Who stopped it and when; not its counts, which the batch in hand may still add to.
    summary = (row.result or {}).get("summary") or {}
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        action="contacts.check_numbers",
        target=f"number_check:{job_id}",
        actor=actor,
        detail={
            "provider": summary.get("provider") or (row.options or {}).get("provider"),
            "error": CANCELLED,
        },
    )
    return get(conn, tenant_id, job_id)


def _count_after_cancel(
    engine: Engine, clock: Clock, tenant_id: int, job_id: int, run_id: str, result: dict[str, Any]
) -> bool:
    """A cancelled check's last batch was stored after its job stopped: count it there (as
    ``result``, now settled), if the job is still the one this run (``run_id``) was stopped in.
    Whether it was cancelled (rather than taken for abandoned)."""
    c = contact_imports.c
    with engine.begin() as conn:
        row = conn.execute(
            TenantScope(tenant_id)
            .select(contact_imports, c.state, c.error, c.result)
            .where(c.id == job_id, c.kind == KIND)
            .with_for_update()
        ).first()
        if (
            row is None
            or row.state != "failed"
            or (row.error or {}).get("code") != CANCELLED
            or (row.result or {}).get("run") != run_id
        ):
            return False
        conn.execute(
            TenantScope(tenant_id)
            .update(contact_imports)
            .where(c.id == job_id)
            .values(result={**result, "settled": True})
        )
    return True


class CheckNotResumable(Conflict):
    code = "number_check_not_resumable"
    message_en = "Only a number check that failed or was stopped can be resumed"
    message_zh = "只有失败或已停止的空号检测才能继续"


class CheckStopping(Conflict):
    code = "number_check_stopping"
    message_en = (
        "This number check is finishing the batch it was checking when it was stopped; "
        "resume it in a moment"
    )
    message_zh = "该空号检测正在完成停止时的最后一批，请稍后再继续"


def resume(
    conn: Connection, clock: Clock, settings: Settings, tenant_id: int, job_id: int, actor: str
) -> int:
    """Make a failed or stopped check ``pending`` again, in the caller's transaction: run it
    (:func:`run_in_background` or :func:`run`) once that has committed, and it goes on after the
    last contact its stopped run went through, so numbers already asked about are not paid for
    again. Refused while another check of the tenant is under way (:class:`CheckUnderWay`),
    for a check that did not fail (:class:`CheckNotResumable`), and for one stopped by hand
    whose run is still finishing its batch (:class:`CheckStopping`, for at most
    :func:`stuck_after`); a check from before checks kept their place, which went through
    contacts but has no ``after``, is not resumable either. Audited when asked."""
    _lock_tenant(conn, tenant_id)
    abandon_stuck(conn, clock, settings, tenant_id)
    scope = TenantScope(tenant_id)
    c = contact_imports.c
    row = conn.execute(
        scope.select(contact_imports, c.state, c.result, c.error, c.finished_at)
        .where(c.id == job_id, c.kind == KIND)
        .with_for_update()
    ).first()
    if row is None:
        raise NotFound("No such number check", "找不到该空号检测任务")
    if row.state != "failed":
        raise CheckNotResumable(details={"id": job_id, "state": row.state})
    result = row.result or {}
    if result.get("processed") and "after" not in result:
        raise CheckNotResumable(details={"id": job_id, "state": row.state, "after": None})
    stopped_at = row.finished_at
    if (
        (row.error or {}).get("code") == CANCELLED
        and not result.get("settled")
        and stopped_at is not None
        and stopped_at > clock.now() - stuck_after(settings)
    ):
        raise CheckStopping(details={"id": job_id})
    under_way = conn.execute(
        scope.select(contact_imports, c.id)
        .where(c.kind == KIND, c.state.in_(ACTIVE), c.id != job_id)
        .limit(1)
    ).scalar()
    if under_way is not None:
        raise CheckUnderWay(details={"id": int(under_way), "url": url_of(int(under_way))})
    # A fresh sign of life: pending again, it is not taken for dead before its thread runs.
    alive = {**result, "alive_at": clock.now().isoformat()}
    conn.execute(
        scope.update(contact_imports)
        .where(c.id == job_id, c.state == "failed")
        .values(state="pending", error=None, finished_at=None, result=alive)
    )
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        action="contacts.check_numbers_resumed",
        target=f"number_check:{job_id}",
        actor=actor,
        detail={"after_contacts": int(result.get("processed") or 0)},
    )
    return job_id


# -- running ---------------------------------------------------------------------------------------


def _result(total: int, summary: CheckSummary | None, clock: Clock, **extra: Any) -> dict[str, Any]:
    return {
        "total": total,
        "processed": summary.processed if summary else 0,
        "summary": summary.as_dict() if summary else None,
        "after": summary.after if summary else 0,
        "alive_at": clock.now().isoformat(),
        **extra,
    }


def _write(
    engine: Engine,
    clock: Clock,
    tenant_id: int,
    job_id: int,
    run_id: str,
    values: dict[str, Any],
    audit_row: dict[str, Any] | None = None,
) -> None:
    """Update the running job (and, as it ends, audit it) in one transaction; raises
    :class:`CheckAbandoned` if it is no longer running, or no longer this run's (``run_id``:
    a check taken for dead and resumed runs again under another run's id, and the slow old run
    must stop rather than run beside it)."""
    c = contact_imports.c
    scope = TenantScope(tenant_id)
    with engine.begin() as conn:
        row = conn.execute(
            scope.select(contact_imports, c.state, c.result)
            .where(c.id == job_id, c.kind == KIND)
            .with_for_update()
        ).first()
        if row is None or row.state != "running" or (row.result or {}).get("run") != run_id:
            raise CheckAbandoned()
        conn.execute(scope.update(contact_imports).where(c.id == job_id).values(**values))
        if audit_row is not None:
            audit.record(
                conn,
                clock,
                tenant_id=tenant_id,
                action="contacts.check_numbers",
                target=f"number_check:{job_id}",
                **audit_row,
            )


def _counts(summary: CheckSummary) -> dict[str, Any]:
    out = summary.as_dict()
    return {k: out[k] for k in ("provider", "checked", *number_status.STATUSES)}


def run(
    engine: Engine,
    clock: Clock,
    keyring: KeyRing,
    tenant_id: int,
    job_id: int,
    provider: NumberStatusProvider,
    *,
    actor: str,
    progress: Callable[[int, int], None] | None = None,
    batch: int = number_status.BATCH,
) -> CheckSummary:
    """Run the check of job ``job_id`` (made by :func:`start`): ``pending`` → ``running``, the
    progress written after each batch, then ``done`` with the summary or ``failed`` with the
    error (raised again), the audit record written in the same transaction. ``progress`` is
    called with (processed, total) after each batch. A job :func:`resume` made pending again
    goes on after the last contact its stopped run went through, counting on from its
    summary."""
    c = contact_imports.c
    with engine.connect() as conn:
        stored = (
            conn.execute(
                TenantScope(tenant_id)
                .select(contact_imports, c.result)
                .where(c.id == job_id, c.kind == KIND)
            ).scalar()
            or {}
        )
        after = int(stored.get("after") or 0)
        resumed = (
            CheckSummary.restored(provider.name, stored.get("summary"), after) if after else None
        )
        total = (resumed.processed if resumed else 0) + number_status.count_contacts(
            conn, tenant_id, after
        )
    run_id = secrets.token_hex(8)  # this run's: every write checks the job is still its own

    def result_of(so_far: CheckSummary | None) -> dict[str, Any]:
        return _result(total, so_far, clock, run=run_id)

    with engine.begin() as conn:
        taken = conn.execute(
            TenantScope(tenant_id)
            .update(contact_imports)
            .where(c.id == job_id, c.kind == KIND, c.state == "pending")
            .values(state="running", started_at=clock.now(), result=result_of(resumed))
        ).rowcount
    if not taken:
        raise CheckAbandoned()
    summary = resumed or CheckSummary(provider.name)

    def went_on(so_far: CheckSummary) -> None:
        nonlocal summary  # what a failure later on records as found so far
        summary = so_far
        _write(engine, clock, tenant_id, job_id, run_id, {"result": result_of(so_far)})
        if progress:
            progress(so_far.processed, max(total, so_far.processed))

    try:
        summary = number_status.check_contacts(
            engine, clock, keyring, tenant_id, provider, batch=batch, progress=went_on,
            resume=resumed,
        )  # fmt: skip
        done = {"state": "done", "finished_at": clock.now(), "result": result_of(summary)}
        audit_row = {"actor": actor, "detail": _counts(summary)}
        _write(engine, clock, tenant_id, job_id, run_id, done, audit_row)
    except CheckAbandoned:
        if _count_after_cancel(engine, clock, tenant_id, job_id, run_id, result_of(summary)):
            log.info("number check %s was stopped by hand", job_id)
            raise CheckCancelled() from None
        log.warning("number check %s was marked abandoned; stopped", job_id)
        raise
    except BaseException as exc:
        if isinstance(exc, HongyanError):
            error = exc.body()
        elif not isinstance(exc, Exception):  # interrupted (Ctrl-C in the CLI, a shutdown)
            error = {
                "code": "number_check_interrupted",
                "message": {
                    "zh": "空号检测被中断；已检出的空号已加入屏蔽名单，重新检测时不再询问",
                    "en": "The number check was interrupted; the empty numbers found so far "
                    "are suppressed, and a new check does not ask about them again",
                },
            }
        else:
            log.exception("number check %s stopped on an internal error", job_id)
            error = {
                "code": "number_check_failed",
                "message": {
                    "zh": "空号检测因内部错误中止；已检出的空号已加入屏蔽名单，重新检测时不再询问",
                    "en": "The number check stopped on an internal error; the empty numbers "
                    "found so far are suppressed, and a new check does not ask about them again",
                },
            }
        failed = {
            "state": "failed",
            "finished_at": clock.now(),
            "error": error,
            "result": result_of(summary),
        }
        row = {"actor": actor, "detail": {**_counts(summary), "error": error["code"]}}
        try:
            _write(engine, clock, tenant_id, job_id, run_id, failed, row)
        except CheckAbandoned:  # stopped or taken for abandoned meanwhile: that error stands
            # (what was counted before the failure settles a stop, so it can be resumed)
            _count_after_cancel(engine, clock, tenant_id, job_id, run_id, result_of(summary))
            log.warning("number check %s failed after it was stopped or abandoned", job_id)
        except Exception:  # the database itself is gone: retention run will say so later
            log.exception("number check %s: its failure could not be recorded", job_id)
        raise
    return summary


def run_in_background(
    runtime: Runtime, tenant_id: int, job_id: int, provider: NumberStatusProvider, actor: str
) -> None:
    """Run job ``job_id`` in a thread (after the transaction that made it has committed)."""

    def work() -> None:
        try:
            run(
                runtime.engine, runtime.clock, runtime.keyring, tenant_id, job_id, provider,
                actor=actor,
            )  # fmt: skip
        except Exception:  # recorded on the job (an internal error was logged with its trace)
            log.info("number check %s failed", job_id)

    threading.Thread(target=work, name=f"number-check-{job_id}", daemon=True).start()


# -- reading ---------------------------------------------------------------------------------------


def get(conn: Connection, tenant_id: int, job_id: int) -> dict[str, Any]:
    """The check as the API shows it; another tenant's id, or an import's, is not found."""
    c = contact_imports.c
    row = (
        conn.execute(
            TenantScope(tenant_id).select(contact_imports).where(c.id == job_id, c.kind == KIND)
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("No such number check", "找不到该空号检测任务")
    return view(dict(row))


def recent(conn: Connection, tenant_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """The tenant's latest checks, newest first, as :func:`get` shows each."""
    c = contact_imports.c
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(contact_imports)
        .where(c.kind == KIND)
        .order_by(c.id.desc())
        .limit(limit)
    ).mappings()
    return [view(dict(r)) for r in rows]


def view(job: dict[str, Any]) -> dict[str, Any]:
    result = job["result"] or {}
    total = result.get("total")
    processed = int(result.get("processed") or 0)
    if job["state"] == "done":
        fraction = 1.0
    elif total:
        fraction = min(0.99, processed / total)
    else:
        fraction = 0.0
    return {
        "id": job["id"],
        "state": job["state"],
        "progress": round(fraction, 4),
        "processed": processed,
        "total": None if total is None else max(int(total), processed),
        "result": result.get("summary"),
        "error": job["error"],
        "created_at": job["created_at"],
        "started_at": job["started_at"],
        "finished_at": job["finished_at"],
        "url": url_of(int(job["id"])),
        # Stopped by hand while its run still finishes (and counts) the batch in hand.
        "stopping": (job["error"] or {}).get("code") == CANCELLED and not result.get("settled"),
    }
