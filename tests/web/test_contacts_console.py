"""The contacts console: list with masked numbers, upload → mapping → progress → result."""

from __future__ import annotations

import re
import time

from fastapi.testclient import TestClient

from hongyan.runtime import Runtime
from tests.web.test_console import csrf_field, login, make_tenant

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
    errors = client.get(job_url + "/errors.csv")
    assert errors.status_code == 200 and "bad,坏" in errors.text
    listed = client.get("/console/contacts").text
    assert "138****5678" in listed and "李**" in listed and "13812345678" not in listed
    assert "VIP" in listed and "江苏" in listed
    filtered = client.get("/console/contacts?number=1111").text
    assert "139****1111" in filtered and "138****5678" not in filtered
    bad = client.get("/console/contacts?number=12345")
    assert bad.status_code == 422 and "中国大陆手机号应为 11 位" in bad.text


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
