"""The one path to a tenant's rows.

Every statement that touches a table marked ``tenant_scoped`` must either come from a
:class:`TenantScope` (which adds ``tenant_id = :tenant`` itself) or carry an explicit, named
cross-tenant permission (:func:`unscoped`), used by the platform's own machinery (login lookup,
dispatcher, key rotation). Anything else is refused by an engine hook before it reaches the
database, so a query that forgets its tenant fails loudly in tests instead of leaking data.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, TextClause
from sqlalchemy.sql.selectable import CompoundSelect, Select

TENANT_OPTION = "hongyan_tenant"
UNSCOPED_OPTION = "hongyan_unscoped"

S = TypeVar("S", bound=sa.Executable)


class TenantScopeViolation(RuntimeError):
    """A statement touched tenant data without a tenant scope: a programming error."""


@functools.cache
def _scoped_table_names() -> frozenset[str]:
    from hongyan.db.tables import metadata

    return frozenset(t.name for t in metadata.sorted_tables if is_scoped_table(t))


def is_scoped_table(table: sa.Table) -> bool:
    return bool(table.info.get("tenant_scoped"))


def _scoped_tables(statement: Any) -> set[str]:
    found: set[str] = set()
    for element in visitors.iterate(statement):
        if isinstance(element, sa.Table) and is_scoped_table(element):
            found.add(element.name)
    for attr in ("table",):  # DML targets are not always visited
        target = getattr(statement, attr, None)
        if isinstance(target, sa.Table) and is_scoped_table(target):
            found.add(target.name)
    return found


def _constrained(statement: Any, tenant_id: int) -> set[str]:
    """Tables that the statement limits with ``<table>.tenant_id = <tenant_id>``."""
    found: set[str] = set()
    for element in visitors.iterate(statement):
        if not isinstance(element, BinaryExpression) or element.operator is not operators.eq:
            continue
        left, right = element.left, element.right
        if isinstance(right, sa.Column) and isinstance(left, BindParameter):
            left, right = right, left
        if (
            isinstance(left, sa.Column)
            and left.name == "tenant_id"
            and isinstance(left.table, sa.Table)
            and isinstance(right, BindParameter)
            and right.value == tenant_id
        ):
            found.add(left.table.name)
    return found


def _param_sets(multiparams: Any, params: Any) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for item in multiparams or ():
        if isinstance(item, Mapping):
            out.append(item)
        elif isinstance(item, Sequence) and not isinstance(item, str | bytes):
            out.extend(p for p in item if isinstance(p, Mapping))
    if isinstance(params, Mapping):
        out.append(params)
    return out


def _value_keys(statement: Any) -> set[str]:
    values = getattr(statement, "_values", None) or {}
    return {getattr(k, "name", k) for k in values}


def _check(
    conn: Connection,
    clauseelement: Any,
    multiparams: Any,
    params: Any,
    execution_options: Mapping[str, Any],
) -> None:
    if isinstance(clauseelement, TextClause):
        if not clauseelement.get_execution_options().get(UNSCOPED_OPTION):
            words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", clauseelement.text.lower()))
            hit = words & _scoped_table_names()
            if hit:
                raise TenantScopeViolation(
                    f"SQL text names tenant tables {sorted(hit)}; use TenantScope or unscoped()"
                )
        return
    if not isinstance(clauseelement, Select | CompoundSelect | Insert | Update | Delete):
        return
    options = {**clauseelement.get_execution_options(), **execution_options}
    if options.get(UNSCOPED_OPTION):
        return
    tables = _scoped_tables(clauseelement)
    tenant_id = options.get(TENANT_OPTION)
    if tenant_id is None:
        if tables:
            raise TenantScopeViolation(
                f"statement on tenant tables {sorted(tables)} has no tenant scope; "
                "build it with TenantScope or mark it with unscoped(reason)"
            )
        return
    target = clauseelement.table if isinstance(clauseelement, Insert) else None
    if isinstance(clauseelement, Insert | Update):
        for row in _param_sets(multiparams, params):
            if "tenant_id" in row and row["tenant_id"] != tenant_id:
                raise TenantScopeViolation("a scoped statement may not write another tenant_id")
    if isinstance(clauseelement, Update) and "tenant_id" in _value_keys(clauseelement):
        raise TenantScopeViolation("a scoped update may not change tenant_id")
    unguarded = tables - _constrained(clauseelement, tenant_id)
    if target is not None:
        unguarded.discard(target.name)
    if unguarded:
        raise TenantScopeViolation(
            f"scoped statement reads tenant tables {sorted(unguarded)} without "
            "limiting them to its tenant; add scope.owns(table) to the join or where clause"
        )


def install_guard(engine: Engine) -> None:
    sa.event.listen(engine, "before_execute", _check)


def unscoped(statement: S, reason: str) -> S:
    """Mark a statement as deliberately crossing tenants. ``reason`` documents why."""
    if not reason:
        raise ValueError("unscoped() needs a reason")
    return statement.execution_options(**{UNSCOPED_OPTION: reason})


class TenantScope:
    """Builds statements that can only see one tenant's rows."""

    def __init__(self, tenant_id: int) -> None:
        if not isinstance(tenant_id, int) or tenant_id <= 0:
            raise ValueError("tenant id must be a positive integer")
        self.tenant_id = tenant_id

    def _opts(self, statement: S) -> S:
        return statement.execution_options(**{TENANT_OPTION: self.tenant_id})

    def owns(self, table: sa.Table) -> sa.ColumnElement[bool]:
        """The condition that keeps ``table`` (e.g. a joined one) to this tenant."""
        if not is_scoped_table(table):
            raise TenantScopeViolation(f"table {table.name} is not tenant-scoped")
        return table.c.tenant_id == self.tenant_id

    def select(self, table: sa.Table, *columns: Any) -> Select[Any]:
        stmt = sa.select(*(columns or (table,))).where(self.owns(table))
        for extra in _scoped_tables(stmt) - {table.name}:
            stmt = stmt.where(self.owns(table.metadata.tables[extra]))
        return self._opts(stmt)

    def insert(self, table: sa.Table) -> Insert:
        self.owns(table)
        return self._opts(sa.insert(table).values(tenant_id=self.tenant_id))

    def update(self, table: sa.Table) -> Update:
        return self._opts(sa.update(table).where(self.owns(table)))

    def delete(self, table: sa.Table) -> Delete:
        return self._opts(sa.delete(table).where(self.owns(table)))

    def insert_many(
        self, conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """executemany with the tenant id forced onto every row."""
        if not rows:
            return
        stmt = self._opts(sa.insert(table))
        conn.execute(stmt, [{**row, "tenant_id": self.tenant_id} for row in rows])

    def dialect_insert(self, conn: Connection, table: sa.Table) -> Any:
        """The dialect's own INSERT (for ``on_conflict_do_update`` / ``do_nothing``: SQLite
        and PostgreSQL share that syntax), scoped to this tenant."""
        self.owns(table)
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        return self._opts(dialect.insert(table))

    def insert_ignore(
        self, conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]
    ) -> int:
        """executemany of ``INSERT … ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL alike),
        the tenant id forced onto every row; returns how many rows were new."""
        if not rows:
            return 0
        self.owns(table)
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        key = next(iter(table.primary_key.columns))
        stmt = self._opts(dialect.insert(table).on_conflict_do_nothing().returning(key))
        result = conn.execute(stmt, [{**row, "tenant_id": self.tenant_id} for row in rows])
        return len(result.all())
