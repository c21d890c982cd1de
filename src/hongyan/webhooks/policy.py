"""What a webhook may be and how often it is retried (pure; no I/O).

* URL shape: ``https://`` (``http://`` too outside production), a host, no user name or password
  in the URL, no fragment, at most 500 characters.
* Addresses: a webhook may not reach a loopback, private, link-local, shared (CGNAT), multicast,
  reserved or unspecified address, in IPv4 or IPv6 (IPv4-mapped IPv6 included), unless the
  operator sets ``HONGYAN_WEBHOOK_ALLOW_PRIVATE=true``. The service checks the host's resolved
  addresses when an endpoint is saved and the worker checks them again before every attempt,
  then connects to the very address it checked (DNS rebinding gets no second lookup).
* Retries: attempt *n* failed → the next one waits ``10 s × 2^(n-1)``, capped at 6 h, with ±20 %
  jitter; after :data:`MAX_ATTEMPTS` failed attempts (about 23 hours after the first, nominally)
  the delivery is ``dead`` and only a redelivery sends it again.
"""

from __future__ import annotations

import ipaddress
import random
from datetime import timedelta
from urllib.parse import SplitResult, urlsplit

from hongyan.errors import ValidationFailed

__all__ = [
    "BASE_DELAY",
    "EVENTS_ALLOWED",
    "MAX_ATTEMPTS",
    "MAX_DELAY",
    "AddressRefused",
    "InvalidWebhookUrl",
    "UnknownEvent",
    "check_events",
    "check_url_shape",
    "forbidden_address",
    "nominal_delay",
    "retry_delay",
]

MAX_URL = 500
BASE_DELAY = timedelta(seconds=10)
MAX_DELAY = timedelta(hours=6)
JITTER = 0.2
MAX_ATTEMPTS = 15
TEST_EVENT = "webhook.test"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
EVENTS_ALLOWED = ("message.status", "message.reply", "message.opt_out", "*")


class InvalidWebhookUrl(ValidationFailed):
    code = "invalid_webhook_url"
    message_en = "The webhook URL is not valid"
    message_zh = "Webhook 地址无效"


class AddressRefused(ValidationFailed):
    code = "webhook_address_refused"
    message_en = (
        "The webhook host resolves to a loopback, private or link-local address; "
        "set HONGYAN_WEBHOOK_ALLOW_PRIVATE=true to allow it"
    )
    message_zh = (
        "Webhook 主机解析到回环、内网或链路本地地址，不允许使用；"
        "如确需使用，请设置 HONGYAN_WEBHOOK_ALLOW_PRIVATE=true"
    )


class UnknownEvent(ValidationFailed):
    code = "unknown_webhook_event"
    message_en = "Unknown webhook event type"
    message_zh = "未知的 Webhook 事件类型"


def check_url_shape(url: str, *, https_only: bool) -> SplitResult:
    """The URL split into parts, or :class:`InvalidWebhookUrl` saying what is wrong."""
    if not url or len(url) > MAX_URL:
        raise InvalidWebhookUrl(
            f"The URL must have 1 to {MAX_URL} characters", f"地址长度须为 1 到 {MAX_URL} 个字符"
        )
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidWebhookUrl(
            "The URL contains spaces or control characters", "地址含有空白或控制字符"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidWebhookUrl(f"The URL cannot be parsed: {exc}", "地址无法解析") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidWebhookUrl("The URL must start with https://", "地址须以 https:// 开头")
    if https_only and scheme != "https":
        raise InvalidWebhookUrl(
            "In production a webhook URL must use https://",
            "生产环境中 Webhook 地址必须使用 https://",
        )
    if not parts.hostname:
        raise InvalidWebhookUrl("The URL has no host", "地址缺少主机名")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrl(
            "Put no user name or password in the URL; the signature authenticates us",
            "地址中不能包含用户名或密码；请用签名验证请求来源",
        )
    if parts.fragment or url.endswith("#"):
        raise InvalidWebhookUrl("The URL may not have a #fragment", "地址不能包含 # 片段")
    if port == 0:
        raise InvalidWebhookUrl("Port 0 is not a port", "端口号不能为 0")
    try:
        parts.hostname.encode("idna")
    except UnicodeError as exc:
        raise InvalidWebhookUrl("The host name is not valid", "主机名无效") from exc
    return parts


def forbidden_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for any address a webhook may not reach by default (not globally routable)."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None and forbidden_address(mapped):
            return True
        if address.teredo is not None:
            return True
        if address in _NAT64:  # the IPv4 address a NAT64 gateway would reach
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            if forbidden_address(embedded):
                return True
    return not address.is_global or address.is_multicast


def check_events(events: list[str]) -> list[str]:
    """The events, de-duplicated in their order; :class:`UnknownEvent` for anything unknown."""
    if not events:
        raise UnknownEvent("Subscribe to at least one event", "请至少订阅一种事件")
    out: list[str] = []
    for event in events:
        if event not in EVENTS_ALLOWED:
            raise UnknownEvent(
                f"Unknown event {event!r}; use {', '.join(EVENTS_ALLOWED)}",
                f"未知事件 {event!r}；可用：{'、'.join(EVENTS_ALLOWED)}",
            )
        if event not in out:
            out.append(event)
    return out


def nominal_delay(failures: int) -> timedelta:
    """The wait after ``failures`` failed attempts, before jitter."""
    if failures < 1:
        raise ValueError("failures counts from 1")
    if failures > 40:  # 2**40 × 10 s is far past the cap; avoid huge numbers
        return MAX_DELAY
    return min(BASE_DELAY * 2 ** (failures - 1), MAX_DELAY)


def retry_delay(failures: int, rng: random.Random) -> timedelta:
    """:func:`nominal_delay` spread by ±20 %, so endpoints that failed together do not retry
    together."""
    return nominal_delay(failures) * rng.uniform(1 - JITTER, 1 + JITTER)
