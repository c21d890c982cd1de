"""Recomputing a tenant's scores (RFM and lifecycle) and contact locations, on demand and on a
schedule.

**Scores** are not stored per contact. A recompute keeps per tenant the 12 cut points of the
quintile scores and the sums of the buyers' scores (one ``rfm_cuts`` row, see
:mod:`hongyan.audience.scoring`, "Cut points"), read from ``contact_activity`` (recency = last
order, frequency = order count, monetary = revenue); a score, a group and a lifecycle stage are
``CASE`` expressions on the aggregates wherever they are read. No event is read: the aggregates
are kept up to date as events arrive. The cuts and the sums come from walks of three partial
indexes of the buyers' values (:func:`cut_points`): no buyer's row is read or sorted. The
counts per group and per lifecycle stage are a report, computed when asked for
(:func:`distribution`, one pass, :func:`census`).

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
from hongyan.audience.scoring import Splits
from hongyan.audience.service import get_cuts, get_settings, record_run
from hongyan.clock import Clock
from hongyan.db.bulk import insert_rows
from hongyan.db.scope import TENANT_OPTION, TenantScope, unscoped
from hongyan.db.tables import (
    audience_settings,
    contact_activity,
    contact_locations,
    contacts,
    rfm_cuts,
    tenants,
)

log = logging.getLogger("hongyan.audience")


def _buyers(tenant_id: int) -> list[Any]:
    a = contact_activity
    return [a.c.tenant_id == tenant_id, scoring.buyer_sql(a)]


# Rows read past a cut's position to see where its run of equal values ends (a longer run is
# counted with one more statement).
WINDOW = 32


def _ordered(
    conn: Connection,
    tenant_id: int,
    dim: str,
    seek: list[Any],
    *,
    descending: bool,
    offset: int,
    limit: int,
) -> list[Any]:
    """``limit`` of the buyers' values of ``dim`` in order, after skipping ``offset``: a walk of
    the buyers' index of that column (migration 0017), no table row read on PostgreSQL."""
    col = contact_activity.c[scoring.DIMENSIONS[dim]]
    got = list(
        conn.execute(
            TenantScope(tenant_id)
            .select(contact_activity, col)
            .where(*_buyers(tenant_id), *seek)
            .order_by(col.desc() if descending else col)
            .offset(offset)
            .limit(limit)
        ).scalars()
    )
    if not got:  # fewer buyers than counted: only if rows changed between the statements
        raise RuntimeError("the buyers changed during the recompute; run it again")
    return got


def _count_above(conn: Connection, tenant_id: int, dim: str, cut: Any) -> int:
    col = contact_activity.c[scoring.DIMENSIONS[dim]]
    return int(
        conn.execute(
            TenantScope(tenant_id)
            .select(contact_activity, sa.func.count())
            .where(*_buyers(tenant_id), col > scoring._cut(contact_activity, dim, cut))
        ).scalar_one()
    )


def cut_points(
    conn: Connection, tenant_id: int, *, window: int = WINDOW
) -> tuple[int, dict[str, tuple[Any, ...]], dict[str, tuple[int, ...]]]:
    """The number of buyers ``n`` and, per dimension, the cuts of scores 2–5 (the values at
    positions :func:`~hongyan.audience.scoring.cut_positions` of the buyers' sorted aggregates)
    and how many buyers are above each cut (so score at least 2…5; the score sums follow, see
    :func:`~hongyan.audience.scoring.score_sum`). No buyer's row is read or sorted:

    * frequency: the buyers per order count, ``GROUP BY`` over the index ``(tenant_id,
      orders_count)`` (a few hundred rows: a tenant with ``d`` distinct counts has at least
      ``d²/2`` orders); it gives ``n``, the cuts and the counts exactly;
    * recency and monetary: for each cut, ``window`` values read at its position with
      ``ORDER BY … OFFSET … LIMIT`` over the index of the column, from the nearer end: the
      cuts of 2 and 3 ascending (the second seeking past the first's run of ties, whose length
      the first gave), of 5 and 4 descending (the second seeking below the first), so a
      dimension walks about 0.8 ``n`` index entries; the window shows where the cut's run of
      equal values ends, or, if the whole window is that run, one ``count(*)`` of the values
      above the cut does.

    The buyers' indexes are partial (``last_order_at IS NOT NULL AND orders_count > 0``, the
    buyer test of :func:`~hongyan.audience.scoring.buyer_sql` written out), so they hold the
    buyers only. Every statement must read one snapshot (see :func:`recompute`)."""
    a = contact_activity
    scope = TenantScope(tenant_id)
    counts = [
        (int(v), int(k))
        for v, k in conn.execute(
            scope.select(a, a.c.orders_count, sa.func.count())
            .where(*_buyers(tenant_id))
            .group_by(a.c.orders_count)
            .order_by(a.c.orders_count)
        )
    ]
    n, f_cuts, f_above = scoring.cuts_from_counts(counts)
    if n == 0:
        return 0, {}, {}
    cuts: dict[str, tuple[Any, ...]] = {"f": f_cuts}
    above: dict[str, tuple[int, ...]] = {"f": f_above}
    positions = scoring.cut_positions(n)
    for d in ("r", "m"):
        col = a.c[scoring.DIMENSIONS[d]]
        found: dict[int, tuple[Any, int]] = {}
        # the lower two cuts ascending, the second from where the first's run of ties ends;
        # the upper two descending, the fourth from the first value not above the fifth
        for k in (2, 3):
            q = positions[k - 2]
            seek: list[Any] = []
            start = 0  # values skipped by the seek: those up to the previous cut
            if k == 3:
                prev, prev_above = found[2]
                start = n - prev_above
                if q <= start:  # within the previous cut's run of ties
                    found[3] = found[2]
                    continue
                seek = [col > scoring._cut(a, d, prev)]
            got = _ordered(conn, tenant_id, d, seek, descending=False, offset=q - 1 - start,
                           limit=window)  # fmt: skip
            cut, up = scoring.cut_above_ascending(q, n, got)
            found[k] = (cut, _count_above(conn, tenant_id, d, cut) if up is None else up)
        for k in (5, 4):
            q = positions[k - 2]
            seek, start = [], 0  # start: values skipped by the seek, those above the next cut
            if k == 4:
                nxt, nxt_above = found[5]
                start = nxt_above
                seek = [col <= scoring._cut(a, d, nxt)]
            skip = max(start, n - q + 1 - window)
            got = _ordered(conn, tenant_id, d, seek, descending=True, offset=skip - start,
                           limit=n - q + 1 - skip)  # fmt: skip
            cut, up = scoring.cut_above_descending(q, n, got, top=start == skip)
            found[k] = (cut, _count_above(conn, tenant_id, d, cut) if up is None else up)
        cuts[d] = tuple(found[k][0] for k in range(2, 6))
        above[d] = tuple(found[k][1] for k in range(2, 6))
    return n, cuts, above


STAGE_CODES = {name: i for i, name in enumerate(scoring.STAGE_NAMES)}


def _set_local(conn: Connection, settings: dict[str, str]) -> None:
    """PostgreSQL settings for the rest of the transaction (``set_config(…, true)``)."""
    names = list(settings)
    conn.exec_driver_sql(
        "SELECT " + ", ".join(f"set_config(%(n{i})s, %(v{i})s, true)" for i in range(len(names))),
        {
            **{f"n{i}": n for i, n in enumerate(names)},
            **{f"v{i}": settings[n] for i, n in enumerate(names)},
        },
    )


def census(
    conn: Connection,
    tenant_id: int,
    cuts: scoring.Cuts | None,
    splits: Splits,
    now: datetime,
    thresholds: scoring.Thresholds,
) -> tuple[dict[str, int], dict[str, int]]:
    """One pass over the tenant's aggregates: contacts with aggregates per lifecycle stage (at
    ``now``) and buyers per RFM group (by ``cuts`` and ``splits``). The group is three
    comparisons of aggregates with one cut each (:func:`~hongyan.audience.scoring.high_sql`)
    and the buyer test, the stage a ``CASE`` giving its number; both are one small integer
    (stage × 16 + group, the group 0 for a non-buyer, else 1 + 4R + 2F + M with each letter 1
    when high), so the pass hashes one integer per row into at most 7 × 9 counts."""
    a = contact_activity
    if cuts is None:
        code: Any = sa.literal_column("0")
    else:
        bits = [
            sa.case((scoring.high_sql(a, d, cuts, splits), w), else_=0)
            for d, w in zip("rfm", (4, 2, 1), strict=True)
        ]
        code = sa.case((sa.not_(scoring.buyer_sql(a)), 0), else_=1 + bits[0] + bits[1] + bits[2])
    key = scoring.stage_sql(a, now, thresholds, STAGE_CODES, outer=False) * 16 + code
    inner = sa.select(key.label("k")).where(a.c.tenant_id == tenant_id).subquery()
    stage_of = {i: name for name, i in STAGE_CODES.items()}
    group_of = {1 + 4 * r + 2 * f + m: name for (r, f, m), name in scoring.GROUP_OF.items()}
    stages = dict.fromkeys(scoring.STAGE_NAMES, 0)
    groups = dict.fromkeys(scoring.GROUP_OF.values(), 0)
    jit = ("jit", "jit_optimize_above_cost", "jit_inline_above_cost")
    was = None
    if conn.dialect.name == "postgresql":
        # Compiled expressions and tuple deforming, without LLVM's optimisation or inlining
        # (which took longer than the pass they sped up): 0.68 s instead of 0.76 s for the
        # whole recompute on a million contacts (medians of 8, machine shared). PostgreSQL
        # compiles only when the plan's cost passes jit_above_cost, so small tenants don't.
        # For this statement; the transaction's own settings are put back after it.
        was = conn.exec_driver_sql(
            "SELECT " + ", ".join(f"current_setting('{g}')" for g in jit)
        ).one()
        _set_local(conn, dict(zip(jit, ("on", "-1", "-1"), strict=True)))
    rows = conn.execute(
        sa.select(inner.c.k, sa.func.count())
        .group_by(inner.c.k)
        .execution_options(**{TENANT_OPTION: tenant_id})
    ).all()
    if was is not None:
        _set_local(conn, dict(zip(jit, was, strict=True)))
    for k, n in rows:
        stages[stage_of[int(k) // 16]] += int(n)
        if int(k) % 16:
            groups[group_of[int(k) % 16]] += int(n)
    return stages, groups


def cube(conn: Connection, tenant_id: int, cuts: scoring.Cuts) -> list[tuple[Any, ...]]:
    """One pass over the buyers' aggregates: (r, f, m, buyers, revenue in fen) per score triple
    (at most 125 rows). The reports (the R × F grid, groups with revenue, buyers per score) are
    sums over these."""
    a = contact_activity
    # The three scores as one number (r·100 + f·10 + m), decoded below: one integer to hash
    # per row instead of three (the pass took 0.6 s instead of 0.85 s at a million contacts).
    r, f, m = (scoring.score_sql(a, d, cuts) for d in "rfm")
    inner = (
        sa.select((r * 100 + f * 10 + m).label("cell"), a.c.revenue_fen)
        .where(*_buyers(tenant_id))
        .subquery()
    )
    out = []
    for cell, n, revenue in conn.execute(
        sa.select(
            inner.c.cell, sa.func.count(), sa.func.coalesce(sa.func.sum(inner.c.revenue_fen), 0)
        )
        .group_by(inner.c.cell)
        .execution_options(**{TENANT_OPTION: tenant_id})
    ):
        out.append((int(cell) // 100, int(cell) // 10 % 10, int(cell) % 10, n, revenue))
    return out


def recompute_scores(conn: Connection, clock: Clock, tenant_id: int) -> dict[str, Any]:
    """The tenant's RFM cut points and score sums, as of the clock (one row, replaced): the
    buyers, their mean scores and how long it took.

    Nothing is written per contact: scores, groups and stages are computed from the aggregates
    when they are read (rules, samples, snapshots, reports), and so are the counts per group
    and per lifecycle stage (:func:`distribution`, one pass over the aggregates, asked for by
    the RFM report). The cuts, the buyers above each and so the score sums come from walks of
    the buyers' indexes (:func:`cut_points`): no buyer's row is read."""
    started = time.perf_counter()
    now = clock.now()
    n, found, above = cut_points(conn, tenant_id)
    cuts = None
    if n:
        sums = tuple(scoring.score_sum(n, above[d]) for d in "rfm")
        cuts = scoring.Cuts(n, found["r"], found["f"], found["m"], sums, now)  # type: ignore[arg-type]
    values: dict[str, Any] = {"buyers": n, "computed_at": now}
    for d in "rfm":
        for k in range(2, 6):
            values[f"{d}{k}"] = cuts.of(d)[k - 2] if cuts else None
        values[f"{d}_sum"] = cuts.sums["rfm".index(d)] if cuts else 0
    ins = TenantScope(tenant_id).dialect_insert(conn, rfm_cuts)
    conn.execute(
        ins.values(tenant_id=tenant_id, **values).on_conflict_do_update(
            index_elements=["tenant_id"], set_=values
        )
    )
    return {
        "buyers": n,
        "means": _means(cuts),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _means(cuts: scoring.Cuts | None) -> dict[str, float | None]:
    if cuts is None:
        return dict.fromkeys("rfm")
    return {d: round(v, 4) for d, v in zip("rfm", cuts.means, strict=True)}


def _contacts(conn: Connection, tenant_id: int) -> int:
    return int(conn.execute(TenantScope(tenant_id).select(contacts, sa.func.count())).scalar_one())


def _figures(
    conn: Connection,
    tenant_id: int,
    cuts: scoring.Cuts | None,
    splits: Splits,
    now: datetime,
    thresholds: scoring.Thresholds,
) -> dict[str, Any]:
    """Contacts, buyers, means, buyers per group and contacts per stage (:func:`census`)."""
    stages, groups = census(conn, tenant_id, cuts, splits, now, thresholds)
    contacts_n = _contacts(conn, tenant_id)
    stages["none"] += contacts_n - sum(stages.values())  # no aggregates at all
    return {
        "contacts": contacts_n,
        "buyers": cuts.n if cuts else 0,
        "means": _means(cuts),
        "groups": groups,
        "lifecycle": stages,
    }


def _groups(
    rows: list[tuple[Any, ...]], cuts: scoring.Cuts | None, splits: Splits
) -> dict[str, dict[str, int]]:
    """Buyers and revenue per group from (r, f, m, contacts, revenue) rows."""
    out = {g: {"buyers": 0, "revenue_fen": 0} for g in scoring.GROUP_OF.values()}
    if cuts is None:
        return out
    for r, f, m, k, rev in rows:
        if r is None:
            continue
        g = out[scoring.group_at(int(r), int(f), int(m), cuts, splits)]
        g["buyers"] += int(k)
        g["revenue_fen"] += int(rev)
    return out


def _computed_at(conn: Connection, tenant_id: int) -> datetime | None:
    return conn.execute(
        TenantScope(tenant_id).select(rfm_cuts, rfm_cuts.c.computed_at)
    ).scalar_one_or_none()


def distribution(conn: Connection, tenant_id: int) -> dict[str, Any]:
    """Buyers, mean scores, contacts per group and per stage, as of the last recompute (its
    cuts, its clock; the current splits and thresholds)."""
    at = _computed_at(conn, tenant_id)
    settings = get_settings(conn, tenant_id)
    if at is None:
        return {
            "contacts": 0,
            "buyers": 0,
            "means": dict.fromkeys("rfm"),
            "groups": dict.fromkeys(scoring.GROUP_OF.values(), 0),
            "lifecycle": dict.fromkeys(scoring.STAGE_NAMES, 0),
        }
    cuts = get_cuts(conn, tenant_id)
    return _figures(conn, tenant_id, cuts, settings.splits, at, settings.thresholds)


def grid(conn: Connection, tenant_id: int) -> list[dict[str, Any]]:
    """The R × F grid: buyers and revenue (fen) per (r, f) pair, with M's mean."""
    cuts = get_cuts(conn, tenant_id)
    if cuts is None:
        return []
    cells: dict[tuple[int, int], list[int]] = {}
    for r, f, m, k, rev in cube(conn, tenant_id, cuts):
        c = cells.setdefault((int(r), int(f)), [0, 0, 0])
        c[0] += int(k)
        c[1] += int(rev)
        c[2] += int(m) * int(k)
    return [
        {"r": r, "f": f, "buyers": n, "revenue_fen": rev, "mean_m": msum / n}
        for (r, f), (n, rev, msum) in sorted(cells.items())
    ]


def group_revenue(conn: Connection, tenant_id: int) -> dict[str, dict[str, int]]:
    """Buyers and revenue (fen) per RFM group."""
    cuts = get_cuts(conn, tenant_id)
    if cuts is None:
        return _groups([], None, Splits())
    rows = cube(conn, tenant_id, cuts)
    return _groups(rows, cuts, get_settings(conn, tenant_id).splits)


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
    """Scores, then locations, each in its own transaction; the run is recorded.

    The scores' statements (buyers, cuts, sums) read one snapshot: on PostgreSQL the
    transaction is REPEATABLE READ, so orders arriving meanwhile cannot make the sums disagree
    with the cuts (SQLite's transactions are serializable already)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as c:
            rr = c.execution_options(isolation_level="REPEATABLE READ")
            with rr.begin():
                scores = recompute_scores(rr, clock, tenant_id)
    else:
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
    """Contacts per lifecycle stage evaluated live at the clock (nothing is stored)."""
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
    out = {d: {str(k): 0 for k in range(1, 6)} for d in "rfm"}
    cuts = get_cuts(conn, tenant_id)
    if cuts is None:
        return out
    for *scores, k, _rev in cube(conn, tenant_id, cuts):
        for d, v in zip("rfm", scores, strict=True):
            out[d][str(v)] += int(k)
    return out
