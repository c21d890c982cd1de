"""Per-recipient values that the platform, not the contact, supplies: ``{link}`` and ``{coupon}``.

A campaign's (or a journey send step's) materialisation renders every message in Python, a
batch of contacts at a time. When the variant's template names ``{link}`` or ``{coupon}``, each
batch asks a registered hook for those values (a tracked short link per recipient, a unique
coupon code per recipient): the tracking capability provides the hook and registers it with
:func:`register`. The hook runs in the launch's own transaction (``conn``), so the links and
codes it records vanish with the messages if the launch fails. A request names either a
campaign (and its variant) or a journey (and its send step, ``s<position>``, as the variant):
the links and coupons it issues, and the clicks and orders they bring, are attributed to that.

A hook that cannot give every recipient a value because a coupon pool has fewer codes left
raises an error whose ``code`` is :data:`EXHAUSTED` with ``details["available"]`` (the codes
the pool had), having issued nothing; a journey then sends to as many as the pool can serve.

Until a hook is registered, launching a campaign whose template needs one of them is refused
with :class:`ExtrasUnavailable`: a stand-in value is never sent.

**Where they lead, checked when made.** A campaign's variant and a journey's send step name
where ``{link}`` leads (``link_url``) and the pool ``{coupon}`` is drawn from
(``coupon_pool_id``); :func:`targets` checks both the same way for either, when the campaign or
journey is made, so nothing that would fail at launch is stored: a template that places
``{link}`` needs an http(s) address with a host, no spaces, at most :data:`MAX_LINK`
characters; one that places ``{coupon}`` needs one of the tenant's own pools (``generate`` or
``import``: codes are always drawn from a pool, a ``generate`` pool making them as they are
issued); a value the template does not place is refused (it would do nothing). The caller
words where the problem is (``bad``): "step 2", "variant B".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import Connection

from hongyan.db.scope import TenantScope
from hongyan.db.tables import coupon_pools
from hongyan.db.types import MAX_ID
from hongyan.errors import HongyanError, ValidationFailed

KEYS = ("link", "coupon")
#: The error code a hook raises when a coupon pool has fewer codes than recipients.
EXHAUSTED = "coupon_pool_exhausted"
MAX_LINK = 500  # the columns' width (campaign_variants, journey_steps)

#: ``bad(message_en, message_zh, field)``: the caller's error, naming where the problem is.
Bad = Callable[[str, str, str], HongyanError]


@dataclass(frozen=True)
class PerRecipientRequest:
    tenant_id: int
    campaign_id: int | None
    variant: str
    contact_ids: Sequence[int]
    link_url: str | None
    coupon_pool_id: int | None
    now: datetime
    expires_at: datetime
    journey_id: int | None = None  # a journey's send step (campaign_id is then None)


PerRecipient = Callable[[Connection, PerRecipientRequest], dict[str, list[str]]]

_HOOKS: dict[str, PerRecipient] = {}


class ExtrasUnavailable(ValidationFailed):
    code = "per_recipient_values_unavailable"
    message_zh = "模板中的 {link} / {coupon} 需要短链接与券码功能提供每位收件人的值，目前未启用"
    message_en = (
        "The template's {link} / {coupon} need per-recipient values from link and coupon "
        "tracking, which is not enabled"
    )


class ExtrasBroken(HongyanError):
    code = "per_recipient_values_broken"
    status = 500
    message_zh = "短链接或券码的生成结果不完整"
    message_en = "The per-recipient link or coupon values came back incomplete"


def register(name: str, fn: PerRecipient) -> None:
    """Make ``fn`` supply per-recipient values (``name`` identifies it; one hook is used: the
    last one registered)."""
    if not name:
        raise ValueError("a hook needs a name")
    _HOOKS[name] = fn


def unregister(name: str) -> None:
    _HOOKS.pop(name, None)


def active() -> PerRecipient | None:
    return next(reversed(_HOOKS.values()), None) if _HOOKS else None


def needed(keys: Sequence[str]) -> tuple[str, ...]:
    """Which of a template's placeholder keys a hook must supply."""
    return tuple(k for k in KEYS if k in keys)


def require(keys: Sequence[str]) -> None:
    """Refuse before anything is planned when the template needs values nobody supplies."""
    need = needed(keys)
    if need and active() is None:
        raise ExtrasUnavailable(details={"placeholders": list(need)})


def fetch(
    conn: Connection, request: PerRecipientRequest, keys: Sequence[str]
) -> dict[str, list[str]]:
    """The values for ``keys`` in contact order, checked for completeness."""
    need = needed(keys)
    if not need:
        return {}
    hook = active()
    if hook is None:
        raise ExtrasUnavailable(details={"placeholders": list(need)})
    got = hook(conn, request)
    n = len(request.contact_ids)
    for key in need:
        values = got.get(key)
        if values is None or len(values) != n or not all(values):
            raise ExtrasBroken(details={"placeholder": key})
    return {k: list(got[k]) for k in need}


# -- where {link} leads and where {coupon} comes from: checked when made ----------------------


def blank(raw: Any) -> bool:
    """No value given: None, or a string of nothing but spaces (an empty form field)."""
    return raw is None or (isinstance(raw, str) and not raw.strip())


def link_problem(url: str) -> bool:
    """True when ``url`` is not an http(s) address with a host, without spaces, short enough."""
    if not url or len(url) > MAX_LINK or any(ch.isspace() for ch in url):
        return True
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return True
    return parts.scheme not in ("http", "https") or not host


def check_link(raw: Any, needed: bool, bad: Bad) -> str | None:
    """Where ``{link}`` leads: required when the template places it, else none."""
    if blank(raw):
        if needed:
            raise bad(
                "the template places {link}: give a link_url (where the link leads)",
                "模板含 {link}，请填写链接目标地址（link_url）",
                "link_url",
            )
        return None
    if not needed:
        raise bad(
            "the template does not place {link}: leave link_url out",
            "模板不含 {link}，无需填写链接目标地址",
            "link_url",
        )
    url = raw.strip() if isinstance(raw, str) else ""
    if link_problem(url):
        raise bad(
            f"link_url is an http(s) address with a host and no spaces, at most {MAX_LINK} "
            "characters",
            f"链接目标须为 http(s) 网址（含域名、不含空格），最长 {MAX_LINK} 个字符",
            "link_url",
        )
    return url


def check_pool(conn: Connection, tenant_id: int, raw: Any, needed: bool, bad: Bad) -> int | None:
    """The pool ``{coupon}`` comes from: one of the tenant's pools when the template places it,
    else none (another tenant's pool is as unknown as one that does not exist)."""
    if blank(raw):
        if needed:
            raise bad(
                "the template places {coupon}: choose a coupon_pool_id (the pool its codes "
                "come from)",
                "模板含 {coupon}，请选择优惠券池（coupon_pool_id）",
                "coupon_pool_id",
            )
        return None
    if not needed:
        raise bad(
            "the template does not place {coupon}: leave coupon_pool_id out",
            "模板不含 {coupon}，无需选择优惠券池",
            "coupon_pool_id",
        )
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise bad("coupon_pool_id is a pool's id", "优惠券池须为其编号", "coupon_pool_id")
    found = None
    if abs(raw) <= MAX_ID:  # a larger int is no pool's id (and the driver refuses it)
        found = conn.execute(
            TenantScope(tenant_id)
            .select(coupon_pools, coupon_pools.c.id)
            .where(coupon_pools.c.id == raw)
        ).first()
    if found is None:
        raise bad(f"no coupon pool {raw}", f"找不到优惠券池 {raw}", "coupon_pool_id")
    return raw


def targets(
    conn: Connection, tenant_id: int, keys: Sequence[str], link_url: Any, coupon_pool_id: Any,
    bad: Bad,
) -> tuple[str | None, int | None]:  # fmt: skip
    """A variant's or send step's ``(link_url, coupon_pool_id)`` for a template placing
    ``keys``, checked (see the module doc); and a template that needs values nobody supplies
    is refused now, not at launch."""
    need = needed(keys)
    link = check_link(link_url, "link" in need, bad)
    pool = check_pool(conn, tenant_id, coupon_pool_id, "coupon" in need, bad)
    require(keys)
    return link, pool
