"""Segment rules: a JSON rule tree, checked against a schema of fields before anything is compiled.

A rule is a tree of groups and conditions::

    {"all": [                                    # every child holds   ("any": one holds)
        {"field": "lifecycle", "op": "in", "value": ["active", "lapsing"]},
        {"field": "last_order_at", "op": "within_days", "value": 30},
        {"not": {"field": "tags", "op": "has", "value": "员工"}},
        {"field": "attr.会员等级", "op": "eq", "value": "金卡"},
        {"field": "interest", "op": "has", "value": "果茶", "min_weight": 5, "within_days": 60},
        {"field": "location", "op": "within_km", "value": {"km": 5, "store": "徐汇店"}}
    ]}

:func:`build_schema` lists the fields a tenant's rules may use: the standard contact fields,
the behaviour aggregates, RFM scores and groups, the lifecycle stage, tags, interest tags,
geography, consent, the tenant's custom attributes (``attr.<name>``, typed by the registry) and
membership in another saved segment. :func:`parse` checks a rule against it: an unknown field,
an operator the field's type does not have, or a value of the wrong type is a
:class:`RuleInvalid` naming the path of the offending node, and nothing reaches SQL. Values
are only ever bound parameters of the compiled statement (:mod:`hongyan.audience.compiler`).

Every condition is two-valued: it holds or it does not, never "unknown". A comparison on a value
the contact does not have (no gender, never ordered) does not hold; the negative operators
(``ne``, ``not_in``, ``not_within_days``, ``has_none``, ``not_granted``) hold exactly when their
positive twin does not, so "not 女" includes contacts whose gender is unknown, and
``{"not": …}`` is always the complement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from hongyan.errors import ValidationFailed

MAX_DEPTH = 12
MAX_CONDITIONS = 200
MAX_LIST = 1000
MAX_DAYS = 36500
MAX_KM = 1000.0
MAX_SEGMENT_NESTING = 5

CARRIERS = ("cmcc", "cucc", "ctcc", "cbn", "intl")
GENDERS = ("f", "m")
STAGES = ("potential", "new", "active", "lapsing", "dormant", "lost", "none")
GROUPS = (
    "important_value",
    "important_develop",
    "important_keep",
    "important_retain",
    "general_value",
    "general_develop",
    "general_keep",
    "general_retain",
)
PURPOSES = ("marketing", "notification")

# Operators of each kind of field; the first of a pair is the positive twin of the second.
OPERATORS: dict[str, tuple[str, ...]] = {
    "text": ("eq", "ne", "in", "not_in", "contains", "starts_with", "is_set", "not_set"),
    "enum": ("eq", "ne", "in", "not_in", "is_set", "not_set"),
    "number": ("eq", "ne", "gt", "gte", "lt", "lte", "between", "is_set", "not_set"),
    "time": ("within_days", "not_within_days", "after", "before", "between", "is_set", "not_set"),
    "date": ("eq", "after", "before", "between", "within_days", "is_set", "not_set"),
    "boolean": ("is_true", "is_false", "is_set", "not_set"),
    "tags": ("has", "has_any", "has_all", "has_none"),
    "interest": ("has", "has_any", "has_none"),
    "consent": ("granted", "not_granted"),
    "segment": ("in", "not_in"),
    "near": ("within_km",),
}
NEGATIVE = {
    "ne": "eq",
    "not_in": "in",
    "not_set": "is_set",
    "not_within_days": "within_days",
    "has_none": "has_any",
    "not_granted": "granted",
}
NO_VALUE = {"is_set", "not_set", "is_true", "is_false"}
INTEREST_OPTIONS = ("min_weight", "min_events", "within_days")


class RuleInvalid(ValidationFailed):
    code = "segment_rule_invalid"
    message_zh = "人群规则无效"
    message_en = "The segment rule is not valid"


def _bad(path: str, en: str, zh: str) -> RuleInvalid:
    return RuleInvalid(f"{path}: {en}", f"{path}：{zh}", details={"path": path})


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # a key of OPERATORS
    group: str  # contact, activity, rfm, lifecycle, tags, geo, consent, attributes, segments
    zh: str
    en: str
    choices: tuple[str, ...] = ()
    column: str = ""  # where it lives (contacts.<c>, activity.<c>, scores.<c>, attrs.<name>)
    unit: str = ""  # "yuan": given in yuan, stored in fen

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "field": self.name,
            "type": self.kind,
            "group": self.group,
            "label": {"zh": self.zh, "en": self.en},
            "operators": list(OPERATORS[self.kind]),
        }
        if self.choices:
            out["choices"] = list(self.choices)
        if self.unit:
            out["unit"] = self.unit
        if self.kind == "interest":
            out["options"] = list(INTEREST_OPTIONS)
        return out


def _f(name: str, kind: str, group: str, zh: str, en: str, column: str, **kw: Any) -> FieldSpec:
    return FieldSpec(name, kind, group, zh, en, column=column, **kw)


# The fields every tenant has. Time fields of the aggregates are UTC instants; "within_days"
# counts back from the clock the rule is evaluated with.
_C, _A, _S = "contacts.", "activity.", "scores."
STANDARD: tuple[FieldSpec, ...] = (
    _f("gender", "enum", "contact", "性别", "Gender", _C + "gender", choices=GENDERS),
    _f("birth_month", "number", "contact", "生日月份", "Birth month", _C + "birth_month"),
    _f("birth_day", "number", "contact", "生日日期", "Birth day", _C + "birth_day"),
    _f("birth_decade", "number", "contact", "出生年代", "Decade of birth", _C + "birth_decade"),
    _f("province", "text", "contact", "所在省份", "Province (own)", _C + "province"),
    _f("city", "text", "contact", "所在城市", "City (own)", _C + "city"),
    _f("number_province", "text", "geo", "号码归属省份", "Number's province",
       _C + "number_province"),
    _f("number_city", "text", "geo", "号码归属城市", "Number's city", _C + "number_city"),
    _f("carrier", "enum", "geo", "运营商", "Carrier", _C + "carrier", choices=CARRIERS),
    _f("mvno", "boolean", "geo", "虚拟运营商", "Virtual operator", _C + "mvno"),
    _f("country", "text", "geo", "国家/地区", "Country", _C + "country"),
    _f("source", "text", "contact", "来源", "Source", _C + "source"),
    _f("created_at", "time", "contact", "加入时间", "Added", _C + "created_at"),
    _f("orders_count", "number", "activity", "订单数", "Orders", _A + "orders_count"),
    _f("revenue", "number", "activity", "累计消费（元）", "Revenue (yuan)", _A + "revenue_fen",
       unit="yuan"),
    _f("first_order_at", "time", "activity", "首次下单", "First order", _A + "first_order_at"),
    _f("last_order_at", "time", "activity", "最近下单", "Last order", _A + "last_order_at"),
    _f("last_browse_at", "time", "activity", "最近浏览", "Last browse", _A + "last_browse_at"),
    _f("last_favourite_at", "time", "activity", "最近收藏", "Last favourite",
       _A + "last_favourite_at"),
    _f("last_cart_at", "time", "activity", "最近加购", "Last add-to-cart", _A + "last_cart_at"),
    _f("last_signed_at", "time", "activity", "最近签收", "Last order signed",
       _A + "last_signed_at"),
    _f("registered_at", "time", "activity", "注册时间", "Registered", _A + "registered_at"),
    _f("last_interaction_at", "time", "activity", "最近互动", "Last interaction",
       _A + "last_interaction_at"),
    _f("r_score", "number", "rfm", "R 分（近度）", "R score (recency)", _S + "r_score"),
    _f("f_score", "number", "rfm", "F 分（频度）", "F score (frequency)", _S + "f_score"),
    _f("m_score", "number", "rfm", "M 分（额度）", "M score (monetary)", _S + "m_score"),
    _f("rfm_group", "enum", "rfm", "RFM 分群", "RFM group", _S + "rfm_group", choices=GROUPS),
    _f("lifecycle", "enum", "lifecycle", "生命周期", "Lifecycle stage", "lifecycle",
       choices=STAGES),
    _f("tags", "tags", "tags", "标签", "Tags", "contact_tags"),
    _f("interest", "interest", "tags", "兴趣标签", "Interest tag", "contact_interests"),
    _f("consent", "consent", "consent", "授权同意", "Consent", "consent_records",
       choices=PURPOSES),
    _f("location", "near", "geo", "门店距离", "Distance to a store", "contact_locations"),
    _f("segment", "segment", "segments", "所属人群", "Member of segment", "segments"),
)  # fmt: skip

ATTRIBUTE_KIND = {"text": "text", "number": "number", "date": "date", "boolean": "boolean"}


@dataclass(frozen=True)
class StoreRef:
    id: int
    name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Schema:
    fields: Mapping[str, FieldSpec]
    tz: tzinfo = UTC
    segments: Mapping[int, tuple[str, Any]] = field(default_factory=dict)  # id → (name, rule)
    stores: Mapping[int, StoreRef] = field(default_factory=dict)

    def describe(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self.fields.values()]


def build_schema(
    attributes: Sequence[tuple[str, str, str]],
    *,
    tz: tzinfo = UTC,
    segments: Mapping[int, tuple[str, Any]] | None = None,
    stores: Sequence[StoreRef] = (),
) -> Schema:
    """The schema of a tenant: the standard fields and ``attr.<name>`` for each custom attribute
    given as (name, type, label)."""
    fields: dict[str, FieldSpec] = {f.name: f for f in STANDARD}
    for name, kind, label in attributes:
        fields[f"attr.{name}"] = FieldSpec(
            f"attr.{name}",
            ATTRIBUTE_KIND[kind],
            "attributes",
            label or name,
            label or name,
            column=f"attrs.{name}",
        )
    return Schema(fields, tz, dict(segments or {}), {s.id: s for s in stores})


# -- the parsed tree -----------------------------------------------------------------------------


@dataclass(frozen=True)
class All:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Any_:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class Cond:
    field: FieldSpec
    op: str
    value: Any = None
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, name: str) -> Any:
        return dict(self.options).get(name)


@dataclass(frozen=True)
class SegmentRef:
    id: int
    name: str
    rule: Node


@dataclass(frozen=True)
class Near:
    km: float
    stores: tuple[StoreRef, ...]


Node = All | Any_ | Not | Cond


# -- parsing ---------------------------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.n = 0


def parse(raw: Any, schema: Schema, *, segment_stack: tuple[int, ...] = ()) -> Node:
    """Check a rule tree against ``schema``; the parsed tree, or :class:`RuleInvalid`."""
    return _node(raw, schema, "rule", 0, _Counter(), segment_stack)


def _node(
    raw: Any, schema: Schema, path: str, depth: int, count: _Counter, stack: tuple[int, ...]
) -> Node:
    if depth > MAX_DEPTH:
        raise _bad(path, f"nested deeper than {MAX_DEPTH} levels", f"嵌套超过 {MAX_DEPTH} 层")
    if not isinstance(raw, dict):
        raise _bad(path, "a rule node is a JSON object", "规则节点须为 JSON 对象")
    groups = [k for k in ("all", "any", "not") if k in raw]
    if groups:
        if len(raw) != 1:
            raise _bad(
                path,
                "a group has exactly one key: all, any or not",
                "分组只能有一个键：all、any 或 not",
            )
        key = groups[0]
        if key == "not":
            return Not(_node(raw["not"], schema, f"{path}.not", depth + 1, count, stack))
        items = raw[key]
        if not isinstance(items, list):
            raise _bad(f"{path}.{key}", "a list of rules", "须为规则列表")
        children = tuple(
            _node(item, schema, f"{path}.{key}[{i}]", depth + 1, count, stack)
            for i, item in enumerate(items)
        )
        return All(children) if key == "all" else Any_(children)
    count.n += 1
    if count.n > MAX_CONDITIONS:
        raise _bad(path, f"more than {MAX_CONDITIONS} conditions", f"条件超过 {MAX_CONDITIONS} 个")
    return _condition(raw, schema, path, count, stack)


def _condition(
    raw: dict[str, Any], schema: Schema, path: str, count: _Counter, stack: tuple[int, ...]
) -> Cond:
    name = raw.get("field")
    if not isinstance(name, str) or name not in schema.fields:
        shown = name if isinstance(name, str) else repr(name)
        raise _bad(f"{path}.field", f"unknown field {shown!r}", f"未知字段“{shown}”")
    spec = schema.fields[name]
    op = raw.get("op")
    if op not in OPERATORS[spec.kind]:
        allowed = ", ".join(OPERATORS[spec.kind])
        raise _bad(
            f"{path}.op",
            f"field {name!r} ({spec.kind}) takes the operators {allowed}, not {op!r}",
            f"字段“{name}”（{spec.kind}）可用的运算符为 {allowed}，不能用 {op!r}",
        )
    extra = (
        set(raw)
        - {"field", "op", "value"}
        - (set(INTEREST_OPTIONS) if spec.kind == "interest" else set())
    )
    if extra:
        raise _bad(path, f"unknown keys {sorted(extra)}", f"未知的键 {sorted(extra)}")
    vpath = f"{path}.value"
    value = raw.get("value")
    if op in NO_VALUE:
        if value is not None:
            raise _bad(vpath, f"{op} takes no value", f"{op} 不需要值")
        return Cond(spec, op)
    if spec.kind == "segment":
        return Cond(spec, op, _segment(value, schema, vpath, count, stack))
    if spec.kind == "near":
        return Cond(spec, op, _near(value, schema, vpath))
    if spec.kind == "interest":
        options = _interest_options(raw, f"{path}")
        checked = _tag(value, vpath) if op == "has" else _list(value, vpath, _tag)
        return Cond(spec, op, checked, options)
    return Cond(spec, op, _value(spec, op, value, vpath, schema.tz))


def _value(spec: FieldSpec, op: str, value: Any, path: str, tz: tzinfo) -> Any:
    kind = spec.kind
    if kind == "text":
        if op in ("in", "not_in"):
            return _list(value, path, _text)
        return _text(value, path, 100 if op in ("contains", "starts_with") else 500)
    if kind == "enum":
        one = _choice(spec.choices, path)
        return _list(value, path, one) if op in ("in", "not_in") else one(value, path)
    if kind == "number":
        convert = _fen if spec.unit == "yuan" else _number
        if op == "between":
            return _pair(value, path, convert)
        return convert(value, path)
    if kind == "time":
        if op in ("within_days", "not_within_days"):
            return _days(value, path)
        instant = _instant_parser(tz)
        return _pair(value, path, instant) if op == "between" else instant(value, path)
    if kind == "date":
        if op == "within_days":
            return _days(value, path)
        return _pair(value, path, _date) if op == "between" else _date(value, path)
    if kind == "tags":
        return _tag(value, path) if op == "has" else _list(value, path, _tag)
    if kind == "consent":
        return _choice(PURPOSES, path)(value, path)
    raise _bad(path, f"unsupported field type {kind}", f"不支持的字段类型 {kind}")


# -- value checkers (each returns the value in the form the compiler binds) ---------------------


def _text(value: Any, path: str, limit: int = 500) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _bad(path, f"a text of 1–{limit} characters", f"须为 1–{limit} 个字符的文本")
    return value


def _tag(value: Any, path: str) -> str:
    return _text(value, path, 64)


def _choice(choices: tuple[str, ...], _path: str) -> Any:
    def check(value: Any, path: str) -> str:
        if value not in choices:
            raise _bad(path, f"one of {', '.join(choices)}", f"须为 {'、'.join(choices)} 之一")
        return str(value)

    return check


def _list(value: Any, path: str, item: Any) -> tuple[Any, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
        raise _bad(path, f"a list of 1–{MAX_LIST} values", f"须为 1–{MAX_LIST} 个值的列表")
    return tuple(dict.fromkeys(item(v, f"{path}[{i}]") for i, v in enumerate(value)))


def _number(value: Any, path: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(path, "a number", "须为数字")
    if isinstance(value, int) and abs(value) > 2**53:
        raise _bad(path, "a number of at most 2^53", "数值过大")
    return value


def _fen(value: Any, path: str) -> int:
    """A money amount in yuan (exact to the fen) as integer fen."""
    _number(value, path)
    try:
        fen = Decimal(str(value)) * 100
    except InvalidOperation:
        raise _bad(path, "an amount in yuan", "须为以元为单位的金额") from None
    if fen != fen.to_integral_value() or abs(fen) > 10**15:
        raise _bad(path, "an amount in yuan, exact to the fen", "须为精确到分的金额（元）")
    return int(fen)


def _days(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
        raise _bad(path, f"a whole number of days, 0–{MAX_DAYS}", f"须为 0–{MAX_DAYS} 的整数天数")
    return value


def _date(value: Any, path: str) -> str:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise _bad(path, "a date YYYY-MM-DD", "须为日期 YYYY-MM-DD")


def _instant_parser(tz: tzinfo) -> Any:
    def instant(value: Any, path: str) -> datetime:
        """An ISO date or time; without an offset it is in the tenant's time zone, and a date
        means the start of that day."""
        if isinstance(value, str):
            try:
                if len(value) == 10:
                    at = datetime.combine(date.fromisoformat(value), time(), tz)
                else:
                    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
                    if at.tzinfo is None:
                        at = at.replace(tzinfo=tz)
                return at.astimezone(UTC)
            except ValueError:
                pass
        raise _bad(path, "an ISO 8601 date or time", "须为 ISO 8601 日期或时间")

    return instant


def _pair(value: Any, path: str, item: Any) -> tuple[Any, Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise _bad(path, "a list [low, high]", "须为 [下限, 上限]")
    low, high = item(value[0], f"{path}[0]"), item(value[1], f"{path}[1]")
    if low > high:
        raise _bad(path, "the low bound is above the high bound", "下限大于上限")
    return (low, high)


def _interest_options(raw: Mapping[str, Any], path: str) -> tuple[tuple[str, Any], ...]:
    out: list[tuple[str, Any]] = []
    if raw.get("min_weight") is not None:
        w = _number(raw["min_weight"], f"{path}.min_weight")
        if w < 0:
            raise _bad(f"{path}.min_weight", "zero or more", "须不小于 0")
        out.append(("min_weight", float(w)))
    if raw.get("min_events") is not None:
        n = raw["min_events"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10**9:
            raise _bad(f"{path}.min_events", "a whole number from 1", "须为不小于 1 的整数")
        out.append(("min_events", n))
    if raw.get("within_days") is not None:
        out.append(("within_days", _days(raw["within_days"], f"{path}.within_days")))
    return tuple(out)


def _segment(
    value: Any, schema: Schema, path: str, count: _Counter, stack: tuple[int, ...]
) -> SegmentRef:
    found: int | None = None
    if isinstance(value, int) and not isinstance(value, bool) and value in schema.segments:
        found = value
    elif isinstance(value, str):
        found = next((i for i, (n, _r) in schema.segments.items() if n == value), None)
    if found is None:
        raise _bad(path, f"no saved segment {value!r}", f"没有名为 {value!r} 的已保存人群")
    if found in stack:
        raise _bad(path, "segments refer to each other in a circle", "人群之间存在循环引用")
    if len(stack) >= MAX_SEGMENT_NESTING:
        raise _bad(
            path,
            f"segments nested more than {MAX_SEGMENT_NESTING} deep",
            f"人群引用嵌套超过 {MAX_SEGMENT_NESTING} 层",
        )
    name, rule = schema.segments[found]
    inner = _node(rule, schema, f"segment[{name}]", 0, count, (*stack, found))
    return SegmentRef(found, name, inner)


def _near(value: Any, schema: Schema, path: str) -> Near:
    if not isinstance(value, dict) or set(value) - {"km", "store"}:
        raise _bad(
            path, 'an object {"km": 5, "store": "name or id"}', '须为 {"km": 5, "store": "门店"}'
        )
    km = _number(value.get("km"), f"{path}.km")
    if not 0 < km <= MAX_KM:
        raise _bad(
            f"{path}.km",
            f"more than 0 and at most {MAX_KM:g} km",
            f"须大于 0 且不超过 {MAX_KM:g} 公里",
        )
    store = value.get("store")
    if store is None:
        stores = tuple(schema.stores.values())
        if not stores:
            raise _bad(path, "the tenant has no stores yet", "尚未添加门店")
    else:
        hit = [
            s
            for s in schema.stores.values()
            if (isinstance(store, int) and not isinstance(store, bool) and s.id == store)
            or (isinstance(store, str) and s.name == store)
        ]
        if not hit:
            raise _bad(f"{path}.store", f"no store {store!r}", f"没有门店 {store!r}")
        stores = tuple(hit)
    return Near(float(km), stores)


# -- reading a tree back -----------------------------------------------------------------------


def fields_used(node: Node) -> set[str]:
    """The names of the fields a parsed tree tests (segments included)."""
    if isinstance(node, All | Any_):
        return set().union(*(fields_used(c) for c in node.children)) if node.children else set()
    if isinstance(node, Not):
        return fields_used(node.child)
    out = {node.field.name}
    if isinstance(node.value, SegmentRef):
        out |= fields_used(node.value.rule)
    return out


def inline(node: Node) -> Any:
    """The tree as JSON again, with referenced segments written out (what a snapshot keeps)."""
    if isinstance(node, All):
        return {"all": [inline(c) for c in node.children]}
    if isinstance(node, Any_):
        return {"any": [inline(c) for c in node.children]}
    if isinstance(node, Not):
        return {"not": inline(node.child)}
    if isinstance(node.value, SegmentRef):
        ref = {"segment": node.value.name, "rule": inline(node.value.rule)}
        return ref if node.op == "in" else {"not": ref}
    out: dict[str, Any] = {"field": node.field.name, "op": node.op}
    value = node.value
    if isinstance(value, Near):
        value = {"km": value.km, "stores": [s.name for s in value.stores]}
    elif isinstance(value, datetime):
        value = value.isoformat()
    elif isinstance(value, tuple):
        value = [v.isoformat() if isinstance(v, datetime) else v for v in value]
    if node.field.unit == "yuan":  # back from fen to what the rule said
        value = [v / 100 for v in value] if isinstance(value, list) else value / 100
    if value is not None:
        out["value"] = value
    out.update(dict(node.options))
    return out
