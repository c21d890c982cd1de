"""Alibaba Cloud SMS: signing against the documented examples, SendSms against a local server
that verifies the signature, and the SmsReport / SmsUp push parser."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.channels import registry
from hongyan.channels.base import (
    CallbackRejected,
    CallbackResult,
    ChannelSpec,
    Outgoing,
    SubmitError,
)
from hongyan.channels.http import aliyun
from hongyan.dispatch.states import Lane, Reason
from hongyan.errors import ValidationFailed
from tests.channels.http.servers import (
    FakeAliyun,
    LocalServer,
    aliyun_expected_signature,
    closed_port,
    run,
)

KEY_ID, SECRET, TOKEN = "LTAI5tHongyanTest", "aliyun-test-secret", "cb-7f3a9d"
NAME = "ali-main"
# Spaces, * and ~ are where RFC 3986 encoding differs from form encoding and from quote().
TEXT = "【鸿雁茶饮】您的订单已发货 (单号 A*1~2)"

# The worked example of Alibaba Cloud's signature document (RPC, DescribeRegions, GET).
DOC_PARAMS = {
    "Timestamp": "2016-02-23T12:46:24Z",
    "Format": "XML",
    "AccessKeyId": "testid",
    "Action": "DescribeRegions",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    "Version": "2014-05-26",
    "SignatureVersion": "1.0",
}
DOC_STRING_TO_SIGN = (
    "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
    "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
    "%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
)
# The SMS product's own example (SendSms with a Chinese SignName, GET, key testSecret).
SMS_DOC_PARAMS = {
    "AccessKeyId": "testId",
    "Action": "SendSms",
    "Format": "XML",
    "OutId": "123",
    "PhoneNumbers": "15300000001",
    "RegionId": "cn-hangzhou",
    "SignName": "阿里云短信测试专用",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
    "SignatureVersion": "1.0",
    "TemplateCode": "SMS_71390007",
    "TemplateParam": '{"customer":"test"}',
    "Timestamp": "2017-07-12T02:42:19Z",
    "Version": "2017-05-25",
}


def make_spec(endpoint: str, window: int = 4, **config: Any) -> ChannelSpec:
    return ChannelSpec(
        name=NAME,
        kind="aliyun",
        config={
            "access_key_id": KEY_ID,
            "sign_name": "鸿雁茶饮",
            "template_code": "SMS_100",
            "endpoint": endpoint,
            "timeout": 3,
            **config,
        },
        secrets={"access_key_secret": SECRET, "callback_token": TOKEN},
        window=window,
    )


def message(i: int, to: str = "+8613812345678", **kw: Any) -> Outgoing:
    kw.setdefault("text", "【鸿雁茶饮】您的订单已发货")
    kw.setdefault("lane", Lane.NOTIFICATION)
    return Outgoing(message_id=i, to=to, **kw)


async def _noop(_: object) -> None:
    return None


async def started(spec: ChannelSpec) -> aliyun.AliyunChannel:
    channel = aliyun.AliyunChannel(spec)
    await channel.start(_noop, _noop)
    return channel


# ---------------------------------------------------------------------------------------------
# Signing


def test_string_to_sign_and_signature_match_the_documented_example() -> None:
    assert aliyun.string_to_sign("GET", DOC_PARAMS) == DOC_STRING_TO_SIGN
    assert aliyun.sign("GET", DOC_PARAMS, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_signature_matches_the_sms_documented_example() -> None:
    assert aliyun.sign("GET", SMS_DOC_PARAMS, "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="
    # The Signature parameter itself never takes part.
    with_sig = {**SMS_DOC_PARAMS, "Signature": "anything"}
    assert aliyun.sign("GET", with_sig, "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_post_signature_differs_only_by_method() -> None:
    # We POST; the verb is the first field of the string to sign.
    assert aliyun.string_to_sign("POST", DOC_PARAMS) == "POST" + DOC_STRING_TO_SIGN[3:]
    assert aliyun.sign("POST", DOC_PARAMS, "testsecret") == "MxbnVAM4w6sft9xjVpe/GCKueuk="
    assert aliyun.sign("POST", DOC_PARAMS, "testsecret") == aliyun_expected_signature(
        "POST", DOC_PARAMS, "testsecret"
    )


def test_percent_encoding_rules() -> None:
    assert aliyun.percent_encode("a b*c~d") == "a%20b%2Ac~d"
    assert aliyun.percent_encode("2016-02-23T12:46:24Z") == "2016-02-23T12%3A46%3A24Z"
    assert aliyun.percent_encode("鸿") == "%E9%B8%BF"
    assert aliyun.percent_encode("+/=&") == "%2B%2F%3D%26"


@given(st.text())
def test_percent_encoding_is_reversible_and_only_unreserved(text: str) -> None:
    encoded = aliyun.percent_encode(text)
    assert re.fullmatch(r"(?:[A-Za-z0-9\-_.~]|%[0-9A-F]{2})*", encoded)
    assert unquote(encoded) == text
    assert encoded == "".join(
        ch if ch.isascii() and (ch.isalnum() or ch in "-_.~") else aliyun.percent_encode(ch)
        for ch in text
    )


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=6))
def test_signature_ignores_parameter_order(params: dict[str, str]) -> None:
    reordered = dict(reversed(list(params.items())))
    assert aliyun.sign("POST", params, "k") == aliyun.sign("POST", reordered, "k")


# ---------------------------------------------------------------------------------------------
# SendSms against the local provider


def test_send_success_carries_the_documented_fields_and_a_blind_carrier_id() -> None:
    fake = FakeAliyun(KEY_ID, SECRET)

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url))
            try:
                ids = await channel.submit(message(41, source="0042", text=TEXT))
                ids2 = await channel.submit(message(42, to="+85291234567", text="Hello"))
            finally:
                await channel.stop()
        assert len(ids) == 1 and len(ids2) == 1
        sent = fake.traffic.requests[0]
        assert sent["PhoneNumbers"] == "13812345678"
        assert sent["SignName"] == "鸿雁茶饮"
        assert sent["TemplateCode"] == "SMS_100"
        # The provider adds the 【signature】 itself: the variable carries the text without it.
        assert json.loads(sent["TemplateParam"]) == {"content": "您的订单已发货 (单号 A*1~2)"}
        assert sent["OutId"] == "41"
        assert sent["SmsUpExtendCode"] == "0042"
        assert sent["RegionId"] == "cn-hangzhou"
        assert fake.traffic.requests[1]["PhoneNumbers"] == "85291234567"
        assert "SmsUpExtendCode" not in fake.traffic.requests[1]
        biz, _, tag = ids[0].partition(":")
        assert biz.endswith("^0") and re.fullmatch(r"[0-9a-f]{16}", tag)
        for cid, number in ((ids[0], "13812345678"), (ids2[0], "91234567")):
            assert number not in cid and len(cid) <= 72

    run(scenario)


def test_receipt_for_the_submitted_message_matches_its_carrier_id() -> None:
    fake = FakeAliyun(KEY_ID, SECRET)

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            spec = make_spec(server.url)
            channel = await started(spec)
            try:
                ids = await channel.submit(message(7))
            finally:
                await channel.stop()
        biz_id = ids[0].split(":")[0]
        push = [
            {
                "phone_number": "13812345678",
                "send_time": "2024-05-01 10:00:00",
                "report_time": "2024-05-01 10:00:03",
                "success": True,
                "err_code": "DELIVERED",
                "err_msg": "用户接收成功",
                "sms_size": "1",
                "biz_id": biz_id,
                "out_id": "7",
            }
        ]
        result = aliyun.parse_callback(
            spec,
            kind="status",
            url=f"https://sms.example.com/callbacks/{NAME}/{TOKEN}/status",
            headers={"Content-Type": "application/json"},
            body=json.dumps(push).encode(),
        )
        assert [r.message_id for r in result.reports] == ids
        report = result.reports[0]
        assert (report.stat, report.err, report.reason, report.state) == (
            "DELIVRD",
            "DELIVERED",
            None,
            2,
        )
        assert "13812345678" not in report.raw and "138****5678" in report.raw
        assert json.loads(result.body) == {"code": 0, "msg": "成功"}

    run(scenario)


SEND_ERRORS = [
    ("isv.BUSINESS_LIMIT_CONTROL", Reason.THROTTLED, True),
    ("isv.DAY_LIMIT_CONTROL", Reason.THROTTLED, True),
    ("isv.MOBILE_NUMBER_ILLEGAL", Reason.INVALID_NUMBER, False),
    ("isv.AMOUNT_NOT_ENOUGH", Reason.CARRIER_ERROR, True),
    ("isv.BLACK_KEY_CONTROL_LIMIT", Reason.REJECTED, False),
    ("isv.SMS_SIGNATURE_ILLEGAL", Reason.REJECTED, False),
    ("isv.SMS_TEMPLATE_ILLEGAL", Reason.REJECTED, False),
    ("isv.TEMPLATE_MISSING_PARAMETERS", Reason.REJECTED, False),
    ("isv.SOMETHING_NEW", Reason.REJECTED, False),
    ("isp.SYSTEM_ERROR", Reason.CARRIER_ERROR, True),
    ("Throttling.User", Reason.THROTTLED, True),
]


def test_error_answers_map_to_reasons() -> None:
    fake = FakeAliyun(KEY_ID, SECRET)
    numbers = {}
    for i, (code, _, _) in enumerate(SEND_ERRORS):
        number = f"1390000{i:04d}"
        numbers[code] = number
        fake.outcomes[number] = (200, {"RequestId": "R", "Code": code, "Message": "no"})
    fake.outcomes["13900009990"] = (503, "<html>Service Unavailable</html>")
    fake.outcomes["13900009991"] = (429, "<html>slow down</html>")
    fake.outcomes["13900009992"] = (200, {"RequestId": "R"})  # no Code: not understood

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url))
            try:
                for code, reason, transient in SEND_ERRORS:
                    with pytest.raises(SubmitError) as caught:
                        await channel.submit(message(1, to="+86" + numbers[code]))
                    assert (caught.value.code, caught.value.reason, caught.value.transient) == (
                        code,
                        reason,
                        transient,
                    ), code
                for number, code, reason in (
                    ("13900009990", "http_503", Reason.CARRIER_ERROR),
                    ("13900009991", "http_429", Reason.THROTTLED),
                    ("13900009992", "http_200", Reason.CARRIER_ERROR),
                ):
                    with pytest.raises(SubmitError) as caught:
                        await channel.submit(message(2, to="+86" + number))
                    assert caught.value.code == code and caught.value.reason is reason
                    assert caught.value.transient
            finally:
                await channel.stop()

    run(scenario)


def test_a_wrong_secret_fails_the_providers_signature_check() -> None:
    fake = FakeAliyun(KEY_ID, "the-real-secret")

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url))
            try:
                with pytest.raises(SubmitError) as caught:
                    await channel.submit(message(1))
            finally:
                await channel.stop()
        assert caught.value.code == "SignatureDoesNotMatch"
        assert caught.value.transient and caught.value.reason is Reason.CARRIER_ERROR

    run(scenario)


def test_every_request_has_a_fresh_nonce_and_a_current_timestamp() -> None:
    fake = FakeAliyun(KEY_ID, SECRET)

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url))
            try:
                await asyncio.gather(*(channel.submit(message(i)) for i in range(10)))
            finally:
                await channel.stop()
        assert len(fake.nonces) == 10  # the fake refuses a reused nonce

    run(scenario)


def test_timeouts_and_refused_connections_are_transient() -> None:
    fake = FakeAliyun(KEY_ID, SECRET)
    fake.traffic.delay = 0.8

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url, timeout=0.3))
            try:
                with pytest.raises(SubmitError) as caught:
                    await channel.submit(message(1))
                assert caught.value.code == "timeout" and caught.value.transient
            finally:
                await channel.stop()
        channel = await started(make_spec(f"http://127.0.0.1:{closed_port()}"))
        try:
            with pytest.raises(SubmitError) as caught:
                await channel.submit(message(1))
            assert caught.value.code == "connect_error" and caught.value.transient
            assert caught.value.reason is Reason.CARRIER_ERROR
        finally:
            await channel.stop()

    run(scenario)


def test_window_bounds_connections_and_they_are_kept_alive() -> None:
    fake = FakeAliyun(KEY_ID, SECRET)
    fake.traffic.delay = 0.05

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url, window=3))
            try:
                await asyncio.gather(*(channel.submit(message(i)) for i in range(15)))
                for i in range(5):
                    await channel.submit(message(100 + i))
            finally:
                await channel.stop()
        assert len(fake.traffic.requests) == 20
        assert fake.traffic.max_in_flight == 3
        assert len(fake.traffic.peers) <= 3  # 20 requests on at most 3 connections

    run(scenario)


def test_ready_from_start_until_stop() -> None:
    async def scenario() -> None:
        channel = aliyun.AliyunChannel(make_spec("http://127.0.0.1:9"))
        assert not channel.ready
        await channel.start(_noop, _noop)
        assert channel.ready
        await channel.stop()
        assert not channel.ready
        with pytest.raises(SubmitError) as caught:
            await channel.submit(message(1))
        assert caught.value.code == "not_started" and caught.value.transient

    run(scenario)


def test_lane_templates_choose_the_template() -> None:
    fake = FakeAliyun(KEY_ID, SECRET)

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            spec = make_spec(
                server.url,
                template_code=None,
                lane_templates={"marketing": "SMS_MKT", "verification": "SMS_CODE"},
                template_param="msg",
            )
            channel = await started(spec)
            try:
                await channel.submit(message(1, lane=Lane.MARKETING, text="春季上新 拒收请回复R"))
                await channel.submit(message(2, lane=Lane.VERIFICATION, text="验证码 123456"))
                with pytest.raises(SubmitError) as caught:
                    await channel.submit(message(3, lane=Lane.NOTIFICATION))
            finally:
                await channel.stop()
        assert [r["TemplateCode"] for r in fake.traffic.requests] == ["SMS_MKT", "SMS_CODE"]
        assert json.loads(fake.traffic.requests[0]["TemplateParam"]) == {
            "msg": "春季上新 拒收请回复R"
        }
        assert caught.value.code == "no_template" and not caught.value.transient

    run(scenario)


# ---------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    ("config", "secrets"),
    [
        ({"access_key_id": "", "sign_name": "s", "template_code": "t"}, {"access_key_secret": "x"}),
        ({"access_key_id": "k", "sign_name": "s", "template_code": "t"}, {}),
        ({"access_key_id": "k", "template_code": "t"}, {"access_key_secret": "x"}),
        ({"access_key_id": "k", "sign_name": "s"}, {"access_key_secret": "x"}),
        (
            {"access_key_id": "k", "sign_name": "s", "lane_templates": {"promo": "t"}},
            {"access_key_secret": "x"},
        ),
        (
            {"access_key_id": "k", "sign_name": "s", "template_code": "t", "endpoint": "ftp://x"},
            {"access_key_secret": "x"},
        ),
        (
            {"access_key_id": "k", "sign_name": "s", "template_code": "t", "timeout": "soon"},
            {"access_key_secret": "x"},
        ),
    ],
)
def test_bad_configuration_is_refused_clearly(
    config: dict[str, Any], secrets: dict[str, str]
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        aliyun.AliyunChannel(ChannelSpec(name="a", kind="aliyun", config=config, secrets=secrets))
    assert caught.value.message_zh and caught.value.message_en.startswith("Channel a")


def test_registered_with_its_parser() -> None:
    assert "aliyun" in registry.kinds()
    assert registry.callback_parser("aliyun") is aliyun.parse_callback
    assert isinstance(registry.build(make_spec("http://127.0.0.1:9")), aliyun.AliyunChannel)


# ---------------------------------------------------------------------------------------------
# Push callbacks

URL = f"https://sms.example.com/callbacks/{NAME}/{TOKEN}"


def _report(**over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "phone_number": "13812345678",
        "send_time": "2024-05-01 10:00:00",
        "report_time": "2024-05-01 10:00:09",
        "success": False,
        "err_code": "UNDELIV",
        "err_msg": "失败",
        "sms_size": "1",
        "biz_id": "900619746936498440^0",
        "out_id": "5",
    }
    record.update(over)
    return record


def _parse(
    records: Any, kind: str = "status", url: str = URL, spec: ChannelSpec | None = None
) -> CallbackResult:
    body = records if isinstance(records, bytes) else json.dumps(records).encode()
    return aliyun.parse_callback(
        spec or make_spec("http://127.0.0.1:9", invalid_errs=["MK:0001"]),
        kind=kind,
        url=url,
        headers={},
        body=body,
    )


def test_failed_receipts_are_read_into_reasons() -> None:
    records = [
        _report(err_code="UNDELIV"),
        _report(err_code="MK:0001", err_msg="其他"),  # configured as 空号 on this channel
        _report(err_code="INVALID_NUMBER"),
        _report(err_code="MOBILE_NOT_ON_SERVICE", err_msg="停机"),
        _report(err_code="MOBILE_IN_BLACK"),
        _report(err_code="EXPIRED"),
        _report(err_code="DB:0141", err_msg="空号"),  # unknown code, told by its description
        _report(err_code="UNKNOWN"),
        _report(success="true", err_code="DELIVERED", phone_number="+8613812345678"),
    ]
    got = [(r.stat, r.reason) for r in _parse(records).reports]
    assert got == [
        ("UNDELIV", Reason.CARRIER_ERROR),
        ("UNDELIV", Reason.INVALID_NUMBER),
        ("UNDELIV", Reason.INVALID_NUMBER),
        ("UNDELIV", Reason.POWERED_OFF),
        ("REJECTD", Reason.BLOCKED),
        ("EXPIRED", Reason.EXPIRED),
        ("UNDELIV", Reason.INVALID_NUMBER),
        ("UNKNOWN", Reason.UNKNOWN),
        ("DELIVRD", None),
    ]
    # The same number written with or without +86 gets the same carrier id.
    ids = {r.message_id for r in _parse(records).reports}
    assert len(ids) == 1


def test_replies_become_inbound_messages() -> None:
    push = [
        {
            "phone_number": "13812345678",
            "send_time": "2024-05-01 10:05:00",
            "content": "TD",
            "sign_name": "鸿雁茶饮",
            "dest_code": "0042",
            "sequence_id": 1234567,
        }
    ]
    spec = make_spec("http://127.0.0.1:9", source_addr="1069")
    result = _parse(push, kind="reply", spec=spec)
    assert [(i.source, i.destination, i.text) for i in result.inbounds] == [
        ("+8613812345678", "10690042", "TD")
    ]
    assert json.loads(result.body) == {"code": 0, "msg": "成功"}


@pytest.mark.parametrize(
    ("body", "url", "status"),
    [
        (b"{not json", URL, 400),
        (b'"a string"', URL, 400),
        (json.dumps([1, 2]).encode(), URL, 400),
        (json.dumps([_report(biz_id=None)]).encode(), URL, 400),
        (json.dumps([_report(success="maybe")]).encode(), URL, 400),
        (json.dumps([_report(phone_number="1381111****")]).encode(), URL, 400),
        (json.dumps([_report()]).encode(), f"https://sms.example.com/callbacks/{NAME}/wrong", 403),
        (json.dumps([_report()]).encode(), "https://sms.example.com/callbacks/other/x", 403),
        (json.dumps([_report()]).encode(), f"https://sms.example.com/callbacks/{NAME}", 403),
    ],
)
def test_bad_pushes_are_rejected(body: bytes, url: str, status: int) -> None:
    with pytest.raises(CallbackRejected) as caught:
        _parse(body, url=url)
    assert caught.value.status_code == status


def test_a_channel_without_a_callback_token_accepts_no_push() -> None:
    spec = ChannelSpec(
        name=NAME,
        kind="aliyun",
        config={"access_key_id": KEY_ID, "sign_name": "s", "template_code": "t"},
        secrets={"access_key_secret": SECRET},
    )
    with pytest.raises(CallbackRejected) as caught:
        _parse([_report()], spec=spec)
    assert caught.value.status_code == 403


def test_token_may_come_as_a_query_parameter_and_kind_must_be_known() -> None:
    assert _parse([_report()], url=f"https://h/cb?token={TOKEN}").reports
    with pytest.raises(CallbackRejected) as caught:
        _parse([_report()], kind="mystery")
    assert caught.value.status_code == 404
