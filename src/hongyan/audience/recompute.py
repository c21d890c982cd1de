"""Recomputing a tenant's scores (RFM and lifecycle) and contact locations, on demand and on a
schedule.

**Scores** are one ``INSERT … SELECT … ON CONFLICT DO UPDATE`` (readers see the old scores until
it commits): the buyers' ranks by ``RANK()`` window functions over
``contact_activity`` (recency = last order, frequency = order count, monetary = revenue), the
quintile formula of :mod:`hongyan.audience.scoring`, the means by ``AVG() OVER ()``, the group
and the lifecycle stage as ``CASE`` expressions; SQLite (3.25+) and PostgreSQL run the same
statement. No event is read: the aggregates are kept up to date as events arrive.

**Locations** are derived in Python per distinct (location attribute, province, city, number's
province, number's city), which is few values for many contacts, and written in bulk.

**Schedule**: :func:`run_schedule` runs beside the dispatcher (``hongyan dispatcher``,
``hongyan serve``): once a minute it recomputes each tenant whose scores are older than its
``recompute_hours`` (default 24). A tenant is claimed by a compare-and-set on its
``computed_at``, so several dispatchers never recompute the same tenant twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hongyan.audience import geo, scoring
from hongyan.audience.compiler import attribute_sql
from hongyan.audience.service import Settings, get_settings, record_run
from hongyan.clock import Clock
from hongyan.db.bulk import insert_rows
from hongyan.db.scope import TENANT_OPTION, TenantScope, unscoped
from hongyan.db.tables import (
    audience_settings,
    contact_activity,
    contact_locations,
    contact_scores,
    contacts,
    tenants,
)

log = logging.getLogger("hongyan.audience")


def scores_select(tenant_id: int, now: datetime, settings: Settings) -> sa.Select[Any]:
    """Every contact's (contact_id, tenant_id, r, f, m, group, stage, computed_at)."""
    a = contact_activity
    ranked = (
        sa.select(
            a.c.contact_id,
            sa.func.rank().over(order_by=a.c.last_order_at).label("rr"),
            sa.func.rank().over(order_by=a.c.orders_count).label("fr"),
            sa.func.rank().over(order_by=a.c.revenue_fen).label("mr"),
            sa.func.count().over().label("n"),
        )
        .where(a.c.tenant_id == tenant_id, a.c.orders_count > 0)
        .subquery("ranked")
    )
    scored = sa.select(
        ranked.c.contact_id,
        scoring.quintile_sql(ranked.c.rr, ranked.c.n).label("r"),
        scoring.quintile_sql(ranked.c.fr, ranked.c.n).label("f"),
        scoring.quintile_sql(ranked.c.mr, ranked.c.n).label("m"),
    ).subquery("scored")
    meaned = sa.select(
        scored.c.contact_id,
        scored.c.r,
        scored.c.f,
        scored.c.m,
        sa.func.avg(scored.c.r).over().label("mean_r"),
        sa.func.avg(scored.c.f).over().label("mean_f"),
        sa.func.avg(scored.c.m).over().label("mean_m"),
    ).subquery("meaned")
    group = scoring.group_sql(
        meaned.c.r,
        meaned.c.f,
        meaned.c.m,
        settings.splits,
        (meaned.c.mean_r, meaned.c.mean_f, meaned.c.mean_m),
    )
    source = contacts.outerjoin(
        a, sa.and_(a.c.contact_id == contacts.c.id, a.c.tenant_id == tenant_id)
    ).outerjoin(meaned, meaned.c.contact_id == contacts.c.id)
    return (
        sa.select(
            contacts.c.id,
            sa.literal(tenant_id, sa.Integer),
            meaned.c.r,
            meaned.c.f,
            meaned.c.m,
            group,
            scoring.stage_sql(a, now, settings.thresholds),
            sa.literal(now, contact_scores.c.computed_at.type),
        )
        .select_from(source)
        .where(contacts.c.tenant_id == tenant_id)
    )


def recompute_scores(conn: Connection, clock: Clock, tenant_id: int) -> dict[str, Any]:
    """RFM scores and groups and lifecycle stages of every contact, as of the clock.

    An upsert, not a delete and an insert: a row's foreign keys are checked only when it is
    inserted (a new contact), never when it is updated, and an erased contact's row has already
    gone with it (``ON DELETE CASCADE``). A row whose values did not change is not written, so a
    daily recompute writes only the contacts whose scores or stage moved; ``computed_at`` is
    when a row's values last changed."""
    started = time.perf_counter()
    now = clock.now()
    settings = get_settings(conn, tenant_id)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL work_mem = '128MB'")  # the three rank sorts in memory
    s = contact_scores.c
    ins = TenantScope(tenant_id).dialect_insert(conn, contact_scores)
    ins = ins.from_select(
        [s.contact_id, s.tenant_id, s.r_score, s.f_score, s.m_score, s.rfm_group, s.lifecycle,
         s.computed_at],
        scores_select(tenant_id, now, settings),
    )  # fmt: skip
    values = ("r_score", "f_score", "m_score", "rfm_group", "lifecycle")
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=["contact_id"],
            set_={k: ins.excluded[k] for k in (*values, "computed_at")},
            # a row whose scores and stage did not move is not written at all
            where=sa.or_(*(contact_scores.c[k].is_distinct_from(ins.excluded[k]) for k in values)),
        )
    )
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE contact_scores")  # rules join it: fresh statistics
    figures = distribution(conn, tenant_id)
    figures["seconds"] = round(time.perf_counter() - started, 3)
    return figures


def distribution(conn: Connection, tenant_id: int) -> dict[str, Any]:
    """Buyers, mean scores, contacts per group and per stage, from the stored scores."""
    scope = TenantScope(tenant_id)
    s = contact_scores.c
    means = conn.execute(
        scope.select(
            contact_scores,
            sa.func.count(s.r_score),
            sa.func.avg(s.r_score),
            sa.func.avg(s.f_score),
            sa.func.avg(s.m_score),
            sa.func.count(),
        )
    ).one()
    groups = dict.fromkeys(scoring.GROUP_OF.values(), 0)
    for name, n in conn.execute(
        scope.select(contact_scores, s.rfm_group, sa.func.count())
        .where(s.rfm_group.is_not(None))
        .group_by(s.rfm_group)
    ):
        groups[str(name)] = int(n)
    stages = dict.fromkeys(scoring.STAGE_NAMES, 0)
    for name, n in conn.execute(
        scope.select(contact_scores, s.lifecycle, sa.func.count()).group_by(s.lifecycle)
    ):
        stages[str(name)] = int(n)
    return {
        "contacts": int(means[4]),
        "buyers": int(means[0]),
        "means": {
            k: round(float(v), 4) if v is not None else None
            for k, v in zip("rfm", means[1:4], strict=True)
        },
        "groups": groups,
        "lifecycle": stages,
    }


def grid(conn: Connection, tenant_id: int) -> list[dict[str, Any]]:
    """The R × F grid: buyers and revenue (fen) per (r, f) pair, with M's mean."""
    scope = TenantScope(tenant_id)
    s = contact_scores.c
    a = contact_activity
    rows = conn.execute(
        sa.select(
            s.r_score,
            s.f_score,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(a.c.revenue_fen), 0),
            sa.func.avg(s.m_score),
        )
        .select_from(
            contact_scores.join(
                a, sa.and_(a.c.contact_id == s.contact_id, a.c.tenant_id == tenant_id)
            )
        )
        .where(scope.owns(contact_scores), s.r_score.is_not(None))
        .group_by(s.r_score, s.f_score)
        .execution_options(**{TENANT_OPTION: tenant_id})
    ).all()
    return [
        {"r": int(r), "f": int(f), "buyers": int(n), "revenue_fen": int(rev), "mean_m": float(mm)}
        for r, f, n, rev, mm in rows
    ]


def group_revenue(conn: Connection, tenant_id: int) -> dict[str, dict[str, int]]:
    """Buyers and revenue (fen) per RFM group."""
    s = contact_scores.c
    a = contact_activity
    out = {g: {"buyers": 0, "revenue_fen": 0} for g in scoring.GROUP_OF.values()}
    rows = conn.execute(
        sa.select(s.rfm_group, sa.func.count(), sa.func.coalesce(sa.func.sum(a.c.revenue_fen), 0))
        .select_from(
            contact_scores.join(
                a, sa.and_(a.c.contact_id == s.contact_id, a.c.tenant_id == tenant_id)
            )
        )
        .where(contact_scores.c.tenant_id == tenant_id, s.rfm_group.is_not(None))
        .group_by(s.rfm_group)
        .execution_options(**{TENANT_OPTION: tenant_id})
    ).all()
    for g, n, rev in rows:
        out[str(g)] = {"buyers": int(n), "revenue_fen": int(rev)}
    return out


# -- locations -------------------------------------------------------------------------------------


def recompute_locations(
    conn: Connection, clock: Clock, tenant_id: int, *, batch: int = 20_000
) -> dict[str, Any]:
    """Every contact's location (see :func:`hongyan.audience.geo.locate`), written afresh."""
    started = time.perf_counter()
    now = clock.now()
    settings = get_settings(conn, tenant_id)
    scope = TenantScope(tenant_id)
    table = geo.places()
    attr_col = (
        attribute_sql(settings.location_attribute, "text", conn.dialect.name)
        if settings.location_attribute
        else sa.null()
    )
    conn.execute(scope.delete(contact_locations))
    cache: dict[tuple[Any, ...], geo.Location | None] = {}
    by_source: dict[str, int] = {}
    last = 0
    columns = ("contact_id", "lat", "lon", "x", "y", "z", "source", "place")
    while True:
        page = conn.execute(
            scope.select(
                contacts,
                contacts.c.id,
                attr_col.label("attribute"),
                contacts.c.province,
                contacts.c.city,
                contacts.c.number_province,
                contacts.c.number_city,
            )
            .where(contacts.c.id > last)
            .order_by(contacts.c.id)
            .limit(batch)
        ).all()
        if not page:
            break
        out = []
        for r in page:
            key = (r.attribute, r.province, r.city, r.number_province, r.number_city)
            if key not in cache:
                cache[key] = geo.locate(
                    table,
                    attribute=r.attribute,
                    province=r.province,
                    city=r.city,
                    number_province=r.number_province,
                    number_city=r.number_city,
                )
            loc = cache[key]
            if loc is not None:
                x, y, z = geo.unit_vector(loc.lat, loc.lon)
                out.append((r.id, loc.lat, loc.lon, x, y, z, loc.source, loc.place))
                by_source[loc.source] = by_source.get(loc.source, 0) + 1
        insert_rows(conn, scope, contact_locations, columns, out, {"updated_at": now})
        last = int(page[-1].id)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE contact_locations")
    return {
        "located": sum(by_source.values()),
        "by_source": by_source,
        "seconds": round(time.perf_counter() - started, 3),
        "places_version": table.version,
    }


def recompute(engine: Engine, clock: Clock, tenant_id: int) -> dict[str, Any]:
    """Scores, then locations, each in its own transaction; the run is recorded."""
    with engine.begin() as conn:
        scores = recompute_scores(conn, clock, tenant_id)
    with engine.begin() as conn:
        locations = recompute_locations(conn, clock, tenant_id)
        figures = {**scores, "locations": locations}
        record_run(conn, tenant_id, clock.now(), figures)
    return figures


def recompute_in(conn: Connection, clock: Clock, tenant_id: int) -> dict[str, Any]:
    """The same in the caller's transaction (an API request)."""
    figures = recompute_scores(conn, clock, tenant_id)
    figures["locations"] = recompute_locations(conn, clock, tenant_id)
    record_run(conn, tenant_id, clock.now(), figures)
    return figures


# -- schedule ------------------------------------------------------------------------------------


def claim_due(conn: Connection, clock: Clock, tenant_id: int) -> bool:
    """Take a tenant whose scores are due, compare-and-set on ``computed_at``."""
    now = clock.now()
    settings = get_settings(conn, tenant_id)
    if settings.computed_at is not None and settings.computed_at > now - timedelta(
        hours=settings.recompute_hours
    ):
        return False
    scope = TenantScope(tenant_id)
    if settings.computed_at is None:
        row = conn.execute(scope.select(audience_settings, audience_settings.c.tenant_id)).first()
        if row is None:
            scope.insert_ignore(conn, audience_settings, [{"computed": {}, "updated_at": now}])
    was = audience_settings.c.computed_at
    result = conn.execute(
        scope.update(audience_settings)
        .where(was.is_(None) if settings.computed_at is None else was == settings.computed_at)
        .values(computed_at=now)
    )
    return result.rowcount == 1


def due_tenants(engine: Engine, clock: Clock) -> list[int]:
    """The active tenants whose scores are due, each claimed in its own short transaction."""
    with engine.connect() as conn:
        ids = [
            int(t)
            for t in conn.execute(
                unscoped(
                    sa.select(tenants.c.id)
                    .where(tenants.c.status == "active")
                    .order_by(tenants.c.id),
                    "the scheduler looks at every tenant's settings",
                )
            ).scalars()
        ]
    out = []
    for tenant_id in ids:
        with engine.begin() as conn:
            if claim_due(conn, clock, tenant_id):
                out.append(tenant_id)
    return out


async def run_schedule(
    engine: Engine, clock: Clock, stop: asyncio.Event, every: float = 60.0
) -> None:
    """Recompute due tenants until ``stop`` is set (one at a time, in a worker thread)."""
    while not stop.is_set():
        try:
            for tenant_id in await asyncio.to_thread(due_tenants, engine, clock):
                if stop.is_set():
                    break
                figures = await asyncio.to_thread(recompute, engine, clock, tenant_id)
                log.info("audience scores for tenant %s: %s s", tenant_id, figures["seconds"])
        except Exception:
            log.exception("audience recompute failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)


def lifecycle_now(conn: Connection, clock: Clock, tenant_id: int) -> dict[str, int]:
    """Contacts per lifecycle stage evaluated live at the clock (not the stored stages)."""
    a = contact_activity
    settings = get_settings(conn, tenant_id)
    inner = (
        sa.select(scoring.stage_sql(a, clock.now(), settings.thresholds).label("stage"))
        .select_from(
            contacts.outerjoin(
                a, sa.and_(a.c.contact_id == contacts.c.id, a.c.tenant_id == tenant_id)
            )
        )
        .where(contacts.c.tenant_id == tenant_id)
        .subquery()
    )
    out = dict.fromkeys(scoring.STAGE_NAMES, 0)
    for stage_name, n in conn.execute(
        sa.select(inner.c.stage, sa.func.count())
        .group_by(inner.c.stage)
        .execution_options(**{TENANT_OPTION: tenant_id})
    ):
        out[str(stage_name)] = int(n)
    return out


def score_counts(conn: Connection, tenant_id: int) -> dict[str, dict[str, int]]:
    """Buyers per score (1–5) of each of R, F and M."""
    scope = TenantScope(tenant_id)
    out: dict[str, dict[str, int]] = {}
    for dim in ("r", "f", "m"):
        col = contact_scores.c[f"{dim}_score"]
        counts = {str(s): 0 for s in range(1, 6)}
        for score, n in conn.execute(
            scope.select(contact_scores, col, sa.func.count()).where(col.is_not(None)).group_by(col)
        ):
            counts[str(score)] = int(n)
        out[dim] = counts
    return out
