"""Twilio Messaging: the request validator against Twilio's published vectors, Messages.json
against a local server that checks basic auth, and signed status / incoming-message callbacks."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.channels import registry
from hongyan.channels.base import CallbackRejected, ChannelSpec, Outgoing, SubmitError
from hongyan.channels.http import twilio
from hongyan.dispatch.states import Lane, Reason
from hongyan.errors import ValidationFailed
from tests.channels.http.servers import FakeTwilio, LocalServer, run, twilio_expected_signature

ACCOUNT, AUTH_TOKEN, TOKEN = "AC" + "1" * 32, "twilio-test-token", "cb-tw9"
NAME = "tw-us"
CALLBACK = "https://sms.example.com/callbacks/tw-us/{token}/status"

# Twilio's own request-validator vectors (auth token 12345).
VEC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VEC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}


def test_signature_matches_twilios_vectors() -> None:
    params = list(VEC_PARAMS.items())
    assert twilio.compute_signature("12345", VEC_URL, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    duplicated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert twilio.compute_signature("12345", VEC_URL, duplicated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    assert twilio.verify("12345", VEC_URL, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert twilio_expected_signature("12345", VEC_URL, VEC_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_signature_accepts_the_url_with_or_without_its_port() -> None:
    params = list(VEC_PARAMS.items())
    with_port = VEC_URL.replace(".com", ".com:1234")
    assert twilio.verify("12345", with_port, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert twilio.verify("12345", VEC_URL, params, "kvajT1Ptam85bY51eRf/AJRuM3w=")  # with :443
    http = VEC_URL.replace("https", "http")
    assert twilio.verify("12345", http, params, "0ZXoZLH/DfblKGATFgpif+LLRf4=")  # with :80
    http_port = with_port.replace("https", "http")
    assert twilio.verify("12345", http_port, params, "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=")
    assert not twilio.verify("12345", VEC_URL, params, "kvajT1Ptam85bY51eRf/AJRuM3w")
    assert not twilio.verify("1234", VEC_URL, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


@given(
    st.dictionaries(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=6),
        st.text(st.characters(codec="utf-8"), max_size=8),
        max_size=6,
    ),
    st.randoms(),
)
def test_signature_does_not_depend_on_parameter_order(params: dict[str, str], rnd: Any) -> None:
    items = list(params.items())
    shuffled = items[:]
    rnd.shuffle(shuffled)
    assert twilio.compute_signature("t", VEC_URL, items) == twilio.compute_signature(
        "t", VEC_URL, shuffled
    )
    assert twilio.compute_signature("t", VEC_URL, items) == twilio_expected_signature(
        "t", VEC_URL, params
    )


def make_spec(endpoint: str, window: int = 4, **config: Any) -> ChannelSpec:
    return ChannelSpec(
        name=NAME,
        kind="twilio",
        config={
            "account_sid": ACCOUNT,
            "from": "+15005550006",
            "status_callback": CALLBACK,
            "endpoint": endpoint,
            "timeout": 3,
            **config,
        },
        secrets={"auth_token": AUTH_TOKEN, "callback_token": TOKEN},
        window=window,
    )


def message(i: int, to: str = "+14155550100", **kw: Any) -> Outgoing:
    kw.setdefault("text", "Your order has shipped. Reply STOP to opt out.")
    kw.setdefault("lane", Lane.NOTIFICATION)
    return Outgoing(message_id=i, to=to, **kw)


async def _noop(_: object) -> None:
    return None


async def started(spec: ChannelSpec) -> twilio.TwilioChannel:
    channel = twilio.TwilioChannel(spec)
    await channel.start(_noop, _noop)
    return channel


def test_send_and_a_signed_status_callback_match() -> None:
    fake = FakeTwilio(ACCOUNT, AUTH_TOKEN)

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            spec = make_spec(server.url)
            channel = await started(spec)
            try:
                ids = await channel.submit(message(5))
            finally:
                await channel.stop()
        sent = fake.traffic.requests[0]
        assert sent["To"] == "+14155550100" and sent["From"] == "+15005550006"
        assert sent["Body"] == "Your order has shipped. Reply STOP to opt out."
        assert sent["StatusCallback"] == f"https://sms.example.com/callbacks/tw-us/{TOKEN}/status"
        assert ids[0].startswith("SM") and len(ids[0]) == 34
        outcomes = {}
        for status in ("queued", "sent", "delivered"):
            url, headers, body = fake.status_callback(sent, ids[0], status)
            result = twilio.parse_callback(spec, kind="status", url=url, headers=headers, body=body)
            outcomes[status] = result.reports
            assert result.status_code == 200
        assert outcomes["queued"] == [] and outcomes["sent"] == []
        (report,) = outcomes["delivered"]
        assert (report.message_id, report.stat, report.reason, report.state) == (
            ids[0],
            "DELIVRD",
            None,
            2,
        )
        assert "+14155550100" not in report.raw

    run(scenario)


def test_messaging_service_and_api_key_authentication() -> None:
    fake = FakeTwilio(ACCOUNT, AUTH_TOKEN, api_keys={("SK" + "2" * 32, "key-secret")})

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            spec = make_spec(
                server.url,
                messaging_service_sid="MG" + "3" * 32,
                api_key_sid="SK" + "2" * 32,
                status_callback=None,
            )
            spec = ChannelSpec(
                spec.name, spec.kind, spec.config, {**spec.secrets, "api_key_secret": "key-secret"}
            )
            channel = await started(spec)
            try:
                await channel.submit(message(1))
            finally:
                await channel.stop()
        sent = fake.traffic.requests[0]
        assert sent["MessagingServiceSid"] == "MG" + "3" * 32
        assert "From" not in sent and "StatusCallback" not in sent

    run(scenario)


SEND_ERRORS: list[tuple[int, Any, Reason, bool]] = [
    (400, {"code": 21211, "message": "Invalid 'To' Phone Number"}, Reason.INVALID_NUMBER, False),
    (400, {"code": 21614, "message": "not a mobile number"}, Reason.INVALID_NUMBER, False),
    (400, {"code": 21610, "message": "unsubscribed recipient"}, Reason.BLOCKED, False),
    (400, {"code": 21408, "message": "region not enabled"}, Reason.NO_ROUTE, False),
    (429, {"code": 20429, "message": "Too Many Requests"}, Reason.THROTTLED, True),
    (429, {"code": 14107, "message": "rate limit exceeded"}, Reason.THROTTLED, True),
    (400, {"code": 21999, "message": "something new"}, Reason.REJECTED, False),
    (503, "<html>down</html>", Reason.CARRIER_ERROR, True),
    (429, "<html>slow</html>", Reason.THROTTLED, True),
    (
        201,
        {"sid": "SMx", "status": "failed", "error_code": 30007, "error_message": "filtered"},
        Reason.BLOCKED,
        False,
    ),
]


def test_error_answers_map_to_reasons() -> None:
    fake = FakeTwilio(ACCOUNT, AUTH_TOKEN)
    for i, (status, body, _, _) in enumerate(SEND_ERRORS):
        fake.outcomes[f"+1415555{i:04d}"] = (status, body)

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url))
            try:
                for i, (_, body, reason, transient) in enumerate(SEND_ERRORS):
                    with pytest.raises(SubmitError) as caught:
                        await channel.submit(message(i, to=f"+1415555{i:04d}"))
                    assert (caught.value.reason, caught.value.transient) == (reason, transient), i
                    if isinstance(body, dict):
                        assert caught.value.code == str(body.get("code") or body["error_code"])
            finally:
                await channel.stop()

    run(scenario)


def test_a_wrong_auth_token_is_refused_and_transient() -> None:
    fake = FakeTwilio(ACCOUNT, "the-real-token")

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url))
            try:
                with pytest.raises(SubmitError) as caught:
                    await channel.submit(message(1))
            finally:
                await channel.stop()
        assert caught.value.code == "20003" and caught.value.transient

    run(scenario)


def test_window_bounds_connections() -> None:
    fake = FakeTwilio(ACCOUNT, AUTH_TOKEN)
    fake.traffic.delay = 0.05

    async def scenario() -> None:
        async with LocalServer(fake.app()) as server:
            channel = await started(make_spec(server.url, window=2))
            try:
                await asyncio.gather(*(channel.submit(message(i)) for i in range(8)))
            finally:
                await channel.stop()
        assert fake.traffic.max_in_flight == 2 and len(fake.traffic.peers) <= 2

    run(scenario)


@pytest.mark.parametrize(
    "config",
    [
        {"account_sid": ACCOUNT},  # neither from nor messaging_service_sid
        {"from": "+15005550006"},  # no account
        {"account_sid": ACCOUNT, "from": "+1", "status_callback": "ftp://x/{token}"},
        {"account_sid": ACCOUNT, "from": "+1", "api_key_sid": "SK1"},  # no api_key_secret
    ],
)
def test_bad_configuration_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed):
        twilio.TwilioChannel(
            ChannelSpec(NAME, "twilio", config, {"auth_token": AUTH_TOKEN, "callback_token": "t"})
        )


def test_registered_with_its_parser() -> None:
    assert registry.callback_parser("twilio") is twilio.parse_callback
    assert isinstance(registry.build(make_spec("http://127.0.0.1:9")), twilio.TwilioChannel)


# ---------------------------------------------------------------------------------------------
# Callbacks

SPEC = make_spec("http://127.0.0.1:9")
STATUS_URL = f"https://sms.example.com/callbacks/tw-us/{TOKEN}/status"


def signed(params: dict[str, str], url: str = STATUS_URL, token: str = AUTH_TOKEN) -> Any:
    return {"X-Twilio-Signature": twilio_expected_signature(token, url, params)}


def status_params(status: str, code: str = "") -> dict[str, str]:
    params = {
        "AccountSid": ACCOUNT,
        "MessageSid": "SM" + "a" * 32,
        "MessageStatus": status,
        "To": "+14155550100",
        "From": "+15005550006",
        "ApiVersion": "2010-04-01",
    }
    if code:
        params["ErrorCode"] = code
    return params


@pytest.mark.parametrize(
    ("status", "code", "stat", "reason"),
    [
        ("delivered", "", "DELIVRD", None),
        ("undelivered", "30005", "UNDELIV", Reason.INVALID_NUMBER),
        ("undelivered", "30003", "UNDELIV", Reason.POWERED_OFF),
        ("undelivered", "30006", "UNDELIV", Reason.INVALID_NUMBER),
        ("undelivered", "30008", "UNDELIV", Reason.CARRIER_ERROR),
        ("undelivered", "", "UNDELIV", Reason.CARRIER_ERROR),
        ("failed", "30007", "REJECTD", Reason.BLOCKED),
        ("failed", "30004", "REJECTD", Reason.BLOCKED),
        ("failed", "21610", "REJECTD", Reason.BLOCKED),
        ("failed", "99999", "REJECTD", Reason.REJECTED),
    ],
)
def test_final_statuses_become_reports(
    status: str, code: str, stat: str, reason: Reason | None
) -> None:
    params = status_params(status, code)
    result = twilio.parse_callback(
        SPEC, kind="status", url=STATUS_URL, headers=signed(params), body=urlencode(params).encode()
    )
    (report,) = result.reports
    assert (report.stat, report.err, report.reason) == (stat, code, reason)


@pytest.mark.parametrize("status", ["accepted", "queued", "sending", "sent", "scheduled", "new"])
def test_intermediate_statuses_produce_no_report(status: str) -> None:
    params = status_params(status)
    result = twilio.parse_callback(
        SPEC, kind="status", url=STATUS_URL, headers=signed(params), body=urlencode(params).encode()
    )
    assert result.reports == [] and result.status_code == 200


def test_signature_is_checked_against_the_public_url_behind_a_proxy() -> None:
    params = status_params("delivered")
    inner = f"http://127.0.0.1:8000/callbacks/tw-us/{TOKEN}/status"
    result = twilio.parse_callback(
        SPEC, kind="status", url=inner, headers=signed(params), body=urlencode(params).encode()
    )
    assert len(result.reports) == 1
    bare = make_spec("http://127.0.0.1:9", status_callback=None)
    with pytest.raises(CallbackRejected):
        twilio.parse_callback(
            bare, kind="status", url=inner, headers=signed(params), body=urlencode(params).encode()
        )
    behind = make_spec(
        "http://127.0.0.1:9", status_callback=None, public_base="https://sms.example.com"
    )
    assert twilio.parse_callback(
        behind, kind="status", url=inner, headers=signed(params), body=urlencode(params).encode()
    ).reports


def _rejected(headers: Any, body: bytes, kind: str = "status", spec: ChannelSpec = SPEC) -> int:
    with pytest.raises(CallbackRejected) as caught:
        twilio.parse_callback(spec, kind=kind, url=STATUS_URL, headers=headers, body=body)
    return caught.value.status_code


def test_bad_callbacks_are_rejected() -> None:
    params = status_params("delivered")
    body = urlencode(params).encode()
    assert _rejected({}, body) == 403  # no signature
    assert _rejected(signed(params, token="other"), body) == 403  # wrong key
    tampered = urlencode({**params, "MessageStatus": "undelivered"}).encode()
    assert _rejected(signed(params), tampered) == 403  # body changed after signing
    assert _rejected(signed(params, url=STATUS_URL + "x"), body) == 403  # another URL
    assert _rejected({"X-Twilio-Signature": "x"}, b"\xff\xfe") == 400
    assert _rejected({"X-Twilio-Signature": "x"}, b"a=1&b") == 400
    other = {**params, "AccountSid": "AC" + "9" * 32}
    assert _rejected(signed(other), urlencode(other).encode()) == 403
    empty: dict[str, str] = {}
    assert _rejected(signed(empty), b"") == 400  # no MessageSid
    no_token = ChannelSpec(NAME, "twilio", SPEC.config, {})
    assert _rejected(signed(params), body, spec=no_token) == 503
    assert _rejected(signed(params), body, kind="mystery") == 404


def test_lowercase_signature_header_is_accepted() -> None:
    params = status_params("delivered")
    headers = {"x-twilio-signature": signed(params)["X-Twilio-Signature"]}
    result = twilio.parse_callback(
        SPEC, kind="status", url=STATUS_URL, headers=headers, body=urlencode(params).encode()
    )
    assert len(result.reports) == 1


def test_incoming_message_becomes_inbound() -> None:
    url = f"https://sms.example.com/callbacks/tw-us/{TOKEN}/reply"
    params = {
        "AccountSid": ACCOUNT,
        "MessageSid": "SM" + "b" * 32,
        "SmsStatus": "received",
        "From": "+14155550100",
        "To": "+15005550006",
        "Body": "STOP",
        "NumMedia": "0",
    }
    result = twilio.parse_callback(
        SPEC, kind="reply", url=url, headers=signed(params, url), body=urlencode(params).encode()
    )
    assert [(i.source, i.destination, i.text) for i in result.inbounds] == [
        ("+14155550100", "+15005550006", "STOP")
    ]
    assert result.media_type == "text/xml" and b"<Response>" in result.body
    del params["From"]
    with pytest.raises(CallbackRejected):
        twilio.parse_callback(
            SPEC,
            kind="reply",
            url=url,
            headers=signed(params, url),
            body=urlencode(params).encode(),
        )
