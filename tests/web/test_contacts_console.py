"""The contacts console: list with masked numbers, upload → mapping → progress → result."""

from __future__ import annotations

import re
import time

from fastapi.testclient import TestClient

from hongyan.contacts import importer, number_status_jobs
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from tests.api.test_number_checks_api import _paid
from tests.contacts.test_number_status import (
    FakeVendor,
    _import,
    _national,
    _numbers,
    vendor,  # noqa: F401  (the fixture)
)
from tests.web.test_console import PASSWORD, csrf_field, login, make_tenant

CSV = "手机,客户姓名,会员等级,备注\n13812345678,李小龙,金卡,x\n13900001111,王芳,,y\nbad,坏,,\n"


def _upload(client: TestClient, data: bytes, name: str = "people.csv", **extra: str) -> str:
    form = client.get("/console/contacts/import")
    assert form.status_code == 200 and "导入联系人" in form.text
    preview = client.post(
        "/console/contacts/import",
        data={"csrf_token": csrf_field(form.text), **extra},
        files={"file": (name, data, "text/csv")},
    )
    assert preview.status_code == 200, preview.text
    return preview.text


def test_import_through_the_console(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    login(client)
    page = _upload(client, CSV.encode("gbk"), consent_source="门店", consent_proof="登记表")
    assert "字段映射与预览" in page and "GB18030" in page
    assert '<option value="phone" selected>' in page  # 手机 guessed as the phone
    assert "李小龙" in page  # the preview shows the first rows
    token = re.search(r'name="token" value="([0-9a-f]{32})"', page)
    assert token
    start = client.post(
        "/console/contacts/import/start",
        data={
            "csrf_token": csrf_field(page),
            "token": token.group(1),
            "filename": "people.csv",
            "consent_source": "门店",
            "consent_proof": "登记表",
            "tags": "VIP",
            "col0": "phone",
            "col1": "name",
            "col2": "attr",
            "type2": "text",
            "col3": "ignore",
        },
        follow_redirects=False,
    )
    assert start.status_code == 303
    job_url = start.headers["location"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = client.get(job_url).text
        if "已完成" in job or "失败" in job:
            break
        time.sleep(0.05)
    assert "已完成" in job and 'data-counter="imported">2<' in job
    assert 'data-counter="invalid">1<' in job and "手机号含非数字字符" in job
    assert 'data-counter="erased"' not in job  # shown only when some number was
    errors = client.get(job_url + "/errors.csv")
    assert errors.status_code == 200 and "bad,坏" in errors.text
    listed = client.get("/console/contacts").text
    assert "138****5678" in listed and "李**" in listed and "13812345678" not in listed
    assert "VIP" in listed and "江苏" in listed
    filtered = client.get("/console/contacts?number=1111").text
    assert "139****1111" in filtered and "138****5678" not in filtered
    bad = client.get("/console/contacts?number=12345")
    assert bad.status_code == 422 and "中国大陆手机号应为 11 位" in bad.text


def test_an_import_says_how_many_erased_numbers_it_left_out(
    client: TestClient, runtime: Runtime
) -> None:
    from hongyan.contacts import service

    make_tenant(runtime)
    with runtime.engine.begin() as conn:
        tenant_id = tenants.get_tenant(conn, "tea-house").id
        service.forget(conn, runtime.clock, runtime.keyring, tenant_id, "+8613812345678", "t")
    login(client)
    page = _upload(client, CSV.encode())
    token = re.search(r'name="token" value="([0-9a-f]{32})"', page)
    assert token
    fields = {f"col{i}": v for i, v in enumerate(("phone", "name", "ignore", "ignore"))}
    start = client.post(
        "/console/contacts/import/start",
        data={"csrf_token": csrf_field(page), "token": token.group(1), "filename": "p.csv",
              **fields},
        follow_redirects=False,
    )  # fmt: skip
    assert start.status_code == 303
    deadline = time.monotonic() + 20
    while "已完成" not in (job := client.get(start.headers["location"]).text):
        assert time.monotonic() < deadline and "失败" not in job
        time.sleep(0.05)
    assert 'data-counter="erased">1<' in job and "已应本人要求删除（未再导入）" in job
    assert 'data-counter="imported">1<' in job


def test_bad_files_and_csrf(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    login(client)
    form = client.get("/console/contacts/import").text
    r = client.post(
        "/console/contacts/import",
        data={"csrf_token": "wrong"},
        files={"file": ("a.csv", b"x", "text/csv")},
    )
    assert r.status_code == 403
    r = client.post(
        "/console/contacts/import",
        data={"csrf_token": csrf_field(form)},
        files={"file": ("a.xls", b"\xd0\xcf\x11\xe0" + b"\x00" * 64, "application/octet-stream")},
    )
    assert r.status_code == 422 and "不支持旧版 .xls" in r.text
    page = _upload(client, "姓名\n张三\n".encode())
    assert "没有找到手机号列" in page  # shown on the preview, before anything is stored


def test_a_failed_import_is_resumed_from_its_page(
    client: TestClient, runtime: Runtime, monkeypatch: object
) -> None:
    """An upload that fails after storing rows offers 继续导入 on its page (with the line
    stored up to); the button goes on from there, and a finished import offers it no more."""
    import pytest

    from hongyan.contacts import importer

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    make_tenant(runtime)
    login(client)
    real, calls = importer._Writer.insert, {"n": 0}

    def failing(self, rows):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        real(self, rows)

    monkeypatch.setattr(importer._Writer, "insert", failing)

    class Small(importer.ImportOptions):  # batches of 20 rows, as the console asks for none
        def __init__(self, *args, **kw):  # type: ignore[no-untyped-def]
            super().__init__(*args, **{"batch_size": 20, **kw})

    monkeypatch.setattr(importer, "ImportOptions", Small)
    data = ("手机,客户姓名\n" + "".join(f"138{i:08d},名\n" for i in range(50))).encode()
    page = _upload(client, data)
    token = re.search(r'name="token" value="([0-9a-f]{32})"', page)
    assert token
    start = client.post(
        "/console/contacts/import/start",
        data={"csrf_token": csrf_field(page), "token": token.group(1), "filename": "p.csv",
              "col0": "phone", "col1": "name"},
        follow_redirects=False,
    )  # fmt: skip
    job_url = start.headers["location"]
    deadline = time.monotonic() + 30
    while "导入失败" not in (job := client.get(job_url).text) and "已完成" not in job:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "第 21 行及之前的数据已保存" in job and 'id="resume-import"' in job
    monkeypatch.setattr(importer._Writer, "insert", real)
    resumed = client.post(
        job_url + "/resume", data={"csrf_token": csrf_field(job)}, follow_redirects=False
    )
    assert resumed.status_code == 303 and resumed.headers["location"] == job_url
    while "已完成" not in (job := client.get(job_url).text):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert 'data-counter="imported">50<' in job and 'id="resume-import"' not in job
    again = client.post(job_url + "/resume", data={"csrf_token": csrf_field(job)})
    assert again.status_code == 422


def test_a_number_check_from_the_suppression_page(
    client: TestClient,
    runtime: Runtime,
    vendor: FakeVendor,  # noqa: F811
) -> None:
    """空号检测 from the console: the suppression page says how numbers are checked and starts
    a check; its page follows the job to the summary (the service's failure listed), the empty
    number joins the list, a second start while one is under way shows that one, and a role
    that may not manage contacts sees the checks without the button."""
    make_tenant(runtime)
    make_tenant(runtime, slug="bakery", name="面包房", email="owner@bakery.example")
    with runtime.engine.begin() as conn:
        tea = tenants.get_tenant(conn, "tea-house").id
        tenants.create_user(
            conn, runtime.clock, runtime.keyring, tenant_id=tea, email="analyst@tea.example",
            name="分析员", role="analyst", password=PASSWORD,
        )  # fmt: skip
    numbers = _numbers(5, start=300)
    _import(runtime, tea, numbers)
    vendor.codes = {_national(numbers[0]): 0}
    vendor.omit = {_national(numbers[4])}
    _paid(runtime, vendor)
    login(client)
    page = client.get("/console/suppressions")
    assert page.status_code == 200
    assert "空号检测" in page.text and "第三方空号检测服务" in page.text
    assert "尚未进行过空号检测" in page.text and 'id="start-check"' in page.text
    refused = client.post("/console/contacts/checks", data={"csrf_token": "x"})
    assert refused.status_code == 403 and not vendor.requests
    start = client.post(
        "/console/contacts/checks",
        data={"csrf_token": csrf_field(page.text)},
        follow_redirects=False,
    )
    assert start.status_code == 303
    job_url = start.headers["location"]
    check_id = int(job_url.rsplit("/", 1)[1])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = client.get(job_url).text
        if "已完成" in job or "检测中断" in job:
            break
        time.sleep(0.05)
    assert 'id="check-state">已完成<' in job and 'value="100"' in job
    for key, count in (("checked", 5), ("active", 3), ("empty", 1), ("unknown", 1)):
        assert f'data-counter="{key}">{count}<' in job, key
    assert "应答缺少号码" in job and "已处理 5 / 5 个联系人" in job
    for number in numbers:
        assert number[3:] not in job
    # htmx polls the panel alone
    panel = client.get(job_url, headers={"HX-Request": "true", "HX-Target": "records"})
    assert panel.status_code == 200 and "<html" not in panel.text and "已完成" in panel.text
    listed = client.get("/console/suppressions").text
    assert f'href="/console/contacts/checks/{check_id}"' in listed and "重新检测" in listed
    invalid = client.get("/console/suppressions?reason=invalid").text
    assert "138****0300" in invalid and "空号检测（第三方服务）" in invalid
    # one under way: a second start shows it instead of making another
    with runtime.engine.begin() as conn:
        waiting = number_status_jobs.start(conn, runtime.clock, runtime.settings, tea, "test")
    again = client.post(
        "/console/contacts/checks",
        data={"csrf_token": csrf_field(listed)},
        follow_redirects=False,
    )
    assert again.headers["location"] == f"/console/contacts/checks/{waiting}"
    waiting_page = client.get(again.headers["location"]).text
    assert "等待中" in waiting_page and 'id="stop-check"' in waiting_page
    stop = client.post(
        f"/console/contacts/checks/{waiting}/cancel",
        data={"csrf_token": csrf_field(waiting_page)},
        follow_redirects=False,
    )
    assert stop.headers["location"] == f"/console/contacts/checks/{waiting}"
    stopped = client.get(stop.headers["location"]).text
    assert "检测中断" in stopped and "手动停止" in stopped and 'id="stop-check"' not in stopped
    assert "可从停止处继续检测" in stopped and "hx-trigger" not in stopped  # settled at once
    twice = client.post(  # already ended: the page again, no error
        f"/console/contacts/checks/{waiting}/cancel",
        data={"csrf_token": csrf_field(waiting_page)},
        follow_redirects=False,
    )
    assert twice.status_code == 303
    assert 'id="resume-check"' in stopped and "从停止处继续" in stopped
    resumed = client.post(
        f"/console/contacts/checks/{waiting}/resume",
        data={"csrf_token": csrf_field(stopped)},
        follow_redirects=False,
    )
    assert resumed.headers["location"] == f"/console/contacts/checks/{waiting}"
    deadline = time.monotonic() + 20
    while "已完成" not in (page_now := client.get(resumed.headers["location"]).text):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # stopped before it began: all of it checked now, but the 空号 found earlier not again
    assert 'data-counter="checked">4<' in page_now and 'data-counter="skipped">1<' in page_now
    # not a check: another tenant's, an import's, a malformed id
    with runtime.engine.begin() as conn:
        [imported] = importer.list_jobs(conn, tea)
    for bad in (imported["id"], 10**9, "1x", "-1"):
        assert client.get(f"/console/contacts/checks/{bad}").status_code == 404, bad
    client.cookies.clear()
    login(client, email="owner@bakery.example")
    assert client.get(job_url).status_code == 404
    with runtime.engine.begin() as conn:
        target = number_status_jobs.start(conn, runtime.clock, runtime.settings, tea, "test")
    theirs = client.get("/console/suppressions").text
    foreign_stop = client.post(
        f"/console/contacts/checks/{target}/cancel", data={"csrf_token": csrf_field(theirs)}
    )
    assert foreign_stop.status_code == 404
    no_token = client.post(f"/console/contacts/checks/{target}/cancel", data={})
    assert no_token.status_code == 403
    assert "尚未进行过空号检测" in client.get("/console/suppressions").text
    client.cookies.clear()
    login(client, email="analyst@tea.example")
    seen = client.get("/console/suppressions").text
    assert f"#{check_id}" in seen and 'id="start-check"' not in seen
    assert client.get(job_url).status_code == 200
    denied = client.post("/console/contacts/checks", data={"csrf_token": csrf_field(seen)})
    assert denied.status_code == 403
    pending = target  # still pending: another tenant could not stop it
    watched = client.get(f"/console/contacts/checks/{pending}").text
    assert "等待中" in watched and 'id="stop-check"' not in watched
    halt = client.post(
        f"/console/contacts/checks/{pending}/cancel", data={"csrf_token": csrf_field(seen)}
    )
    assert halt.status_code == 403
    # stopped while running: the page follows the run's last batch until it is counted
    from hongyan.db.scope import TenantScope
    from hongyan.db.tables import contact_imports

    def set_result(result: dict[str, object], **values: object) -> None:
        with runtime.engine.begin() as conn:
            conn.execute(
                TenantScope(tea)
                .update(contact_imports)
                .where(contact_imports.c.id == pending)
                .values(result=result, **values)
            )

    set_result({"total": 5, "processed": 0, "after": 0, "run": "r1"}, state="running")
    with runtime.engine.begin() as conn:
        number_status_jobs.cancel(conn, runtime.clock, tea, pending, "user:1")
    finishing = client.get(f"/console/contacts/checks/{pending}").text
    assert "hx-trigger" in finishing and "仍在完成" in finishing
    set_result({"total": 5, "processed": 5, "after": 9, "run": "r1", "settled": True})
    settled = client.get(f"/console/contacts/checks/{pending}").text
    assert "hx-trigger" not in settled and "仍在完成" not in settled
