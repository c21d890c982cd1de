"""Bulk inserts of one tenant's rows at the driver's own speed: PostgreSQL ``COPY``, SQLite
``executemany``.

SQLAlchemy's ``executemany`` builds a parameter dictionary and runs the type processors for every
row, which costs more than the database's own work for narrow rows (an import of a million
contacts spent most of its time there). :func:`insert_rows` takes rows as tuples in a fixed column
order, converts each column once per value with the dialect's own bind processor (so stored
values read back exactly as if SQLAlchemy had written them), and hands them to the driver.

The tenant guard sees Core statements, not the driver's protocol, so the tenant is enforced here:
the caller gives a :class:`~hongyan.db.scope.TenantScope`, ``tenant_id`` may not be among the
columns, and every row gets the scope's tenant id.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.db.scope import TenantScope, TenantScopeViolation, is_scoped_table

# One encoder for every value: json.dumps(..., ensure_ascii=False) builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False).encode
_string = json.encoder.encode_basestring  # the C function the encoder above uses for a str


def to_json(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False)``. The common flat object of strings (an
    import's custom attributes) is written directly, in the same text, at a fifth of the cost
    of the encoder's Python-level entry."""
    if type(value) is dict:
        try:
            return "{" + ", ".join([_string(k) + ": " + _string(v) for k, v in value.items()]) + "}"
        except TypeError:  # a key or value that is not a str
            pass
    return _encode(value)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    if not value:  # the common empty list / object, without the encoder
        return "[]" if isinstance(value, list | tuple) else "{}"
    return to_json(value)


def _processor(column: sa.Column[Any], dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    if isinstance(column.type, sa.JSON):
        return _json
    if dialect.name == "postgresql" or isinstance(column.type, sa.LargeBinary | sa.String):
        return None  # psycopg adapts datetimes, booleans, bytes itself
    # The dialect's implementation, so a TypeDecorator's own step and its impl's both run (a
    # UTC datetime becomes SQLite's "YYYY-MM-DD HH:MM:SS.ffffff" text, exactly as SQLAlchemy
    # writes it, so comparisons in SQL agree).
    processor: Callable[[Any], Any] | None = column.type.dialect_impl(dialect).bind_processor(
        dialect
    )
    return processor


def _sqlite_binding(column: sa.Column[Any]) -> Callable[[Any], Any] | None:
    """What makes a value bind fast in Python's ``sqlite3``: it binds an int, a float, a str
    and a bytearray directly, but sends every other value (bytes and bool included) through its
    adapter registry first, which cost about 0.9 µs a value here (a contact row has four blobs
    and a flag: some 2 µs of a 12 µs insert). Converting costs 0.1 µs."""
    if isinstance(column.type, sa.LargeBinary):
        return sqlite_blob
    if isinstance(column.type, sa.Boolean):
        return _as_int
    return None


def sqlite_blob(value: Any) -> Any:
    """Bytes as ``sqlite3`` binds them fastest (a bytearray); anything else as it was."""
    return bytearray(value) if type(value) is bytes else value


def _as_int(value: Any) -> Any:
    return int(value) if type(value) is bool else value


# PostgreSQL's binary COPY: each value goes as the column type's own binary form (a bytea is
# copied, a timestamp is one integer) instead of being written out as text and parsed again.
# Measured on 100,000 message rows: 0.11 s of client CPU against 0.51 s in text. Only for tables
# whose every column has a type here; any other (a numeric, a float) keeps the text format.
# ``json`` reads its binary form as plain text, which is what the JSON processor gives.
_PG_BINARY = {
    "SMALLINT": "int2",
    "INTEGER": "int4",
    "BIGINT": "int8",
    "BOOLEAN": "bool",
    "TEXT": "text",
    "BYTEA": "bytea",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "JSON": "text",
}
_binary_types: dict[tuple[str, tuple[str, ...]], list[str] | None] = {}


def _pg_binary_types(
    table: sa.Table, names: tuple[str, ...], dialect: sa.Dialect
) -> list[str] | None:
    key = (table.name, names)
    if key not in _binary_types:
        out: list[str] | None = []
        for n in names:
            ddl = table.c[n].type.compile(dialect=dialect).upper()
            kind = "text" if ddl.startswith("VARCHAR") else _PG_BINARY.get(ddl)
            if kind is None:
                out = None
                break
            out.append(kind)  # type: ignore[union-attr]
        _binary_types[key] = out
    return _binary_types[key]


def to_driver(dialect_name: str, table: sa.Table, column: str, value: Any) -> Any:
    """One value as :func:`insert_rows` would hand it to the driver (for ``raw`` rows)."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = (postgresql if dialect_name == "postgresql" else sqlite).dialect()
    p = _processor(table.c[column], dialect)
    return p(value) if p is not None and value is not None else value


def insert_rows(
    conn: Connection,
    scope: TenantScope,
    table: sa.Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    constants: Mapping[str, Any] | None = None,
    *,
    raw: bool = False,
) -> int:
    """Insert ``rows`` (tuples in ``columns`` order) into ``table`` for ``scope``'s tenant;
    ``constants`` are the same for every row (converted once). ``raw``: the rows' values are
    already in the driver's form (JSON as text: :func:`to_driver`). Returns the row count."""
    if not is_scoped_table(table) or "tenant_id" in columns:
        raise TenantScopeViolation("insert_rows writes a tenant table and sets tenant_id itself")
    constants = dict(constants or {})
    dialect = conn.dialect
    names = ["tenant_id", *columns, *constants]
    procs = [_processor(table.c[n], dialect) for n in columns]
    fixed = tuple(
        (p(v) if (p := _processor(table.c[n], dialect)) and v is not None else v)
        for n, v in constants.items()
    )
    head = (scope.tenant_id,)
    pairs = [] if raw else [(i, p) for i, p in enumerate(procs) if p is not None]
    if dialect.name == "sqlite":
        done = {i for i, _ in pairs}
        pairs += [
            (i, f)
            for i, n in enumerate(columns)
            if i not in done and (f := _sqlite_binding(table.c[n])) is not None
        ]

    def convert(row: Sequence[Any]) -> tuple[Any, ...]:
        if pairs:
            out = list(row)
            for i, p in pairs:
                if out[i] is not None:
                    out[i] = p(out[i])
            row = out
        return head + tuple(row) + fixed

    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    count = 0
    quoted = ", ".join(dialect.identifier_preparer.quote(n) for n in names)
    if dialect.name == "postgresql":
        types = _pg_binary_types(table, tuple(names), dialect)
        sql = f"COPY {table.name} ({quoted}) FROM STDIN"
        if types is not None:
            sql += " (FORMAT BINARY)"
        with dbapi.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[attr-defined]
            if types is not None:
                copy.set_types(types)
            for row in rows:
                copy.write_row(convert(row))
                count += 1
        return count
    marks = ", ".join("?" for _ in names)
    sql = f"INSERT INTO {table.name} ({quoted}) VALUES ({marks})"  # noqa: S608 (our own names)
    counted = [0]

    def converted() -> Iterable[tuple[Any, ...]]:  # streamed: no second copy of the rows
        for r in rows:
            counted[0] += 1
            yield convert(r)

    cur = dbapi.cursor()
    try:
        cur.executemany(sql, converted())  # type: ignore[arg-type]  # sqlite3 takes an iterator
    finally:
        cur.close()
    return counted[0]


def fetch_per_key_sql(
    table: sa.Table, columns: Sequence[str], key: str, dialect: sa.Dialect, width: int = 0
) -> str:
    """PostgreSQL: :func:`fetch_in`'s statement with ``per_key`` (parameters: the keys as an
    array, the tenant; with ``width``, binary keys of that many bytes each: all of them as one
    ``bytea``, their count, the tenant)."""
    q = dialect.identifier_preparer.quote
    cols = ", ".join(f"t.{q(c)}" for c in columns)
    if width:  # one value to send, cut by the server (an array costs the driver ~1 µs a key)
        keys = (
            f"(SELECT substr(%s::bytea, i * {width} + 1, {width}) AS v"  # noqa: S608 (an int)
            " FROM generate_series(0, %s - 1) AS i) AS k"
        )
    else:
        keys = f"unnest(%s::{table.c[key].type.compile(dialect=dialect)}[]) AS k(v)"
    # LATERAL with OFFSET 0 (which keeps the subquery from being merged into a plain join)
    # makes the keys the outer side whatever the planner believes: as a plain join it hashed
    # the whole tenant, or, on a table written in this transaction, scanned it once per key.
    return (
        f"SELECT {cols} FROM {keys} CROSS JOIN LATERAL ("  # noqa: S608 (our own names)
        f"SELECT * FROM {table.name} AS t WHERE t.tenant_id = %s AND t.{q(key)} = k.v OFFSET 0"
        ") AS t"
    )


def fetch_in(
    conn: Connection,
    scope: TenantScope,
    table: sa.Table,
    columns: Sequence[str],
    key: str,
    keys: Sequence[Any],
    *,
    per_key: bool = False,
) -> list[tuple[Any, ...]]:
    """``SELECT columns FROM table WHERE tenant_id = <scope> AND key IN keys`` through the driver
    (a batch of thousands of keys costs SQLAlchemy more to compile than the database to run).
    JSON columns come back parsed, binary ones as ``bytes``.

    ``per_key`` (PostgreSQL; ``key`` must follow ``tenant_id`` in an index): each key is looked
    up on its own, one descent of that index (:func:`fetch_per_key_sql`), where the planner
    answered ``key = ANY(keys)`` on a tenant holding most of the table by reading all its rows
    (with statistics) or all of them through the tenant index (without): an import's lookups
    grew with the tenant's contacts. Keys are sent once each."""
    if not is_scoped_table(table):
        raise TenantScopeViolation("fetch_in reads tenant tables only")
    if not keys:
        return []
    dialect = conn.dialect
    q = dialect.identifier_preparer.quote
    cols = ", ".join(q(c) for c in columns)
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    json_at = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, sa.JSON)]
    bin_at = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, sa.LargeBinary)]
    per_key = per_key and dialect.name == "postgresql"
    out: list[tuple[Any, ...]] = []
    cur = dbapi.cursor()
    try:
        for start in range(0, len(keys), 10_000):
            chunk = list(keys[start : start + 10_000])
            if per_key:
                chunk = list(dict.fromkeys(chunk))
                width = len(chunk[0]) if type(chunk[0]) is bytes else 0
                if width and all(type(k) is bytes and len(k) == width for k in chunk):
                    sql = fetch_per_key_sql(table, columns, key, dialect, width)
                    args: tuple[Any, ...] = (b"".join(chunk), len(chunk), scope.tenant_id)
                else:
                    sql = fetch_per_key_sql(table, columns, key, dialect)
                    args = (chunk, scope.tenant_id)
                cur.execute(sql, args, binary=True)  # type: ignore[call-arg]
            elif dialect.name == "postgresql":
                sql = f"SELECT {cols} FROM {table.name} WHERE tenant_id = %s AND {q(key)} = ANY(%s)"  # noqa: S608
                cur.execute(sql, (scope.tenant_id, chunk), binary=True)  # type: ignore[call-arg]  # psycopg: no text escaping
            else:
                marks = ", ".join("?" for _ in chunk)
                sql = (
                    f"SELECT {cols} FROM {table.name} WHERE tenant_id = ? AND {q(key)} IN ({marks})"  # noqa: S608
                )
                cur.execute(sql, (scope.tenant_id, *chunk))
            for row in cur.fetchall():
                if json_at or bin_at:
                    values = list(row)
                    for i in json_at:
                        if isinstance(values[i], str):
                            values[i] = json.loads(values[i])
                    for i in bin_at:
                        if values[i] is not None:
                            values[i] = bytes(values[i])
                    row = tuple(values)
                out.append(tuple(row))
    finally:
        cur.close()
    return out


# -- rows packed ahead of time for PostgreSQL's binary COPY ----------------------------------------
#
# A producer in another process can pack each row into its binary COPY tuple, so what crosses the
# process boundary is one bytes object per row (an import of a million contacts spent more CPU
# unpickling row tuples in the writer than the server spent storing them). The packed part is the
# row's own columns; the columns the writer fills (the tenant, constants such as the import's
# time) are packed once and appended to every row by :func:`copy_packed`.

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_NULL = NULL_FIELD = b"\xff\xff\xff\xff"
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" * 2
_TRAILER = b"\xff\xff"
_I32 = struct.Struct(">i")


def _pack_text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _I32.pack(len(raw)) + raw


def _pack_bytea(value: bytes) -> bytes:
    return _I32.pack(len(value)) + value


def _pack_timestamptz(value: datetime) -> bytes:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware datetimes")
    delta = value - _PG_EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return b"\x00\x00\x00\x08" + struct.pack(">q", micros)


_PACKERS: dict[str, Callable[[Any], bytes]] = {
    "int2": lambda v: b"\x00\x00\x00\x02" + struct.pack(">h", v),
    "int4": lambda v: b"\x00\x00\x00\x04" + struct.pack(">i", v),
    "int8": lambda v: b"\x00\x00\x00\x08" + struct.pack(">q", v),
    "bool": lambda v: b"\x00\x00\x00\x01\x01" if v else b"\x00\x00\x00\x01\x00",
    "text": _pack_text,
    "bytea": _pack_bytea,
    "timestamptz": _pack_timestamptz,
}
_UNPACKERS: dict[str, Callable[[bytes], Any]] = {
    "int2": lambda b: struct.unpack(">h", b)[0],
    "int4": lambda b: struct.unpack(">i", b)[0],
    "int8": lambda b: struct.unpack(">q", b)[0],
    "bool": lambda b: b != b"\x00",
    "text": lambda b: b.decode("utf-8"),
    "bytea": bytes,
    "timestamptz": lambda b: _PG_EPOCH + timedelta(microseconds=struct.unpack(">q", b)[0]),
}
# Text values that repeat (a country, a carrier, a city) are packed once and remembered, up to
# this many per column.
_TEXT_CACHE = 4096


class PackedRows:
    """Packs ``columns`` of ``table`` (values as :func:`insert_rows` takes ``raw`` rows: JSON as
    text) into binary COPY tuples that :func:`copy_packed` writes, followed by the columns it
    fills itself (``tail``: the tenant first, then the constants' names)."""

    def __init__(self, table: sa.Table, columns: Sequence[str], tail: Sequence[str]) -> None:
        from sqlalchemy.dialects import postgresql

        if not is_scoped_table(table) or "tenant_id" in columns or "tenant_id" in tail:
            raise TenantScopeViolation("packed rows are a tenant table's, the tenant set apart")
        self.table, self.columns, self.tail = table, tuple(columns), tuple(tail)
        types = _pg_binary_types(
            table, (*self.columns, "tenant_id", *self.tail), postgresql.dialect()
        )
        if types is None:
            raise ValueError(f"{table.name}: a column has no binary form known here")
        self.types = types
        self.count = struct.pack(">h", len(types))
        self._packers = [self._packer(t) for t in types[: len(self.columns)]]

    def field(self, column: str) -> Callable[[Any], bytes]:
        """One column's packer (a value, never None, to its length-prefixed bytes), for a
        producer that packs a row's fields itself."""
        return self._packers[self.columns.index(column)]

    @staticmethod
    def _packer(kind: str) -> Callable[[Any], bytes]:
        pack = _PACKERS[kind]
        if kind != "text":
            return pack
        cache: dict[str, bytes] = {}

        def text(value: str) -> bytes:
            hit = cache.get(value)
            if hit is None:
                hit = pack(value)
                if len(cache) < _TEXT_CACHE:
                    cache[value] = hit
            return hit

        return text

    def pack(self, row: Sequence[Any]) -> bytes:
        """One row (its own columns, in order) as the start of a binary COPY tuple."""
        return self.count + b"".join(
            [_NULL if v is None else p(v) for v, p in zip(row, self._packers, strict=True)]
        )

    def unpack(self, packed: bytes) -> tuple[Any, ...]:
        """The values :meth:`pack` was given (JSON stays text)."""
        out: list[Any] = []
        at = 2
        for kind in self.types[: len(self.columns)]:
            (size,) = _I32.unpack_from(packed, at)
            at += 4
            if size < 0:
                out.append(None)
                continue
            out.append(_UNPACKERS[kind](packed[at : at + size]))
            at += size
        if at != len(packed):
            raise ValueError("a packed row has more fields than its columns")
        return tuple(out)

    def tail_for(self, scope: TenantScope, constants: Mapping[str, Any]) -> bytes:
        if set(constants) != set(self.tail):
            raise ValueError(f"the tail needs exactly {', '.join(self.tail)}")
        kinds = self.types[len(self.columns) :]
        names = ("tenant_id", *self.tail)
        values = [scope.tenant_id, *(constants[n] for n in self.tail)]
        values = [
            _json(v) if isinstance(self.table.c[n].type, sa.JSON) else v
            for n, v in zip(names, values, strict=True)
        ]
        return b"".join(
            _NULL if v is None else _PACKERS[k](v) for k, v in zip(kinds, values, strict=True)
        )


def copy_packed(
    conn: Connection,
    scope: TenantScope,
    packer: PackedRows,
    rows: Sequence[bytes],
    constants: Mapping[str, Any],
    *,
    into: str | None = None,
) -> int:
    """Write rows made by ``packer.pack`` with one binary ``COPY`` (PostgreSQL only), each
    completed with ``scope``'s tenant and ``constants``. Returns the row count. ``into``: a
    staging table of the same columns (our own name, never a user's) instead of the packer's."""
    if conn.dialect.name != "postgresql":
        raise ValueError("packed rows are PostgreSQL's binary COPY format")
    if not rows:
        return 0
    tail = packer.tail_for(scope, constants)
    q = conn.dialect.identifier_preparer.quote
    names = ", ".join(q(n) for n in (*packer.columns, "tenant_id", *packer.tail))
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    sql = f"COPY {into or packer.table.name} ({names}) FROM STDIN (FORMAT BINARY)"
    with dbapi.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[attr-defined]
        copy.write(_SIGNATURE)
        for start in range(0, len(rows), 4096):  # the whole batch never sits in memory twice
            chunk = rows[start : start + 4096]
            copy.write(tail.join(chunk) + tail)
        copy.write(_TRAILER)
    return len(rows)
