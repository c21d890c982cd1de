"""The worker against real HTTP receivers on loopback; time driven by the FixedClock."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import webhook_deliveries, webhook_endpoints
from hongyan.runtime import Runtime
from hongyan.webhooks import delivery, service
from hongyan.webhooks.delivery import Outcome, Refused, Worker, pin
from hongyan.webhooks.events import Event, emit
from hongyan.webhooks.policy import MAX_ATTEMPTS, nominal_delay
from tests.webhooks.conftest import Receiver, add_endpoint, closed_port, make_tenant

STATUS = {
    "message": {"id": 7, "state": "delivered", "reason": None, "to": "138****5678"},
}


def queue(runtime: Runtime, tenant_id: int, type_: str = "message.status", n: int = 1) -> int:
    with runtime.engine.begin() as conn:
        return emit(conn, runtime.clock, [Event(tenant_id, type_, STATUS) for _ in range(n)])


def rows(runtime: Runtime, tenant_id: int, endpoint_id: int) -> list[dict[str, Any]]:
    with runtime.engine.connect() as conn:
        return service.deliveries(conn, tenant_id, endpoint_id, limit=100).items


def one_pass(worker: Worker) -> int:
    return asyncio.run(asyncio.wait_for(worker.pass_once(), 30))


def worker(runtime: Runtime, owner: str = "w1", **kw: Any) -> Worker:
    return Worker(runtime, owner=owner, rng=random.Random(1), timeout=5, **kw)


def test_fails_twice_then_delivers_signed(runtime: Runtime, receiver: Receiver) -> None:
    tenant = make_tenant(runtime)
    made = add_endpoint(runtime, tenant, receiver.url, ["message.status"])
    receiver.secret = made.secret
    receiver.script = [500, 500, 200]
    assert queue(runtime, tenant) == 1
    w = worker(runtime)
    clock = runtime.clock
    for expected_state in ("pending", "pending", "delivered"):
        assert one_pass(w) == 1
        (d,) = rows(runtime, tenant, made.endpoint["id"])
        assert d["state"] == expected_state
        if expected_state == "pending":
            assert one_pass(w) == 0  # not due yet
            clock.set(d["next_at"])  # type: ignore[attr-defined]
    asyncio.run(w.aclose())
    (d,) = rows(runtime, tenant, made.endpoint["id"])
    assert d["attempts"] == 3 and d["last_status"] == 200 and d["delivered_at"] is not None
    assert d["next_at"] is None and d["last_error"] is None
    assert [a["status_code"] for a in d["attempt_log"]] == [200, 500, 500]
    assert d["attempt_log"][1]["error"] == "HTTP 500: receiver says no"
    # Three real requests, each signed with the endpoint's secret at the time it was sent.
    got = receiver.received
    assert len(got) == 3 and all(r.verified for r in got)
    assert {r.headers["x-hongyan-delivery"] for r in got} == {str(d["id"])}
    assert [r.headers["x-hongyan-attempt"] for r in got] == ["1", "2", "3"]
    assert all(r.headers["x-hongyan-event"] == "message.status" for r in got)
    assert all(r.headers["content-type"] == "application/json" for r in got)
    assert got[0].path == "/hooks/sms" and got[0].body == got[2].body
    body = got[0].json
    assert body["type"] == "message.status" and body["id"].startswith("evt_")
    assert body["message"] == STATUS["message"] and body == d["payload"]


def test_receiver_down_retries_with_growing_delays_then_dead(runtime: Runtime) -> None:
    tenant = make_tenant(runtime)
    made = add_endpoint(runtime, tenant, f"http://127.0.0.1:{closed_port()}/x")
    queue(runtime, tenant, "message.reply")
    w = worker(runtime)
    clock = runtime.clock
    first = clock.now()
    delays: list[timedelta] = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert one_pass(w) == 1
        (d,) = rows(runtime, tenant, made.endpoint["id"])
        assert d["attempts"] == attempt and d["last_status"] is None
        assert "Connect" in d["last_error"]
        if attempt < MAX_ATTEMPTS:
            assert d["state"] == "pending"
            delay = d["next_at"] - clock.now()
            nominal = nominal_delay(attempt)
            assert nominal * 0.8 <= delay <= nominal * 1.2, (attempt, delay)
            delays.append(delay)
            clock.set(d["next_at"])  # type: ignore[attr-defined]
    asyncio.run(w.aclose())
    assert d["state"] == "dead" and d["next_at"] is None
    assert len(d["attempt_log"]) == MAX_ATTEMPTS
    assert all(a["status_code"] is None and a["error"] for a in d["attempt_log"])
    doubling = [i for i in range(len(delays) - 1) if nominal_delay(i + 2) > nominal_delay(i + 1)]
    assert len(doubling) >= 10
    assert all(delays[i + 1] > delays[i] for i in doubling)
    assert timedelta(hours=18) < clock.now() - first < timedelta(hours=30)
    assert one_pass(worker(runtime)) == 0  # dead stays dead


def test_redirects_are_not_followed(runtime: Runtime, receiver: Receiver) -> None:
    tenant = make_tenant(runtime)
    made = add_endpoint(runtime, tenant, receiver.url)
    receiver.secret = made.secret
    receiver.script = [302]
    queue(runtime, tenant)
    one_pass(worker(runtime))
    (d,) = rows(runtime, tenant, made.endpoint["id"])
    assert d["state"] == "pending" and d["last_status"] == 302
    assert "redirects are not followed" in d["last_error"] and len(receiver.received) == 1


def test_slow_receiver_times_out(runtime: Runtime) -> None:
    """A receiver that accepts and never answers costs one timeout, not the worker."""

    async def scenario() -> dict[str, Any]:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)
            writer.close()

        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tenant = make_tenant(runtime)
        made = add_endpoint(runtime, tenant, f"http://127.0.0.1:{port}/")
        queue(runtime, tenant)
        async with Worker(runtime, owner="w", timeout=0.3) as w:
            assert await w.pass_once() == 1
        server.close()
        return rows(runtime, tenant, made.endpoint["id"])[0]

    d = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert d["state"] == "pending" and d["last_error"].startswith("timed out after 0.3 s")
    assert d["attempt_log"][0]["duration_ms"] < 3000


def test_private_address_rechecked_at_delivery(runtime: Runtime, receiver: Receiver) -> None:
    """An endpoint saved while loopback was allowed is refused once it no longer is, and the
    receiver never sees a byte."""
    tenant = make_tenant(runtime)
    made = add_endpoint(runtime, tenant, receiver.url)
    queue(runtime, tenant)
    runtime.settings = runtime.settings.model_copy(update={"webhook_allow_private": False})
    one_pass(worker(runtime))
    (d,) = rows(runtime, tenant, made.endpoint["id"])
    assert d["state"] == "pending" and d["last_error"].startswith("refused: 127.0.0.1 resolves")
    assert receiver.received == []


def test_pin_aims_at_the_checked_address() -> None:
    async def scenario() -> None:
        answers = {
            "hooks.example": ["93.184.216.34"],
            "rebind.example": ["93.184.216.34", "10.0.0.7"],
        }

        async def resolve(host: str, port: int) -> list[str]:
            if host not in answers:
                raise OSError("no such host")
            return answers[host]

        t = await pin(
            "https://hooks.example/in?x=1",
            https_only=True,
            allow_private=False,
            resolve=resolve,
        )
        assert t.url == "https://93.184.216.34:443/in?x=1"
        assert t.headers == {"Host": "hooks.example"}
        assert t.extensions == {"sni_hostname": "hooks.example"}
        t = await pin(
            "http://hooks.example:8080/", https_only=False, allow_private=False, resolve=resolve
        )
        assert t.url == "http://93.184.216.34:8080/" and t.headers == {"Host": "hooks.example:8080"}
        assert t.extensions == {}
        for url, why in [
            ("https://rebind.example/", "10.0.0.7"),
            ("https://nowhere.example/", "cannot resolve"),
            ("http://hooks.example/", "no longer acceptable"),  # production: https only
        ]:
            with pytest.raises(Refused, match=why):
                await pin(url, https_only=True, allow_private=False, resolve=resolve)
        same = await pin("http://10.0.0.7/", https_only=False, allow_private=True, resolve=resolve)
        assert same.url == "http://10.0.0.7/" and same.headers == {}

    asyncio.run(scenario())


def test_deactivated_endpoint_stops_and_deleted_endpoint_vanishes(
    runtime: Runtime, receiver: Receiver
) -> None:
    tenant = make_tenant(runtime)
    a = add_endpoint(runtime, tenant, receiver.url)
    b = add_endpoint(runtime, tenant, receiver.url)
    queue(runtime, tenant)
    # Deactivated behind the service's back (a race with emit): the worker stops it unsent.
    with runtime.engine.begin() as conn:
        conn.execute(
            TenantScope(tenant)
            .update(webhook_endpoints)
            .where(webhook_endpoints.c.id == a.endpoint["id"])
            .values(active=False)
        )
    receiver.default = 500
    w = worker(runtime)
    assert one_pass(w) == 2
    (da,) = rows(runtime, tenant, a.endpoint["id"])
    assert da["state"] == "dead" and da["last_error"] == "endpoint deactivated"
    assert da["attempt_log"] == [] and len(receiver.received) == 1
    (db,) = rows(runtime, tenant, b.endpoint["id"])
    assert db["state"] == "pending"
    # Deleted while a worker holds its delivery: the late result is dropped without error.
    runtime.clock.set(db["next_at"])  # type: ignore[attr-defined]
    with runtime.engine.begin() as conn:
        (held,) = delivery.claim(
            conn, runtime.clock, owner="w1", limit=10, lease=timedelta(seconds=60)
        )
    with runtime.engine.begin() as conn:
        service.delete(conn, runtime.clock, tenant, b.endpoint["id"], actor="test")
    with runtime.engine.begin() as conn:
        delivery.record(
            conn,
            runtime.clock,
            owner="w1",
            outcomes=[Outcome(held, ok=False, status_code=500, error="HTTP 500")],
            rng=random.Random(0),
        )
        left = conn.execute(
            unscoped(sa.select(sa.func.count()).select_from(webhook_deliveries), "test")
        ).scalar_one()
    assert left == 1  # a's dead delivery; b's went with b
    assert one_pass(w) == 0


def test_expired_lease_is_taken_over_and_late_result_ignored(
    runtime: Runtime, receiver: Receiver
) -> None:
    tenant = make_tenant(runtime)
    made = add_endpoint(runtime, tenant, receiver.url)
    receiver.secret = made.secret
    queue(runtime, tenant)
    with runtime.engine.begin() as conn:
        (held,) = delivery.claim(
            conn, runtime.clock, owner="dead-worker", limit=10, lease=timedelta(seconds=60)
        )
    assert one_pass(worker(runtime, "w2")) == 0  # leased
    runtime.clock.advance(timedelta(seconds=61))  # type: ignore[attr-defined]
    assert one_pass(worker(runtime, "w2")) == 1
    with runtime.engine.begin() as conn:  # the first worker wakes up with a stale failure
        delivery.record(
            conn,
            runtime.clock,
            owner="dead-worker",
            outcomes=[Outcome(held, ok=False, status_code=503, error="HTTP 503")],
            rng=random.Random(0),
        )
    (d,) = rows(runtime, tenant, made.endpoint["id"])
    assert d["state"] == "delivered" and d["attempts"] == 2 and d["last_status"] == 200
    assert [a["status_code"] for a in d["attempt_log"]] == [503, 200]
    assert len(receiver.received) == 1 and receiver.received[0].verified


def test_two_workers_never_deliver_one_row_twice(runtime: Runtime, receiver: Receiver) -> None:
    tenant = make_tenant(runtime)
    made = add_endpoint(runtime, tenant, receiver.url)
    receiver.secret = made.secret
    total = 240
    assert queue(runtime, tenant, n=total) == total

    async def drain(w: Worker) -> int:
        handled = 0
        async with w:
            while n := await w.pass_once():
                handled += n
        return handled

    async def both() -> list[int]:
        return await asyncio.gather(
            drain(Worker(runtime, owner="a", batch=4, concurrency=4)),
            drain(Worker(runtime, owner="b", batch=4, concurrency=4)),
        )

    counts = asyncio.run(asyncio.wait_for(both(), 120))
    ids = Counter(r.headers["x-hongyan-delivery"] for r in receiver.received)
    assert len(ids) == total and set(ids.values()) == {1}
    assert sum(counts) == total
    if runtime.engine.dialect.name == "postgresql":
        assert min(counts) > 0, counts  # both really worked
    items = rows(runtime, tenant, made.endpoint["id"])
    assert len(items) == 100  # one page
    with runtime.engine.connect() as conn:
        states = conn.execute(
            unscoped(
                sa.select(webhook_deliveries.c.state, sa.func.count()).group_by(
                    webhook_deliveries.c.state
                ),
                "test",
            )
        ).all()
    assert dict(states) == {"delivered": total}  # type: ignore[arg-type]
    assert all(r.verified for r in receiver.received)


def test_run_loop_delivers_and_stops(runtime: Runtime, receiver: Receiver) -> None:
    tenant = make_tenant(runtime)
    made = add_endpoint(runtime, tenant, receiver.url)
    receiver.secret = made.secret
    queue(runtime, tenant, n=3)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(delivery.run(runtime, stop, idle=0.05))
        for _ in range(200):
            if len(receiver.received) >= 3:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(asyncio.wait_for(scenario(), 20))
    assert len(receiver.received) == 3
    assert {d["state"] for d in rows(runtime, tenant, made.endpoint["id"])} == {"delivered"}


def test_reply_number_sent_but_never_stored(runtime: Runtime, receiver: Receiver) -> None:
    """A reply's full number reaches the receiver, filled in at send time from the encrypted
    inbox row of the same tenant; the stored delivery holds only the masked form."""
    from hongyan.db.tables import inbound_messages
    from hongyan.security.keyring import mask_phone

    number = "+8613812345678"
    a = make_tenant(runtime, "tea-a")
    b = make_tenant(runtime, "tea-b")
    made = add_endpoint(runtime, a, receiver.url, ["message.reply"])
    other = add_endpoint(runtime, b, receiver.url, ["message.reply"])
    context = f"tenant:{a}:phone"
    with runtime.engine.begin() as conn:
        inbox_id = conn.execute(
            TenantScope(a).insert(inbound_messages),
            {
                "channel": "sandbox",
                "phone_index": runtime.keyring.blind_index(number, context),
                "phone_cipher": runtime.keyring.encrypt(number, context),
                "phone_masked": mask_phone(number),
                "destination": "1069001",
                "text": "好的",
                "kind": "reply",
                "received_at": runtime.clock.now(),
            },
        ).inserted_primary_key[0]  # type: ignore[index]
        reply = {
            "reply": {
                "id": inbox_id,
                "from": number,
                "from_masked": mask_phone(number),
                "to": "1069001",
                "text": "好的",
                "kind": "reply",
            }
        }
        # Tenant b's event names a's inbox row: it must not get a's number.
        emit(
            conn,
            runtime.clock,
            [Event(a, "message.reply", reply), Event(b, "message.reply", reply)],
        )
    with runtime.engine.connect() as conn:
        stored = (
            conn.execute(unscoped(sa.select(webhook_deliveries.c.payload), "test")).scalars().all()
        )
    assert len(stored) == 2 and all(p["reply"]["from"] is None for p in stored)
    assert "13812345678" not in str(stored) and "138****5678" in str(stored)
    receiver.secret = made.secret
    assert one_pass(worker(runtime)) == 2
    got = {r.json["reply"]["from"] for r in receiver.received}
    assert got == {number, None}
    (for_a,) = [r for r in receiver.received if r.json["reply"]["from"] == number]
    assert for_a.verified and for_a.json["reply"]["from_masked"] == "138****5678"
    (logged,) = rows(runtime, a, made.endpoint["id"])
    assert logged["state"] == "delivered" and logged["payload"]["reply"]["from"] is None
    assert rows(runtime, b, other.endpoint["id"])[0]["state"] == "delivered"


def test_a_real_td_reply_reaches_the_receiver_with_the_number(
    runtime: Runtime, receiver: Receiver
) -> None:
    """The dispatcher's reply path queues message.reply and message.opt_out in its own
    transaction; the worker sends both, signed, with the sender's full number."""
    from hongyan.channels.base import ChannelSpec, Inbound
    from hongyan.dispatch.replies import apply_inbound
    from hongyan.tenants import service as tenants

    tenant = make_tenant(runtime)
    with runtime.engine.begin() as conn:
        tenants.set_sms_ext(conn, tenant, "01")
    made = add_endpoint(runtime, tenant, receiver.url, ["*"])
    receiver.secret = made.secret
    spec = ChannelSpec(name="sb", kind="smpp", config={"source_addr": "10690"})
    with runtime.engine.begin() as conn:
        apply_inbound(
            conn, runtime.clock, runtime.keyring, spec, [Inbound("+8613812345678", "1069001", "TD")]
        )
    assert one_pass(worker(runtime)) == 2
    got = sorted(receiver.received, key=lambda r: r.headers["x-hongyan-event"])
    assert [r.headers["x-hongyan-event"] for r in got] == ["message.opt_out", "message.reply"]
    assert all(r.verified for r in got)
    for r in got:
        assert r.json["reply"]["from"] == "+8613812345678"
        assert r.json["reply"]["from_masked"] == "138****5678"
        assert r.json["reply"]["kind"] == "opt_out" and r.json["reply"]["text"] == "TD"
    assert got[0].json["id"] != got[1].json["id"]
