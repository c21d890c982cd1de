"""Small SQL building blocks shared by the services."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection


def among(
    conn: Connection, column: Any, values: Iterable[Any], item_type: Any
) -> sa.ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``: one short statement text
    whatever the number of values, which the driver parses and the server prepares once (an
    ``IN`` list of 500 is a new, long text for each batch size)."""
    values = list(values)
    if conn.dialect.name == "postgresql":
        kind = _literal_kind(item_type)
        if kind is None:
            array = sa.bindparam(None, values, type_=postgresql.ARRAY(item_type))
            return column == sa.any_(array)
        # Untyped, so no ``::VARCHAR`` is written after it: the server then takes the parameter
        # as the array type itself (a constant in the plan, estimated by its real length), not
        # as a text converted at run time (estimated at 10 elements, which changed plans and the
        # order rows were locked in, and deadlocked two dispatchers).
        text = sa.bindparam(None, pg_array(values, kind), type_=sa.types.NullType())
        return column == sa.any_(sa.cast(text, postgresql.ARRAY(item_type)))
    return column.in_(values)


def _literal_kind(item_type: Any) -> type | None:
    kind = item_type if isinstance(item_type, type) else type(item_type)
    if issubclass(kind, sa.Integer):
        return int
    if issubclass(kind, sa.String):
        return str
    return None


def pg_array(values: Iterable[Any], kind: type = str) -> str:
    """A PostgreSQL array of integers (``kind=int``) or texts in its text form (``{1,2}``,
    ``{"a","b\\"c"}``), for ``CAST(:param AS bigint[])`` and the like.

    The driver dumps a Python list element by element in Python, about a microsecond each; the
    dispatcher sends thousands of ids a second this way, and joining their text costs a fraction
    of that. The literal is a bound parameter, never SQL text. Every text element is quoted
    (backslash and double quote escaped), so any string, including ``NULL``, braces, commas and
    spaces, reads back exactly; ``None`` is SQL NULL.
    """
    if kind is int:
        return "{" + ",".join([str(int(v)) for v in values]) + "}"
    out = []
    for v in values:
        if v is None:
            out.append("NULL")
            continue
        if not isinstance(v, str):
            raise TypeError(f"pg_array of texts takes strings, not {type(v).__name__}")
        if "\x00" in v:
            raise ValueError("PostgreSQL text cannot hold a NUL character")
        if "\\" in v or '"' in v:
            v = v.replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'"{v}"')
    return "{" + ",".join(out) + "}"
