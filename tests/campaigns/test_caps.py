"""Frequency caps: the pure rule, random campaigns that never push a contact over its cap, and
two launches at the same instant on PostgreSQL that cannot both spend a last allowance."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from hongyan.campaigns import caps
from hongyan.campaigns import service as campaigns
from hongyan.clock import FixedClock
from hongyan.db.scope import unscoped
from hongyan.db.tables import messages
from hongyan.errors import ValidationFailed
from hongyan.runtime import Runtime
from tests.campaigns.support import make_shop

POLICY = caps.parse_limits({})


@given(
    st.sampled_from(caps.STAGES),
    st.sampled_from([None, *caps.PREFERENCES]),
    st.dictionaries(st.sampled_from([7, 30, 90]), st.integers(0, 5)),
    st.booleans(),
)
def test_the_stricter_limit_wins(
    stage: str, pref: str | None, raw: dict[int, int], important: bool
) -> None:
    # counts are cumulative: a longer window holds at least what a shorter one does
    counts = {7: raw.get(7, 0)}
    counts[30] = counts[7] + raw.get(30, 0)
    counts[90] = counts[30] + raw.get(90, 0)
    ok = caps.allowed(stage, pref, counts, POLICY, important=important)
    n, d = POLICY.limit(stage)
    if ok:
        assert counts[d] < n  # never past the policy
        assert pref != "none"
        if pref == "weekly":
            assert counts[7] == 0
        if pref == "monthly":
            assert counts[30] == 0
        if pref == "important":
            assert important
    elif pref is None:
        assert counts[d] >= n


def test_defaults_follow_the_domain() -> None:
    assert POLICY.limit("new") == (1, 7)
    assert POLICY.limit("active") == (3, 30)
    assert POLICY.limit("dormant") == (1, 90)
    with pytest.raises(ValidationFailed):
        caps.parse_limits({"vip": [1, 7]})
    with pytest.raises(ValidationFailed):
        caps.parse_limits({"new": [1, 0]})


def _marketing(runtime: Runtime) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(
            conn.execute(
                unscoped(
                    sa.select(messages.c.contact_id, messages.c.due_at).where(
                        messages.c.lane == 2, messages.c.state != "cancelled"
                    ),
                    "test",
                )
            )
        )


def test_random_campaigns_never_exceed_a_cap(runtime: Runtime) -> None:
    """Campaigns of random audiences at random times, some cancelled, under a random policy:
    for every contact, no window of the policy's length ever holds more than its limit."""
    rng = random.Random(20261111)
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    shop = make_shop(runtime, 30, opted_out=0, without_consent=0)
    limit = (rng.randint(1, 3), rng.choice([7, 14, 30]))
    with runtime.engine.begin() as conn:
        caps.set_policy(conn, clock, shop.tenant_id, {"default": list(limit)})
    start = clock.now()
    for i in range(8):
        clock.set(start + timedelta(days=rng.uniform(0, 40), hours=0))
        clock.set(clock.now().replace(hour=rng.choice([2, 5, 8])))  # 10:00, 13:00, 16:00 local
        picked = rng.sample(shop.phones, rng.randint(5, 30))
        try:
            with runtime.engine.begin() as conn:
                camp = campaigns.create(
                    conn, clock, runtime.keyring, shop.tenant_id, name=f"c{i}", phones=picked,
                    variants=[{"template_version_id": shop.versions[i % 3]}], actor="t",
                )  # fmt: skip
                campaigns.launch(
                    conn, clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
                )
        except campaigns.EmptyAudience:
            continue
        if rng.random() < 0.2:
            with runtime.engine.begin() as conn:
                campaigns.cancel(conn, clock, shop.tenant_id, camp["id"], actor="t")
    by_contact: dict[int, list[datetime]] = defaultdict(list)
    for contact_id, due in _marketing(runtime):
        by_contact[contact_id].append(due)
    assert by_contact, "some messages were planned"
    n, days = limit
    for dues in by_contact.values():
        dues.sort()
        for j, due in enumerate(dues):
            inside = [d for d in dues[: j + 1] if d > due - timedelta(days=days)]
            assert len(inside) <= n


def test_two_launches_at_once_cannot_both_spend_the_last_allowance(runtime: Runtime) -> None:
    """On PostgreSQL the two transactions run at once and meet at the tenant's advisory lock;
    on SQLite at the write lock (BEGIN IMMEDIATE)."""
    clock = runtime.clock
    shop = make_shop(runtime, 30, opted_out=0, without_consent=0)
    with runtime.engine.begin() as conn:
        caps.set_policy(conn, clock, shop.tenant_id, {"default": [1, 30], "none": [1, 30]})
        ids = []
        for i in range(2):
            camp = campaigns.create(
                conn, clock, runtime.keyring, shop.tenant_id, name=f"c{i}", segment=shop.segment_id,
                variants=[{"template_version_id": shop.versions[i]}], actor="t",
            )  # fmt: skip
            ids.append(camp["id"])
    barrier = threading.Barrier(2)
    outcome: dict[int, Any] = {}

    def go(campaign_id: int) -> None:
        try:
            barrier.wait(timeout=10)
            with runtime.engine.begin() as conn:
                outcome[campaign_id] = campaigns.launch(
                    conn, clock, runtime.keyring, shop.tenant_id, campaign_id, actor="t"
                )["counts"]
        except campaigns.EmptyAudience as exc:
            outcome[campaign_id] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    rows = _marketing(runtime)
    per_contact: dict[int, int] = defaultdict(int)
    for contact_id, _due in rows:
        per_contact[contact_id] += 1
    assert len(per_contact) == 30 and set(per_contact.values()) == {1}
    # one launch planned everyone; the other found everyone over the cap
    planned = [o for o in outcome.values() if isinstance(o, dict)]
    refused = [o for o in outcome.values() if isinstance(o, campaigns.EmptyAudience)]
    assert len(planned) == 1 and planned[0]["planned"] == 30 and len(refused) == 1


def test_counts_include_messages_planned_for_later(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    shop = make_shop(runtime, 5, opted_out=0, without_consent=0)
    with runtime.engine.begin() as conn:
        caps.set_policy(conn, clock, shop.tenant_id, {"default": [1, 7]})
        later = campaigns.create(
            conn, clock, runtime.keyring, shop.tenant_id, name="later", segment=shop.segment_id,
            variants=[{"template_version_id": shop.versions[0]}], actor="t",
            schedule={"kind": "at", "at": "2026-11-14T10:00:00"},
        )  # fmt: skip
        campaigns.launch(conn, clock, runtime.keyring, shop.tenant_id, later["id"], actor="t")
    clock.set(datetime(2026, 11, 14, 2, 0, tzinfo=UTC))
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {"launched": 1}
    clock.set(datetime(2026, 11, 12, 2, 0, tzinfo=UTC))  # an earlier launch, after the fact
    with runtime.engine.begin() as conn:
        now = campaigns.create(
            conn, clock, runtime.keyring, shop.tenant_id, name="now", segment=shop.segment_id,
            variants=[{"template_version_id": shop.versions[1]}], actor="t",
        )  # fmt: skip
        with pytest.raises(campaigns.EmptyAudience):
            campaigns.launch(conn, clock, runtime.keyring, shop.tenant_id, now["id"], actor="t")


def test_marketing_sent_through_the_api_counts(runtime: Runtime) -> None:
    """POST /api/v1/messages with a marketing template to a contact's number names the contact,
    so a campaign launched after it finds that contact's allowance spent."""
    from fastapi.testclient import TestClient

    from hongyan.api.app import create_app
    from hongyan.security import apikeys
    from hongyan.security.roles import Role

    shop = make_shop(runtime, 6, opted_out=0, without_consent=0)
    with runtime.engine.begin() as conn:
        caps.set_policy(conn, runtime.clock, shop.tenant_id, {"default": [1, 30], "new": [1, 30]})
        key = apikeys.create(conn, runtime.clock, shop.tenant_id, "k", Role.OPERATOR).key
        template_id = next(
            c["template_id"]
            for c in campaigns.copy_choices(conn, shop.tenant_id)
            if c["version_id"] == shop.versions[2]
        )
    with TestClient(create_app(runtime)) as client:
        r = client.post(
            "/api/v1/messages",
            headers={"Authorization": f"Bearer {key}"},
            json={"to": shop.phones[2], "template_id": template_id, "category": "marketing"},
        )
        assert r.status_code == 202, r.text
    with runtime.engine.begin() as conn:
        camp = campaigns.create(
            conn, runtime.clock, runtime.keyring, shop.tenant_id, name="c",
            segment=shop.segment_id, variants=[{"template_version_id": shop.versions[0]}],
            actor="t",
        )  # fmt: skip
        done = campaigns.launch(
            conn, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
        )
    assert done["counts"]["planned"] == 5 and done["counts"]["over_cap"] == 1
    with runtime.engine.connect() as conn:
        api = conn.execute(
            unscoped(sa.select(messages.c.contact_id).where(messages.c.source == "api"), "t")
        ).scalar_one()
        planned = set(
            conn.execute(
                unscoped(
                    sa.select(messages.c.contact_id).where(messages.c.campaign_id == camp["id"]),
                    "t",
                )
            ).scalars()
        )
    assert api is not None and api not in planned
