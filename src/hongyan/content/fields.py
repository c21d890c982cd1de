"""What a template may name: the contact fields, custom attributes and special placeholders (pure).

This is the one place that says which names a template may use and how each renders:

- **Standard contact fields** (:data:`STANDARD_FIELDS`): ``{name}``, ``{gender}``,
  ``{birthday}``, ``{province}``, ``{city}``, ``{tags}``. Their values come from the contact
  (:func:`contact_values` turns a contact record into the values a template renders).
- **Custom attributes**: ``{attr.<key>}``, where ``<key>`` is one of the tenant's attribute
  definitions (the contacts capability keeps that registry; the lint and the renderer take the
  set of known keys as a parameter, :class:`Names`).
- **Special placeholders** (:data:`SPECIALS`): ``{link}`` (the recipient's tracked short link)
  and ``{coupon}`` (the recipient's unique coupon code). The tracking capability supplies their
  values at send time; until then they render to stand-ins of exactly the length the real values
  will have, so the character count and the parts of a preview are true. A stand-in is never
  sent: a send that has no real value for them is refused.
- **Parameters**: verification and notification templates sent through the API may name any
  other placeholder (``{code}``, ``{order_no}``); its value comes from the request's ``params``.
  Marketing templates are rendered from contacts, so there an unknown name is an error.

A placeholder may carry a default after ``|``: ``{name|您好}`` renders ``您好`` for a contact
without a name (see :mod:`hongyan.content.placeholders` for the whole syntax).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

#: Prefix of a custom attribute placeholder: ``{attr.会员等级}``.
ATTRIBUTE_PREFIX: Final = "attr."

#: Categories whose templates may name free parameters besides contact fields.
PARAM_CATEGORIES: Final = frozenset({"verification", "notification"})


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A name a template may use: how it is labelled, what a preview shows, its longest value."""

    key: str
    label_zh: str
    label_en: str
    sample: str  # what the editor's preview and count use
    max_len: int  # the longest value the platform renders for it (worst-case count)
    special: bool = False  # supplied by the platform (tracking), never by the contact
    suggested_default: str | None = None  # offered by the lint when a field has no default


#: Length of a tracked short link (``https://hy.cx/`` and a 7-character code): the tracking
#: capability's links must not be longer, so that what the editor counts is what is billed.
SHORT_LINK_LENGTH: Final = 21
#: Length of a per-recipient coupon code (upper-case letters and digits, no look-alikes).
COUPON_LENGTH: Final = 8

STANDARD_FIELDS: Final[Mapping[str, FieldSpec]] = {
    f.key: f
    for f in (
        FieldSpec("name", "姓名/称呼", "Name", "李女士", 20, suggested_default="您好"),
        FieldSpec("gender", "性别称谓", "Gender (form of address)", "女士", 2),
        FieldSpec("birthday", "生日", "Birthday", "3月18日", 6),
        FieldSpec("province", "省份", "Province", "浙江", 8),
        FieldSpec("city", "城市", "City", "杭州", 12, suggested_default="本地"),
        FieldSpec("tags", "标签", "Tags", "奶茶爱好者", 30),
    )
}

SPECIALS: Final[Mapping[str, FieldSpec]] = {
    "link": FieldSpec(
        "link", "短链接", "Short link", "https://hy.cx/k7Qm2Zp", SHORT_LINK_LENGTH, special=True
    ),
    "coupon": FieldSpec(
        "coupon", "优惠券码", "Coupon code", "HY8K2M4Q", COUPON_LENGTH, special=True
    ),
}
assert len(SPECIALS["link"].sample) == SHORT_LINK_LENGTH
assert len(SPECIALS["coupon"].sample) == COUPON_LENGTH

#: A custom attribute's preview value and longest rendered value.
ATTRIBUTE_SAMPLE: Final = "示例"
ATTRIBUTE_MAX_LEN: Final = 20
#: A free parameter's preview value (``{code}`` → ``123456``) and longest value.
PARAM_SAMPLE: Final = "123456"
PARAM_MAX_LEN: Final = 20


@dataclass(frozen=True, slots=True)
class Names:
    """The names a template of one category of one tenant may use.

    ``attributes`` are the tenant's custom attribute keys (from the contacts capability's
    registry); ``params`` says whether free parameters are allowed (verification and
    notification templates sent through the API).
    """

    attributes: frozenset[str] = field(default_factory=frozenset)
    params: bool = False

    @classmethod
    def for_category(cls, category: str, attributes: Iterable[str] = ()) -> Names:
        return cls(frozenset(attributes), category in PARAM_CATEGORIES)

    def spec(self, key: str) -> FieldSpec | None:
        """How ``key`` renders, or None when a template of this kind may not name it."""
        found = STANDARD_FIELDS.get(key) or SPECIALS.get(key)
        if found is not None:
            return found
        if key.startswith(ATTRIBUTE_PREFIX):
            name = key[len(ATTRIBUTE_PREFIX) :]
            if name in self.attributes:
                return FieldSpec(key, name, name, ATTRIBUTE_SAMPLE, ATTRIBUTE_MAX_LEN)
            return None
        if self.params:
            return FieldSpec(key, key, key, PARAM_SAMPLE, PARAM_MAX_LEN)
        return None


def is_special(key: str) -> bool:
    return key in SPECIALS


_GENDER: Final = {
    "f": "女士",
    "female": "女士",
    "女": "女士",
    "女士": "女士",
    "m": "先生",
    "male": "先生",
    "男": "先生",
    "先生": "先生",
}


def _birthday(value: Any) -> str:
    if isinstance(value, date):
        return f"{value.month}月{value.day}日"
    text = str(value).strip()
    try:
        parsed = date.fromisoformat(text[:10])
    except ValueError:
        return text
    return f"{parsed.month}月{parsed.day}日"


def contact_values(
    contact: Mapping[str, Any], attributes: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The values a template renders for one contact.

    ``contact`` holds the standard fields as the contacts capability stores them (``gender``
    as ``f``/``m``/``女``/``男``, ``birthday`` as a date or ISO text, ``tags`` as a list);
    ``attributes`` the contact's custom attributes by key. A field without a value is left out,
    so the template's default (``{name|您好}``) applies.
    """
    out: dict[str, str] = {}
    for key in STANDARD_FIELDS:
        raw = contact.get(key)
        if raw is None or raw == "" or raw == []:
            continue
        if key == "gender":
            text = _GENDER.get(str(raw).strip().lower(), "")
        elif key == "birthday":
            text = _birthday(raw)
        elif key == "tags":
            items = raw if isinstance(raw, list | tuple | set | frozenset) else [raw]
            text = "、".join(str(t) for t in items)
        else:
            text = str(raw).strip()
        if text:
            out[key] = text
    for key, raw in (attributes or {}).items():
        if raw is not None and str(raw).strip():
            out[ATTRIBUTE_PREFIX + key] = str(raw).strip()
    return out
