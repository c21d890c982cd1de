"""Twilio Programmable Messaging.

A message is a form POST to ``/2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP basic
auth (the account SID and auth token, or an API key SID and secret) and the fields ``To``,
``From`` or ``MessagingServiceSid``, ``Body`` and ``StatusCallback``; the answer (201) carries the
message ``sid`` (our carrier id) and its ``status``. A refusal is a 4xx whose JSON has Twilio's
numeric ``code``, mapped to our reasons by :data:`CODES`.

Status callbacks and incoming messages are form posts signed in ``X-Twilio-Signature``: the
base64 HMAC-SHA1, keyed by the auth token, of the full URL Twilio requested followed by every
POST parameter name and value sorted by name. Every push is verified before it is read; the
intermediate statuses (accepted, queued, sending, sent, …) produce no report.

Config: ``account_sid``, ``from`` (a Twilio number) or ``messaging_service_sid``,
``status_callback`` (the public URL of our status callback; ``{token}`` in it is replaced by the
``callback_token`` secret, e.g. ``https://sms.example.com/callbacks/twilio-us/{token}/status``;
without it Twilio sends no status callbacks), ``public_base`` (``https://host[:port]`` Twilio
reaches us at, when a proxy changes what the API sees; the origin of ``status_callback`` is used
too), ``api_key_sid`` (optional, to authenticate with an API key), ``endpoint`` (default
``https://api.twilio.com``), plus the keys in :mod:`.common`. Secrets: ``auth_token`` (always:
it verifies callbacks), ``api_key_secret`` (with ``api_key_sid``), ``callback_token``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

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
    bad_config,
    config_str,
    header,
    masked_record,
    refused,
    response_json,
    secret_str,
)
from hongyan.clock import Clock
from hongyan.dispatch.states import Reason

log = logging.getLogger("hongyan.channels.http.twilio")

API_VERSION = "2010-04-01"
DEFAULT_ENDPOINT = "https://api.twilio.com"
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

# ---------------------------------------------------------------------------------------------
# X-Twilio-Signature


def signature_base(url: str, params: Iterable[tuple[str, str]]) -> str:
    """The URL followed by each parameter's name and value, sorted by name (then value)."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for name, value in params:
        grouped[name].append(value)
    return url + "".join(
        name + value for name in sorted(grouped) for value in sorted(grouped[name])
    )


def compute_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    mac = hmac.new(auth_token.encode(), signature_base(url, params).encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def url_variants(url: str) -> list[str]:
    """The URL as given, without its port, and with the scheme's default port.

    Twilio signs the URL as it requested it, which may or may not name the port; its own
    helper libraries accept either form, and so do we.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    without = urlunsplit(parts._replace(netloc=prefix + host))
    port = parts.port or default_port
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}")) if port else without
    out: list[str] = []
    for candidate in (url, without, with_port):
        if candidate not in out:
            out.append(candidate)
    return out


def rebase(url: str, base: str) -> str:
    """``url`` with the scheme and host of ``base`` (the public origin behind a proxy)."""
    parts, origin = urlsplit(url), urlsplit(base)
    return urlunsplit(parts._replace(scheme=origin.scheme, netloc=origin.netloc))


def verify(
    auth_token: str,
    url: str,
    params: list[tuple[str, str]],
    signature: str,
    public_bases: Iterable[str] = (),
) -> bool:
    """Whether ``signature`` is Twilio's for this request (constant-time comparisons)."""
    urls = [url, *(rebase(url, b) for b in public_bases)]
    candidates = [v for u in urls for v in url_variants(u)]
    given = signature.strip().encode()
    ok = False
    for candidate in candidates:
        ok |= hmac.compare_digest(compute_signature(auth_token, candidate, params).encode(), given)
    return ok


# ---------------------------------------------------------------------------------------------
# Error codes

_T, _P = True, False

#: Twilio error codes we know: (reason, transient when refusing a submit). The same table reads
#: the ``ErrorCode`` of undelivered and failed messages in status callbacks.
CODES: dict[int, tuple[Reason, bool]] = {
    21211: (Reason.INVALID_NUMBER, _P),  # invalid 'To' number
    21614: (Reason.INVALID_NUMBER, _P),  # 'To' is not a mobile number
    21610: (Reason.BLOCKED, _P),  # the recipient replied STOP
    21612: (Reason.NO_ROUTE, _P),  # 'To' cannot be reached from this 'From'
    21408: (Reason.NO_ROUTE, _P),  # sending to that region is not enabled
    21606: (Reason.REJECTED, _P),  # 'From' is not a message-capable number of the account
    21602: (Reason.REJECTED, _P),  # Body is required
    21617: (Reason.REJECTED, _P),  # Body too long
    30032: (Reason.REJECTED, _P),  # toll-free number not verified
    30034: (Reason.REJECTED, _P),  # US A2P 10DLC number not registered
    20429: (Reason.THROTTLED, _T),  # too many requests
    14107: (Reason.THROTTLED, _T),  # send rate limit exceeded
    21611: (Reason.THROTTLED, _T),  # the 'From' number's queue is full
    30001: (Reason.THROTTLED, _T),  # queue overflow
    20003: (Reason.CARRIER_ERROR, _T),  # authentication failed: fix the account
    20404: (Reason.CARRIER_ERROR, _T),  # no such account or resource
    30002: (Reason.CARRIER_ERROR, _T),  # account suspended
    30003: (Reason.POWERED_OFF, _T),  # unreachable handset
    30004: (Reason.BLOCKED, _P),  # message blocked
    30005: (Reason.INVALID_NUMBER, _P),  # unknown destination handset
    30006: (Reason.INVALID_NUMBER, _P),  # landline or unreachable carrier
    30007: (Reason.BLOCKED, _P),  # filtered by the carrier
    30008: (Reason.CARRIER_ERROR, _T),  # unknown error
}


def code_reason(code: int | None, http_status: int) -> tuple[Reason, bool]:
    """(reason, transient) for a refused submit."""
    if code is not None and code in CODES:
        return CODES[code]
    if http_status == 429:
        return Reason.THROTTLED, True
    if http_status >= 500 or http_status in (401, 403, 404):
        return Reason.CARRIER_ERROR, True
    return Reason.REJECTED, False


def _int_code(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


#: Status callback ``MessageStatus`` → receipt ``stat``; the others are on the way.
FINAL_STATUSES = {
    "delivered": "DELIVRD",
    "read": "DELIVRD",
    "undelivered": "UNDELIV",
    "failed": "REJECTD",
    "canceled": "REJECTD",
}
INTERMEDIATE_STATUSES = frozenset(
    {
        "accepted",
        "scheduled",
        "queued",
        "sending",
        "sent",
        "receiving",
        "received",
        "partially_delivered",
    }
)


def report_of(form: Mapping[str, str]) -> Report | None:
    """The receipt in a status callback, or None for an intermediate status."""
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    status = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip().lower()
    if not sid or not status:
        raise CallbackRejected("status callback without MessageSid and MessageStatus")
    stat = FINAL_STATUSES.get(status)
    if stat is None:
        if status not in INTERMEDIATE_STATUSES:
            log.warning("status callback %s: unknown MessageStatus %r ignored", sid, status)
        return None
    err = (form.get("ErrorCode") or "").strip()
    reason: Reason | None = None
    if stat != "DELIVRD":
        code = _int_code(err) if err else None
        if code is not None and code in CODES:
            reason = CODES[code][0]
        else:
            reason = Reason.CARRIER_ERROR if stat == "UNDELIV" else Reason.REJECTED
    return Report(
        message_id=sid,
        stat=stat,
        err=err,
        state=STATE_OF_STAT[stat],
        raw=masked_record(form, {"To", "From"}),
        reason=reason,
    )


def public_bases(spec: ChannelSpec) -> list[str]:
    bases = []
    for key in ("public_base", "status_callback"):
        value = str(spec.config.get(key) or "")
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and parts.netloc:
            bases.append(f"{parts.scheme}://{parts.netloc}")
    return bases


def parse_callback(
    spec: ChannelSpec, *, kind: str, url: str, headers: Mapping[str, str], body: bytes
) -> CallbackResult:
    """A status callback (``kind="status"``) or an incoming message (``kind="reply"``)."""
    auth_token = spec.secrets.get("auth_token")
    if not auth_token:
        raise CallbackRejected(f"channel {spec.name} has no auth_token", 503)
    signature = header(headers, "X-Twilio-Signature")
    if not signature:
        raise CallbackRejected("no X-Twilio-Signature", 403)
    try:
        params = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CallbackRejected(f"body is not a form ({exc})") from None
    if not verify(auth_token, url, params, signature, public_bases(spec)):
        raise CallbackRejected("bad X-Twilio-Signature", 403)
    form = dict(params)
    account = str(spec.config.get("account_sid") or "")
    if account and form.get("AccountSid") not in (None, account):
        raise CallbackRejected("callback for another account", 403)
    if kind == "status":
        report = report_of(form)
        return CallbackResult(reports=[report] if report else [], body=b"", media_type="text/plain")
    if kind == "reply":
        source, destination = form.get("From", ""), form.get("To", "")
        if not source or not destination:
            raise CallbackRejected("incoming message without From and To")
        inbound = Inbound(source=source, destination=destination, text=form.get("Body", ""))
        return CallbackResult(inbounds=[inbound], body=EMPTY_TWIML, media_type="text/xml")
    raise CallbackRejected(f"unknown callback kind {kind!r}", 404)


# ---------------------------------------------------------------------------------------------
# The channel


class TwilioChannel(HttpChannel):
    provider = "twilio"
    default_endpoint = DEFAULT_ENDPOINT

    def __init__(self, spec: ChannelSpec, *, clock: Clock | None = None) -> None:
        super().__init__(spec, clock=clock)
        self.account_sid = config_str(spec, "account_sid")
        self.auth_token = secret_str(spec, "auth_token")
        api_key = config_str(spec, "api_key_sid", "")
        self.auth = (
            (api_key, secret_str(spec, "api_key_secret"))
            if api_key
            else (self.account_sid, self.auth_token)
        )
        self.sender = config_str(spec, "from", "")
        self.service = config_str(spec, "messaging_service_sid", "")
        if not self.sender and not self.service:
            raise bad_config(
                spec,
                "config needs 'from' (a Twilio number) or 'messaging_service_sid'",
                "需要配置 from（Twilio 号码）或 messaging_service_sid",
            )
        template = config_str(spec, "status_callback", "")
        if "{token}" in template:
            template = template.replace("{token}", quote(secret_str(spec, "callback_token"), ""))
        if template and urlsplit(template).scheme not in ("http", "https"):
            raise bad_config(
                spec,
                "status_callback must be an http(s) URL",
                "status_callback 必须是 http(s) 地址",
            )
        self.status_callback = template
        self.url = (
            f"{self.endpoint}/{API_VERSION}/Accounts/{quote(self.account_sid, '')}/Messages.json"
        )

    def form(self, message: Outgoing) -> dict[str, str]:
        data = {"To": message.to, "Body": message.text}
        if self.service:
            data["MessagingServiceSid"] = self.service
        else:
            data["From"] = self.sender
        if self.status_callback and message.receipt:
            data["StatusCallback"] = self.status_callback
        return data

    async def submit(self, message: Outgoing) -> list[str]:
        response = await self.request("POST", self.url, data=self.form(message), auth=self.auth)
        data: Any = response_json(response)
        if not isinstance(data, dict):
            data = {}
        if response.is_success:
            sid = str(data.get("sid") or "")
            status = str(data.get("status") or "")
            if status in ("failed", "undelivered"):
                code = _int_code(data.get("error_code"))
                reason, transient = code_reason(code, response.status_code)
                raise refused(
                    self.provider,
                    str(code or status),
                    str(data.get("error_message") or status),
                    reason,
                    transient,
                )
            if not sid:
                raise refused(
                    self.provider,
                    "bad_response",
                    f"HTTP {response.status_code} without a message sid",
                    Reason.CARRIER_ERROR,
                    True,
                )
            return [sid]
        code = _int_code(data.get("code"))
        reason, transient = code_reason(code, response.status_code)
        raise refused(
            self.provider,
            str(code) if code is not None else f"http_{response.status_code}",
            str(data.get("message") or response.reason_phrase),
            reason,
            transient,
        )
