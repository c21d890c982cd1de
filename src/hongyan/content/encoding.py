"""How an SMS text is encoded and split into parts.

Pure functions, no I/O. Used by the message editor (live character count, "还可输入 N 字") and by
the SMPP channel (the actual payload bytes of every part).

Encoding choice
    A message is sent in the GSM 03.38 default alphabet (7-bit, SMPP ``data_coding`` 0) only if
    *every* character is in the basic table or the extension table. A single other character
    anywhere in the text -- one Chinese character, the full-width brackets ``【】`` that Chinese
    operators require around the signature, Chinese punctuation such as ``，。！``, an emoji --
    makes the *whole* message UCS-2 (UTF-16BE, ``data_coding`` 8). Marketing texts for Chinese
    businesses are therefore almost always UCS-2.

Counting
    GSM-7 counts septets: basic characters take 1, extension characters (``^ { } \\ [ ~ ] | €``
    and form feed) take 2, because they are sent as the escape 0x1B followed by their code.
    UCS-2 counts UTF-16 code units: characters in the BMP (all common Chinese) take 1, characters
    outside it (emoji, rare CJK extension ideographs) take 2 as a surrogate pair.

Splitting
    A text that fits a single message is sent as one part (160 septets / 70 units). A longer text
    becomes a concatenated ("long") message whose parts each carry a 6-octet User Data Header,
    leaving 153 septets / 67 units per part. Parts are filled greedily; an escape pair (GSM-7) or a
    surrogate pair (UCS-2) is never split across parts -- the whole character moves to the next
    part, so a part may hold one unit less than the limit.

Empty text
    ``plan("")`` has 0 parts, no segments, encoding ``gsm7`` and ``remaining`` equal to a single
    GSM-7 message (160): nothing is sent, and the editor shows the full capacity.

One split, two speeds
    :func:`plan` is what the SMPP channel sends (it needs every segment). :func:`measure` gives
    the same encoding, units and part count without building segments, for the lint and for
    rendering a million messages: a text whose characters all take one unit is split by
    arithmetic (greedy filling of equal-width characters is exactly ``ceil(units / per_part)``);
    a long text with a two-unit character goes through the very same :func:`_split`. A property
    test holds ``measure(t) == (plan(t).encoding, plan(t).units, plan(t).parts)`` for any text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

__all__ = [
    "DATA_CODING_GSM7",
    "DATA_CODING_UCS2",
    "GSM7_BASIC",
    "GSM7_ESCAPE",
    "GSM7_EXTENSION",
    "MULTI_GSM7",
    "MULTI_UCS2",
    "SINGLE_GSM7",
    "SINGLE_UCS2",
    "UDH_OCTETS",
    "Encoding",
    "Measure",
    "SmsPlan",
    "char_units",
    "count_parts",
    "decode_gsm7_unpacked",
    "encode_gsm7_unpacked",
    "encode_segments",
    "gsm7_septets",
    "is_gsm7",
    "measure",
    "plan",
    "split_points",
    "utf16_units",
]

Encoding = Literal["gsm7", "ucs2"]

#: SMPP ``data_coding`` for the SMSC default alphabet (GSM 03.38, one septet per octet).
DATA_CODING_GSM7: Final = 0
#: SMPP ``data_coding`` for UCS-2 (sent as UTF-16BE, so surrogate pairs pass through).
DATA_CODING_UCS2: Final = 8

#: Octets of the concatenation User Data Header (UDHL + IEI 0x00 + IEDL + ref + total + seq).
UDH_OCTETS: Final = 6

#: Septets in a single GSM-7 message: 140 octets * 8 / 7.
SINGLE_GSM7: Final = 160
#: Septets per part of a long GSM-7 message: (140 - 6 UDH octets) * 8 / 7, rounded down.
MULTI_GSM7: Final = 153
#: UTF-16 code units in a single UCS-2 message: 140 octets / 2. Chinese operators (China Mobile,
#: China Unicom, China Telecom) bill and count a Chinese SMS as 70 characters.
SINGLE_UCS2: Final = 70
#: UTF-16 code units per part of a long UCS-2 message: (140 - 6 UDH octets) / 2. Chinese operators
#: count 67 characters per part of a long message.
MULTI_UCS2: Final = 67

#: The escape septet that precedes every extension-table character.
GSM7_ESCAPE: Final = 0x1B

# GSM 03.38 basic character table, indexed by septet value (0x00-0x7F). 0x1B is the escape to the
# extension table and is not a character; it is written here as a placeholder and excluded below.
_BASIC_TABLE: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(_BASIC_TABLE) == 128

#: Basic table: character -> septet.
GSM7_BASIC: Final[dict[str, int]] = {
    ch: code for code, ch in enumerate(_BASIC_TABLE) if code != GSM7_ESCAPE
}

#: Extension table: character -> septet sent after the escape 0x1B.
GSM7_EXTENSION: Final[dict[str, int]] = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}

# Compiled once: a search in C is what makes counting a million texts cheap.
_NOT_GSM7: Final = re.compile(
    "[^" + "".join(re.escape(ch) for ch in (*GSM7_BASIC, *GSM7_EXTENSION)) + "]"
)
_GSM7_WIDE: Final = re.compile("[" + "".join(re.escape(ch) for ch in GSM7_EXTENSION) + "]")
_UCS2_WIDE: Final = re.compile("[\U00010000-\U0010ffff]")

_BASIC_DECODE: Final[dict[int, str]] = {code: ch for ch, code in GSM7_BASIC.items()}
_EXTENSION_DECODE: Final[dict[int, str]] = {code: ch for ch, code in GSM7_EXTENSION.items()}


@dataclass(frozen=True, slots=True)
class SmsPlan:
    """How a text goes out: encoding, size and the parts it is split into.

    ``units`` are septets for ``gsm7`` and UTF-16 code units for ``ucs2``. ``per_part`` is the
    limit that applies to every part (160/70 for a single message, 153/67 for a long one).
    ``remaining`` is how many more units fit in the last part before another part is needed
    (what the editor shows as "还可输入 N 字"; with 1 remaining a 2-unit character would not fit).
    """

    encoding: Encoding
    data_coding: int
    units: int
    parts: int
    per_part: int
    remaining: int
    segments: list[str] = field(default_factory=list)


class Measure(NamedTuple):
    """Encoding, units and parts of a text: what :func:`plan` says, without the segments."""

    encoding: Encoding
    units: int
    parts: int


def is_gsm7(text: str) -> bool:
    """True if every character is in the GSM 03.38 basic or extension table."""
    return _NOT_GSM7.search(text) is None


def gsm7_septets(text: str) -> int:
    """Septets needed for ``text`` in GSM-7; extension characters count 2.

    Raises ``ValueError`` if a character is not in the GSM 03.38 alphabet.
    """
    bad = _NOT_GSM7.search(text)
    if bad is not None:
        raise ValueError(f"character {bad.group()!r} is not in the GSM 03.38 alphabet")
    return len(text) + len(_GSM7_WIDE.findall(text))


def utf16_units(text: str) -> int:
    """UTF-16 code units in ``text``: 1 per BMP character, 2 per character outside the BMP."""
    if text.isascii():
        return len(text)
    return len(text) + len(_UCS2_WIDE.findall(text))


def char_units(ch: str, encoding: Encoding) -> int:
    """Units one character takes in ``encoding`` (septets or UTF-16 code units)."""
    if encoding == "gsm7":
        return 2 if ch in GSM7_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1


def encode_gsm7_unpacked(text: str) -> bytes:
    """GSM-7 with one septet per octet, as SMPP ``data_coding`` 0 usually carries it.

    Extension characters become ``0x1B`` followed by their code. Raises ``ValueError`` if a
    character is not in the GSM 03.38 alphabet.
    """
    out = bytearray()
    for ch in text:
        code = GSM7_BASIC.get(ch)
        if code is not None:
            out.append(code)
            continue
        ext = GSM7_EXTENSION.get(ch)
        if ext is None:
            raise ValueError(f"character {ch!r} is not in the GSM 03.38 alphabet")
        out += bytes((GSM7_ESCAPE, ext))
    return bytes(out)


def decode_gsm7_unpacked(data: bytes) -> str:
    """Inverse of :func:`encode_gsm7_unpacked`.

    An escape followed by a code with no extension character decodes as the basic character of
    that code, as GSM 03.38 asks receivers to do. Raises ``ValueError`` for octets above 0x7F
    and for a trailing escape with nothing after it.
    """
    out: list[str] = []
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code > 0x7F:
            raise ValueError(f"octet 0x{code:02X} at {i} is not a septet")
        if code != GSM7_ESCAPE:
            out.append(_BASIC_DECODE[code])
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("escape 0x1B at end of data")
        nxt = data[i + 1]
        if nxt > 0x7F:
            raise ValueError(f"octet 0x{nxt:02X} at {i + 1} is not a septet")
        ext = _EXTENSION_DECODE.get(nxt)
        if ext is not None:
            out.append(ext)
        elif nxt == GSM7_ESCAPE:
            # A double escape is reserved; show a space as the specification suggests.
            out.append(" ")
        else:
            out.append(_BASIC_DECODE[nxt])
        i += 2
    return "".join(out)


def _split(text: str, encoding: Encoding, limit: int) -> list[str]:
    """Greedy split: fill each part up to ``limit`` units, never splitting a character."""
    segments: list[str] = []
    start = 0
    used = 0
    for i, ch in enumerate(text):
        cost = char_units(ch, encoding)
        if used + cost > limit:
            segments.append(text[start:i])
            start = i
            used = 0
        used += cost
    if start < len(text):
        segments.append(text[start:])
    return segments


def count_parts(text: str, encoding: Encoding, units: int, wide: bool) -> int:
    """Parts ``text`` is sent in, given its encoding, its units and whether any character in it
    takes two units (a GSM-7 extension character, a UCS-2 surrogate pair).

    Equal-width text is split by arithmetic; otherwise by :func:`_split`, as :func:`plan` does.
    """
    if units == 0:
        return 0
    single, multi = (SINGLE_GSM7, MULTI_GSM7) if encoding == "gsm7" else (SINGLE_UCS2, MULTI_UCS2)
    if units <= single:
        return 1
    if not wide:
        return -(-units // multi)
    return len(_split(text, encoding, multi))


def measure(text: str) -> Measure:
    """Encoding, units and parts of ``text``, exactly as :func:`plan` counts them."""
    if not text:
        return Measure("gsm7", 0, 0)
    if _NOT_GSM7.search(text) is None:
        wide = len(_GSM7_WIDE.findall(text))
        units = len(text) + wide
        return Measure("gsm7", units, count_parts(text, "gsm7", units, wide > 0))
    units = utf16_units(text)
    return Measure("ucs2", units, count_parts(text, "ucs2", units, units > len(text)))


def split_points(sms: SmsPlan) -> list[int]:
    """Character offsets where the second and later parts begin (for the editor's markers)."""
    points: list[int] = []
    offset = 0
    for segment in sms.segments[:-1]:
        offset += len(segment)
        points.append(offset)
    return points


def plan(text: str) -> SmsPlan:
    """Decide encoding, count units and split ``text`` into SMS parts.

    One non-GSM character anywhere makes the whole message UCS-2. Empty text plans 0 parts.
    """
    if not text:
        return SmsPlan(
            encoding="gsm7",
            data_coding=DATA_CODING_GSM7,
            units=0,
            parts=0,
            per_part=SINGLE_GSM7,
            remaining=SINGLE_GSM7,
            segments=[],
        )
    encoding: Encoding
    if is_gsm7(text):
        encoding, data_coding = "gsm7", DATA_CODING_GSM7
        units = gsm7_septets(text)
        single, multi = SINGLE_GSM7, MULTI_GSM7
    else:
        encoding, data_coding = "ucs2", DATA_CODING_UCS2
        units = utf16_units(text)
        single, multi = SINGLE_UCS2, MULTI_UCS2
    if units <= single:
        per_part = single
        segments = [text]
    else:
        per_part = multi
        segments = _split(text, encoding, multi)
    last_units = sum(char_units(ch, encoding) for ch in segments[-1])
    return SmsPlan(
        encoding=encoding,
        data_coding=data_coding,
        units=units,
        parts=len(segments),
        per_part=per_part,
        remaining=per_part - last_units,
        segments=segments,
    )


def encode_segments(sms: SmsPlan) -> list[bytes]:
    """Payload bytes of every part, without UDH: GSM-7 unpacked or UTF-16BE."""
    if sms.encoding == "gsm7":
        return [encode_gsm7_unpacked(seg) for seg in sms.segments]
    # surrogatepass keeps a stray lone surrogate as its own code unit instead of failing.
    return [seg.encode("utf-16-be", "surrogatepass") for seg in sms.segments]
