"""``POST /api/v1/contacts/check-numbers`` as a background job, followed at ``GET
/api/v1/contacts/check-numbers/{id}``, against a real local vendor server (the paid 空号检测
service of tests/contacts/test_number_status.py): 202 and polled to the summary, one check at a
time per tenant (409), tenants kept apart, the service's failures recorded, and a check whose
process died no longer blocking the tenant."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from hongyan.api.app import create_app
from hongyan.clock import FixedClock
from hongyan.contacts import number_status_jobs
from hongyan.db.scope import TenantScope
from hongyan.db.tables import audit_log
from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from tests.api.test_api import _tenant_with_key, auth
from tests.contacts.test_number_status import (
    FakeVendor,
    _import,
    _national,
    _no_secrets,
    _numbers,
    _settings,
    _suppressed,
    vendor,  # noqa: F401  (the fixture)
)
from tests.contacts.test_number_status_jobs import _left_running

URL = "/api/v1/contacts/check-numbers"


def _paid(runtime: Runtime, fake: FakeVendor, **overrides: Any) -> None:
    """The platform configured for the vendor (as HONGYAN_NUMBER_STATUS_* would)."""
    paid = _settings(fake.url, **overrides)
    runtime.settings = runtime.settings.model_copy(
        update={k: getattr(paid, k) for k in type(paid).model_fields if k.startswith("number_")}
    )


def _until(client: TestClient, key: str, job_id: int, *states: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = client.get(f"{URL}/{job_id}", headers=auth(key))
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        if job["state"] in states:
            return job
        time.sleep(0.02)
    raise AssertionError(f"check {job_id} never reached {states}")


def test_a_check_answers_202_and_is_polled_to_its_summary(
    runtime: Runtime,
    vendor: FakeVendor,  # noqa: F811
) -> None:
    tenant_id, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    _, analyst = _tenant_with_key(runtime, "deli", Role.ANALYST)
    _, bakery = _tenant_with_key(runtime, "bakery", Role.OPERATOR)
    numbers = _numbers(5, start=200)
    _import(runtime, tenant_id, numbers)
    vendor.codes = {_national(numbers[0]): 0}
    vendor.omit = {_national(numbers[4])}
    _paid(runtime, vendor)
    with TestClient(create_app(runtime)) as client:
        assert client.post(URL).status_code == 401
        denied = client.post(URL, headers=auth(analyst))
        assert denied.status_code == 403 and not vendor.requests
        r = client.post(URL, headers=auth(key))
        assert r.status_code == 202, r.text
        started = r.json()
        assert (started["state"], started["progress"], started["processed"]) == ("pending", 0, 0)
        assert started["result"] is None and started["error"] is None
        assert started["url"] == f"{URL}/{started['id']}"
        job = _until(client, key, started["id"], "done", "failed")
        # another tenant's job id is not found, nor is an import's id a check or the reverse
        foreign = client.get(f"{URL}/{started['id']}", headers=auth(bakery))
        assert foreign.status_code == 404 and foreign.json()["code"] == "not_found"
        [imported] = client.get("/api/v1/contacts/imports", headers=auth(key)).json()
        assert client.get(f"{URL}/{imported['id']}", headers=auth(key)).status_code == 404
        as_import = client.get(f"/api/v1/contacts/imports/{started['id']}", headers=auth(key))
        assert as_import.status_code == 404
        # the tenant's checks, newest first; none of another tenant's, no import among them
        listed = client.get(URL, headers=auth(key))
        assert listed.status_code == 200 and listed.json() == [job]
        assert client.get(URL, headers=auth(analyst)).json() == []
        assert client.get(URL + "?limit=1", headers=auth(bakery)).json() == []
        for bad in ("0", "101", "x"):
            assert client.get(f"{URL}?limit={bad}", headers=auth(key)).status_code == 422
        doc = client.get("/api/v1/openapi.json").json()
    assert (job["state"], job["progress"], job["processed"], job["total"]) == ("done", 1, 5, 5)
    assert job["error"] is None and job["started_at"] and job["finished_at"]
    assert job["result"] == {
        "provider": "http",
        "checked": 5,
        "active": 3,
        "empty": 1,
        "unknown": 1,
        "skipped": 0,
        "by_provider": {"http": {"active": 3, "empty": 1, "unknown": 1}},
        "failures": [
            {
                "provider": "http",
                "reason": "missing",
                "numbers": 1,
                "requests": 1,
                "detail": "numbers left out of the answer",
            }
        ],
    }
    assert vendor.sizes == [3, 2]
    _no_secrets(str(job), numbers)
    assert _suppressed(runtime, tenant_id) == {"138****0200": "http"}
    with runtime.engine.connect() as conn:
        entry = conn.execute(
            TenantScope(tenant_id)
            .select(audit_log, audit_log.c.target, audit_log.c.detail)
            .where(audit_log.c.action == "contacts.check_numbers")
        ).one()
    assert entry.target == f"number_check:{started['id']}"
    assert entry.detail == {"provider": "http", "checked": 5, "active": 3, "empty": 1, "unknown": 1}
    post = doc["paths"][URL]["post"]
    assert {"202", "409"} <= set(post["responses"])
    schema = post["responses"]["202"]["content"]["application/json"]["schema"]["$ref"]
    assert schema.endswith("/NumberCheckJobOut")
    assert doc["paths"][URL + "/{job_id}"]["get"]["responses"]["200"]


def test_a_second_check_of_the_tenant_is_refused_while_one_runs(
    runtime: Runtime,
    vendor: FakeVendor,  # noqa: F811
) -> None:
    tenant_id, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    _, bakery = _tenant_with_key(runtime, "bakery", Role.OPERATOR)
    numbers = _numbers(4, start=300)
    _import(runtime, tenant_id, numbers)
    vendor.codes = {_national(numbers[1]): 0}
    vendor.script = ["hold"]  # the first request waits until released
    _paid(runtime, vendor, number_status_timeout=20)
    with TestClient(create_app(runtime)) as client:
        first = client.post(URL, headers=auth(key)).json()
        running = _until(client, key, first["id"], "running")
        assert (running["processed"], running["total"], running["progress"]) == (0, 4, 0)
        refused = client.post(URL, headers=auth(key))
        assert refused.status_code == 409
        body = refused.json()
        assert body["code"] == "number_check_running"
        assert "已有一项空号检测正在进行" in body["message"]["zh"]
        assert "already under way" in body["message"]["en"]
        assert body["details"] == {"id": first["id"], "url": f"{URL}/{first['id']}"}
        # another tenant's check is not held back by this one
        other = client.post(URL, headers=auth(bakery))
        assert other.status_code == 202
        assert _until(client, bakery, other.json()["id"], "done")["result"]["checked"] == 0
        vendor.release.set()
        done = _until(client, key, first["id"], "done", "failed")
        assert (done["state"], done["result"]["empty"], done["result"]["active"]) == ("done", 1, 3)
        # once it has ended, the tenant may check again (the 空号 found is not asked again)
        vendor.requests.clear()
        again = client.post(URL, headers=auth(key))
        assert again.status_code == 202
        result = _until(client, key, again.json()["id"], "done")["result"]
    assert (result["checked"], result["skipped"]) == (3, 1)
    assert sorted(vendor.asked) == sorted(n for i, n in enumerate(numbers) if i != 1)


def test_a_failing_service_is_recorded_in_the_job(
    runtime: Runtime,
    vendor: FakeVendor,  # noqa: F811
) -> None:
    """The service answers 500, then garbage: the job ends ``done`` with every number unknown
    (none suppressed) and the failures listed by reason, without the key or a number."""
    tenant_id, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    numbers = _numbers(5, start=400)
    _import(runtime, tenant_id, numbers)
    vendor.default = 0  # 空号, had the service answered
    vendor.script = ["500", "garbage"]
    _paid(runtime, vendor)
    with TestClient(create_app(runtime)) as client:
        r = client.post(URL, headers=auth(key))
        job = _until(client, key, r.json()["id"], "done", "failed")
    assert job["state"] == "done"
    result = job["result"]
    assert (result["checked"], result["unknown"], result["empty"]) == (5, 5, 0)
    by_reason = {f["reason"]: f for f in result["failures"]}
    assert (by_reason["http_status"]["numbers"], by_reason["malformed"]["numbers"]) == (3, 2)
    assert "HTTP 500" in by_reason["http_status"]["detail"]
    assert not _suppressed(runtime, tenant_id)
    _no_secrets(str(job), numbers)


def test_a_check_whose_process_died_does_not_block_the_tenant(runtime: Runtime) -> None:
    """Left ``running`` by a process that died, a check blocks the tenant's next one (409)
    only until it has been silent for ``stuck_after``; then the next request marks it failed,
    saying how far it got, and starts (the receipts provider: no vendor needed)."""
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    tenant_id, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    _import(runtime, tenant_id, _numbers(3, start=800))
    died = _left_running(runtime, tenant_id, processed=1, total=3)
    with TestClient(create_app(runtime)) as client:
        assert client.post(URL, headers=auth(key)).status_code == 409
        clock.advance(number_status_jobs.stuck_after(runtime.settings) + timedelta(minutes=1))
        r = client.post(URL, headers=auth(key))
        assert r.status_code == 202, r.text
        dead = client.get(f"{URL}/{died}", headers=auth(key)).json()
        fresh = _until(client, key, r.json()["id"], "done", "failed")
    assert (dead["state"], dead["error"]["code"]) == ("failed", "number_check_abandoned")
    assert "after 1 of 3 contacts" in dead["error"]["message"]["en"]
    assert (dead["processed"], dead["total"]) == (1, 3)
    assert (fresh["state"], fresh["result"]["checked"]) == ("done", 3)


def test_a_running_check_is_stopped_through_the_api(
    runtime: Runtime,
    vendor: FakeVendor,  # noqa: F811
) -> None:
    tenant_id, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    _, analyst = _tenant_with_key(runtime, "deli", Role.ANALYST)
    _, bakery = _tenant_with_key(runtime, "bakery", Role.OPERATOR)
    numbers = _numbers(7, start=600)
    _import(runtime, tenant_id, numbers)
    vendor.codes = {_national(n): 0 for n in numbers}  # every number empty
    vendor.script = ["hold"]  # the first request waits until released
    _paid(runtime, vendor, number_status_timeout=20)
    with TestClient(create_app(runtime)) as client:
        job_id = client.post(URL, headers=auth(key)).json()["id"]
        _until(client, key, job_id, "running")
        assert client.post(f"{URL}/{job_id}/cancel", headers=auth(analyst)).status_code == 403
        foreign = client.post(f"{URL}/{job_id}/cancel", headers=auth(bakery))
        assert foreign.status_code == 404
        r = client.post(f"{URL}/{job_id}/cancel", headers=auth(key))
        assert r.status_code == 200, r.text
        stopped = r.json()
        assert (stopped["state"], stopped["error"]["code"]) == ("failed", "number_check_cancelled")
        again = client.post(f"{URL}/{job_id}/cancel", headers=auth(key))
        assert again.status_code == 409 and again.json()["code"] == "number_check_ended"
        # the batch in hand (here every contact: a batch is 1,000) ends, is stored and counted
        # on the stopped job (tests/contacts/test_number_status_jobs.py: nothing more asked)
        vendor.release.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            job = client.get(f"{URL}/{job_id}", headers=auth(key)).json()
            if job["processed"]:
                break
            time.sleep(0.02)
        assert (job["state"], job["processed"], job["result"]["empty"]) == ("failed", 7, 7)
        assert job["error"]["code"] == "number_check_cancelled"
        doc = client.get("/api/v1/openapi.json").json()
    assert len(_suppressed(runtime, tenant_id)) == 7
    assert "409" in doc["paths"][URL + "/{job_id}/cancel"]["post"]["responses"]


def test_a_stopped_check_is_resumed_without_asking_again(
    runtime: Runtime,
    vendor: FakeVendor,  # noqa: F811
) -> None:
    tenant_id, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    _, analyst = _tenant_with_key(runtime, "deli", Role.ANALYST)
    _, bakery = _tenant_with_key(runtime, "bakery", Role.OPERATOR)
    numbers = _numbers(5, start=700)
    _import(runtime, tenant_id, numbers)
    vendor.codes = {_national(numbers[2]): 0}
    vendor.script = ["hold"]
    _paid(runtime, vendor, number_status_timeout=20)
    with TestClient(create_app(runtime)) as client:
        job_id = client.post(URL, headers=auth(key)).json()["id"]
        _until(client, key, job_id, "running")
        stop = client.post(f"{URL}/{job_id}/cancel", headers=auth(key))
        assert stop.status_code == 200 and stop.json()["stopping"] is True
        # its run is still asking about the batch in hand: not yet
        early = client.post(f"{URL}/{job_id}/resume", headers=auth(key))
        assert early.status_code == 409 and early.json()["code"] == "number_check_stopping"
        vendor.release.set()
        deadline = time.monotonic() + 20
        while not client.get(f"{URL}/{job_id}", headers=auth(key)).json()["processed"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        asked = sorted(vendor.asked)
        assert client.get(f"{URL}/{job_id}", headers=auth(key)).json()["stopping"] is False
        assert client.post(f"{URL}/{job_id}/resume", headers=auth(analyst)).status_code == 403
        assert client.post(f"{URL}/{job_id}/resume", headers=auth(bakery)).status_code == 404
        r = client.post(f"{URL}/{job_id}/resume", headers=auth(key))
        assert r.status_code == 202, r.text
        assert r.json()["state"] == "pending" and r.json()["error"] is None
        done = _until(client, key, job_id, "done", "failed")
        again = client.post(f"{URL}/{job_id}/resume", headers=auth(key))
        assert again.status_code == 409 and again.json()["code"] == "number_check_not_resumable"
    assert (done["state"], done["processed"], done["total"]) == ("done", 5, 5)
    assert (done["result"]["checked"], done["result"]["empty"]) == (5, 1)
    assert sorted(vendor.asked) == asked == sorted(numbers)  # nobody asked about twice
