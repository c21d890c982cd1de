"""``hongyan retention run``: purge what no one may keep any longer.

* The consent ledger of a number whose latest record for a purpose is a revocation older than
  three years: the records before it, and the revocation too where an opt-out keeps stopping
  the number (marketing); a notification revocation has no such stand-in and stays.
* The refused rows of imports finished more than 30 days ago (they hold encrypted raw rows).
* Uploaded import files left in ``var/imports`` for more than a day (a preview never started,
  or an import that failed half-way was not resumed within the day).
* Imports still ``running`` after a day: their process died. Their batches commit one by one,
  so they are marked ``failed`` saying how far they got, which makes them resumable.
* Number checks (空号检测) pending or running without a sign of life for
  :func:`~hongyan.contacts.number_status_jobs.stuck_after` (an hour at least): their process
  died. They are marked ``failed`` saying how far they got, so the tenant may start another
  (a new request does the same for its own tenant).
* Audience memberships of contacts that no longer exist: ``forget`` deletes a contact's own,
  but a snapshot taken while the contact was being erased may have written one after that
  (``audience_members`` has no foreign key to cascade; see ``db/tables.py``).
* Clicks of contacts that no longer exist are unlinked as ``forget`` unlinks them: a redirector
  keeps the links it looked up in memory, so a person who clicks their old link after being
  erased gets a click that names the erased contact's id.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hongyan.contacts import number_status_jobs
from hongyan.contacts.service import purge_consent, unlink_clicks
from hongyan.db.scope import TenantScope
from hongyan.db.tables import (
    audience_members,
    clicks,
    contact_import_errors,
    contact_imports,
    contacts,
    tenants,
)
from hongyan.runtime import Runtime

ERRORS_KEEP = timedelta(days=30)
UPLOAD_KEEP_SECONDS = 24 * 3600
STUCK_AFTER = timedelta(days=1)


def uploads_dir(runtime: Runtime) -> Path:
    return runtime.settings.var_dir / "imports"


def abandoned(import_id: int, result: dict[str, Any] | None) -> dict[str, Any]:
    """The error of an import whose process died: what it had stored (its batches commit one
    by one), and how to go on."""
    line = int((result or {}).get("line") or 0)
    if not line:
        zh, en = (
            "导入进程已中止，未导入任何数据",
            "The importing process stopped; nothing was imported",
        )
    else:
        zh = (
            f"导入进程已中止；第 {line} 行及之前的数据已保存。用同一文件继续："
            f"hongyan contacts import 文件 --resume {import_id}，或在一天内于控制台/API 继续"
        )
        en = (
            f"The importing process stopped; rows up to line {line} are stored. Resume it with "
            f"the same file (hongyan contacts import FILE --resume {import_id}), or from the "
            "console or API while the upload is kept (a day)"
        )
    return {"code": "import_abandoned", "message": {"zh": zh, "en": en}, "line": line}


def run(runtime: Runtime) -> dict[str, Any]:
    now = runtime.clock.now()
    out = {
        "consent_records": 0,
        "import_error_rows": 0,
        "uploads": 0,
        "stuck_imports": 0,
        "stuck_number_checks": 0,
        "orphan_members": 0,
        "orphan_clicks": 0,
    }
    with runtime.engine.connect() as conn:
        tenant_ids = [int(t) for t in conn.execute(sa.select(tenants.c.id)).scalars()]
    for tenant_id in tenant_ids:
        scope = TenantScope(tenant_id)
        with runtime.engine.begin() as conn:
            out["consent_records"] += purge_consent(conn, runtime.clock, tenant_id)
            old = scope.select(contact_imports, contact_imports.c.id).where(
                contact_imports.c.finished_at < now - ERRORS_KEEP
            )
            out["import_error_rows"] += conn.execute(
                scope.delete(contact_import_errors).where(
                    contact_import_errors.c.import_id.in_(old)
                )
            ).rowcount
            am = audience_members.c
            out["orphan_members"] += conn.execute(
                scope.delete(audience_members).where(
                    ~sa.exists().where(scope.owns(contacts), contacts.c.id == am.contact_id)
                )
            ).rowcount
            out["orphan_clicks"] += unlink_clicks(
                conn,
                scope,
                sa.and_(
                    clicks.c.contact_id.is_not(None),
                    ~sa.exists().where(scope.owns(contacts), contacts.c.id == clicks.c.contact_id),
                ),
            )
            stuck = conn.execute(
                scope.select(contact_imports, contact_imports.c.id, contact_imports.c.result)
                .where(
                    contact_imports.c.kind != number_status_jobs.KIND,
                    contact_imports.c.state.in_(("pending", "running")),
                    # (a resumed import started again long after it was made)
                    sa.func.coalesce(contact_imports.c.started_at, contact_imports.c.created_at)
                    < now - STUCK_AFTER,
                )
                .with_for_update()
            ).all()
            for job in stuck:
                conn.execute(
                    scope.update(contact_imports)
                    .where(contact_imports.c.id == job.id)
                    .values(state="failed", finished_at=now, error=abandoned(job.id, job.result))
                )
            out["stuck_imports"] += len(stuck)
            out["stuck_number_checks"] += number_status_jobs.abandon_stuck(
                conn, runtime.clock, runtime.settings, tenant_id
            )
    folder = uploads_dir(runtime)
    if folder.is_dir():
        cutoff = time.time() - UPLOAD_KEEP_SECONDS
        for path in folder.rglob("*"):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                out["uploads"] += 1
    return out
