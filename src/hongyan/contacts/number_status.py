"""Number-status checks (空号检测): which numbers are empty, before a campaign pays for them.

Paid services (the carriers' and aggregators' 空号检测 APIs) answer for a list of numbers;
:class:`NumberStatusProvider` is the interface such an adapter implements. The built-in
:class:`ReceiptHistory` needs no service: it reads this tenant's own delivery receipts, where a
number's latest final message says ``invalid_number`` (空号) or ``delivered``.
:class:`~hongyan.contacts.number_status_http.HttpNumberStatus` asks a paid service over HTTP;
:class:`Chained` asks the receipts first and the paid service only for what they leave unknown.
:func:`provider_for` builds the one the settings name (``HONGYAN_NUMBER_STATUS_PROVIDER``).

:func:`check_contacts` runs a provider over a tenant's contacts and puts the empty numbers on
the suppression list (reason ``invalid``, 180 days, as a 空号 receipt does). It holds no
transaction while a provider answers: each batch of contacts is read in a short read, checked,
and its empty numbers are suppressed in a short write, so a slow paid service never keeps the
database's write lock, and an interrupted run keeps what it had found. It reports its progress
after each batch; the API runs it as a background job (:mod:`hongyan.contacts.number_status_jobs`).

The failure policy: only a provider's explicit answer makes a number ``empty``. A request that
fails (timeout, HTTP error, an answer that is not what was asked for, a number left out, a code
the status table does not know) leaves its numbers ``unknown``: not suppressed, checked again
on the next run. Such failures are counted by reason in the result and logged with the numbers
masked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hongyan.clock import Clock
from hongyan.contacts import suppression
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contacts, messages, suppressions
from hongyan.errors import ConfigurationError
from hongyan.security.keyring import KeyRing

if TYPE_CHECKING:
    from hongyan.settings import Settings

STATUSES = ("active", "empty", "unknown")
#: What ``HONGYAN_NUMBER_STATUS_PROVIDER`` may name.
PROVIDERS = ("receipts", "http", "receipts+http")
#: Contacts read, checked and written at a time by :func:`check_contacts`.
BATCH = 1000


@dataclass(frozen=True)
class Failure:
    """Numbers a provider could not answer for, and why. They are ``unknown``, never ``empty``.

    ``reason`` is one of ``timeout``, ``connection``, ``http_status``, ``malformed`` (not JSON,
    not the expected shape, contradicting itself), ``missing`` (left out of the answer),
    ``unmapped_code`` (a code the status table does not name) or ``not_sent`` (a number the
    configured format cannot carry). ``detail`` never holds a number or a key.
    """

    provider: str
    reason: str
    numbers: int
    detail: str


class Verdicts(dict[str, str]):
    """A provider's answer: the status of each number, plus what went wrong and who answered.

    A plain ``dict`` is a valid answer too (no failures, every number answered by the provider
    asked); this subclass carries the rest.
    """

    def __init__(
        self,
        statuses: Mapping[str, str] | None = None,
        *,
        failures: Sequence[Failure] = (),
        answered_by: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(statuses or {})
        self.failures: list[Failure] = list(failures)
        #: number → name of the provider whose answer it is (absent: the provider asked).
        self.answered_by: dict[str, str] = dict(answered_by or {})


def failures_of(verdicts: Mapping[str, str]) -> list[Failure]:
    return list(getattr(verdicts, "failures", ()))


def answered_by(verdicts: Mapping[str, str], number: str, default: str) -> str:
    return str(getattr(verdicts, "answered_by", {}).get(number, default))


def status_of(verdicts: Mapping[str, str], number: str) -> str:
    status = verdicts.get(number, "unknown")
    return status if status in STATUSES else "unknown"


class NumberStatusProvider(Protocol):
    name: str

    def check(self, numbers: Sequence[str]) -> Mapping[str, str]:
        """Status of each E.164 number: ``active``, ``empty`` (空号) or ``unknown``.

        May return :class:`Verdicts` to report failures. A number missing from the answer, or
        given a status outside :data:`STATUSES`, counts as ``unknown``.
        """
        ...


class ReceiptHistory:
    """What our own receipts say: the latest final message to the number.

    ``source`` is a connection (read in the caller's transaction) or an engine (each check
    reads in a short transaction of its own).
    """

    name = "receipts"

    def __init__(self, source: Connection | Engine, keyring: KeyRing, tenant_id: int) -> None:
        self.source, self.keyring, self.tenant_id = source, keyring, tenant_id

    @contextmanager
    def _conn(self) -> Iterator[Connection]:
        if isinstance(self.source, Engine):
            with self.source.connect() as conn:
                yield conn
        else:
            yield self.source

    def check(self, numbers: Sequence[str]) -> dict[str, str]:
        ctx = suppression.phone_context(self.tenant_id)
        by_index = {self.keyring.blind_index(n, ctx): n for n in numbers}
        out = dict.fromkeys(numbers, "unknown")
        m = messages.c
        with self._conn() as conn:
            rows = conn.execute(
                TenantScope(self.tenant_id)
                .select(messages, m.dest_index, m.state, m.reason, m.done_at)
                .where(
                    m.dest_index.in_(list(by_index)),
                    m.state.in_(("delivered", "undelivered")),
                    m.done_at.is_not(None),
                )
                .order_by(m.done_at, m.id)
            ).all()
        for r in rows:  # later rows overwrite earlier ones: the latest verdict wins
            number = by_index[bytes(r.dest_index)]
            if r.state == "delivered":
                out[number] = "active"
            elif r.reason == "invalid_number":
                out[number] = "empty"
        return out


class Chained:
    """``first`` for every number, ``then`` only for those ``first`` leaves ``unknown``.

    With the receipts first, the paid service is asked (and paid) only for numbers our own
    traffic has not already settled.
    """

    def __init__(self, first: NumberStatusProvider, then: NumberStatusProvider) -> None:
        self.first, self.then = first, then
        self.name = f"{first.name}+{then.name}"

    def check(self, numbers: Sequence[str]) -> Verdicts:
        numbers = list(dict.fromkeys(numbers))
        a = self.first.check(numbers)
        out = Verdicts(failures=failures_of(a))
        rest = []
        for n in numbers:
            status = status_of(a, n)
            if status == "unknown":
                rest.append(n)
            else:
                out[n] = status
                out.answered_by[n] = answered_by(a, n, self.first.name)
        if rest:
            b = self.then.check(rest)
            out.failures += failures_of(b)
            for n in rest:
                out[n] = status_of(b, n)
                out.answered_by[n] = answered_by(b, n, self.then.name)
        return out


def provider_for(
    settings: Settings, source: Connection | Engine, keyring: KeyRing, tenant_id: int
) -> NumberStatusProvider:
    """The provider ``HONGYAN_NUMBER_STATUS_PROVIDER`` names, for one tenant's checks."""
    choice = settings.number_status_provider
    receipts = ReceiptHistory(source, keyring, tenant_id)
    if choice == "receipts":
        return receipts
    if choice not in PROVIDERS:
        raise ConfigurationError(
            f"HONGYAN_NUMBER_STATUS_PROVIDER must be one of {', '.join(PROVIDERS)}, not {choice!r}",
            f"HONGYAN_NUMBER_STATUS_PROVIDER 只能是 {'、'.join(PROVIDERS)}",
        )
    from hongyan.contacts.number_status_http import HttpConfig, HttpNumberStatus

    paid = HttpNumberStatus(HttpConfig.from_settings(settings))
    return paid if choice == "http" else Chained(receipts, paid)


@dataclass
class CheckSummary:
    """What a check found: counts by status, by the provider that answered, and the failures."""

    provider: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    by_provider: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Contacts not checked: their number is already suppressed as 空号.
    skipped: int = 0
    #: (provider, reason) → [numbers, requests, details]
    _failures: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    #: The id of the last contact gone through: a check resumed goes on after it.
    after: int = 0

    @classmethod
    def restored(cls, provider: str, stored: dict[str, Any] | None, after: int) -> CheckSummary:
        """The summary a stopped check had stored (:meth:`as_dict`), to go on counting."""
        summary = cls(provider, after=after)
        if not stored:
            return summary
        summary.counts = {s: int(stored.get(s) or 0) for s in STATUSES}
        summary.by_provider = {
            str(name): {s: int(per.get(s) or 0) for s in STATUSES}
            for name, per in (stored.get("by_provider") or {}).items()
        }
        summary.skipped = int(stored.get("skipped") or 0)
        for f in stored.get("failures") or []:
            details = [d for d in str(f.get("detail") or "").split("; ") if d]
            summary._failures[(str(f["provider"]), str(f["reason"]))] = [
                int(f.get("numbers") or 0), int(f.get("requests") or 0), details[:3],
            ]  # fmt: skip
        return summary

    def add(self, number_status: str, provider: str) -> None:
        self.counts[number_status] += 1
        per = self.by_provider.setdefault(provider, dict.fromkeys(STATUSES, 0))
        per[number_status] += 1

    def fail(self, failure: Failure) -> None:
        entry = self._failures.setdefault((failure.provider, failure.reason), [0, 0, []])
        entry[0] += failure.numbers
        entry[1] += 1
        if failure.detail not in entry[2] and len(entry[2]) < 3:
            entry[2].append(failure.detail)

    @property
    def processed(self) -> int:
        """Contacts gone through so far: checked, or skipped as already suppressed."""
        return sum(self.counts.values()) + self.skipped

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [
            {
                "provider": provider,
                "reason": reason,
                "numbers": numbers,
                "requests": requests,
                "detail": "; ".join(details),
            }
            for (provider, reason), (numbers, requests, details) in self._failures.items()
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "checked": sum(self.counts.values()),
            **self.counts,
            "skipped": self.skipped,
            "by_provider": self.by_provider,
            "failures": self.failures,
        }


def check_contacts(
    engine: Engine,
    clock: Clock,
    keyring: KeyRing,
    tenant_id: int,
    provider: NumberStatusProvider,
    *,
    batch: int = BATCH,
    progress: Callable[[CheckSummary], None] | None = None,
    resume: CheckSummary | None = None,
) -> CheckSummary:
    """Check every contact's number; suppress the empty ones (see the module's docstring).

    Contacts are gone through in id order; ``resume`` (a stopped check's summary) goes on
    after its :attr:`CheckSummary.after`, counting on from it.
    Numbers already suppressed as 空号 (and not expired) are skipped, not asked about again.
    ``progress`` is called with the summary so far after each batch, once that batch's empty
    numbers are stored, with no transaction open (it may write one of its own: a background
    job records how far it got, :mod:`hongyan.contacts.number_status_jobs`); an exception it
    raises stops the check there.
    """
    scope = TenantScope(tenant_id)
    ctx = suppression.phone_context(tenant_id)
    summary = resume if resume is not None else CheckSummary(provider.name)
    c = contacts.c
    last = summary.after
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                scope.select(contacts, c.id, c.phone_index, c.phone_cipher)
                .where(c.id > last)
                .order_by(c.id)
                .limit(batch)
            ).all()
            known = _known_empty(conn, tenant_id, [bytes(r.phone_index) for r in rows], clock)
        if not rows:
            return summary
        last = int(rows[-1].id)
        skipped = sum(1 for r in rows if bytes(r.phone_index) in known)
        numbers = [
            keyring.decrypt(bytes(r.phone_cipher), ctx)
            for r in rows
            if bytes(r.phone_index) not in known
        ]
        verdicts = provider.check(numbers) if numbers else None
        found: list[tuple[str, str]] = []
        empty = []
        for n in numbers:
            assert verdicts is not None
            status, source = status_of(verdicts, n), answered_by(verdicts, n, provider.name)
            found.append((status, source))
            if status == "empty":
                item = suppression.NewSuppression(tenant_id, n, "invalid", source, "空号检测")
                empty.append(item)
        if empty:
            with engine.begin() as conn:
                suppression.add(conn, clock, keyring, empty)
        # The batch counts once its empty numbers are stored: a check that stops inside it
        # (the provider or the database failing) goes on from its first contact when resumed.
        if verdicts is not None:
            for failure in failures_of(verdicts):
                summary.fail(failure)
        for status, source in found:
            summary.add(status, source)
        summary.skipped += skipped
        summary.after = last
        if progress:
            progress(summary)


def _known_empty(
    conn: Connection, tenant_id: int, indexes: list[bytes], clock: Clock
) -> set[bytes]:
    """Those of the numbers already suppressed as 空号 (not yet expired): asking about them
    again would cost money and change nothing."""
    if not indexes:
        return set()
    s = suppressions.c
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(suppressions, s.phone_index)
        .where(
            s.reason == "invalid",
            s.phone_index.in_(indexes),
            sa.or_(s.expires_at.is_(None), s.expires_at > clock.now()),
        )
    ).all()
    return {bytes(r.phone_index) for r in rows}


def count_contacts(conn: Connection, tenant_id: int, after: int = 0) -> int:
    """The tenant's contacts (with an id past ``after``: what a resumed check has left)."""
    query = TenantScope(tenant_id).select(contacts, sa.func.count())
    if after:
        query = query.where(contacts.c.id > after)
    return int(conn.execute(query).scalar_one())
