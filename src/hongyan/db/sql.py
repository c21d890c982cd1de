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
        array = sa.bindparam(None, values, type_=postgresql.ARRAY(item_type))
        return column == sa.any_(array)
    return column.in_(values)
