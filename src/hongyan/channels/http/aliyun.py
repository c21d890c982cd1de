"""Alibaba Cloud SMS (dysmsapi, RPC style, API version 2017-05-25).

``SendSms`` is a form POST to ``endpoint`` signed with signature version 1.0: the parameters
(common ones such as ``AccessKeyId``, ``SignatureNonce``, ``Timestamp`` and the action's own),
sorted by name and percent-encoded per RFC 3986, make a canonical query string;
``POST&%2F&<that string percent-encoded again>`` is signed with HMAC-SHA1 keyed by
``<AccessKeySecret>&`` and sent base64-encoded as ``Signature``. The answer carries ``Code``
(``OK`` or an error code) and, when accepted, ``BizId``.

Config: ``access_key_id``, ``sign_name`` (the approved 签名), ``template_code`` (an approved
template with one variable, named by ``template_param``, default ``content``, that carries our
rendered text; ``lane_templates`` picks another template per lane), ``region`` (default
``cn-hangzhou``), ``endpoint`` (default ``https://dysmsapi.aliyuncs.com``), ``source_addr``
(the number replies are addressed to, before the extension code; used to route replies), plus
the keys in :mod:`.common`. Secrets: ``access_key_secret``, ``callback_token``.

Carrier id: ``BizId`` identifies a request, not a number, so the id we keep is
``<BizId>:<tag>`` where the tag is a keyed hash of the number (:func:`.common.number_tag`, keyed
by the access key secret): never the number itself, and the report parser derives the same.
Rotating the access key secret while receipts are outstanding leaves those receipts unmatched.

Reports (``SmsReport``) and replies (``SmsUp``) arrive by HTTP batch push (a JSON array) to
``/callbacks/<channel>/<callback_token>``; Alibaba Cloud does not sign them, so the token in the
URL is the check. They are answered ``{"code":0,"msg":"成功"}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

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
    number_tag,
    provider_number,
    refused,
    response_json,
    secret_str,
    strip_signature,
)
from hongyan.clock import Clock
from hongyan.dispatch.states import Reason

log = logging.getLogger("hongyan.channels.http.aliyun")

API_VERSION = "2017-05-25"
DEFAULT_ENDPOINT = "https://dysmsapi.aliyuncs.com"
ANSWER = {"code": 0, "msg": "成功"}

# ---------------------------------------------------------------------------------------------
# Signature version 1.0


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as Alibaba Cloud wants it: only ``A-Z a-z 0-9 - _ . ~`` stay as they are
    (a space is ``%20``, ``*`` is ``%2A``), UTF-8, upper-case hex."""
    return quote(value, safe="~")


def canonical_query(params: Mapping[str, str]) -> str:
    """Every parameter but ``Signature``, sorted by name, as ``name=value`` joined by ``&``."""
    return "&".join(
        f"{percent_encode(k)}={percent_encode(v)}"
        for k, v in sorted(params.items())
        if k != "Signature"
    )


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def sign(method: str, params: Mapping[str, str], secret: str) -> str:
    """The ``Signature`` value: base64(HMAC-SHA1(secret + "&", string_to_sign))."""
    mac = hmac.new(f"{secret}&".encode(), string_to_sign(method, params).encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def timestamp(at: datetime) -> str:
    """ISO 8601 in UTC to the second, as the API wants it (``2017-07-12T02:42:19Z``)."""
    if at.tzinfo is None:
        raise ValueError("a timestamp needs a timezone-aware datetime")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# SendSms answers

_T, _P = True, False  # transient, permanent

#: SendSms ``Code`` values with a known meaning. Account-level trouble (no balance, service
#: suspended, a wrong or disabled key, a denied source IP) is transient: it is not the message's
#: fault, another channel may carry it, and it goes through once the operator fixes the account.
SEND_CODES: dict[str, tuple[Reason, bool]] = {
    "isv.BUSINESS_LIMIT_CONTROL": (Reason.THROTTLED, _T),  # per-number minute/hour/day limits
    "isv.DAY_LIMIT_CONTROL": (Reason.THROTTLED, _T),
    "Throttling.User": (Reason.THROTTLED, _T),
    "Throttling.Api": (Reason.THROTTLED, _T),
    "Throttling": (Reason.THROTTLED, _T),
    "isv.MOBILE_NUMBER_ILLEGAL": (Reason.INVALID_NUMBER, _P),
    "isv.BLACK_KEY_CONTROL_LIMIT": (Reason.REJECTED, _P),  # a blacklisted word in the variable
    "isv.SMS_SIGNATURE_ILLEGAL": (Reason.REJECTED, _P),
    "isv.SMS_TEMPLATE_ILLEGAL": (Reason.REJECTED, _P),
    "isv.TEMPLATE_MISSING_PARAMETERS": (Reason.REJECTED, _P),
    "isv.INVALID_PARAMETERS": (Reason.REJECTED, _P),
    "isv.INVALID_JSON_PARAM": (Reason.REJECTED, _P),
    "isv.PARAM_LENGTH_LIMIT": (Reason.REJECTED, _P),
    "isv.PARAM_NOT_SUPPORT_URL": (Reason.REJECTED, _P),
    "isv.MOBILE_COUNT_OVER_LIMIT": (Reason.REJECTED, _P),
    "isv.EXTEND_CODE_ERROR": (Reason.REJECTED, _P),
    "isv.DOMESTIC_NUMBER_NOT_SUPPORTED": (Reason.NO_ROUTE, _P),
    "isv.AMOUNT_NOT_ENOUGH": (Reason.CARRIER_ERROR, _T),
    "isv.OUT_OF_SERVICE": (Reason.CARRIER_ERROR, _T),
    "isv.PRODUCT_UN_SUBSCRIPT": (Reason.CARRIER_ERROR, _T),
    "isv.PRODUCT_UNSUBSCRIBE": (Reason.CARRIER_ERROR, _T),
    "isv.ACCOUNT_NOT_EXISTS": (Reason.CARRIER_ERROR, _T),
    "isv.ACCOUNT_ABNORMAL": (Reason.CARRIER_ERROR, _T),
    "isv.DENY_IP_RANGE": (Reason.CARRIER_ERROR, _T),
    "isp.SYSTEM_ERROR": (Reason.CARRIER_ERROR, _T),
    "isp.RAM_PERMISSION_DENY": (Reason.CARRIER_ERROR, _T),
    "InvalidAccessKeyId.NotFound": (Reason.CARRIER_ERROR, _T),
    "InvalidAccessKeyId.Inactive": (Reason.CARRIER_ERROR, _T),
    "SignatureDoesNotMatch": (Reason.CARRIER_ERROR, _T),
    "SignatureNonceUsed": (Reason.CARRIER_ERROR, _T),
    "InvalidTimeStamp.Expired": (Reason.CARRIER_ERROR, _T),
    "ServiceUnavailable": (Reason.CARRIER_ERROR, _T),
    "InternalError": (Reason.CARRIER_ERROR, _T),
}


def send_code_reason(code: str) -> tuple[Reason, bool]:
    """(reason, transient) for a SendSms ``Code`` other than ``OK``."""
    if code in SEND_CODES:
        return SEND_CODES[code]
    if code.startswith("Throttling"):
        return Reason.THROTTLED, True
    if code.startswith("isv."):  # the request itself was refused
        return Reason.REJECTED, False
    return Reason.CARRIER_ERROR, True  # isp.* (their side), gateway and unknown codes


# ---------------------------------------------------------------------------------------------
# Receipts

#: Receipt ``err_code`` values of Alibaba Cloud's own vocabulary (carriers' codes pass through
#: too and are read by :func:`.common.classify_failure`). 停机 counts as handset-off, not 空号:
#: a suspended number may come back, and 空号 stops every later send to the number.
INVALID_ERRS = ("INVALID_NUMBER", "MOBILE_NUMBER_ILLEGAL", "ISV.MOBILE_NUMBER_ILLEGAL")
BLOCKED_ERRS = ("MOBILE_IN_BLACK", "USER_REJECT", "USER_REJECTED", "CONTENT_KEYWORD")
POWERED_OFF_ERRS = ("MOBILE_NOT_ON_SERVICE", "IS_CLOSE", "MOBILE_TERMINAL_ERROR")


def receipt_codes(spec: ChannelSpec) -> ReceiptCodes:
    return ReceiptCodes.for_spec(spec, INVALID_ERRS, BLOCKED_ERRS, POWERED_OFF_ERRS)


def carrier_id(biz_id: str, number: str, secret: str) -> str:
    """The id a message is known by: its request's BizId and a keyed tag of its number."""
    return f"{biz_id}:{number_tag(number, secret, 'aliyun')}"


def _success(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise CallbackRejected(f"SmsReport: 'success' is {value!r}, not true or false")


def report_of(record: Mapping[str, object], secret: str, codes: ReceiptCodes) -> Report:
    """One SmsReport record as a :class:`Report` keyed by the same carrier id as the submit."""
    biz_id = field(record, "biz_id", "SmsReport")
    phone = field(record, "phone_number", "SmsReport")
    if "*" in phone or not provider_number(phone):
        raise CallbackRejected("SmsReport: phone_number is masked or empty; cannot match it")
    ok = _success(record.get("success"))
    err = field(record, "err_code", "SmsReport", required=False)
    text = field(record, "err_msg", "SmsReport", required=False)
    stat, reason = ("DELIVRD", None) if ok else classify_failure(err, text, codes)
    return Report(
        message_id=carrier_id(biz_id, phone, secret),
        stat=stat,
        err=err,
        state=STATE_OF_STAT[stat],
        raw=masked_record(record, {"phone_number"}),
        reason=reason,
    )


def inbound_of(record: Mapping[str, object], source_addr: str) -> Inbound:
    """One SmsUp record: ``dest_code`` is the extension code the recipient replied to."""
    phone = field(record, "phone_number", "SmsUp")
    return Inbound(
        source=e164_of("", phone),
        destination=source_addr + field(record, "dest_code", "SmsUp", required=False),
        text=field(record, "content", "SmsUp", required=False),
    )


def parse_callback(
    spec: ChannelSpec, *, kind: str, url: str, headers: Mapping[str, str], body: bytes
) -> CallbackResult:
    """An SmsReport (``kind="status"``) or SmsUp (``kind="reply"``) push."""
    check_token(spec, url)
    if kind == "status":
        secret = spec.secrets.get("access_key_secret")
        if not secret:
            raise CallbackRejected(f"channel {spec.name} has no access_key_secret", 503)
        codes = receipt_codes(spec)
        reports = [report_of(r, secret, codes) for r in json_records(body, "SmsReport")]
        return CallbackResult(reports=reports, body=json_bytes(ANSWER))
    if kind == "reply":
        source_addr = str(spec.config.get("source_addr") or "")
        inbounds = [inbound_of(r, source_addr) for r in json_records(body, "SmsUp")]
        return CallbackResult(inbounds=inbounds, body=json_bytes(ANSWER))
    raise CallbackRejected(f"unknown callback kind {kind!r}", 404)


# ---------------------------------------------------------------------------------------------
# The channel


class AliyunChannel(HttpChannel):
    provider = "aliyun"
    default_endpoint = DEFAULT_ENDPOINT

    def __init__(self, spec: ChannelSpec, *, clock: Clock | None = None) -> None:
        super().__init__(spec, clock=clock)
        self.access_key_id = config_str(spec, "access_key_id")
        self.secret = secret_str(spec, "access_key_secret")
        self.sign_name = config_str(spec, "sign_name")
        self.region = config_str(spec, "region", "cn-hangzhou")
        self.template_param = config_str(spec, "template_param", "content")
        self.templates = Templates.from_spec(spec)
        receipt_codes(spec)  # a bad code list is a configuration error now, not at the first push

    def params(self, message: Outgoing, *, nonce: str, at: datetime) -> dict[str, str]:
        """The signed SendSms parameters for one message."""
        template = self.templates.for_lane(message.lane)
        if template is None:
            raise refused(
                self.provider,
                "no_template",
                f"channel {self.spec.name} has no template for {message.lane.name.lower()}",
                Reason.REJECTED,
                False,
            )
        content = strip_signature(message.text, self.sign_name)
        params = {
            "AccessKeyId": self.access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "RegionId": self.region,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": nonce,
            "SignatureVersion": "1.0",
            "Timestamp": timestamp(at),
            "Version": API_VERSION,
            "PhoneNumbers": provider_number(message.to),
            "SignName": self.sign_name,
            "TemplateCode": template,
            "TemplateParam": json.dumps(
                {self.template_param: content}, ensure_ascii=False, separators=(",", ":")
            ),
            "OutId": str(message.message_id),
        }
        if message.source:
            params["SmsUpExtendCode"] = message.source
        params["Signature"] = sign("POST", params, self.secret)
        return params

    async def submit(self, message: Outgoing) -> list[str]:
        params = self.params(message, nonce=uuid.uuid4().hex, at=self.clock.now())
        body = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in params.items())
        response = await self.request(
            "POST",
            self.endpoint + "/",
            content=body.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
        data = response_json(response)
        if not isinstance(data, dict) or not data.get("Code"):
            raise http_failure(self.provider, response)
        code = str(data["Code"])
        if code != "OK":
            reason, transient = send_code_reason(code)
            raise refused(self.provider, code, str(data.get("Message", "")), reason, transient)
        biz_id = str(data.get("BizId") or "")
        if not biz_id:
            # Accepted but unidentifiable: no receipt can match it. Say so rather than resend.
            log.error(
                "channel %s: SendSms OK without a BizId (message %s)",
                self.spec.name,
                message.message_id,
            )
            biz_id = f"nobizid-{message.message_id}"
        return [carrier_id(biz_id, message.to, self.secret)]
