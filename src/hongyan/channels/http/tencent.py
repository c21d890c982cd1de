"""Tencent Cloud SMS (API 3.0, ``SendSms`` version 2021-01-11), signed with TC3-HMAC-SHA256.

A request is a JSON POST to ``/`` with the headers ``X-TC-Action``, ``X-TC-Timestamp``,
``X-TC-Version``, ``X-TC-Region`` and ``Authorization``. The signature follows the documented
chain: a canonical request (method, path, query, the ``content-type`` and ``host`` headers,
the SHA-256 of the body) → a string to sign (``TC3-HMAC-SHA256``, the timestamp, the credential
scope ``<UTC date>/sms/tc3_request``, the SHA-256 of the canonical request) → a key derived by
HMAC-SHA256 from ``"TC3" + SecretKey`` over the date, the service and ``tc3_request`` → the hex
HMAC of the string to sign. The answer lists ``SendStatusSet[]`` with ``Code`` (``Ok`` or an error
code) and ``SerialNo`` per number; a refused request has ``Response.Error.Code``.

Config: ``secret_id``, ``sdk_app_id``, ``sign_name`` (the approved 签名; may be empty for
international messages), ``template_code`` (the ``TemplateId`` of an approved template with one
variable that carries our rendered text; ``lane_templates`` picks another per lane),
``sender_id`` (international only), ``region`` (default ``ap-guangzhou``), ``endpoint`` (default
``https://sms.tencentcloudapi.com``), ``source_addr`` (the number replies are addressed to before
the extension code), plus the keys in :mod:`.common`. Secrets: ``secret_key``,
``callback_token``.

The carrier id is the ``SerialNo``; the status callback calls it ``sid``. Status reports and
replies are pushed as JSON to ``/callbacks/<channel>/<callback_token>`` (unsigned: the token is
the check) and answered ``{"result":0,"errmsg":"OK"}``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from hongyan.channels.base import (
    CallbackRejected,
    CallbackResult,
    ChannelSpec,
    Inbound,
    Outgoing,
    Report,
)
from hongyan.channels.http.common import (
    STATE_OF_STAT,
    HttpChannel,
    ReceiptCodes,
    Templates,
    check_token,
    classify_failure,
    config_str,
    e164_of,
    field,
    http_failure,
    json_bytes,
    json_records,
    masked_record,
    refused,
    response_json,
    secret_str,
    strip_signature,
)
from hongyan.clock import Clock
from hongyan.dispatch.states import Reason

log = logging.getLogger("hongyan.channels.http.tencent")

API_VERSION = "2021-01-11"
SERVICE = "sms"
ALGORITHM = "TC3-HMAC-SHA256"
DEFAULT_ENDPOINT = "https://sms.tencentcloudapi.com"
CONTENT_TYPE = "application/json; charset=utf-8"
ANSWER = {"result": 0, "errmsg": "OK"}

# ---------------------------------------------------------------------------------------------
# TC3-HMAC-SHA256


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def canonical_request(
    method: str, path: str, query: str, headers: Mapping[str, str], payload: bytes
) -> str:
    """Method, path, query, the signed headers (names and values lower-cased, trimmed, sorted by
    name, each ending in a newline), their names, and the body's SHA-256, one per line."""
    signed = sorted((k.strip().lower(), v.strip().lower()) for k, v in headers.items())
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in signed)
    signed_headers = ";".join(k for k, _ in signed)
    return "\n".join(
        [method.upper(), path, query, canonical_headers, signed_headers, sha256_hex(payload)]
    )


def signed_header_names(headers: Mapping[str, str]) -> str:
    return ";".join(sorted(k.strip().lower() for k in headers))


def utc_date(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def credential_scope(ts: int, service: str) -> str:
    return f"{utc_date(ts)}/{service}/tc3_request"


def string_to_sign(ts: int, service: str, canonical: str) -> str:
    return "\n".join(
        [ALGORITHM, str(ts), credential_scope(ts, service), sha256_hex(canonical.encode())]
    )


def signing_key(secret_key: str, date: str, service: str) -> bytes:
    secret_date = _hmac(f"TC3{secret_key}".encode(), date)
    secret_service = _hmac(secret_date, service)
    return _hmac(secret_service, "tc3_request")


def signature(secret_key: str, ts: int, service: str, canonical: str) -> str:
    key = signing_key(secret_key, utc_date(ts), service)
    return hmac.new(
        key, string_to_sign(ts, service, canonical).encode(), hashlib.sha256
    ).hexdigest()


def authorization(
    secret_id: str,
    secret_key: str,
    ts: int,
    service: str,
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    payload: bytes,
) -> str:
    """The ``Authorization`` header for a request whose signed headers are ``headers``."""
    canonical = canonical_request(method, path, query, headers, payload)
    return (
        f"{ALGORITHM} Credential={secret_id}/{credential_scope(ts, service)}, "
        f"SignedHeaders={signed_header_names(headers)}, "
        f"Signature={signature(secret_key, ts, service, canonical)}"
    )


# ---------------------------------------------------------------------------------------------
# SendSms answers

_T, _P = True, False

#: Codes with a meaning of their own; the rest go by their class (see :func:`send_code_reason`).
#: An empty SMS package is transient like any account trouble: not the message's fault.
SEND_CODES: dict[str, tuple[Reason, bool]] = {
    "InvalidParameterValue.IncorrectPhoneNumber": (Reason.INVALID_NUMBER, _P),
    "FailedOperation.PhoneNumberParseFail": (Reason.INVALID_NUMBER, _P),
    "FailedOperation.PhoneNumberInBlacklist": (Reason.BLOCKED, _P),
    "FailedOperation.InsufficientBalanceInSmsPackage": (Reason.CARRIER_ERROR, _T),
    "UnsupportedOperation.UnsupportedRegion": (Reason.NO_ROUTE, _P),
}

_CLASSES: tuple[tuple[str, Reason, bool], ...] = (
    ("LimitExceeded.", Reason.THROTTLED, _T),  # per-number and per-app frequency limits
    ("RequestLimitExceeded", Reason.THROTTLED, _T),  # the API's own rate limit
    ("InternalError", Reason.CARRIER_ERROR, _T),
    ("AuthFailure", Reason.CARRIER_ERROR, _T),  # a wrong or disabled key: fix the account
    ("UnauthorizedOperation", Reason.CARRIER_ERROR, _T),
    ("ResourceUnavailable", Reason.CARRIER_ERROR, _T),
    ("FailedOperation.", Reason.REJECTED, _P),  # signature, template, content refused
    ("InvalidParameterValue.", Reason.REJECTED, _P),
    ("InvalidParameter", Reason.REJECTED, _P),
    ("MissingParameter", Reason.REJECTED, _P),
    ("UnsupportedOperation", Reason.REJECTED, _P),
)


def send_code_reason(code: str) -> tuple[Reason, bool]:
    """(reason, transient) for a SendSms code other than ``Ok``."""
    if code in SEND_CODES:
        return SEND_CODES[code]
    for prefix, reason, transient in _CLASSES:
        if code.startswith(prefix):
            return reason, transient
    return Reason.CARRIER_ERROR, True


# ---------------------------------------------------------------------------------------------
# Callbacks


def receipt_codes(spec: ChannelSpec) -> ReceiptCodes:
    return ReceiptCodes.for_spec(spec)


def report_of(record: Mapping[str, Any], codes: ReceiptCodes) -> Report:
    sid = field(record, "sid", "status callback")
    status = field(record, "report_status", "status callback").strip().upper()
    err = field(record, "errmsg", "status callback", required=False)
    text = field(record, "description", "status callback", required=False)
    if status == "SUCCESS":
        stat, reason = "DELIVRD", None
    elif status == "FAIL":
        stat, reason = classify_failure(err, text, codes)
    else:
        raise CallbackRejected(f"status callback: report_status {status!r} is not SUCCESS/FAIL")
    return Report(
        message_id=sid,
        stat=stat,
        err=err,
        state=STATE_OF_STAT[stat],
        raw=masked_record(record, {"mobile"}),
        reason=reason,
    )


def inbound_of(record: Mapping[str, Any], source_addr: str) -> Inbound:
    mobile = field(record, "mobile", "reply callback")
    nationcode = field(record, "nationcode", "reply callback", required=False)
    return Inbound(
        source=e164_of(nationcode, mobile),
        destination=source_addr + field(record, "extend", "reply callback", required=False),
        text=field(record, "text", "reply callback", required=False),
    )


def parse_callback(
    spec: ChannelSpec, *, kind: str, url: str, headers: Mapping[str, str], body: bytes
) -> CallbackResult:
    """A status report push (``kind="status"``) or a reply push (``kind="reply"``)."""
    check_token(spec, url)
    if kind == "status":
        codes = receipt_codes(spec)
        reports = [report_of(r, codes) for r in json_records(body, "status callback")]
        return CallbackResult(reports=reports, body=json_bytes(ANSWER))
    if kind == "reply":
        source_addr = str(spec.config.get("source_addr") or "")
        inbounds = [inbound_of(r, source_addr) for r in json_records(body, "reply callback")]
        return CallbackResult(inbounds=inbounds, body=json_bytes(ANSWER))
    raise CallbackRejected(f"unknown callback kind {kind!r}", 404)


# ---------------------------------------------------------------------------------------------
# The channel


class TencentChannel(HttpChannel):
    provider = "tencent"
    default_endpoint = DEFAULT_ENDPOINT

    def __init__(self, spec: ChannelSpec, *, clock: Clock | None = None) -> None:
        super().__init__(spec, clock=clock)
        self.secret_id = config_str(spec, "secret_id")
        self.secret_key = secret_str(spec, "secret_key")
        self.sdk_app_id = config_str(spec, "sdk_app_id")
        self.sign_name = config_str(spec, "sign_name", "")
        self.sender_id = config_str(spec, "sender_id", "")
        self.region = config_str(spec, "region", "ap-guangzhou")
        self.templates = Templates.from_spec(spec)
        self.host = urlsplit(self.endpoint).netloc
        self.path = urlsplit(self.endpoint).path + "/"
        receipt_codes(spec)

    def payload(self, message: Outgoing) -> dict[str, Any]:
        template = self.templates.for_lane(message.lane)
        if template is None:
            raise refused(
                self.provider,
                "no_template",
                f"channel {self.spec.name} has no template for {message.lane.name.lower()}",
                Reason.REJECTED,
                False,
            )
        body: dict[str, Any] = {
            "PhoneNumberSet": [message.to],
            "SmsSdkAppId": self.sdk_app_id,
            "TemplateId": template,
            "TemplateParamSet": [strip_signature(message.text, self.sign_name)],
            "SessionContext": str(message.message_id),
        }
        if self.sign_name:
            body["SignName"] = self.sign_name
        if message.source:
            body["ExtendCode"] = message.source
        if self.sender_id:
            body["SenderId"] = self.sender_id
        return body

    def headers(self, payload: bytes, ts: int) -> dict[str, str]:
        signed = {"content-type": CONTENT_TYPE, "host": self.host}
        return {
            "Authorization": authorization(
                self.secret_id,
                self.secret_key,
                ts,
                SERVICE,
                method="POST",
                path=self.path,
                query="",
                headers=signed,
                payload=payload,
            ),
            "Content-Type": CONTENT_TYPE,
            "Host": self.host,
            "X-TC-Action": "SendSms",
            "X-TC-Timestamp": str(ts),
            "X-TC-Version": API_VERSION,
            "X-TC-Region": self.region,
        }

    async def submit(self, message: Outgoing) -> list[str]:
        payload = json.dumps(self.payload(message), ensure_ascii=False).encode()
        ts = int(self.clock.now().timestamp())
        response = await self.request(
            "POST", self.endpoint + "/", content=payload, headers=self.headers(payload, ts)
        )
        data = response_json(response)
        answer = data.get("Response") if isinstance(data, dict) else None
        if not isinstance(answer, dict):
            raise http_failure(self.provider, response)
        error = answer.get("Error")
        if isinstance(error, dict):
            code = str(error.get("Code") or "UnknownError")
            reason, transient = send_code_reason(code)
            raise refused(self.provider, code, str(error.get("Message", "")), reason, transient)
        statuses = answer.get("SendStatusSet")
        if (
            not isinstance(statuses, list)
            or len(statuses) != 1
            or not isinstance(statuses[0], dict)
        ):
            raise refused(
                self.provider,
                "bad_response",
                "SendStatusSet does not hold exactly one status",
                Reason.CARRIER_ERROR,
                True,
            )
        status = statuses[0]
        code = str(status.get("Code") or "")
        if code.lower() != "ok":
            reason, transient = send_code_reason(code)
            raise refused(self.provider, code, str(status.get("Message", "")), reason, transient)
        serial = str(status.get("SerialNo") or "")
        if not serial:
            # Accepted but unidentifiable: no report can match it. Say so rather than resend.
            log.error(
                "channel %s: Ok without a SerialNo (message %s)", self.spec.name, message.message_id
            )
            serial = f"noserial-{message.message_id}"
        return [serial]
