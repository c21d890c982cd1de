"""Saved segments: create, change, list, preview (how many, and a masked sample), export, and
snapshot (freeze the matching contacts into an audience for a campaign).

A snapshot is one ``INSERT … SELECT``: every contact the rule matches at the snapshot's clock
is written into ``audience_members`` with its verdict, decided in the same statement:
``suppressed`` (a live entry on the suppression list that stops the purpose: for marketing any
reason, for notifications only ``invalid`` / ``manual``, matched by the blind index the outbox
uses), else ``no_consent`` (the latest consent record for the purpose is not a grant), else
``included``. The counts per verdict are then read back from the rows themselves, so what the
snapshot reports is exactly what it stored. A campaign sends to the ``included`` members.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hongyan.audience import compiler, rules, scoring
from hongyan.audience.service import context, load_schema
from hongyan.clock import Clock
from hongyan.contacts.sources import escape_cell
from hongyan.db.scope import TENANT_OPTION, TenantScope
from hongyan.db.tables import (
    audience_members,
    audiences,
    contacts,
    segments,
    suppressions,
)
from hongyan.errors import Conflict, NotFound, ValidationFailed
from hongyan.security import audit

SAMPLE = 20
STATUSES = ("included", "suppressed", "no_consent")


def _name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise ValidationFailed(
            "A segment needs a name (1–100 characters)", "人群名称须为 1–100 个字符"
        )
    return name


def _row(conn: Connection, tenant_id: int, ref: int | str) -> dict[str, Any]:
    col = segments.c.id if isinstance(ref, int) else segments.c.name
    row = conn.execute(TenantScope(tenant_id).select(segments).where(col == ref)).mappings().first()
    if row is None:
        raise NotFound(f"No segment {ref!r}", f"没有人群 {ref!r}")
    return {k: v for k, v in row.items() if k != "tenant_id"}


def get(conn: Connection, tenant_id: int, ref: int | str) -> dict[str, Any]:
    return _row(conn, tenant_id, ref)


def list_segments(conn: Connection, tenant_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(segments)
        .order_by(segments.c.updated_at.desc(), segments.c.id.desc())
    ).mappings()
    return [{k: v for k, v in r.items() if k != "tenant_id"} for r in rows]


def check(conn: Connection, tenant_id: int, rule: Any, *, segment_id: int | None = None) -> None:
    """Parse ``rule`` against the tenant's schema (a segment may not refer to itself)."""
    rules.parse(
        rule, load_schema(conn, tenant_id), segment_stack=(segment_id,) if segment_id else ()
    )


def create(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    *,
    name: str,
    rule: Any,
    description: str = "",
    actor: str,
) -> dict[str, Any]:
    name = _name(name)
    check(conn, tenant_id, rule)
    scope = TenantScope(tenant_id)
    if conn.execute(scope.select(segments, segments.c.id).where(segments.c.name == name)).first():
        raise Conflict(f"A segment named {name!r} exists", f"已有名为“{name}”的人群")
    now = clock.now()
    new_id = conn.execute(
        scope.insert(segments)
        .values(
            name=name,
            description=description.strip()[:500],
            rule=rule,
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
        .returning(segments.c.id)
    ).scalar_one()
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="segment.create",
        target=f"segment:{new_id}",
    )  # fmt: skip
    return _row(conn, tenant_id, int(new_id))


def update(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    segment_id: int,
    *,
    name: str | None = None,
    rule: Any = None,
    description: str | None = None,
    actor: str,
) -> dict[str, Any]:
    current = _row(conn, tenant_id, segment_id)
    values: dict[str, Any] = {"updated_at": clock.now()}
    if name is not None and _name(name) != current["name"]:
        values["name"] = _name(name)
        if conn.execute(
            TenantScope(tenant_id)
            .select(segments, segments.c.id)
            .where(segments.c.name == values["name"])
        ).first():
            raise Conflict(f"A segment named {name!r} exists", f"已有名为“{name}”的人群")
    if rule is not None:
        check(conn, tenant_id, rule, segment_id=segment_id)
        values["rule"] = rule
    if description is not None:
        values["description"] = description.strip()[:500]
    conn.execute(
        TenantScope(tenant_id).update(segments).where(segments.c.id == segment_id).values(**values)
    )
    # A changed rule may now close a circle through another segment that refers to this one.
    if rule is not None:
        schema = load_schema(conn, tenant_id)
        for other_id, (_n, other_rule) in schema.segments.items():
            rules.parse(other_rule, schema, segment_stack=(other_id,))
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="segment.update",
        target=f"segment:{segment_id}",
    )  # fmt: skip
    return _row(conn, tenant_id, segment_id)


def delete(conn: Connection, clock: Clock, tenant_id: int, segment_id: int, *, actor: str) -> None:
    seg = _row(conn, tenant_id, segment_id)
    schema = load_schema(conn, tenant_id)
    users = [
        n
        for i, (n, r) in schema.segments.items()
        if i != segment_id and _refers_to(r, segment_id, seg["name"])
    ]
    if users:
        raise Conflict(
            f"Segments {users} use this one; change them first",
            f"人群 {'、'.join(users)} 引用了该人群，请先修改它们",
        )
    conn.execute(TenantScope(tenant_id).delete(segments).where(segments.c.id == segment_id))
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="segment.delete",
        target=f"segment:{segment_id}",
    )  # fmt: skip


def _refers_to(raw: Any, segment_id: int, name: str) -> bool:
    if isinstance(raw, dict):
        if raw.get("field") == "segment" and raw.get("value") in (segment_id, name):
            return True
        return any(_refers_to(v, segment_id, name) for v in raw.values())
    if isinstance(raw, list):
        return any(_refers_to(v, segment_id, name) for v in raw)
    return False


# -- evaluation ----------------------------------------------------------------------------------


@dataclass
class Compiled:
    node: rules.Node
    ctx: compiler.Context


def compile_rule(conn: Connection, clock: Clock, tenant_id: int, rule: Any) -> Compiled:
    schema = load_schema(conn, tenant_id)
    node = rules.parse(rule, schema)
    return Compiled(node, context(conn, clock, tenant_id, schema))


def rule_of(conn: Connection, tenant_id: int, ref: int | str) -> Any:
    return _row(conn, tenant_id, ref)["rule"]


def count(conn: Connection, clock: Clock, tenant_id: int, rule: Any) -> int:
    c = compile_rule(conn, clock, tenant_id, rule)
    with whole_tenant(conn):
        return int(conn.execute(compiler.count_query(c.node, c.ctx)).scalar_one())


@contextlib.contextmanager
def whole_tenant(conn: Connection) -> Iterator[None]:
    """Plan a statement that reads the whole tenant (a count, a snapshot) with hash joins.

    PostgreSQL cannot estimate how many rows a lifecycle ``CASE`` or a coalesced aggregate lets
    through, guesses a handful, and probes the other tables' keys row by row: measured on a
    million contacts, a four-condition count took 3.7 s that way and 1.1 s with hash joins.
    ``SET LOCAL`` for the one statement, then ``RESET`` (a failed statement's rollback undoes it
    too). JIT is off for it too: compiling the rule's expressions took longer (0.2 s) than
    it saved on a million-contact count. Nothing to do on SQLite."""
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.exec_driver_sql("SET LOCAL enable_nestloop = off")
    conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
    conn.exec_driver_sql("SET LOCAL jit = off")
    yield
    conn.exec_driver_sql("RESET enable_nestloop")
    conn.exec_driver_sql("RESET work_mem")
    conn.exec_driver_sql("RESET jit")


def _sample_columns(ctx: compiler.Context) -> list[Any]:
    ctx.joins.add("activity")
    a = compiler.activity
    return [
        contacts.c.id,
        contacts.c.phone_masked,
        contacts.c.name_masked,
        contacts.c.gender,
        contacts.c.city,
        contacts.c.number_province,
        contacts.c.number_city,
        contacts.c.carrier,
        sa.func.coalesce(a.c.orders_count, 0).label("orders_count"),
        sa.func.coalesce(a.c.revenue_fen, 0).label("revenue_fen"),
        a.c.last_order_at,
        scoring.stage_sql(a, ctx.now, ctx.thresholds).label("lifecycle"),
        scoring.score_sql(a, "r", ctx.cuts).label("r_score"),
        scoring.score_sql(a, "f", ctx.cuts).label("f_score"),
        scoring.score_sql(a, "m", ctx.cuts).label("m_score"),
        scoring.group_sql(a, ctx.cuts, ctx.splits).label("rfm_group"),
    ]


def preview(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    rule: Any,
    *,
    sample: int = SAMPLE,
    reach: str | None = None,
) -> dict[str, Any]:
    """How many contacts ``rule`` matches now, and the newest ``sample`` of them, numbers and
    names masked. ``reach`` (a purpose) adds how many of them a snapshot would exclude."""
    c = compile_rule(conn, clock, tenant_id, rule)
    with whole_tenant(conn):
        total = int(conn.execute(compiler.count_query(c.node, c.ctx)).scalar_one())
    rows = []
    if sample > 0 and total:
        stmt = (
            compiler.query(c.node, c.ctx, *_sample_columns(c.ctx))
            .order_by(contacts.c.id.desc())
            .limit(min(sample, 100))
        )
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    out: dict[str, Any] = {"count": total, "sample": rows, "at": c.ctx.now}
    if reach:
        inner = compiler.query(c.node, c.ctx, _verdict(reach, c.ctx).label("status")).subquery()
        with whole_tenant(conn):
            grouped = conn.execute(
                sa.select(inner.c.status, sa.func.count())
                .group_by(inner.c.status)
                .execution_options(**{TENANT_OPTION: tenant_id})
            ).all()
        found = {str(s): int(n) for s, n in grouped}
        out["reach"] = {s: found.get(s, 0) for s in STATUSES}
    return out


def export_rows(
    conn: Connection, clock: Clock, tenant_id: int, rule: Any, *, batch: int = 5000
) -> Iterator[dict[str, Any]]:
    """Every matching contact (masked), in pages by id so a large segment streams."""
    c = compile_rule(conn, clock, tenant_id, rule)
    columns = _sample_columns(c.ctx)
    last = 0
    while True:
        stmt = (
            compiler.query(c.node, c.ctx, *columns)
            .where(contacts.c.id > last)
            .order_by(contacts.c.id)
            .limit(batch)
        )
        page = [dict(r) for r in conn.execute(stmt).mappings()]
        yield from page
        if len(page) < batch:
            return
        last = int(page[-1]["id"])


EXPORT_COLUMNS = (
    "id", "phone_masked", "name_masked", "gender", "city", "number_province", "number_city",
    "carrier", "orders_count", "revenue_yuan", "last_order_at", "lifecycle", "r_score",
    "f_score", "m_score", "rfm_group",
)  # fmt: skip


def start_export(
    conn: Connection, clock: Clock, tenant_id: int, ref: int | str, *, actor: str
) -> dict[str, Any]:
    """The segment to export, the export written to the audit log (in the caller's
    transaction, before anything is streamed)."""
    seg = _row(conn, tenant_id, ref)
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="segment.export",
        target=f"segment:{seg['id']}",
    )  # fmt: skip
    return seg


def csv_chunks(engine: Engine, clock: Clock, tenant_id: int, rule: Any) -> Iterator[bytes]:
    """The members as a CSV (UTF-8 with BOM for Excel, formula-leading cells escaped, numbers
    masked), streamed from a read-only connection."""
    yield "\ufeff".encode()
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXPORT_COLUMNS)
    with engine.connect() as conn:
        for n, row in enumerate(export_rows(conn, clock, tenant_id, rule), 1):
            row["revenue_yuan"] = f"{row['revenue_fen'] / 100:.2f}"
            writer.writerow(
                [escape_cell("" if row.get(k) is None else str(row[k])) for k in EXPORT_COLUMNS]
            )
            if n % 1000 == 0:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
    yield buf.getvalue().encode()


def export_csv(
    engine: Engine, clock: Clock, tenant_id: int, ref: int | str, *, actor: str
) -> Iterator[bytes]:
    """:func:`start_export` in its own transaction, then :func:`csv_chunks`."""
    with engine.begin() as conn:
        seg = start_export(conn, clock, tenant_id, ref, actor=actor)
    yield from csv_chunks(engine, clock, tenant_id, seg["rule"])


# -- snapshots -----------------------------------------------------------------------------------


def suppressed_sql(purpose: str, ctx: compiler.Context) -> sa.ColumnElement[bool]:
    """A live suppression of the contact's number that stops ``purpose`` (the dispatcher's
    rule: marketing is stopped by every reason, other messages only by scope ``all``)."""
    s = suppressions
    tests = [
        ctx.scope.owns(s),
        s.c.phone_index == contacts.c.phone_index,
        sa.or_(s.c.expires_at.is_(None), s.c.expires_at > sa.literal(ctx.now, s.c.expires_at.type)),
    ]
    if purpose != "marketing":
        tests.append(s.c.scope == "all")
    return sa.exists().where(*tests)


def _verdict(purpose: str, ctx: compiler.Context) -> sa.ColumnElement[str]:
    return sa.case(
        (suppressed_sql(purpose, ctx), "suppressed"),
        (sa.not_(compiler.consent_sql(purpose, ctx.scope)), "no_consent"),
        else_="included",
    )


def snapshot(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    *,
    segment: int | str | None = None,
    rule: Any = None,
    purpose: str = "marketing",
    name: str | None = None,
    campaign_ref: str | None = None,
    actor: str,
) -> dict[str, Any]:
    """Freeze a segment (or a rule) at the clock's moment into a new audience; returns it with
    its counts: ``matched`` = ``included`` + ``suppressed`` + ``no_consent``."""
    if purpose not in rules.PURPOSES:
        raise ValidationFailed(
            "purpose is marketing or notification", "用途须为 marketing 或 notification"
        )
    seg = _row(conn, tenant_id, segment) if segment is not None else None
    if seg is None and rule is None:
        raise ValidationFailed("Name a segment or give a rule", "请指定人群或规则")
    c = compile_rule(conn, clock, tenant_id, seg["rule"] if seg else rule)
    scope = TenantScope(tenant_id)
    audience_id = int(
        conn.execute(
            scope.insert(audiences)
            .values(
                segment_id=seg["id"] if seg else None,
                name=(name or (seg["name"] if seg else "ad hoc"))[:100],
                purpose=purpose,
                campaign_ref=(campaign_ref or None) and campaign_ref[:64],
                rule=rules.inline(c.node),
                counts={},
                created_by=actor,
                taken_at=c.ctx.now,
            )
            .returning(audiences.c.id)
        ).scalar_one()
    )
    select = compiler.query(
        c.node,
        c.ctx,
        sa.literal(audience_id, sa.Integer),
        contacts.c.id,
        sa.literal(tenant_id, sa.Integer),
        contacts.c.phone_index,
        _verdict(purpose, c.ctx),
    )
    m = audience_members.c
    with whole_tenant(conn):
        conn.execute(
            sa.insert(audience_members)
            .from_select(
                [m.audience_id, m.contact_id, m.tenant_id, m.phone_index, m.status], select
            )
            .execution_options(**{TENANT_OPTION: tenant_id})
        )
    counts = _counts(conn, tenant_id, audience_id)
    conn.execute(scope.update(audiences).where(audiences.c.id == audience_id).values(counts=counts))
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="audience.snapshot",
        target=f"audience:{audience_id}", detail=counts,
    )  # fmt: skip
    return get_audience(conn, tenant_id, audience_id)


def _counts(conn: Connection, tenant_id: int, audience_id: int) -> dict[str, int]:
    m = audience_members.c
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(audience_members, m.status, sa.func.count())
        .where(m.audience_id == audience_id)
        .group_by(m.status)
    ).all()
    found = {str(s): int(n) for s, n in rows}
    counts = {s: found.get(s, 0) for s in STATUSES}
    return {"matched": sum(counts.values()), **counts}


def get_audience(conn: Connection, tenant_id: int, audience_id: int) -> dict[str, Any]:
    row = (
        conn.execute(TenantScope(tenant_id).select(audiences).where(audiences.c.id == audience_id))
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("No such audience", "找不到该受众")
    return {k: v for k, v in row.items() if k != "tenant_id"}


def list_audiences(conn: Connection, tenant_id: int, limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(audiences)
        .order_by(audiences.c.taken_at.desc(), audiences.c.id.desc())
        .limit(limit)
    ).mappings()
    return [{k: v for k, v in r.items() if k not in ("tenant_id", "rule")} for r in rows]


def members(
    conn: Connection, tenant_id: int, audience_id: int, *, status: str = "included"
) -> list[int]:
    """The contact ids of an audience with a verdict (for a campaign to plan its messages)."""
    m = audience_members.c
    return [
        int(i)
        for i in conn.execute(
            TenantScope(tenant_id)
            .select(audience_members, m.contact_id)
            .where(m.audience_id == audience_id, m.status == status)
            .order_by(m.contact_id)
        ).scalars()
    ]
