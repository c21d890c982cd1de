"""/api/v1/contacts… and /api/v1/events: uploads, progress, refused rows, data rights, roles,
tenants kept apart."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from tests.api.test_api import _tenant_with_key, auth

CSV = "手机号,姓名,会员等级,标签\n13812345678,李小龙,金卡,VIP\n+86 139 0000 1111,王芳,,\nbad,x,,\n"


def _wait(client: TestClient, key: str, job_id: int, kind: str = "imports") -> dict[str, Any]:
    """Poll ``/api/v1/contacts/<kind>/<id>`` (an import, or a number check) until it ends."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(
            f"/api/v1/contacts/{kind}/{job_id}", headers=auth(key)
        ).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"the job {kind}/{job_id} did not finish")


def test_upload_progress_result_and_errors(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    _, other = _tenant_with_key(runtime, "bakery", Role.OPERATOR)
    r = client.post(
        "/api/v1/contacts/imports",
        headers=auth(key),
        files={"file": ("people.csv", CSV.encode("gbk"), "text/csv")},
        data={"consent_source": "门店", "consent_proof": "纸质登记表", "tags": "2026双11"},
    )
    assert r.status_code == 202, r.text
    job = _wait(client, key, r.json()["id"])
    assert job["state"] == "done" and job["progress"] == 1.0
    res = job["result"]
    assert (res["rows"], res["imported"], res["invalid"]) == (3, 2, 1)
    assert res["errors"][0]["line"] == 4 and res["errors"][0]["reason"] == "bad_characters"
    errors = client.get(f"/api/v1/contacts/imports/{job['id']}/errors.csv", headers=auth(key))
    assert errors.status_code == 200 and "bad,x" in errors.text
    assert (
        client.get(f"/api/v1/contacts/imports/{job['id']}", headers=auth(other)).status_code == 404
    )
    listed = client.get("/api/v1/contacts", headers=auth(key)).json()
    assert listed["total"] == 2
    phones = {c["phone"] for c in listed["contacts"]}
    assert phones == {"138****5678", "139****1111"} and "13812345678" not in str(listed)
    one = next(c for c in listed["contacts"] if c["phone"] == "138****5678")
    assert one["name"] == "李**" and one["tags"] == ["2026双11", "VIP"]
    detail = client.get(f"/api/v1/contacts/{one['id']}", headers=auth(key)).json()
    assert detail["consent"]["marketing"]["action"] == "granted"
    assert client.get(f"/api/v1/contacts/{one['id']}", headers=auth(other)).status_code == 404
    assert client.get("/api/v1/contacts", headers=auth(other)).json()["total"] == 0
    found = client.get("/api/v1/contacts?number=5678", headers=auth(key)).json()
    assert [c["phone"] for c in found["contacts"]] == ["138****5678"]
    fields = client.get("/api/v1/contacts/fields", headers=auth(key)).json()
    assert fields["attributes"] == [{"name": "会员等级", "type": "text", "label": ""}]
    put = client.put("/api/v1/contacts/fields/积分", headers=auth(key), json={"type": "number"})
    assert put.status_code == 200
    clash = client.put("/api/v1/contacts/fields/积分", headers=auth(key), json={"type": "date"})
    assert clash.status_code == 409
    bad_name = client.put("/api/v1/contacts/fields/1x", headers=auth(key), json={"type": "text"})
    assert bad_name.status_code == 422


def test_bad_upload_fails_typed(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    r = client.post(
        "/api/v1/contacts/imports",
        headers=auth(key),
        files={"file": ("x.csv", "姓名\n张三\n".encode(), "text/csv")},
    )
    job = _wait(client, key, r.json()["id"])
    assert job["state"] == "failed" and job["error"]["code"] == "import_no_phone_column"
    r = client.post(
        "/api/v1/contacts/imports",
        headers=auth(key),
        files={"file": ("x.csv", b"a,b\n", "text/csv")},
        data={"mapping": "[1]"},
    )
    assert r.status_code == 422
    r = client.post(
        "/api/v1/contacts/imports",
        headers=auth(key),
        files={"file": ("x.csv", b"a,b\n", "text/csv")},
        data={"consent_source": "x"},  # no proof
    )
    assert r.status_code == 422


def test_an_upload_in_odd_clothes_is_refused_or_taken_never_a_500(
    client: TestClient, runtime: Runtime
) -> None:
    """A body that is not a form, sent to the upload, is refused by validation (the NUL check
    reads only forms there: it never buffers a body before the key is checked); a multipart
    Content-Type in mixed case is a form like any; a NUL in the file's name is a 422."""
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    r = client.post(
        "/api/v1/contacts/imports",
        headers={**auth(key), "content-type": "application/octet-stream"},
        content=b"\x00" * 4096,
    )
    assert r.status_code == 422 and r.json()["code"] == "validation_failed"
    boundary = "hyBoundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n手机号\n13812345678\n\r\n--{boundary}--\r\n"
    ).encode()
    r = client.post(
        "/api/v1/contacts/imports",
        headers={**auth(key), "content-type": f"Multipart/Form-Data; boundary={boundary}"},
        content=body,
    )
    assert r.status_code == 202, r.text
    assert _wait(client, key, r.json()["id"])["state"] == "done"
    r = client.post(
        "/api/v1/contacts/imports",
        headers={**auth(key), "content-type": f"multipart/form-data; boundary={boundary}"},
        content=body.replace(b'filename="x.csv"', b'filename="x\x00.csv"'),
    )
    assert r.status_code == 422 and r.json()["code"] == "validation_failed", r.text


def test_events_consent_export_forget_and_roles(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    _, analyst = _tenant_with_key(runtime, "tea2", Role.ANALYST)
    batch = {
        "events": [
            {"event_id": "o1", "kind": "order", "phone": "13812345678",
             "occurred_at": "2026-11-01T10:00:00", "amount": "99.50", "tags": ["茶饮"]},
            {"event_id": "b1", "kind": "browse", "phone": "13812345678",
             "occurred_at": "2026-11-02T10:00:00", "tags": ["茶饮"]},
        ]
    }  # fmt: skip
    r = client.post("/api/v1/events", headers=auth(key), json=batch)
    assert r.status_code == 200 and r.json()["accepted"] == 2
    assert client.post("/api/v1/events", headers=auth(key), json=batch).json()["duplicates"] == 2
    # an id stored before with other content: a conflict, named, and nothing changes
    other = {"events": [{**batch["events"][0], "amount": "99.60"}, batch["events"][1]]}
    r = client.post("/api/v1/events", headers=auth(key), json=other)
    assert r.status_code == 200 and r.json() == {
        "received": 2, "accepted": 0, "duplicates": 1, "conflicts": 1, "conflict_ids": ["o1"],
        "erased": 0, "contacts_created": 0, "enrolled": 0,
    }  # fmt: skip
    # an id twice in one batch with other content: the batch is refused, nothing stored (the
    # count of events forgotten below says so)
    twice = {"events": [{**batch["events"][1], "event_id": "b2"},
                        {**batch["events"][1], "event_id": "b2", "tags": ["果茶"]}]}  # fmt: skip
    r = client.post("/api/v1/events", headers=auth(key), json=twice)
    assert r.status_code == 422 and r.json()["details"]["problems"] == [
        {"index": 1, "field": "event_id"}
    ]
    bad = {"events": [{**batch["events"][0], "event_id": "o2", "amount": "x"}]}
    r = client.post("/api/v1/events", headers=auth(key), json=bad)
    assert r.status_code == 422 and r.json()["details"]["problems"] == [
        {"index": 0, "field": "amount"}
    ]
    # decimal's signals escaped the amount's check: a 500
    for amount in ("sNaN", "1e999999999"):
        bad = {"events": [{**batch["events"][0], "event_id": "o2", "amount": amount}]}
        r = client.post("/api/v1/events", headers=auth(key), json=bad)
        assert r.status_code == 422 and r.json()["details"]["problems"] == [
            {"index": 0, "field": "amount"}
        ]
    assert client.post("/api/v1/events", headers=auth(analyst), json=batch).status_code == 403
    # a time before year 1 in UTC was an OverflowError, a 500 (found by the fuzz)
    early = {"events": [{**batch["events"][0], "event_id": "o3", "occurred_at": "0001-01-01"}]}
    r = client.post("/api/v1/events", headers=auth(key), json=early)
    assert r.status_code == 422 and r.json()["details"]["problems"] == [
        {"index": 0, "field": "occurred_at"}
    ]
    # more than a day after the runtime's clock (2026-11-11 10:00 in Shanghai)
    late = {"events": [{**batch["events"][0], "event_id": "o4", "occurred_at": "2026-11-13"}]}
    r = client.post("/api/v1/events", headers=auth(key), json=late)
    assert r.status_code == 422 and r.json()["details"]["problems"] == [
        {"index": 0, "field": "occurred_at"}
    ]
    c = client.post(
        "/api/v1/contacts/consent",
        headers=auth(key),
        json={"phone": "138 1234 5678", "purpose": "marketing", "action": "granted",
              "source": "小程序", "proof": "授权弹窗 v3"},
    )  # fmt: skip
    assert c.status_code == 201 and c.json()["to"] == "138****5678"
    exported = client.post(
        "/api/v1/contacts/export", headers=auth(key), json={"phone": "13812345678"}
    )
    body = exported.json()
    assert body["phone"] == "+8613812345678" and body["events"][0]["amount_fen"] == 9950
    assert body["contact"]["activity"]["revenue_fen"] == 9950
    r = client.post("/api/v1/contacts/forget", headers=auth(analyst), json={"phone": "13812345678"})
    assert r.status_code == 403
    r = client.post("/api/v1/contacts/forget", headers=auth(key), json={"phone": "13812345678"})
    assert r.status_code == 200 and r.json()["events"] == 2
    assert client.get("/api/v1/contacts", headers=auth(key)).json()["total"] == 0
    r = client.post("/api/v1/contacts/forget", headers=auth(key), json={"phone": "12"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_number"
    started = client.post("/api/v1/contacts/check-numbers", headers=auth(key))
    assert started.status_code == 202 and started.json()["state"] == "pending"
    check = _wait(client, key, started.json()["id"], "check-numbers")
    assert (check["state"], check["progress"], check["total"]) == ("done", 1.0, 0)
    assert check["result"] == {
        "provider": "receipts",
        "checked": 0,
        "active": 0,
        "empty": 0,
        "unknown": 0,
        "skipped": 0,
        "by_provider": {},
        "failures": [],
    }


def test_the_events_answer_is_documented(client: TestClient) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    ok = doc["paths"]["/api/v1/events"]["post"]["responses"]["200"]["content"]
    name = ok["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema = doc["components"]["schemas"][name]
    assert {"accepted", "duplicates", "conflicts", "conflict_ids"} <= set(schema["properties"])
    assert "other content" in schema["properties"]["conflicts"]["description"]
    assert schema["properties"]["conflict_ids"]["items"]["type"] == "string"


def test_a_list_offset_past_bigint_is_a_422(client: TestClient, runtime: Runtime) -> None:
    """An offset past a BIGINT was an OverflowError on SQLite, a 500 (found by the fuzz); a
    negative one still reads from the start."""
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    r = client.get(f"/api/v1/contacts?offset={2**63}", headers=auth(key))
    assert r.status_code == 422 and r.json()["code"] == "validation_failed"
    assert r.json()["details"]["problems"][0]["location"] == ["query", "offset"]
    r = client.get("/api/v1/contacts?offset=-5", headers=auth(key))
    assert r.status_code == 200 and r.json()["total"] == 0


def test_a_number_check_id_past_an_integer_is_a_422(client: TestClient, runtime: Runtime) -> None:
    """Number checks are kept as import jobs, keyed by INTEGER: GET /contacts/check-numbers/{id}
    past 2**31 - 1 was "integer out of range" on PostgreSQL, a 500 (found by the fuzz)."""
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    r = client.get(f"/api/v1/contacts/check-numbers/{2**31}", headers=auth(key))
    assert r.status_code == 422 and r.json()["code"] == "validation_failed"
    assert (
        client.get(f"/api/v1/contacts/check-numbers/{2**31 - 1}", headers=auth(key)).status_code
        == 404
    )


def test_patch_a_contacts_time_zone(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    _, other = _tenant_with_key(runtime, "deli", Role.OPERATOR)
    posted = client.post(
        "/api/v1/events",
        headers=auth(key),
        json={"events": [{"event_id": "e1", "kind": "browse", "phone": "13812345678",
                          "occurred_at": "2026-11-11T10:00:00"}]},
    )  # fmt: skip
    assert posted.json()["contacts_created"] == 1
    cid = client.get("/api/v1/contacts", headers=auth(key)).json()["contacts"][0]["id"]
    url = f"/api/v1/contacts/{cid}"
    assert client.get(url, headers=auth(key)).json()["time_zone"] is None
    r = client.patch(url, headers=auth(key), json={"time_zone": "America/New_York"})
    assert r.status_code == 200 and r.json()["time_zone"] == "America/New_York"
    bad = client.patch(url, headers=auth(key), json={"time_zone": "New York"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_time_zone"
    assert client.get(url, headers=auth(key)).json()["time_zone"] == "America/New_York"
    assert client.patch(url, headers=auth(other), json={"time_zone": None}).status_code == 404
    r = client.patch(url, headers=auth(key), json={"time_zone": None})
    assert r.json()["time_zone"] is None


def test_resume_answers_only_for_a_failed_import_of_ones_own(
    client: TestClient, runtime: Runtime
) -> None:
    """Resuming (tests/contacts/test_import.py runs one through) is refused for an import that
    finished, and another tenant's import is not found."""
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    _, other = _tenant_with_key(runtime, "bakery", Role.OPERATOR)
    r = client.post(
        "/api/v1/contacts/imports",
        headers=auth(key),
        files={"file": ("people.csv", CSV.encode(), "text/csv")},
    )
    job = _wait(client, key, r.json()["id"])
    assert job["state"] == "done"
    url = f"/api/v1/contacts/imports/{job['id']}/resume"
    refused = client.post(url, headers=auth(key))
    assert refused.status_code == 422 and "resumed" in refused.json()["message"]["en"]
    assert client.post(url, headers=auth(other)).status_code == 404
    assert client.post("/api/v1/contacts/imports/999/resume", headers=auth(key)).status_code == 404
