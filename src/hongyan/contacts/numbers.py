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
