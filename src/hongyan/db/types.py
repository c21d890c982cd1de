"""Column types shared by every table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

#: The largest id of a table keyed by INTEGER (``sa.Integer``, most tables: 32 bits on
#: PostgreSQL), and of one keyed by :data:`hongyan.db.tables.BigId` (messages, contacts, events,
#: webhook deliveries …: BIGINT). A larger Python int bound to a statement is "integer out of
#: range" on PostgreSQL, and past 2**63 - 1 an OverflowError in SQLite's driver: code that takes
#: an id from outside checks it against these first.
MAX_ID = 2**31 - 1
MAX_BIG_ID = 2**63 - 1


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware, on SQLite as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware datetimes")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
