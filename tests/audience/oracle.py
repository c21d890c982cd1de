"""A Python reading of parsed rules, written apart from the compiler, to check the SQL against.

Records are plain dicts made by :mod:`tests.audience.data`; the semantics are the ones the rules
module documents (every condition two-valued; negative operators are complements).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from hongyan.audience import geo, scoring
from hongyan.audience.rules import NEGATIVE, All, Any_, Cond, Near, Node, Not, SegmentRef


@dataclass
class Env:
    now: datetime
    today: date
    thresholds: scoring.Thresholds


def evaluate(node: Node, rec: dict[str, Any], env: Env) -> bool:
    if isinstance(node, All):
        return all(evaluate(c, rec, env) for c in node.children)
    if isinstance(node, Any_):
        return any(evaluate(c, rec, env) for c in node.children)
    if isinstance(node, Not):
        return not evaluate(node.child, rec, env)
    positive = NEGATIVE.get(node.op)
    if positive is not None:
        return not _cond(Cond(node.field, positive, node.value, node.options), rec, env)
    return _cond(node, rec, env)


def _typed(value: Any, kind: str) -> Any:
    if kind == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else None


def value_of(cond: Cond, rec: dict[str, Any], env: Env) -> Any:
    table, _, name = cond.field.column.partition(".")
    if table == "contacts":
        return rec[name]
    if table == "activity":
        act = rec["activity"]
        if name in ("orders_count", "revenue_fen"):
            return act[name] if act else 0
        return act[name] if act else None
    if table == "scores":
        return rec["scores"][name] if rec["scores"] else None
    if table == "lifecycle":
        return scoring.stage(rec["activity"], env.now, env.thresholds)
    if table == "attrs":
        return _typed(rec["attrs"].get(name), cond.field.kind)
    raise ValueError(cond.field.column)


def _cond(cond: Cond, rec: dict[str, Any], env: Env) -> bool:
    kind, op, v = cond.field.kind, cond.op, cond.value
    if kind == "tags":
        tags = rec["tags"]
        if op == "has":
            return v in tags
        if op == "has_any":
            return bool(tags & set(v))
        return set(v) <= tags  # has_all
    if kind == "interest":
        wanted = {v} if op == "has" else set(v)
        for tag, (events, weight, last_at) in rec["interests"].items():
            if tag not in wanted:
                continue
            if cond.option("min_weight") is not None and weight < cond.option("min_weight"):
                continue
            if cond.option("min_events") is not None and events < cond.option("min_events"):
                continue
            days = cond.option("within_days")
            if days is not None and last_at < env.now - timedelta(days=days):
                continue
            return True
        return False
    if kind == "consent":
        return rec["consent"].get(v) == "granted"
    if kind == "segment":
        assert isinstance(v, SegmentRef)
        return evaluate(v.rule, rec, env)
    if kind == "near":
        assert isinstance(v, Near)
        loc = rec["location"]
        return loc is not None and any(
            geo.distance_km(loc[0], loc[1], s.lat, s.lon) <= v.km for s in v.stores
        )
    x = value_of(cond, rec, env)
    if op == "is_set":
        return x is not None
    if x is None:
        return False
    if op == "is_true":
        return x is True
    if op == "is_false":
        return x is False
    if kind == "time" and op == "within_days":
        return bool(x >= env.now - timedelta(days=v))
    if kind == "date" and op == "within_days":
        return (env.today - timedelta(days=v)).isoformat() <= x <= env.today.isoformat()
    if op == "eq":
        return bool(x == v)
    if op == "in":
        return x in v
    if op in ("gt", "after"):
        return bool(x > v)
    if op == "gte":
        return bool(x >= v)
    if op in ("lt", "before"):
        return bool(x < v)
    if op == "lte":
        return bool(x <= v)
    if op == "between":
        return bool(v[0] <= x <= v[1])
    if op == "contains":
        return v in x
    if op == "starts_with":
        return bool(x.startswith(v))
    raise ValueError(op)
