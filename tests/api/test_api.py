"""The REST API: health, authentication, typed errors, and tenant isolation."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hongyan.api.app import create_app
from hongyan.runtime import Runtime
from hongyan.security import apikeys
from hongyan.security.roles import Role
from hongyan.tenants import service
from tests.web.test_console import csrf_field, login


def _tenant_with_key(runtime: Runtime, slug: str, role: Role = Role.OWNER) -> tuple[int, str]:
    with runtime.engine.begin() as conn:
        t = service.create_tenant(
            conn, runtime.clock, slug=slug, name=slug.upper(), signature="【鸿雁测试】"
        )
        key = apikeys.create(conn, runtime.clock, t.id, "k", role)
    return t.id, key.key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_health_reports_database(client: TestClient, runtime: Runtime) -> None:
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["database"] == runtime.engine.dialect.name
    assert body["schema"]["current"] == body["schema"]["expected"]


def test_unmigrated_database_is_a_typed_error(bare_runtime: Runtime) -> None:
    with TestClient(create_app(bare_runtime)) as c:
        r = c.get("/api/v1/health")
        assert r.status_code == 503
        assert r.json()["code"] == "database_not_migrated"
        r = c.get("/api/v1/tenant", headers=auth("hy_x_y"))
        assert r.status_code == 503
        assert r.json()["code"] == "database_not_migrated"
        assert r.json()["message"]["zh"]


def test_openapi_documents_every_route(client: TestClient) -> None:
    from hongyan.api.routers import account, health, messages

    doc = client.get("/api/v1/openapi.json").json()
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    declared = {
        ("/api/v1" + route.path, method.lower())
        for router in (health.router, account.router, messages.router)
        for route in router.routes
        for method in getattr(route, "methods", ())
    }
    assert len(declared) >= 8
    assert declared <= documented, declared - documented


def test_openapi_documents_the_error_body(client: TestClient) -> None:
    """Every operation of the tenant's API documents 401, 403 and 422 with the bilingual error
    body (not FastAPI's own 422 schema, which our 422 does not match), and one with a path
    parameter documents 404 too."""
    doc = client.get("/api/v1/openapi.json").json()
    error = doc["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"code", "message"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        if path == "/api/v1/health":
            continue
        for method, op in ops.items():
            wanted = {"401", "403", "422"} | ({"404"} if "{" in path else set())
            for status in wanted:
                response = op["responses"].get(status)
                assert response, (method, path, status)
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
    # what only some operations answer: a name taken, a state that forbids it, an id in the body
    paths = doc["paths"]
    assert {"404", "409"} <= set(paths["/api/v1/campaigns"]["post"]["responses"])
    assert {"404", "409"} <= set(paths["/api/v1/messages"]["post"]["responses"])
    assert "409" in paths["/api/v1/campaigns/{ref}/launch"]["post"]["responses"]
    assert "409" in paths["/api/v1/templates"]["post"]["responses"]


def test_no_credentials_and_bad_key(client: TestClient, runtime: Runtime) -> None:
    r = client.get("/api/v1/tenant")
    assert r.status_code == 401 and r.json()["code"] == "authentication_failed"
    for bad in ["nonsense", "hy_abc_def", "hy__", "Bearer"]:
        r = client.get("/api/v1/tenant", headers=auth(bad))
        assert r.status_code == 401, bad
    _, key = _tenant_with_key(runtime, "tea")
    r = client.get("/api/v1/tenant", headers=auth(key[:-1] + ("A" if key[-1] != "A" else "B")))
    assert r.status_code == 401


def test_my_tenant(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea")
    r = client.get("/api/v1/tenant", headers=auth(key))
    assert r.status_code == 200
    body = r.json()
    assert body["slug"] == "tea" and body["signatures"] == ["【鸿雁测试】"]
    assert body["policy"]["quiet_start"] == "21:00"
    assert body["timezone"] == "Asia/Shanghai"


def test_malformed_json_is_typed_and_changes_nothing(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea")
    before = client.get("/api/v1/api-keys", headers=auth(key)).json()
    r = client.post(
        "/api/v1/api-keys",
        content=b"{not json",
        headers={**auth(key), "content-type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["code"] == "validation_failed"
    r = client.post("/api/v1/api-keys", json={"name": "", "role": "emperor"}, headers=auth(key))
    assert r.status_code == 422
    assert client.get("/api/v1/api-keys", headers=auth(key)).json() == before


def test_unreadable_body_is_typed_and_changes_nothing(client: TestClient, runtime: Runtime) -> None:
    """Bytes that are not UTF-8 under application/json were a 400 whose "zh" message was the
    framework's English; now the same typed 422 as a body that is not JSON (found by the fuzz)."""
    _, key = _tenant_with_key(runtime, "tea")
    before = client.get("/api/v1/api-keys", headers=auth(key)).json()
    r = client.post(
        "/api/v1/api-keys",
        content=b'{"name": "\xff"}',
        headers={**auth(key), "content-type": "application/json"},
    )
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_failed"
    assert body["message"]["zh"] == "无法读取请求内容"
    assert body["details"]["problems"][0]["location"] == ["body"]
    assert client.get("/api/v1/api-keys", headers=auth(key)).json() == before


def test_nul_in_any_text_is_a_422_and_changes_nothing(client: TestClient, runtime: Runtime) -> None:
    """PostgreSQL cannot store U+0000 in text: a name, a tag or a path holding it was a DataError
    there, a 500, while SQLite stored it (found by the fuzz). Both refuse it now, saying where."""
    _, key = _tenant_with_key(runtime, "tea")
    before = client.get("/api/v1/api-keys", headers=auth(key)).json()
    event = {"event_id": "e1", "kind": "browse", "phone": "13812345678", "properties": {"x": "\0"}}
    cases = [
        ("POST", "/api/v1/api-keys", {"json": {"name": "a\0b"}}, ["body", "name"]),
        ("POST", "/api/v1/api-keys",  # JSON in UTF-16 (json.loads reads it; no "\\u0000" bytes)
         {"content": '{"name": "a\\u0000b"}'.encode("utf-16"),
          "headers": {**auth(key), "content-type": "application/json"}}, ["body", "name"]),
        ("POST", "/api/v1/events", {"json": {"events": [event]}},
         ["body", "events", "0", "properties", "x"]),
        ("GET", "/api/v1/contacts?tag=%00", {}, ["query", "tag"]),
        ("GET", "/api/v1/campaigns/a%00b", {}, ["path", "ref"]),
        ("PUT", "/api/v1/contacts/fields/a%00b", {"json": {"type": "text"}}, ["path", "name"]),
        ("POST", "/api/v1/contacts/imports",
         {"files": {"file": ("c.csv", b"phone\n13812345678\n")}, "data": {"tags": "VIP\0"}},
         ["body", "tags"]),
    ]  # fmt: skip
    for method, path, kwargs, where in cases:
        r = client.request(method, path, **{"headers": auth(key), **kwargs})
        assert r.status_code == 422, (path, r.text)
        body = r.json()
        assert body["code"] == "validation_failed" and body["message"]["zh"], path
        assert body["details"]["problems"][0]["location"] == where, path
    assert client.get("/api/v1/api-keys", headers=auth(key)).json() == before
    assert client.get("/api/v1/contacts/imports", headers=auth(key)).json() == []


def test_key_lifecycle_and_audit(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea")
    r = client.post("/api/v1/api-keys", json={"name": "shop backend"}, headers=auth(key))
    assert r.status_code == 201
    new = r.json()
    assert new["key"].startswith("hy_") and new["role"] == "operator"
    listed = client.get("/api/v1/api-keys", headers=auth(key)).json()
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    assert client.get("/api/v1/tenant", headers=auth(new["key"])).status_code == 200
    # An operator key may not manage keys.
    assert client.get("/api/v1/api-keys", headers=auth(new["key"])).status_code == 403
    assert client.delete(f"/api/v1/api-keys/{new['id']}", headers=auth(key)).status_code == 204
    assert client.get("/api/v1/tenant", headers=auth(new["key"])).status_code == 401
    assert client.delete(f"/api/v1/api-keys/{new['id']}", headers=auth(key)).status_code == 404
    actions = [e["action"] for e in client.get("/api/v1/audit", headers=auth(key)).json()]
    assert actions[:2] == ["apikey.revoke", "apikey.create"]


def test_one_tenant_can_read_or_change_nothing_of_another(
    client: TestClient, runtime: Runtime
) -> None:
    a_id, a_key = _tenant_with_key(runtime, "tea-a")
    b_id, b_key = _tenant_with_key(runtime, "tea-b")
    b_new = client.post("/api/v1/api-keys", json={"name": "b2"}, headers=auth(b_key)).json()
    client.post(
        "/api/v1/users",
        headers=auth(b_key),
        json={"email": "b@b.cn", "role": "analyst", "password": "b-password-1"},
    )
    # A sees only itself.
    assert client.get("/api/v1/tenant", headers=auth(a_key)).json()["id"] == a_id
    a_keys = client.get("/api/v1/api-keys", headers=auth(a_key)).json()
    assert {k["id"] for k in a_keys}.isdisjoint({b_new["id"]})
    assert all(
        u["email"] != "b@b.cn" for u in client.get("/api/v1/users", headers=auth(a_key)).json()
    )
    assert all("b2" not in str(e) for e in client.get("/api/v1/audit", headers=auth(a_key)).json())
    # A cannot revoke B's key by id; B's key still works.
    r = client.delete(f"/api/v1/api-keys/{b_new['id']}", headers=auth(a_key))
    assert r.status_code == 404
    assert client.get("/api/v1/tenant", headers=auth(b_new["key"])).json()["id"] == b_id
    # A session of A (console login) sees the same boundary.
    with runtime.engine.begin() as conn:
        service.create_user(
            conn,
            runtime.clock,
            runtime.keyring,
            tenant_id=a_id,
            email="a@a.cn",
            name="a",
            role="owner",
            password="a-password-1",
        )
    r = login(client, email="a@a.cn", password="a-password-1")
    assert r.status_code == 303 and client.cookies.get("hongyan_session")
    assert client.get("/api/v1/tenant").json()["id"] == a_id
    # Cookie-authenticated writes need the session's CSRF token, and even with it B is out of reach.
    assert client.delete(f"/api/v1/api-keys/{b_new['id']}").status_code == 403
    token = csrf_field(client.get("/console").text)
    r = client.delete(f"/api/v1/api-keys/{b_new['id']}", headers={"X-CSRF-Token": token})
    assert r.status_code == 404
    assert client.get("/api/v1/tenant", headers=auth(b_new["key"])).json()["id"] == b_id


def test_unknown_route_and_method(client: TestClient) -> None:
    r = client.get("/api/v1/nowhere")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.put("/api/v1/health")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def test_the_file_exports_are_documented_as_files(client: TestClient) -> None:
    """A CSV or XLSX export's 200 is documented with its own content type, not JSON (the fuzz
    found the segment export answering text/csv where the schema said application/json)."""
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    files = {
        "/api/v1/segments/{segment_id}/export.csv": {"text/csv"},
        "/api/v1/contacts/imports/{import_id}/errors.csv": {"text/csv"},
        "/api/v1/reports/campaigns/{campaign_id}/export.csv": {"text/csv"},
        "/api/v1/reports/campaigns/{campaign_id}/export.xlsx": {xlsx},
        "/api/v1/reports/journeys/{journey_id}/export.{ext}": {"text/csv", xlsx},
        "/api/v1/reports/segments/{segment_id}/export.{ext}": {"text/csv", xlsx},
    }
    for path, types in files.items():
        assert set(paths[path]["get"]["responses"]["200"]["content"]) == types, path
