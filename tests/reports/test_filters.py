"""The pure parts of the read side: filter parsing, cursors, and the order of a timeline."""

from __future__ import annotations

import base64
import re
import string
import unicodedata
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.dispatch.states import FINAL, State
from hongyan.reports import messages as reports
from hongyan.reports.messages import BadFilter, NumberQuery
from hongyan.security.keyring import mask_phone

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


@given(st.text(alphabet=string.digits, min_size=1, max_size=4))
def test_one_to_four_digits_are_a_suffix(digits: str) -> None:
    assert reports.parse_number(digits) == NumberQuery("suffix", digits)
    assert reports.parse_number(f" {digits} ") == NumberQuery("suffix", digits)


@given(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True))
def test_an_e164_number_is_exact(number: str) -> None:
    assert reports.parse_number(number) == NumberQuery("exact", number)


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_a_national_mobile_is_exact_and_its_mask_is_a_mask(national: str) -> None:
    assert reports.parse_number(national) == NumberQuery("exact", "+86" + national)
    masked = mask_phone("+86" + national)
    assert reports.parse_number(masked) == NumberQuery("masked", masked)


@given(st.text(min_size=1, max_size=20))
def test_anything_else_is_refused_or_a_number(text: str) -> None:
    try:
        q = reports.parse_number(text)
    except BadFilter as exc:
        assert [p.field for p in exc.problems] == ["number"]
        assert exc.status == 422 and "1–4" in exc.message_zh
        return
    if q is None:  # nothing but spaces and separators
        assert not re.sub(r"[\s\-()]", "", unicodedata.normalize("NFKC", text))
        return
    assert q.kind in ("suffix", "exact", "masked")
    assert q.value.replace("+", "").replace("*", "").isdigit()


@pytest.mark.parametrize(
    "text", ["abc", "12a4", "12345", "1234567890", "+0123", "+86 138", "138*5678", "%", "1_2"]
)
def test_letters_and_wrong_lengths_are_refused(text: str) -> None:
    with pytest.raises(BadFilter) as err:
        reports.parse_number(text)
    assert err.value.code == "bad_filter"
    assert "号码" in err.value.message_zh and "digits" in err.value.message_en


@pytest.mark.parametrize("text", [None, "", "   ", "--", "（）"])
def test_an_empty_number_box_is_no_filter(text: str | None) -> None:
    assert reports.parse_number(text) is None


def test_instants_in_the_tenant_zone() -> None:
    start = reports.parse_instant("2026-11-11", SHANGHAI)
    end = reports.parse_instant("2026-11-11", SHANGHAI, end=True)
    assert start == datetime(2026, 11, 10, 16, 0, tzinfo=UTC)
    assert end == datetime(2026, 11, 11, 16, 0, tzinfo=UTC)
    assert reports.parse_instant("2026-11-11T10:30", SHANGHAI) == datetime(
        2026, 11, 11, 2, 30, tzinfo=UTC
    )
    assert reports.parse_instant("2026-11-11 10:30:15", SHANGHAI, end=True) == datetime(
        2026, 11, 11, 2, 30, 15, tzinfo=UTC
    )
    assert reports.parse_instant("2026-11-11T10:30Z", SHANGHAI) == datetime(
        2026, 11, 11, 10, 30, tzinfo=UTC
    )
    # A day in a zone with daylight saving: 2026-11-01 in New York has 25 hours.
    day = reports.parse_instant("2026-11-01", NEW_YORK)
    day_end = reports.parse_instant("2026-11-01", NEW_YORK, end=True)
    assert day is not None and day_end is not None and day_end - day == timedelta(hours=25)
    assert reports.parse_instant("", SHANGHAI) is None


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 30)))
def test_a_bare_date_spans_one_local_day(day: date) -> None:
    start = reports.parse_instant(day.isoformat(), SHANGHAI)
    end = reports.parse_instant(day.isoformat(), SHANGHAI, end=True)
    assert start is not None and end is not None
    assert end - start == timedelta(days=1)
    assert start.astimezone(SHANGHAI).date() == day
    assert start.tzinfo == UTC


@pytest.mark.parametrize(
    "text", ["2026-13-45", "yesterday", "2026-11-31", "11/11/2026", "9999-12-31T23:59:59-23:59"]
)
def test_unreadable_times_are_refused(text: str) -> None:
    with pytest.raises(BadFilter) as err:
        reports.parse_instant(text, SHANGHAI, name="until")
    assert [p.field for p in err.value.problems] == ["until"]


def test_bare_end_date_at_the_end_of_time_is_refused() -> None:
    with pytest.raises(BadFilter):
        reports.parse_instant("9999-12-31", SHANGHAI, end=True)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(BadFilter) as err:
        reports.message_filter(
            SHANGHAI,
            states=["delivered", "lost"],
            category="spam",
            source="Bad Source!",
            since="2026-13-01",
            until="never",
            number="abc",
        )
    fields = [p.field for p in err.value.problems]
    assert fields == ["state", "category", "source", "since", "until", "number"]
    assert err.value.details["problems"][0]["field"] == "state"
    with pytest.raises(BadFilter) as err:
        reports.message_filter(SHANGHAI, since="2026-11-12", until="2026-11-11")
    assert [p.field for p in err.value.problems] == ["until"]


def test_a_good_filter() -> None:
    flt = reports.message_filter(
        SHANGHAI,
        states=["delivered,failed", "delivered", ""],
        category="marketing",
        source="campaign",
        since="2026-11-01",
        until="2026-11-11",
        number="5678",
    )
    assert flt.states == ("delivered", "failed")
    assert flt.category == "marketing" and flt.source == "campaign"
    assert flt.created_from == datetime(2026, 10, 31, 16, tzinfo=UTC)
    assert flt.created_to == datetime(2026, 11, 11, 16, tzinfo=UTC)
    assert flt.number == NumberQuery("suffix", "5678")
    assert reports.message_filter(SHANGHAI) == reports.MessageFilter()


def test_inbox_and_suppression_filters() -> None:
    assert reports.inbox_filter(kind="opt_out").kind == "opt_out"
    assert reports.suppression_filter(reason="invalid", number="").reason == "invalid"
    with pytest.raises(BadFilter):
        reports.inbox_filter(kind="spam")
    with pytest.raises(BadFilter):
        reports.suppression_filter(reason="whim")


@pytest.mark.parametrize("text", ["0", "-1", "x", "1.5", "1000001", "٣"])
def test_bad_page_numbers(text: str) -> None:
    with pytest.raises(BadFilter):
        reports.parse_page(text)


def test_page_numbers() -> None:
    assert reports.parse_page(None) == 1 and reports.parse_page("") == 1
    assert reports.parse_page("7") == 7


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    st.integers(min_value=1, max_value=2**63 - 1),
)
def test_cursor_round_trip(at: datetime, row_id: int) -> None:
    text = reports.encode_cursor(at, row_id)
    assert text.isascii() and "=" not in text
    assert reports.decode_cursor(text) == (at, row_id)


@given(st.text(max_size=40))
def test_garbage_cursors_are_refused_cleanly(text: str) -> None:
    try:
        at, row_id = reports.decode_cursor(text)
    except BadFilter as exc:
        assert [p.field for p in exc.problems] == ["cursor"]
    else:  # only a well-formed cursor decodes
        assert at.tzinfo is not None and row_id > 0


def test_cursor_with_a_bad_id_is_refused() -> None:
    for raw in ("2026-11-11T00:00:00+00:00|0", "2026-11-11T00:00:00|5", "x|5", "a|b|c"):
        text = base64.urlsafe_b64encode(raw.encode()).decode()
        with pytest.raises(BadFilter):
            reports.decode_cursor(text)


T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)


def _message(state: State, attempts: int, **extra: object) -> dict[str, object]:
    return {
        "state": state.value,
        "attempts": attempts,
        "created_at": T0,
        "due_at": T0,
        "expires_at": T0 + timedelta(days=1),
        "source": "api",
        "category": "notification",
        "parts": 2,
        "encoding": "ucs2",
        "reason": None,
        "carrier_code": None,
        "lease_until": None,
        "done_at": None,
        **extra,
    }


seconds = st.integers(min_value=0, max_value=3600)


@given(
    st.sampled_from(list(State)),
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=0, max_value=600),
    st.lists(st.tuples(seconds, st.one_of(st.none(), seconds)), max_size=4),
    st.lists(seconds, max_size=3),
    st.one_of(st.none(), seconds),
)
def test_timeline_is_in_time_order_and_complete(
    state: State,
    attempts: int,
    due_after: int,
    parts: list[tuple[int, int | None]],
    replies: list[int],
    done_after: int | None,
) -> None:
    due = T0 + timedelta(seconds=due_after)
    part_rows = [
        {
            "part_no": n,
            "channel": "c",
            "carrier_id": f"id{n}",
            "submitted_at": due + timedelta(seconds=sub),
            "stat": None if rec is None else "DELIVRD",
            "err": None if rec is None else "000",
            "reason": None,
            "done_at": None if rec is None else due + timedelta(seconds=sub + rec),
        }
        for n, (sub, rec) in enumerate(parts, start=1)
    ]
    reply_rows = [
        {"id": i, "kind": "reply", "text": "好", "received_at": T0 + timedelta(seconds=r)}
        for i, r in enumerate(replies)
    ]
    done = None if done_after is None else due + timedelta(seconds=done_after)
    message = _message(state, attempts, due_at=due, done_at=done)
    events = reports.build_events(message, part_rows, reply_rows)
    kinds = [e.kind for e in events]
    assert kinds[0] == "created"
    assert kinds.count("submitted") == len(parts)
    assert kinds.count("receipt") == sum(1 for _, rec in parts if rec is not None)
    assert kinds.count("reply") == len(replies)
    assert kinds.count("final") == (1 if state in FINAL else 0)
    assert kinds.count("claimed") == (1 if attempts else 0)
    assert kinds.count("retry") == (1 if state is State.PLANNED and attempts else 0)
    dated = [e.at for e in events if e.at is not None]
    assert dated == sorted(dated)
    if "claimed" in kinds:  # an undated claim sits after the due time, before any submit
        at = kinds.index("claimed")
        assert all(k not in ("submitted", "receipt") for k in kinds[:at])


def test_many_unknown_states_make_one_problem() -> None:
    with pytest.raises(BadFilter) as err:
        reports.message_filter(SHANGHAI, states=[f"s{i}" for i in range(500)] + ["delivered"])
    assert [p.field for p in err.value.problems] == ["state"]
    assert len(err.value.message_en) < 300
