"""The platform's review queue: signatures and templates waiting for a reviewer's decision.

Reading the queue crosses tenants, so it goes through the tenant guard's named path
(``unscoped(stmt, reason)``); a decision is written through ``TenantScope(<the item's tenant>)``
with a compare-and-set on ``status = 'pending'`` (two reviewers deciding at once: one wins, the
other gets a Conflict), and lands in that tenant's audit log with the reviewer as
``staff:<id>``. Rejecting needs a reason, which the tenant sees. A template is approved only
while its text still passes the lint against the tenant's current signatures and policy, so
a template under an unapproved signature waits for the signature's review.
"""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.content import service
from hongyan.content.lint import lint
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import signatures, template_versions, templates, tenants
from hongyan.errors import Conflict, NotFound, ValidationFailed
from hongyan.security import audit
from hongyan.staff.service import StaffPrincipal

Kind = Literal["signature", "template"]
WHY_QUEUE = "the platform review queue lists pending items of every tenant"
WHY_FIND = "a reviewer finds a queued item by its id before knowing its tenant"
MAX_REASON = 300


class ReviewConflict(Conflict):
    code = "review_conflict"


def _reason(approve: bool, reason: str | None) -> str | None:
    reason = (reason or "").strip()
    if not approve and not reason:
        raise ValidationFailed("A rejection needs a reason", "驳回时须填写原因")
    if len(reason) > MAX_REASON:
        raise ValidationFailed(
            f"The reason is at most {MAX_REASON} characters", f"原因最多 {MAX_REASON} 个字符"
        )
    return reason or None


def queue(conn: Connection, *, kind: Kind | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Pending signatures and template versions of every tenant, oldest first."""
    items: list[dict[str, Any]] = []
    if kind in (None, "signature"):
        stmt = (
            sa.select(
                signatures.c.id,
                signatures.c.tenant_id,
                signatures.c.text,
                signatures.c.note,
                signatures.c.created_at.label("submitted_at"),
                tenants.c.slug.label("tenant"),
                tenants.c.name.label("tenant_name"),
            )
            .join(tenants, tenants.c.id == signatures.c.tenant_id)
            .where(signatures.c.status == "pending")
            .order_by(signatures.c.created_at, signatures.c.id)
            .limit(limit)
        )
        for r in conn.execute(unscoped(stmt, WHY_QUEUE)).mappings():
            items.append({"kind": "signature", **r})
    if kind in (None, "template"):
        v, t = template_versions, templates
        stmt = (
            sa.select(
                v.c.id,
                v.c.tenant_id,
                v.c.template_id,
                v.c.version,
                v.c.body,
                v.c.link_url,
                v.c.findings,
                v.c.submitted_at,
                v.c.submitted_by,
                t.c.name,
                t.c.category,
                tenants.c.slug.label("tenant"),
                tenants.c.name.label("tenant_name"),
            )
            .join(t, t.c.id == v.c.template_id)
            .join(tenants, tenants.c.id == v.c.tenant_id)
            .where(v.c.status == "pending")
            .order_by(v.c.submitted_at, v.c.id)
            .limit(limit)
        )
        for r in conn.execute(unscoped(stmt, WHY_QUEUE)).mappings():
            items.append({"kind": "template", **r})
    items.sort(key=lambda i: (i["submitted_at"], i["kind"], i["id"]))
    return items[:limit]


def recent(conn: Connection, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest decisions by reviewers, newest first."""
    sig = (
        sa.select(
            sa.literal("signature").label("kind"),
            signatures.c.id,
            signatures.c.text.label("subject"),
            signatures.c.status,
            signatures.c.reason,
            signatures.c.reviewed_at,
            signatures.c.reviewed_by,
            tenants.c.slug.label("tenant"),
        )
        .join(tenants, tenants.c.id == signatures.c.tenant_id)
        .where(signatures.c.reviewed_by.is_not(None))
        .order_by(signatures.c.reviewed_at.desc(), signatures.c.id.desc())
        .limit(limit)
    )
    ver = (
        sa.select(
            sa.literal("template").label("kind"),
            template_versions.c.id,
            templates.c.name.label("subject"),
            template_versions.c.status,
            template_versions.c.reason,
            template_versions.c.reviewed_at,
            template_versions.c.reviewed_by,
            tenants.c.slug.label("tenant"),
        )
        .join(templates, templates.c.id == template_versions.c.template_id)
        .join(tenants, tenants.c.id == template_versions.c.tenant_id)
        .where(template_versions.c.reviewed_by.is_not(None))
        .order_by(template_versions.c.reviewed_at.desc(), template_versions.c.id.desc())
        .limit(limit)
    )
    rows = [dict(r) for r in conn.execute(unscoped(sig, WHY_QUEUE)).mappings()]
    rows += [dict(r) for r in conn.execute(unscoped(ver, WHY_QUEUE)).mappings()]
    rows.sort(key=lambda r: (r["reviewed_at"], r["id"]), reverse=True)
    return rows[:limit]


def decide_signature(
    conn: Connection,
    clock: Clock,
    reviewer: StaffPrincipal,
    signature_id: int,
    *,
    approve: bool,
    reason: str | None = None,
) -> dict[str, Any]:
    reviewer.require_reviewer()
    why = _reason(approve, reason)
    row = conn.execute(
        unscoped(sa.select(signatures).where(signatures.c.id == signature_id), WHY_FIND)
    ).first()
    if row is None:
        raise NotFound("No such signature", "找不到该签名")
    if row.status != "pending":
        raise ReviewConflict(
            f"The signature is {row.status}, not waiting for review", "该签名不在待审核状态"
        )
    scope = TenantScope(row.tenant_id)
    now = clock.now()
    status = "approved" if approve else "rejected"
    result = conn.execute(
        scope.update(signatures)
        .where(signatures.c.id == signature_id, signatures.c.status == "pending")
        .values(status=status, reason=why, reviewed_at=now, reviewed_by=reviewer.actor)
    )
    if result.rowcount != 1:
        raise ReviewConflict("Another reviewer decided first", "已被其他审核员处理")
    if approve:
        has_default = conn.execute(
            scope.select(signatures, signatures.c.id).where(
                signatures.c.is_default.is_(True), signatures.c.status == "approved"
            )
        ).first()
        if has_default is None:
            conn.execute(
                scope.update(signatures)
                .where(signatures.c.id == signature_id)
                .values(is_default=True)
            )
    audit.record(
        conn,
        clock,
        tenant_id=row.tenant_id,
        actor=reviewer.actor,
        action=f"signature.{'approve' if approve else 'reject'}",
        target=f"signature:{signature_id}",
        detail={"text": row.text, "reason": why},
    )
    return {"kind": "signature", "id": signature_id, "status": status, "reason": why}


def decide_template(
    conn: Connection,
    clock: Clock,
    reviewer: StaffPrincipal,
    version_id: int,
    *,
    approve: bool,
    reason: str | None = None,
) -> dict[str, Any]:
    reviewer.require_reviewer()
    why = _reason(approve, reason)
    v = template_versions
    row = conn.execute(
        unscoped(
            sa.select(v, templates.c.category, templates.c.archived_at)
            .join(templates, templates.c.id == v.c.template_id)
            .where(v.c.id == version_id),
            WHY_FIND,
        )
    ).first()
    if row is None:
        raise NotFound("No such template version", "找不到该模板版本")
    if row.status != "pending":
        raise ReviewConflict(
            f"Version {row.version} is {row.status}, not waiting for review",
            "该模板版本不在待审核状态",
        )
    if approve:
        result = lint(row.body, service.context(conn, row.tenant_id, row.category))
        errors = [f.as_dict() for f in result.findings if f.severity == "error"]
        if errors:
            raise ReviewConflict(
                "The template does not pass the lint now (is its signature approved?)",
                "该模板当前未通过检查（签名是否已通过审核？）",
                details={"findings": errors},
            )
    scope = TenantScope(row.tenant_id)
    now = clock.now()
    status = "approved" if approve else "rejected"
    done = conn.execute(
        scope.update(v)
        .where(v.c.id == version_id, v.c.status == "pending")
        .values(status=status, reason=why, reviewed_at=now, reviewed_by=reviewer.actor)
    )
    if done.rowcount != 1:
        raise ReviewConflict("Another reviewer decided first", "已被其他审核员处理")
    if approve:
        conn.execute(
            scope.update(templates)
            .where(templates.c.id == row.template_id)
            .values(live_version_id=version_id, updated_at=now)
        )
    else:
        conn.execute(
            scope.update(templates).where(templates.c.id == row.template_id).values(updated_at=now)
        )
    audit.record(
        conn,
        clock,
        tenant_id=row.tenant_id,
        actor=reviewer.actor,
        action=f"template.{'approve' if approve else 'reject'}",
        target=f"template:{row.template_id}",
        detail={"version": row.version, "reason": why},
    )
    return {
        "kind": "template",
        "id": version_id,
        "template_id": row.template_id,
        "version": row.version,
        "status": status,
        "reason": why,
    }


def decide(
    conn: Connection,
    clock: Clock,
    reviewer: StaffPrincipal,
    kind: str,
    item_id: int,
    *,
    approve: bool,
    reason: str | None = None,
) -> dict[str, Any]:
    """One decision on a queued signature or template version."""
    if kind == "signature":
        return decide_signature(conn, clock, reviewer, item_id, approve=approve, reason=reason)
    if kind == "template":
        return decide_template(conn, clock, reviewer, item_id, approve=approve, reason=reason)
    raise ValidationFailed(
        f"Unknown kind {kind!r}: signature or template",
        f"未知类型 {kind!r}：须为 signature 或 template",
    )
