"""Campaigns: create, estimate, launch (snapshot + materialise), pause, resume, cancel, status,
and the scheduler that launches due ones, decides A/B tests and completes finished campaigns.

States::

    draft ──launch──► scheduled ──(due)──► running ⇄ paused
      │                   │                   │
      └───────────────────┴──── cancel ───────┴──► cancelled         running ──(done)──► completed

    draft ──(console)──► launching ──► running            (the launch runs in the background)
    running | paused ──(A/B winner)──► deciding ──► running | paused   (the rest, likewise)

A launch (:func:`launch_now`) runs in one transaction under the tenant's cap lock
(:func:`hongyan.campaigns.caps.lock_tenant`): the audience is snapshot (suppressed and
no-consent contacts are marked there), contacts over their frequency cap or whose preference
refuses the campaign are marked ``over_cap`` / ``preference`` in the same snapshot, the rest are
ordered and assigned variants (:func:`hongyan.campaigns.abtest.mix`), and every message is
written (:mod:`hongyan.campaigns.materialise`). Anything failing rolls the whole launch back: no
message, no audience, no state change.

Pause, resume and cancel are one ``UPDATE`` of the campaign's messages each (``planned`` ⇄
``held``; ``planned`` / ``held`` → ``cancelled``): the dispatcher never claims a held message.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets as pysecrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hongyan.audience import compiler, segments
from hongyan.audience import service as audience_service
from hongyan.audience.scoring import stage_sql
from hongyan.campaigns import abtest, caps, extras, zones
from hongyan.campaigns.materialise import Launch, Spread, VariantPlan, write
from hongyan.campaigns.schedule import Schedule, parse_schedule
from hongyan.campaigns.windows import PRESETS, QuietHours, Rules, SendWindow, parse_hhmm, preset
from hongyan.channels import service as channel_store
from hongyan.clock import Clock
from hongyan.contacts.suppression import phone_context
from hongyan.content import gate
from hongyan.content import service as content_service
from hongyan.content.compiled import CompiledTemplate
from hongyan.content.sending import sendable
from hongyan.db.scope import TENANT_OPTION, TenantScope, unscoped
from hongyan.db.tables import (
    audience_members,
    audiences,
    campaign_runs,
    campaign_variants,
    campaigns,
    contact_activity,
    contact_preferences,
    contacts,
    inbound_messages,
    messages,
    template_versions,
)
from hongyan.db.types import MAX_ID
from hongyan.dispatch.outbox import DEFAULT_VALIDITY, E164
from hongyan.dispatch.states import Lane, State
from hongyan.errors import Conflict, NotFound, ValidationFailed
from hongyan.security import audit
from hongyan.security.keyring import KeyRing
from hongyan.tenants import service as tenants_service

log = logging.getLogger(__name__)

STATES = (
    "draft", "launching", "scheduled", "running", "paused", "deciding", "completed", "cancelled",
)  # fmt: skip
# How long a console launch (running in the background) may take before the scheduler assumes
# its process died and launches the campaign itself (the launch is one transaction: a second
# attempt waits for the first under the cap lock and then finds it done).
LAUNCH_LEASE = dt.timedelta(minutes=10)
CATEGORIES = ("marketing", "notification")
VARIANT_NAMES = "ABCDE"
DEFAULT_RATE = 100.0  # messages a second when neither the campaign nor its channel says
METRICS = ("delivery_rate", "reply_rate", "click_rate", "conversion_rate")
MAX_LIST = 1_000_000


class CampaignNotFound(NotFound):
    code = "campaign_not_found"
    message_zh = "找不到该营销活动"
    message_en = "No such campaign"


class CampaignInvalid(ValidationFailed):
    code = "campaign_invalid"


class CampaignState(Conflict):
    code = "campaign_state"


class EmptyAudience(ValidationFailed):
    code = "campaign_audience_empty"
    message_zh = "该活动没有可发送的联系人（人群为空，或全部被屏蔽、未授权、超出频次）"
    message_en = (
        "The campaign has nobody to send to (the audience is empty, or everyone is "
        "suppressed, without consent or over their frequency cap)"
    )


def _bad(en: str, zh: str, **details: Any) -> CampaignInvalid:
    return CampaignInvalid(en, zh, details=details or None)


# -- metric sources (the tracking capability connects clicks and conversions) ----------------

#: ``fn(conn, tenant_id, campaign_id) -> {variant: (successes, trials)}``
MetricSource = Callable[[Connection, int, int], dict[str, tuple[int, int]]]
_METRICS: dict[str, MetricSource] = {}


def register_metric(metric: str, fn: MetricSource) -> None:
    """Connect a source of an A/B metric (click_rate, conversion_rate) to the decision."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}")
    _METRICS[metric] = fn


def delivery_counts(
    conn: Connection, tenant_id: int, campaign_id: int
) -> dict[str, tuple[int, int]]:
    """Per variant: delivered of the messages with a final verdict from the carrier."""
    m = messages.c
    final = (
        State.DELIVERED.value,
        State.UNDELIVERED.value,
        State.EXPIRED.value,
        State.FAILED.value,
    )
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(
            messages,
            m.variant,
            sa.func.sum(sa.case((m.state == State.DELIVERED.value, 1), else_=0)),
            sa.func.count(),
        )
        .where(m.campaign_id == campaign_id, m.state.in_(final))
        .group_by(m.variant)
    ).all()
    return {str(v): (int(s or 0), int(n)) for v, s, n in rows}


def reply_counts(conn: Connection, tenant_id: int, campaign_id: int) -> dict[str, tuple[int, int]]:
    """Per variant: messages answered by a reply (not an opt-out) of messages submitted."""
    m, i = messages.c, inbound_messages.c
    replied = (
        sa.select(i.message_id)
        .where(i.tenant_id == tenant_id, i.kind == "reply", i.message_id.is_not(None))
        .distinct()
        .subquery()
    )
    sent = (
        State.SUBMITTED.value,
        State.DELIVERED.value,
        State.UNDELIVERED.value,
        State.EXPIRED.value,
    )
    rows = conn.execute(
        sa.select(
            m.variant,
            sa.func.count(replied.c.message_id),
            sa.func.count(),
        )
        .select_from(messages.outerjoin(replied, replied.c.message_id == m.id))
        .where(m.tenant_id == tenant_id, m.campaign_id == campaign_id, m.state.in_(sent))
        .group_by(m.variant)
        .execution_options(**{TENANT_OPTION: tenant_id})
    ).all()
    return {str(v): (int(s), int(n)) for v, s, n in rows}


_METRICS["delivery_rate"] = delivery_counts
_METRICS["reply_rate"] = reply_counts


# -- reading ---------------------------------------------------------------------------------


def _row(conn: Connection, tenant_id: int, campaign_id: int) -> dict[str, Any]:
    row = (
        conn.execute(TenantScope(tenant_id).select(campaigns).where(campaigns.c.id == campaign_id))
        .mappings()
        .first()
    )
    if row is None:
        raise CampaignNotFound()
    return {k: v for k, v in row.items() if k not in ("tenant_id", "list_indexes")} | {
        "list_size": len(row["list_indexes"]) if row["list_indexes"] else None
    }


def _variants(conn: Connection, tenant_id: int, campaign_id: int) -> list[dict[str, Any]]:
    v = campaign_variants
    rows = conn.execute(
        TenantScope(tenant_id).select(v).where(v.c.campaign_id == campaign_id).order_by(v.c.name)
    ).mappings()
    return [{k: val for k, val in r.items() if k != "tenant_id"} for r in rows]


def id_or_name(ref: int | str) -> int | str:
    """A campaign's or journey's reference as an id when it is one (ASCII digits, or an int,
    within an id's range), else as a name. Other Unicode digits ("²") and numbers past the
    largest id are names, which no campaign has, rather than a ValueError or an error from the
    driver."""
    text = str(ref)
    if text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= MAX_ID:
        return int(text)
    return text


def get(conn: Connection, tenant_id: int, ref: int | str) -> dict[str, Any]:
    ref = id_or_name(ref)
    if isinstance(ref, str):
        found = conn.execute(
            TenantScope(tenant_id).select(campaigns, campaigns.c.id).where(campaigns.c.name == ref)
        ).scalar_one_or_none()
        if found is None:
            raise CampaignNotFound()
        ref = int(found)
    camp = _row(conn, tenant_id, ref)
    camp["variants"] = _variants(conn, tenant_id, camp["id"])
    return camp


def list_campaigns(conn: Connection, tenant_id: int, *, limit: int = 100) -> list[dict[str, Any]]:
    c = campaigns.c
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(
            campaigns, c.id, c.name, c.category, c.state, c.phase, c.counts, c.next_run_at,
            c.launched_at, c.finished_at, c.created_at,
        )
        .order_by(c.created_at.desc(), c.id.desc())
        .limit(limit)
    ).mappings()  # fmt: skip
    return [dict(r) for r in rows]


def message_counts(conn: Connection, tenant_id: int, campaign_id: int) -> dict[str, dict[str, int]]:
    """Messages per variant and state (``ix_messages_campaign``)."""
    m = messages.c
    out: dict[str, dict[str, int]] = {}
    for variant, state, n, parts in conn.execute(
        TenantScope(tenant_id)
        .select(messages, m.variant, m.state, sa.func.count(), sa.func.sum(m.parts))
        .where(m.campaign_id == campaign_id)
        .group_by(m.variant, m.state)
    ):
        row = out.setdefault(str(variant), {"parts": 0})
        row[str(state)] = int(n)
        row["parts"] += int(parts or 0)
    return out


def status(conn: Connection, clock: Clock, tenant_id: int, ref: int | str) -> dict[str, Any]:
    """The campaign, its launches, its messages by variant and state, its funnel and cost."""
    camp = get(conn, tenant_id, ref)
    counts = message_counts(conn, tenant_id, camp["id"])
    totals: Counter[str] = Counter()
    for per in counts.values():
        totals.update(per)
    price = _price(conn, tenant_id, camp)
    r = campaign_runs.c
    runs = [
        dict(x)
        for x in conn.execute(
            TenantScope(tenant_id)
            .select(campaign_runs, r.run_no, r.phase, r.counts, r.seconds, r.started_at)
            .where(r.campaign_id == camp["id"])
            .order_by(r.id)
        ).mappings()
    ]
    funnel = []
    delivered = delivery_counts(conn, tenant_id, camp["id"])
    for v in camp["variants"]:
        per = counts.get(v["name"], {})
        ok, final = delivered.get(v["name"], (0, 0))
        low, high = abtest.wilson(ok, final)
        funnel.append(
            {
                "variant": v["name"],
                "planned": sum(n for k, n in per.items() if k != "parts"),
                "waiting": per.get("planned", 0) + per.get("held", 0),
                "submitted": sum(
                    per.get(s, 0) for s in ("submitted", "delivered", "undelivered", "expired")
                ),
                "delivered": per.get("delivered", 0),
                "failed": per.get("failed", 0) + per.get("undelivered", 0),
                "cancelled": per.get("cancelled", 0),
                "delivery_rate": ok / final if final else None,
                "delivery_interval": [low, high] if final else None,
            }
        )
    # Every part planned is billed when sent; cancelled messages cost nothing.
    billable = totals.get("parts", 0) - _cancelled_parts(conn, tenant_id, camp["id"])
    return {
        **camp,
        "messages": {k: v for k, v in totals.items() if k != "parts"},
        "by_variant": counts,
        "funnel": funnel,
        "runs": runs,
        "parts": billable,
        "price_per_part": str(price) if price is not None else None,
        "cost": str((price * billable).quantize(Decimal("0.01"))) if price is not None else None,
        "at": clock.now(),
    }


def _cancelled_parts(conn: Connection, tenant_id: int, campaign_id: int) -> int:
    m = messages.c
    return int(
        conn.execute(
            TenantScope(tenant_id)
            .select(messages, sa.func.coalesce(sa.func.sum(m.parts), 0))
            .where(m.campaign_id == campaign_id, m.state == State.CANCELLED.value)
        ).scalar_one()
    )


# -- creating --------------------------------------------------------------------------------


def _window(raw: Any) -> dict[str, Any] | None:
    """A window from the API: None, a preset name, or {"start","end","days"} (0 = Monday)."""
    if raw is None or raw == "" or raw == {}:
        return None
    if isinstance(raw, str):
        preset(raw)
        return {"preset": raw}
    if isinstance(raw, Mapping):
        if "preset" in raw:
            preset(str(raw["preset"]))
            return {"preset": str(raw["preset"])}
        days = raw.get("days", list(range(7)))
        if not isinstance(days, list | tuple) or not all(
            isinstance(d, int) and 0 <= d <= 6 for d in days
        ):
            raise _bad("window days are 0 (Monday) to 6", "发送时段的星期须为 0（周一）到 6")
        SendWindow(
            parse_hhmm(str(raw.get("start")), "start"),
            parse_hhmm(str(raw.get("end")), "end"),
            frozenset(days),
        )
        return {"start": str(raw["start"]), "end": str(raw["end"]), "days": sorted(set(days))}
    raise _bad("window is a preset name or {start, end, days}", "发送时段须为预设名或起止时间")


def window_of(raw: Mapping[str, Any] | None) -> SendWindow | None:
    if not raw:
        return None
    if "preset" in raw:
        return preset(raw["preset"])
    return SendWindow(
        parse_hhmm(raw["start"], "start"), parse_hhmm(raw["end"], "end"), frozenset(raw["days"])
    )


def _ab(raw: Any, variants: int, schedule: Schedule) -> dict[str, Any] | None:
    if not raw:
        return None
    if variants < 2:
        raise _bad("An A/B test needs 2 to 5 variants", "A/B 测试需要 2 到 5 个版本")
    if schedule.kind == "recurring":
        raise _bad("A recurring campaign cannot run an A/B test", "周期性活动不能进行 A/B 测试")
    share = float(raw.get("share", 0.01))
    metric = str(raw.get("metric", "delivery_rate"))
    method = str(raw.get("method", "frequentist"))
    confidence = float(raw.get("confidence", 0.95))
    wait = float(raw.get("wait_hours", 4))
    min_trials = int(raw.get("min_trials", 100))
    if not 0 < share <= 0.5 / variants + 1e-9:
        raise _bad(
            "Each variant's test share is above 0 and all of them at most half the audience",
            "每个版本的测试比例须大于 0，合计不超过受众的一半",
        )
    if metric not in METRICS:
        raise _bad(f"metric is one of {', '.join(METRICS)}", f"指标须为 {'、'.join(METRICS)} 之一")
    if method not in ("frequentist", "bayesian"):
        raise _bad("method is frequentist or bayesian", "方法须为 frequentist 或 bayesian")
    if not 0.5 < confidence < 1:
        raise _bad("confidence is between 0.5 and 1", "置信度须在 0.5 到 1 之间")
    if not 0 < wait <= 24 * 14:
        raise _bad("wait 0–336 hours before deciding", "等待时间须为 0–336 小时")
    if not 1 <= min_trials <= 1_000_000:
        raise _bad("min_trials is 1 to 1,000,000", "最少样本数须为 1 到 1,000,000")
    return {
        "share": share, "metric": metric, "method": method, "confidence": confidence,
        "wait_hours": wait, "min_trials": min_trials,
    }  # fmt: skip


def _version(conn: Connection, tenant_id: int, spec: Mapping[str, Any], lane: Lane) -> int:
    """An approved version of the category: ``template_version_id``, or a template's live one."""
    if spec.get("template_version_id") is not None:
        version_id = int(spec["template_version_id"])
    elif spec.get("template_id") is not None:
        version_id = sendable(conn, tenant_id, int(spec["template_id"])).version_id
    else:
        raise _bad("Each variant names a template", "每个版本都要指定模板")
    gate.check_outbox(conn, tenant_id, lane, version_id)
    return version_id


def _targets(
    conn: Connection,
    tenant_id: int,
    category: str,
    specs: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    link_url: Any,
    coupon_pool_id: Any,
) -> list[tuple[str | None, int | None]]:
    """Each variant's ``(link_url, coupon_pool_id)``, checked as a journey's send step's are
    (:func:`hongyan.campaigns.extras.targets`): a template placing ``{link}`` needs an http(s)
    address, one placing ``{coupon}`` one of the tenant's pools, and neither is taken by a
    template that does not place it. The campaign's own values (one form field for the whole
    campaign: the console, the CLI) go to the variants whose template places them and that name
    none; given while no variant's template places them, they are refused too."""
    versions = [int(r["template_version_id"]) for r in rows]
    compiled = _compiled(conn, tenant_id, category, versions)
    keys = [compiled[v].keys for v in versions]
    needs = [extras.needed(k) for k in keys]

    def campaign_bad(en: str, zh: str, field: str) -> CampaignInvalid:
        return _bad(f"Campaign: {en}", f"活动设置有误：{zh}", field=field)

    if not extras.blank(link_url):
        if not any("link" in n for n in needs):
            raise campaign_bad(
                "no variant's template places {link}: leave link_url out",
                "所选模板都不含 {link}，无需填写链接目标地址",
                "link_url",
            )
        link_url = extras.check_link(link_url, True, campaign_bad)
    if not extras.blank(coupon_pool_id):
        if not any("coupon" in n for n in needs):
            raise campaign_bad(
                "no variant's template places {coupon}: leave coupon_pool_id out",
                "所选模板都不含 {coupon}，无需选择优惠券池",
                "coupon_pool_id",
            )
        coupon_pool_id = extras.check_pool(conn, tenant_id, coupon_pool_id, True, campaign_bad)
    out = []
    for row, spec, k, need in zip(rows, specs, keys, needs, strict=True):
        link, pool = spec.get("link_url"), spec.get("coupon_pool_id")
        if extras.blank(link) and "link" in need:
            link = link_url
        if extras.blank(pool) and "coupon" in need:
            pool = coupon_pool_id
        out.append(extras.targets(conn, tenant_id, k, link, pool, _variant_bad(row["name"])))
    return out


def _variant_bad(variant: str) -> extras.Bad:
    def bad(en: str, zh: str, field: str) -> CampaignInvalid:
        return _bad(
            f"Campaign: variant {variant}: {en}", f"活动设置有误：版本 {variant}：{zh}",
            variant=variant, field=field,
        )  # fmt: skip

    return bad


def create(
    conn: Connection,
    clock: Clock,
    keyring: KeyRing,
    tenant_id: int,
    *,
    name: str,
    variants: Sequence[Mapping[str, Any]],
    segment: int | str | None = None,
    phones: Sequence[str] | None = None,
    category: str = "marketing",
    important: bool = False,
    route: str | None = None,
    schedule: Mapping[str, Any] | None = None,
    window: Any = None,
    on_window_end: str = "carry",
    rate: float | None = None,
    ab: Mapping[str, Any] | None = None,
    link_url: str | None = None,
    coupon_pool_id: Any = None,
    actor: str,
) -> dict[str, Any]:
    """A draft campaign, every choice checked now (see the module doc). ``link_url`` and
    ``coupon_pool_id`` (a pool's id; anything else is refused) are the campaign's: they go to
    each variant whose template places ``{link}`` / ``{coupon}`` and that names none of its own
    (see :func:`_targets`)."""
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise _bad("A campaign needs a name (1–100 characters)", "活动名称须为 1–100 个字符")
    if category not in CATEGORIES:
        raise _bad("category is marketing or notification", "类别须为 marketing 或 notification")
    lane = Lane[category.upper()]
    scope = TenantScope(tenant_id)
    if conn.execute(
        scope.select(campaigns, campaigns.c.id).where(campaigns.c.name == name)
    ).first():
        raise Conflict(f"A campaign named {name!r} exists", f"已有名为“{name}”的活动")
    if (segment is None) == (phones is None):
        raise _bad("Name a segment or upload a list of numbers", "请选择人群或上传号码列表")
    now = clock.now()
    segment_id = None
    indexes = None
    if segment is not None:
        seg = segments.get(conn, tenant_id, segment)
        segment_id = int(seg["id"])
        if segments.count(conn, clock, tenant_id, seg["rule"]) == 0:
            raise EmptyAudience("The segment matches nobody", "该人群当前没有任何联系人")
    else:
        assert phones is not None
        numbers = sorted({p.strip() for p in phones if p and p.strip()})
        bad = [p for p in numbers if not E164.fullmatch(p)]
        if bad:
            raise _bad(
                f"{len(bad)} numbers are not E.164", f"{len(bad)} 个号码格式不正确",
                examples=[p[:4] + "…" for p in bad[:3]],
            )  # fmt: skip
        if not numbers:
            raise EmptyAudience("The list has no numbers", "号码列表为空")
        if len(numbers) > MAX_LIST:
            raise _bad(f"At most {MAX_LIST} numbers a list", f"列表最多 {MAX_LIST} 个号码")
        context = phone_context(tenant_id)
        indexes = [keyring.blind_index(p, context).hex() for p in numbers]
    if not 1 <= len(variants) <= len(VARIANT_NAMES):
        raise _bad("A campaign has 1 to 5 variants", "一个活动有 1 到 5 个版本")
    rows = []
    for i, spec in enumerate(variants):
        weight = int(spec.get("weight", 1))
        if not 1 <= weight <= 1000:
            raise _bad("A variant's weight is 1–1000", "版本权重须为 1–1000")
        rows.append(
            {
                "name": VARIANT_NAMES[i],
                "template_version_id": _version(conn, tenant_id, spec, lane),
                "weight": weight,
            }
        )
    targets = _targets(conn, tenant_id, category, variants, rows, link_url, coupon_pool_id)
    for row, (link, pool) in zip(rows, targets, strict=True):
        row["link_url"], row["coupon_pool_id"] = link, pool
    zone = tenants_service.get_tenant_by_id(conn, tenant_id).timezone
    sched = parse_schedule(schedule or {"kind": "now"}, zone=zone, now=now)
    if on_window_end not in ("carry", "expire"):
        raise _bad("on_window_end is carry or expire", "窗口结束后的处理须为 carry 或 expire")
    if rate is not None and not 0 < float(rate) <= 100_000:
        raise _bad("rate is 0–100,000 messages a second", "发送速率须为每秒 0–100,000 条")
    if route is not None:
        names = {c["name"]: c for c in channel_store.list_channels(conn)}
        if route not in names or not names[route]["enabled"]:
            raise _bad(f"No enabled channel {route!r}", f"没有可用的通道 {route!r}")
    ab_conf = _ab(ab, len(rows), sched)
    values = {
        "name": name,
        "category": category,
        "important": bool(important),
        "state": "draft",
        "segment_id": segment_id,
        "list_indexes": indexes,
        "route": route,
        "schedule": sched.as_dict(),
        "window": _window(window),
        "on_window_end": on_window_end,
        "rate": float(rate) if rate is not None else None,
        "ab": ab_conf,
        "salt": pysecrets.randbelow(abtest.MIX_PRIME - 1) + 1,
        "estimate": {},
        "counts": {},
        "created_by": actor,
        "created_at": now,
        "updated_at": now,
    }
    campaign_id = int(
        conn.execute(
            scope.insert(campaigns).values(**values).returning(campaigns.c.id)
        ).scalar_one()
    )
    scope.insert_many(conn, campaign_variants, [{**r, "campaign_id": campaign_id} for r in rows])
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="campaign.create",
        target=f"campaign:{campaign_id}",
    )  # fmt: skip
    return get(conn, tenant_id, campaign_id)


# -- estimate ------------------------------------------------------------------------------


def _channel(conn: Connection, tenant_id: int, camp: Mapping[str, Any]) -> dict[str, Any] | None:
    chans = {c["name"]: c for c in channel_store.list_channels(conn) if c["enabled"]}
    if camp.get("route") and camp["route"] in chans:
        return chans[camp["route"]]
    lane = Lane[str(camp["category"]).upper()]
    from hongyan.dispatch.routing import route_for

    route = route_for(channel_store.tenant_routes(conn, tenant_id), lane, "cmcc")
    names = [n for n in route.channels if n in chans] if route else list(chans)
    return chans[names[0]] if names else None


def _price(conn: Connection, tenant_id: int, camp: Mapping[str, Any]) -> Decimal | None:
    chan = _channel(conn, tenant_id, camp)
    if chan is None:
        return None
    price = Decimal(str(chan["price_per_part"]))
    return price if price > 0 else None


def _rate(conn: Connection, tenant_id: int, camp: Mapping[str, Any]) -> float:
    if camp.get("rate"):
        return float(camp["rate"])
    chan = _channel(conn, tenant_id, camp)
    if chan is not None and float(chan["rate"]) > 0:
        return float(chan["rate"])
    return DEFAULT_RATE


def _compiled(
    conn: Connection, tenant_id: int, category: str, version_ids: Sequence[int]
) -> dict[int, CompiledTemplate]:
    ctx = content_service.context(conn, tenant_id, category)
    v = template_versions.c
    bodies: dict[int, str] = dict(
        conn.execute(
            TenantScope(tenant_id)
            .select(template_versions, v.id, v.body)
            .where(v.id.in_(version_ids))
        ).all()
    )
    return {vid: CompiledTemplate(bodies[vid], ctx) for vid in version_ids}


def estimate(conn: Connection, clock: Clock, tenant_id: int, ref: int | str) -> dict[str, Any]:
    """Before launch: who would receive it now (the audience's verdicts, caps included), how many
    parts each variant's text takes (its lint preview: sample values), and what it would cost
    (recipients × parts × the channel's price per part)."""
    camp = get(conn, tenant_id, ref)
    with _rollback(conn):
        reach = _evaluate(conn, clock, tenant_id, camp)
    variants = camp["variants"]
    compiled = _compiled(
        conn, tenant_id, camp["category"], [v["template_version_id"] for v in variants]
    )
    weights = sum(v["weight"] for v in variants)
    recipients = reach["included"]
    price = _price(conn, tenant_id, camp)
    per_variant = []
    parts = Decimal(0)
    for v in variants:
        c = compiled[v["template_version_id"]]
        share = Decimal(v["weight"]) / weights
        p = c.lint.parts
        parts += share * p * recipients
        per_variant.append(
            {
                "variant": v["name"],
                "parts": p,
                "parts_max": c.lint.parts_max,
                "preview": c.lint.preview,
                "needs": list(extras.needed(c.keys)),
            }
        )
    total_parts = int(parts.to_integral_value())
    out = {
        "recipients": recipients,
        "excluded": {k: n for k, n in reach.items() if k not in ("included", "matched")},
        "matched": reach["matched"],
        "variants": per_variant,
        "parts": total_parts,
        "price_per_part": str(price) if price is not None else None,
        "cost": str((price * total_parts).quantize(Decimal("0.01"))) if price is not None else None,
        "rate": _rate(conn, tenant_id, camp),
        "at": clock.now().isoformat(),
    }
    return out


@contextlib.contextmanager
def _rollback(conn: Connection) -> Any:
    """Run a dry launch's statements in a savepoint, then undo them."""
    sp = conn.begin_nested()
    try:
        yield
    finally:
        sp.rollback()


# -- launching -----------------------------------------------------------------------------


def _snapshot(
    conn: Connection, clock: Clock, tenant_id: int, camp: Mapping[str, Any], actor: str
) -> tuple[int, dict[str, int]]:
    """A new audience for the campaign (segment, or the uploaded list matched to contacts)."""
    purpose = camp["category"]
    ref = f"campaign:{camp['id']}"
    if camp["segment_id"] is not None:
        aud = segments.snapshot(
            conn, clock, tenant_id, segment=int(camp["segment_id"]), purpose=purpose,
            name=str(camp["name"]), campaign_ref=ref, actor=actor,
        )  # fmt: skip
        return int(aud["id"]), dict(aud["counts"])
    scope = TenantScope(tenant_id)
    raw = conn.execute(
        scope.select(campaigns, campaigns.c.list_indexes).where(campaigns.c.id == camp["id"])
    ).scalar_one()
    indexes = [bytes.fromhex(h) for h in raw or []]
    audience_id, counts = snapshot_of(
        conn, clock, tenant_id, contacts.c.phone_index, indexes, purpose=purpose,
        name=str(camp["name"]), ref=ref, actor=actor,
    )  # fmt: skip
    counts["not_a_contact"] = len(indexes) - counts["matched"]
    conn.execute(scope.update(audiences).where(audiences.c.id == audience_id).values(counts=counts))
    return audience_id, counts


def snapshot_of(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    key: Any,
    values: Sequence[Any],
    *,
    purpose: str,
    name: str,
    ref: str,
    actor: str,
) -> tuple[int, dict[str, int]]:
    """An audience of the contacts whose ``key`` column is among ``values`` (an uploaded list's
    blind indexes, a journey step's contact ids), each with its verdict as a segment snapshot
    gives it (suppressed, no_consent, included)."""
    scope = TenantScope(tenant_id)
    schema = audience_service.load_schema(conn, tenant_id)
    ctx = audience_service.context(conn, clock, tenant_id, schema)
    audience_id = int(
        conn.execute(
            scope.insert(audiences)
            .values(
                segment_id=None, name=name[:100], purpose=purpose, campaign_ref=ref[:64],
                rule={"list": len(values)}, counts={}, created_by=actor, taken_at=ctx.now,
            )
            .returning(audiences.c.id)
        ).scalar_one()
    )  # fmt: skip
    verdict = sa.case(
        (segments.suppressed_sql(purpose, ctx), "suppressed"),
        (sa.not_(compiler.consent_sql(purpose, ctx.scope)), "no_consent"),
        else_="included",
    )
    m = audience_members.c
    for start in range(0, len(values), 5000):
        chunk = list(values[start : start + 5000])
        select = sa.select(
            sa.literal(audience_id, sa.Integer), contacts.c.id, sa.literal(tenant_id, sa.Integer),
            contacts.c.phone_index, verdict,
        ).where(contacts.c.tenant_id == tenant_id, key.in_(chunk))  # fmt: skip
        conn.execute(
            sa.insert(audience_members)
            .from_select(
                [m.audience_id, m.contact_id, m.tenant_id, m.phone_index, m.status], select
            )
            .execution_options(**{TENANT_OPTION: tenant_id})
        )
    counts = segments._counts(conn, tenant_id, audience_id)
    conn.execute(scope.update(audiences).where(audiences.c.id == audience_id).values(counts=counts))
    return audience_id, counts


def _mix_sql(salt: int) -> Any:
    p = abtest.MIX_PRIME
    return ((audience_members.c.contact_id % p) * abtest.MIX_MULTIPLIER + salt % p) % p


def _rest_filter(camp: Mapping[str, Any]) -> Any:
    """Members after the A/B test group's last one in (mix, id) order."""
    boundary = (camp.get("decision") or {}).get("boundary")
    if not boundary:
        return sa.true()
    key = _mix_sql(int(camp["salt"]))
    b_mix, b_id = int(boundary[0]), int(boundary[1])
    return sa.or_(key > b_mix, sa.and_(key == b_mix, audience_members.c.contact_id > b_id))


def _apply_caps(
    conn: Connection,
    tenant_id: int,
    audience_id: int,
    at: dt.datetime,
    important: bool,
    extra: Any,
    now: dt.datetime,
) -> dict[str, int]:
    """Mark included members over their cap (or refused by their preference); their counts."""
    policy = caps.get_policy(conn, tenant_id)
    days = caps.windows(policy)
    counts = caps.counts_sql(tenant_id, at, days)
    thresholds = audience_service.get_settings(conn, tenant_id).thresholds
    a = contact_activity
    prefs = contact_preferences
    m = audience_members.c
    verdict = caps.verdict_sql(
        m.contact_id, stage_sql(a, now, thresholds), counts, prefs, policy, important=important
    ).label("verdict")
    inner = (
        sa.select(m.contact_id, verdict)
        .select_from(
            audience_members.outerjoin(
                a, sa.and_(a.c.contact_id == m.contact_id, a.c.tenant_id == tenant_id)
            )
            .outerjoin(counts, counts.c.contact_id == m.contact_id)
            .outerjoin(
                prefs, sa.and_(prefs.c.contact_id == m.contact_id, prefs.c.tenant_id == tenant_id)
            )
        )
        .where(
            m.tenant_id == tenant_id, m.audience_id == audience_id, m.status == "included", extra
        )
        .subquery()
    )
    out = {}
    # One read of the verdicts that exclude (hash joins: the whole audience is read), then the
    # marks by key, a chunk at a time. (One UPDATE … WHERE contact_id IN (that SELECT) was
    # planned by PostgreSQL as a nested loop re-running the verdict per member: minutes for
    # 20,000 members.)
    with segments.whole_tenant(conn):
        excluded = conn.execute(
            sa.select(inner.c.contact_id, inner.c.verdict)
            .where(inner.c.verdict != "ok")
            .execution_options(**{TENANT_OPTION: tenant_id})
        ).all()
    by_reason: dict[str, list[int]] = {"over_cap": [], "preference": []}
    for contact_id, reason in excluded:
        by_reason[str(reason)].append(int(contact_id))
    am = audience_members.c
    for reason, ids in by_reason.items():
        for start in range(0, len(ids), 5000):
            conn.execute(
                TenantScope(tenant_id)
                .update(audience_members)
                .where(am.audience_id == audience_id, am.contact_id.in_(ids[start : start + 5000]))
                .values(status=reason)
            )
        out[reason] = len(ids)
    return out


def _eligible(conn: Connection, tenant_id: int, audience_id: int, extra: Any) -> list[int]:
    m = audience_members.c
    return [
        int(x)
        for x in conn.execute(
            TenantScope(tenant_id)
            .select(audience_members, m.contact_id)
            .where(m.audience_id == audience_id, m.status == "included", extra)
            .order_by(m.contact_id)
        ).scalars()
    ]


def _assign(
    ids: list[int], camp: Mapping[str, Any], phase: str
) -> tuple[list[tuple[int, str]], Any]:
    """(contact, variant) in due order, and for an A/B test phase the group's last (mix, id)."""
    variants = camp["variants"]
    salt = int(camp["salt"])
    if phase == "rest":
        winner = camp["decision"]["winner"]
        return [(c, winner) for c in ids], None
    if phase == "test":
        k = len(variants)
        split = abtest.plan_split(len(ids), k, float(camp["ab"]["share"]))
        ranked = sorted(ids, key=lambda c: (abtest.mix(c, salt), c))[: split.test_size]
        last = ranked[-1]
        order = [(c, variants[r % k]["name"]) for r, c in enumerate(ranked)]
        return order, [abtest.mix(last, salt), last]
    buckets: list[str] = []
    for v in variants:
        buckets += [v["name"]] * int(v["weight"])
    n = len(buckets)
    return [(c, buckets[abtest.mix(c, salt) % n]) for c in ids], None


def _rules(conn: Connection, tenant_id: int, camp: Mapping[str, Any]) -> tuple[ZoneInfo, Rules]:
    policy = tenants_service.policy_of(conn, tenant_id)
    zone = ZoneInfo(tenants_service.get_tenant_by_id(conn, tenant_id).timezone)
    quiet = QuietHours.parse(policy["quiet_start"], policy["quiet_end"])
    return zone, Rules(quiet, window_of(camp.get("window")))


def _evaluate(
    conn: Connection, clock: Clock, tenant_id: int, camp: Mapping[str, Any]
) -> dict[str, int]:
    """The verdicts a launch now would reach (run inside a savepoint that is rolled back)."""
    audience_id, counts = _snapshot(conn, clock, tenant_id, camp, "estimate")
    if camp["category"] == "marketing":
        zone, rules = _rules(conn, tenant_id, camp)
        rate = _rate(conn, tenant_id, camp)
        first = zones.firsts(
            set(zones.own_zones(conn, tenant_id).values()), zone.key,
            lambda z: Spread(clock.now(), rate, zone=z, rules=rules, total=1),
        )  # fmt: skip
        capped = _apply_caps(
            conn,
            tenant_id,
            audience_id,
            first,
            bool(camp["important"]),
            sa.true(),
            clock.now(),
        )
        counts.update(capped)
        counts["included"] -= sum(capped.values())
    return counts


def launch(
    conn: Connection, clock: Clock, keyring: KeyRing, tenant_id: int, ref: int | str, *, actor: str
) -> dict[str, Any]:
    """Launch a draft: now (materialised in this transaction) or, for a later or recurring
    schedule, hand it to the scheduler (``scheduled``)."""
    camp = get(conn, tenant_id, ref)
    if camp["state"] != "draft":
        raise CampaignState(
            f"Only a draft is launched (this one is {camp['state']})",
            f"只有草稿状态的活动可以启动（当前为 {camp['state']}）",
        )
    sched = _schedule(camp)
    now = clock.now()
    if sched.kind == "now":
        return launch_now(conn, clock, keyring, tenant_id, camp["id"], actor=actor)
    nxt = sched.next_run(now) if sched.kind == "recurring" else sched.at
    if nxt is None or nxt <= now:
        raise _bad("The schedule has no run ahead", "发送计划已没有未来的执行时间")
    _set(conn, tenant_id, camp["id"], state="scheduled", next_run_at=nxt, updated_at=now)
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="campaign.schedule",
        target=f"campaign:{camp['id']}", detail={"next_run_at": nxt.isoformat()},
    )  # fmt: skip
    return get(conn, tenant_id, camp["id"])


def begin_launch(
    conn: Connection, clock: Clock, keyring: KeyRing, tenant_id: int, ref: int | str, *,
    actor: str,
) -> dict[str, Any]:  # fmt: skip
    """Launch a draft as :func:`launch` does, except that a launch *now* is only marked:
    ``launching``, for :func:`hongyan.campaigns.launching.run` to materialise in the background
    once this transaction has committed (the console's path: a large audience takes minutes).
    Should that process die, the scheduler launches it once :data:`LAUNCH_LEASE` has passed."""
    camp = get(conn, tenant_id, ref)
    if camp["state"] != "draft" or _schedule(camp).kind != "now":
        return launch(conn, clock, keyring, tenant_id, camp["id"], actor=actor)
    now = clock.now()
    _set(
        conn, tenant_id, camp["id"], state="launching", next_run_at=now + LAUNCH_LEASE, counts={},
        updated_at=now,
    )  # fmt: skip
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="campaign.launching",
        target=f"campaign:{camp['id']}",
    )  # fmt: skip
    return get(conn, tenant_id, camp["id"])


def launch_failed(
    engine: Engine, clock: Clock, tenant_id: int, campaign_id: int, exc: BaseException
) -> None:
    """A background launch that failed (rolled back: nothing planned) puts the campaign back to
    ``draft`` with the error on it, for the status page; unless it was cancelled meanwhile."""
    with engine.begin() as conn:
        camp = get(conn, tenant_id, campaign_id)
        if camp["state"] != "launching":
            return
        _set(
            conn, tenant_id, campaign_id, state="draft", next_run_at=None,
            counts={"error": _error_note(exc)}, updated_at=clock.now(),
        )  # fmt: skip


def _error_note(exc: BaseException) -> dict[str, Any]:
    body = getattr(exc, "body", None)
    if callable(body):
        return dict(body())
    return {
        "code": "launch_failed",
        "message": {
            "en": "The launch stopped on an internal error; nothing was planned",
            "zh": "启动因内部错误中止，未生成任何短信",
        },
    }


def _schedule(camp: Mapping[str, Any]) -> Schedule:
    s = camp["schedule"]
    parse = dt.datetime.fromisoformat
    return Schedule(
        s["kind"],
        s["zone"],
        at=parse(s["at"]) if s.get("at") else None,
        rule=s.get("rule"),
        start=parse(s["start"]) if s.get("start") else None,
    )


def _set(conn: Connection, tenant_id: int, campaign_id: int, **values: Any) -> None:
    conn.execute(
        TenantScope(tenant_id)
        .update(campaigns)
        .where(campaigns.c.id == campaign_id)
        .values(**values)
    )


def launch_now(
    conn: Connection,
    clock: Clock,
    keyring: KeyRing,
    tenant_id: int,
    campaign_id: int,
    *,
    actor: str,
    phase: str | None = None,
    expect: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Snapshot, cap, assign and materialise one run of the campaign (see the module doc).

    ``phase``: ``test`` (an A/B campaign's first run), ``rest`` (after the decision), or
    ``full``; by default ``test`` for an A/B campaign, else ``full``. ``expect``: launch only
    if the campaign is still in that state under the lock (``launching``: another process may
    have launched it, or the marketer cancelled it); else nothing is done. ``progress`` is
    called with (messages done, total) after each batch written."""
    started = time.perf_counter()
    caps.lock_tenant(conn, tenant_id)
    camp = get(conn, tenant_id, campaign_id)  # read again under the lock
    if expect is not None and camp["state"] != expect:
        return camp
    now = clock.now()
    phase = phase or ("test" if camp["ab"] else "full")
    lane = Lane[str(camp["category"]).upper()]
    compiled = _compiled(
        conn, tenant_id, camp["category"], [v["template_version_id"] for v in camp["variants"]]
    )
    for v in camp["variants"]:
        gate.check_outbox(conn, tenant_id, lane, v["template_version_id"])  # still approved
        extras.require(compiled[v["template_version_id"]].keys)
    rate = _rate(conn, tenant_id, camp)
    if phase == "rest":
        audience_id = int(camp["decision"]["audience_id"])
        counts: dict[str, int] = {}
        extra = _rest_filter(camp)
    else:
        audience_id, counts = _snapshot(conn, clock, tenant_id, camp, actor)
        extra = sa.true()
    zone, rules = _rules(conn, tenant_id, camp)
    marketing = lane is Lane.MARKETING
    carry = camp["on_window_end"] == "carry"
    # Recipients with a zone of their own get their quiet hours and window in it.
    own = zones.own_zones(conn, tenant_id) if marketing else {}
    if marketing:
        first = zones.firsts(
            set(own.values()), zone.key,
            lambda z: Spread(now, rate, zone=z, rules=rules, carry=carry, total=1),
        )  # fmt: skip
        capped = _apply_caps(
            conn, tenant_id, audience_id, first, bool(camp["important"]), extra, now
        )
        counts.update(capped)
    ids = _eligible(conn, tenant_id, audience_id, extra)
    if not ids:
        raise EmptyAudience(details={"counts": counts})
    order, boundary = _assign(ids, camp, phase)
    if marketing:
        order, spread = zones.plan(
            order, own, zone.key, rate,
            lambda z, r, n: Spread(
                now, r, zone=z, rules=rules, carry=carry, total=n, validity=DEFAULT_VALIDITY[lane]
            ),
        )  # fmt: skip
    else:
        spread = Spread(now, rate, validity=DEFAULT_VALIDITY[lane])
    plans = {
        v["name"]: VariantPlan(
            v["name"], v["template_version_id"], compiled[v["template_version_id"]],
            v["link_url"], v["coupon_pool_id"],
        )
        for v in camp["variants"]
    }  # fmt: skip
    run_no = int(camp["runs"]) + 1
    job = Launch(
        tenant_id=tenant_id,
        lane=lane,
        source="ab_test" if phase == "test" else "campaign",
        source_ref=f"run:{run_no}:{phase}",
        campaign_id=camp["id"],
        variants=plans,
        now=now,
        spread=spread,
        progress=progress,
    )
    write(conn, keyring, job, order)
    if job.written == 0:
        raise EmptyAudience(details={"counts": {**counts, **job.counts}})
    result = {
        "planned": job.written,
        "by_variant": dict(job.planned),
        "parts": sum(job.parts.values()),
        **{k: int(v) for k, v in counts.items() if k not in ("included",)},
        **dict(job.counts),
        "first_due": spread.first.isoformat(),
    }
    if phase == "test":
        result["waiting_for_winner"] = len(ids) - len(order)
    seconds = round(time.perf_counter() - started, 3)
    TenantScope(tenant_id).insert_many(
        conn,
        campaign_runs,
        [{"campaign_id": camp["id"], "run_no": run_no, "phase": phase, "audience_id": audience_id,
          "counts": result, "seconds": seconds, "started_at": now}],
    )  # fmt: skip
    # A decision goes back to the state it was made in: a paused campaign stays paused, the
    # rest held with the test's messages.
    state = "running"
    if camp["state"] == "deciding":
        state = str((camp["decision"] or {}).get("prior_state") or "running")
        if state == "paused":
            _move_messages(conn, tenant_id, camp["id"], [State.PLANNED], State.HELD)
    values: dict[str, Any] = {
        "state": state, "counts": result, "runs": run_no, "phase": phase,
        "launched_at": camp["launched_at"] or now, "updated_at": now, "next_run_at": None,
    }  # fmt: skip
    if phase == "test":
        values["next_run_at"] = now + dt.timedelta(hours=float(camp["ab"]["wait_hours"]))
        values["decision"] = {"audience_id": audience_id, "boundary": boundary}
    sched = _schedule(camp)
    if sched.kind == "recurring":
        values["next_run_at"] = sched.next_run(now)
    # Compare-and-set: a campaign cancelled while it was launching or deciding (the cancel does
    # not wait for the cap lock) rolls this launch back rather than coming back to life.
    moved = conn.execute(
        TenantScope(tenant_id)
        .update(campaigns)
        .where(campaigns.c.id == camp["id"], campaigns.c.state == camp["state"])
        .values(**values)
    )
    if moved.rowcount != 1:
        raise CampaignState(
            "The campaign changed while it was launching (cancelled?); nothing was planned",
            "启动期间活动状态已改变（已取消？），未生成任何短信",
        )
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="campaign.launch",
        target=f"campaign:{camp['id']}", detail={"phase": phase, "planned": job.written},
    )  # fmt: skip
    return get(conn, tenant_id, camp["id"])


# -- pause, resume, cancel -------------------------------------------------------------------


def _move_messages(
    conn: Connection,
    tenant_id: int,
    campaign_id: int,
    from_: Sequence[State],
    to: State,
    **extra: Any,
) -> int:
    m = messages.c
    result = conn.execute(
        TenantScope(tenant_id)
        .update(messages)
        .where(m.campaign_id == campaign_id, m.state.in_([s.value for s in from_]))
        .values(state=to.value, **extra)
    )
    return int(result.rowcount)


def pause(
    conn: Connection, clock: Clock, tenant_id: int, ref: int | str, *, actor: str
) -> dict[str, Any]:
    camp = get(conn, tenant_id, ref)
    if camp["state"] != "running":
        raise CampaignState("Only a running campaign is paused", "只有进行中的活动可以暂停")
    held = _move_messages(conn, tenant_id, camp["id"], [State.PLANNED], State.HELD)
    _set(conn, tenant_id, camp["id"], state="paused", updated_at=clock.now())
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="campaign.pause",
        target=f"campaign:{camp['id']}", detail={"held": held},
    )  # fmt: skip
    return {**get(conn, tenant_id, camp["id"]), "moved": held}


def resume(
    conn: Connection, clock: Clock, tenant_id: int, ref: int | str, *, actor: str
) -> dict[str, Any]:
    """Held messages are planned again; those whose due time passed while paused go as soon as
    the rules allow, still within their validity (an expiring window's end stays the end)."""
    camp = get(conn, tenant_id, ref)
    if camp["state"] != "paused":
        raise CampaignState("Only a paused campaign is resumed", "只有已暂停的活动可以恢复")
    now = clock.now()
    extra: dict[str, Any] = {}
    if camp["on_window_end"] == "carry":
        floor = now + DEFAULT_VALIDITY[Lane[str(camp["category"]).upper()]]
        extra["expires_at"] = sa.case(
            (messages.c.expires_at < floor, floor), else_=messages.c.expires_at
        )
    moved = _move_messages(conn, tenant_id, camp["id"], [State.HELD], State.PLANNED, **extra)
    _set(conn, tenant_id, camp["id"], state="running", updated_at=now)
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="campaign.resume",
        target=f"campaign:{camp['id']}", detail={"planned": moved},
    )  # fmt: skip
    return {**get(conn, tenant_id, camp["id"]), "moved": moved}


def cancel(
    conn: Connection, clock: Clock, tenant_id: int, ref: int | str, *, actor: str
) -> dict[str, Any]:
    camp = get(conn, tenant_id, ref)
    if camp["state"] in ("completed", "cancelled"):
        raise CampaignState(
            f"The campaign is already {camp['state']}",
            f"该活动已{'完成' if camp['state'] == 'completed' else '取消'}",
        )
    now = clock.now()
    # The campaign's row first: on PostgreSQL this waits for a launch or decision that has
    # already moved the row (it commits first), and the messages below are then read after it,
    # so its messages are cancelled too; one that has not yet moved the row finds it cancelled
    # and rolls back.
    _set(
        conn,
        tenant_id,
        camp["id"],
        state="cancelled",
        next_run_at=None,
        finished_at=now,
        updated_at=now,
    )
    moved = _move_messages(
        conn, tenant_id, camp["id"], [State.PLANNED, State.HELD], State.CANCELLED, done_at=now
    )
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="campaign.cancel",
        target=f"campaign:{camp['id']}", detail={"cancelled": moved},
    )  # fmt: skip
    return {**get(conn, tenant_id, camp["id"]), "moved": moved}


# -- A/B decision ----------------------------------------------------------------------------


class DecisionUnderWay(CampaignState):
    message_zh = "该活动的 A/B 决定正在执行，请稍候"
    message_en = "The A/B decision of this campaign is already being carried out"


def _evidence(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    camp: Mapping[str, Any],
    winner: str | None,
    actor: str,
) -> dict[str, Any]:
    """The test on the chosen metric, and the winner: the marketer's choice, else the test's."""
    conf = camp["ab"]
    source = _METRICS.get(conf["metric"])
    if source is None:
        raise _bad(
            f"No data source for {conf['metric']} yet (tracking is not connected)",
            f"指标 {conf['metric']} 暂无数据来源（尚未接入跟踪）",
        )
    if winner is not None and winner not in {v["name"] for v in camp["variants"]}:
        raise _bad(f"No variant {winner!r}", f"没有版本 {winner!r}")
    data = source(conn, tenant_id, camp["id"])
    results = [
        abtest.VariantResult(
            v["name"], data.get(v["name"], (0, 0))[1], data.get(v["name"], (0, 0))[0]
        )
        for v in camp["variants"]
    ]
    # A reply rate is a proportion like the delivery rate: the same test.
    metric: abtest.Metric = "delivery_rate" if conf["metric"] == "reply_rate" else conf["metric"]
    decision = abtest.decide(
        results, metric, conf["method"], conf["confidence"], min_trials=conf["min_trials"]
    )
    chosen = winner or decision.winner
    before = {k: v for k, v in (camp["decision"] or {}).items() if k != "error"}
    return {
        **before,
        "metric": conf["metric"],
        "method": decision.method,
        "confidence": decision.confidence,
        "reason": {"en": decision.reason, "zh": decision.reason_zh},
        "estimates": [
            {"variant": e.name, "value": e.value, "low": e.low, "high": e.high, "trials": e.trials}
            for e in decision.estimates
        ],
        "suggested": decision.winner,
        "winner": chosen,
        "chosen_by": actor if winner else ("test" if chosen else None),
        "decided_at": clock.now().isoformat() if chosen else None,
    }


def begin_decide(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    ref: int | str,
    *,
    winner: str | None = None,
    actor: str,
) -> dict[str, Any]:
    """Decide an A/B test: by the stated test on the chosen metric, or the marketer's choice
    (``winner``). The decision and its evidence are recorded on the campaign either way; with a
    winner the campaign is marked ``deciding`` (a lease of :data:`LAUNCH_LEASE` in
    ``next_run_at``, the state it was in kept as ``decision.prior_state``) for
    :func:`decide_now` to send the rest the winner once this transaction has committed (in the
    background: :mod:`hongyan.campaigns.launching`). Without one it keeps waiting.

    Both writes are a compare-and-set on the state and the phase, so of two decisions at the
    same moment (two marketers, the marketer and the scheduler) one wins and the other gets
    :class:`DecisionUnderWay`: the rest is never materialised twice."""
    camp = get(conn, tenant_id, ref)
    if camp["state"] == "deciding":
        raise DecisionUnderWay()
    if not camp["ab"] or camp["phase"] != "test" or camp["state"] not in ("running", "paused"):
        raise CampaignState("No A/B test is waiting for a decision", "没有等待决定的 A/B 测试")
    evidence = _evidence(conn, clock, tenant_id, camp, winner, actor)
    now = clock.now()
    values: dict[str, Any] = {"decision": evidence, "next_run_at": None, "updated_at": now}
    if evidence["winner"] is not None:
        values.update(
            state="deciding",
            next_run_at=now + LAUNCH_LEASE,
            decision={**evidence, "prior_state": camp["state"]},
        )
    c = campaigns.c
    moved = conn.execute(
        TenantScope(tenant_id)
        .update(campaigns)
        .where(c.id == camp["id"], c.state == camp["state"], c.phase == "test")
        .values(**values)
    )
    if moved.rowcount != 1:
        # Someone moved the campaign meanwhile: another decision, or a pause, resume or cancel.
        now_state = get(conn, tenant_id, camp["id"])["state"]
        if now_state == "deciding" or now_state == camp["state"]:
            raise DecisionUnderWay()
        raise CampaignState(
            f"The campaign changed while deciding (it is now {now_state}); look and decide again",
            f"决定期间活动状态已变为 {now_state}，请刷新后重新决定",
        )
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="campaign.decide",
        target=f"campaign:{camp['id']}",
        detail={"winner": evidence["winner"], "suggested": evidence["suggested"]},
    )  # fmt: skip
    return get(conn, tenant_id, camp["id"])


def decide_now(
    conn: Connection,
    clock: Clock,
    keyring: KeyRing,
    tenant_id: int,
    campaign_id: int,
    *,
    actor: str,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Send the rest of a ``deciding`` campaign's audience the winner: the members after the test
    group in the same snapshot, caps checked again, in this transaction (:func:`launch_now`,
    phase ``rest``). The campaign goes back to the state it was decided in (a paused one stays
    paused, its new messages held). Only if it is still ``deciding`` under the tenant's cap
    lock: a second runner finds it done, a cancelled one is left alone; and the final
    compare-and-set rolls everything back if it was cancelled meanwhile."""
    return launch_now(
        conn, clock, keyring, tenant_id, campaign_id, actor=actor, phase="rest",
        expect="deciding", progress=progress,
    )  # fmt: skip


def decide_failed(
    engine: Engine, clock: Clock, tenant_id: int, campaign_id: int, exc: BaseException
) -> None:
    """A decision whose rest could not be materialised (rolled back: nothing planned) leaves the
    A/B test waiting for a decision again, in the state it was in, with the error on the
    decision (``decision.error``, the winner tried in ``decision.tried``); unless the campaign
    was cancelled meanwhile."""
    with engine.begin() as conn:
        camp = get(conn, tenant_id, campaign_id)
        if camp["state"] != "deciding":
            return
        decision = dict(camp["decision"] or {})
        prior = str(decision.pop("prior_state", None) or "running")
        decision.update(
            tried=decision.get("winner"), winner=None, chosen_by=None, decided_at=None,
            error=_error_note(exc),
        )  # fmt: skip
        _set(
            conn, tenant_id, campaign_id, state=prior, decision=decision, next_run_at=None,
            updated_at=clock.now(),
        )  # fmt: skip


# -- the scheduler ---------------------------------------------------------------------------


def _due(engine: Engine, clock: Clock) -> list[tuple[int, int, str, str | None]]:
    c = campaigns.c
    now = clock.now()
    with engine.connect() as conn:
        rows = conn.execute(
            unscoped(
                sa.select(c.tenant_id, c.id, c.state, c.phase)
                .where(
                    c.state.in_(("scheduled", "running", "launching", "deciding")),
                    c.next_run_at <= now,
                )
                .order_by(c.next_run_at),
                "the scheduler launches every tenant's due campaigns",
            )
        ).all()
        running = conn.execute(
            unscoped(
                sa.select(c.tenant_id, c.id, c.state, c.phase).where(
                    c.state == "running", c.next_run_at.is_(None)
                ),
                "the scheduler completes every tenant's finished campaigns",
            )
        ).all()
    return [(int(t), int(i), str(s), p) for t, i, s, p in [*rows, *running]]


def tick(engine: Engine, clock: Clock, keyring: KeyRing) -> dict[str, int]:
    """One pass: launch due campaigns (scheduled, recurring runs), decide A/B tests whose wait
    is over, complete running campaigns with nothing left to send, and finish console launches
    and decisions whose process died (their lease ran out). Each in its own transaction; one
    that fails is logged and left as it was (a due one is tried again next pass).

    A decision is the marketer's path too: recorded (:func:`begin_decide`), then the rest sent
    the winner by :func:`hongyan.campaigns.launching.run` after that commit; a failure there
    leaves the test waiting for the marketer with the error."""
    from hongyan.campaigns import launching

    done: Counter[str] = Counter()
    now = clock.now()
    for tenant_id, campaign_id, state, _phase in _due(engine, clock):
        # background work to run once the transaction has committed
        then: Literal["launch", "decide"] | None = None
        try:
            with engine.begin() as conn:
                camp = get(conn, tenant_id, campaign_id)
                if camp["state"] != state:
                    continue
                nxt = camp["next_run_at"]
                if nxt is not None and nxt <= now:
                    if camp["phase"] == "test" and state == "running":
                        marked = begin_decide(
                            conn, clock, tenant_id, campaign_id, actor="scheduler"
                        )
                        if marked["state"] == "deciding":
                            then = "decide"
                        else:
                            done["decided"] += 1  # no winner: waits for the marketer
                    elif state in ("launching", "deciding"):
                        # a console launch or decision whose process did not finish it in time
                        then = "launch" if state == "launching" else "decide"
                    else:
                        launch_now(conn, clock, keyring, tenant_id, campaign_id, actor="scheduler")
                        done["launched"] += 1
                elif nxt is None and state == "running" and _finished(conn, tenant_id, campaign_id):
                    if camp["phase"] == "test":
                        continue  # waiting for the marketer's choice
                    _set(
                        conn,
                        tenant_id,
                        campaign_id,
                        state="completed",
                        finished_at=now,
                        updated_at=now,
                    )
                    done["completed"] += 1
        except DecisionUnderWay:
            continue  # the marketer decided at the same moment: theirs runs
        except Exception as exc:
            log.warning("campaign %s of tenant %s: %s", campaign_id, tenant_id, exc)
            done["failed"] += 1
            _note_failure(engine, clock, tenant_id, campaign_id, exc)
            continue
        if then is None or launching.busy(tenant_id, campaign_id):
            continue  # nothing to run, or this process is still running it
        try:  # one campaign's failure must not end the pass for the others
            ran = launching.run(
                engine, clock, keyring, tenant_id, campaign_id, actor="scheduler", kind=then
            )
        except Exception as exc:
            log.warning("campaign %s of tenant %s: %s", campaign_id, tenant_id, exc)
            done["failed"] += 1
            continue
        done[("launched" if then == "launch" else "decided") if ran else "failed"] += 1
    return dict(done)


def _note_failure(
    engine: Engine, clock: Clock, tenant_id: int, campaign_id: int, exc: Exception
) -> None:
    """A scheduled run that cannot launch (an empty audience, a template withdrawn): recorded on
    the campaign; a one-off schedule is cancelled, a recurring one waits for its next run."""
    with engine.begin() as conn:
        camp = get(conn, tenant_id, campaign_id)
        error = getattr(exc, "body", None)
        note = error() if callable(error) else {"code": "error", "message": {"en": str(exc)}}
        sched = _schedule(camp)
        now = clock.now()
        nxt = sched.next_run(now) if sched.kind == "recurring" else None
        values: dict[str, Any] = {
            "counts": {**(camp["counts"] or {}), "error": note},
            "updated_at": now,
        }
        if camp["state"] == "deciding":
            return  # its runner records a failure (decide_failed); the lease stays for a retry
        if camp["state"] == "launching":
            values.update(state="draft", next_run_at=None, counts={"error": _error_note(exc)})
        elif camp["phase"] == "test":
            values["next_run_at"] = None  # the marketer decides
        elif nxt is not None:
            values["next_run_at"] = nxt
        elif camp["state"] == "scheduled":
            values.update(state="cancelled", next_run_at=None, finished_at=now)
        else:
            values["next_run_at"] = None
        _set(conn, tenant_id, campaign_id, **values)


def _finished(conn: Connection, tenant_id: int, campaign_id: int) -> bool:
    m = messages.c
    waiting = conn.execute(
        TenantScope(tenant_id)
        .select(messages, m.id)
        .where(
            m.campaign_id == campaign_id,
            m.state.in_((State.PLANNED.value, State.SENDING.value, State.HELD.value)),
        )
        .limit(1)
    ).first()
    return waiting is None


async def run_schedule(
    engine: Engine, clock: Clock, keyring: KeyRing, stop: asyncio.Event, every: float = 30.0
) -> None:
    """Run :func:`tick` and the journeys' tick until ``stop`` is set (beside the dispatcher,
    in a worker thread)."""
    from hongyan.campaigns import journeys

    while not stop.is_set():
        try:
            done = await asyncio.to_thread(tick, engine, clock, keyring)
            if done:
                log.info("campaigns: %s", done)
            moved = await asyncio.to_thread(journeys.tick, engine, clock, keyring)
            if moved:
                log.info("journeys: %s", moved)
        except Exception:
            log.exception("campaign scheduler failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)


__all__ = [
    "PRESETS",
    "begin_decide",
    "begin_launch",
    "cancel",
    "create",
    "decide_failed",
    "decide_now",
    "estimate",
    "get",
    "launch",
    "launch_failed",
    "launch_now",
    "list_campaigns",
    "pause",
    "register_metric",
    "resume",
    "status",
    "tick",
]


def copy_choices(
    conn: Connection, tenant_id: int, category: str = "marketing"
) -> list[dict[str, Any]]:
    """The tenant's templates that can be sent now (a live approved version), each with its
    lint: the preview, the count and parts, the findings (the wizard's copy step)."""
    from hongyan.content import templates as content_templates

    ctx = content_service.context(conn, tenant_id, category)
    out = []
    for t in content_templates.listing(conn, tenant_id, category=category):
        if not t["live_version_id"]:
            continue
        live = sendable(conn, tenant_id, int(t["id"]))
        compiled = CompiledTemplate(live.body, ctx)
        out.append(
            {
                "template_id": int(t["id"]),
                "name": t["name"],
                "version_id": live.version_id,
                "version": live.version,
                "body": live.body,
                "needs": list(extras.needed(compiled.keys)),
                "lint": compiled.lint.as_dict(),
            }
        )
    return out


# The platform's own tracking supplies {link} / {coupon} values and the click and conversion
# rates (last, so that everything it registers with is defined).
from hongyan.tracking.wiring import connect as _connect_tracking  # noqa: E402

_connect_tracking()
