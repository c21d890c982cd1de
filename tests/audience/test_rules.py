"""Checking rule trees against the schema: what is refused, and how it is said (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.audience import rules
from hongyan.audience.rules import RuleInvalid, StoreRef, build_schema

SCHEMA = build_schema(
    [("等级", "text", "会员等级"), ("积分", "number", ""), ("到期", "date", "")],
    tz=ZoneInfo("Asia/Shanghai"),
    segments={1: ("A", {"field": "segment", "op": "in", "value": 2}), 2: ("B", {"all": []}),
              3: ("loop", {"field": "segment", "op": "in", "value": 3})},
    stores=[StoreRef(1, "徐汇店", 31.18, 121.43)],
)  # fmt: skip


def refused(raw: object, path: str, word: str = "") -> RuleInvalid:
    with pytest.raises(RuleInvalid) as caught:
        rules.parse(raw, SCHEMA)
    err = caught.value
    assert err.details["path"] == path
    assert word in err.message_en
    assert err.message_zh and err.code == "segment_rule_invalid" and err.status == 422
    return err


def test_unknown_fields_and_operators() -> None:
    refused({"field": "salary", "op": "eq", "value": 1}, "rule.field", "unknown field")
    refused({"field": "attr.身份证", "op": "eq", "value": "x"}, "rule.field")
    refused({"all": [{"field": "city", "op": "gt", "value": "a"}]}, "rule.all[0].op", "operators")
    refused({"field": "tags", "op": "eq", "value": "vip"}, "rule.op")
    refused({"field": "city", "op": "eq", "value": "上海", "extra": 1}, "rule", "unknown keys")
    refused({"all": [], "any": []}, "rule", "exactly one key")
    refused([], "rule", "JSON object")


def test_wrong_value_types() -> None:
    refused({"field": "orders_count", "op": "gt", "value": "5"}, "rule.value", "number")
    refused({"field": "orders_count", "op": "gt", "value": True}, "rule.value", "number")
    refused({"field": "revenue", "op": "gt", "value": 1.005}, "rule.value", "fen")
    refused({"field": "gender", "op": "eq", "value": "x"}, "rule.value", "one of")
    refused({"field": "city", "op": "in", "value": "上海"}, "rule.value", "list")
    refused({"field": "city", "op": "in", "value": ["上海", 3]}, "rule.value[1]")
    refused({"field": "last_order_at", "op": "within_days", "value": -1}, "rule.value")
    refused({"field": "last_order_at", "op": "after", "value": "yesterday"}, "rule.value", "ISO")
    refused({"field": "attr.到期", "op": "eq", "value": "2026-02-30"}, "rule.value", "date")
    refused({"field": "orders_count", "op": "between", "value": [5, 1]}, "rule.value", "low")
    refused({"field": "city", "op": "is_set", "value": "x"}, "rule.value", "no value")
    refused({"field": "consent", "op": "granted", "value": "spam"}, "rule.value")
    refused({"field": "interest", "op": "has", "value": "茶", "min_weight": -1}, "rule.min_weight")


def test_segments_stores_and_limits() -> None:
    assert rules.fields_used(
        rules.parse({"field": "segment", "op": "in", "value": "A"}, SCHEMA)
    ) == {"segment"}
    refused({"field": "segment", "op": "in", "value": 9}, "rule.value", "no saved segment")
    refused({"field": "segment", "op": "in", "value": 3}, "segment[loop].value", "circle")
    refused({"field": "location", "op": "within_km", "value": {"km": 0}}, "rule.value.km")
    refused(
        {"field": "location", "op": "within_km", "value": {"km": 5, "store": "x"}},
        "rule.value.store",
    )
    deep: dict = {"field": "city", "op": "is_set"}
    for _ in range(rules.MAX_DEPTH + 1):
        deep = {"not": deep}
    with pytest.raises(RuleInvalid, match="deeper"):
        rules.parse(deep, SCHEMA)
    many = {"any": [{"field": "city", "op": "is_set"}] * (rules.MAX_CONDITIONS + 1)}
    with pytest.raises(RuleInvalid, match="more than"):
        rules.parse(many, SCHEMA)


def test_values_are_converted() -> None:
    node = rules.parse({"field": "revenue", "op": "between", "value": [19.9, 100]}, SCHEMA)
    assert isinstance(node, rules.Cond) and node.value == (1990, 10000)  # fen
    node = rules.parse({"field": "last_order_at", "op": "after", "value": "2026-11-11"}, SCHEMA)
    assert node.value == datetime(2026, 11, 10, 16, 0, tzinfo=UTC)  # midnight in Shanghai
    node = rules.parse({"field": "city", "op": "in", "value": ["上海", "上海"]}, SCHEMA)
    assert node.value == ("上海",)
    tree = rules.parse(
        {
            "all": [
                {"field": "segment", "op": "in", "value": "A"},
                {"field": "revenue", "op": "gt", "value": 1},
            ]
        },
        SCHEMA,
    )
    assert rules.inline(tree)["all"][0]["segment"] == "A"
    assert rules.inline(tree)["all"][1] == {"field": "revenue", "op": "gt", "value": 1}


@given(st.text(max_size=40))
def test_any_text_is_data_never_syntax(text: str) -> None:
    """Whatever a value holds (quotes, semicolons, SQL), it is a value or a typed refusal."""
    raw = {"field": "city", "op": "eq", "value": text}
    try:
        node = rules.parse(raw, SCHEMA)
    except RuleInvalid:
        assert not text
        return
    assert isinstance(node, rules.Cond) and node.value == text


def test_schema_describes_every_field() -> None:
    described = {f["field"]: f for f in SCHEMA.describe()}
    assert described["attr.等级"]["label"]["zh"] == "会员等级"
    assert described["lifecycle"]["choices"] == list(rules.STAGES)
    assert "last_click_at" not in described  # no click data until tracking exists
