"""What the HTTP provider channels share: the pooled client, templates, numbers, callbacks.

A provider account does not "bind": a channel is :attr:`~HttpChannel.ready` from ``start`` until
``stop``. Requests go through one ``httpx.AsyncClient`` per channel whose connection pool is
bounded by ``spec.window`` (requests beyond it wait for a free connection, up to the timeout) and
keeps connections alive between requests. A request that gets no answer (timeout, connection
lost) fails as transient: whether the provider took the message is unknown, which is the same
send-twice set as a lost SMPP bind (see :mod:`hongyan.dispatch.dispatcher`).

Config keys shared by every HTTP kind: ``endpoint`` (the base URL; defaults to the provider's
public host, tests point it at a local server), ``timeout`` (seconds for a whole request,
default 10), ``connect_timeout`` (default 5), ``keepalive`` (seconds an idle connection is kept,
default 30), ``invalid_errs`` / ``blocked_errs`` / ``powered_off_errs`` (extra receipt codes that
mean 空号 / blocked / handset off on this account, added to the provider's defaults).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from hongyan.channels.base import (
    CallbackRejected,
    ChannelSpec,
    InboundSink,
    Outgoing,
    ReportSink,
    SubmitError,
)
from hongyan.channels.smpp.pdu import MessageState
from hongyan.clock import Clock, SystemClock
from hongyan.dispatch.states import Lane, Reason
from hongyan.errors import ValidationFailed
from hongyan.security.keyring import mask_phone

log = logging.getLogger("hongyan.channels.http")

#: Longest provider code the outbox keeps (``messages.carrier_code``).
CODE_MAX = 32
#: Longest carrier id ``message_parts.carrier_id`` holds.
CARRIER_ID_MAX = 72

#: SMPP ``message_state`` for each receipt ``stat`` we produce.
STATE_OF_STAT: dict[str, int] = {
    "DELIVRD": int(MessageState.DELIVERED),
    "EXPIRED": int(MessageState.EXPIRED),
    "UNDELIV": int(MessageState.UNDELIVERABLE),
    "REJECTD": int(MessageState.REJECTED),
    "UNKNOWN": int(MessageState.UNKNOWN),
}


def fit_code(code: str, limit: int = CODE_MAX) -> str:
    """A provider code short enough to store, keeping its most specific part.

    ``InvalidParameterValue.IncorrectPhoneNumber`` (42 characters) → ``IncorrectPhoneNumber``:
    leading dotted components are dropped until it fits, then it is cut.
    """
    code = code.strip()
    while len(code) > limit and "." in code:
        code = code.split(".", 1)[1]
    return code[:limit]


# ---------------------------------------------------------------------------------------------
# Configuration


def bad_config(spec: ChannelSpec, en: str, zh: str) -> ValidationFailed:
    return ValidationFailed(f"Channel {spec.name} ({spec.kind}): {en}", f"通道 {spec.name}：{zh}")


def config_str(spec: ChannelSpec, key: str, default: str | None = None) -> str:
    """A required (``default`` None) or optional string from ``spec.config``."""
    value = spec.config.get(key)
    if value is None or str(value).strip() == "":
        if default is None:
            raise bad_config(spec, f"config key {key!r} is required", f"缺少配置项 {key}")
        return default
    return str(value).strip()


def secret_str(spec: ChannelSpec, key: str) -> str:
    value = spec.secrets.get(key)
    if not value:
        raise bad_config(spec, f"secret {key!r} is required", f"缺少密钥 {key}")
    return str(value)


def config_seconds(spec: ChannelSpec, key: str, default: float) -> float:
    raw = spec.config.get(key, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise bad_config(
            spec, f"{key} must be a number of seconds, not {raw!r}", f"{key} 必须是秒数"
        ) from None
    if not 0 < value <= 600:
        raise bad_config(spec, f"{key} must be between 0 and 600 seconds", f"{key} 须在 0–600 秒")
    return value


def config_codes(spec: ChannelSpec, key: str) -> frozenset[str]:
    raw = spec.config.get(key, ())
    if isinstance(raw, str):
        raw = [c for c in raw.split(",")]
    if not isinstance(raw, Iterable):
        raise bad_config(spec, f"{key} must be a list of codes", f"{key} 必须是错误码列表")
    return frozenset(str(c).strip().upper() for c in raw if str(c).strip())


def config_endpoint(spec: ChannelSpec, default: str) -> str:
    endpoint = config_str(spec, "endpoint", default).rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise bad_config(
            spec,
            f"endpoint must be an http(s) URL, not {endpoint!r}",
            f"endpoint 必须是 http(s) 地址：{endpoint!r}",
        )
    return endpoint


# ---------------------------------------------------------------------------------------------
# Templates


@dataclass(frozen=True)
class Templates:
    """Which approved provider template carries a message (Chinese providers send no free text).

    ``template_code`` is the default; ``lane_templates`` (``{"verification": …, "notification":
    …, "marketing": …}``) overrides it per lane, since providers approve verification-code,
    notification and marketing templates separately. The template has one variable that carries
    our rendered text. A later ``templates`` map (our template id → provider template and its
    parameters) will slot in here once :class:`~hongyan.channels.base.Outgoing` carries one.
    """

    default: str | None
    by_lane: Mapping[str, str]

    @classmethod
    def from_spec(cls, spec: ChannelSpec) -> Templates:
        lanes = spec.config.get("lane_templates") or {}
        if not isinstance(lanes, Mapping):
            raise bad_config(
                spec, "lane_templates must map a lane to a template", "lane_templates 必须是映射"
            )
        known = {lane.name.lower() for lane in Lane}
        unknown = sorted(set(map(str, lanes)) - known)
        if unknown:
            raise bad_config(
                spec,
                f"unknown lane {unknown[0]!r} in lane_templates; lanes: {', '.join(sorted(known))}",
                f"lane_templates 中的类别 {unknown[0]!r} 未知",
            )
        default = spec.config.get("template_code")
        default = str(default).strip() if default not in (None, "") else None
        by_lane = {str(k): str(v).strip() for k, v in lanes.items() if str(v).strip()}
        if default is None and not by_lane:
            raise bad_config(
                spec,
                "config needs template_code (or lane_templates): the provider sends approved "
                "templates only",
                "需要配置 template_code（或 lane_templates）：服务商只发送已审核的模板",
            )
        return cls(default, by_lane)

    def for_lane(self, lane: Lane) -> str | None:
        return self.by_lane.get(lane.name.lower(), self.default)


def strip_signature(text: str, sign_name: str) -> str:
    """The text without our copy of the 【signature】 the provider adds itself from SignName."""
    mark = f"【{sign_name}】"
    if sign_name and text.startswith(mark):
        return text[len(mark) :]
    if sign_name and text.endswith(mark):
        return text[: -len(mark)]
    return text


# ---------------------------------------------------------------------------------------------
# Numbers


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit() and ch.isascii())


def provider_number(number: str) -> str:
    """The form Chinese providers use: mainland mobiles as 11 digits, others as cc + number.

    ``+8613800138000`` and ``13800138000`` → ``13800138000``; ``+85291234567`` →
    ``85291234567``; ``008613800138000`` → ``13800138000``.
    """
    digits = _digits(number)
    if digits.startswith("00"):
        digits = digits[2:]
    if len(digits) == 13 and digits.startswith("861"):
        digits = digits[2:]
    return digits


def e164_of(nationcode: str, mobile: str) -> str:
    """E.164 from a provider's country code and national number (either may be blank)."""
    cc, digits = _digits(nationcode), _digits(mobile)
    if cc:
        return f"+{cc}{digits}"
    if mobile.strip().startswith("+"):
        return "+" + digits
    if digits.startswith("00"):  # an international prefix says the country code follows
        return "+" + digits[2:]
    national = provider_number(mobile)
    if len(national) == 11 and national.startswith("1"):
        return "+86" + national
    return "+" + national if national else mobile


def number_tag(number: str, key: str, label: str) -> str:
    """A keyed, one-way tag of a number (16 hex digits) that never reveals it.

    The key is a channel secret, so a tag cannot be reversed by trying every number; the same
    number gives the same tag in the channel and in its callback parser.
    """
    msg = f"{label}\x00{provider_number(number)}".encode()
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()[:16]


def masked_record(item: Mapping[str, Any], phone_keys: Iterable[str]) -> str:
    """A provider record as JSON with its phone numbers masked (for ``Report.raw``)."""
    clean = {k: (mask_phone(str(v)) if k in phone_keys and v else v) for k, v in item.items()}
    return json.dumps(clean, ensure_ascii=False, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------
# Receipts


@dataclass(frozen=True)
class ReceiptCodes:
    """Receipt codes (upper case) with a known meaning on one channel."""

    invalid: frozenset[str]
    blocked: frozenset[str]
    powered_off: frozenset[str]

    @classmethod
    def for_spec(
        cls,
        spec: ChannelSpec,
        invalid: Iterable[str] = (),
        blocked: Iterable[str] = (),
        powered_off: Iterable[str] = (),
    ) -> ReceiptCodes:
        return cls(
            frozenset(invalid) | config_codes(spec, "invalid_errs"),
            frozenset(blocked) | config_codes(spec, "blocked_errs"),
            frozenset(powered_off) | config_codes(spec, "powered_off_errs"),
        )


# Words in a provider's Chinese description of a failed receipt, checked when the code itself is
# not known (carriers' own codes differ by carrier and province).
_TEXT_HINTS: tuple[tuple[tuple[str, ...], str, Reason], ...] = (
    (("空号", "号码不存在", "无效号码"), "UNDELIV", Reason.INVALID_NUMBER),
    (("黑名单", "拒收", "关键字", "敏感词", "屏蔽", "拦截"), "REJECTD", Reason.BLOCKED),
    (("停机", "关机", "不在服务区", "无法接通"), "UNDELIV", Reason.POWERED_OFF),
)


def classify_failure(err: str, text: str, codes: ReceiptCodes) -> tuple[str, Reason]:
    """(stat, reason) of a failed receipt from its raw code and the provider's description."""
    code = err.strip().upper()
    if code in codes.invalid:
        return "UNDELIV", Reason.INVALID_NUMBER
    if code in codes.blocked:
        return "REJECTD", Reason.BLOCKED
    if code in codes.powered_off:
        return "UNDELIV", Reason.POWERED_OFF
    if code == "EXPIRED":
        return "EXPIRED", Reason.EXPIRED
    if code in ("REJECTD", "REJECT", "REJECTED"):
        return "REJECTD", Reason.REJECTED
    if code in ("UNKNOWN", "UNKNOW"):
        return "UNKNOWN", Reason.UNKNOWN
    for words, stat, reason in _TEXT_HINTS:
        if any(w in text for w in words):
            return stat, reason
    return "UNDELIV", Reason.CARRIER_ERROR


# ---------------------------------------------------------------------------------------------
# Callbacks


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by name, whatever the case of the mapping's keys."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, val in headers.items():
        if key.lower() == lower:
            return val
    return None


def url_token(url: str, channel: str) -> str | None:
    """The token in a callback URL: the path segment after the channel name, else ``?token=``."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    for i in range(len(segments) - 2, -1, -1):
        if segments[i] == channel:
            return segments[i + 1]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "token":
            return value
    return None


def check_token(spec: ChannelSpec, url: str) -> None:
    """Refuse a push whose URL does not carry the channel's ``callback_token`` secret.

    Alibaba Cloud and Tencent Cloud do not sign their pushes: the unguessable token in the
    callback URL configured in their consoles is what tells their pushes from anyone else's.
    """
    expected = spec.secrets.get("callback_token")
    if not expected:
        raise CallbackRejected(f"channel {spec.name} has no callback_token secret", 403)
    given = url_token(url, spec.name)
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CallbackRejected("wrong callback token", 403)


def json_records(body: bytes, what: str) -> list[dict[str, Any]]:
    """A JSON array of objects (or one object) from a push body; CallbackRejected otherwise."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CallbackRejected(f"{what}: body is not JSON ({exc})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise CallbackRejected(f"{what}: expected a JSON array of objects")
    return data


def field(record: Mapping[str, Any], key: str, what: str, *, required: bool = True) -> str:
    value = record.get(key)
    if value is None or (required and str(value).strip() == ""):
        if required:
            raise CallbackRejected(f"{what}: a record has no {key!r}")
        return ""
    if isinstance(value, (dict, list)):
        raise CallbackRejected(f"{what}: {key!r} is not a scalar")
    return str(value)


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------
# The channel


def refused(provider: str, code: str, message: str, reason: Reason, transient: bool) -> SubmitError:
    return SubmitError(
        f"{provider}: {code}: {message}".rstrip(": "),
        code=fit_code(code),
        reason=reason,
        transient=transient,
    )


def http_failure(provider: str, response: httpx.Response) -> SubmitError:
    """A response the provider's error format does not explain (a proxy's page, a 5xx)."""
    status = response.status_code
    if status == 429:
        return refused(provider, "http_429", "too many requests", Reason.THROTTLED, True)
    return refused(
        provider,
        f"http_{status}",
        response.reason_phrase or "unexpected answer",
        Reason.CARRIER_ERROR,
        True,
    )


def response_json(response: httpx.Response) -> Any:
    """The response body as JSON, or None when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


class HttpChannel:
    """The part of a provider channel that is the same for every provider."""

    provider = "http"
    default_endpoint = ""

    def __init__(self, spec: ChannelSpec, *, clock: Clock | None = None) -> None:
        self.spec = spec
        self.clock: Clock = clock or SystemClock()
        self.endpoint = config_endpoint(spec, self.default_endpoint)
        self.timeout = config_seconds(spec, "timeout", 10.0)
        self.connect_timeout = min(self.timeout, config_seconds(spec, "connect_timeout", 5.0))
        self.keepalive = config_seconds(spec, "keepalive", 30.0)
        self._client: httpx.AsyncClient | None = None
        self._on_report: ReportSink | None = None
        self._on_inbound: InboundSink | None = None

    @property
    def ready(self) -> bool:
        return self._client is not None

    @property
    def window(self) -> int:
        return max(1, self.spec.window)

    async def start(self, on_report: ReportSink, on_inbound: InboundSink) -> None:
        # Reports and replies reach us by the provider's pushes (see the callback parsers), not
        # over this connection; the sinks are kept for a later pull of status reports.
        self._on_report, self._on_inbound = on_report, on_inbound
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=self.window,
                    max_keepalive_connections=self.window,
                    keepalive_expiry=self.keepalive,
                ),
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                follow_redirects=False,
                trust_env=False,  # no proxy from the environment: the endpoint is what we reach
            )

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request to the provider; transport failures become transient SubmitErrors."""
        client = self._client
        if client is None:
            raise refused(
                self.provider,
                "not_started",
                f"channel {self.spec.name} is stopped",
                Reason.CARRIER_ERROR,
                True,
            )
        try:
            return await client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise refused(
                self.provider,
                "timeout",
                f"no answer within {self.timeout:g}s ({type(exc).__name__})",
                Reason.CARRIER_ERROR,
                True,
            ) from exc
        except httpx.HTTPError as exc:
            raise refused(
                self.provider,
                "connect_error",
                f"{type(exc).__name__}: {exc}",
                Reason.CARRIER_ERROR,
                True,
            ) from exc

    async def submit(self, message: Outgoing) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError
