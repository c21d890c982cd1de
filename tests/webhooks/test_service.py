"""Endpoints and the delivery log through the service: emit's fan-out, URL checks (SSRF), the
secret at rest, deactivation, redelivery, paging."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import sqlalchemy as sa

from hongyan.db.scope import unscoped
from hongyan.db.tables import audit_log, webhook_deliveries, webhook_endpoints
from hongyan.runtime import Runtime
from hongyan.webhooks import service
from hongyan.webhooks.delivery import Worker
from hongyan.webhooks.events import Event, emit
from hongyan.webhooks.policy import AddressRefused, InvalidWebhookUrl, UnknownEvent
from tests.webhooks.conftest import Receiver, add_endpoint, closed_port, make_tenant


def all_deliveries(runtime: Runtime) -> list[Any]:
    with runtime.engine.connect() as conn:
        d = webhook_deliveries.c
        stmt = sa.select(d.tenant_id, d.endpoint_id, d.event, d.payload).order_by(d.id)
        return list(conn.execute(unscoped(stmt, "test")).all())


def test_emit_queues_only_for_subscribed_active_endpoints_of_the_tenant(runtime: Runtime) -> None:
    a = make_tenant(runtime, "tea-a")
    b = make_tenant(runtime, "tea-b")
    url = "http://127.0.0.1:9/x"
    a_status = add_endpoint(runtime, a, url, ["message.status"]).endpoint["id"]
    a_reply = add_endpoint(runtime, a, url, ["message.reply"]).endpoint["id"]
    a_all = add_endpoint(runtime, a, url, ["*"]).endpoint["id"]
    a_off = add_endpoint(runtime, a, url, ["message.status", "message.reply"]).endpoint["id"]
    b_status = add_endpoint(runtime, b, url, ["message.status"]).endpoint["id"]
    with runtime.engine.begin() as conn:
        service.update(
            conn,
            runtime.clock,
            service.UrlPolicy.from_settings(runtime.settings),
            a,
            a_off,
            active=False,
            actor="test",
        )
        n = emit(
            conn,
            runtime.clock,
            [
                Event(a, "message.status", {"message": {"id": 1, "state": "delivered"}}),
                Event(a, "message.reply", {"reply": {"id": 2, "text": "好的"}}),
                Event(b, "message.opt_out", {"reply": {"id": 3, "text": "TD"}}),
            ],
        )
        assert emit(conn, runtime.clock, []) == 0
    got = all_deliveries(runtime)
    assert n == len(got) == 4
    assert sorted((r.tenant_id, r.endpoint_id, r.event) for r in got) == sorted(
        [
            (a, a_status, "message.status"),
            (a, a_all, "message.status"),
            (a, a_reply, "message.reply"),
            (a, a_all, "message.reply"),
        ]
    )
    assert b_status not in {r.endpoint_id for r in got}
    status = [r.payload for r in got if r.event == "message.status"]
    assert status[0]["id"] == status[1]["id"]  # one event id, whichever endpoint gets it
    assert status[0]["type"] == "message.status" and status[0]["message"]["id"] == 1
    reply = next(r.payload for r in got if r.event == "message.reply")
    assert reply["id"] != status[0]["id"] and reply["reply"]["text"] == "好的"
    assert reply["created_at"] == runtime.clock.now().isoformat()


def test_private_addresses_refused_unless_allowed(runtime: Runtime) -> None:
    strict = service.UrlPolicy(https_only=False, allow_private=False)
    for url in (
        "http://127.0.0.1/x",
        "http://localhost:8080/hook",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://0x7f.1/",  # and in hex
    ):
        with pytest.raises(AddressRefused) as caught:
            strict.check(url)
        assert caught.value.details["addresses"], url
    assert service.UrlPolicy(https_only=False, allow_private=True).check(" http://10.1.2.3/ ") == (
        "http://10.1.2.3/"
    )

    def fake(answers: dict[str, list[str]]) -> service.Resolver:
        def resolve(host: str, port: int) -> list[str]:
            if host not in answers:
                raise OSError("unknown host")
            return answers[host]

        return resolve

    names = fake({"hooks.example": ["93.184.216.34"], "mixed.example": ["8.8.8.8", "10.0.0.1"]})
    public = service.UrlPolicy(https_only=True, allow_private=False, resolver=names)
    assert public.check("https://hooks.example/in") == "https://hooks.example/in"
    with pytest.raises(AddressRefused):
        public.check("https://mixed.example/in")
    with pytest.raises(InvalidWebhookUrl, match="does not resolve"):
        public.check("https://nowhere.example/in")
    with pytest.raises(InvalidWebhookUrl, match="https"):
        public.check("http://hooks.example/in")


def test_policy_follows_settings(runtime: Runtime) -> None:
    s = runtime.settings
    assert service.UrlPolicy.from_settings(s).allow_private  # the test runtime allows loopback
    prod = service.UrlPolicy.from_settings(
        s.model_copy(update={"env": "production", "webhook_allow_private": False})
    )
    assert prod.https_only and not prod.allow_private


def test_refused_create_writes_nothing(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    runtime.settings = runtime.settings.model_copy(update={"webhook_allow_private": False})
    for url, error in [
        ("http://127.0.0.1:8080/", AddressRefused),
        ("ftp://x.example/", InvalidWebhookUrl),
    ]:
        with pytest.raises(error), runtime.engine.begin() as conn:
            service.create(
                conn,
                runtime.clock,
                runtime.keyring,
                service.UrlPolicy.from_settings(runtime.settings),
                tenant,
                url=url,
                actor="test",
            )
    with pytest.raises(UnknownEvent), runtime.engine.begin() as conn:
        service.create(
            conn,
            runtime.clock,
            runtime.keyring,
            service.UrlPolicy(False, True),
            tenant,
            url="http://127.0.0.1/",
            events=["message.sent"],
            actor="test",
        )
    with runtime.engine.connect() as conn:
        assert service.listing(conn, tenant) == []


def test_secret_is_encrypted_bound_to_tenant_and_rotates(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    made = add_endpoint(runtime, tenant, "http://127.0.0.1:9/")
    assert made.secret.startswith("whsec_") and len(made.secret) > 40
    assert "secret" not in made.endpoint and "secret_cipher" not in made.endpoint

    def stored() -> bytes:
        with runtime.engine.connect() as conn:
            e = webhook_endpoints.c
            stmt = sa.select(e.secret_cipher).where(e.id == made.endpoint["id"])
            return bytes(conn.execute(unscoped(stmt, "test")).scalar_one())

    cipher = stored()
    assert made.secret.encode() not in cipher
    assert runtime.keyring.decrypt(cipher, f"tenant:{tenant}:webhook-secret") == made.secret
    with pytest.raises(Exception, match="does not verify"):
        runtime.keyring.decrypt(cipher, f"tenant:{tenant + 1}:webhook-secret")
    with runtime.engine.begin() as conn:
        new = service.rotate_secret(
            conn, runtime.clock, runtime.keyring, tenant, made.endpoint["id"], actor="test"
        )
    assert new != made.secret
    assert runtime.keyring.decrypt(stored(), service.secret_context(tenant)) == new
    with runtime.engine.connect() as conn:
        actions = conn.execute(
            unscoped(sa.select(audit_log.c.action, audit_log.c.detail), "test")
        ).all()
    assert [a for a, _ in actions if a.startswith("webhook.")] == [
        "webhook.create",
        "webhook.rotate_secret",
    ]
    assert made.secret not in str(actions) and new not in str(actions)


def test_limits_and_updates(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    policy = service.UrlPolicy(False, True)
    first = add_endpoint(runtime, tenant, "http://127.0.0.1:9/a")
    for i in range(service.MAX_ENDPOINTS - 1):
        add_endpoint(runtime, tenant, f"http://127.0.0.1:9/{i}")
    with pytest.raises(service.TooManyEndpoints), runtime.engine.begin() as conn:
        service.create(
            conn, runtime.clock, runtime.keyring, policy, tenant, url="http://127.0.0.1/", actor="t"
        )
    eid = first.endpoint["id"]
    with runtime.engine.begin() as conn:
        updated = service.update(
            conn,
            runtime.clock,
            policy,
            tenant,
            eid,
            url="http://127.0.0.1:10/b",
            events=["*"],
            description="  ERP  ",
            actor="t",
        )
    assert updated["url"] == "http://127.0.0.1:10/b" and updated["events"] == ["*"]
    assert updated["description"] == "ERP" and updated["active"]
    with pytest.raises(InvalidWebhookUrl), runtime.engine.begin() as conn:
        service.update(conn, runtime.clock, policy, tenant, eid, url="nope", events=[], actor="t")
    with runtime.engine.connect() as conn:
        assert service.get(conn, tenant, eid) == updated  # nothing half-changed
        with pytest.raises(service.EndpointNotFound):
            service.get(conn, tenant, 10_000)


def test_deactivate_stops_waiting_deliveries_and_redeliver(
    runtime: Runtime, receiver: Receiver
) -> None:
    tenant = make_tenant(runtime)
    made = add_endpoint(runtime, tenant, receiver.url)
    receiver.secret = made.secret
    eid = made.endpoint["id"]
    policy = service.UrlPolicy(False, True)
    with runtime.engine.begin() as conn:
        emit(conn, runtime.clock, [Event(tenant, "message.status", {"n": i}) for i in range(3)])
        service.update(conn, runtime.clock, policy, tenant, eid, active=False, actor="t")
        page = service.deliveries(conn, tenant, eid)
    assert {d["state"] for d in page.items} == {"dead"}
    assert {d["last_error"] for d in page.items} == {"endpoint deactivated"}
    dead_id = page.items[0]["id"]
    with pytest.raises(service.EndpointInactive), runtime.engine.begin() as conn:
        service.redeliver(conn, runtime.clock, tenant, dead_id, actor="t")
    with pytest.raises(service.EndpointInactive), runtime.engine.begin() as conn:
        service.send_test(conn, runtime.clock, tenant, eid, actor="t")
    with runtime.engine.begin() as conn:
        service.update(conn, runtime.clock, policy, tenant, eid, active=True, actor="t")
        again = service.redeliver(conn, runtime.clock, tenant, dead_id, actor="t")
    assert again["state"] == "pending" and again["attempts"] == 0
    with pytest.raises(service.NotRedeliverable), runtime.engine.begin() as conn:
        service.redeliver(conn, runtime.clock, tenant, dead_id, actor="t")

    async def one() -> int:
        async with Worker(runtime, owner="w", rng=random.Random(0)) as w:
            return await w.pass_once()

    assert asyncio.run(one()) == 1
    assert len(receiver.received) == 1 and receiver.received[0].verified
    assert receiver.received[0].json["n"] == 2  # the newest, the one redelivered
    with runtime.engine.connect() as conn:
        d = service.delivery(conn, tenant, dead_id)
        with pytest.raises(service.DeliveryNotFound):
            service.delivery(conn, tenant, 10_000)
    assert d["state"] == "delivered" and len(d["attempt_log"]) == 1


def test_paging_newest_first(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    eid = add_endpoint(runtime, tenant, f"http://127.0.0.1:{closed_port()}/").endpoint["id"]
    with runtime.engine.begin() as conn:
        emit(conn, runtime.clock, [Event(tenant, "message.status", {"n": i}) for i in range(7)])
    seen: list[int] = []
    before = None
    with runtime.engine.connect() as conn:
        while True:
            page = service.deliveries(conn, tenant, eid, limit=3, before=before)
            seen += [d["payload"]["n"] for d in page.items]
            if page.next_before is None:
                break
            before = page.next_before
        assert service.deliveries(conn, tenant, eid, state="delivered").items == []
        with pytest.raises(service.ValidationFailed):
            service.deliveries(conn, tenant, eid, state="lost")
    assert seen == [6, 5, 4, 3, 2, 1, 0]
