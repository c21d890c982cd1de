"""SMS encoding choice, unit counts and splitting into parts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.content.encoding import (
    DATA_CODING_GSM7,
    DATA_CODING_UCS2,
    GSM7_BASIC,
    GSM7_EXTENSION,
    MULTI_GSM7,
    MULTI_UCS2,
    SINGLE_GSM7,
    SINGLE_UCS2,
    Encoding,
    Measure,
    char_units,
    count_parts,
    decode_gsm7_unpacked,
    encode_gsm7_unpacked,
    encode_segments,
    gsm7_septets,
    is_gsm7,
    measure,
    plan,
    split_points,
    utf16_units,
)

SIGNATURE = "【鸿雁茶饮】"  # 6 UCS-2 units
CHINESE = "欢迎光临本店新品上市会员专享八折优惠"
EMOJI = "🍵"  # outside the BMP: 2 UTF-16 code units

GSM_CHARS = "".join(GSM7_BASIC) + "".join(GSM7_EXTENSION)
gsm_text = st.text(alphabet=GSM_CHARS, max_size=600)
non_gsm_char = st.characters(codec="utf-8").filter(
    lambda c: c not in GSM7_BASIC and c not in GSM7_EXTENSION
)
any_text = st.one_of(
    gsm_text,
    st.text(max_size=400),
    st.text(alphabet=GSM_CHARS + "鸿雁【】，。！" + EMOJI + "😀", max_size=400),
)


def chinese(n: int) -> str:
    return (CHINESE * (n // len(CHINESE) + 1))[:n]


def test_constants() -> None:
    assert (SINGLE_GSM7, MULTI_GSM7, SINGLE_UCS2, MULTI_UCS2) == (160, 153, 70, 67)
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENSION) == 10


@pytest.mark.parametrize(
    ("text", "encoding", "units", "parts", "per_part", "remaining", "sizes"),
    [
        ("a" * 160, "gsm7", 160, 1, 160, 0, [160]),
        ("a" * 161, "gsm7", 161, 2, 153, 145, [153, 8]),
        ("a" * 306, "gsm7", 306, 2, 153, 0, [153, 153]),
        ("a" * 307, "gsm7", 307, 3, 153, 152, [153, 153, 1]),
        ("Hi", "gsm7", 2, 1, 160, 158, [2]),
        ("€" * 80, "gsm7", 160, 1, 160, 0, [80]),
        ("€" * 81, "gsm7", 162, 2, 153, 143, [76, 5]),
        # the escape pair for "[" would occupy septets 153-154: it moves whole to part two
        ("a" * 152 + "[" + "b" * 10, "gsm7", 164, 2, 153, 141, [152, 11]),
        ("a" * 151 + "[" + "b" * 10, "gsm7", 163, 2, 153, 143, [152, 10]),
        (SIGNATURE + chinese(64), "ucs2", 70, 1, 70, 0, [70]),
        (SIGNATURE + chinese(65), "ucs2", 71, 2, 67, 63, [67, 4]),
        ("a" * 70, "gsm7", 70, 1, 160, 90, [70]),
        ("a" * 69 + "é", "gsm7", 70, 1, 160, 90, [70]),
        ("a" * 69 + "，", "ucs2", 70, 1, 70, 0, [70]),
        # emoji straddling the 67-unit boundary moves whole to the next part
        ("中" * 66 + EMOJI + "中" * 5, "ucs2", 73, 2, 67, 60, [66, 6]),
        ("中" * 65 + EMOJI + "中" * 5, "ucs2", 72, 2, 67, 62, [66, 5]),
        (EMOJI * 35, "ucs2", 70, 1, 70, 0, [35]),
        (EMOJI * 36, "ucs2", 72, 2, 67, 61, [33, 3]),
    ],
    ids=[
        "ascii-160",
        "ascii-161",
        "ascii-306",
        "ascii-307",
        "short",
        "euro-80",
        "euro-81",
        "escape-straddles-153",
        "escape-ends-at-153",
        "signature-70",
        "signature-71",
        "ascii-70",
        "latin-accent-70",
        "chinese-comma-70",
        "emoji-straddles-67",
        "emoji-ends-at-67",
        "emoji-35",
        "emoji-36",
    ],
)
def test_plan_examples(
    text: str,
    encoding: str,
    units: int,
    parts: int,
    per_part: int,
    remaining: int,
    sizes: list[int],
) -> None:
    p = plan(text)
    assert p.encoding == encoding
    assert p.data_coding == (DATA_CODING_GSM7 if encoding == "gsm7" else DATA_CODING_UCS2)
    assert p.units == units
    assert p.parts == parts
    assert p.per_part == per_part
    assert p.remaining == remaining
    assert [len(s) for s in p.segments] == sizes
    assert "".join(p.segments) == text


def test_empty_text_is_zero_parts() -> None:
    p = plan("")
    assert (p.parts, p.units, p.segments, p.encoding) == (0, 0, [], "gsm7")
    assert p.remaining == SINGLE_GSM7
    assert encode_segments(p) == []


def test_signature_brackets_force_ucs2() -> None:
    assert not is_gsm7("【】")
    assert plan("【Shop】 hello").encoding == "ucs2"
    assert plan("[Shop] hello").encoding == "gsm7"


@pytest.mark.parametrize(
    ("text", "septets", "encoded"),
    [
        ("€", 2, b"\x1b\x65"),
        ("[]", 4, b"\x1b\x3c\x1b\x3e"),
        ("{}", 4, b"\x1b\x28\x1b\x29"),
        ("^\\~|", 8, b"\x1b\x14\x1b\x2f\x1b\x3d\x1b\x40"),
        ("\f", 2, b"\x1b\x0a"),
        ("@£$", 3, b"\x00\x01\x02"),
        ("A a", 3, b"\x41\x20\x61"),
        ("Δ_ß", 3, b"\x10\x11\x1e"),
        ("¡¿§à", 4, b"\x40\x60\x5f\x7f"),
        ("\r\n", 2, b"\x0d\x0a"),
    ],
)
def test_gsm7_examples(text: str, septets: int, encoded: bytes) -> None:
    assert is_gsm7(text)
    assert gsm7_septets(text) == septets
    assert encode_gsm7_unpacked(text) == encoded
    assert decode_gsm7_unpacked(encoded) == text


@pytest.mark.parametrize("text", ["中", "ç", "`", "\t", "€中", "😀"])
def test_gsm7_rejects_non_gsm(text: str) -> None:
    assert not is_gsm7(text)
    with pytest.raises(ValueError):
        gsm7_septets(text)
    with pytest.raises(ValueError):
        encode_gsm7_unpacked(text)


def test_decode_gsm7_errors_and_fallback() -> None:
    with pytest.raises(ValueError):
        decode_gsm7_unpacked(b"\x80")
    with pytest.raises(ValueError):
        decode_gsm7_unpacked(b"a\x1b")
    # an escape before a code without an extension character shows the basic character
    assert decode_gsm7_unpacked(b"\x1b\x41") == "A"


def test_encode_segments_examples() -> None:
    assert encode_segments(plan("Hi€")) == [b"Hi\x1b\x65"]
    assert encode_segments(plan("【鸿雁】")) == ["【鸿雁】".encode("utf-16-be")]
    p = plan(EMOJI * 36)
    payloads = encode_segments(p)
    assert [len(b) for b in payloads] == [132, 12]
    assert b"".join(payloads).decode("utf-16-be") == EMOJI * 36


def _seg_units(segment: str, encoding: Encoding) -> int:
    return sum(char_units(ch, encoding) for ch in segment)


@given(any_text)
def test_segments_join_back(text: str) -> None:
    assert "".join(plan(text).segments) == text


@given(any_text)
def test_segments_within_limit_and_counted(text: str) -> None:
    p = plan(text)
    assert p.parts == len(p.segments)
    assert all(s for s in p.segments)
    assert all(_seg_units(s, p.encoding) <= p.per_part for s in p.segments)
    assert sum(_seg_units(s, p.encoding) for s in p.segments) == p.units
    if p.parts:
        assert p.remaining == p.per_part - _seg_units(p.segments[-1], p.encoding)
        assert 0 <= p.remaining < p.per_part
    single = SINGLE_GSM7 if p.encoding == "gsm7" else SINGLE_UCS2
    multi = MULTI_GSM7 if p.encoding == "gsm7" else MULTI_UCS2
    assert p.per_part == (single if p.parts <= 1 else multi)
    assert (p.parts <= 1) == (p.units <= single)


@given(any_text)
def test_plan_is_greedy(text: str) -> None:
    p = plan(text)
    for seg, nxt in zip(p.segments, p.segments[1:], strict=False):
        assert _seg_units(seg, p.encoding) + char_units(nxt[0], p.encoding) > p.per_part


@given(any_text)
def test_encoded_payloads_fit_140_octets(text: str) -> None:
    p = plan(text)
    payloads = encode_segments(p)
    assert len(payloads) == p.parts
    udh = 0 if p.parts <= 1 else 6
    for payload in payloads:
        if p.encoding == "gsm7":
            assert len(payload) * 7 <= (140 - udh) * 8
        else:
            assert len(payload) <= 140 - udh
    if p.encoding == "gsm7":
        assert "".join(decode_gsm7_unpacked(b) for b in payloads) == text
    else:
        assert b"".join(payloads) == text.encode("utf-16-be")


@given(gsm_text)
def test_gsm7_round_trip(text: str) -> None:
    assert is_gsm7(text)
    encoded = encode_gsm7_unpacked(text)
    assert len(encoded) == gsm7_septets(text)
    assert all(b < 0x80 for b in encoded)
    assert decode_gsm7_unpacked(encoded) == text


@given(gsm_text, non_gsm_char, gsm_text)
def test_one_non_gsm_char_makes_ucs2(before: str, ch: str, after: str) -> None:
    text = before + ch + after
    assert not is_gsm7(text)
    p = plan(text)
    assert p.encoding == "ucs2"
    assert p.data_coding == DATA_CODING_UCS2


@given(st.text(max_size=300))
def test_utf16_units_match_encoded_length(text: str) -> None:
    assert utf16_units(text) == len(text.encode("utf-16-be")) // 2
    if not is_gsm7(text):
        assert plan(text).units == len(text.encode("utf-16-be")) // 2


@given(any_text)
def test_measure_is_plan_without_segments(text: str) -> None:
    p = plan(text)
    assert measure(text) == (p.encoding, p.units, p.parts)


@pytest.mark.parametrize(
    "text",
    [
        "中" * 66 + EMOJI + "中" * 5,
        EMOJI * 36,
        "a" * 152 + "[" + "b" * 10,
        "€" * 81,
        "中" * 200,
        "a" * 1000,
        "\ud800" * 80,  # lone surrogates count one unit each, as plan() sends them
    ],
)
def test_measure_examples_match_plan(text: str) -> None:
    p = plan(text)
    assert measure(text) == Measure(p.encoding, p.units, p.parts)
    assert count_parts(text, p.encoding, p.units, p.units > len(text)) == p.parts


def test_split_points_are_the_part_boundaries() -> None:
    p = plan(SIGNATURE + chinese(65))
    assert split_points(p) == [67]
    assert split_points(plan("short")) == []
    assert split_points(plan("")) == []
    p3 = plan("a" * 307)
    assert split_points(p3) == [153, 306]


@given(any_text)
def test_split_points_cut_the_text_into_the_segments(text: str) -> None:
    p = plan(text)
    cuts = [0, *split_points(p), len(text)]
    if p.parts:
        assert [text[a:b] for a, b in itertools.pairwise(cuts)] == p.segments
