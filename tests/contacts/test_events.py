"""Events: idempotent by id, aggregates moved by exactly the new events, on both databases."""

from __future__ import annotations

import decimal
import io
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from hongyan.contacts import events, importer, service
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contact_activity, contact_events
from hongyan.runtime import Runtime

Decimal = decimal.Decimal

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)  # the tests' clock (tests/conftest.py)


def _ev(i: str, kind: str, at: str, **kw: object) -> dict[str, object]:
    return {"event_id": i, "kind": kind, "phone": "13812345678", "occurred_at": at, **kw}


def test_aggregates_and_idempotency(runtime: Runtime, tenant_id: int) -> None:
    batch = [
        _ev("r1", "registration", "2026-01-05T10:00:00"),
        _ev("b1", "browse", "2026-02-01T10:00:00+08:00", tags=["茶饮", "新品"]),
        _ev("c1", "add_to_cart", "2026-02-02 11:00:00", tags="茶饮"),
        _ev("o1", "order", "2026-02-03T12:00:00", amount="39.90", order_id="A1", tags=["茶饮"]),
        _ev("o2", "order", "2026-03-01T12:00:00Z", amount_fen=1000, coupon_code="C18"),
        _ev("s1", "order_signed", "2026-03-02T12:00:00"),
    ]
    parsed = events.parse_batch(batch, SH, now=NOW)
    with runtime.engine.begin() as conn:
        first = events.ingest(conn, runtime.clock, runtime.keyring, tenant_id, parsed)
    assert (first.accepted, first.duplicates, first.contacts_created) == (6, 0, 1)
    with runtime.engine.begin() as conn:  # the same events again, plus one new
        again = events.ingest(
            conn,
            runtime.clock,
            runtime.keyring,
            tenant_id,
            [
                *parsed,
                *events.parse_batch(
                    [_ev("o0", "order", "2025-12-31T23:00:00", amount=5)], SH, now=NOW
                ),
            ],
        )
    assert (again.accepted, again.duplicates, again.contacts_created) == (1, 6, 0)
    with runtime.engine.connect() as conn:
        cid = service.find_id(conn, runtime.keyring, tenant_id, "+8613812345678")
        assert cid is not None
        contact = service.get_contact(conn, tenant_id, cid)
        stored = conn.execute(
            TenantScope(tenant_id).select(contact_events, sa.func.count())
        ).scalar_one()
    assert stored == 7
    a = contact["activity"]
    assert a["orders_count"] == 3 and a["revenue_fen"] == 3990 + 1000 + 500
    assert a["first_order_at"] == datetime(2025, 12, 31, 15, 0, tzinfo=UTC)
    assert a["last_order_at"] == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert a["registered_at"] == datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    assert a["last_browse_at"] == datetime(2026, 2, 1, 2, 0, tzinfo=UTC)
    assert a["last_cart_at"] == datetime(2026, 2, 2, 3, 0, tzinfo=UTC)
    assert a["last_signed_at"] == a["last_interaction_at"] == datetime(2026, 3, 2, 4, tzinfo=UTC)
    interests = {i["tag"]: (i["events"], i["weight"]) for i in contact["interests"]}
    assert interests == {"茶饮": (3, 1 + 5 + 8), "新品": (1, 1)}
    assert contact["phone_masked"] == "138****5678" and contact["source"] == "event"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"kind": "order", "phone": "13812345678", "occurred_at": "2026-01-01"}, "event_id"),
        (_ev("x", "teleport", "2026-01-01"), "kind"),
        (_ev("x", "browse", "2026-01-01", phone="123"), "phone"),
        (_ev("x", "browse", "yesterday"), "occurred_at"),
        # before year 1 or past 9999 in UTC: an OverflowError, a 500 from the API (the fuzz)
        (_ev("x", "browse", "0001-01-01"), "occurred_at"),
        (_ev("x", "browse", "9999-12-31T23:59:59-14:00"), "occurred_at"),
        (_ev("x", "order", "2026-01-01"), "amount"),
        (_ev("x", "order", "2026-01-01", amount="1.234"), "amount"),
        (_ev("x", "order", "2026-01-01", amount="-5"), "amount"),
        (_ev("x", "order", "2026-01-01", amount_fen="12.5"), "amount_fen"),
        # decimal.InvalidOperation and decimal.Overflow escaped the check: a 500 from the API
        (_ev("x", "order", "2026-01-01", amount="sNaN"), "amount"),
        (_ev("x", "order", "2026-01-01", amount="NaN"), "amount"),
        (_ev("x", "order", "2026-01-01", amount="-Infinity"), "amount"),
        (_ev("x", "order", "2026-01-01", amount="1e999999999"), "amount"),
        (_ev("x", "order", "2026-01-01", amount="1e-999999999"), "amount"),
        # str.isdigit() takes "²", which int() does not: the field was int()'s message
        (_ev("x", "order", "2026-01-01", amount_fen="²"), "amount_fen"),
        (_ev("x", "order", "2026-01-01", amount_fen="9" * 5000), "amount_fen"),
        # more than a day ahead of the clock: it would stand as the latest order for good
        (_ev("x", "order", "2026-11-12T02:00:01Z", amount=1), "occurred_at"),
        (_ev("x", "browse", "2099-01-01"), "occurred_at"),
    ],
)
def test_bad_events_store_nothing(bad: dict[str, object], field: str) -> None:
    with pytest.raises(events.EventInvalid) as caught:
        events.parse_batch([_ev("ok", "browse", "2026-01-01"), bad], SH, now=NOW)
    assert caught.value.details["problems"] == [{"index": 1, "field": field}]


def test_an_event_up_to_a_day_ahead_is_taken() -> None:
    """A day of slack for the sender's clock and time zone mistakes; no more."""
    ahead = _ev("x", "browse", "2026-11-12T10:00:00")  # Shanghai: NOW + 1 day exactly
    assert events.parse_batch([ahead], SH, now=NOW)[0].occurred_at == NOW + timedelta(days=1)
    with pytest.raises(ValueError, match="occurred_at"):
        events.parse_event(ahead, SH, now=NOW - timedelta(microseconds=1))


def test_leading_zeros_of_amount_fen_are_no_error() -> None:
    """Past some 4,300 digits int() refuses a number with its own message, leading zeros
    counted: the field's error named no field."""
    got = events.parse_event(
        _ev("x", "order", "2026-01-01", amount_fen="0" * 5000 + "1"), SH, now=NOW
    )
    assert got.amount_fen == 1


def test_an_event_at_the_first_instant_is_no_erasure(runtime: Runtime, tenant_id: int) -> None:
    """The earliest time there is was the stand-in for "never erased": an event at it was left
    out as erased for any number."""
    first = _ev("x", "browse", "0001-01-01T00:00:00Z")
    with runtime.engine.begin() as conn:
        got = events.ingest(
            conn, runtime.clock, runtime.keyring, tenant_id,
            events.parse_batch([first], SH, now=NOW),
        )  # fmt: skip
    assert (got.accepted, got.erased) == (1, 0)


def test_amounts_in_fen() -> None:
    assert events.parse_amount_fen("199.90") == 19990
    assert events.parse_amount_fen("¥1,299") == 129900
    assert events.parse_amount_fen(0) == 0
    with pytest.raises(ValueError):
        events.parse_amount_fen("0.001")
    # exact to the fen even past the 28 digits of decimal's default precision
    with pytest.raises(ValueError):
        events.parse_amount_fen("1.00000000000000000000000000001")
    assert events.parse_amount_fen("100000000.00") == events.MAX_AMOUNT_FEN // 100


_AMOUNTISH = st.text(alphabet="0123456789.,-+eE ¥￥sSnNaAiIfFtyY_²", max_size=40)


@given(st.one_of(st.text(), _AMOUNTISH, st.decimals().map(str), st.integers(), st.floats()))
def test_an_amount_is_fen_in_range_or_a_value_error(value: object) -> None:
    """Any text (or number): a whole number of fen in range, or ValueError, nothing else."""
    try:
        fen = events.parse_amount_fen(value)
    except ValueError:
        return
    assert type(fen) is int and 0 <= fen <= events.MAX_AMOUNT_FEN
    text = str(value).strip().replace(",", "").replace("¥", "").replace("￥", "")
    with decimal.localcontext() as exact:
        exact.prec = 10_000
        assert Decimal(text) * 100 == fen  # exact, not rounded


def test_import_file_is_resumable(runtime: Runtime, tenant_id: int) -> None:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    lines = ["event_id,kind,phone,occurred_at,amount,tags"]
    for i in range(30):
        at = (now - timedelta(days=i)).isoformat()
        lines.append(f"e{i},{'order' if i % 3 == 0 else 'browse'},1390000{i:04d},{at},9.9,茶")
    lines.append("bad,order,13900000001,not-a-time,1,")
    lines.append("ahead,order,13900000001,2026-11-20T10:00:00,1,")  # the clock: 2026-11-11
    data = ("\n".join(lines) + "\n").encode()
    out = events.import_file(runtime, tenant_id, io.BytesIO(data), "e.csv", batch_size=7)
    assert (out["rows"], out["accepted"], out["invalid"], out["contacts_created"]) == (
        32,
        30,
        2,
        30,
    )
    assert out["errors"] == [
        {"line": 32, "field": "occurred_at"},
        {"line": 33, "field": "occurred_at"},
    ]
    again = events.import_file(runtime, tenant_id, io.BytesIO(data), "e.csv", batch_size=7)
    assert (again["accepted"], again["duplicates"]) == (0, 30)


def test_a_file_broken_half_way_stores_no_event(runtime: Runtime, tenant_id: int) -> None:
    """A 70 KiB line at line 22 once left the 20 events before it stored under a message saying
    nothing was; the whole file is now read first."""
    from hongyan.contacts.sources import ImportFileError

    lines = ["event_id,kind,phone,occurred_at"]
    lines += [f"e{i},browse,1390000{i:04d},2026-11-01T10:00:00+08:00" for i in range(20)]
    lines.append("e99,browse,13900009999," + "x" * (70 * 1024))
    data = ("\n".join(lines) + "\n").encode()
    with pytest.raises(ImportFileError) as caught:
        events.import_file(runtime, tenant_id, io.BytesIO(data), "e.csv", batch_size=5)
    assert caught.value.code == "import_line_too_long"
    with runtime.engine.connect() as conn:
        stored = conn.execute(
            TenantScope(tenant_id).select(contact_events, sa.func.count())
        ).scalar_one()
    assert stored == 0


def test_a_failure_half_way_says_what_was_stored(
    runtime: Runtime, tenant_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = events.ingest, {"n": 0}

    def failing(*args, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("connection lost")
        return real(*args, **kw)

    monkeypatch.setattr(events, "ingest", failing)
    lines = ["event_id,kind,phone,occurred_at"]
    lines += [f"e{i},browse,1390000{i:04d},2026-11-01T10:00:00+08:00" for i in range(20)]
    data = ("\n".join(lines) + "\n").encode()
    with pytest.raises(RuntimeError):
        events.import_file(runtime, tenant_id, io.BytesIO(data), "e.csv", batch_size=5)
    with runtime.engine.connect() as conn:
        [job] = importer.list_jobs(conn, tenant_id)
        job = importer.get_job(conn, tenant_id, job["id"])
    assert job["state"] == "failed" and "after storing 10 events" in job["error"]["message"]["en"]
    monkeypatch.setattr(events, "ingest", real)
    again = events.import_file(runtime, tenant_id, io.BytesIO(data), "e.csv", batch_size=5)
    assert (again["accepted"], again["duplicates"]) == (10, 10)


class _Blind:
    """A connection whose first query (the lookup of stored ids) sees nothing, as when another
    request stores the same events between the lookup and the insert."""

    def __init__(self, conn: object) -> None:
        self.conn, self.first = conn, True

    def execute(self, *args: object, **kw: object) -> object:
        stmt = str(args[0])
        if self.first and stmt.startswith("SELECT contact_events.event_id"):
            self.first = False

            class _Empty:
                def all(self) -> list[object]:
                    return []

            return _Empty()
        return self.conn.execute(*args, **kw)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.conn, name)


@pytest.mark.parametrize("stored_amount", [10, 11])
def test_a_race_on_the_same_event_counts_it_once(
    runtime: Runtime, tenant_id: int, stored_amount: int
) -> None:
    """Another request stores o1 between the lookup and the insert: o1 is not stored twice nor
    counted twice, and is a duplicate if the other stored the same, else a conflict."""
    parsed = events.parse_batch(
        [
            _ev("o1", "order", "2026-02-03T12:00:00", amount=10),
            _ev("o2", "order", "2026-02-04", amount=5),
        ],
        SH,
        now=NOW,
    )
    stored = events.parse_batch(
        [_ev("o1", "order", "2026-02-03T12:00:00", amount=stored_amount)], SH, now=NOW
    )
    with runtime.engine.begin() as conn:
        events.ingest(conn, runtime.clock, runtime.keyring, tenant_id, stored)
    with runtime.engine.begin() as conn:
        got = events.ingest(_Blind(conn), runtime.clock, runtime.keyring, tenant_id, parsed)  # type: ignore[arg-type]
    same = stored_amount == 10
    assert (got.accepted, got.duplicates, got.conflicts) == (1, int(same), int(not same))
    assert got.conflict_ids == ([] if same else ["o1"])
    with runtime.engine.connect() as conn:
        cid = service.find_id(conn, runtime.keyring, tenant_id, "+8613812345678")
        assert cid is not None
        activity = service.get_contact(conn, tenant_id, cid)["activity"]
    assert activity["orders_count"] == 2 and activity["revenue_fen"] == stored_amount * 100 + 500


def test_an_id_reused_in_a_batch_with_other_content_refuses_the_batch() -> None:
    """The first of a batch won, the other was counted as a duplicate: the sender never knew."""
    first = _ev("o1", "order", "2026-02-03T12:00:00+08:00", amount=10, tags=["茶", "新品"])
    same = {**first, "occurred_at": "2026-02-03T04:00:00Z", "phone": "+86 138 1234 5678",
            "amount": "10.00", "tags": "新品,茶"}  # fmt: skip
    other = {**first, "amount": 11}
    with pytest.raises(events.EventInvalid) as caught:
        events.parse_batch([first, same, _ev("b1", "browse", "2026-01-01"), other], SH, now=NOW)
    assert caught.value.details["problems"] == [{"index": 3, "field": "event_id"}]
    assert len(events.parse_batch([first, same], SH, now=NOW)) == 2


def test_an_id_stored_with_other_content_is_a_conflict(runtime: Runtime, tenant_id: int) -> None:
    """An event id sent again with other content was dropped as a duplicate, unseen. Each field
    that differs makes it a conflict: not stored, no contact made for its number, counted apart
    from the identical replays (still duplicates) and named."""
    base = {"event_id": "", "kind": "order", "phone": "13812345678",
            "occurred_at": "2026-02-03T12:00:00", "amount": "10", "order_id": "A1",
            "coupon_code": "C1", "tags": ["茶", "新品"],
            "properties": {"sku": "S1", "n": 2}}  # fmt: skip
    changes: dict[str, dict[str, object]] = {
        "kind": {"kind": "browse"},
        "phone": {"phone": "13900000009"},  # a number with no contact yet
        "time": {"occurred_at": "2026-02-03T12:00:01"},
        "order": {"order_id": "A2"},
        "no-order": {"order_id": ""},
        "amount": {"amount": "10.01"},
        "coupon": {"coupon_code": "C2"},
        "tags": {"tags": ["茶"]},
        "properties": {"properties": {"sku": "S2", "n": 2}},
    }
    stored = [{**base, "event_id": name} for name in [*changes, "same"]]
    with runtime.engine.begin() as conn:
        first = events.ingest(
            conn, runtime.clock, runtime.keyring, tenant_id,
            events.parse_batch(stored, SH, now=NOW),
        )  # fmt: skip
    assert (first.accepted, first.contacts_created) == (10, 1)
    again = [{**base, "event_id": name, **change} for name, change in changes.items()]
    # identical: the same instant, number, amount and tags written otherwise
    again.append({**base, "event_id": "same", "occurred_at": "2026-02-03T04:00:00Z",
                  "phone": "+8613812345678", "amount": "10.00",
                  "tags": ["新品", "茶"]})  # fmt: skip
    again.append({**base, "event_id": "new", "amount": "1"})
    # held against the stored event, not the batch's first of its id (a conflict); as a file's
    # batch (parse_batch refuses an id twice with other contents: see the test above)
    again.append({**base, "event_id": "kind"})
    with runtime.engine.begin() as conn:
        got = events.ingest(
            conn, runtime.clock, runtime.keyring, tenant_id,
            [events.parse_event(raw, SH, now=NOW) for raw in again],
        )  # fmt: skip
    assert (got.received, got.accepted, got.duplicates, got.conflicts) == (12, 1, 2, 9)
    assert sorted(got.conflict_ids) == sorted(changes)
    assert got.contacts_created == 0
    assert got.as_json()["conflict_ids"] == got.conflict_ids
    with runtime.engine.connect() as conn:
        assert service.find_id(conn, runtime.keyring, tenant_id, "+8613900000009") is None
        cid = service.find_id(conn, runtime.keyring, tenant_id, "+8613812345678")
        assert cid is not None
        activity = service.get_contact(conn, tenant_id, cid)["activity"]
        count = conn.execute(
            TenantScope(tenant_id).select(contact_events, sa.func.count())
        ).scalar_one()
    assert count == 11 and activity["orders_count"] == 11 and activity["revenue_fen"] == 10100


def test_conflicts_in_a_file_and_at_most_50_ids(runtime: Runtime, tenant_id: int) -> None:
    """A file (no all-or-nothing batch) counts an id reused in it with other content as a
    conflict too, against the first; the ids listed stop at 50, the count does not."""
    lines = ["event_id,kind,phone,occurred_at,amount"]
    lines += [f"e{i},order,13900000001,2026-10-01T10:00:00,1" for i in range(60)]
    lines += [f"e{i},order,13900000001,2026-10-01T10:00:00,2" for i in range(60)]  # amount
    lines += ["e0,order,13900000001,2026-10-01T10:00:00,1"]  # the same again
    lines += ["x1,browse,13900000002,2026-10-01T10:00:00,", "x1,browse,13900000003,2026-10-01,"]
    data = ("\n".join(lines) + "\n").encode()
    out = events.import_file(runtime, tenant_id, io.BytesIO(data), "e.csv", batch_size=50)
    assert (out["rows"], out["accepted"], out["duplicates"], out["conflicts"]) == (123, 61, 1, 61)
    assert len(out["conflict_ids"]) == 50 and set(out["conflict_ids"]) <= {
        *(f"e{i}" for i in range(60)),
        "x1",
    }
    assert out["contacts_created"] == 2  # not 13900000003: its event conflicted
    again = events.import_file(runtime, tenant_id, io.BytesIO(data), "e.csv", batch_size=50)
    assert (again["accepted"], again["duplicates"], again["conflicts"]) == (0, 62, 61)


def test_events_do_not_read_the_suppression_list(runtime: Runtime, tenant_id: int) -> None:
    """The contact writer read the tenant's whole suppression list into memory on every event
    request, to use it never: events make contacts, they do not check suppressions. What they
    do read of it is bounded by the batch: whether its numbers were erased (one statement for
    the batch's numbers, by blind index)."""
    from hongyan.contacts import suppression

    with runtime.engine.begin() as conn:
        suppression.add(
            conn,
            runtime.clock,
            runtime.keyring,
            [suppression.NewSuppression(tenant_id, "+8613900000001", "opt_out", "test")],
        )
    touching: list[str] = []

    def listen(_c: object, _cur: object, statement: str, *_rest: object) -> None:
        if "suppressions" in statement:
            touching.append(statement)

    batch = [
        _ev("b1", "browse", "2026-02-01T10:00:00"),  # a new number
        {**_ev("o1", "order", "2026-02-02", amount=5), "phone": "13900000001"},  # suppressed
    ]
    sa.event.listen(runtime.engine, "before_cursor_execute", listen)
    try:
        with runtime.engine.begin() as conn:
            got = events.ingest(
                conn,
                runtime.clock,
                runtime.keyring,
                tenant_id,
                events.parse_batch(batch, SH, now=NOW),
            )
    finally:
        sa.event.remove(runtime.engine, "before_cursor_execute", listen)
    assert (got.accepted, got.contacts_created) == (2, 2)
    assert len(touching) == 1 and "phone_index IN" in touching[0], touching


def _postgres_only(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: two requests never meet")


def _until_waiting(runtime: Runtime, count: int) -> None:
    """Until ``count`` sessions of the test database wait on a lock (a row, a unique key)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with runtime.engine.connect() as conn:
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        if waiting >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{count} session(s) never waited on a lock")


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except Exception as exc:  # the test reads it
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


@pytest.mark.parametrize("holder", ["events", "contacts import"])
def test_a_new_number_in_two_requests_at_once_is_one_contact(
    runtime: Runtime, tenant_id: int, holder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another transaction (an event request, a contacts import) has just made the contact of a
    number, not committed yet, when an event request for the same number comes: its insert of
    the contact waits on the unique index, and failed on it once the other committed (the API's
    500, the batch lost). It now takes the other's contact and stores its events."""
    _postgres_only(runtime)

    def second() -> events.IngestResult:
        with runtime.engine.begin() as conn:
            return events.ingest(
                conn, runtime.clock, runtime.keyring, tenant_id,
                events.parse_batch(
                    [_ev("o1", "order", "2026-02-02", amount=5),
                     {**_ev("b2", "browse", "2026-02-03"), "phone": "13900000002"}],
                    SH,
                    now=NOW,
                ),
            )  # fmt: skip

    if holder == "events":
        with runtime.engine.begin() as conn:
            first = events.ingest(
                conn, runtime.clock, runtime.keyring, tenant_id,
                events.parse_batch([_ev("b1", "browse", "2026-02-01")], SH, now=NOW),
            )  # fmt: skip
            assert first.contacts_created == 1
            thread, out = _in_thread(second)
            _until_waiting(runtime, 1)
    else:
        inserted, go = threading.Event(), threading.Event()
        real = importer.consume

        def holding(w, batch, result, extra_tags, *, absent=False):  # type: ignore[no-untyped-def]
            real(w, batch, result, extra_tags, absent=absent)
            inserted.set()
            assert go.wait(30)

        monkeypatch.setattr(importer, "consume", holding)
        importing, imported = _in_thread(
            lambda: service.import_stream(
                runtime, tenant_id, io.BytesIO(b"phone\n13812345678\n"), "f.csv",
                importer.ImportOptions(),
            )
        )  # fmt: skip
        assert inserted.wait(30)
        thread, out = _in_thread(second)
        _until_waiting(runtime, 1)
        go.set()
        importing.join(30)
        assert "error" not in imported, imported
    thread.join(30)
    assert "error" not in out, out
    got = out["result"]
    assert isinstance(got, events.IngestResult)
    assert (got.accepted, got.contacts_created) == (2, 1)  # only 139… was new to it
    with runtime.engine.connect() as conn:
        listed = service.list_contacts(conn, runtime.keyring, tenant_id, limit=10).items
        cid = service.find_id(conn, runtime.keyring, tenant_id, "+8613812345678")
        assert cid is not None
        activity = service.get_contact(conn, tenant_id, cid)["activity"]
    assert len(listed) == 2 and activity["orders_count"] == 1


def test_batches_with_the_same_contacts_in_other_orders_do_not_deadlock(
    runtime: Runtime, tenant_id: int
) -> None:
    """Two batches move the aggregates of contacts X and Y, one listing X first, the other Y:
    each upserted its rows in its own order, so one could hold Y and wait for X while the other
    held X and waited for Y (PostgreSQL then kills one: a 500, the batch lost). The rows are
    now upserted in contact id and tag order. Made to happen: a third transaction holds X while
    the X-first batch queues for it, then the Y-first one."""
    _postgres_only(runtime)
    x, y = "13800000001", "13800000002"
    with runtime.engine.begin() as conn:
        events.ingest(
            conn, runtime.clock, runtime.keyring, tenant_id,
            events.parse_batch(
                [{**_ev("x0", "browse", "2026-01-01", tags=["茶"]), "phone": x},
                 {**_ev("y0", "browse", "2026-01-01", tags=["茶"]), "phone": y}],
                SH,
                now=NOW,
            ),
        )  # fmt: skip
        x_id = service.find_id(conn, runtime.keyring, tenant_id, "+86" + x)
        y_id = service.find_id(conn, runtime.keyring, tenant_id, "+86" + y)
    assert x_id is not None and y_id is not None
    if x_id > y_id:
        x, y, x_id, y_id = y, x, y_id, x_id

    def batch(name: str, first: str, then: str) -> Callable[[], events.IngestResult]:
        def run() -> events.IngestResult:
            with runtime.engine.begin() as conn:
                return events.ingest(
                    conn, runtime.clock, runtime.keyring, tenant_id,
                    events.parse_batch(
                        [{**_ev(f"{name}1", "browse", "2026-02-01", tags=["茶"]), "phone": first},
                         {**_ev(f"{name}2", "browse", "2026-02-01", tags=["茶"]), "phone": then}],
                        SH,
                        now=NOW,
                    ),
                )  # fmt: skip

        return run

    with runtime.engine.begin() as conn:
        conn.execute(
            TenantScope(tenant_id)
            .select(contact_activity, contact_activity.c.contact_id)
            .where(contact_activity.c.contact_id == x_id)
            .with_for_update()
        )
        x_first, x_out = _in_thread(batch("a", x, y))
        _until_waiting(runtime, 1)
        y_first, y_out = _in_thread(batch("b", y, x))
        _until_waiting(runtime, 2)
    for thread in (x_first, y_first):
        thread.join(30)
    assert "error" not in x_out and "error" not in y_out, (x_out, y_out)
    with runtime.engine.connect() as conn:
        activity = service.get_contact(conn, tenant_id, x_id)
    assert [(i["tag"], i["events"]) for i in activity["interests"]] == [("茶", 3)]


def test_contacts_made_after_a_lost_race_are_whole(
    runtime: Runtime, tenant_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path a lost race takes, on both databases: the lookup misses a contact another
    request made (simulated: it sees none), the bulk insert is refused, and the numbers are
    inserted again with ON CONFLICT DO NOTHING: the other's contact is left as it is and the
    new one is the contact the fast path makes (its zone, mask, country, source)."""
    with runtime.engine.begin() as conn:
        events.ingest(
            conn, runtime.clock, runtime.keyring, tenant_id,
            events.parse_batch([_ev("b1", "browse", "2026-02-01")], SH, now=NOW),
        )  # fmt: skip
    real, blind = importer._Writer.ids, [True]

    def first_sees_none(self: importer._Writer, keys: list[bytes]) -> dict[bytes, int]:
        if blind[0]:
            blind[0] = False
            return {}
        return real(self, keys)

    monkeypatch.setattr(importer._Writer, "ids", first_sees_none)
    with runtime.engine.begin() as conn:
        got = events.ingest(
            conn, runtime.clock, runtime.keyring, tenant_id,
            events.parse_batch(
                [_ev("b2", "browse", "2026-02-02"),
                 {**_ev("b3", "browse", "2026-02-03"), "phone": "+1 212 555 1234"}],
                SH,
                now=NOW,
            ),
        )  # fmt: skip
    assert not blind[0] and (got.accepted, got.contacts_created) == (2, 1)
    with runtime.engine.connect() as conn:
        listed = service.list_contacts(conn, runtime.keyring, tenant_id, limit=10).items
        made = service.find_id(conn, runtime.keyring, tenant_id, "+12125551234")
        assert made is not None
        contact = service.get_contact(conn, tenant_id, made)
    assert len(listed) == 2
    assert (contact["phone_masked"], contact["country"], contact["source"]) == (
        "+121****1234",
        "US",
        "event",
    )
    assert contact["time_zone"] == "America/New_York" and contact["attrs"] == {}
