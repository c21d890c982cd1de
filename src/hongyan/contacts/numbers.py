"""Which network a number is on, from its prefix (pure; used for routing and reports).

Chinese mobile numbers are allocated to carriers by their first three digits (a few by four: the
virtual-operator segments 170 and the satellite segment 1349). A virtual operator's number rides
on its host carrier's network, so for routing it counts as the host carrier.
Carriers: ``cmcc`` 中国移动, ``cucc`` 中国联通, ``ctcc`` 中国电信, ``cbn`` 中国广电; ``intl`` is
every number outside mainland China.
"""

from __future__ import annotations

import re

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")

CARRIER_NAMES = {"cmcc": "中国移动", "cucc": "中国联通", "ctcc": "中国电信", "cbn": "中国广电"}

_SEGMENTS: dict[str, tuple[str, ...]] = {
    "cmcc": (
        "134", "135", "136", "137", "138", "139", "147", "148", "150", "151", "152", "157",
        "158", "159", "165", "172", "178", "182", "183", "184", "187", "188", "195", "197",
        "198",
    ),
    "cucc": (
        "130", "131", "132", "145", "146", "155", "156", "166", "167", "171", "175", "176",
        "185", "186", "196",
    ),
    "ctcc": (
        "133", "149", "153", "162", "173", "174", "177", "180", "181", "189", "190", "191",
        "193", "199",
    ),
    "cbn": ("192",),
}  # fmt: skip
_BY_PREFIX = {p: carrier for carrier, prefixes in _SEGMENTS.items() for p in prefixes}
# Four-digit exceptions inside a three-digit segment.
_BY_PREFIX4 = {
    "1349": "ctcc",  # satellite
    "1700": "ctcc", "1701": "ctcc", "1702": "ctcc",
    "1703": "cmcc", "1705": "cmcc", "1706": "cmcc",
    "1704": "cucc", "1707": "cucc", "1708": "cucc", "1709": "cucc",
}  # fmt: skip


def carrier_of(e164: str) -> str | None:
    """``cmcc`` / ``cucc`` / ``ctcc`` / ``cbn`` for a Chinese mobile, ``intl`` outside China,
    None for a Chinese number in no known mobile segment (a landline, an unallocated prefix)
    and for anything that is not an E.164 number."""
    if not _E164.fullmatch(e164):
        return None
    if not e164.startswith("+86"):
        return "intl"
    national = e164[3:]
    if len(national) != 11:
        return None
    return _BY_PREFIX4.get(national[:4]) or _BY_PREFIX.get(national[:3])


# -- normalising what people type, and where a number is from ------------------------------------
#
# Marketers' files write a number every way a person does: ``138 1234 5678``, ``138-1234-5678``,
# ``+86 138…``, ``0086138…``, ``86138…``, full-width digits, a leading apostrophe Excel kept
# to stop it turning the number into 1.38E+10. :func:`normalise` turns all of them into E.164.
# Chinese mobiles take a fast path (a translate, a length check, two dict lookups); only other
# numbers go through ``phonenumbers``, whose full parse costs some 20 µs a number.

# Characters a person puts between digits; full-width forms are folded first.
_FOLD = {ord("０") + i: ord("0") + i for i in range(10)}
_FOLD.update({ord("＋"): ord("+")})
_DROP = " \t\u3000\u00a0\u2009\u202f-‐‑‒–—－.()（）/'’‘\"＂`"
_MAP: dict[str | int, str | None] = {k: chr(v) for k, v in _FOLD.items()}
_MAP.update(dict.fromkeys(_DROP))
_TABLE = str.maketrans(_MAP)

#: Reason codes of a number that cannot be used, with their messages (English, Chinese).
NUMBER_PROBLEMS = {
    "empty": ("No phone number", "缺少手机号"),
    "bad_characters": ("The phone number has characters that are not digits", "手机号含非数字字符"),
    "wrong_length": ("A Chinese mobile number has 11 digits", "中国大陆手机号应为 11 位"),
    "unknown_segment": ("Not a Chinese mobile segment", "不是有效的中国大陆手机号段"),
    "not_mobile": ("Not a mobile number (SMS cannot reach it)", "不是手机号（无法接收短信）"),
    "invalid": ("Not a valid phone number", "不是有效的电话号码"),
}


class NumberProblem(ValueError):
    """Why a text is not a usable number: ``code`` is a key of :data:`NUMBER_PROBLEMS`."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _cn_mobile(national: str) -> str:
    if len(national) != 11:
        raise NumberProblem("wrong_length")
    if _BY_PREFIX4.get(national[:4]) is None and _BY_PREFIX.get(national[:3]) is None:
        raise NumberProblem("unknown_segment")
    return "+86" + national


def normalise(text: str) -> str:
    """The E.164 form of a number as people write it; :class:`NumberProblem` if it is none.

    A number without a country code is read as Chinese. Chinese numbers must be mobiles in an
    allocated segment (13x–19x, 16x and 17x virtual operators, 192 China Broadcasting Network);
    other countries' numbers must be valid mobiles by ``phonenumbers``' metadata.
    """
    s = text.strip().translate(_TABLE)
    if not s:
        raise NumberProblem("empty")
    if s.isdigit() and s.isascii():
        if s[0] == "1":  # the common case: 11 national digits
            return _cn_mobile(s)
        if s.startswith("0086"):
            return _cn_mobile(s[4:])
        if s.startswith("86") and len(s) == 13:
            return _cn_mobile(s[2:])
        if s.startswith("00"):
            return _foreign("+" + s[2:])
        return _foreign(s)
    if s[0] == "+" and s[1:].isdigit() and s[1:].isascii():
        if s.startswith("+86"):
            return _cn_mobile(s[3:])
        return _foreign(s)
    raise NumberProblem("bad_characters")


def _foreign(s: str) -> str:
    import phonenumbers

    try:
        parsed = phonenumbers.parse(s, None if s.startswith("+") else "CN")
    except phonenumbers.NumberParseException as exc:
        raise NumberProblem("invalid") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise NumberProblem("unknown_segment" if parsed.country_code == 86 else "invalid")
    kind = phonenumbers.number_type(parsed)
    if kind not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise NumberProblem("not_mobile")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if e164.startswith("+86"):  # a Chinese mobile phonenumbers knows; keep our own segment rule
        return _cn_mobile(e164[3:])
    return e164


def country_of(e164: str) -> str:
    """ISO 3166 region of an E.164 number (``CN`` on the fast path); ``ZZ`` if unknown or if
    the number belongs to no country (a satellite mobile, +881 or +870, which phonenumbers
    places in region ``001``: three characters, too long for the two-letter column)."""
    if e164.startswith("+86"):
        return "CN"
    import phonenumbers

    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return "ZZ"
    return region if region and len(region) == 2 and region.isalpha() else "ZZ"


def zone_of(e164: str) -> str | None:
    """The IANA time zone of a foreign number when its prefix has exactly one
    (``phonenumbers.timezone``: +1 212 … New York, +44 … London); None for Chinese numbers (the
    tenant's zone applies), for a country that spans several zones, and when unknown."""
    if e164.startswith("+86"):
        return None
    import phonenumbers
    from phonenumbers import timezone as number_zones

    try:
        zones = number_zones.time_zones_for_number(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return None
    if len(zones) != 1 or zones[0] == number_zones.UNKNOWN_TIMEZONE:
        return None
    return str(zones[0])


def check_zone(name: str) -> str:
    """An IANA time zone name, checked with ``zoneinfo`` (``ValueError`` if unknown)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    text = str(name).strip()
    if not text or len(text) > 64 or text.startswith(("/", ".")) or ".." in text:
        raise ValueError(name)
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(name) from None
    return text
