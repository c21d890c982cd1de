"""An HTTP provider end to end: outbox → dispatcher → Alibaba Cloud (a local server that checks
the signature) → the provider's pushes to our callback route → final states, 空号 and a TD reply."""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa
from fastapi.testclient import TestClient

from hongyan.api.app import create_app
from hongyan.channels import service as channel_store
from hongyan.contacts import suppression
from hongyan.db.scope import unscoped
from hongyan.db.tables import message_parts
from hongyan.dispatch.dispatcher import ChannelPool, Dispatcher
from hongyan.dispatch.states import Lane
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from tests.channels.http.servers import FakeAliyun, LocalServer
from tests.dispatch.conftest import make_tenant, put, state

KEY_ID, SECRET, TOKEN = "LTAI5tHongyanE2E", "e2e-secret", "cb-e2e-41"
OK, EMPTY = "+8613812345678", "+8613900000000"


def _report(biz_id: str, phone: str, success: bool, code: str, out_id: int) -> dict[str, object]:
    return {
        "phone_number": phone.removeprefix("+86"),
        "send_time": "2026-11-11 10:00:00",
        "report_time": "2026-11-11 10:00:03",
        "success": success,
        "err_code": code,
        "err_msg": "用户接收成功" if success else "空号",
        "sms_size": "1",
        "biz_id": biz_id,
        "out_id": str(out_id),
    }


def test_aliyun_send_receipts_and_reply(runtime: Runtime) -> None:
    t = make_tenant(runtime)
    with runtime.engine.begin() as conn:
        tenants.set_sms_ext(conn, t, "07")
    ok = put(runtime, t, OK, "【鸿雁茶饮】您的订单已发货")
    empty = put(runtime, t, EMPTY, "【鸿雁茶饮】会员日满199减80，回T退订", lane=Lane.MARKETING)
    fake = FakeAliyun(access_key_id=KEY_ID, secret=SECRET)

    async def send() -> list[str]:
        async with LocalServer(fake.app()) as server:
            with runtime.engine.begin() as conn:
                channel_store.add_channel(
                    conn,
                    runtime.clock,
                    runtime.keyring,
                    name="ali",
                    kind="aliyun",
                    config={
                        "access_key_id": KEY_ID,
                        "sign_name": "鸿雁茶饮",
                        "template_code": "SMS_100",
                        "endpoint": server.url,
                    },
                    secrets={"access_key_secret": SECRET, "callback_token": TOKEN},
                )
                specs = channel_store.load_specs(conn, runtime.keyring)
            pool = ChannelPool(runtime)
            await pool.sync(specs)
            d = Dispatcher(runtime, pool, owner="d1")
            try:
                assert await d.run_once() == 2
            finally:
                await pool.stop()
        return [str(p["PhoneNumbers"]) for p in fake.traffic.requests]

    sent = asyncio.run(asyncio.wait_for(send(), 20))
    assert sorted(sent) == ["13812345678", "13900000000"]
    assert state(runtime, t, ok)["state"] == "submitted"
    with runtime.engine.connect() as conn:
        rows = conn.execute(unscoped(sa.select(message_parts), "test")).all()
        parts = {p.message_id: p.carrier_id for p in rows}
    assert all("13812345678" not in cid and "13900000000" not in cid for cid in parts.values())

    with TestClient(create_app(runtime)) as client:
        push = [
            _report(parts[ok].split(":")[0], OK, True, "DELIVERED", ok),
            _report(parts[empty].split(":")[0], EMPTY, False, "MOBILE_NUMBER_ILLEGAL", empty),
        ]
        wrong = client.post("/api/v1/callbacks/ali/not-the-token/status", content=json.dumps(push))
        assert wrong.status_code == 403
        assert state(runtime, t, ok)["state"] == "submitted"  # nothing applied
        r = client.post(f"/api/v1/callbacks/ali/{TOKEN}/status", content=json.dumps(push))
        assert r.status_code == 200 and r.json()["code"] == 0
        reply = [
            {
                "phone_number": "13812345678",
                "send_time": "2026-11-11 10:05:00",
                "content": "退订",
                "sign_name": "鸿雁茶饮",
                "dest_code": "07",
                "sequence_id": 1234,
            }
        ]
        r = client.post(f"/api/v1/callbacks/ali/{TOKEN}/reply", content=json.dumps(reply))
        assert r.status_code == 200
        bad = client.post(f"/api/v1/callbacks/ali/{TOKEN}/status", content=b"{not json")
        assert bad.status_code == 400
    assert state(runtime, t, ok)["state"] == "delivered"
    e = state(runtime, t, empty)
    assert (e["state"], e["reason"]) == ("undelivered", "invalid_number")
    with runtime.engine.connect() as conn:
        got = {(r["phone_masked"], r["reason"]) for r in suppression.list_for(conn, t)}
    assert got == {("139****0000", "invalid"), ("138****5678", "opt_out")}
