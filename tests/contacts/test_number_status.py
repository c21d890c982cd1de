"""空号检测 providers: the generic paid HTTP service against a real local vendor, the combined
mode, the settings-driven factory, and the CLI with the paid service configured (the API's
background job: tests/api/test_number_checks_api.py; the job itself:
tests/contacts/test_number_status_jobs.py).

The vendor is an ``http.server`` on 127.0.0.1 in a thread, written from the usual vendor
contract (POST a JSON batch with a key header, answer ``{"code": 0, "data": [{number,
status}]}``), that can be told to time out, answer 500, answer garbage or leave numbers out.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from hongyan.cli.main import app
from hongyan.contacts import importer, number_status, service
from hongyan.contacts.number_status_http import HttpConfig, HttpNumberStatus, parse_codes
from hongyan.db.scope import TenantScope
from hongyan.db.tables import messages, suppressions
from hongyan.dispatch import outbox
from hongyan.dispatch.states import Lane
from hongyan.errors import ConfigurationError
from hongyan.runtime import Runtime
from hongyan.settings import Settings, get_settings
from tests.cli.test_cli import cli  # noqa: F401  (the fixture)

KEY = "vk-7f3a9c2e51d8b4a6"


def _national(number: str) -> str:
    digits = "".join(ch for ch in number if ch.isdigit())
    return digits[2:] if digits.startswith("86") and len(digits) == 13 else digits


@dataclass
class FakeVendor:
    """A paid number-status service: checks the key, answers each number's code, and misbehaves
    on request. ``script`` holds what each successive request gets (``ok`` once it runs out):
    ``ok``, ``slow`` (answers after ``slow_seconds``), ``500``, ``garbage`` (not JSON),
    ``omit`` (leaves the batch's first number out), ``shape`` (no ``data``), ``hold`` (answers
    once ``release`` is set, at most 20 s later)."""

    key: str = KEY
    #: national number → the code answered; others answer ``default``.
    codes: dict[str, Any] = field(default_factory=dict)
    default: Any = 1
    script: list[str] = field(default_factory=list)
    #: national numbers never answered for
    omit: set[str] = field(default_factory=set)
    #: ``list``: data is [{number, status}]; ``object``: data.list is {number: code}.
    shape: str = "list"
    slow_seconds: float = 3.0
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, headers: dict[str, str], raw: bytes) -> tuple[int, bytes, float]:
        body = json.loads(raw)
        numbers = body["numbers"]
        with self.lock:
            self.requests.append({"headers": headers, "numbers": numbers})
            behaviour = self.script.pop(0) if self.script else "ok"
        if headers.get("x-api-key") != self.key:  # as vendors do: the wrong key echoed back
            sent = headers.get("x-api-key", "")
            return 401, _json({"code": 40101, "msg": f"invalid key {sent}"}), 0
        if behaviour == "hold":
            self.release.wait(20)
        if behaviour == "500":
            return 500, _json({"code": 500, "msg": "internal error"}), 0
        if behaviour == "garbage":
            return 200, b"<html>upstream busy</html>", 0
        if behaviour == "shape":
            return 200, _json({"code": 20001, "msg": f"balance low, first was {numbers[0]}"}), 0
        if behaviour == "omit":
            numbers = numbers[1:]
        numbers = [n for n in numbers if _national(n) not in self.omit]
        codes = {n: self.codes.get(_national(n), self.default) for n in numbers}
        if self.shape == "object":
            payload = {"code": 0, "data": {"list": codes}}
        else:
            payload = {"code": 0, "data": [{"number": n, "status": c} for n, c in codes.items()]}
        return 200, _json(payload), self.slow_seconds if behaviour == "slow" else 0

    @property
    def sizes(self) -> list[int]:
        return [len(r["numbers"]) for r in self.requests]

    @property
    def asked(self) -> list[str]:
        return [n for r in self.requests for n in r["numbers"]]


def _json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    fake = FakeVendor()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body, delay = fake.answer(headers, raw)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up waiting (the timeout case)
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.handle_error = lambda *a: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1/mobile/status"
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(5)


def _settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "number_status_provider": "http",
        "number_status_url": url,
        "number_status_key": SecretStr(KEY),
        "number_status_batch": 3,
        "number_status_timeout": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


def _http(url: str, **overrides: Any) -> HttpNumberStatus:
    return HttpNumberStatus(HttpConfig.from_settings(_settings(url, **overrides)))


def _numbers(count: int, start: int = 0) -> list[str]:
    return [f"+86138{i:08d}" for i in range(start, start + count)]


def _reasons(verdicts: number_status.Verdicts) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in verdicts.failures:
        out[f.reason] = out.get(f.reason, 0) + f.numbers
    return out


def _no_secrets(text: str, numbers: list[str]) -> None:
    assert KEY not in text
    for n in numbers:
        assert _national(n) not in text, n


# -- the provider against the vendor --------------------------------------------------------------


def test_codes_are_mapped_and_numbers_batched_with_the_key(vendor: FakeVendor) -> None:
    numbers = _numbers(7)
    vendor.codes = {_national(numbers[i]): c for i, c in enumerate([1, 0, 2, 3, "4", 9, "0"])}
    verdicts = _http(vendor.url).check(numbers)
    assert [verdicts[n] for n in numbers] == [
        "active", "empty", "unknown", "unknown", "unknown", "unknown", "empty",
    ]  # fmt: skip
    assert vendor.sizes == [3, 3, 1]
    assert vendor.asked == numbers  # E.164 by default
    for r in vendor.requests:
        assert r["headers"]["x-api-key"] == KEY
        assert r["headers"]["content-type"] == "application/json"
    [unlisted] = verdicts.failures
    assert (unlisted.reason, unlisted.numbers) == ("unmapped_code", 1)
    assert "9" in unlisted.detail and "138" not in unlisted.detail


def test_failures_never_make_a_number_empty(
    vendor: FakeVendor, caplog: pytest.LogCaptureFixture
) -> None:
    """Every number is 空号 at the vendor, so any number the client did not hear about must
    come out unknown, never empty, whatever went wrong with its request."""
    numbers = _numbers(14)
    vendor.default = 0
    vendor.script = ["ok", "slow", "500", "garbage", "omit", "shape", "ok"]
    caplog.set_level(logging.WARNING, "hongyan.contacts.number_status")
    began = time.monotonic()
    verdicts = _http(vendor.url, number_status_batch=2, number_status_timeout=0.3).check(numbers)
    assert time.monotonic() - began < vendor.slow_seconds - 0.5  # the timeout cut the wait
    assert vendor.sizes == [2] * 7
    status = [verdicts[n] for n in numbers]
    assert status[0:2] == ["empty", "empty"]
    assert status[2:8] == ["unknown"] * 6  # slow, 500, garbage
    assert status[8:10] == ["unknown", "empty"]  # the vendor left the first out
    assert status[10:12] == ["unknown", "unknown"]  # no data in the answer
    assert status[12:14] == ["empty", "empty"]
    assert _reasons(verdicts) == {"timeout": 2, "http_status": 2, "malformed": 4, "missing": 1}
    assert [(f.reason, f.detail) for f in verdicts.failures] == [
        ("timeout", "no complete answer within 0.3 s"),
        ("http_status", "HTTP 500 (code=500 msg=internal error)"),
        ("malformed", "the answer is not JSON"),
        ("missing", "numbers left out of the answer"),
        # the vendor's own words, its number masked
        ("malformed", "no list or object at 'data' (code=20001 msg=balance low, first was "
         "138****0010)"),
    ]  # fmt: skip
    _no_secrets(" ".join(f.detail for f in verdicts.failures), numbers)
    assert len([r for r in caplog.records if r.name == "hongyan.contacts.number_status"]) == 5
    _no_secrets(caplog.text, numbers)
    assert "138****0002" in caplog.text  # masked numbers say which


def test_a_refused_connection_leaves_numbers_unknown() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    numbers = _numbers(4)
    verdicts = _http(f"http://127.0.0.1:{port}/x").check(numbers)
    assert set(verdicts.values()) == {"unknown"}
    assert _reasons(verdicts) == {"connection": 4}
    assert verdicts.failures[0].detail == "no answer (ConnectError)"


def test_the_key_appears_in_no_log_and_no_error(
    vendor: FakeVendor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    vendor.key = "the-key-the-vendor-expects"
    numbers = _numbers(2)
    verdicts = _http(vendor.url).check(numbers)  # our KEY is wrong: the vendor echoes it
    assert vendor.requests[0]["headers"]["x-api-key"] == KEY
    [f] = verdicts.failures
    assert f.reason == "http_status" and f.detail == "HTTP 401 (code=40101 msg=invalid key ***)"
    assert set(verdicts.values()) == {"unknown"}
    _no_secrets(caplog.text + f.detail, numbers)
    settings = _settings(vendor.url)
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())
    assert KEY not in repr(HttpConfig.from_settings(settings))


def test_national_numbers_and_an_object_answer(vendor: FakeVendor) -> None:
    vendor.shape = "object"
    vendor.codes = {"13900000001": 0}
    numbers = ["+8613800000001", "+12125551234", "+8613900000001"]
    verdicts = _http(
        vendor.url,
        number_status_number_format="national",
        number_status_result_path="data.list",
        number_status_codes="1=active, 0=empty",
    ).check(numbers)
    assert vendor.asked == ["13800000001", "13900000001"]
    assert verdicts == {
        "+8613800000001": "active",
        "+12125551234": "unknown",
        "+8613900000001": "empty",
    }
    assert _reasons(verdicts) == {"not_sent": 1}


def test_status_tables() -> None:
    assert parse_codes("1=active,0=empty,5=Unknown,") == {
        "1": "active",
        "0": "empty",
        "5": "unknown",
    }
    for bad in ("1=active,0=gone", "1", "=empty", "1=active,1=empty", "2=unknown"):
        with pytest.raises(ConfigurationError):
            parse_codes(bad)


# -- the factory ----------------------------------------------------------------------------------


def test_the_settings_choose_the_provider(runtime: Runtime, tenant_id: int) -> None:
    engine, keyring = runtime.engine, runtime.keyring
    default = number_status.provider_for(Settings(env="test"), engine, keyring, tenant_id)
    assert isinstance(default, number_status.ReceiptHistory)
    url = "https://status.example/api"
    paid = number_status.provider_for(_settings(url), engine, keyring, tenant_id)
    assert isinstance(paid, HttpNumberStatus) and paid.name == "http"
    assert (paid.config.url, paid.config.key, paid.config.batch) == (url, KEY, 3)
    assert paid.config.codes == {"1": "active", "0": "empty", **dict.fromkeys("234", "unknown")}
    both = number_status.provider_for(
        _settings(url, number_status_provider="receipts+http"), engine, keyring, tenant_id
    )
    assert isinstance(both, number_status.Chained) and both.name == "receipts+http"
    assert isinstance(both.first, number_status.ReceiptHistory)
    assert isinstance(both.then, HttpNumberStatus)
    wrong: list[dict[str, Any]] = [
        {"number_status_url": ""},
        {"number_status_url": "ftp://status.example"},
        {"number_status_codes": "1=active,0=gone"},
        {"number_status_key_header": "X API Key"},
        {"env": "production", "number_status_url": "http://status.example/api"},
    ]
    for overrides in wrong:
        with pytest.raises(ConfigurationError) as caught:
            _settings(url, **overrides)
        assert KEY not in str(caught.value.body())
    # model_copy skips validation: the factory checks again
    copied = Settings(env="test").model_copy(update={"number_status_provider": "http"})
    with pytest.raises(ConfigurationError):
        number_status.provider_for(copied, engine, keyring, tenant_id)


# -- with the database ----------------------------------------------------------------------------


def _import(runtime: Runtime, tenant_id: int, numbers: list[str]) -> None:
    data = ("手机号\n" + "\n".join(numbers) + "\n").encode()
    service.import_stream(
        runtime,
        tenant_id,
        io.BytesIO(data),
        "c.csv",
        importer.ImportOptions(consent_source="shop", consent_proof="勾选同意"),
    )


def _receipt(runtime: Runtime, tenant_id: int, number: str, state: str, reason: str | None) -> None:
    with runtime.engine.begin() as conn:
        mid, _ = outbox.enqueue(
            conn,
            runtime.clock,
            runtime.keyring,
            tenant_id,
            outbox.NewMessage(number, "【鸿雁茶饮】您好", lane=Lane.NOTIFICATION),
            max_parts=6,
        )
        conn.execute(
            TenantScope(tenant_id)
            .update(messages)
            .where(messages.c.id == mid)
            .values(state=state, reason=reason, done_at=runtime.clock.now())
        )


def _suppressed(runtime: Runtime, tenant_id: int) -> dict[str, str]:
    """masked number → source of its ``invalid`` suppression."""
    s = suppressions.c
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            TenantScope(tenant_id)
            .select(suppressions, s.phone_masked, s.source)
            .where(s.reason == "invalid")
        ).all()
    return {r.phone_masked: r.source for r in rows}


def test_combined_mode_pays_only_for_what_receipts_leave_unknown(
    runtime: Runtime, tenant_id: int, vendor: FakeVendor
) -> None:
    numbers = _numbers(6, start=100)
    _import(runtime, tenant_id, numbers)
    _receipt(runtime, tenant_id, numbers[0], "delivered", None)
    _receipt(runtime, tenant_id, numbers[1], "undelivered", "invalid_number")
    _receipt(runtime, tenant_id, numbers[2], "undelivered", "blocked")  # says nothing on 空号
    vendor.codes = {_national(numbers[2]): 0, _national(numbers[3]): 1, _national(numbers[4]): 3}
    vendor.omit = {_national(numbers[5])}
    settings = _settings(vendor.url, number_status_provider="receipts+http", number_status_batch=4)
    provider = number_status.provider_for(settings, runtime.engine, runtime.keyring, tenant_id)
    summary = number_status.check_contacts(
        runtime.engine, runtime.clock, runtime.keyring, tenant_id, provider
    )
    assert sorted(vendor.asked) == sorted(numbers[2:])
    assert summary.as_dict() == {
        "provider": "receipts+http",
        "checked": 6,
        "active": 2,
        "empty": 2,
        "unknown": 2,
        "skipped": 0,
        "by_provider": {
            "receipts": {"active": 1, "empty": 1, "unknown": 0},
            "http": {"active": 1, "empty": 1, "unknown": 2},
        },
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
    assert _suppressed(runtime, tenant_id) == {"138****0101": "receipts", "138****0102": "http"}
    # Again: the numbers now suppressed as 空号 are not asked about (nor paid for) again.
    vendor.requests.clear()
    again = number_status.check_contacts(
        runtime.engine, runtime.clock, runtime.keyring, tenant_id, provider
    )
    assert sorted(vendor.asked) == sorted(numbers[3:])
    assert (again.skipped, again.counts) == (2, {"active": 2, "empty": 0, "unknown": 2})


def test_the_cli_answers_with_the_paid_service(
    cli,  # type: ignore[no-untyped-def]  # noqa: F811
    vendor: FakeVendor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "PROVIDER": "http",
        "URL": vendor.url,
        "KEY": KEY,
        "BATCH": "2",
        "NUMBER_FORMAT": "digits",
        "CODES": "1=active,0=empty",
    }.items():
        monkeypatch.setenv(f"HONGYAN_NUMBER_STATUS_{name}", value)
    get_settings.cache_clear()
    cli("db", "upgrade")
    cli("tenant", "create", "tea", "--name", "鸿雁茶饮")
    people = tmp_path / "people.csv"
    people.write_text("手机号\n13800000301\n13800000302\n13800000303\n", encoding="utf-8")
    assert cli("contacts", "import", str(people), "--tenant", "tea")["imported"] == 3
    vendor.codes = {"13800000302": 0, "13800000303": 7}
    out = cli("contacts", "check-numbers", "--tenant", "tea")
    assert sorted(vendor.asked) == ["8613800000301", "8613800000302", "8613800000303"]
    assert vendor.sizes == [2, 1]
    assert {k: out[k] for k in ("provider", "checked", "active", "empty", "unknown")} == {
        "provider": "http",
        "checked": 3,
        "active": 1,
        "empty": 1,
        "unknown": 1,
    }
    [f] = out["failures"]
    assert (f["reason"], f["numbers"]) == ("unmapped_code", 1) and "7" in f["detail"]
    listed = cli("suppressions", "list", "--tenant", "tea")["suppressions"]
    assert [(s["phone_masked"], s["reason"], s["source"]) for s in listed] == [
        ("138****0302", "invalid", "http")
    ]
    _no_secrets(json.dumps(out), ["+8613800000301", "+8613800000302", "+8613800000303"])
    # The same job the API runs, in the foreground; without --json the counts are printed
    # after a progress bar.
    assert isinstance(out["job_id"], int)
    shown = CliRunner().invoke(app, ["contacts", "check-numbers", "--tenant", "tea"])
    assert shown.exit_code == 0, shown.output
    assert "http: 2 checked, active 1, empty 0, unknown 1" in shown.output
    assert "1 already suppressed as 空号" in shown.output
    monkeypatch.setenv("HONGYAN_NUMBER_STATUS_CODES", "1=active,0=gone")
    get_settings.cache_clear()
    bad = cli("contacts", "check-numbers", "--tenant", "tea", ok=False)
    assert bad["error"]["code"] == "configuration_error"
    assert "NUMBER_STATUS_CODES" in bad["error"]["message"]["en"]
    monkeypatch.setenv("HONGYAN_NUMBER_STATUS_CODES", "1=active,0=empty")
    get_settings.cache_clear()
    ended = cli(
        "contacts", "check-numbers", "--tenant", "tea", "--resume", str(out["job_id"]), ok=False
    )
    assert ended["error"]["code"] == "number_check_not_resumable"
