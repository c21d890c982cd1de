"""Tencent Cloud SMS: TC3-HMAC-SHA256 against the documented example, SendSms against a local
server that verifies the signature, and the status / reply push parser."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from hongyan.channels import registry
from hongyan.channels.base import (
    CallbackRejected,
    CallbackResult,
    ChannelSpec,
    Outgoing,
    SubmitError,
)
from hongyan.channels.http import tencent
from hongyan.clock import FixedClock
from hongyan.dispatch.states import Lane, Reason
from hongyan.errors import ValidationFailed
from tests.channels.http.servers import FakeTencent, LocalServer, run, tc3_expected_signature

SECRET_ID, SECRET_KEY, APP_ID, TOKEN = "AKIDhongyantest", "tencent-test-key", "1400000001", "cb-t1"
NAME = "tc-main"

# The worked example of Tencent Cloud's "Signature v3" document (CVM DescribeInstances). The
# document masks the key with asterisks; the published results are for that literal string.
DOC_KEY = "Gu5t9xGARNpq86cd98joQYCN3*******"
DOC_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******"
DOC_TS = 1551113065
DOC_PAYLOAD = (
    b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
)
DOC_HEADERS = {"content-type": "application/json; charset=utf-8", "host": "cvm.tencentcloudapi.com"}
DOC_CANONICAL = (
    "POST\n/\n\n"
    "content-type:application/json; charset=utf-8\n"
    "host:cvm.tencentcloudapi.com\n"
    "\n"
    "content-type;host\n"
    "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
)
DOC_STRING_TO_SIGN = (
    "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
    "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
)
DOC_SIGNATURE = "2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c"


def test_canonical_request_matches_the_documented_example() -> None:
    assert tencent.canonical_request("POST", "/", "", DOC_HEADERS, DOC_PAYLOAD) == DOC_CANONICAL


def test_string_to_sign_and_signature_match_the_documented_example() -> None:
    assert tencent.string_to_sign(DOC_TS, "cvm", DOC_CANONICAL) == DOC_STRING_TO_SIGN
    assert tencent.signature(DOC_KEY, DOC_TS, "cvm", DOC_CANONICAL) == DOC_SIGNATURE
    # The timestamp's UTC date (2019-02-25), not Beijing's (02-26), is the credential date.
    assert tencent.utc_date(DOC_TS) == "2019-02-25"


def test_authorization_header_matches_the_documented_example() -> None:
    assert tencent.authorization(
        DOC_ID,
        DOC_KEY,
        DOC_TS,
        "cvm",
        method="POST",
        path="/",
        query="",
        headers=DOC_HEADERS,
        payload=DOC_PAYLOAD,
    ) == (
        f"TC3-HMAC-SHA256 Credential={DOC_ID}/2019-02-25/cvm/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={DOC_SIGNATURE}"
    )


def test_derived_key_chain_step_by_step() -> None:
    assert tc3_expected_signature(DOC_KEY, "2019-02-25", str(DOC_TS), "cvm", DOC_CANONICAL) == (
        DOC_SIGNATURE
    )


def make_spec(endpoint: str, window: int = 4, **config: Any) -> ChannelSpec:
    return ChannelSpec(
        name=NAME,
        kind="tencent",
        config={
            "secret_id": SECRET_ID,
            "sdk_app_id": APP_ID,
            "sign_name": "鸿雁茶饮",
            "template_code": "1100001",
            "endpoint": endpoint,
            "timeout": 3,
            **config,
        },
        secrets={"secret_key": SECRET_KEY, "callback_token": TOKEN},
        window=window,
    )


def message(i: int, to: str = "+8613812345678", **kw: Any) -> Outgoing:
    kw.setdefault("text", "【鸿雁茶饮】您的订单已发货")
    kw.setdefault("lane", Lane.NOTIFICATION)
    return Outgoing(message_id=i, to=to, **kw)


async def _noop(_: object) -> None:
    return None


async def started(spec: ChannelSpec) -> tencent.TencentChannel:
    channel = tencent.TencentChannel(spec)
    await channel.start(_noop, _noop)
    return channel


def test_send_success_uses_serial_no_and_the_documented_fields() -> None:
    fake = FakeTencent(SECRET_ID, SECRET_KEY, APP_ID)

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url))
            try:
                ids = await channel.submit(message(77, source="0042"))
            finally:
                await channel.stop()
        assert ids == ["2028:00000000000000000001"]
        sent = fake.traffic.requests[0]
        assert sent == {
            "PhoneNumberSet": ["+8613812345678"],
            "SmsSdkAppId": APP_ID,
            "SignName": "鸿雁茶饮",
            "TemplateId": "1100001",
            "TemplateParamSet": ["您的订单已发货"],
            "SessionContext": "77",
            "ExtendCode": "0042",
        }

    run(scenario)


SEND_ERRORS = [
    ("LimitExceeded.PhoneNumberDailyLimit", Reason.THROTTLED, True),
    ("LimitExceeded.PhoneNumberThirtySecondLimit", Reason.THROTTLED, True),
    ("InvalidParameterValue.IncorrectPhoneNumber", Reason.INVALID_NUMBER, False),
    ("FailedOperation.SignatureIncorrectOrUnapproved", Reason.REJECTED, False),
    ("FailedOperation.TemplateIncorrectOrUnapproved", Reason.REJECTED, False),
    ("FailedOperation.ContainSensitiveWord", Reason.REJECTED, False),
    ("FailedOperation.PhoneNumberInBlacklist", Reason.BLOCKED, False),
    ("FailedOperation.InsufficientBalanceInSmsPackage", Reason.CARRIER_ERROR, True),
    ("InternalError.Timeout", Reason.CARRIER_ERROR, True),
    ("InternalError.SendAndRecvFail", Reason.CARRIER_ERROR, True),
    ("SomethingNew.Entirely", Reason.CARRIER_ERROR, True),
]


def test_per_number_and_request_errors_map_to_reasons() -> None:
    fake = FakeTencent(SECRET_ID, SECRET_KEY, APP_ID)
    numbers = {}
    for i, (code, _, _) in enumerate(SEND_ERRORS):
        numbers[code] = f"+861390000{i:04d}"
        fake.number_codes[numbers[code]] = code
    fake.request_errors["+8613900009990"] = "RequestLimitExceeded"
    fake.request_errors["+8613900009991"] = "UnauthorizedOperation.SmsSdkAppIdVerifyFail"
    fake.request_errors["+8613900009992"] = "InvalidParameterValue.TemplateParameterLengthLimit"
    fake.request_errors["+8613900009993"] = (502, "<html>Bad Gateway</html>")

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url))
            try:
                for code, reason, transient in SEND_ERRORS:
                    with pytest.raises(SubmitError) as caught:
                        await channel.submit(message(1, to=numbers[code]))
                    err = caught.value
                    assert (err.reason, err.transient) == (reason, transient), code
                    assert len(err.code) <= 32 and code.endswith(err.code)
                    assert code in str(err)  # the whole code stays in the message
                for number, reason, transient in (
                    ("+8613900009990", Reason.THROTTLED, True),
                    ("+8613900009991", Reason.CARRIER_ERROR, True),
                    ("+8613900009992", Reason.REJECTED, False),
                    ("+8613900009993", Reason.CARRIER_ERROR, True),
                ):
                    with pytest.raises(SubmitError) as caught:
                        await channel.submit(message(2, to=number))
                    assert (caught.value.reason, caught.value.transient) == (reason, transient)
            finally:
                await channel.stop()

    run(scenario)


def test_signs_with_the_utc_date_when_beijing_is_on_the_next_day() -> None:
    at = datetime(2024, 5, 1, 20, 0, tzinfo=UTC)  # 04:00 on 2 May in Beijing
    fake = FakeTencent(SECRET_ID, SECRET_KEY, APP_ID, now=at.timestamp)

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = tencent.TencentChannel(make_spec(server.url), clock=FixedClock(at))
            await channel.start(_noop, _noop)
            try:
                assert await channel.submit(message(1))
            finally:
                await channel.stop()

    run(scenario)


def test_a_wrong_key_fails_the_providers_signature_check() -> None:
    fake = FakeTencent(SECRET_ID, "the-real-key", APP_ID)

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url))
            try:
                with pytest.raises(SubmitError) as caught:
                    await channel.submit(message(1))
            finally:
                await channel.stop()
        assert caught.value.code == "AuthFailure.SignatureFailure"
        assert caught.value.transient

    run(scenario)


def test_window_bounds_connections_and_they_are_kept_alive() -> None:
    fake = FakeTencent(SECRET_ID, SECRET_KEY, APP_ID)
    fake.traffic.delay = 0.05

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url, window=2))
            try:
                ids = await asyncio.gather(*(channel.submit(message(i)) for i in range(10)))
            finally:
                await channel.stop()
        assert len({i[0] for i in ids}) == 10
        assert fake.traffic.max_in_flight == 2 and len(fake.traffic.peers) <= 2

    run(scenario)


def test_international_sender_id_and_lane_templates() -> None:
    fake = FakeTencent(SECRET_ID, SECRET_KEY, APP_ID, region="ap-singapore")

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            spec = make_spec(
                server.url,
                sign_name="",
                sender_id="HONGYAN",
                region="ap-singapore",
                lane_templates={"marketing": "2200002"},
            )
            channel = await started(spec)
            try:
                await channel.submit(message(1, to="+6591234567", text="Hi", lane=Lane.MARKETING))
                await channel.submit(message(2, to="+6591234567", text="Code 1"))
            finally:
                await channel.stop()
        first, second = fake.traffic.requests
        assert "SignName" not in first and first["SenderId"] == "HONGYAN"
        assert (first["TemplateId"], second["TemplateId"]) == ("2200002", "1100001")

    run(scenario)


@pytest.mark.parametrize(
    "missing", ["secret_id", "sdk_app_id", "template_code", "secret_key", "endpoint"]
)
def test_bad_configuration_is_refused(missing: str) -> None:
    spec = make_spec("https://sms.example.com")
    config = {k: v for k, v in spec.config.items() if k != missing}
    if missing == "endpoint":
        config["endpoint"] = "not a url"
    secrets = {k: v for k, v in spec.secrets.items() if k != missing}
    with pytest.raises(ValidationFailed):
        tencent.TencentChannel(ChannelSpec(NAME, "tencent", config, secrets))


def test_registered_with_its_parser() -> None:
    assert registry.callback_parser("tencent") is tencent.parse_callback
    assert isinstance(registry.build(make_spec("http://127.0.0.1:9")), tencent.TencentChannel)


# ---------------------------------------------------------------------------------------------
# Push callbacks

URL = f"https://sms.example.com/callbacks/{NAME}/{TOKEN}"


def _status(**over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "user_receive_time": "2024-05-01 10:00:04",
        "nationcode": "86",
        "mobile": "13812345678",
        "report_status": "SUCCESS",
        "errmsg": "DELIVRD",
        "description": "用户短信送达成功",
        "sid": "2028:00000000000000000001",
    }
    record.update(over)
    return record


def _parse(
    records: Any, kind: str = "status", url: str = URL, spec: ChannelSpec | None = None
) -> CallbackResult:
    body = records if isinstance(records, bytes) else json.dumps(records).encode()
    return tencent.parse_callback(
        spec or make_spec("http://127.0.0.1:9", blocked_errs="MI:0024,MK:0100"),
        kind=kind,
        url=url,
        headers={"Content-Type": "application/json"},
        body=body,
    )


def test_status_callback_reports() -> None:
    records = [
        _status(),
        _status(report_status="FAIL", errmsg="EXPIRED", description="短信过期", sid="s2"),
        _status(report_status="FAIL", errmsg="MI:0024", description="其他", sid="s3"),
        _status(report_status="FAIL", errmsg="MK:0001", description="空号", sid="s4"),
        _status(report_status="FAIL", errmsg="UNDELIV", description="未知", sid="s5"),
        _status(report_status="FAIL", errmsg="MN:0001", description="关机", sid="s6"),
    ]
    result = _parse(records)
    got = [(r.message_id, r.stat, r.err, r.reason) for r in result.reports]
    assert got == [
        ("2028:00000000000000000001", "DELIVRD", "DELIVRD", None),
        ("s2", "EXPIRED", "EXPIRED", Reason.EXPIRED),
        ("s3", "REJECTD", "MI:0024", Reason.BLOCKED),
        ("s4", "UNDELIV", "MK:0001", Reason.INVALID_NUMBER),
        ("s5", "UNDELIV", "UNDELIV", Reason.CARRIER_ERROR),
        ("s6", "UNDELIV", "MN:0001", Reason.POWERED_OFF),
    ]
    assert all("13812345678" not in r.raw for r in result.reports)
    assert json.loads(result.body) == {"result": 0, "errmsg": "OK"}


def test_reply_callback() -> None:
    push = {
        "extend": "0042",
        "mobile": "13812345678",
        "nationcode": "86",
        "sign": "鸿雁茶饮",
        "text": "退订",
        "time": 1714528800,
    }
    result = _parse(push, kind="reply", spec=make_spec("http://x", source_addr="106"))
    assert [(i.source, i.destination, i.text) for i in result.inbounds] == [
        ("+8613812345678", "1060042", "退订")
    ]
    assert json.loads(result.body) == {"result": 0, "errmsg": "OK"}


@pytest.mark.parametrize(
    ("body", "url", "status"),
    [
        (b"\xff\xfe", URL, 400),
        (b"[{]", URL, 400),
        (json.dumps([_status(sid="")]).encode(), URL, 400),
        (json.dumps([_status(report_status="MAYBE")]).encode(), URL, 400),
        (json.dumps([_status(sid={"a": 1})]).encode(), URL, 400),
        (json.dumps([_status()]).encode(), f"https://sms.example.com/callbacks/{NAME}/cb-t2", 403),
    ],
)
def test_bad_pushes_are_rejected(body: bytes, url: str, status: int) -> None:
    with pytest.raises(CallbackRejected) as caught:
        _parse(body, url=url)
    assert caught.value.status_code == status
