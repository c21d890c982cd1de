"""Materialisation: every message of a launch written to the outbox, a batch at a time.

The launch decides who gets which variant, in which order (:mod:`hongyan.campaigns.service`);
this module turns that list into rows of ``messages``: for each batch of 5,000 contacts, one
read of their stored fields (the number's ciphertext and blind index are copied as they are:
``contacts.phone_cipher`` is encrypted under the same context as ``messages.dest_cipher``, so
no number is ever decrypted; its carrier, province and city go onto the message for the
reports), the template values (names and birthdays decrypted only when the
template places them), the per-recipient ``{link}`` / ``{coupon}`` values from the registered
hook, one ``check_many`` per variant (text, encoding, parts, the words the values bring in), and
one bulk insert (``COPY`` on PostgreSQL). No statement per message.

A message whose values bring in a word that may not be sent, or whose text is over the tenant's
maximum parts, is left out (``content``); one that the planned windows cannot hold is left out
(``window_full``, when the campaign expires at the window's end).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection

from hongyan.campaigns import extras
from hongyan.campaigns.windows import Rules, Slot, WindowInvalid, slots
from hongyan.contacts.importer import birthday_context, name_context
from hongyan.content.compiled import CompiledTemplate
from hongyan.content.fields import contact_values
from hongyan.content.sending import blocking
from hongyan.db import bulk
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contact_tags, contacts, messages
from hongyan.dispatch.states import Lane, State
from hongyan.security.keyring import KeyRing

BATCH = 5_000
MAX_SPREAD_DAYS = 62
# The number's ciphertext, index, mask and place go onto the message as they are: the report
# groups by the message's carrier, province and city without joining contacts. The contact's
# own time zone, when it has one, is the one its quiet hours are kept in.
BASE_COLUMNS = (
    "id", "phone_cipher", "phone_index", "phone_masked", "carrier", "number_province",
    "number_city", "time_zone",
)  # fmt: skip
# What each placeholder reads from contacts (only those the templates name are fetched).
VALUE_COLUMNS = {
    "name": "name_cipher", "gender": "gender", "birthday": "birthday_cipher",
    "province": "province", "city": "city",
}  # fmt: skip


def contact_columns(keys: set[str]) -> tuple[str, ...]:
    wanted = [c for k, c in VALUE_COLUMNS.items() if k in keys]
    if any(k.startswith("attr.") for k in keys):
        wanted.append("attrs")
    return BASE_COLUMNS + tuple(wanted)


MESSAGE_COLUMNS = (
    "dest_cipher", "dest_index", "dest_masked", "carrier", "body", "encoding", "parts",
    "due_at", "expires_at", "contact_id", "number_province", "number_city", "time_zone",
    "variant", "template_version_id",
)  # fmt: skip


@dataclass
class VariantPlan:
    name: str
    version_id: int
    compiled: CompiledTemplate
    link_url: str | None = None
    coupon_pool_id: int | None = None


class Spread:
    """When the i-th message of a launch is due (and until when it may go).

    Marketing fills the allowed intervals (quiet hours, the campaign's window) in order at
    ``rate`` a second (:func:`hongyan.campaigns.windows.slots`): with ``carry`` over as many
    days as it takes, each message valid ``validity`` after its due time; with ``expire`` only
    the first allowed interval, each message valid until that interval closes, and what it
    cannot hold is not planned. Other lanes are not held: one after the other at ``rate``."""

    def __init__(
        self,
        start: dt.datetime,
        rate: float,
        *,
        zone: ZoneInfo | None = None,
        rules: Rules | None = None,
        carry: bool = True,
        total: int = 0,
        validity: dt.timedelta = dt.timedelta(hours=24),
    ) -> None:
        if rate <= 0:
            raise WindowInvalid("The sending rate must be positive", "发送速率必须大于 0")
        self.start, self.rate, self.validity, self.carry = start, rate, validity, carry
        self.plan: list[Slot] | None = None
        if rules is not None:
            assert zone is not None
            days = 1 if not carry else 8
            while True:
                self.plan = slots(start, zone, rules, rate, days)
                if not carry:
                    self.plan = self.plan[:1]
                    break
                if sum(s.capacity for s in self.plan) >= total or days >= MAX_SPREAD_DAYS:
                    break
                days = min(MAX_SPREAD_DAYS, days * 2)
            if not self.plan:
                raise WindowInvalid(
                    "The send window never opens in the days ahead", "近期没有可发送的时段"
                )

    @property
    def first(self) -> dt.datetime:
        return self.plan[0].opens if self.plan else self.start

    def times(self, start: int, n: int) -> list[tuple[dt.datetime, dt.datetime] | None]:
        """Due and expiry times of messages ``start`` … ``start + n − 1``."""
        out: list[tuple[dt.datetime, dt.datetime] | None] = []
        step = dt.timedelta(seconds=1 / self.rate)
        if self.plan is None:
            for i in range(start, start + n):
                due = self.start + i * step
                out.append((due, due + self.validity))
            return out
        index, k = start, 0
        base = 0
        while k < len(self.plan) and index >= base + self.plan[k].capacity:
            base += self.plan[k].capacity
            k += 1
        for _ in range(n):
            while k < len(self.plan) and index >= base + self.plan[k].capacity:
                base += self.plan[k].capacity
                k += 1
            if k >= len(self.plan):
                out.append(None)
            else:
                slot = self.plan[k]
                due = slot.opens + (index - base) * step
                out.append((due, due + self.validity if self.carry else slot.closes))
            index += 1
        return out


@dataclass
class Launch:
    """What a launch writes: the campaign (or journey), its lane and source, the variants.
    A journey's send step has no campaign: ``journey_id`` names it, so the step's links and
    coupons are the journey's (its variant, ``s<position>``, is the step)."""

    tenant_id: int
    lane: Lane
    source: str  # campaign, ab_test, journey
    source_ref: str | None
    campaign_id: int | None
    variants: dict[str, VariantPlan]
    now: dt.datetime
    spread: Spread
    counts: Counter[str] = field(default_factory=Counter)
    planned: Counter[str] = field(default_factory=Counter)  # per variant
    parts: Counter[str] = field(default_factory=Counter)  # per variant
    skipped: dict[int, str] = field(default_factory=dict)  # contact → why no message
    written: int = 0
    progress: Callable[[int, int], None] | None = None  # (done, total) after each batch
    journey_id: int | None = None


def _values(
    rows: Sequence[tuple[Any, ...]], columns: tuple[str, ...], keys: set[str], keyring: KeyRing,
    tenant_id: int, tags: dict[int, list[str]],
) -> list[dict[str, str]]:  # fmt: skip
    """The template values of each row (``columns`` as :func:`contact_columns` chose them)."""
    if not keys - set(extras.KEYS):
        return [{} for _ in rows]
    at = {c: i for i, c in enumerate(columns)}
    name_ctx, birthday_ctx = name_context(tenant_id), birthday_context(tenant_id)
    want = {k: at.get(c) for k, c in VALUE_COLUMNS.items() if k in keys}
    attrs_at = at.get("attrs") if any(k.startswith("attr.") for k in keys) else None
    out = []
    for r in rows:
        record: dict[str, Any] = {"tags": tags.get(int(r[0]), [])}
        for key, i in want.items():
            value = r[i] if i is not None else None
            if value is not None and key == "name":
                value = keyring.decrypt(value, name_ctx)
            elif value is not None and key == "birthday":
                value = keyring.decrypt(value, birthday_ctx)
            record[key] = value
        out.append(contact_values(record, r[attrs_at] if attrs_at is not None else None))
    return out


def _tags(conn: Connection, scope: TenantScope, ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for cid, tag in bulk.fetch_in(
        conn, scope, contact_tags, ("contact_id", "tag"), "contact_id", ids
    ):
        out.setdefault(int(cid), []).append(str(tag))
    return out


@dataclass
class _Batch:
    """One batch between its read (the connection's thread) and its rendering (the worker)."""

    chunk: Sequence[tuple[int, str]]
    found: dict[int, tuple[Any, ...]]
    tags: dict[int, list[str]]
    times: list[tuple[dt.datetime, dt.datetime] | None]
    by_variant: dict[str, list[int]]  # variant → positions in chunk
    extra: dict[str, dict[str, list[str]]]  # variant → {link, coupon} values in that order
    position: int  # contacts of the launch read so far, this batch included
    skipped: list[tuple[int, str]]  # (contact, gone | window_full)


@dataclass
class _Rendered:
    rows: list[tuple[Any, ...]]
    parts: Counter[str]
    planned: Counter[str]
    skipped: list[tuple[int, str]]  # (contact, gone | window_full | content)
    position: int


def _read(
    conn: Connection,
    scope: TenantScope,
    launch: Launch,
    chunk: Sequence[tuple[int, str]],
    columns: tuple[str, ...],
    keys: set[str],
    position: int,
) -> _Batch:
    """The database's part of a batch: the contacts' rows, tags, due times, per-recipient
    ``{link}`` / ``{coupon}`` values (issued here: the hook writes links and coupons)."""
    ids = [c for c, _ in chunk]
    found = {int(r[0]): r for r in bulk.fetch_in(conn, scope, contacts, columns, "id", ids)}
    tags = _tags(conn, scope, ids) if "tags" in keys else {}
    times = launch.spread.times(position, len(chunk))
    by_variant: dict[str, list[int]] = {}
    skipped: list[tuple[int, str]] = []
    for i, (cid, variant) in enumerate(chunk):
        if cid not in found:
            skipped.append((cid, "gone"))
        elif times[i] is None:
            skipped.append((cid, "window_full"))
        else:
            by_variant.setdefault(variant, []).append(i)
    extra: dict[str, dict[str, list[str]]] = {}
    for variant, at in by_variant.items():
        plan = launch.variants[variant]
        needs = extras.needed(plan.compiled.keys)
        if not needs:
            continue
        last = times[at[-1]]
        assert last is not None
        extra[variant] = extras.fetch(
            conn,
            extras.PerRecipientRequest(
                tenant_id=launch.tenant_id,
                campaign_id=launch.campaign_id,
                variant=variant,
                contact_ids=[chunk[i][0] for i in at],
                link_url=plan.link_url,
                coupon_pool_id=plan.coupon_pool_id,
                now=launch.now,
                expires_at=last[1],
                journey_id=launch.journey_id,
            ),
            needs,
        )
    return _Batch(chunk, found, tags, times, by_variant, extra, position + len(chunk), skipped)


def _render(
    batch: _Batch, keyring: KeyRing, launch: Launch, columns: tuple[str, ...], category: str
) -> _Rendered:
    """Python's part of a batch (no database): the template values, the texts and their
    checks, the message rows. Reads ``launch`` but changes nothing in it."""
    out = _Rendered([], Counter(), Counter(), list(batch.skipped), batch.position)
    chunk, times = batch.chunk, batch.times
    for variant, at in batch.by_variant.items():
        plan = launch.variants[variant]
        rows = [batch.found[chunk[i][0]] for i in at]
        values = _values(
            rows, columns, set(plan.compiled.keys), keyring, launch.tenant_id, batch.tags
        )
        for key, column in batch.extra.get(variant, {}).items():
            for row_values, value in zip(values, column, strict=True):
                row_values[key] = value
        checked = plan.compiled.check_many(values)
        for j, i in enumerate(at):
            problems = checked.problems.get(j)
            if (problems and blocking(category, problems)) or (
                checked.parts[j] > plan.compiled.max_parts
            ):
                out.skipped.append((chunk[i][0], "content"))
                continue
            r = rows[j]
            due, expires = times[i]  # type: ignore[misc]
            out.rows.append(
                (
                    r[1], r[2], r[3], r[4], checked.texts[j], checked.encodings[j],
                    checked.parts[j], due, expires, r[0], r[5], r[6],
                    r[7],  # the zone its quiet hours are kept in (None: the tenant's)
                    variant, plan.version_id,
                )
            )  # fmt: skip
            out.parts[variant] += checked.parts[j]
            out.planned[variant] += 1
    return out


def _store(
    conn: Connection, scope: TenantScope, launch: Launch, done: _Rendered, total: int
) -> None:
    """Write a rendered batch (one ``COPY``) and count it."""
    for cid, reason in done.skipped:
        launch.counts[reason] += 1
        launch.skipped[cid] = reason
    launch.parts.update(done.parts)
    launch.planned.update(done.planned)
    launch.written += bulk.insert_rows(
        conn,
        scope,
        messages,
        MESSAGE_COLUMNS,
        done.rows,
        {
            "lane": int(launch.lane),
            "category": launch.lane.name.lower(),
            "source": launch.source,
            "source_ref": launch.source_ref,
            "state": State.PLANNED.value,
            "created_at": launch.now,
            "campaign_id": launch.campaign_id,
        },
    )
    if launch.progress is not None:
        launch.progress(done.position, total)


def write(
    conn: Connection, keyring: KeyRing, launch: Launch, order: Sequence[tuple[int, str]]
) -> None:
    """Plan a message for each (contact, variant) of ``order``, due in that order.

    A two-stage pipeline: while this thread writes batch *k* (``COPY``: mostly waiting for the
    server, the GIL released) a worker thread prepares batch *k + 1*. On PostgreSQL, when no
    variant places ``{link}`` or ``{coupon}`` (whose issuing writes, so belongs to the launch's
    transaction), the worker also reads its batch's contacts, on a connection of its own: the
    server reads them on another core while this connection's ``COPY`` runs. The rows read are
    the same as through the launch's connection (READ COMMITTED: each statement sees what is
    committed; the launch changes no contact). Otherwise the reads stay on this connection and
    the worker renders only. Counts are applied here, in order, as each batch is stored."""
    scope = TenantScope(launch.tenant_id)
    keys: set[str] = set()
    for v in launch.variants.values():
        keys |= set(v.compiled.keys)
    columns = contact_columns(keys)
    category = launch.lane.name.lower()
    total = len(order)
    issues = any(extras.needed(v.compiled.keys) for v in launch.variants.values())
    apart = conn.dialect.name == "postgresql" and not issues and total > BATCH
    # The worker is shut down (waited for) before its reading connection closes.
    with (
        conn.engine.connect() if apart else contextlib.nullcontext(conn) as reader,
        ThreadPoolExecutor(1, thread_name_prefix="hongyan-render") as worker,
    ):
        how = (keyring, launch, columns, category)

        def read_and_render(start: int) -> _Rendered:
            chunk = order[start : start + BATCH]
            return _render(_read(reader, scope, launch, chunk, columns, keys, start), *how)

        ahead: deque[Future[_Rendered]] = deque()
        for start in range(0, total, BATCH):
            if apart:
                ahead.append(worker.submit(read_and_render, start))
            else:  # read here, on the launch's connection; render in the worker
                chunk = order[start : start + BATCH]
                batch = _read(conn, scope, launch, chunk, columns, keys, start)
                ahead.append(worker.submit(_render, batch, *how))
            if len(ahead) > 1:
                _store(conn, scope, launch, ahead.popleft().result(), total)
        while ahead:
            _store(conn, scope, launch, ahead.popleft().result(), total)
