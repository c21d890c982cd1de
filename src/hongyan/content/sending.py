"""Rendering a stored template for a send: its approved version, the request's values, checked.

``POST /api/v1/messages`` with ``template_id`` and ``params`` comes here: the template's live
(newest approved) version is compiled once per version and tenant word list
(:class:`~hongyan.content.compiled.CompiledTemplate`, kept in a small cache) and rendered with
the parameters. What the values bring in is checked as the campaign path checks it: a forbidden
term, or in marketing any listed word, refuses the message (``content_rejected``), because the
template was approved without it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.content.compiled import CompiledTemplate, Rendered
from hongyan.content.gate import TemplateNotApproved
from hongyan.content.lint import LintContext
from hongyan.content.placeholders import UnknownParameter, value_text
from hongyan.content.service import category_of, tenant_entries
from hongyan.content.templates import TemplateNotFound
from hongyan.content.wordlists import Entry, matcher_for
from hongyan.db.scope import TenantScope
from hongyan.db.tables import template_versions, templates
from hongyan.errors import ValidationFailed


class ContentRejected(ValidationFailed):
    code = "content_rejected"
    message_zh = "参数中含有不允许发送的内容"
    message_en = "The parameters bring in content that may not be sent"


@dataclass(frozen=True)
class Sendable:
    template_id: int
    version_id: int
    version: int
    name: str
    category: str
    body: str
    link_url: str | None


def sendable(conn: Connection, tenant_id: int, template_id: int) -> Sendable:
    """The template's live version, or TemplateNotApproved."""
    t, v = templates, template_versions
    # The version joins on the live pointer (outer: a template may have none), limited to the
    # tenant in the join itself so a missing version does not hide the template.
    row = conn.execute(
        TenantScope(tenant_id)
        .select(t, t.c.id, t.c.name, t.c.category, t.c.archived_at)
        .add_columns(v.c.id.label("vid"), v.c.version, v.c.body, v.c.link_url)
        .select_from(
            t.outerjoin(v, sa.and_(v.c.id == t.c.live_version_id, v.c.tenant_id == tenant_id))
        )
        .where(t.c.id == template_id)
    ).first()
    if row is None:
        raise TemplateNotFound()
    if row.vid is None or row.archived_at is not None:
        raise TemplateNotApproved(details={"template_id": template_id})
    return Sendable(row.id, row.vid, row.version, row.name, row.category, row.body, row.link_url)


@functools.lru_cache(maxsize=512)
def _compiled(
    version_id: int, body: str, category: str, entries: tuple[Entry, ...], max_parts: int
) -> CompiledTemplate:
    ctx = LintContext(
        category=category_of(category), max_parts=max_parts, matcher=matcher_for(entries)
    )
    return CompiledTemplate(body, ctx)


def blocking(category: str, problems: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The problems that stop a message: anything in marketing, else forbidden and invalid."""
    if category == "marketing":
        return [p for p in problems if p[0] != "length.max"]
    return [p for p in problems if p[0] in ("word.forbidden", "value.invalid")]


def render(
    conn: Connection,
    tenant_id: int,
    template: Sendable,
    params: Mapping[str, Any],
    *,
    max_parts: int,
) -> Rendered:
    """The message text for ``params``; typed errors for unknown, missing or refused values."""
    compiled = _compiled(
        template.version_id,
        template.body,
        template.category,
        tenant_entries(conn, tenant_id),
        max_parts,
    )
    keys = compiled.keys
    unknown = sorted(set(params) - set(keys))
    if unknown:
        raise UnknownParameter(
            f"Parameters not used by the template: {', '.join(unknown)}",
            f"模板中没有这些参数：{'、'.join(unknown)}",
            details={"unknown": unknown},
        )
    values = {k: value_text(k, v) for k, v in params.items()}
    result = compiled.check(values, strict=True)
    stop = blocking(template.category, result.problems)
    if stop:
        raise ContentRejected(details={"problems": [{"rule": r, "detail": d} for r, d in stop]})
    return result
