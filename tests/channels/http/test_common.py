"""The pure helpers the provider channels share."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.channels.base import CallbackRejected, ChannelSpec
from hongyan.channels.http.common import (
    CODE_MAX,
    ReceiptCodes,
    Templates,
    check_token,
    classify_failure,
    e164_of,
    fit_code,
    header,
    number_tag,
    provider_number,
    strip_signature,
    url_token,
)
from hongyan.dispatch.states import Lane, Reason
from hongyan.errors import ValidationFailed


@given(st.text(alphabet=st.sampled_from("abcXYZ._"), max_size=80))
def test_fit_code_always_fits_and_keeps_short_codes(code: str) -> None:
    fitted = fit_code(code)
    assert len(fitted) <= CODE_MAX
    assert fit_code(fitted) == fitted
    if len(code.strip()) <= CODE_MAX:
        assert fitted == code.strip()
    else:
        assert code.strip().endswith(fitted) or code.strip().startswith(fitted)


def test_fit_code_drops_the_class_of_long_codes() -> None:
    assert fit_code("InvalidParameterValue.IncorrectPhoneNumber") == "IncorrectPhoneNumber"
    assert fit_code("isv.BUSINESS_LIMIT_CONTROL") == "isv.BUSINESS_LIMIT_CONTROL"


mainland = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)


@given(mainland)
def test_every_spelling_of_a_mainland_number_gets_the_same_tag(national: str) -> None:
    forms = [national, "+86" + national, "86" + national, "0086" + national, f"+86 {national}"]
    assert {provider_number(f) for f in forms} == {national}
    tags = {number_tag(f, "k", "aliyun") for f in forms}
    assert len(tags) == 1
    (tag,) = tags
    assert re.fullmatch(r"[0-9a-f]{16}", tag)
    assert number_tag(national, "other key", "aliyun") != tag
    assert e164_of("", national) == "+86" + national
    assert e164_of("86", national) == "+86" + national


def test_international_numbers_keep_their_country_code() -> None:
    assert provider_number("+85291234567") == "85291234567"
    assert provider_number("+14155550100") == "14155550100"
    assert e164_of("852", "91234567") == "+85291234567"
    assert e164_of("", "+14155550100") == "+14155550100"
    assert e164_of("", "0014155550100") == "+14155550100"
    assert e164_of("", "008613812345678") == "+8613812345678"
    # Without a country code, 11 digits starting with 1 are a mainland mobile.
    assert e164_of("", "13812345678") == "+8613812345678"


def test_url_token() -> None:
    assert url_token("https://h/callbacks/ch/tok/status", "ch") == "tok"
    assert url_token("https://h/callbacks/ch/tok", "ch") == "tok"
    assert url_token("https://h/callbacks/ch", "ch") is None
    assert url_token("https://h/cb?token=abc", "ch") == "abc"
    assert url_token("https://h/callbacks/other/tok", "ch") is None


def test_check_token_is_exact() -> None:
    spec = ChannelSpec("ch", "aliyun", secrets={"callback_token": "secret-token"})
    check_token(spec, "https://h/callbacks/ch/secret-token/status")
    for bad in ("secret-toke", "secret-token2", "SECRET-TOKEN", ""):
        with pytest.raises(CallbackRejected):
            check_token(spec, f"https://h/callbacks/ch/{bad}/status")


def test_header_lookup_ignores_case() -> None:
    assert header({"x-twilio-signature": "a"}, "X-Twilio-Signature") == "a"
    assert header({"X-Twilio-Signature": "b"}, "X-Twilio-Signature") == "b"
    assert header({}, "X-Twilio-Signature") is None


@given(st.text(max_size=12), st.text(max_size=20))
def test_classify_failure_is_total_and_never_says_delivered(err: str, text: str) -> None:
    stat, reason = classify_failure(err, text, ReceiptCodes(frozenset(), frozenset(), frozenset()))
    assert stat in {"UNDELIV", "REJECTD", "EXPIRED", "UNKNOWN"}
    assert isinstance(reason, Reason)


def test_configured_codes_win_over_descriptions() -> None:
    codes = ReceiptCodes(frozenset({"MK:0001"}), frozenset({"DB:0008"}), frozenset())
    assert classify_failure("mk:0001", "停机", codes) == ("UNDELIV", Reason.INVALID_NUMBER)
    assert classify_failure("DB:0008", "空号", codes) == ("REJECTD", Reason.BLOCKED)
    assert classify_failure("X", "号码为空号", codes) == ("UNDELIV", Reason.INVALID_NUMBER)


def test_templates_by_lane() -> None:
    spec = ChannelSpec(
        "c", "aliyun", config={"template_code": "T0", "lane_templates": {"marketing": "TM"}}
    )
    templates = Templates.from_spec(spec)
    assert templates.for_lane(Lane.MARKETING) == "TM"
    assert templates.for_lane(Lane.VERIFICATION) == "T0"
    with pytest.raises(ValidationFailed):
        Templates.from_spec(ChannelSpec("c", "aliyun", config={"lane_templates": ["x"]}))


def test_strip_signature() -> None:
    assert strip_signature("【鸿雁】你好", "鸿雁") == "你好"
    assert strip_signature("你好【鸿雁】", "鸿雁") == "你好"
    assert strip_signature("【别家】你好", "鸿雁") == "【别家】你好"
    assert strip_signature("【鸿雁】你好", "") == "【鸿雁】你好"
