"""A tenant's templates and their versions: write, submit for review, send with the approved one.

A template has a name and a category (verification, notification, marketing; fixed at creation,
so an approved notification can never become a marketing text) and versions. A version is a
``draft`` while the tenant edits it, ``pending`` once submitted, then ``approved`` or
``rejected`` with the reviewer's reason (:mod:`hongyan.content.review`). A version under review
or decided is never edited again: editing makes the next version, a draft, while the approved
one keeps sending (``live_version_id``, the newest approved version). Submitting runs the lint;
a text with errors cannot be submitted. Every change is in the tenant's audit log.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from hongyan.clock import Clock
from hongyan.content.lint import LintContext, check_input, lint
from hongyan.content.placeholders import parse
from hongyan.content.service import category_of
from hongyan.db.scope import TenantScope
from hongyan.db.tables import template_versions, templates
from hongyan.errors import Conflict, NotFound, ValidationFailed
from hongyan.security import audit

STATUSES = ("draft", "pending", "approved", "rejected")
MAX_NAME = 100


class TemplateHasErrors(ValidationFailed):
    code = "template_has_errors"
    message_zh = "模板存在错误，修正后才能提交审核"
    message_en = "The template has errors; fix them before submitting it for review"


class TemplateNotFound(NotFound):
    code = "template_not_found"
    message_zh = "找不到该模板"
    message_en = "No such template"


def _check_body(body: str) -> str:
    check_input(body)
    parse(body)  # TemplateError (with the position) for anything but placeholders
    return body


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise ValidationFailed(
            f"A template name is 1 to {MAX_NAME} characters", f"模板名称须为 1 到 {MAX_NAME} 个字符"
        )
    return name


def _check_link(link_url: str | None) -> str | None:
    if link_url is None or not link_url.strip():
        return None
    link_url = link_url.strip()
    if not link_url.startswith(("https://", "http://")) or len(link_url) > 500 or " " in link_url:
        raise ValidationFailed(
            "The link destination is an http(s):// address of at most 500 characters",
            "链接目标须为 http(s):// 开头、不超过 500 个字符的网址",
        )
    return link_url


def _template_row(conn: Connection, tenant_id: int, template_id: int) -> Any:
    row = conn.execute(
        TenantScope(tenant_id).select(templates).where(templates.c.id == template_id)
    ).first()
    if row is None:
        raise TemplateNotFound()
    return row


def _versions(conn: Connection, tenant_id: int, template_id: int) -> list[dict[str, Any]]:
    stmt = (
        TenantScope(tenant_id)
        .select(template_versions)
        .where(template_versions.c.template_id == template_id)
        .order_by(template_versions.c.version.desc())
    )
    return [{k: v for k, v in r.items() if k != "tenant_id"} for r in conn.execute(stmt).mappings()]


def get(conn: Connection, tenant_id: int, template_id: int) -> dict[str, Any]:
    """A template with all its versions, newest first."""
    row = _template_row(conn, tenant_id, template_id)
    versions = _versions(conn, tenant_id, template_id)
    latest = versions[0]
    live = next((v for v in versions if v["id"] == row.live_version_id), None)
    return {
        "id": row.id,
        "name": row.name,
        "category": row.category,
        "status": latest["status"],
        "reason": latest["reason"],
        "body": latest["body"],
        "link_url": latest["link_url"],
        "version": latest["version"],
        "live_version": live["version"] if live else None,
        "live_version_id": row.live_version_id,
        "live_body": live["body"] if live else None,
        "archived": row.archived_at is not None,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "versions": versions,
    }


def listing(
    conn: Connection, tenant_id: int, *, category: str | None = None, archived: bool = False
) -> list[dict[str, Any]]:
    """The tenant's templates, each with its newest version, most recently changed first."""
    t, v = templates, template_versions
    newest = (
        sa.select(v.c.template_id, sa.func.max(v.c.version).label("version"))
        .where(v.c.tenant_id == tenant_id)
        .group_by(v.c.template_id)
        .subquery()
    )
    stmt = (
        TenantScope(tenant_id)
        .select(
            t,
            t.c.id,
            t.c.name,
            t.c.category,
            t.c.live_version_id,
            t.c.archived_at,
            t.c.updated_at,
            v.c.version,
            v.c.status,
            v.c.reason,
            v.c.body,
        )
        .join(newest, newest.c.template_id == t.c.id)
        .join(v, sa.and_(v.c.template_id == t.c.id, v.c.version == newest.c.version))
        .where(v.c.tenant_id == tenant_id)
        .order_by(t.c.updated_at.desc(), t.c.id.desc())
    )
    if category is not None:
        stmt = stmt.where(t.c.category == category_of(category))
    stmt = stmt.where(t.c.archived_at.is_not(None) if archived else t.c.archived_at.is_(None))
    return [dict(r) for r in conn.execute(stmt).mappings()]


def create(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    *,
    name: str,
    category: str,
    body: str,
    link_url: str | None = None,
    actor: str,
) -> dict[str, Any]:
    """A new template with its first version, a draft."""
    name = _check_name(name)
    cat = category_of(category)
    body = _check_body(body)
    link = _check_link(link_url)
    now = clock.now()
    scope = TenantScope(tenant_id)
    try:
        with conn.begin_nested():
            result = conn.execute(
                scope.insert(templates),
                {"name": name, "category": cat, "created_at": now, "updated_at": now},
            )
    except IntegrityError:
        raise Conflict(f"A template named {name!r} exists", f"已有名为“{name}”的模板") from None
    assert result.inserted_primary_key is not None
    template_id = int(result.inserted_primary_key[0])
    _new_version(conn, scope, template_id, 1, body, link, now, actor)
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="template.create",
        target=f"template:{template_id}",
        detail={"category": cat, "name": name},
    )
    return get(conn, tenant_id, template_id)


def _new_version(
    conn: Connection,
    scope: TenantScope,
    template_id: int,
    number: int,
    body: str,
    link: str | None,
    now: Any,
    actor: str,
) -> None:
    conn.execute(
        scope.insert(template_versions),
        {
            "template_id": template_id,
            "version": number,
            "body": body,
            "link_url": link,
            "status": "draft",
            "findings": [],
            "created_at": now,
            "created_by": actor,
        },
    )


def update(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    template_id: int,
    *,
    name: str | None = None,
    body: str | None = None,
    link_url: str | None = None,
    actor: str,
) -> dict[str, Any]:
    """Rename, or change the text: the draft in place, else a new draft version."""
    row = _template_row(conn, tenant_id, template_id)
    if row.archived_at is not None:
        raise Conflict("The template is archived", "该模板已归档")
    scope = TenantScope(tenant_id)
    now = clock.now()
    changes: dict[str, Any] = {"updated_at": now}
    if name is not None:
        changes["name"] = _check_name(name)
    if body is not None or link_url is not None:
        latest = _versions(conn, tenant_id, template_id)[0]
        new_body = _check_body(body) if body is not None else latest["body"]
        new_link = _check_link(link_url) if link_url is not None else latest["link_url"]
        if latest["status"] == "pending":
            raise Conflict(
                "The template is under review: withdraw it before editing",
                "模板正在审核中，请先撤回再修改",
            )
        if latest["status"] == "draft":
            conn.execute(
                scope.update(template_versions)
                .where(template_versions.c.id == latest["id"])
                .values(body=new_body, link_url=new_link, created_at=now, created_by=actor)
            )
        elif new_body != latest["body"] or new_link != latest["link_url"]:
            _new_version(
                conn, scope, template_id, latest["version"] + 1, new_body, new_link, now, actor
            )
    try:
        with conn.begin_nested():
            conn.execute(
                scope.update(templates).where(templates.c.id == template_id).values(changes)
            )
    except IntegrityError:
        raise Conflict(
            f"A template named {changes.get('name')!r} exists",
            f"已有名为“{changes.get('name')}”的模板",
        ) from None
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="template.update",
        target=f"template:{template_id}",
        detail={
            "fields": [
                k
                for k, v in (("name", name), ("body", body), ("link_url", link_url))
                if v is not None
            ]
        },
    )
    return get(conn, tenant_id, template_id)


def submit(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    template_id: int,
    ctx: LintContext,
    *,
    actor: str,
) -> dict[str, Any]:
    """Send the draft for review; refused while the lint finds errors."""
    row = _template_row(conn, tenant_id, template_id)
    if row.archived_at is not None:
        raise Conflict("The template is archived", "该模板已归档")
    latest = _versions(conn, tenant_id, template_id)[0]
    if latest["status"] != "draft":
        raise Conflict(
            f"Only a draft can be submitted; the newest version is {latest['status']}",
            "只有草稿可以提交审核",
        )
    result = lint(latest["body"], ctx)
    findings = [f.as_dict() for f in result.findings]
    if not result.ok:
        raise TemplateHasErrors(
            details={"findings": [f for f in findings if f["severity"] == "error"]}
        )
    now = clock.now()
    scope = TenantScope(tenant_id)
    conn.execute(
        scope.update(template_versions)
        .where(template_versions.c.id == latest["id"], template_versions.c.status == "draft")
        .values(status="pending", submitted_at=now, submitted_by=actor, findings=findings)
    )
    conn.execute(
        scope.update(templates).where(templates.c.id == template_id).values(updated_at=now)
    )
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="template.submit",
        target=f"template:{template_id}",
        detail={"version": latest["version"]},
    )
    return get(conn, tenant_id, template_id)


def withdraw(
    conn: Connection, clock: Clock, tenant_id: int, template_id: int, *, actor: str
) -> dict[str, Any]:
    """Take a pending version back to draft."""
    _template_row(conn, tenant_id, template_id)
    latest = _versions(conn, tenant_id, template_id)[0]
    if latest["status"] != "pending":
        raise Conflict("The template is not under review", "模板不在审核中")
    scope = TenantScope(tenant_id)
    result = conn.execute(
        scope.update(template_versions)
        .where(template_versions.c.id == latest["id"], template_versions.c.status == "pending")
        .values(status="draft", submitted_at=None, submitted_by=None)
    )
    if result.rowcount != 1:
        raise Conflict("The template was decided meanwhile", "模板刚刚已被审核")
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="template.withdraw",
        target=f"template:{template_id}",
        detail={"version": latest["version"]},
    )
    return get(conn, tenant_id, template_id)


def archive(
    conn: Connection, clock: Clock, tenant_id: int, template_id: int, *, actor: str
) -> dict[str, Any]:
    """Retire a template: it no longer sends; its versions stay for the record."""
    _template_row(conn, tenant_id, template_id)
    now = clock.now()
    conn.execute(
        TenantScope(tenant_id)
        .update(templates)
        .where(templates.c.id == template_id)
        .values(archived_at=now, updated_at=now)
    )
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="template.archive",
        target=f"template:{template_id}",
    )
    return get(conn, tenant_id, template_id)


__all__ = [
    "STATUSES",
    "TemplateHasErrors",
    "TemplateNotFound",
    "archive",
    "create",
    "get",
    "listing",
    "submit",
    "update",
    "withdraw",
]
