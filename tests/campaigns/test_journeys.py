"""Journeys against both databases: a cart-abandonment journey enrols on the event, waits an
hour, checks its condition again, sends through the outbox with the caps and consent of
campaigns, and lets a contact who orders in the meantime leave as converted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from hongyan.campaigns import caps, journeys
from hongyan.campaigns import service as campaigns
from hongyan.clock import FixedClock
from hongyan.contacts import events
from hongyan.contacts import service as contacts
from hongyan.db.scope import unscoped
from hongyan.db.tables import messages
from hongyan.errors import Conflict, ValidationFailed
from hongyan.runtime import Runtime
from tests.campaigns.support import ALL, Shop, make_shop


@pytest.fixture
def shop(runtime: Runtime) -> Shop:
    return make_shop(runtime, 10, opted_out=1, without_consent=1)


def _template_id(runtime: Runtime, shop: Shop, version: int) -> int:
    with runtime.engine.connect() as conn:
        return next(
            c["template_id"]
            for c in campaigns.copy_choices(conn, shop.tenant_id)
            if c["version_id"] == version
        )


def _journey(runtime: Runtime, shop: Shop, **kw: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "购物车挽回",
        "trigger": "add_to_cart",
        "steps": [
            {"kind": "wait", "minutes": 60},
            {"kind": "condition", "rule": ALL},
            {"kind": "send", "template_id": _template_id(runtime, shop, shop.versions[2])},
        ],
    }
    values.update(kw)
    with runtime.engine.begin() as conn:
        return journeys.create(conn, runtime.clock, shop.tenant_id, actor="t", **values)


def _events(runtime: Runtime, shop: Shop, kind: str, idx: list[int], tag: str) -> None:
    now = runtime.clock.now()
    with runtime.engine.begin() as conn:
        events.ingest(
            conn, runtime.clock, runtime.keyring, shop.tenant_id,
            [events.Event(f"{tag}{i}", kind, shop.phones[i], now) for i in idx],
        )  # fmt: skip


def _journey_messages(runtime: Runtime) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(
            conn.execute(unscoped(sa.select(messages).where(messages.c.source == "journey"), "t"))
        )


def test_cart_abandonment(runtime: Runtime, shop: Shop) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    j = _journey(runtime, shop)
    with runtime.engine.begin() as conn:
        caps.set_policy(conn, clock, shop.tenant_id, {"default": [1, 30], "new": [1, 30]})
    # contact 2 already had this month's message from a campaign
    with runtime.engine.begin() as conn:
        camp = campaigns.create(
            conn, clock, runtime.keyring, shop.tenant_id, name="c", phones=[shop.phones[2]],
            variants=[{"template_version_id": shop.versions[0]}], actor="t",
        )  # fmt: skip
        campaigns.launch(conn, clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t")
    clock.advance(timedelta(minutes=1))
    _events(runtime, shop, "add_to_cart", [0, 1, 2, 3, 4, 9], "cart")
    assert journeys.tick(runtime.engine, clock, runtime.keyring) == {"enrolled": 6, "waited": 6}
    assert journeys.tick(runtime.engine, clock, runtime.keyring) == {}  # idempotent scan
    clock.advance(timedelta(minutes=30))
    _events(runtime, shop, "order", [3], "order")  # 3 buys: converted, never messaged
    clock.advance(timedelta(minutes=31))
    done = journeys.tick(runtime.engine, clock, runtime.keyring)
    # 0 opted out, 9 without consent, 2 over the cap: 1 and 4 get the offer
    assert done == {"converted": 1, "sent": 2, "left_out": 3}
    rows = _journey_messages(runtime)
    with runtime.engine.connect() as conn:
        wanted = {
            contacts.find_id(conn, runtime.keyring, shop.tenant_id, shop.phones[i]) for i in (1, 4)
        }
    assert {r.contact_id for r in rows} == wanted and len(rows) == 2
    assert {r.lane for r in rows} == {2} and {r.source_ref for r in rows} == {f"journey:{j['id']}"}
    assert all("好久不见" in r.body for r in rows)
    with runtime.engine.connect() as conn:
        got = journeys.get(conn, shop.tenant_id, j["id"])
    c = got["counts"]
    assert c["entered"] == 6 and c["completed"] == 2 and c["exited"] == 4
    assert c["outcome.converted"] == 1 and c["outcome.suppressed"] == 1
    assert c["outcome.no_consent"] == 1 and c["outcome.over_cap"] == 1
    # a journey message counts against the cap of the next campaign
    with runtime.engine.begin() as conn:
        camp = campaigns.create(
            conn, clock, runtime.keyring, shop.tenant_id, name="d",
            phones=[shop.phones[i] for i in (1, 4, 5)],
            variants=[{"template_version_id": shop.versions[0]}], actor="t",
        )  # fmt: skip
        done2 = campaigns.launch(
            conn, clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
        )
    assert done2["counts"]["planned"] == 1 and done2["counts"]["over_cap"] == 2


def test_journey_sends_wait_out_quiet_hours(runtime: Runtime, shop: Shop) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    clock.set(clock.now().replace(hour=12, minute=30))  # 20:30 in Shanghai
    _journey(runtime, shop)
    _events(runtime, shop, "add_to_cart", [1], "cart")
    journeys.tick(runtime.engine, clock, runtime.keyring)
    clock.advance(timedelta(hours=1))  # 21:30: quiet
    assert journeys.tick(runtime.engine, clock, runtime.keyring) == {"sent": 1}
    (row,) = _journey_messages(runtime)
    assert row.due_at == clock.now().replace(hour=0, minute=0) + timedelta(days=1)  # 08:00


def test_bad_journeys_are_refused(runtime: Runtime, shop: Shop) -> None:
    with pytest.raises(ValidationFailed, match="loop"):
        _journey(runtime, shop, trigger="order", exit_on="order")
    with pytest.raises(ValidationFailed):
        _journey(runtime, shop, steps=[{"kind": "wait", "minutes": 60}])
    with pytest.raises(ValidationFailed):
        _journey(runtime, shop, steps=[{"kind": "wait", "minutes": 0}])
    with pytest.raises(ValidationFailed):
        _journey(runtime, shop, trigger="moon")
    _journey(runtime, shop)
    with pytest.raises(Conflict):
        _journey(runtime, shop)


def test_journeys_api_cli_and_console(client: Any, runtime: Runtime, shop: Shop) -> None:
    from hongyan.security import apikeys
    from hongyan.security.roles import Role
    from tests.api.test_api import auth
    from tests.campaigns.test_console import _user
    from tests.web.test_console import login

    with runtime.engine.begin() as conn:
        key = apikeys.create(conn, runtime.clock, shop.tenant_id, "k", Role.OPERATOR).key
    body = {
        "name": "欢迎",
        "trigger": "registration",
        "steps": [{"kind": "wait", "minutes": 30},
                  {"kind": "send", "template_id": _template_id(runtime, shop, shop.versions[2])}],
    }  # fmt: skip
    made = client.post("/api/v1/journeys", headers=auth(key), json=body)
    assert made.status_code == 201, made.text
    jid = made.json()["id"]
    loop = client.post(
        "/api/v1/journeys", headers=auth(key), json={**body, "name": "x", "exit_on": "registration"}
    )
    assert loop.status_code == 422 and loop.json()["code"] == "journey_invalid"
    paused = client.put(
        f"/api/v1/journeys/{jid}/state", headers=auth(key), json={"state": "paused"}
    )
    assert paused.json()["state"] == "paused"
    assert client.get("/api/v1/journeys", headers=auth(key)).json()["journeys"][0]["name"] == "欢迎"
    _user(runtime, shop)
    login(client)
    page = client.get("/console/campaigns")
    assert "自动化旅程" in page.text and "欢迎" in page.text and "注册" in page.text
