"""Importing contacts: a CSV or XLSX file in, clean, encrypted, consented contacts out.

The file streams through in batches (:data:`BATCH` rows), so memory stays bounded whatever its
size: what is kept for the whole file is one 8-byte key per distinct number (to tell duplicates
within the file, :func:`in_file_order`), in a set up to 100,000 numbers (some 6 MB), then in
a temporary database on disk (:class:`SeenNumbers`). Large files are read
by reader processes, one per core but the writer's within the import's memory budget
(:func:`reader_count`, :func:`_from_readers`),
each building every n-th batch. Each batch is:

1. parsed row by row (pure): the number normalised to E.164 (the fast path for Chinese mobiles,
   :func:`hongyan.contacts.numbers.normalise`), the other cells checked against their fields;
   a row that fails is kept for the error report with its line and reason, and the rest go on;
2. merged by blind index, later non-empty values winning and tags united, so a number seen
   twice in the file becomes one contact;
3. written set-based: one query finds which numbers exist (on SQLite with their attributes; a
   first import looks up only numbers repeated from earlier batches, :func:`_write_batch`), one
   which are suppressed; new contacts are inserted in one ``executemany`` (PostgreSQL: one
   binary ``COPY`` of rows the reader packed), existing ones updated in one ``executemany``
   (PostgreSQL: staged by ``COPY`` and merged by the server, :meth:`_Writer.update_packed`;
   ``COALESCE``: an empty cell never erases a stored value) unless the contact's
   ``import_digest`` says it last had this very row (:func:`row_digester`; the database
   clears the digest on any other update), tags inserted ignoring those already there, and
   consent appended to the ledger.

Before anything is written, a first pass reads the whole file (:func:`service.import_stream`):
a file that is broken as a whole (a decoding error half-way, a 10 MB line, broken CSV) is refused
and nothing is stored. Then each transaction stores whole batches (one on PostgreSQL; on SQLite
more while the next is ready, up to :data:`SQLITE_TRANSACTION_ROWS`, as each commit rewrites the
index pages it dirtied: :func:`_hold`) and records how far the import got (the line and the
counters), so a crash or a database error half-way leaves an import that says ``failed`` with
the reason and the batches stored so far, and that is *resumed* from the next batch (``hongyan
contacts import FILE --resume ID``, the same file checked by its SHA-256): never half-applied
silently. Transactions of two or three seconds at most keep SQLite's single writer free for
the dispatcher and the console between them.

Importing a suppressed number never revives it: the suppression stays and no consent is granted
for it. A number whose data was erased at the person's request (``forget``) and that has no
contact again is not imported at all: a file from before the erasure would bring the person's
data back. Counters: every data row is exactly one of ``invalid``, ``duplicates`` (its number
came earlier in the file), ``erased`` (the first row of an erased number), ``imported`` (a new
contact) or ``updated`` (a contact that existed before); ``suppressed`` counts distinct numbers
on the suppression list (an erased number not among them).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import marshal
import os
import re
import sqlite3
import struct
import threading
import time
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hongyan.clock import Clock
from hongyan.contacts import fields as F
from hongyan.contacts.geo import FIRST, SLOTS, SegmentTable
from hongyan.contacts.geo import table as segment_table
from hongyan.contacts.numbers import (
    _BY_PREFIX,
    _BY_PREFIX4,
    NUMBER_PROBLEMS,
    NumberProblem,
    carrier_of,
    check_zone,
    country_of,
    zone_of,
)
from hongyan.contacts.numbers import normalise as normalise_number
from hongyan.contacts.sources import ImportFileError, Table, csv_bytes, is_formula
from hongyan.contacts.suppression import erasures, phone_context
from hongyan.db.bulk import (
    NULL_FIELD,
    PackedRows,
    copy_packed,
    fetch_in,
    insert_rows,
    sqlite_blob,
    to_driver,
    to_json,
)
from hongyan.db.engine import BEGIN_IMMEDIATE
from hongyan.db.scope import TenantScope
from hongyan.db.tables import (
    consent_records,
    contact_import_errors,
    contact_imports,
    contact_tags,
    contacts,
    suppressions,
)
from hongyan.errors import HongyanError, NotFound, ValidationFailed
from hongyan.security import audit
from hongyan.security.keyring import KeyRing, mask_phone

BATCH = 25_000
# On SQLite a transaction takes more batches while it holds fewer rows and is younger than
# this, and the next batch is ready (see _hold).
SQLITE_TRANSACTION_ROWS = 100_000
SQLITE_TRANSACTION_SECONDS = 2.0
SAMPLE_ERRORS = 20
MAX_NAME = 100

ROW_PROBLEMS: dict[str, tuple[str, str]] = {
    **NUMBER_PROBLEMS,
    "formula": (
        "A cell starts like a spreadsheet formula (=, +, -, @)",
        "单元格以公式字符开头（=、+、-、@）",
    ),
    "bad_name": (f"The name is longer than {MAX_NAME} characters", f"姓名超过 {MAX_NAME} 个字符"),
    "bad_gender": ("Gender is not one of 男/女/M/F", "性别不是 男/女/M/F 之一"),
    "bad_birthday": ("The birthday is not a date (YYYY-MM-DD)", "生日不是有效日期（YYYY-MM-DD）"),
    "bad_tags": ("A tag is longer than 64 characters", "标签超过 64 个字符"),
    "bad_attribute": ("A custom attribute does not match its type", "自定义属性值与其类型不符"),
    "bad_time_zone": (
        "The time zone is not an IANA name (e.g. America/New_York)",
        "时区不是有效的 IANA 名称（如 America/New_York）",
    ),
}


# The columns of a new contact as :meth:`_Writer.new_row` gives them (then source and times).
NEW_COLUMNS = (
    "phone_index", "phone_cipher", "phone_masked", "country", "carrier", "mvno",
    "number_province", "number_city", "name_cipher", "name_masked", "gender", "birthday_cipher",
    "birth_month", "birth_day", "birth_decade", "province", "city", "attrs", "time_zone",
    "import_digest",
)  # fmt: skip


def name_context(tenant_id: int) -> str:
    return f"tenant:{tenant_id}:contact-name"


def birthday_context(tenant_id: int) -> str:
    return f"tenant:{tenant_id}:contact-birthday"


def import_row_context(tenant_id: int) -> str:
    return f"tenant:{tenant_id}:import-row"


def mask_name(name: str) -> str:
    """``李小龙`` → ``李**``; a one-character name shows nothing."""
    return name[0] + "*" * min(len(name) - 1, 8) if len(name) > 1 else "*"


# -- mapping ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    field: str  # phone, name, gender, birthday, province, city, tags, time_zone, attr
    attribute: str | None = None
    type: str = "text"


def _parse_target(spec: str, header: str) -> Target | None:
    spec = spec.strip()
    if spec in ("", "ignore", "-"):
        return None
    if spec in F.STANDARD_FIELDS:
        return Target(spec)
    if spec.startswith("attr"):
        _, _, rest = spec.partition(":")
        name, _, kind = rest.partition(":")
        return Target("attr", F.check_attribute_name(name or header), F.check_type(kind or "text"))
    raise ValidationFailed(
        f"Column {header!r}: unknown field {spec!r} (use {', '.join(F.STANDARD_FIELDS)}, "
        "attr:NAME[:TYPE] or ignore)",
        f"列“{header}”：未知字段 {spec!r}"
        f"（可用 {'、'.join(F.STANDARD_FIELDS)}、attr:名称[:类型] 或 ignore）",
    )


def plan_mapping(
    header: Sequence[str],
    given: dict[str, str] | None,
    definitions: Iterable[F.AttributeDefinition] = (),
) -> list[Target | None]:
    """What each column becomes. Columns not in ``given`` are guessed from their header: a
    standard field's usual names (手机号, 姓名 …), else the custom attribute of that name (its
    type if already defined, else text), else ignored."""
    given = dict(given or {})
    unknown = set(given) - set(header)
    if unknown:
        raise ValidationFailed(
            f"The mapping names columns the file does not have: {', '.join(sorted(unknown))}",
            f"映射中的列在文件中不存在：{'、'.join(sorted(unknown))}",
        )
    defined = {d.name: d.type for d in definitions}
    plan: list[Target | None] = []
    for h in header:
        if h in given:
            target = _parse_target(given[h], h)
            if target and target.field == "attr" and target.attribute in defined:
                target = Target("attr", target.attribute, defined[target.attribute])
        else:
            guessed = F.guess_field(h)
            if guessed:
                target = Target(guessed)
            elif h and _valid_attribute(h):
                target = Target("attr", h, defined.get(h, "text"))
            else:
                target = None
        plan.append(target)
    fields_used = [t.field for t in plan if t and t.field != "attr"]
    doubled = sorted({f for f in fields_used if fields_used.count(f) > 1})
    if doubled:
        raise ValidationFailed(
            f"Several columns map to {', '.join(doubled)}; choose one",
            f"多个列映射到了 {'、'.join(doubled)}，请只保留一个",
        )
    attrs = [t.attribute for t in plan if t and t.field == "attr"]
    if len(set(attrs)) != len(attrs):
        raise ValidationFailed(
            "Two columns map to the same custom attribute", "两个列映射到了同一个自定义属性"
        )
    if "phone" not in fields_used:
        err = ImportFileError(
            "No column holds the phone number (name it 手机号 / phone, or map it)",
            "没有找到手机号列（请将列名设为“手机号”或“phone”，或手动指定映射）",
        )
        err.code = "import_no_phone_column"
        raise err
    return plan


def _valid_attribute(name: str) -> bool:
    try:
        F.check_attribute_name(name)
    except ValidationFailed:
        return False
    return True


def describe_mapping(header: Sequence[str], plan: Sequence[Target | None]) -> dict[str, str]:
    out = {}
    for h, t in zip(header, plan, strict=True):
        if t is None:
            out[h] = "ignore"
        elif t.field == "attr":
            out[h] = f"attr:{t.attribute}:{t.type}"
        else:
            out[h] = t.field
    return out


# -- rows (pure) -----------------------------------------------------------------------------------


_NO_TAGS: frozenset[str] = frozenset()


@dataclass(slots=True)
class Parsed:
    e164: str
    index: bytes
    name: str | None = None
    gender: str | None = None
    birthday: date | None = None
    province: str | None = None
    city: str | None = None
    time_zone: str | None = None  # given in the file (checked); else derived from the number
    tags: set[str] | frozenset[str] = _NO_TAGS
    attrs: dict[str, Any] = field(default_factory=dict)
    first: bool = True  # the number's first row in the file
    # The keyed digest of the file row (:func:`row_parser`); None: not known, always written.
    digest: bytes | None = None

    def merge(self, later: Parsed) -> None:
        """Later non-empty values win; tags are united. (Tags and attributes are replaced, never
        changed in place: a parsed row may share its empty ones with others.) The digest is of
        both rows, in their order."""
        for name in ("name", "gender", "birthday", "province", "city", "time_zone"):
            value = getattr(later, name)
            if value is not None:
                setattr(self, name, value)
        if self.digest is not None and later.digest is not None:
            self.digest = hashlib.blake2b(self.digest + later.digest, digest_size=16).digest()
        else:
            self.digest = None
        if later.tags:
            self.tags = self.tags | later.tags
        if later.attrs:
            self.attrs = {**self.attrs, **later.attrs}


class RowProblem(Exception):
    """Why a row is refused; ``index``: its number's blind index when the phone cell read as
    a number (the refused row is then found and erased by ``contacts forget``)."""

    def __init__(self, code: str, index: bytes | None = None) -> None:
        self.code = code
        self.index = index


# A cell that may be a formula starts with one of these (the exact test is ``is_formula``): one
# search over the row's cells joined finds the rare candidates.
_FORMULA_LEAD = re.compile("(?:^|\x1f)[=+\\-@\t\r]")
# What a row's effect on its contact depends on besides its cells and the mapping: the rules
# of reading a cell and of applying a row (COALESCE, attributes merged, the zone rule). Change
# this with either, and every row is written again once.
_DIGEST_VERSION = "import-row:1"


def row_digester(
    keyring: KeyRing, tenant_id: int, plan: Sequence[Target | None]
) -> Callable[[str], bytes]:
    """The keyed digest of a row's cells joined by U+001F, under the tenant and the mapping:
    equal digests mean the same cells read the same way, so the same effect on the contact
    (an update is idempotent: COALESCE, attributes merged, tags united). Keyed (BLAKE2b, its
    key derived from the index key), as the cells hold personal data; 16 bytes."""
    mapping = json.dumps(
        [None if t is None else [t.field, t.attribute, t.type] for t in plan], ensure_ascii=False
    )
    key = keyring.indexer(f"tenant:{tenant_id}:{_DIGEST_VERSION}")(mapping)
    blake2b = hashlib.blake2b

    def digest(joined: str) -> bytes:
        return blake2b(joined.encode("utf-8"), key=key, digest_size=16).digest()

    return digest


_FIELD_PROBLEM = {
    "gender": "bad_gender",
    "birthday": "bad_birthday",
    "tags": "bad_tags",
    "time_zone": "bad_time_zone",
    "attr": "bad_attribute",
}
_EMPTY_ATTRS: dict[str, Any] = {}


def row_parser(
    plan: Sequence[Target | None],
    phone_at: int,
    index_of: Callable[[str], bytes],
    digest_of: Callable[[str], bytes] | None = None,
) -> Callable[[list[str]], Parsed]:
    """The parser of one row's cells into its contact, or :class:`RowProblem`, for one plan:
    the mapped columns are listed once, not looked up for every row. Rows share an empty
    attribute dict and an empty tag set (:meth:`Parsed.merge` replaces, never changes them).
    ``digest_of`` (:func:`row_digester`) gives each row its digest, unless a cell holds the
    separator itself (then two rows could join alike: no digest, always written)."""
    mapped = [
        (i, t.field, t.attribute or "", t.type)
        for i, t in enumerate(plan)
        if t is not None and i != phone_at
    ]
    parse_gender, parse_date, split_tags = F.parse_gender, F.parse_date, F.split_tags
    parse_value, lead = F.parse_value, _FORMULA_LEAD.search

    def parse(cells: list[str]) -> Parsed:
        joined = "\x1f".join(cells)
        count = len(cells)
        raw = cells[phone_at] if phone_at < count else ""
        if lead(joined):
            for i, c in enumerate(cells):
                if i != phone_at and is_formula(c):
                    try:
                        index = index_of(normalise_number(raw))
                    except NumberProblem:
                        index = None
                    raise RowProblem("formula", index)
        try:
            # A phone cell that is a number (a leading tab, "+86 (137) …", a no-break space
            # after +86) is data whatever it starts with: only one that is not is a formula.
            e164 = normalise_number(raw)
        except NumberProblem as exc:
            raise RowProblem("formula" if is_formula(raw) else exc.code) from None
        name = gender = province = city = zone = None
        born: date | None = None
        tags: set[str] | frozenset[str] = _NO_TAGS
        attrs = _EMPTY_ATTRS
        for i, kind, attribute, kind_of_value in mapped:
            if i >= count:
                continue
            text = cells[i].strip()
            if not text:
                continue
            try:
                if kind == "name":
                    if len(text) > MAX_NAME:
                        raise RowProblem("bad_name")
                    name = text
                elif kind == "gender":
                    gender = parse_gender(text)
                elif kind == "birthday":
                    born = parse_date(text)
                    if not 1900 <= born.year <= 2100:
                        raise ValueError(text)
                elif kind == "city":
                    city = text[:32]
                elif kind == "tags":
                    tags = tags | set(split_tags(text))
                elif kind == "attr":
                    if attrs is _EMPTY_ATTRS:
                        attrs = {}
                    attrs[attribute] = parse_value(kind_of_value, text)
                elif kind == "province":
                    province = text[:16]
                elif kind == "time_zone":
                    zone = check_zone(text)
            except ValueError:
                raise RowProblem(
                    _FIELD_PROBLEM.get(kind, "bad_attribute"), index_of(e164)
                ) from None
            except RowProblem as problem:  # (a name too long)
                problem.index = index_of(e164)
                raise
        digest = (
            digest_of(joined)
            if digest_of is not None and joined.count("\x1f") == count - 1
            else None
        )
        return Parsed(
            e164, index_of(e164), name, gender, born, province, city, zone, tags, attrs,
            digest=digest,
        )  # fmt: skip

    return parse


# -- results and progress --------------------------------------------------------------------------


@dataclass
class ImportOptions:
    mapping: dict[str, str] = field(default_factory=dict)
    consent_source: str | None = None
    consent_proof: str | None = None
    consent_purposes: tuple[str, ...] = ("marketing",)
    tags: tuple[str, ...] = ()
    actor: str = "cli"
    source: str = "import"
    batch_size: int = BATCH
    # Read and encrypt in other processes: None decides by file size (service.import_stream).
    pipeline: bool | None = None
    # How many reader processes a pipelined import starts: None, one per core (at most four).
    readers: int | None = None
    # SQLite: the rows a transaction holds before it commits (whole batches, at least one);
    # None decides by size, age and whether the next batch is ready (_hold). PostgreSQL commits
    # every batch (its locks are taken in blind-index order per batch).
    transaction_rows: int | None = None

    def check(self) -> None:
        if self.consent_source and not (self.consent_proof or "").strip():
            raise ValidationFailed(
                "A consent source needs its proof (--consent-proof): what the person agreed to",
                "记录同意来源时必须提供同意证明（--consent-proof）：对方同意了什么、在哪里同意",
            )
        for purpose in self.consent_purposes:
            if purpose not in ("marketing", "notification"):
                raise ValidationFailed(
                    "Consent purposes are marketing and notification", "同意用途须为营销或通知"
                )
        for tag in self.tags:
            if not tag or len(tag) > F.MAX_TAG:
                raise ValidationFailed("A tag is 1 to 64 characters", "标签长度须为 1–64 个字符")

    def as_json(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping,
            "consent_source": self.consent_source,
            "consent_proof": self.consent_proof,
            "consent_purposes": list(self.consent_purposes),
            "tags": list(self.tags),
        }


@dataclass
class ImportResult:
    import_id: int
    state: str = "running"
    rows: int = 0
    imported: int = 0
    updated: int = 0
    duplicates: int = 0
    invalid: int = 0
    suppressed: int = 0
    erased: int = 0  # numbers erased at the person's request, not imported again
    errors: list[dict[str, Any]] = field(default_factory=list)  # a sample
    columns: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    fraction: float = 0.0

    def counters(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "updated": self.updated,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "suppressed": self.suppressed,
            "erased": self.erased,
            "errors": self.errors,
            "columns": self.columns,
            "seconds": round(self.seconds, 3),
        }


# Live progress of the imports running in this process (the API and console poll it).
_live: dict[int, ImportResult] = {}
_live_lock = threading.Lock()


def live(import_id: int) -> ImportResult | None:
    with _live_lock:
        return _live.get(import_id)


# -- the job row -----------------------------------------------------------------------------------


def create_job(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    *,
    kind: str,
    filename: str,
    options: dict[str, Any],
    actor: str,
    sha256: str | None = None,
) -> int:
    result = conn.execute(
        TenantScope(tenant_id)
        .insert(contact_imports)
        .values(
            kind=kind,
            filename=filename[:255],
            file_sha256=sha256,
            state="pending",
            options=options,
            result={},
            actor=actor,
            created_at=clock.now(),
        )
        .returning(contact_imports.c.id)
    )
    return int(result.scalar_one())


#: The job kinds that are imports. The same table holds the number checks (kind ``numbers``,
#: :mod:`hongyan.contacts.number_status_jobs`), which the import views never show.
IMPORT_KINDS = ("contacts", "events")


def get_job(conn: Connection, tenant_id: int, import_id: int) -> dict[str, Any]:
    row = (
        conn.execute(
            TenantScope(tenant_id)
            .select(contact_imports)
            .where(contact_imports.c.id == import_id, contact_imports.c.kind.in_(IMPORT_KINDS))
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("No such import", "找不到该导入任务")
    job = dict(row)
    running = live(import_id)
    if running is not None and job["state"] in ("pending", "running"):
        job["state"] = "running"
        job["result"] = running.counters()
        job["progress"] = round(running.fraction, 4)
    else:
        job["progress"] = 1.0 if job["state"] == "done" else 0.0
    return job


def list_jobs(conn: Connection, tenant_id: int, limit: int = 20) -> list[dict[str, Any]]:
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(contact_imports)
        .where(contact_imports.c.kind.in_(IMPORT_KINDS))
        .order_by(contact_imports.c.id.desc())
        .limit(limit)
    ).mappings()
    return [dict(r) for r in rows]


def _set_job(engine: Engine, tenant_id: int, import_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(
            TenantScope(tenant_id)
            .update(contact_imports)
            .where(contact_imports.c.id == import_id)
            .values(**values)
        )


def error_rows_csv(conn: Connection, keyring: KeyRing, tenant_id: int, import_id: int) -> bytes:
    """The refused rows as a CSV to fix and import again: the file's own columns, then the
    line and the reason; formula-leading cells escaped. The phone column's cells are masked
    (``138****5678``; a cell without digits as it was): a full number is shown only by a data
    export, and the line number finds the row in the file."""
    job = get_job(conn, tenant_id, import_id)
    header = list(job["options"].get("header") or [])
    columns = job["options"].get("columns") or {}
    phones = {i for i, h in enumerate(header) if columns.get(h) == "phone"}
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(contact_import_errors)
        .where(contact_import_errors.c.import_id == import_id)
        .order_by(contact_import_errors.c.line)
    ).all()
    ctx = import_row_context(tenant_id)
    out: list[list[str]] = []
    width = len(header)
    for r in rows:
        cells = json.loads(keyring.decrypt(bytes(r.raw_cipher), ctx))
        for i in phones:
            if i < len(cells) and any(ch.isdecimal() for ch in cells[i]):
                cells[i] = mask_phone(cells[i])
        width = max(width, len(cells))
        en, zh = ROW_PROBLEMS.get(r.reason, (r.reason, r.reason))
        out.append([*cells, str(r.line), r.reason, f"{zh} / {en}"])
    header = header + [f"column{i + 1}" for i in range(len(header), width)]
    padded = [row[:-3] + [""] * (width - len(row) + 3) + row[-3:] for row in out]
    return csv_bytes([*header, "line", "reason", "message"], padded)


# -- the import ------------------------------------------------------------------------------------


class _Builder:
    """Builds a new contact's row from a parsed one: enrichment and encryption, no database."""

    def __init__(self, keyring: KeyRing, tenant_id: int, segments: SegmentTable) -> None:
        self.packer = contacts_packer()
        self.keyring = keyring
        self.tenant_id = tenant_id
        self.segments = segments
        self.phone_ctx = phone_context(tenant_id)
        self.seal_phone = keyring.sealer(self.phone_ctx)
        self.seal_name = keyring.sealer(name_context(tenant_id))
        self.seal_birthday = keyring.sealer(birthday_context(tenant_id))
        # Packed parts that repeat across rows (see packed_row). A number block's part is found
        # by its seven-digit prefix in a dense array of part numbers (1.4 MB, made on the first
        # row packed: a writer of a batch or of an API call packs none): there are some 2,400
        # distinct parts, where a dictionary by prefix held up to 130,000 copies (25 MB).
        self._part_of = array("H")  # prefix - FIRST -> part number (0: none)
        self._parts: list[bytes] = [b""]
        self._part_numbers: dict[bytes, int] = {}
        self._birth_parts: dict[date, bytes] = {}
        f = self.packer.field
        self._bytea, self._text = f("phone_cipher"), f("city")
        self._gender = {None: NULL_FIELD, "f": f("gender")("f"), "m": f("gender")("m")}

    def packed_row(self, p: Parsed) -> bytes:
        """``contacts_packer().pack(self.new_row(p))``, built directly: the parts that repeat (a
        number block's country, carrier and place; a birthday's month, day and decade) are packed
        once, and a Chinese mobile's mask is eleven known characters."""
        e164 = p.e164
        bytea, text = self._bytea, self._text
        if e164.startswith("+86"):
            national = e164[3:]
            slot = int(national[:7]) - FIRST
            if 0 <= slot < len(self._part_of) and (part := self._part_of[slot]):
                number = self._parts[part]
            else:
                number = self._pack_number(national, slot)
            masked = b"\x00\x00\x00\x0b" + f"{national[:3]}****{national[7:]}".encode()
        else:  # the general row, packed field by field
            row = self.new_row(p)
            return self.packer.pack(row)
        name, b, zone = p.name, p.birthday, p.time_zone
        if b is None:
            born = NULL_FIELD * 4
        else:
            born = self._birth_parts.get(b) or self._pack_birth(b)
            born = bytea(self.seal_birthday(b.isoformat())) + born
        return b"".join(
            (
                _PACKED_COUNT,
                _INDEX_LENGTH,
                p.index,
                bytea(self.seal_phone(e164)),
                masked,
                number,
                NULL_FIELD * 2
                if name is None
                else bytea(self.seal_name(name)) + text(mask_name(name)),
                self._gender[p.gender],
                born,
                NULL_FIELD if p.province is None else text(p.province),
                NULL_FIELD if p.city is None else text(p.city),
                text(to_json(p.attrs) if p.attrs else "{}"),
                NULL_FIELD if zone is None else text(zone),
                NULL_FIELD if p.digest is None else bytea(p.digest),
            )
        )

    def _pack_number(self, national: str, slot: int) -> bytes:
        place = self.segments.place(national)
        carrier = _BY_PREFIX4.get(national[:4]) or _BY_PREFIX.get(national[:3])
        values = ("CN", carrier, self.segments.is_virtual(national),
                  place.province if place else None, place.city if place else None)  # fmt: skip
        f = self.packer.field
        names = ("country", "carrier", "mvno", "number_province", "number_city")
        part = b"".join(
            NULL_FIELD if v is None else f(n)(v) for n, v in zip(names, values, strict=True)
        )
        if 0 <= slot < SLOTS:
            number = self._part_numbers.get(part)
            if number is None and len(self._parts) < 0xFFFF:
                number = self._part_numbers[part] = len(self._parts)
                self._parts.append(part)
            if number is not None:
                if not self._part_of:
                    self._part_of = array("H", bytes(2 * SLOTS))
                self._part_of[slot] = number
        return part

    def _pack_birth(self, b: date) -> bytes:
        f = self.packer.field
        part = (
            f("birth_month")(b.month) + f("birth_day")(b.day) + f("birth_decade")(b.year // 10 * 10)
        )
        if len(self._birth_parts) < _PART_CACHE:
            self._birth_parts[b] = part
        return part

    def new_row(self, p: Parsed) -> tuple[Any, ...]:
        """A new contact's values in :data:`NEW_COLUMNS` order, as the driver takes them."""
        e164 = p.e164
        if e164.startswith("+86"):  # the fast path: normalise() checked the segment
            national = e164[3:]
            place = self.segments.place(national)
            country, mvno = "CN", self.segments.is_virtual(national)
            masked = f"{national[:3]}****{national[7:]}"
            carrier = _BY_PREFIX4.get(national[:4]) or _BY_PREFIX.get(national[:3])
        else:
            place, country, mvno = None, country_of(e164), False
            masked, carrier = mask_phone(e164), carrier_of(e164)
        zone = p.time_zone or (None if country == "CN" else zone_of(e164))
        b = p.birthday
        name = p.name
        return (
            p.index,
            self.seal_phone(e164),
            masked,
            country,
            carrier,
            mvno,
            place.province if place else None,
            place.city if place else None,
            None if name is None else self.seal_name(name),
            mask_name(name) if name else None,
            p.gender,
            None if b is None else self.seal_birthday(b.isoformat()),
            b.month if b else None,
            b.day if b else None,
            b.year // 10 * 10 if b else None,
            p.province,
            p.city,
            to_json(p.attrs) if p.attrs else "{}",
            zone,
            p.digest,
        )


class _Writer(_Builder):
    """Writes one batch of merged contacts set-based, inside its transaction."""

    def __init__(
        self,
        conn: Connection,
        keyring: KeyRing,
        tenant_id: int,
        now: datetime,
        options: ImportOptions,
        segments: SegmentTable,
        blocked: set[bytes] | None = None,
    ) -> None:
        super().__init__(keyring, tenant_id, segments)
        self.conn = conn
        # The tenant's suppressed numbers (blind indexes), read once per import.
        self.blocked = blocked if blocked is not None else live_suppressions(conn, tenant_id, now)
        self.scope = TenantScope(tenant_id)
        self.now = now
        self.options = options

    def existing(
        self, keys: list[bytes], *, attrs: bool = True
    ) -> dict[bytes, tuple[int, dict[str, Any], bytes | None]]:
        """The contacts that exist: their ids, custom attributes (with ``attrs``; else ``{}``)
        and import digests."""
        columns = ("phone_index", "id", "import_digest", *(("attrs",) if attrs else ()))
        rows = fetch_in(self.conn, self.scope, contacts, columns, "phone_index", keys, per_key=True)
        return {
            r[0]: (int(r[1]), (r[3] or {}) if attrs else {}, None if r[2] is None else bytes(r[2]))
            for r in rows
        }

    def suppressed(self, keys: list[bytes]) -> set[bytes]:
        return {k for k in keys if k in self.blocked}

    def update_row(
        self, cid: int, attrs: dict[str, Any], row: tuple[Any, ...], new_attrs: dict[str, Any],
        given_zone: str | None = None,
    ) -> tuple[Any, ...]:  # fmt: skip
        """SQLite: the parameters of :data:`_SQLITE_UPDATE` for an existing contact from a
        prepared :meth:`new_row` (``given_zone``: the time zone the file gave, which replaces
        a stored one), in the driver's own types, but the time and the tenant."""
        merged = {**attrs, **new_attrs} if new_attrs else attrs
        return (
            *[sqlite_blob(row[i]) for i in _UPDATED_AT],
            given_zone,
            row[_ZONE_AT],
            to_json(merged) if merged else "{}",
            sqlite_blob(row[_DIGEST_AT]),
            cid,
        )

    def insert(self, rows: Sequence[tuple[Any, ...] | bytes]) -> None:
        """New contacts: :meth:`new_row` tuples, or (PostgreSQL) the same packed."""
        if rows and isinstance(rows[0], bytes):
            constants = {
                "source": self.options.source,
                "created_at": self.now,
                "updated_at": self.now,
            }
            copy_packed(self.conn, self.scope, self.packer, rows, constants)  # type: ignore[arg-type]
        elif rows:
            insert_rows(
                self.conn,
                self.scope,
                contacts,
                NEW_COLUMNS,
                rows,
                {"source": self.options.source, "created_at": self.now, "updated_at": self.now},
                raw=True,
            )

    def update(self, rows: list[tuple[Any, ...]]) -> None:
        """SQLite: existing contacts from :meth:`update_row` parameters, one driver-level
        executemany (through SQLAlchemy each row's parameters were compiled and processed one
        by one, half a re-import's writing time). PostgreSQL's packed rows go through
        :meth:`update_packed`."""
        if not rows:
            return
        if self.conn.dialect.name != "sqlite":
            raise RuntimeError("unpacked contact rows are SQLite's; PostgreSQL's come packed")
        stamp = to_driver("sqlite", contacts, "updated_at", self.now)
        dbapi = self.conn.connection.dbapi_connection
        assert dbapi is not None
        cur = dbapi.cursor()
        try:
            cur.executemany(_SQLITE_UPDATE, [(stamp, *r, self.tenant_id) for r in rows])
        finally:
            cur.close()

    def ids(self, keys: list[bytes]) -> dict[bytes, int]:
        rows = fetch_in(
            self.conn, self.scope, contacts, ("id", "phone_index"), "phone_index", keys,
            per_key=True,
        )  # fmt: skip
        return {index: int(cid) for cid, index in rows}

    def update_packed(self, derived: list[bytes], given: list[bytes]) -> None:
        """PostgreSQL: existing contacts updated from their packed rows, as :meth:`update` would
        (``given``: rows whose time zone the file gave). The rows are copied into a staging
        table and merged by the server: no row is unpacked, no stored attributes read or
        written back by this process, and each contact is found by its blind index, one index
        descent each. The contacts are locked first, in blind-index order (two imports of
        overlapping files lock in the same order, so neither waits on the other in a cycle),
        by a statement of its own: the update's snapshot, taken after, then sees the newest
        version of a contact someone changed meanwhile, which a lock taken inside the update
        did not (its tuple-id join then met a version too new for its snapshot, and the
        contact was silently skipped). (Arrays of values had cost this process some 60 µs a
        contact to dump.)"""
        if not derived and not given:
            return
        dbapi = self.conn.connection.dbapi_connection
        assert dbapi is not None
        with dbapi.cursor() as cur:  # type: ignore[attr-defined]  # psycopg
            cur.execute(_STAGE_UPDATES)
        for rows, source in ((derived, "derived"), (given, "given")):
            rows.sort()  # by blind index (each row starts with its field count and the index)
            constants = {"source": source, "created_at": self.now, "updated_at": self.now}
            copy_packed(self.conn, self.scope, self.packer, rows, constants, into=_STAGING)
        with dbapi.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(_PG_LOCK_STAGED, (self.tenant_id,))
            cur.execute(_PG_STAGED_UPDATE, (self.now, self.tenant_id, self.tenant_id))
            cur.execute(f"DROP TABLE {_STAGING}")

    def tags(self, pairs: list[tuple[int, str]], *, fresh: bool) -> None:
        """Tag contacts; ``fresh``: contacts made in this batch, which have no tags yet."""
        if not pairs:
            return
        if fresh:
            insert_rows(
                self.conn,
                self.scope,
                contact_tags,
                ("contact_id", "tag"),
                pairs,
                {"created_at": self.now},
            )
        elif self.conn.dialect.name == "postgresql":
            # One statement for the batch: as an executemany (with RETURNING, to count) every
            # pair was a statement of its own, a quarter of a re-import's writing process.
            dbapi = self.conn.connection.dbapi_connection
            assert dbapi is not None
            ids, tags = [cid for cid, _ in pairs], [tag for _, tag in pairs]
            with dbapi.cursor() as cur:  # type: ignore[attr-defined]  # psycopg
                cur.execute(_PG_TAGS, (self.tenant_id, self.now, ids, tags), binary=True)
        else:
            self.scope.insert_ignore(
                self.conn,
                contact_tags,
                [{"contact_id": cid, "tag": tag, "created_at": self.now} for cid, tag in pairs],
            )

    def consent(self, keys: list[bytes]) -> None:
        """Grant the chosen purposes to these (unsuppressed) numbers. A marketing revocation
        suppressed its number, so those are not here; a number whose latest notification
        record is a revocation is left without a new notification grant: an import never
        revives a consent someone withdrew."""
        o = self.options
        if not keys or not o.consent_source:
            return
        pairs = [(k, purpose) for k in keys for purpose in o.consent_purposes]
        others = [p for p in o.consent_purposes if p != "marketing"]
        if others:
            latest: dict[tuple[bytes, str], tuple[Any, int, str]] = {}
            for k, purpose, at, rid, action in fetch_in(
                self.conn, self.scope, consent_records,
                ("phone_index", "purpose", "at", "id", "action"), "phone_index", keys,
            ):  # fmt: skip
                key = (bytes(k), purpose)
                if key not in latest or (at, rid) > latest[key][:2]:
                    latest[key] = (at, rid, action)
            withdrawn = {key for key, (_at, _id, action) in latest.items() if action == "revoked"}
            pairs = [(k, p) for k, p in pairs if p == "marketing" or (k, p) not in withdrawn]
            if not pairs:
                return
        constants = {
            "action": "granted",
            "source": o.consent_source[:32],
            "proof": o.consent_proof or "",
            "actor": o.actor,
            "at": self.now,
        }
        if self.conn.dialect.name == "postgresql":
            # Packed here: a quarter of insert_rows' client CPU per row (0.5 µs against 2.2).
            packer = consent_packer()
            pack = packer.field("purpose")
            head = packer.count + _INDEX_LENGTH
            parts = {purpose: pack(purpose) for purpose in o.consent_purposes}
            rows = [head + k + parts[purpose] for k, purpose in pairs]
            copy_packed(self.conn, self.scope, packer, rows, constants)
            return
        insert_rows(
            self.conn, self.scope, consent_records, ("phone_index", "purpose"), pairs, constants
        )


def live_suppressions(conn: Connection, tenant_id: int, now: datetime) -> set[bytes]:
    """Blind indexes of the tenant's numbers that are suppressed now (for any reason)."""
    s = suppressions.c
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(suppressions, s.phone_index)
        .where(sa.or_(s.expires_at.is_(None), s.expires_at > now))
    ).scalars()
    return {bytes(r) for r in rows}


# PostgreSQL: packed rows of existing contacts are staged in a temporary table of the columns
# they fill (``source`` says whether the file gave the time zone), their contacts locked in
# blind-index order, then merged by one statement: each row finds its contact by blind index
# (LATERAL … OFFSET 0 keeps the staged rows the outer side, one index descent each, whatever
# the planner believes of the contacts), then reaches it by its tuple id. Custom attributes
# merge on the server (later keys win, as in ``update_row``; attributes stored as anything but
# an object are replaced, as ``update_row`` does). Rows whose contact had the same digest at
# the writer's lookup are not staged (:func:`consume`); every staged contact is locked and
# written, so the lock order holds (a reviewer showed that leaving equal-digest contacts
# unlocked let a contact changed meanwhile be locked by the update, out of order: a
# deadlock between two imports).
_STAGING = "hongyan_import_updates"
_STAGE_UPDATES = (
    f"CREATE TEMPORARY TABLE {_STAGING} ON COMMIT DROP AS SELECT "  # noqa: S608 (our own names)
    + ", ".join((*NEW_COLUMNS, "tenant_id", "source", "created_at", "updated_at"))
    + " FROM contacts WITH NO DATA"
)
_PG_LOCK_STAGED = f"""
SELECT count(*) FROM (SELECT phone_index FROM {_STAGING} ORDER BY phone_index OFFSET 0) AS u
CROSS JOIN LATERAL (
    SELECT 1 FROM contacts AS t WHERE t.tenant_id = %s AND t.phone_index = u.phone_index
    OFFSET 0 FOR UPDATE
) AS t
"""  # noqa: S608 (our own names)
_PG_STAGED_UPDATE = f"""
UPDATE contacts AS c SET
    name_cipher = COALESCE(v.name_cipher, c.name_cipher),
    name_masked = COALESCE(v.name_masked, c.name_masked),
    gender = COALESCE(v.gender, c.gender),
    birthday_cipher = COALESCE(v.birthday_cipher, c.birthday_cipher),
    birth_month = COALESCE(v.birth_month, c.birth_month),
    birth_day = COALESCE(v.birth_day, c.birth_day),
    birth_decade = COALESCE(v.birth_decade, c.birth_decade),
    province = COALESCE(v.province, c.province),
    city = COALESCE(v.city, c.city),
    time_zone = CASE WHEN v.source = 'given' THEN v.time_zone
                     ELSE COALESCE(c.time_zone, v.time_zone) END,
    attrs = CASE WHEN v.attrs::text = '{{}}' THEN c.attrs
                 WHEN json_typeof(c.attrs) = 'object'
                 THEN (c.attrs::jsonb || v.attrs::jsonb)::json
                 ELSE v.attrs END,
    import_digest = v.import_digest,
    updated_at = %s
FROM (
    SELECT u.*, t.at FROM {_STAGING} AS u CROSS JOIN LATERAL (
        SELECT t.ctid AS at FROM contacts AS t
        WHERE t.tenant_id = %s AND t.phone_index = u.phone_index OFFSET 0
    ) AS t
) AS v
WHERE c.ctid = v.at AND c.tenant_id = %s
"""  # noqa: S608 (our own names)

# Tags of existing contacts, those they have already left alone (parameters: the tenant, the
# time, the contacts' ids and the tags, as two arrays of pairs).
_PG_TAGS = """
INSERT INTO contact_tags (tenant_id, created_at, contact_id, tag)
SELECT %s, %s, p.contact_id, p.tag FROM unnest(%s::bigint[], %s::text[]) AS p(contact_id, tag)
ON CONFLICT DO NOTHING
"""

# What an update may change (COALESCE: an empty cell keeps the stored value), and on SQLite
# how (parameters: the time, then _Writer.update_row's values, then the tenant). A zone given
# in the file wins; one derived from the number only fills a gap.
_UPDATED = (
    "name_cipher", "name_masked", "gender", "birthday_cipher", "birth_month", "birth_day",
    "birth_decade", "province", "city",
)  # fmt: skip
_UPDATED_AT = [NEW_COLUMNS.index(name) for name in _UPDATED]
_ZONE_AT = NEW_COLUMNS.index("time_zone")
_DIGEST_AT = NEW_COLUMNS.index("import_digest")
_SQLITE_UPDATE = (
    "UPDATE contacts SET updated_at = ?, "  # noqa: S608 (our own column names)
    + ", ".join(f"{name} = COALESCE(?, {name})" for name in _UPDATED)
    + ", time_zone = COALESCE(?, time_zone, ?), attrs = ?, import_digest = ?"
    + " WHERE id = ? AND tenant_id = ?"
)


# One number of a batch, merged and encrypted, ready to insert or update: (blind index, first
# appearance in the file?, tags, the NEW_COLUMNS row as the driver takes it, the time zone the
# file gave). A plain tuple of plain values: batches cross a process boundary as marshal bytes
# (:func:`_batch_bytes`). For PostgreSQL the row is packed (:func:`contacts_packer`): a bytes
# object per row crosses the boundary at a fraction of the cost of a tuple of twenty values.
# The attributes travel only inside the row, as JSON text (an update reads them back from it):
# a dict per row cost the writer some 1.5 µs more to unpickle.
Prepared = tuple[bytes, bool, tuple[str, ...], tuple[Any, ...] | bytes, str | None]
_packer: list[PackedRows] = []
_consent_packer: list[PackedRows] = []


def consent_packer() -> PackedRows:
    """Consent grants packed for PostgreSQL's binary COPY: the blind index and the purpose per
    row, the rest constant for an import."""
    if not _consent_packer:
        tail = ("action", "source", "proof", "actor", "at")
        _consent_packer.append(PackedRows(consent_records, ("phone_index", "purpose"), tail))
    return _consent_packer[0]


def contacts_packer() -> PackedRows:
    """New contacts' rows packed for PostgreSQL's binary COPY (:data:`NEW_COLUMNS`; the writer
    adds the tenant, the source and the times)."""
    if not _packer:
        _packer.append(PackedRows(contacts, NEW_COLUMNS, ("source", "created_at", "updated_at")))
    return _packer[0]


@dataclass
class Batch:
    """What the producer hands the writer: a batch of rows, parsed, merged and encrypted."""

    line: int  # the last line read
    fraction: float
    rows: int = 0
    invalid: int = 0
    duplicates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # for the sample
    # Refused rows: line, reason, the sealed row, its number's blind index if it has one.
    bad: list[tuple[int, str, bytes, bytes | None]] = field(default_factory=list)
    items: list[Prepared] = field(default_factory=list)
    # Numbers (first 8 bytes of the blind index) of lines a resumed import stored before.
    stored: list[int] = field(default_factory=list)


def _batch_bytes(batch: Batch) -> bytes:
    """A batch as one bytes object for a reader's queue. Its values are plain (bytes, str, int,
    bool, None, tuples, lists, dicts), which ``marshal`` writes and reads at a third of
    pickle's cost: a batch of SQLite rows took 2.0 µs a row to pickle and 3.4 to unpickle in
    the writing process, 0.8 and 1.1 with marshal (packed rows: 0.54 + 0.47 → 0.30 + 0.23).
    Both ends are the same interpreter, and the bytes never leave the import."""
    return marshal.dumps(tuple(getattr(batch, f.name) for f in fields(Batch)))


def _batch_of(data: bytes) -> Batch:
    # From our own reader process over its private pipe (which multiprocessing itself
    # fills with pickles), never from a file or a client.
    return Batch(*marshal.loads(data))  # noqa: S302


def produce(
    source: Table,
    plan: Sequence[Target | None],
    keyring: KeyRing,
    tenant_id: int,
    options: ImportOptions,
    segments: SegmentTable,
    *,
    skip: int = 0,
    packed: bool = False,
    part: tuple[int, int] = (0, 1),
) -> Iterator[Batch]:
    """Read, check, merge and encrypt the file's rows, a batch at a time (no database);
    ``packed``: rows for PostgreSQL (:data:`Prepared`). ``part`` (j, n): build only batches j,
    j + n, j + 2n … (reader j of n; every reader reads the whole file, so all agree where a batch
    ends). A number repeated inside a batch is merged here; one met in an earlier batch is marked
    by :func:`in_file_order`, which must see every batch in order. ``skip``: lines a resumed
    import stored; their numbers come first, as a batch of ``stored`` numbers (from reader 0)."""
    j, n = part
    phone_at = next(i for i, t in enumerate(plan) if t is not None and t.field == "phone")
    row_ctx = import_row_context(tenant_id)
    builder = _Builder(keyring, tenant_id, segments)
    size = max(1, options.batch_size)
    parse = row_parser(
        plan, phone_at, keyring.indexer(phone_context(tenant_id)),
        row_digester(keyring, tenant_id, plan),
    )  # fmt: skip
    seal_row = keyring.sealer(row_ctx)
    pending: dict[bytes, Parsed] = {}
    stored: list[int] = []
    batch = Batch(0, 0.0)
    line = 0
    number = 0  # of the batch being read
    mine = j == 0

    def close() -> Batch:
        # Parsed rows are let go as their rows are built (the writer sorts the batch anyway),
        # so a reader never holds a batch twice over.
        take = pending.popitem
        if packed:
            row = builder.packed_row
            batch.items = [
                (k, True, tuple(p.tags), row(p), p.time_zone)
                for k, p in (take() for _ in range(len(pending)))
            ]
        else:
            batch.items = [
                (k, True, tuple(p.tags), builder.new_row(p), p.time_zone)
                for k, p in (take() for _ in range(len(pending)))
            ]
        batch.line = line
        batch.fraction = source.fraction()
        return batch

    for line, cells in source.rows:
        if line <= skip:  # stored by the run being resumed: only remember its numbers
            if j == 0:
                with contextlib.suppress(RowProblem):
                    stored.append(number_key(parse(cells).index))
                if len(stored) >= size:  # a batch's worth at a time: bounded memory
                    yield Batch(0, 0.0, stored=stored)
                    stored = []
            continue
        if stored:
            yield Batch(0, 0.0, stored=stored)
            stored = []
        batch.rows += 1
        if mine:
            try:
                parsed = parse(cells)
            except RowProblem as problem:
                batch.invalid += 1
                batch.bad.append((line, problem.code, seal_row(to_json(cells)), problem.index))
                if len(batch.errors) < SAMPLE_ERRORS:
                    en, zh = ROW_PROBLEMS[problem.code]
                    batch.errors.append(
                        {"line": line, "reason": problem.code, "message": {"zh": zh, "en": en}}
                    )
            else:
                earlier = pending.get(parsed.index)
                if earlier is None:
                    pending[parsed.index] = parsed
                else:
                    batch.duplicates += 1
                    earlier.merge(parsed)
        if batch.rows >= size:
            if mine:
                yield close()
            batch = Batch(0, 0.0)
            number += 1
            mine = number % n == j
    if stored:
        yield Batch(0, 0.0, stored=stored)
    if mine:
        yield close()


#: Distinct numbers :class:`SeenNumbers` keeps in a set (some 6 MB) before it moves them to a
#: temporary database on disk. Measured on a million-row file, all on disk from the start
#: imported as fast as all in a set (PostgreSQL 41 against 48 s, SQLite 72 against 76 s, one
#: run each) and took 58 MB less: only small imports stay in memory, where no file is needed.
SEEN_IN_MEMORY = 100_000
#: The page cache of that database: what it may take in memory, in KiB.
SEEN_CACHE_KIB = 16 * 1024


class SeenNumbers:
    """The numbers an import has met, by the first 8 bytes of each blind index (a signed 64-bit
    key, as SQLite's integers are). Up to :data:`SEEN_IN_MEMORY` keys live in a set; past it
    they move to a private temporary SQLite database on disk (an integer B-tree with a page
    cache of :data:`SEEN_CACHE_KIB`, deleted when closed), so what an import keeps for a whole
    file stays bounded however many numbers it holds. Looked up a batch at a time."""

    def __init__(self, in_memory: int | None = None) -> None:
        self.in_memory = SEEN_IN_MEMORY if in_memory is None else in_memory
        self._set: set[int] = set()
        self._db: sqlite3.Connection | None = None

    def __len__(self) -> int:
        if self._db is None:
            return len(self._set)
        return int(self._db.execute("SELECT count(*) FROM seen").fetchone()[0])

    def first(self, keys: Sequence[int]) -> list[bool]:
        """For each key in order, whether it is met here for the first time (it is now seen)."""
        if self._db is None:
            seen, out = self._set, []
            for key in keys:
                if key in seen:
                    out.append(False)
                else:
                    seen.add(key)
                    out.append(True)
            if len(seen) > self.in_memory:
                self._spill()
            return out
        db = self._db
        db.execute("DELETE FROM batch")
        db.executemany("INSERT OR IGNORE INTO batch (k) VALUES (?)", ((k,) for k in keys))
        met = {k for (k,) in db.execute("SELECT k FROM batch JOIN seen USING (k)")}
        db.execute("INSERT OR IGNORE INTO seen (k) SELECT k FROM batch")
        db.commit()
        out = []
        for key in keys:
            out.append(key not in met)
            met.add(key)
        return out

    def _spill(self) -> None:
        # An empty file name: a private database on disk, removed when the connection closes.
        db = sqlite3.connect("", isolation_level="DEFERRED")
        db.execute(f"PRAGMA cache_size = -{int(SEEN_CACHE_KIB)}")
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("CREATE TABLE seen (k INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE batch (k INTEGER PRIMARY KEY)")
        db.executemany("INSERT INTO seen (k) VALUES (?)", ((k,) for k in sorted(self._set)))
        db.commit()
        self._set = set()
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._set = set()


def number_key(index: bytes) -> int:
    """The key :class:`SeenNumbers` keeps for a blind index."""
    return int.from_bytes(index[:8], signed=True)


def in_file_order(batches: Iterable[Batch]) -> Generator[Batch, None, None]:
    """The batches of :func:`produce`, in file order, with each number met in an earlier batch
    (or stored by the run being resumed) marked as a repeat: not its first appearance, and one
    more duplicate. What it keeps of every distinct number is bounded (:class:`SeenNumbers`)."""
    seen = SeenNumbers()
    try:
        for batch in batches:
            if batch.stored:
                seen.first(batch.stored)
                continue
            items = batch.items
            firsts = seen.first([number_key(item[0]) for item in items])
            for i, new in enumerate(firsts):
                if not new:
                    item = items[i]
                    items[i] = (item[0], False, *item[2:])
                    batch.duplicates += 1
            yield batch
    finally:
        seen.close()


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]


_ATTRS_AT = NEW_COLUMNS.index("attrs")
_PACKED_COUNT = struct.pack(">h", len(NEW_COLUMNS) + 4)  # and the tenant, source and times
_INDEX_LENGTH = struct.pack(">i", 32)
_PACKED_DIGEST = struct.pack(">i", 16)  # the length of a packed row's digest, its last field
_PART_CACHE = 1 << 17


def consume(
    w: _Writer,
    batch: Batch,
    result: ImportResult,
    extra_tags: tuple[str, ...],
    *,
    absent: bool = False,
) -> None:
    """Write one batch set-based and count it. ``absent``: the tenant had no contacts when the
    import began, so only numbers repeated from earlier lines of the file are looked up (a
    contact made meanwhile by someone else makes the insert fail; see :func:`_write_batch`)."""
    result.rows += batch.rows
    result.invalid += batch.invalid
    result.duplicates += batch.duplicates
    result.errors.extend(batch.errors[: max(0, SAMPLE_ERRORS - len(result.errors))])
    _errors(w.conn, w.scope, result.import_id, batch.bad)
    if not batch.items:
        return
    keys = [item[0] for item in batch.items]
    packed = isinstance(batch.items[0][3], bytes)  # PostgreSQL's: updated by the server
    found = w.existing(
        [item[0] for item in batch.items if not item[1]] if absent else keys, attrs=not packed
    )
    blocked = w.suppressed(keys)
    # (an erased number is suppressed: only those are looked up, mostly none)
    erased = erasures(w.conn, w.tenant_id, [k for k in blocked if k not in found])
    new_rows: list[tuple[bytes, tuple[Any, ...] | bytes]] = []
    updates, grant = [], []
    derived: list[bytes] = []
    given: list[bytes] = []
    left_out: set[bytes] = set()
    for index, first, _tags, row, zone in batch.items:
        hit = found.get(index)
        if hit is None and index in erased:  # not brought back (a contact made since is)
            result.erased += first
            left_out.add(index)
            continue
        if first:
            if hit is None:
                result.imported += 1
            else:
                result.updated += 1
            if index in blocked:
                result.suppressed += 1
            else:
                grant.append(index)
        if hit is None:
            new_rows.append((index, row))
        elif isinstance(row, bytes):
            # The digest is the packed row's last field: a row its contact last had (at this
            # lookup) is not staged. A change someone makes after the lookup stands: as if it
            # came after this import, whose update would have changed nothing.
            if hit[2] is None or row[-20:] != _PACKED_DIGEST + hit[2]:
                (derived if zone is None else given).append(row)
        elif hit[2] is None or hit[2] != row[_DIGEST_AT]:  # else the contact has it already
            attrs = json.loads(row[_ATTRS_AT])
            updates.append(w.update_row(hit[0], hit[1], row, attrs, zone))
    # In key order: consecutive B-tree inserts land on the same and neighbouring index pages.
    new_rows.sort(key=_first)
    grant.sort()
    w.insert([row for _, row in new_rows])
    w.update(updates)
    w.update_packed(derived, given)
    tagged = [
        (item[0], set(item[2]) | set(extra_tags))
        for item in batch.items
        if (item[2] or extra_tags) and item[0] not in left_out
    ]
    if tagged:
        old = [(found[k][0], tag) for k, tags in tagged if k in found for tag in sorted(tags)]
        w.tags(old, fresh=False)
        missing = [k for k, _ in tagged if k not in found]
        if missing:
            ids = w.ids(missing)
            w.tags(
                [(ids[k], tag) for k, tags in tagged if k in ids for tag in sorted(tags)],
                fresh=True,
            )
    w.consent(grant)


_COUNTERS = ("rows", "imported", "updated", "duplicates", "invalid", "suppressed", "erased")


def _write_batch(
    w: _Writer, batch: Batch, result: ImportResult, extra_tags: tuple[str, ...], absent: bool
) -> bool:
    """:func:`consume`, taking the shortcut of a tenant that had no contacts when the import
    began (``absent``) in a savepoint: if someone else made a contact for one of the batch's
    numbers meanwhile (the API, an event), its insert fails, and the batch is written again
    looking every number up, as is every later batch. Returns whether the shortcut still holds."""
    if not absent:
        consume(w, batch, result, extra_tags)
        return False
    counted = {name: getattr(result, name) for name in _COUNTERS}
    sampled = len(result.errors)
    dbapi = w.conn.dialect.dbapi
    assert dbapi is not None
    try:
        with w.conn.begin_nested():
            consume(w, batch, result, extra_tags, absent=True)
        return True
    except (sa.exc.IntegrityError, dbapi.IntegrityError):
        for name, value in counted.items():
            setattr(result, name, value)
        del result.errors[sampled:]
        consume(w, batch, result, extra_tags)
        return False


@dataclass(frozen=True)
class Pipeline:
    """Run :func:`produce` in a child process (the file at ``path``), so parsing and encryption
    use the second core while this process writes; ``keys`` rebuild the key ring there."""

    path: str
    size: int
    keys: tuple[str, str, str]  # data keys, active key, index key
    memory_mb: int | None = None  # the import's memory budget (:func:`reader_count`)


def run(
    engine: Engine,
    keyring: KeyRing,
    clock: Clock,
    tenant_id: int,
    source: Table,
    options: ImportOptions,
    *,
    import_id: int,
    progress: Callable[[ImportResult], None] | None = None,
    resume: bool = False,
    claimed: bool = False,
    pipeline: Pipeline | None = None,
) -> ImportResult:
    """Import ``source`` as job ``import_id`` (made by :func:`create_job`), in transactions of
    whole batches (:func:`_hold`), each also recording how far the import got. ``resume``: go
    on from the last committed batch of a failed run of the same file; the job is taken from
    ``failed`` to ``running`` in one conditional update, so of two resumes at once (the CLI's
    ``--resume`` beside the console's button) one runs and the other is refused. ``claimed``:
    the API or console already moved it to ``pending`` for this run (the state it is taken from)."""
    options.check()
    started = time.perf_counter()
    result = ImportResult(import_id)
    skip = 0
    if resume:
        with engine.begin() as conn:
            job = get_job(conn, tenant_id, import_id)
            done = job["result"] or {}
            taken = (
                conn.execute(
                    TenantScope(tenant_id)
                    .update(contact_imports)
                    .where(
                        contact_imports.c.id == import_id,
                        contact_imports.c.state == ("pending" if claimed else "failed"),
                    )
                    .values(state="running", started_at=clock.now(), error=None)
                ).rowcount
                if done.get("line")
                else 0
            )
        if not taken:
            if job["state"] in ("running", "pending"):
                raise ValidationFailed(
                    "This import is already running or being resumed",
                    "该导入正在进行或已在继续导入",
                )
            raise ValidationFailed(
                "Only an import that failed after storing some rows can be resumed",
                "只有中途失败、已保存部分数据的导入才能继续",
            )
        skip = int(done["line"])
        for name in _COUNTERS:
            setattr(result, name, int(done.get(name, 0)))
        result.errors = list(done.get("errors", []))
    with _live_lock:
        _live[import_id] = result
    if not resume:
        _set_job(engine, tenant_id, import_id, state="running", started_at=clock.now(), error=None)
    opened: list[Generator[Batch, None, None]] = []
    try:
        _run(
            engine, keyring, clock, tenant_id, source, options, result, progress, started, skip,
            pipeline, opened,
        )  # fmt: skip
    except HongyanError as exc:
        result.state = "failed"
        _set_job(
            engine, tenant_id, import_id, state="failed", error=exc.body(),
            finished_at=clock.now(),
        )  # fmt: skip
        raise
    except BaseException:
        result.state = "failed"
        failure = ValidationFailed(
            "The import stopped on an internal error; the batches stored so far stay, and the "
            "import can be resumed",
            "导入因内部错误中止；已保存的批次保留，可继续导入",
        ).body()
        failure["code"] = "import_failed"
        _set_job(
            engine, tenant_id, import_id, state="failed", error=failure,
            finished_at=clock.now(),
        )  # fmt: skip
        raise
    finally:
        for generator in opened:  # (a failed run's traceback would keep them waiting)
            generator.close()
        with _live_lock:
            _live.pop(import_id, None)
    return result


def _errors(
    conn: Connection,
    scope: TenantScope,
    import_id: int,
    bad: list[tuple[int, str, bytes, bytes | None]],
) -> None:
    if bad:
        insert_rows(
            conn,
            scope,
            contact_import_errors,
            ("line", "reason", "raw_cipher", "phone_index"),
            bad,
            {"import_id": import_id},
        )


def _hold(options: ImportOptions, rows: int, seconds: float, probe: _Probe) -> bool:
    """SQLite: whether the open transaction takes the next batch too. Each transaction stores
    whole batches and how far the import got (the line and the counters), so a failure rolls
    back to the last commit and a resumed run starts there. A commit costs much on SQLite:
    random blind indexes dirty pages all over their indexes in every batch, and each commit
    writes those pages to the WAL again; holding four batches made a million-row import 13 %
    faster at the same memory. But the transaction holds the single write lock, which the
    dispatcher and the console wait for (busy_timeout: ten seconds): so it goes on only while
    it is young, under :data:`SQLITE_TRANSACTION_ROWS`, and the next batch is already waiting
    in a reader's queue (never while one is being read: an XLSX batch read in-process, or a
    reader behind the writer, had kept the lock for seconds). ``transaction_rows`` fixes the
    size instead (tests)."""
    if options.transaction_rows:
        return rows < options.transaction_rows
    return rows < SQLITE_TRANSACTION_ROWS and seconds < SQLITE_TRANSACTION_SECONDS and probe.ready()


def _run(
    engine: Engine,
    keyring: KeyRing,
    clock: Clock,
    tenant_id: int,
    source: Table,
    options: ImportOptions,
    result: ImportResult,
    progress: Callable[[ImportResult], None] | None,
    started: float,
    skip: int,
    pipeline: Pipeline | None,
    opened: list[Generator[Batch, None, None]],
) -> None:
    scope = TenantScope(tenant_id)
    now = clock.now()
    with engine.connect() as conn:
        definitions = F.attribute_definitions(conn, tenant_id)
        blocked = live_suppressions(conn, tenant_id, now)
    plan = plan_mapping(source.header, options.mapping, definitions)
    result.columns = describe_mapping(source.header, plan)
    packed = engine.dialect.name == "postgresql"
    probe = _Probe()
    if pipeline is None:
        batches = in_file_order(
            produce(
                source, plan, keyring, tenant_id, options, segment_table(), skip=skip,
                packed=packed,
            )
        )  # fmt: skip
    else:
        readers = _from_readers(pipeline, tenant_id, plan, options, skip, packed, probe)
        opened.append(readers)  # closed by run(), which stops the readers, however it ends
        batches = in_file_order(readers)
    opened.append(batches)  # and its temporary database of numbers met, on this thread
    # The first batch comes once the whole file was read through (pipelined, by _from_readers
    # while its readers start), so a broken file stores nothing, not even the attribute
    # definitions of its mapping.
    first = next(batches, None)
    with engine.begin() as conn:
        for t in plan:
            if t is not None and t.field == "attr":
                F.define(conn, clock, tenant_id, t.attribute or "", t.type)
        conn.execute(
            scope.update(contact_imports)
            .where(contact_imports.c.id == result.import_id)
            .values(
                options={**options.as_json(), "header": source.header, "columns": result.columns}
            )
        )
    extra_tags = tuple(options.tags)
    line = skip
    with engine.connect() as conn:  # a first import need not look its numbers up
        absent = (
            skip == 0
            and conn.execute(scope.select(contacts, contacts.c.id).limit(1)).first() is None
        )
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        conn.execution_options(**{BEGIN_IMMEDIATE: True})  # SQLite: as engine.begin() does
        held, began = 0, 0.0
        for batch in itertools.chain([first] if first else [], batches):
            if batch.rows == 0 and not batch.items:  # (the last batch, when a full one ended)
                continue
            if not conn.in_transaction():
                conn.begin()
                began = time.monotonic()
                if sqlite:
                    # A 32 MB page cache (128 MB was no faster: the operating system's cache
                    # serves the rest), and a WAL that holds several transactions before a
                    # checkpoint copies them into the database, so a page rewritten by many is
                    # checkpointed (and synced) once. Reset when done.
                    conn.exec_driver_sql("PRAGMA cache_size = -32768")
                    conn.exec_driver_sql("PRAGMA wal_autocheckpoint = 25000")
            writer = _Writer(conn, keyring, tenant_id, now, options, segment_table(), blocked)
            absent = _write_batch(writer, batch, result, extra_tags, absent)
            line = max(line, batch.line)
            result.fraction = batch.fraction
            result.seconds = time.perf_counter() - started
            conn.execute(  # how far the import got, committed with the batches it describes
                scope.update(contact_imports)
                .where(contact_imports.c.id == result.import_id)
                .values(result={**result.counters(), "line": line})
            )
            held += max(1, batch.rows)
            if not (sqlite and _hold(options, held, time.monotonic() - began, probe)):
                conn.commit()
                held = 0
                if progress:
                    progress(result)
        if conn.in_transaction():
            conn.commit()
            if progress:
                progress(result)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:  # back to the defaults for the pooled connection
            conn.exec_driver_sql("PRAGMA wal_autocheckpoint = 1000")
            conn.exec_driver_sql("PRAGMA cache_size = -2000")
    if result.rows == 0:
        err = ImportFileError("The file has a header but no data rows", "文件只有表头，没有数据行")
        err.code = "import_empty"
        raise err
    result.state = "done"
    result.seconds = time.perf_counter() - started
    result.fraction = 1.0
    with engine.begin() as conn:
        conn.execute(
            scope.update(contact_imports)
            .where(contact_imports.c.id == result.import_id)
            .values(
                state="done",
                result={**result.counters(), "line": line},
                finished_at=clock.now(),
            )
        )
        audit.record(
            conn,
            clock,
            tenant_id=tenant_id,
            actor=options.actor,
            action="contacts.import",
            target=f"import:{result.import_id}",
            detail={k: getattr(result, k) for k in _COUNTERS},
        )


# -- the producer in a child process ---------------------------------------------------------------


# What a million-row import took, measured (the bench's total_peak_mb, 2026-11-30): a reader
# ~130 MB (its modules 55, the segment table 12, the batch it builds ~64), the writing process
# ~345 MB on SQLite and ~240 MB on PostgreSQL. Rounded up, for the budget below.
READER_MB = 140
WRITER_MB = {"sqlite": 350, "postgresql": 250}


def reader_count(
    options: ImportOptions,
    cores: int | None = None,
    *,
    memory_mb: int | None = None,
    backend: str = "sqlite",
) -> int:
    """Reader processes of a pipelined import: as asked, else one per core but the one the
    writing process keeps busy (on SQLite it is the slower half; on PostgreSQL it and the
    server share it), at least one and at most four, and no more than ``memory_mb`` (the
    setting ``HONGYAN_IMPORT_MEMORY_MB``) holds beside the writer (:data:`READER_MB` each,
    :data:`WRITER_MB`): at the default 500 MB one reader, so an import's memory does not grow
    with the machine's cores. Measured on two cores, a second reader gave no more rows per
    second and cost 140 MB more."""
    if options.readers is not None:
        return max(1, options.readers)
    if cores is None:
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        cores = len(usable) if usable is not None else os.cpu_count() or 1
    by_cores = max(1, min(4, cores - 1))
    if memory_mb is None:
        return by_cores
    room = memory_mb - WRITER_MB.get(backend, max(WRITER_MB.values()))
    return max(1, min(by_cores, room // READER_MB))


def _reader_main(
    pipeline: Pipeline,
    tenant_id: int,
    plan: list[Target | None],
    options: ImportOptions,
    skip: int,
    packed: bool,
    part: tuple[int, int],
    queue: Any,
) -> None:
    """A reader's work: send its batches, then "end"."""
    from hongyan.contacts.sources import open_table

    try:
        keyring = KeyRing.parse(*pipeline.keys)
        segments = segment_table()
        with open(pipeline.path, "rb") as stream:
            table = open_table(stream, pipeline.size)
            batches = produce(
                table, plan, keyring, tenant_id, options, segments, skip=skip, packed=packed,
                part=part,
            )  # fmt: skip
            for batch in batches:
                data = _batch_bytes(batch)
                del batch  # (the queue holds the bytes while the next batch is built)
                queue.put(("batch", data))
                del data
        queue.put(("end", None))
    except HongyanError as exc:
        queue.put(("error", exc.body()))
    except BaseException as exc:
        queue.put(("crash", f"{type(exc).__name__}: {exc}"))


class _Probe:
    """Whether the next batch is already waiting in its reader's queue (set by
    :func:`_from_readers`; without readers, never: the next batch is yet to be made)."""

    def __init__(self) -> None:
        self.ready: Callable[[], bool] = lambda: False


def _from_readers(
    pipeline: Pipeline,
    tenant_id: int,
    plan: Sequence[Target | None],
    options: ImportOptions,
    skip: int,
    packed: bool,
    probe: _Probe | None = None,
) -> Generator[Batch, None, None]:
    """The batches of ``reader_count`` reader processes, taken in turn (reader j builds batches
    j, j + n …), so in file order. The first batch is taken once this process has read the
    whole file through (:func:`check_whole`), so nothing is written until the file is known to
    be sound; that pass runs while the readers start and build their first batches (when
    reader 0 made it, its first batch waited 0.7 s more in a million-row file, and the writer
    with it)."""
    import multiprocessing
    import queue as queues

    from hongyan.contacts.sources import check_whole, open_table

    ctx = multiprocessing.get_context("spawn")
    n = reader_count(
        options, memory_mb=pipeline.memory_mb, backend="postgresql" if packed else "sqlite"
    )
    # bounded: a reader waits while the writer is behind
    channels = [ctx.Queue(maxsize=1) for _ in range(n)]
    readers = [
        ctx.Process(
            target=_reader_main,
            args=(pipeline, tenant_id, list(plan), options, skip, packed, (j, n), channels[j]),
            name=f"hongyan-import-reader-{j}",
            daemon=True,
        )
        for j in range(n)
    ]
    for reader in readers:
        reader.start()
    turn = 0
    if probe is not None:
        probe.ready = lambda: not channels[turn % n].empty()
    try:
        with open(pipeline.path, "rb") as stream:
            check_whole(stream, open_table(stream, pipeline.size))
        while True:
            j = turn % n
            try:
                kind, payload = channels[j].get(timeout=5)
            except queues.Empty:
                if not readers[j].is_alive():
                    raise RuntimeError("an import reader process died") from None
                continue
            if kind == "batch":
                batch = _batch_of(payload)
                del payload  # not held while the batch is written
                if not batch.stored:  # the stored numbers come before reader 0's batches
                    turn += 1
                yield batch
            elif kind == "end":
                return
            elif kind == "error":
                err = ImportFileError(payload["message"]["en"], payload["message"]["zh"])
                err.code = payload["code"]
                err.details = payload.get("details") or {}
                raise err
            else:
                raise RuntimeError(f"an import reader process failed: {payload}")
    finally:
        for reader in readers:
            if reader.is_alive():
                reader.terminate()
        for reader in readers:
            reader.join(timeout=10)
