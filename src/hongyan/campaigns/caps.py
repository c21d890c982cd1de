"""Frequency caps: how many marketing messages a contact may get, and who is over (pure rules,
their SQL, and the tenant's policy).

**Policy.** Per lifecycle stage (:mod:`hongyan.audience.scoring`), at most ``count`` marketing
messages in any ``days`` days; the defaults follow the domain: ``new`` 1 a week (a contact is new
during its first month), ``dormant`` and ``lost`` 1 a quarter, everyone else ("mature") 3 a
month. A tenant changes them (``frequency_policies``).

**Preference.** The contact's own choice from the preference page: ``weekly`` (1 in 7 days),
``monthly`` (1 in 30 days), ``important`` (only campaigns marked important, under the policy's
cap), ``none`` (no marketing). Both limits apply, so the stricter one wins.

**What counts.** A contact's marketing messages (lane 2) that name the contact (campaigns and
journeys do; an API send names none) and are not cancelled, whose due time is after
``at − days``, where ``at`` is the new message's planned time: messages already sent in the
window and messages planned for later (another campaign's, due next week) both count. So the
count is conservative: a message planned after ``at + days`` also counts, and a message that
later fails still counts. Counting happens while the tenant's launch lock is held
(:func:`lock_tenant`), so two launches at once cannot both spend a contact's last allowance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contact_preferences, frequency_policies, messages
from hongyan.db.types import UTCDateTime
from hongyan.dispatch.states import Lane, State
from hongyan.errors import ValidationFailed

STAGES = ("new", "active", "lapsing", "dormant", "lost", "potential", "none")
DEFAULT_LIMITS: dict[str, tuple[int, int]] = {
    "new": (1, 7),
    "dormant": (1, 90),
    "lost": (1, 90),
    "default": (3, 30),
}
PREFERENCES: dict[str, tuple[int, int] | None] = {
    "weekly": (1, 7),
    "monthly": (1, 30),
    "important": None,  # only important campaigns, under the policy's cap
    "none": (0, 1),
}
PREFERENCE_NAMES = {
    "weekly": ("每周最多一条", "At most one a week"),
    "monthly": ("每月最多一条", "At most one a month"),
    "important": ("仅重要消息", "Only important messages"),
    "none": ("不接收营销短信", "No marketing messages"),
}
LOCK_CLASS = 7007  # pg_advisory_xact_lock(class, tenant): launches and journey sends


class CapPolicyInvalid(ValidationFailed):
    code = "frequency_cap_invalid"


@dataclass(frozen=True)
class Policy:
    limits: Mapping[str, tuple[int, int]]

    def limit(self, stage: str) -> tuple[int, int]:
        return self.limits.get(stage) or self.limits["default"]

    def as_json(self) -> dict[str, list[int]]:
        return {k: [n, d] for k, (n, d) in self.limits.items()}


def parse_limits(raw: Mapping[str, Any]) -> Policy:
    out: dict[str, tuple[int, int]] = dict(DEFAULT_LIMITS)
    for stage, value in raw.items():
        if stage not in (*STAGES, "default"):
            raise CapPolicyInvalid(
                f"Unknown lifecycle stage {stage!r}", f"未知的生命周期阶段 {stage!r}"
            )
        try:
            n, d = (int(value[0]), int(value[1]))
        except (TypeError, ValueError, IndexError, KeyError):
            raise CapPolicyInvalid(
                f"{stage}: a cap is [messages, days]", f"{stage}：频次上限格式为 [条数, 天数]"
            ) from None
        if not (0 <= n <= 1000 and 1 <= d <= 366):
            raise CapPolicyInvalid(
                f"{stage}: 0–1000 messages in 1–366 days", f"{stage}：须为 1–366 天内 0–1000 条"
            )
        out[stage] = (n, d)
    return Policy(out)


def allowed(
    stage: str,
    preference: str | None,
    counts: Mapping[int, int],
    policy: Policy,
    *,
    important: bool = False,
) -> bool:
    """Whether one more marketing message fits: ``counts[days]`` is how many count in the last
    ``days`` days (see the module doc). The reference the SQL below is tested against."""
    n, d = policy.limit(stage)
    if counts.get(d, 0) >= n:
        return False
    if preference is None:
        return True
    if preference == "important":
        return important
    pref = PREFERENCES[preference]
    assert pref is not None
    return counts.get(pref[1], 0) < pref[0]


def windows(policy: Policy) -> list[int]:
    """Every window length (days) the policy and the preferences need counted."""
    days = {d for _, d in policy.limits.values()}
    days |= {p[1] for p in PREFERENCES.values() if p is not None}
    return sorted(days)


# -- the tenant's policy ---------------------------------------------------------------------


def get_policy(conn: Connection, tenant_id: int) -> Policy:
    row = conn.execute(
        TenantScope(tenant_id).select(frequency_policies, frequency_policies.c.limits)
    ).first()
    return parse_limits(row.limits if row else {})


def set_policy(conn: Connection, clock: Clock, tenant_id: int, limits: Mapping[str, Any]) -> Policy:
    policy = parse_limits(limits)
    scope = TenantScope(tenant_id)
    values = {"limits": policy.as_json(), "updated_at": clock.now()}
    conn.execute(
        scope.dialect_insert(conn, frequency_policies)
        .values(tenant_id=tenant_id, **values)
        .on_conflict_do_update(index_elements=["tenant_id"], set_=values)
    )
    return policy


# -- SQL -----------------------------------------------------------------------------------


def lock_tenant(conn: Connection, tenant_id: int) -> None:
    """Serialise everything that spends caps for a tenant until the transaction ends.

    PostgreSQL: a transaction-level advisory lock, taken before any count is read (each
    statement under READ COMMITTED then sees the other launch's committed messages). SQLite has
    one writer, and ``engine.begin()`` begins IMMEDIATE (hongyan.db.engine): a writing
    transaction holds the write lock from its first statement."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_CLASS, tenant_id)))


def try_lock_tenant(conn: Connection, tenant_id: int) -> bool:
    """:func:`lock_tenant` if it is free now (False if another transaction holds it: a launch
    in progress), for work that may as well wait for the next scheduler pass."""
    if conn.dialect.name == "postgresql":
        return bool(
            conn.execute(
                sa.select(sa.func.pg_try_advisory_xact_lock(LOCK_CLASS, tenant_id))
            ).scalar_one()
        )
    return True


def counts_sql(tenant_id: int, at: datetime, days: list[int]) -> sa.Subquery:
    """Per contact, how many marketing messages count in each window (``c<days>`` columns)."""
    m = messages.c
    first = at - timedelta(days=max(days))
    cols = [
        sa.func.sum(
            sa.case((m.due_at > sa.literal(at - timedelta(days=d), UTCDateTime()), 1), else_=0)
        ).label(f"c{d}")
        for d in days
    ]
    return (
        sa.select(m.contact_id, *cols)
        .where(
            m.tenant_id == tenant_id,
            m.lane == int(Lane.MARKETING),
            m.contact_id.is_not(None),
            m.due_at > sa.literal(first, UTCDateTime()),
            m.state != State.CANCELLED.value,
        )
        .group_by(m.contact_id)
        .subquery("capcounts")
    )


def verdict_sql(
    contact_id: Any,
    stage: Any,
    counts: sa.Subquery,
    prefs: Any,
    policy: Policy,
    *,
    important: bool,
) -> sa.ColumnElement[str]:
    """``'ok'``, ``'preference'`` (the contact asked for none, or only important ones) or
    ``'over_cap'`` for one contact, given its stage and the counts joined on ``contact_id``."""

    def count(days: int) -> Any:
        return sa.func.coalesce(counts.c[f"c{days}"], 0)

    stage_limits = [(stage == s, count(policy.limit(s)[1]) >= policy.limit(s)[0]) for s in STAGES]
    n, d = policy.limits["default"]
    over_policy = sa.case(*((cond, full) for cond, full in stage_limits), else_=count(d) >= n)
    pref = prefs.c.frequency
    pref_over = sa.or_(
        *(
            sa.and_(pref == name, count(p[1]) >= p[0])
            for name, p in PREFERENCES.items()
            if p is not None and name != "none"
        )
    )
    refuses = pref == "none" if important else pref.in_(("none", "important"))
    return sa.case(
        (refuses, "preference"),
        (sa.or_(over_policy, pref_over), "over_cap"),
        else_="ok",
    )


def set_preference(
    conn: Connection, clock: Clock, tenant_id: int, contact_id: int, frequency: str, source: str
) -> None:
    if frequency not in PREFERENCES:
        raise ValidationFailed(
            f"Preference is one of {', '.join(PREFERENCES)}",
            f"偏好须为 {'、'.join(PREFERENCES)} 之一",
        )
    scope = TenantScope(tenant_id)
    values = {"frequency": frequency, "source": source, "updated_at": clock.now()}
    conn.execute(
        scope.dialect_insert(conn, contact_preferences)
        .values(tenant_id=tenant_id, contact_id=contact_id, **values)
        .on_conflict_do_update(index_elements=["contact_id"], set_=values)
    )


def preference_of(conn: Connection, tenant_id: int, contact_id: int) -> str | None:
    p = contact_preferences.c
    return conn.execute(
        TenantScope(tenant_id)
        .select(contact_preferences, p.frequency)
        .where(p.contact_id == contact_id)
    ).scalar_one_or_none()
