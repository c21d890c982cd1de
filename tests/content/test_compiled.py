"""A compiled template renders, counts and checks each recipient exactly as the slow path would."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hongyan.content.compiled import CompiledTemplate
from hongyan.content.encoding import measure
from hongyan.content.lint import LintContext
from hongyan.content.placeholders import MissingParameter, TemplateError, render

SIG = "【鸿雁茶饮】"
CTX = LintContext(approved_signatures=(SIG,), default_signature=SIG)
NOTICE = LintContext(category="notification", approved_signatures=(SIG,))
SPECIALS = {"coupon": "HY8K2M4Q", "link": "https://hy.cx/k7Qm2Zp"}
MEMBER_DAY = (
    f"{SIG}{{name|您好}}，您在{{city}}的会员日专享第二杯半价，券码{{coupon}}，"
    "点击{link} 今晚21点前有效，回T退订"
)


def test_renders_counts_and_finds_nothing_in_clean_values() -> None:
    t = CompiledTemplate(MEMBER_DAY, CTX)
    assert t.lint.ok and not t.dense
    r = t.check({"name": "李女士", "city": "杭州", **SPECIALS})
    assert r.text == render(MEMBER_DAY, {"name": "李女士", "city": "杭州", **SPECIALS})
    assert (r.encoding, r.units, r.parts) == measure(r.text)
    assert r.problems == ()
    assert t.keys == ["name", "city", "coupon", "link"]


def test_defaults_and_missing_values() -> None:
    t = CompiledTemplate(MEMBER_DAY, CTX)
    no_name = t.check({"city": "杭州", **SPECIALS})
    assert no_name.text.startswith(f"{SIG}您好，您在杭州")
    empty = t.check({"name": "", "city": "杭州", **SPECIALS})
    assert empty.text == no_name.text
    lenient = t.check({"name": "李女士", **SPECIALS})
    assert "您在的会员日" in lenient.text
    with pytest.raises(MissingParameter):
        t.check({"name": "李女士", **SPECIALS}, strict=True)
    with pytest.raises(MissingParameter) as err:
        t.check({"name": "李女士", "city": "杭州", "coupon": "HY8K2M4Q"})
    assert err.value.details == {"missing": ["link"]}  # a stand-in is never sent
    with pytest.raises(MissingParameter):
        t.check({"name": "李女士", "city": "杭州", "coupon": "", "link": "x"})


def test_words_brought_in_by_values_are_problems_of_that_message() -> None:
    t = CompiledTemplate(MEMBER_DAY, CTX)
    bad = t.check({"name": "李女士", "city": "免 费", **SPECIALS})
    assert bad.problems == (("word.sensitive", "免费"),)
    again = t.check({"name": "王先生", "city": "免 费", **SPECIALS})  # from the cache
    assert again.problems == bad.problems
    assert t.check({"name": "网络赌博", "city": "杭州", **SPECIALS}).problems == (
        ("word.forbidden", "赌博"),
    )
    assert t.check({"name": "最近", "city": "杭州", **SPECIALS}).problems == ()  # an exception


def test_a_term_made_of_literal_text_and_a_value_is_found() -> None:
    t = CompiledTemplate(f"{SIG}您好免{{x}}，回T退订", NOTICE)
    assert not t.dense
    assert t.check({"x": "费"}).problems == (("word.sensitive", "免费"),)
    assert t.check({"x": "用"}).problems == ()
    right = CompiledTemplate(f"{SIG}{{x}}费用全免，回T退订", NOTICE)
    assert right.check({"x": "免"}).problems == (("word.sensitive", "免费"),)


def test_neighbouring_placeholders_are_scanned_whole() -> None:
    t = CompiledTemplate(f"{SIG}{{a}}{{b}}，回T退订", NOTICE)
    assert t.dense
    assert t.check({"a": "免", "b": "费"}).problems == (("word.sensitive", "免费"),)
    assert t.check({"a": "免", "b": "单"}).problems == ()
    apart = CompiledTemplate(f"{SIG}{{a}}，{{b}}，回T退订", NOTICE)
    assert not apart.dense  # a comma between them is a boundary


def test_invalid_values_and_length() -> None:
    t = CompiledTemplate(MEMBER_DAY, CTX)
    assert t.check({"name": "李\x00", "city": "杭州", **SPECIALS}).problems == (
        ("value.invalid", "name"),
    )
    assert t.check({"name": "李", "city": "杭州", "coupon": "HY\n8", "link": "x"}).problems == (
        ("value.invalid", "coupon"),
    )
    short = CompiledTemplate(MEMBER_DAY, CTX, max_parts=1)
    r = short.check({"name": "李女士", "city": "杭州", **SPECIALS})
    assert r.parts == 2 and r.problems == (("length.max", "2"),)


def test_encoding_follows_the_values() -> None:
    t = CompiledTemplate("Hi {name}, 20% off today {link}", NOTICE)
    assert t.check({"name": "Ann", "link": "https://hy.cx/a"}).encoding == "gsm7"
    r = t.check({"name": "李", "link": "https://hy.cx/a"})
    assert (r.encoding, r.units, r.parts) == measure(r.text) == ("ucs2", len(r.text), 1)
    wide = t.check({"name": "€" * 70, "link": "https://hy.cx/a"})
    assert (wide.encoding, wide.units, wide.parts) == measure(wide.text)
    emoji = CompiledTemplate(f"{SIG}{{x}}", NOTICE).check({"x": "😀" * 40})
    assert (emoji.encoding, emoji.units, emoji.parts) == measure(emoji.text)


def test_literal_braces_survive_compilation() -> None:
    t = CompiledTemplate(f"{SIG}{{{{原样}}}}{{x}}{{{{0}}}}", NOTICE)
    assert t.render({"x": "好"}) == f"{SIG}{{原样}}好{{0}}"


def test_a_template_that_does_not_parse_is_refused() -> None:
    with pytest.raises(TemplateError):
        CompiledTemplate(f"{SIG}{{a.b}}", CTX)


def test_the_value_cache_is_bounded() -> None:
    from hongyan.content import compiled

    t = CompiledTemplate(f"{SIG}{{name|您好}}，回T退订", NOTICE)
    old = compiled._CACHE_MAX
    compiled._CACHE_MAX = 5
    try:
        for i in range(20):
            t.check({"name": f"客{i}"})
        slot = t._slots[0]
        assert slot.shared and len(slot.cache) <= 5  # the matcher's verdicts, bounded too
        assert t.check({"name": "免费"}).problems == (("word.sensitive", "免费"),)
    finally:
        compiled._CACHE_MAX = old


values = st.text(
    alphabet=st.sampled_from(list("李王女士先生杭州免费最近赌博ab€{}[]😀 ，\n")), max_size=12
)
templates = st.sampled_from(
    [
        MEMBER_DAY,
        f"{SIG}{{name}}{{city}}，回T退订",
        "Hi {name|there}, {city} 20% off {link}",
        f"{SIG}免{{name}}费{{city|本地}}",
    ]
)


@settings(max_examples=300)
@given(templates, values, values, st.data())
def test_check_agrees_with_render_and_measure(
    template: str, name: str, city: str, data: st.DataObject
) -> None:
    ctx = NOTICE
    t = CompiledTemplate(template, ctx)
    vals = {"name": name, "city": city, **SPECIALS}
    used = {k: v for k, v in vals.items() if k in t.keys}
    try:
        r = t.check(used)
    except MissingParameter:
        assert any(not used.get(k) for k in ("coupon", "link") if k in t.keys)
        return
    # a second look (cached) gives the same answer
    assert t.check(used) == r
    assert (r.encoding, r.units, r.parts) == measure(r.text)
    # the slow path: the placeholders module fills the same text
    assert r.text == render(template, {k: v for k, v in used.items()})
    # the window scan per value finds what a scan of the whole text finds around the values
    slow = CompiledTemplate(template, ctx)
    slow.dense = True
    expected = slow._check(used, strict=False).problems
    if not any(p[0] == "value.invalid" for p in (*r.problems, *expected)):
        assert sorted(r.problems) == sorted(expected)


row_values = st.one_of(st.none(), st.just(""), values)


@settings(max_examples=200)
@given(templates, st.lists(st.tuples(row_values, row_values), min_size=1, max_size=12))
def test_check_many_is_check_for_every_row(
    template: str, rows: list[tuple[str | None, str | None]]
) -> None:
    t = CompiledTemplate(template, NOTICE)
    batch = []
    for name, city in rows:
        row = dict(SPECIALS)
        if name is not None:
            row["name"] = name
        if city is not None:
            row["city"] = city
        batch.append(row)
    assert t.check_many(batch).rendered() == [t.check(r) for r in batch]


def test_check_many_examples() -> None:
    t = CompiledTemplate(MEMBER_DAY, CTX)
    rows = [
        {"name": "李女士", "city": "杭州", **SPECIALS},
        {"city": "上海", **SPECIALS},
        {"name": "", "city": "免 费", **SPECIALS},
        {"name": "😀" * 30, "city": "杭州", **SPECIALS},
    ]
    got = t.check_many(rows).rendered()
    assert got == [t.check(r) for r in rows]
    assert got[2].problems == (("word.sensitive", "免费"),) and got[3].parts == 2
    gsm = CompiledTemplate("Hi {name|there}, 20% off today {link}", NOTICE)
    mixed = [{"name": "Ann", "link": "https://hy.cx/a"}, {"name": "李", "link": "https://hy.cx/b"}]
    assert gsm.check_many(mixed).encodings == ["gsm7", "ucs2"]
    with pytest.raises(MissingParameter):
        t.check_many([{"name": "李女士", "city": "杭州", "coupon": "X"}])
    with pytest.raises(MissingParameter):
        t.check_many([{"name": "李女士", **SPECIALS}], strict=True)
    assert len(t.check_many([])) == 0
    plain = CompiledTemplate("【鸿雁茶饮】好久不见，送您满30减10，回T退订", CTX)
    assert plain.check_many([{}, {"name": "李"}]).rendered() == [plain.check({})] * 2
