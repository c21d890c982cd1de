"""Behaviour-triggered journeys: an event starts one, steps wait, test and send.

A journey has a trigger (an event kind: ``registration``, ``add_to_cart``, ``order_signed`` …,
or ``birthday``), an optional exit event (``order``: a contact who orders after entering leaves
at once, "converted"), and steps in order:

- ``{"kind": "wait", "minutes": 60}``: the next step is due that long after this one was;
- ``{"kind": "condition", "rule": {...}}``: a segment rule the contact must meet *now*
  (checked again at send time, not at entry), else the contact leaves (``condition``);
- ``{"kind": "send", "template_id": 7, "link_url": "https://…", "coupon_pool_id": 3}``: one
  marketing message from the template's live approved version. A template that places
  ``{link}`` needs ``link_url`` (http(s)), one that places ``{coupon}`` needs ``coupon_pool_id``
  (one of the tenant's pools); each recipient gets their own short link and coupon, issued by
  the same hook as a campaign's (:mod:`hongyan.campaigns.extras`) with the journey in place of
  the campaign and the step (``s<position>``) as the variant, so clicks and the orders they
  bring count for the journey's step. Checked when the journey is made (422, by
  :func:`hongyan.campaigns.extras.targets`, as a campaign's variants are), never at send.

**Enrolment** happens as events arrive (:func:`on_events`, called by
:func:`hongyan.contacts.events.ingest` for the API, ``hongyan events import`` and every other
ingest, in the ingest's transaction): the same ``INSERT … SELECT`` as the scan, narrowed to the
new events' ids, then the new enrolments are advanced at once (a first wait step is planned
from the event's time; a send step due now is sent, unless another launch holds the tenant's
cap lock, when the next pass sends it). The periodic scan (:func:`enrol`, run by the campaign
scheduler beside the dispatcher) stays as the safety net: one ``INSERT … SELECT`` of the
trigger's events received since the journey was made (``ON CONFLICT DO NOTHING`` on (journey,
contact, event), so a scan after an ingest, or twice, enrols nobody twice); birthdays enrol the
contacts whose birthday is today in the tenant's zone, once a year.

**Advancing** (:func:`advance`) works on every due enrolment of a step at once. A send step is a
small launch through the campaigns' own path: the due contacts are snapshot (suppressed and
no-consent marked), the frequency caps and preferences apply under the tenant's cap lock, and
the messages are materialised with source ``journey`` (quiet hours hold them, spread at the
channel's rate). A contact left out by any of these leaves the journey with the reason.
A step whose coupon pool (an ``import`` pool: a fixed stock) has fewer codes than due
recipients sends to as many as it has, in due order, and the others leave with
``coupon_pool_exhausted``; nothing is half-issued (the step's links, coupons and messages are
written in one savepoint, and a pool found short is tried again with exactly what it holds).
Leaving rather than waiting: a pool runs out because the offer's stock is spent ("the first
1,000"), so a late coupon would be a different offer; the marketer sees the count in the
journey's report and can import codes for those who enrol later.

A journey whose exit event is its own trigger would end every enrolment at once: refused as a
loop.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hongyan.audience import compiler, segments
from hongyan.campaigns import caps, extras, materialise, zones
from hongyan.campaigns import service as campaigns
from hongyan.campaigns.materialise import Launch, Spread, VariantPlan, write
from hongyan.clock import Clock
from hongyan.contacts.events import KINDS
from hongyan.content import gate
from hongyan.content.sending import sendable
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import (
    audience_members,
    contact_events,
    contacts,
    journey_enrolments,
    journey_steps,
    journeys,
)
from hongyan.db.types import MAX_ID
from hongyan.dispatch.outbox import DEFAULT_VALIDITY
from hongyan.dispatch.states import Lane
from hongyan.errors import Conflict, HongyanError, NotFound, ValidationFailed
from hongyan.security import audit
from hongyan.security.keyring import KeyRing
from hongyan.tenants import service as tenants_service

log = logging.getLogger(__name__)
TRIGGERS = (*KINDS, "birthday")
MAX_STEPS = 20
MAX_WAIT = 60 * 24 * 90  # minutes
SCAN_DAYS = 3  # events received within this many days are looked at by a scan
BATCH = 5_000
# A pass sends at most BATCH contacts per step, which materialise.write issues as one batch:
# the coupon pool's shortfall it reports is then the pool's whole stock (see _send).
assert materialise.BATCH >= BATCH
EXHAUSTED = "coupon_pool_exhausted"  # the outcome of those a step's pool had no code for


class JourneyInvalid(ValidationFailed):
    code = "journey_invalid"


class JourneyNotFound(NotFound):
    code = "journey_not_found"
    message_zh = "找不到该旅程"
    message_en = "No such journey"


def _bad(en: str, zh: str) -> JourneyInvalid:
    return JourneyInvalid(f"Journey: {en}", f"旅程设置有误：{zh}")


def _step_bad(n: int) -> extras.Bad:
    def bad(en: str, zh: str, field: str) -> JourneyInvalid:
        return JourneyInvalid(
            f"Journey: step {n}: {en}", f"旅程设置有误：第 {n} 步：{zh}",
            details={"step": n, "field": field},
        )  # fmt: skip

    return bad


def _steps(
    conn: Connection, tenant_id: int, raw: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    if not 1 <= len(raw) <= MAX_STEPS:
        raise _bad(f"1 to {MAX_STEPS} steps", f"步骤须为 1–{MAX_STEPS} 个")
    out = []
    for i, step in enumerate(raw):
        kind = step.get("kind")
        row: dict[str, Any] = {
            "position": i,
            "kind": kind,
            "minutes": None,
            "rule": None,
            "template_version_id": None,
            "link_url": None,
            "coupon_pool_id": None,
        }
        if kind != "send" and (
            step.get("link_url") is not None or step.get("coupon_pool_id") is not None
        ):
            raise _bad(
                f"step {i + 1}: only a send step has a link_url or coupon_pool_id",
                f"第 {i + 1} 步：只有发送步骤可以设置链接或优惠券池",
            )
        if kind == "wait":
            minutes = step.get("minutes")
            if (
                not isinstance(minutes, int)
                or isinstance(minutes, bool)
                or not 1 <= minutes <= MAX_WAIT
            ):
                raise _bad(
                    f"step {i + 1}: wait 1 to {MAX_WAIT} minutes",
                    f"第 {i + 1} 步：等待 1–{MAX_WAIT} 分钟",
                )
            row["minutes"] = minutes
        elif kind == "condition":
            segments.check(conn, tenant_id, step.get("rule"))
            row["rule"] = step["rule"]
        elif kind == "send":
            template_id = step.get("template_id")
            if not isinstance(template_id, int) or not -MAX_ID <= template_id <= MAX_ID:
                raise _bad(f"step {i + 1}: name a template", f"第 {i + 1} 步：请指定模板")
            version = sendable(conn, tenant_id, template_id).version_id
            gate.check_outbox(conn, tenant_id, Lane.MARKETING, version)
            compiled = campaigns._compiled(conn, tenant_id, "marketing", [version])[version]
            # where {link} leads, the pool {coupon} comes from: as a campaign's variant's
            row["link_url"], row["coupon_pool_id"] = extras.targets(
                conn, tenant_id, compiled.keys, step.get("link_url"), step.get("coupon_pool_id"),
                _step_bad(i + 1),
            )  # fmt: skip
            row["template_version_id"] = version
        else:
            raise _bad(
                f"step {i + 1}: wait, condition or send", f"第 {i + 1} 步：须为等待、条件或发送"
            )
        out.append(row)
    if not any(r["kind"] == "send" for r in out):
        raise _bad("a journey sends at least one message", "旅程至少要发送一条短信")
    return out


def create(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    *,
    name: str,
    trigger: str,
    steps: Sequence[Mapping[str, Any]],
    exit_on: str | None = "order",
    actor: str,
) -> dict[str, Any]:
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise _bad("a name of 1–100 characters", "名称须为 1–100 个字符")
    if trigger not in TRIGGERS:
        raise _bad(
            f"the trigger is one of {', '.join(TRIGGERS)}",
            f"触发事件须为 {'、'.join(TRIGGERS)} 之一",
        )
    if exit_on is not None and exit_on not in KINDS:
        raise _bad(
            f"the exit event is one of {', '.join(KINDS)}", f"退出事件须为 {'、'.join(KINDS)} 之一"
        )
    if exit_on == trigger:
        raise _bad(
            "the exit event is the trigger itself: every enrolment would end at once (a loop)",
            "退出事件与触发事件相同：每次进入都会立即退出（循环）",
        )
    rows = _steps(conn, tenant_id, steps)
    scope = TenantScope(tenant_id)
    if conn.execute(scope.select(journeys, journeys.c.id).where(journeys.c.name == name)).first():
        raise Conflict(f"A journey named {name!r} exists", f"已有名为“{name}”的旅程")
    now = clock.now()
    jid = int(
        conn.execute(
            scope.insert(journeys)
            .values(
                name=name,
                trigger=trigger,
                exit_on=exit_on,
                state="active",
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
            .returning(journeys.c.id)
        ).scalar_one()
    )
    scope.insert_many(conn, journey_steps, [{**r, "journey_id": jid} for r in rows])
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="journey.create",
        target=f"journey:{jid}",
    )  # fmt: skip
    return get(conn, tenant_id, jid)


def get(conn: Connection, tenant_id: int, ref: int | str) -> dict[str, Any]:
    """The journey with its steps and its counts."""
    out = _load(conn, tenant_id, ref)
    out["counts"] = counts(conn, tenant_id, out["id"])
    return out


def _load(conn: Connection, tenant_id: int, ref: int | str) -> dict[str, Any]:
    """The journey with its steps (no counts: they read every enrolment)."""
    scope = TenantScope(tenant_id)
    value = campaigns.id_or_name(ref)
    col = journeys.c.id if isinstance(value, int) else journeys.c.name
    row = conn.execute(scope.select(journeys).where(col == value)).mappings().first()
    if row is None:
        raise JourneyNotFound()
    out = {k: v for k, v in row.items() if k != "tenant_id"}
    s = journey_steps.c
    out["steps"] = [
        {k: v for k, v in r.items() if k not in ("tenant_id", "journey_id", "id")}
        for r in conn.execute(
            scope.select(journey_steps).where(s.journey_id == out["id"]).order_by(s.position)
        ).mappings()
    ]
    return out


def counts(conn: Connection, tenant_id: int, journey_id: int) -> dict[str, int]:
    e = journey_enrolments.c
    out: Counter[str] = Counter()
    for state, outcome, n in conn.execute(
        TenantScope(tenant_id)
        .select(journey_enrolments, e.state, e.outcome, sa.func.count())
        .where(e.journey_id == journey_id)
        .group_by(e.state, e.outcome)
    ):
        out["entered"] += int(n)
        out[str(state)] += int(n)
        if outcome:
            out[f"outcome.{outcome}"] += int(n)
    return dict(out)


def list_journeys(conn: Connection, tenant_id: int) -> list[dict[str, Any]]:
    j = journeys.c
    rows = conn.execute(
        TenantScope(tenant_id).select(journeys).order_by(j.created_at.desc(), j.id.desc())
    ).mappings()
    return [
        {
            **{k: v for k, v in r.items() if k != "tenant_id"},
            "counts": counts(conn, tenant_id, r["id"]),
        }
        for r in rows
    ]


def set_state(
    conn: Connection, clock: Clock, tenant_id: int, ref: int | str, state: str, *, actor: str
) -> dict[str, Any]:
    if state not in ("active", "paused"):
        raise _bad("state is active or paused", "状态须为 active 或 paused")
    jid = get(conn, tenant_id, ref)["id"]
    conn.execute(
        TenantScope(tenant_id)
        .update(journeys)
        .where(journeys.c.id == jid)
        .values(state=state, updated_at=clock.now())
    )
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action=f"journey.{state}",
        target=f"journey:{jid}",
    )
    return get(conn, tenant_id, jid)


# -- enrolment -----------------------------------------------------------------------------


def enrol(conn: Connection, clock: Clock, tenant_id: int, journey: Mapping[str, Any]) -> int:
    """Enrol the contacts whose trigger happened (see the module doc); returns how many are new."""
    return len(_enrol(conn, clock, tenant_id, journey))


def _enrol(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    journey: Mapping[str, Any],
    event_ids: Sequence[str] | None = None,
) -> list[int]:
    """The new enrolments' ids; ``event_ids`` narrows the scan to those events (same rules)."""
    now = clock.now()
    e, j = journey_enrolments.c, journey
    values = [
        e.tenant_id,
        e.journey_id,
        e.contact_id,
        e.event_key,
        e.state,
        e.step,
        e.next_at,
        e.entered_at,
        e.updated_at,
    ]
    lit = sa.literal
    from hongyan.db.types import UTCDateTime

    if j["trigger"] == "birthday":
        zone = ZoneInfo(tenants_service.get_tenant_by_id(conn, tenant_id).timezone)
        today = now.astimezone(zone).date()
        c = contacts.c
        at = lit(now, UTCDateTime())
        select = sa.select(
            lit(tenant_id, sa.Integer), lit(j["id"], sa.Integer), c.id,
            lit(f"birthday:{today.isoformat()}", sa.String), lit("active", sa.String),
            lit(0, sa.Integer), at, at, at,
        ).where(
            c.tenant_id == tenant_id, c.birth_month == today.month, c.birth_day == today.day
        )  # fmt: skip
    else:
        ev = contact_events.c
        since = max(j["created_at"], now - dt.timedelta(days=SCAN_DAYS))
        select = sa.select(
            lit(tenant_id, sa.Integer), lit(j["id"], sa.Integer), ev.contact_id, ev.event_id,
            lit("active", sa.String), lit(0, sa.Integer), ev.occurred_at, ev.occurred_at,
            lit(now, UTCDateTime()),
        ).where(
            ev.tenant_id == tenant_id, ev.kind == j["trigger"],
            ev.received_at >= lit(since, UTCDateTime()),
            ev.occurred_at >= lit(j["created_at"], UTCDateTime()),
        )  # fmt: skip
        if event_ids is not None:
            select = select.where(ev.event_id.in_(list(event_ids)))
    stmt = (
        TenantScope(tenant_id)
        .dialect_insert(conn, journey_enrolments)
        .from_select(values, select)
        .on_conflict_do_nothing(index_elements=["journey_id", "contact_id", "event_key"])
        .returning(journey_enrolments.c.id)
    )
    return [int(r[0]) for r in conn.execute(stmt).all()]


def on_events(
    conn: Connection,
    clock: Clock,
    keyring: KeyRing,
    tenant_id: int,
    new: Sequence[tuple[str, str]],
) -> dict[str, int]:
    """Enrol the tenant's active journeys triggered by just-stored events (``(event_id, kind)``)
    and advance those enrolments at once (see the module doc), in a savepoint of the ingest's
    transaction: a journey that cannot go on now (a template withdrawn) is logged and left to
    the scheduler's pass, and the events are stored whatever happens here."""
    kinds: dict[str, list[str]] = {}
    for event_id, kind in new:
        kinds.setdefault(kind, []).append(event_id)
    j = journeys.c
    found = conn.execute(
        TenantScope(tenant_id)
        .select(journeys, j.id)
        .where(j.state == "active", j.trigger.in_(list(kinds)))
        .order_by(j.id)
    ).scalars()
    done: Counter[str] = Counter()
    for journey_id in list(found):
        try:
            with conn.begin_nested():
                journey = _load(conn, tenant_id, int(journey_id))
                ids = _enrol(conn, clock, tenant_id, journey, kinds[journey["trigger"]])
                done["enrolled"] += len(ids)
                if ids:
                    done.update(advance(conn, clock, keyring, tenant_id, journey, only=ids))
        except Exception:
            log.exception("journey %s of tenant %s: left to the scheduler", journey_id, tenant_id)
    return {k: v for k, v in done.items() if v}


# -- advancing -----------------------------------------------------------------------------


def _due(
    conn: Connection, tenant_id: int, journey_id: int, position: int, now: dt.datetime,
    only: Sequence[int] | None = None,
) -> list[Any]:  # fmt: skip
    e = journey_enrolments.c
    stmt = (
        TenantScope(tenant_id)
        .select(journey_enrolments, e.id, e.contact_id, e.next_at, e.entered_at)
        .where(
            e.journey_id == journey_id,
            e.state == "active",
            e.step == position,
            e.next_at <= now,
        )
        .order_by(e.next_at, e.id)
        .limit(BATCH)
    )
    if only is not None:
        stmt = stmt.where(e.id.in_(list(only)))
    return list(conn.execute(stmt).all())


def _update(conn: Connection, tenant_id: int, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    e = journey_enrolments.c
    stmt = (
        TenantScope(tenant_id)
        .update(journey_enrolments)
        .where(e.id == sa.bindparam("eid"))
        .values(
            state=sa.bindparam("st"),
            step=sa.bindparam("sp"),
            next_at=sa.bindparam("nx"),
            outcome=sa.bindparam("oc"),
            updated_at=sa.bindparam("up"),
        )
    )
    conn.execute(stmt, rows)


def _exit_converted(
    conn: Connection, tenant_id: int, journey: Mapping[str, Any], now: dt.datetime,
    only: Sequence[int] | None = None,
) -> int:  # fmt: skip
    """Active enrolments whose contact did the exit event after entering: converted."""
    if not journey["exit_on"]:
        return 0
    e, ev = journey_enrolments.c, contact_events.c
    converted = sa.exists().where(
        ev.tenant_id == tenant_id, ev.contact_id == e.contact_id, ev.kind == journey["exit_on"],
        ev.occurred_at > e.entered_at,
    )  # fmt: skip
    stmt = (
        TenantScope(tenant_id)
        .update(journey_enrolments)
        .where(e.journey_id == journey["id"], e.state == "active", converted)
        .values(state="exited", outcome="converted", updated_at=now)
    )
    if only is not None:
        stmt = stmt.where(e.id.in_(list(only)))
    return int(conn.execute(stmt).rowcount)


def _matching(
    conn: Connection, clock: Clock, tenant_id: int, rule: Any, ids: list[int]
) -> set[int]:
    c = segments.compile_rule(conn, clock, tenant_id, rule)
    stmt = compiler.query(c.node, c.ctx, contacts.c.id).where(contacts.c.id.in_(ids))
    return {int(x) for x in conn.execute(stmt).scalars()}


def _send(
    conn: Connection, clock: Clock, keyring: KeyRing, tenant_id: int, journey: Mapping[str, Any],
    step: Mapping[str, Any], due: list[Any], *, wait: bool = True,
) -> dict[int, str] | None:  # fmt: skip
    """Plan the step's message for the due contacts; the reason each left-out one leaves.
    Without ``wait``, None (nothing done) when another transaction holds the cap lock."""
    if wait:
        caps.lock_tenant(conn, tenant_id)
    elif not caps.try_lock_tenant(conn, tenant_id):
        return None
    ids = [int(r.contact_id) for r in due]
    ref = f"journey:{journey['id']}"
    audience_id, _counts = campaigns.snapshot_of(
        conn, clock, tenant_id, contacts.c.id, ids, purpose="marketing",
        name=str(journey["name"]), ref=ref, actor="journey",
    )  # fmt: skip
    zone, rules = campaigns._rules(conn, tenant_id, {"window": None})  # quiet hours only
    now = clock.now()
    own = zones.own_zones(conn, tenant_id)
    first = zones.firsts(
        set(own.values()), zone.key,
        lambda z: Spread(now, campaigns.DEFAULT_RATE, zone=z, rules=rules, total=1),
    )  # fmt: skip
    campaigns._apply_caps(conn, tenant_id, audience_id, first, False, sa.true(), now)
    eligible = campaigns._eligible(conn, tenant_id, audience_id, sa.true())
    m = audience_members.c
    statuses: dict[int, str] = dict(
        conn.execute(
            TenantScope(tenant_id)
            .select(audience_members, m.contact_id, m.status)
            .where(m.audience_id == audience_id)
        ).all()
    )
    out = {cid: str(statuses.get(cid, "gone")) for cid in ids if cid not in set(eligible)}
    if not eligible:
        return out
    version_id = int(step["template_version_id"])
    compiled = campaigns._compiled(conn, tenant_id, "marketing", [version_id])[version_id]
    extras.require(compiled.keys)
    name = f"s{step['position']}"
    rate = campaigns._rate(conn, tenant_id, {"category": "marketing", "route": None, "rate": None})
    # The step's {link} and {coupon} are issued by the campaigns' hook, for the journey and step.
    plan = VariantPlan(name, version_id, compiled, step.get("link_url"), step.get("coupon_pool_id"))
    rank = {int(r.contact_id): k for k, r in enumerate(due)}
    chosen = sorted(eligible, key=lambda c: rank.get(c, len(rank)))  # in due order
    retried = False
    while True:
        order, spread = zones.plan(
            [(c, name) for c in chosen], own, zone.key, rate,
            lambda z, r, n: Spread(
                now, r, zone=z, rules=rules, total=n, validity=DEFAULT_VALIDITY[Lane.MARKETING]
            ),
        )  # fmt: skip
        launch = Launch(
            tenant_id=tenant_id, lane=Lane.MARKETING, source="journey", source_ref=ref,
            campaign_id=None, variants={name: plan}, now=now, spread=spread,
            journey_id=int(journey["id"]),
        )  # fmt: skip
        try:
            with conn.begin_nested():  # links, coupons and messages together, or none of them
                write(conn, keyring, launch, order)
        except HongyanError as exc:
            if exc.code != extras.EXHAUSTED:
                raise
            # The pool holds fewer codes than recipients: the first in due order get what it
            # holds (tried again at once: under the cap lock nobody else issues meanwhile), the
            # others leave. Short a second time: nobody gets one now. ("available" is the
            # pool's stock only because a pass, at most BATCH contacts, is one batch of
            # materialise.write: asserted below the constants.)
            available = 0 if retried else int(exc.details.get("available") or 0)
            keep = max(0, min(available, len(chosen) - 1))
            out.update({cid: EXHAUSTED for cid in chosen[keep:]})
            log.warning(
                "journey %s step %s: coupon pool %s short, %d of %d recipients leave",
                journey["id"], step["position"], plan.coupon_pool_id, len(chosen) - keep,
                len(chosen),
            )  # fmt: skip
            chosen, retried = chosen[:keep], True
            if not chosen:
                return out
            continue
        out.update(launch.skipped)  # a value brought a refused word, or the window was full
        return out


def advance(
    conn: Connection, clock: Clock, keyring: KeyRing, tenant_id: int, journey: Mapping[str, Any],
    *, only: Sequence[int] | None = None,
) -> dict[str, int]:  # fmt: skip
    """Move every due enrolment of the journey through its steps (until each waits or ends);
    ``only``: just these enrolments (new ones, at ingest: a send step then does not wait for
    another launch's cap lock, the scheduler's pass sends it instead)."""
    now = clock.now()
    done: Counter[str] = Counter()
    done["converted"] += _exit_converted(conn, tenant_id, journey, now, only)
    steps = journey["steps"]
    last = len(steps)
    for position, step in enumerate(steps):
        due = _due(conn, tenant_id, journey["id"], position, now, only)
        if not due:
            continue
        rows: list[dict[str, Any]] = []
        ends = position + 1 >= last

        def go_on(
            r: Any, at: dt.datetime, ends: bool = ends, to: int = position + 1
        ) -> dict[str, Any]:
            return {"eid": r.id, "st": "completed" if ends else "active", "sp": to, "nx": at,
                    "oc": "completed" if ends else None, "up": now}  # fmt: skip

        def leave(r: Any, why: str, at: int = position) -> dict[str, Any]:
            return {"eid": r.id, "st": "exited", "sp": at, "nx": r.next_at, "oc": why, "up": now}

        if step["kind"] == "wait":
            rows = [go_on(r, r.next_at + dt.timedelta(minutes=int(step["minutes"]))) for r in due]
            done["waited"] += len(rows)
        elif step["kind"] == "condition":
            ok = _matching(conn, clock, tenant_id, step["rule"], [int(r.contact_id) for r in due])
            rows = [
                go_on(r, now) if int(r.contact_id) in ok else leave(r, "condition") for r in due
            ]
            done["condition_failed"] += sum(1 for r in due if int(r.contact_id) not in ok)
        else:
            left = _send(conn, clock, keyring, tenant_id, journey, step, due, wait=only is None)
            if left is None:
                done["deferred"] += len(due)
                break  # the lock is busy: the scheduler's pass goes on from here
            rows = [
                leave(r, left[int(r.contact_id)]) if int(r.contact_id) in left else go_on(r, now)
                for r in due
            ]
            done["sent"] += len(due) - len(left)
            done["left_out"] += len(left)
        _update(conn, tenant_id, rows)
    return {k: v for k, v in done.items() if v}


def tick(engine: Engine, clock: Clock, keyring: KeyRing) -> dict[str, int]:
    """Enrol and advance every active journey of every tenant, each in its own transaction."""
    total: Counter[str] = Counter()
    with engine.connect() as conn:
        active = conn.execute(
            unscoped(
                sa.select(journeys.c.tenant_id, journeys.c.id).where(journeys.c.state == "active"),
                "the scheduler advances every tenant's journeys",
            )
        ).all()
    for tenant_id, journey_id in active:
        with engine.begin() as conn:
            j = get(conn, int(tenant_id), int(journey_id))
            total["enrolled"] += enrol(conn, clock, int(tenant_id), j)
            total.update(advance(conn, clock, keyring, int(tenant_id), j))
    return {k: v for k, v in total.items() if v}


__all__ = [
    "advance", "create", "enrol", "get", "list_journeys", "on_events", "set_state", "tick",
]  # fmt: skip
