"""Word lists: the data files, folding, the automaton, exceptions and overlaps."""

from __future__ import annotations

from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.content.wordlists import (
    BOUNDARY,
    LISTS,
    Entry,
    Matcher,
    check_term,
    fold,
    fold_positions,
    matcher_for,
    parse_list,
    platform_entries,
)
from hongyan.errors import ValidationFailed


def found(text: str, matcher: Matcher | None = None) -> list[tuple[str, str]]:
    m = matcher or matcher_for()
    folded, where = fold_positions([(text, 0)])
    return [
        (h.entry.list, text[where[h.start] : where[h.end - 1] + 1])
        for h in m.scan(folded, text, where)
    ]


def test_every_list_file_names_its_source_and_licence() -> None:
    folder = resources.files("hongyan.content").joinpath("words")
    for name in LISTS:
        head = folder.joinpath(f"{name}.txt").read_text(encoding="utf-8")
        assert "# Source:" in head and "# Licence:" in head, name
    entries = platform_entries()
    assert {e.list for e in entries} == set(LISTS)
    assert Entry("sensitive", "免费", "0元体验") in entries
    assert Entry("sensitive", "立即购买", "马上领取") in entries
    assert Entry("sensitive", "中奖", "获得权益") in entries
    assert len({(e.list, e.term) for e in entries}) == len(entries)  # no duplicate lines


def test_folding() -> None:
    assert fold("免 费") == "免费"
    assert fold("免*费") == "免费" == fold("免.费") == fold("免😀费") == fold("免\u200b费")
    assert fold("ＶＩＰ １００％") == "vip100%"
    assert fold("以免，费用") == f"以免{BOUNDARY}费用"
    assert fold("【鸿雁】") == f"{BOUNDARY}鸿雁{BOUNDARY}"
    assert fold("¥99") == "¥99"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("免费领取", [("sensitive", "免费")]),
        ("免 费领取", [("sensitive", "免 费")]),
        ("免*费领取", [("sensitive", "免*费")]),
        (
            "免-费，免_费，免/费",
            [("sensitive", "免-费"), ("sensitive", "免_费"), ("sensitive", "免/费")],
        ),
        ("立 即 购 买", [("sensitive", "立 即 购 买")]),
        ("加ＶＸ领券", [("sensitive", "加ＶＸ")]),
        ("全网最佳", [("absolute", "最佳")]),
        ("国家级品质", [("absolute", "国家级")]),
        ("１００％有效", [("absolute", "１００％")]),
        ("TOP1 top10", [("absolute", "TOP1")]),
        ("网络赌博", [("forbidden", "赌博")]),
        ("博 彩", [("forbidden", "博 彩")]),
        ("年中大促", [("vague", "大促")]),
    ],
)
def test_true_positives(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "最近上新",
        "活动最后一天",
        "最后3小时",
        "每人最多2件，最少满100元",
        "最高可减200元",
        "第一次下单",
        "第一时间发货",
        "第二杯半价",
        "以免，费用超支",  # sentence punctuation is a boundary
        "涨幅1100%",  # 100% inside a number
        "top10 榜单",
        "您的订单已发货",
    ],
)
def test_false_positive_traps(text: str) -> None:
    assert found(text) == []


def test_overlaps_keep_the_longest_and_most_severe() -> None:
    assert found("最佳") == [("absolute", "最佳")]  # not 最 as well
    tenant = matcher_for((Entry("forbidden", "免费", tenant=True),))
    assert found("免费", tenant) == [("forbidden", "免费")]  # forbidden beats sensitive


def test_exceptions_never_lift_forbidden_words() -> None:
    tenant = matcher_for((Entry("exception", "赌博游戏", tenant=True),))
    assert found("赌博游戏", tenant) == [("forbidden", "赌博")]
    lifted = matcher_for((Entry("exception", "最佳拍档", tenant=True),))
    assert found("最佳拍档", lifted) == []
    assert found("最佳拍档") == [("absolute", "最佳")]


def test_tenant_words_join_the_platform_lists() -> None:
    m = matcher_for((Entry("sensitive", "秒杀", "限时抢购", tenant=True),))
    assert found("秒 杀", m) == [("sensitive", "秒 杀")]
    assert matcher_for((Entry("sensitive", "秒杀", "限时抢购", tenant=True),)) is m  # cached
    assert found("秒杀") == []  # only that tenant


@pytest.mark.parametrize(
    ("term", "replacement"),
    [("", None), ("  ", None), ("***", None), ("免，费", None), ("x" * 21, None), ("好", "{x}")],
)
def test_bad_terms_are_refused(term: str, replacement: str | None) -> None:
    with pytest.raises(ValidationFailed):
        check_term(term, replacement)


def test_list_file_format() -> None:
    entries = parse_list("sensitive", "# comment\n\n免费 | 0元体验\n 中奖 \n")
    assert entries == [Entry("sensitive", "免费", "0元体验"), Entry("sensitive", "中奖")]


@given(st.text(max_size=200))
def test_fold_positions_point_back_into_the_text(text: str) -> None:
    folded, where = fold_positions([(text, 0)])
    assert folded == fold(text)
    assert len(where) == len(folded)
    assert all(0 <= w < len(text) for w in where)
    assert where == sorted(where)


@given(st.text(max_size=300))
def test_scan_finds_only_spans_inside_the_text(text: str) -> None:
    m = matcher_for()
    folded, where = fold_positions([(text, 0)])
    for h in m.scan(folded, text, where):
        assert 0 <= h.start < h.end <= len(folded)
        assert h.entry.list != "exception"
