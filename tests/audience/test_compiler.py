"""The compiled SQL of every operator of every field agrees with a Python evaluation of the same
rule on random contacts, on SQLite and PostgreSQL; and so do random trees of all / any / not
(hypothesis)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.sql import util as sa_util

from hongyan.audience import compiler, rules, segments, service
from hongyan.audience.rules import OPERATORS, Schema
from hongyan.clock import FixedClock
from hongyan.db.tables import contacts
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from tests.audience import data
from tests.audience.oracle import Env, evaluate

SAVED = {
    "all": [
        {"field": "tags", "op": "has", "value": "vip"},
        {"field": "gender", "op": "eq", "value": "f"},
    ]
}


@dataclass
class World:
    runtime: Runtime
    clock: FixedClock
    tenant_id: int
    records: list[dict[str, Any]]
    schema: Schema
    env: Env


@pytest.fixture
def world(runtime: Runtime, clock: FixedClock) -> Iterator[World]:
    with runtime.engine.begin() as conn:
        tid = tenants.create_tenant(conn, clock, slug="tea", name="鸿雁茶饮").id
    records = data.build(runtime, clock, tid)
    with runtime.engine.begin() as conn:
        segments.create(conn, clock, tid, name="女VIP", rule=SAVED, actor="test")
        schema = service.load_schema(conn, tid)
        ctx = service.context(conn, clock, tid, schema)
    yield World(runtime, clock, tid, records, schema, Env(ctx.now, ctx.today, ctx.thresholds))


def values(spec: rules.FieldSpec, op: str) -> list[Any]:
    """Raw JSON values worth trying for a field and operator (from the data's own pools)."""
    name, kind = spec.name, spec.kind
    if op in rules.NO_VALUE:
        return [None]
    if kind == "text":
        pool = [*data.TEXTS, "上海", "北京", "浙江", "CN", "import", "杭州"]
        if op in ("in", "not_in"):
            return [pool[:3], ["上海", "上海市", "北京"], ["CN"]]
        if op == "contains":
            return ["金", "%", "_", "上海", "卡会"]
        if op == "starts_with":
            return ["金卡", "上", "a%", "x_"]
        return pool
    if kind == "enum":
        choices = list(spec.choices)
        if op in ("in", "not_in"):
            return [choices[:2], choices[-3:], [choices[0]]]
        return choices
    if kind == "number":
        numbers = {
            "birth_month": [1, 6, 12], "birth_day": [1, 15], "birth_decade": [1990, 1985],
            "orders_count": [0, 1, 2, 5], "revenue": [0, 100, 999.99, 2500.5],
            "r_score": [1, 3, 5], "f_score": [2, 4], "m_score": [1, 5],
            "attr.积分": [0, 12.5, 50, -1],
        }[name]  # fmt: skip
        if op == "between":
            return [[min(numbers), max(numbers)], [numbers[0], numbers[0]]]
        return numbers
    if kind == "time":
        if op in ("within_days", "not_within_days"):
            return [0, 1, 30, 90, 365]
        instants = ["2026-06-01", "2026-10-01T12:00:00+08:00", "2026-11-01T00:00:00"]
        if op == "between":
            return [["2026-01-01", "2026-09-30"], ["2026-10-01", "2026-11-11T10:00:00+08:00"]]
        return instants
    if kind == "date":
        if op == "within_days":
            return [0, 7, 30]
        if op == "between":
            return [["2026-10-01", "2026-11-30"]]
        return ["2026-11-11", "2026-10-15", "2026-12-01"]
    if kind == "tags":
        if op == "has":
            return list(data.TAGS)
        return [["vip", "员工"], ["a%b"], ["vip", "老会员", "x_y"]]
    if kind == "interest":
        if op == "has":
            return list(data.INTERESTS)
        return [["果茶", "咖啡"], ["甜品"]]
    if kind == "consent":
        return ["marketing", "notification"]
    if kind == "segment":
        return ["女VIP"]
    if kind == "near":
        return [{"km": 5, "store": "徐汇店"}, {"km": 60}, {"km": 150, "store": "杭州店"}]
    raise AssertionError(kind)


INTEREST_OPTIONS = [
    {},
    {"min_weight": 5},
    {"min_events": 3, "within_days": 30},
    {"within_days": 10},
]


def leaves(schema: Schema) -> list[dict[str, Any]]:
    out = []
    for spec in schema.fields.values():
        for op in OPERATORS[spec.kind]:
            for value in values(spec, op):
                raw: dict[str, Any] = {"field": spec.name, "op": op}
                if value is not None:
                    raw["value"] = value
                if spec.kind == "interest":
                    out.extend({**raw, **opts} for opts in INTEREST_OPTIONS)
                else:
                    out.append(raw)
    return out


def check(world: World, raw: Any) -> None:
    with world.runtime.engine.connect() as conn:
        node = rules.parse(raw, world.schema)
        ctx = service.context(conn, world.clock, world.tenant_id, world.schema)
        got = data.ids(conn, compiler.query(node, ctx, contacts.c.id))
        counted = conn.execute(compiler.count_query(node, ctx)).scalar_one()
    want = {r["id"] for r in world.records if evaluate(node, r, world.env)}
    assert got == want, f"{raw}: SQL {sorted(got - want)} extra, {sorted(want - got)} missing"
    assert counted == len(want), f"{raw}: counted {counted}, want {len(want)}"


def test_every_operator_of_every_field(world: World) -> None:
    every = leaves(world.schema)
    covered = {(r["field"], r["op"]) for r in every}
    assert covered == {
        (f.name, op) for f in world.schema.fields.values() for op in OPERATORS[f.kind]
    }
    hits = 0
    for raw in every:
        check(world, raw)
        check(world, {"not": raw})
        hits += 1
    assert hits > 300


def test_the_data_makes_the_operators_bite(world: World) -> None:
    """The comparison is only worth something if conditions match some contacts and not all."""
    env = world.env
    split = 0
    for raw in leaves(world.schema):
        node = rules.parse(raw, world.schema)
        n = sum(evaluate(node, r, env) for r in world.records)
        split += 0 < n < len(world.records)
    assert split > 0.6 * len(leaves(world.schema))


def trees(schema: Schema) -> st.SearchStrategy[Any]:
    leaf = st.sampled_from(leaves(schema))
    return st.recursive(
        leaf,
        lambda kids: st.one_of(
            st.lists(kids, min_size=0, max_size=4).map(lambda xs: {"all": xs}),
            st.lists(kids, min_size=0, max_size=4).map(lambda xs: {"any": xs}),
            kids.map(lambda x: {"not": x}),
        ),
        max_leaves=8,
    )


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
def test_random_trees(world: World, drawn: st.DataObject) -> None:
    check(world, drawn.draw(trees(world.schema)))


def test_a_count_over_the_aggregates_alone(world: World) -> None:
    """A rule that needs aggregates and no contact column is counted over contact_activity
    alone; any other is counted over contacts (and both agree with the oracle: check)."""
    driven = [
        {"all": [{"field": "orders_count", "op": "gte", "value": 1},
                 {"field": "interest", "op": "has", "value": "果茶"}]},
        {"field": "rfm_group", "op": "in", "value": ["important_value", "general_retain"]},
        {"all": [{"field": "lifecycle", "op": "in", "value": ["active", "lost"]},
                 {"not": {"field": "tags", "op": "has", "value": "vip"}}]},
        {"field": "last_order_at", "op": "within_days", "value": 90},
        {"field": "revenue", "op": "between", "value": [1, 500]},
    ]  # fmt: skip
    joined = [
        {"field": "orders_count", "op": "lte", "value": 2},  # holds with no aggregates
        {"field": "lifecycle", "op": "in", "value": ["none", "active"]},
        {"field": "r_score", "op": "ne", "value": 3},
        {"any": [{"field": "orders_count", "op": "gte", "value": 1},
                 {"field": "tags", "op": "has", "value": "vip"}]},
        {"all": [{"field": "orders_count", "op": "gte", "value": 1},
                 {"field": "gender", "op": "eq", "value": "f"}]},  # reads contacts
        {"all": [{"field": "orders_count", "op": "gte", "value": 1},
                 {"field": "consent", "op": "granted", "value": "marketing"}]},
    ]  # fmt: skip
    with world.runtime.engine.connect() as conn:
        ctx = service.context(conn, world.clock, world.tenant_id, world.schema)
        for raw, alone in [*((r, True) for r in driven), *((r, False) for r in joined)]:
            stmt = compiler.count_query(rules.parse(raw, world.schema), ctx)
            names = {t.name for f in stmt.get_final_froms() for t in sa_util.find_tables(f)}
            assert ("contacts" not in names) is alone, raw
            check(world, raw)


def test_relative_times_follow_the_clock(world: World) -> None:
    raw = {"field": "last_order_at", "op": "within_days", "value": 30}
    before = world.clock.now()
    check(world, raw)
    world.clock.advance(timedelta(days=45))
    world.env.now = world.clock.now()
    world.env.today = world.clock.now().astimezone(world.schema.tz).date()
    check(world, raw)
    check(world, {"field": "lifecycle", "op": "eq", "value": "dormant"})
    assert world.clock.now() - before == timedelta(days=45)
