"""A parsed rule tree (:mod:`hongyan.audience.rules`) as one SQLAlchemy Core query.

The query reads ``contacts`` and, only when the rule needs them, left-joins the contact's
aggregates (``contact_activity``); RFM scores and groups are comparisons of those aggregates
with the tenant's cut points (:class:`~hongyan.audience.scoring.Cuts`, bound as parameters);
tags, interest tags, store
distances and consent are ``IN`` / scalar subqueries. Every table is limited to the tenant with
:class:`~hongyan.db.scope.TenantScope` (the engine's guard checks it), every value is a bound
parameter, and relative times ("within 30 days") count back from the clock the caller passes.
The same construct compiles for SQLite and PostgreSQL; the few functions that differ between
them (JSON access, substring search) are chosen by the connection's dialect.

Each condition compiles to an expression that is true or false, never NULL (see the rules
module), so ``NOT`` is the complement on both databases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from hongyan.audience import geo, scoring
from hongyan.audience.rules import NEGATIVE, All, Any_, Cond, Near, Node, Not, SegmentRef
from hongyan.audience.scoring import Cuts, Splits, Thresholds, stage_sql
from hongyan.db.scope import TENANT_OPTION, TenantScope
from hongyan.db.tables import (
    consent_records,
    contact_activity,
    contact_interests,
    contact_locations,
    contact_tags,
    contacts,
)
from hongyan.db.types import UTCDateTime

# The guard recognises a table's tenant condition on the table itself, so no aliases: a query
# joins each of these at most once.
activity = contact_activity


@dataclass
class Context:
    scope: TenantScope
    dialect: str  # "sqlite" or "postgresql"
    now: datetime
    today: date  # in the tenant's time zone
    thresholds: Thresholds = field(default_factory=Thresholds)
    cuts: Cuts | None = None  # the tenant's RFM cut points (None: never computed)
    splits: Splits = field(default_factory=Splits)
    joins: set[str] = field(default_factory=set)  # "activity": filled while compiling


def where(node: Node, ctx: Context, negated: bool = False) -> sa.ColumnElement[bool]:
    """The tree as a boolean SQL expression over ``contacts`` (and the tables above).

    ``negated``: the node stands under an odd number of NOTs. Only there must a comparison with
    a missing value be forced from NULL to false before it is negated; elsewhere the filter
    treats NULL as false already (AND and OR are monotone), and a bare comparison is what the
    planner estimates best."""
    if isinstance(node, All):
        return sa.and_(sa.true(), *(where(c, ctx, negated) for c in node.children))
    if isinstance(node, Any_):
        return sa.or_(sa.false(), *(where(c, ctx, negated) for c in node.children))
    if isinstance(node, Not):
        return sa.not_(where(node.child, ctx, not negated))
    positive = NEGATIVE.get(node.op)
    if positive is not None:
        twin = Cond(node.field, positive, node.value, node.options)
        return sa.not_(_condition(twin, ctx, not negated))
    return _condition(node, ctx, negated)


def select_from(ctx: Context, *columns: Any) -> sa.Select[Any]:
    """``SELECT columns FROM contacts`` with the joins the compiled rule asked for, scoped."""
    src: Any = contacts
    if "activity" in ctx.joins:
        src = src.outerjoin(
            activity,
            sa.and_(
                activity.c.contact_id == contacts.c.id, activity.c.tenant_id == ctx.scope.tenant_id
            ),
        )
    # Not scope.select: it would add "<joined table>.tenant_id = t" to WHERE, which turns the
    # outer joins into inner ones; the joins carry their tenant condition in ON instead.
    stmt = sa.select(*columns).select_from(src).where(ctx.scope.owns(contacts))
    return stmt.execution_options(**{TENANT_OPTION: ctx.scope.tenant_id})


def query(node: Node, ctx: Context, *columns: Any) -> sa.Select[Any]:
    """The contacts ``node`` matches: ``SELECT columns … WHERE <rule>``."""
    condition = where(node, ctx)
    return select_from(ctx, *columns).where(condition)


def count_query(node: Node, ctx: Context) -> sa.Select[Any]:
    """``SELECT count(*)`` of the contacts ``node`` matches.

    When the rule cannot hold for a contact without aggregates (:func:`needs_activity`) and
    reads no column of ``contacts`` but its id, the count is taken over ``contact_activity``
    alone (every row of it is one contact of the tenant, by its foreign key): the same number
    without reading or joining the contacts table, which was a third of a million-contact
    count. Otherwise :func:`query`."""
    condition = where(node, ctx)
    if needs_activity(node) and _only_contact_id(condition):

        def to_key(element: Any, **_kw: Any) -> Any:
            return activity.c.contact_id if element is contacts.c.id else None

        driven: Any = sa.sql.visitors.replacement_traverse(condition, {}, to_key)
        return (
            sa.select(sa.func.count())
            .select_from(activity)
            .where(ctx.scope.owns(activity), driven)
            .execution_options(**{TENANT_OPTION: ctx.scope.tenant_id})
        )
    return select_from(ctx, sa.func.count()).where(condition)


def _only_contact_id(condition: Any) -> bool:
    """The expression reads no column of ``contacts`` other than ``id``."""
    for el in sa.sql.visitors.iterate(condition):
        if isinstance(el, sa.Column) and el.table is contacts and el.name != "id":
            return False
    return True


def needs_activity(node: Node) -> bool:
    """True when ``node`` cannot hold for a contact with no aggregates row: the tree is a
    condition, or an ``all`` with a condition, that is false for such a contact (its
    aggregates read as nothing: no times, no scores, 0 orders and revenue, stage ``none``).
    False when that is not certain."""
    children = node.children if isinstance(node, All) else (node,)
    return any(isinstance(c, Cond) and _holds_without_activity(c) is False for c in children)


def _holds_without_activity(cond: Cond) -> bool | None:
    column = cond.field.column
    value: Any
    if column == "lifecycle":
        value = "none"
    elif column in ("activity.orders_count", "activity.revenue_fen"):
        value = 0
    elif column.startswith(("activity.", "scores.")):
        value = None
    else:
        return None
    positive = NEGATIVE.get(cond.op)
    holds = _holds(positive or cond.op, value, cond.value)
    if holds is None:
        return None
    return not holds if positive else holds


def _holds(op: str, value: Any, arg: Any) -> bool | None:
    if value is None:
        return False  # every positive operator is false on a missing value
    if op == "is_set":
        return True
    tests = {
        "eq": lambda: value == arg,
        "in": lambda: value in arg,
        "gt": lambda: value > arg,
        "gte": lambda: value >= arg,
        "lt": lambda: value < arg,
        "lte": lambda: value <= arg,
        "between": lambda: arg[0] <= value <= arg[1],
    }
    test = tests.get(op)
    return bool(test()) if test is not None else None


# -- columns -------------------------------------------------------------------------------------


def _column(spec_column: str, ctx: Context) -> Any:
    table, _, name = spec_column.partition(".")
    if table == "contacts":
        return contacts.c[name]
    if table == "activity":
        ctx.joins.add("activity")
        col = activity.c[name]
        if name in ("orders_count", "revenue_fen"):
            return sa.func.coalesce(col, 0)  # no aggregates yet: nothing ordered
        return col
    if table == "scores":
        ctx.joins.add("activity")
        if name == "rfm_group":
            return scoring.group_sql(activity, ctx.cuts, ctx.splits)
        return scoring.score_sql(activity, name[0], ctx.cuts)
    if table == "lifecycle":
        ctx.joins.add("activity")
        return stage_sql(activity, ctx.now, ctx.thresholds)
    raise ValueError(spec_column)


def attribute_sql(name: str, kind: str, dialect: str) -> Any:
    """A custom attribute's value, or NULL when the contact's value is of another JSON type
    (a value stored before the attribute was redefined never breaks a query)."""
    attrs = contacts.c.attrs
    typeof: Any
    extract: Any
    if dialect == "postgresql":
        typeof = sa.func.json_typeof(attrs.op("->")(sa.literal(name, sa.String)))
        text = attrs.op("->>")(sa.literal(name, sa.String))
        if kind == "number":
            return sa.case((typeof == "number", sa.cast(text, sa.Float)))
        if kind == "boolean":
            return sa.case((typeof == "boolean", text == "true"))
        return sa.case((typeof == "string", text))
    # SQLite (before 3.45) matches a path's key against the key as written in the document: a
    # document written with \u escapes has "\u7b49\u7ea7" where another has "等级". The engine
    # writes JSON unescaped (db/engine.py); rows written before it did, or by another client,
    # may be escaped, so both spellings are looked up.
    path = sa.literal('$."' + name + '"', sa.String)
    typeof = sa.func.json_type(attrs, path)
    extract = sa.func.json_extract(attrs, path)
    escaped = json.dumps(name)[1:-1]
    if escaped != name:
        other = sa.literal('$."' + escaped + '"', sa.String)
        extract = sa.case((typeof.is_not(None), extract), else_=sa.func.json_extract(attrs, other))
        typeof = sa.func.coalesce(typeof, sa.func.json_type(attrs, other))
    if kind == "number":
        return sa.case((typeof.in_(["integer", "real"]), extract))
    if kind == "boolean":
        return sa.case((typeof == "true", sa.true()), (typeof == "false", sa.false()))
    return sa.case((typeof == "text", extract))


def _value_of(cond: Cond, ctx: Context) -> Any:
    column = cond.field.column
    if column.startswith("attrs."):
        return attribute_sql(column[len("attrs.") :], cond.field.kind, ctx.dialect)
    return _column(column, ctx)


# -- conditions ----------------------------------------------------------------------------------


NEVER_NULL = {"lifecycle", "activity.orders_count", "activity.revenue_fen"}  # CASE, COALESCE


def _condition(cond: Cond, ctx: Context, negated: bool) -> sa.ColumnElement[bool]:
    kind, op, value = cond.field.kind, cond.op, cond.value

    def _set(col: Any, test: Any) -> sa.ColumnElement[bool]:
        """``test`` on a value that is there: false, not NULL, when it is not (see where)."""
        if not negated or cond.field.column in NEVER_NULL:
            return test
        return sa.and_(col.is_not(None), test)

    if kind == "tags":
        return _tags(op, value, ctx)
    if kind == "interest":
        return _interest(cond, ctx)
    if kind == "consent":
        return _consent(value, ctx)
    if kind == "segment":
        assert isinstance(value, SegmentRef)
        return where(value.rule, ctx, negated)
    if kind == "near":
        assert isinstance(value, Near)
        return _near(value, ctx)
    if cond.field.column == "scores.rfm_group" and op in ("eq", "in"):
        # plain comparisons of the aggregates with cuts, never NULL (see scoring.group_is_sql)
        ctx.joins.add("activity")
        names = [value] if op == "eq" else list(value)
        return sa.or_(
            sa.false(), *(scoring.group_is_sql(activity, g, ctx.cuts, ctx.splits) for g in names)
        )
    col = _value_of(cond, ctx)
    if op == "is_set":
        return col.is_not(None)
    if kind == "boolean":
        return _set(col, col == sa.true()) if op == "is_true" else _set(col, col == sa.false())
    if kind == "time":
        return _set(col, _time_test(col, op, value, ctx))
    if kind == "date":
        if op == "within_days":
            low = (ctx.today - timedelta(days=value)).isoformat()
            return _set(col, sa.and_(col >= low, col <= ctx.today.isoformat()))
        return _set(col, _compare(col, op, value))
    if op == "contains":
        found = (
            sa.func.strpos(col, value) if ctx.dialect == "postgresql" else sa.func.instr(col, value)
        )
        return _set(col, found > 0)
    if op == "starts_with":
        return _set(col, sa.func.substr(col, 1, len(value)) == value)
    return _set(col, _compare(col, op, value))


def _compare(col: Any, op: str, value: Any) -> sa.ColumnElement[bool]:
    if op == "eq":
        return col == value
    if op == "in":
        return col.in_(list(value))
    if op in ("gt", "after"):
        return col > value
    if op == "gte":
        return col >= value
    if op in ("lt", "before"):
        return col < value
    if op == "lte":
        return col <= value
    if op == "between":
        return sa.and_(col >= value[0], col <= value[1])
    raise ValueError(op)


def _time_test(col: Any, op: str, value: Any, ctx: Context) -> sa.ColumnElement[bool]:
    def at(v: datetime) -> Any:
        return sa.literal(v, UTCDateTime)

    if op == "within_days":
        return col >= at(ctx.now - timedelta(days=value))
    if op == "between":
        return sa.and_(col >= at(value[0]), col <= at(value[1]))
    return _compare(col, op, at(value))


def _tag_ids(ctx: Context, *where: Any) -> sa.Select[Any]:
    return ctx.scope.select(contact_tags, contact_tags.c.contact_id).where(*where)


def _tags(op: str, value: Any, ctx: Context) -> sa.ColumnElement[bool]:
    if op == "has":
        return contacts.c.id.in_(_tag_ids(ctx, contact_tags.c.tag == value))
    if op == "has_any":
        return contacts.c.id.in_(_tag_ids(ctx, contact_tags.c.tag.in_(list(value))))
    if op == "has_all":
        return sa.and_(*(contacts.c.id.in_(_tag_ids(ctx, contact_tags.c.tag == v)) for v in value))
    raise ValueError(op)


def _interest(cond: Cond, ctx: Context) -> sa.ColumnElement[bool]:
    i = contact_interests
    tags = [cond.value] if cond.op == "has" else list(cond.value)
    tests: list[sa.ColumnElement[bool]] = [i.c.tag.in_(tags)]
    if cond.option("min_weight") is not None:
        tests.append(i.c.weight >= cond.option("min_weight"))
    if cond.option("min_events") is not None:
        tests.append(i.c.events >= cond.option("min_events"))
    if cond.option("within_days") is not None:
        since = ctx.now - timedelta(days=cond.option("within_days"))
        tests.append(i.c.last_at >= sa.literal(since, UTCDateTime))
    return contacts.c.id.in_(ctx.scope.select(i, i.c.contact_id).where(*tests))


def consent_sql(purpose: str, scope: TenantScope) -> sa.ColumnElement[bool]:
    """The contact's latest consent record for ``purpose`` is a grant (false when there is
    none): the ledger is append-only, so the latest record is the current consent."""
    latest = (
        sa.select(consent_records.c.action)
        .where(
            scope.owns(consent_records),
            consent_records.c.phone_index == contacts.c.phone_index,
            consent_records.c.purpose == purpose,
        )
        .order_by(consent_records.c.at.desc(), consent_records.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return sa.func.coalesce(latest, "") == "granted"


def _consent(purpose: str, ctx: Context) -> sa.ColumnElement[bool]:
    return consent_sql(purpose, ctx.scope)


def _near(near: Near, ctx: Context) -> sa.ColumnElement[bool]:
    """Within ``km`` of any of the stores: a bounding box on ``ix_contact_locations_box`` picks
    the candidates, the chord test on the unit sphere (exact great-circle distance) decides."""
    loc = contact_locations
    limit = geo.chord_squared_limit(near.km)
    per_store = []
    for store in near.stores:
        box = geo.bounding_box(store.lat, store.lon, near.km)
        sx, sy, sz = geo.unit_vector(store.lat, store.lon)
        chord = (
            (loc.c.x - sx) * (loc.c.x - sx)
            + (loc.c.y - sy) * (loc.c.y - sy)
            + (loc.c.z - sz) * (loc.c.z - sz)
        )
        per_store.append(
            sa.and_(
                loc.c.lat.between(box.lat_min, box.lat_max),
                loc.c.lon.between(box.lon_min, box.lon_max),
                chord <= limit,
            )
        )
    return contacts.c.id.in_(ctx.scope.select(loc, loc.c.contact_id).where(sa.or_(*per_store)))
