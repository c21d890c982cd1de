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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Connection

from hongyan.errors import HongyanError, ValidationFailed

KEYS = ("link", "coupon")
#: The error code a hook raises when a coupon pool has fewer codes than recipients.
EXHAUSTED = "coupon_pool_exhausted"


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
