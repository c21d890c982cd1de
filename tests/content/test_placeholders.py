"""{name} placeholders: values placed, nothing else possible, every mistake named."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.content.placeholders import (
    MissingParameter,
    TemplateError,
    UnknownParameter,
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


names = st.from_regex(r"[a-z_][a-z0-9_]{0,9}", fullmatch=True)
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
