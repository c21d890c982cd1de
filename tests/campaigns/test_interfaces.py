"""Campaigns through /api/v1 and the `hongyan campaigns` commands."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hongyan.cli.main import open_runtime
from hongyan.runtime import Runtime
from hongyan.security import apikeys
from hongyan.security.roles import Role
from tests.api.test_api import auth
from tests.campaigns.support import make_shop
from tests.cli.test_cli import cli  # noqa: F401  (the fixture)


def _key(runtime: Runtime, tenant_id: int, role: Role) -> str:
    with runtime.engine.begin() as conn:
        return apikeys.create(conn, runtime.clock, tenant_id, f"k-{role}", role).key


def test_campaigns_api(client: TestClient, runtime: Runtime) -> None:
    shop = make_shop(runtime)
    other = make_shop(runtime, 3, slug="other", opted_out=0, without_consent=0)
    key, analyst = (
        _key(runtime, shop.tenant_id, Role.OPERATOR),
        _key(runtime, shop.tenant_id, Role.ANALYST),
    )
    stranger = _key(runtime, other.tenant_id, Role.OWNER)
    body = {
        "name": "会员日",
        "segment": shop.segment_id,
        "variants": [
            {"template_version_id": shop.versions[0]},
            {"template_version_id": shop.versions[1], "weight": 3},
        ],
        "window": "ecommerce_evening",
    }
    assert client.post("/api/v1/campaigns", headers=auth(analyst), json=body).status_code == 403
    made = client.post("/api/v1/campaigns", headers=auth(key), json=body)
    assert made.status_code == 201, made.text
    cid = made.json()["id"]
    assert client.post("/api/v1/campaigns", headers=auth(key), json=body).status_code == 409
    bad = client.post(
        "/api/v1/campaigns",
        headers=auth(key),
        json={**body, "name": "x", "window": {"start": "10:00", "end": "09:00"}},
    )
    assert bad.status_code == 422 and bad.json()["code"] == "send_window_invalid"
    est = client.post(f"/api/v1/campaigns/{cid}/estimate", headers=auth(key)).json()
    assert est["recipients"] == 38
    assert client.get(f"/api/v1/campaigns/{cid}", headers=auth(stranger)).status_code == 404
    launched = client.post(f"/api/v1/campaigns/{cid}/launch", headers=auth(key))
    assert launched.status_code == 200, launched.text
    counts = launched.json()["counts"]
    assert counts["planned"] == 38 and set(counts["by_variant"]) == {"A", "B"}
    assert sum(counts["by_variant"].values()) == 38  # weights: test_weights_split_the_audience
    status = client.get(f"/api/v1/campaigns/{cid}", headers=auth(analyst)).json()
    assert status["state"] == "running" and status["messages"] == {"planned": 38}
    # the evening window: 10:00 now, first message at 19:00 local
    assert counts["first_due"].startswith("2026-11-11T11:00")
    assert client.post(f"/api/v1/campaigns/{cid}/pause", headers=auth(key)).json()["moved"] == 38
    assert client.post(f"/api/v1/campaigns/{cid}/resume", headers=auth(key)).json()["moved"] == 38
    assert (
        client.post(f"/api/v1/campaigns/{cid}/cancel", headers=auth(key)).json()["state"]
        == "cancelled"
    )
    listed = client.get("/api/v1/campaigns", headers=auth(key)).json()["campaigns"]
    assert [c["name"] for c in listed] == ["会员日"]
    caps = client.put("/api/v1/frequency-caps", headers=auth(key), json={"limits": {"new": [2, 7]}})
    assert caps.status_code == 403
    owner = _key(runtime, shop.tenant_id, Role.OWNER)
    caps = client.put(
        "/api/v1/frequency-caps", headers=auth(owner), json={"limits": {"new": [2, 7]}}
    )
    assert caps.json()["limits"]["new"] == [2, 7]


def test_campaigns_cli(cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    cli("db", "upgrade")
    runtime = open_runtime()
    shop = make_shop(runtime, 10, opted_out=0, without_consent=0)
    with runtime.engine.connect() as conn:
        from hongyan.content import templates

        tid = next(
            t["id"]
            for t in templates.listing(conn, shop.tenant_id)
            if t["live_version_id"] == shop.versions[0]
        )
    made = cli(
        "campaigns",
        "create",
        "--tenant",
        "tea",
        "--name",
        "周五",
        "--segment",
        "全部",
        "--template",
        str(tid),
    )
    assert made["state"] == "draft"
    assert cli("campaigns", "estimate", "周五", "--tenant", "tea")["recipients"] == 10
    launched = cli("campaigns", "launch", "周五", "--tenant", "tea")
    assert launched["counts"]["planned"] == 10
    assert cli("campaigns", "pause", "周五", "--tenant", "tea")["state"] == "paused"
    assert cli("campaigns", "resume", "周五", "--tenant", "tea")["state"] == "running"
    st = cli("campaigns", "status", "周五", "--tenant", "tea")
    assert st["messages"] == {"planned": 10}
    assert [c["name"] for c in cli("campaigns", "list", "--tenant", "tea")["campaigns"]] == ["周五"]
    assert cli("campaigns", "cancel", "周五", "--tenant", "tea")["state"] == "cancelled"
    err = cli("campaigns", "launch", "周五", "--tenant", "tea", ok=False)
    assert err["error"]["code"] == "campaign_state"
    assert cli("caps", "set", '{"new": [1, 14]}', "--tenant", "tea")["new"] == [1, 14]
    assert cli("caps", "show", "--tenant", "tea")["dormant"] == [1, 90]
    runtime.close()
