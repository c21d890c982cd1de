"""{name} placeholders: values placed, nothing else possible, every mistake named."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.content.placeholders import (
    MissingParameter,
    Slot,
    TemplateError,
    UnknownParameter,
    parse,
    placeholders,
    render,
)


def test_fills_names_in_any_script_and_keeps_literal_braces() -> None:
    out = render("【鸿雁】{姓名}您好，验证码{code}，{{原样}}", {"姓名": "李女士", "code": 4821})
    assert out == "【鸿雁】李女士您好，验证码4821，{原样}"
    assert placeholders("{a}{b}{a}") == ["a", "b"]
    assert render("no placeholders", {}) == "no placeholders"


@pytest.mark.parametrize(
    "template",
    [
        "{a.b}",
        "{a[0]}",
        "{a!r}",
        "{a:>9}",
        "{}",
        "{ a }",
        "{1a}",
        "{__class__.__mro__}",
        "{a",
        "a}",
        "{{a}",
        "{" + "x" * 41 + "}",
    ],
)
def test_anything_but_a_name_is_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, {"a": "1"})


def test_unknown_missing_and_bad_values() -> None:
    with pytest.raises(UnknownParameter) as unknown:
        render("{a}", {"a": 1, "b": 2})
    assert unknown.value.details == {"unknown": ["b"]}
    with pytest.raises(MissingParameter) as missing:
        render("{a}{b}", {"a": 1})
    assert missing.value.details == {"missing": ["b"]}
    for bad in (True, None, ["x"], {"k": 1}, "x" * 501):
        with pytest.raises(TemplateError):
            render("{a}", {"a": bad})


# A leading "__" is refused (it reads as reaching for Python internals): not drawn here.
names = st.from_regex(r"[a-z][a-z0-9_]{0,9}|_[a-z0-9][a-z0-9_]{0,8}", fullmatch=True)
plain = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=20)


@given(st.lists(st.tuples(plain, names), max_size=6), plain, st.data())
def test_render_places_exactly_the_values(
    pieces: list[tuple[str, str]], tail: str, data: st.DataObject
) -> None:
    template = "".join(f"{text}{{{name}}}" for text, name in pieces) + tail
    values = {name: data.draw(plain) for _, name in pieces}
    expected = "".join(text + values[name] for text, name in pieces) + tail
    assert render(template, values) == expected


@given(st.text(max_size=40))
def test_any_text_renders_or_raises_a_typed_error(template: str) -> None:
    try:
        names_used = placeholders(template)
    except TemplateError:
        return
    out = render(template, dict.fromkeys(names_used, "v"))
    assert "{" not in out.replace("{{", "") or "{{" in template


def test_defaults_fill_missing_or_empty_values() -> None:
    template = "【鸿雁】{name|您好}，{city|本地}门店{gift|}上新"
    assert render(template, {"name": "李女士", "city": "杭州"}) == "【鸿雁】李女士，杭州门店上新"
    assert render(template, {}) == "【鸿雁】您好，本地门店上新"
    assert render(template, {"name": "", "gift": "送券"}) == "【鸿雁】您好，本地门店送券上新"
    # without a default an empty value renders empty, a missing one is an error
    assert render("{a}x", {"a": ""}) == "x"
    with pytest.raises(MissingParameter):
        render("{a}x", {})


def test_parse_reports_slots_and_positions() -> None:
    pieces = parse("【鸿雁】{name|您好}，{attr.会员等级}会员{{专享}}")
    assert pieces == (
        "【鸿雁】",
        Slot("name", "您好", 4, 13, 10),
        "，",
        Slot("attr.会员等级", None, 14, 25),
        "会员{专享}",
    )
    template = "【鸿雁】{name|您好}"
    slot = pieces[1]
    assert isinstance(slot, Slot) and slot.default_at is not None
    assert template[slot.start : slot.end] == "{name|您好}"
    assert template[slot.default_at : slot.default_at + 2] == "您好"
    assert placeholders("{attr.level}{name|x}{attr.level|y}") == ["attr.level", "name"]


@pytest.mark.parametrize(
    ("template", "at"),
    [
        ("ok {a.b} ok", 3),
        ("ok {attr.} ok", 3),
        ("ok {attr.a.b} ok", 3),
        ("ok {__class__} ok", 3),
        ("ok {attr.__dict__} ok", 3),
        ("ok {x|" + "d" * 41 + "} ok", 3),
        ("ok } ok", 3),
        ("{ok} {", 5),
        ("{a|b{c}", 0),
        ("{name|您好", 0),
    ],
)
def test_mistakes_are_refused_with_their_position(template: str, at: int) -> None:
    with pytest.raises(TemplateError) as err:
        parse(template)
    assert err.value.details["at"] == at
    assert err.value.message_zh and err.value.message_en


def test_a_default_may_hold_a_bar_and_any_text_but_braces() -> None:
    assert render("{a|x|y 的}", {}) == "x|y 的"


@given(st.text(max_size=60))
def test_parse_then_join_gives_back_the_text_for_brace_free_input(text: str) -> None:
    plain_text = text.replace("{", "").replace("}", "")
    assert "".join(p for p in parse(plain_text) if isinstance(p, str)) == plain_text
