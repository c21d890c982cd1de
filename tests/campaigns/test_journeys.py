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


def _events(
    runtime: Runtime, shop: Shop, kind: str, idx: list[int], tag: str
) -> events.IngestResult:
    now = runtime.clock.now()
    with runtime.engine.begin() as conn:
        return events.ingest(
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
    # enrolled as the events arrive (and the first wait planned); the scan finds nothing new
    assert _events(runtime, shop, "add_to_cart", [0, 1, 2, 3, 4, 9], "cart").enrolled == 6
    assert journeys.tick(runtime.engine, clock, runtime.keyring) == {}
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


def _enrolments(runtime: Runtime) -> list[Any]:
    from hongyan.db.tables import journey_enrolments

    with runtime.engine.connect() as conn:
        return list(conn.execute(unscoped(sa.select(journey_enrolments), "t")))


def test_an_event_enrols_at_once(client: Any, runtime: Runtime, shop: Shop) -> None:
    """Posted through the API, a registration enrols the welcome journey in the same request:
    its send step is due 30 minutes after the event, without the scheduler's scan; the same event
    again, or the scan after it, enrols nobody twice."""
    import io
    from types import SimpleNamespace

    from hongyan.security import apikeys
    from hongyan.security.roles import Role
    from tests.api.test_api import auth

    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    welcome = _template_id(runtime, shop, shop.versions[2])
    j = _journey(
        runtime, shop, name="欢迎", trigger="registration", exit_on=None,
        steps=[{"kind": "wait", "minutes": 30}, {"kind": "send", "template_id": welcome}],
    )  # fmt: skip
    with runtime.engine.begin() as conn:
        key = apikeys.create(conn, clock, shop.tenant_id, "k", Role.OPERATOR).key
    clock.advance(timedelta(minutes=5))
    at = clock.now() - timedelta(minutes=2)  # the event happened two minutes ago
    batch = {"events": [{"event_id": "reg-1", "kind": "registration", "phone": shop.phones[1],
                         "occurred_at": at.isoformat()}]}  # fmt: skip
    first = client.post("/api/v1/events", headers=auth(key), json=batch).json()
    assert (first["accepted"], first["enrolled"]) == (1, 1)
    (e,) = _enrolments(runtime)
    assert (e.journey_id, e.step, e.state) == (j["id"], 1, "active")
    assert e.next_at == at + timedelta(minutes=30)  # the welcome is due then
    again = client.post("/api/v1/events", headers=auth(key), json=batch).json()
    assert (again["duplicates"], again["enrolled"]) == (1, 0)
    assert journeys.tick(runtime.engine, clock, runtime.keyring) == {}  # the scan: nothing new
    assert len(_enrolments(runtime)) == 1
    clock.set(at + timedelta(minutes=30))
    assert journeys.tick(runtime.engine, clock, runtime.keyring) == {"sent": 1}
    (row,) = _journey_messages(runtime)
    assert row.due_at == at + timedelta(minutes=30)
    # `hongyan events import` goes through the same ingest: a journey that sends first plans
    # its message while the file is read
    _journey(
        runtime, shop, name="下单关怀", trigger="order_signed", exit_on=None,
        steps=[{"kind": "send", "template_id": welcome}],
    )  # fmt: skip
    csv = f"event_id,kind,phone,occurred_at\nsig-1,order_signed,{shop.phones[4]},"
    csv += clock.now().isoformat() + "\n"
    out = events.import_file(
        SimpleNamespace(engine=runtime.engine, clock=clock, keyring=runtime.keyring),
        shop.tenant_id, io.BytesIO(csv.encode()), "e.csv",
    )  # fmt: skip
    assert (out["accepted"], out["enrolled"]) == (1, 1)
    assert len(_journey_messages(runtime)) == 2
    assert journeys.tick(runtime.engine, clock, runtime.keyring) == {}


def test_a_send_waits_for_a_launch_in_progress(runtime: Runtime, shop: Shop) -> None:
    """While another transaction holds the tenant's cap lock (a launch), an event's send step is
    not made to wait in the ingest: the enrolment is stored, and the next pass sends. (SQLite's
    single writer makes the ingest itself wait: PostgreSQL only.)"""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises the writers themselves")
    clock = runtime.clock
    welcome = _template_id(runtime, shop, shop.versions[2])
    _journey(
        runtime, shop, name="欢迎", trigger="registration", exit_on=None,
        steps=[{"kind": "send", "template_id": welcome}],
    )  # fmt: skip
    with runtime.engine.begin() as launch:
        caps.lock_tenant(launch, shop.tenant_id)
        assert _events(runtime, shop, "registration", [1], "reg").enrolled == 1
        assert _journey_messages(runtime) == []
    assert journeys.tick(runtime.engine, clock, runtime.keyring) == {"sent": 1}
    assert len(_journey_messages(runtime)) == 1 and len(_enrolments(runtime)) == 1
