"""Send records, timelines, inbox and suppression list on both backends, tenant by tenant."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from hongyan.clock import FixedClock
from hongyan.errors import NotFound
from hongyan.reports import messages as reports
from hongyan.runtime import Runtime
from tests.reports.seeding import DAY1, DAY2, NUMBERS, Seed, seed

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def seeded(runtime: Runtime, clock: FixedClock) -> Seed:
    return seed(runtime, clock)


def _ids(runtime: Runtime, tenant: int, limit: int = 50, **filters: object) -> list[int]:
    flt = reports.message_filter(SHANGHAI, **filters)  # type: ignore[arg-type]
    with runtime.engine.connect() as conn:
        page = reports.list_messages(conn, runtime.keyring, tenant, flt, limit=limit)
    return [m["id"] for m in page.items]


def test_list_is_newest_first_masked_and_counted(runtime: Runtime, seeded: Seed) -> None:
    with runtime.engine.connect() as conn:
        page = reports.list_messages(
            conn, runtime.keyring, seeded.tenant, reports.MessageFilter(), limit=50
        )
    assert page.total == 8 and len(page.items) == 8 and page.next_cursor is None
    keys = [(m["created_at"], m["id"]) for m in page.items]
    assert keys == sorted(keys, reverse=True)
    # The two from the second day first; within one instant the higher id first.
    assert [m["id"] for m in page.items[:2]] == [seeded.ids["planned"], seeded.ids["sending"]]
    assert seeded.other_id not in {m["id"] for m in page.items}
    for m in page.items:
        assert "dest_cipher" not in m and "dest_index" not in m
        assert "****" in m["dest_masked"]
        assert m["dest_masked"] not in NUMBERS.values()


def test_state_filter_one_or_several_and_counts(runtime: Runtime, seeded: Seed) -> None:
    ids = seeded.ids
    assert _ids(runtime, seeded.tenant, states="delivered") == [ids["delivered"]]
    several = _ids(runtime, seeded.tenant, states=["undelivered", "failed"])
    assert sorted(several) == sorted([ids["invalid"], ids["failed"]])
    assert sorted(_ids(runtime, seeded.tenant, states="planned,sending")) == sorted(
        [ids["retry"], ids["planned"], ids["sending"]]
    )
    with runtime.engine.connect() as conn:
        everything = reports.state_counts(
            conn, runtime.keyring, seeded.tenant, reports.MessageFilter(states=("delivered",))
        )
        narrowed = reports.state_counts(
            conn,
            runtime.keyring,
            seeded.tenant,
            reports.message_filter(SHANGHAI, number="5678"),
        )
        other = reports.state_counts(conn, runtime.keyring, seeded.other, reports.MessageFilter())
    assert everything == {
        "planned": 2,
        "sending": 1,
        "submitted": 1,
        "delivered": 1,
        "undelivered": 1,
        "expired": 1,
        "failed": 1,
        "cancelled": 0,
        "held": 0,  # a paused campaign's messages (none here)
    }
    assert narrowed["delivered"] == 1 and narrowed["submitted"] == 1
    assert sum(narrowed.values()) == 2
    assert other["delivered"] == 1 and sum(other.values()) == 1


def test_category_and_source(runtime: Runtime, seeded: Seed) -> None:
    ids = seeded.ids
    marketing = _ids(runtime, seeded.tenant, category="marketing")
    assert sorted(marketing) == sorted([ids["invalid"], ids["planned"]])
    assert _ids(runtime, seeded.tenant, source="campaign") == [ids["planned"]]
    assert _ids(runtime, seeded.tenant, source="journey") == []
    assert _ids(runtime, seeded.tenant, category="verification", states="sending") == [
        ids["sending"]
    ]


def test_dates_are_read_in_the_tenant_time_zone(runtime: Runtime, seeded: Seed) -> None:
    ids = seeded.ids
    second_day = sorted([ids["sending"], ids["planned"]])
    # DAY2 is 00:30 on the 11th in Shanghai but still the 10th in UTC.
    assert sorted(_ids(runtime, seeded.tenant, since="2026-11-11")) == second_day
    first_day = _ids(runtime, seeded.tenant, until="2026-11-10")
    assert len(first_day) == 6 and not set(first_day) & set(second_day)
    assert _ids(runtime, seeded.tenant, since="2026-11-11", until="2026-11-11") == [
        ids["planned"],
        ids["sending"],
    ]
    # since is inclusive to the microsecond; until is exclusive for a time of day.
    assert len(_ids(runtime, seeded.tenant, since="2026-11-10T11:00")) == 8
    assert len(_ids(runtime, seeded.tenant, since="2026-11-10T11:00:01")) == 2
    assert len(_ids(runtime, seeded.tenant, until="2026-11-10T11:00")) == 0
    assert len(_ids(runtime, seeded.tenant, until="2026-11-10T11:00:00.000001")) == 6
    # An explicit offset is honoured whatever the tenant's zone.
    assert len(_ids(runtime, seeded.tenant, since=DAY2.isoformat())) == 2
    assert len(_ids(runtime, seeded.tenant, until=DAY1.isoformat())) == 0
    assert _ids(runtime, seeded.tenant, since="2026-11-12") == []


def test_number_by_last_digits_full_number_or_mask(runtime: Runtime, seeded: Seed) -> None:
    ids = seeded.ids
    tenant = seeded.tenant
    ends_5678 = sorted([ids["delivered"], ids["submitted"]])
    assert sorted(_ids(runtime, tenant, number="5678")) == ends_5678
    assert sorted(_ids(runtime, tenant, number="78")) == ends_5678
    assert _ids(runtime, tenant, number="0001") == [ids["invalid"]]
    assert _ids(runtime, tenant, number="１２３４") == [ids["retry"]]  # full-width digits
    assert _ids(runtime, tenant, number="4444") == []
    # The digits must end the number: not its prefix, not the middle of its last four.
    assert _ids(runtime, tenant, number="138") == [] and _ids(runtime, tenant, number="56") == []
    for full in ("+8613812345678", "13812345678", "138 1234 5678", "138****5678"):
        assert _ids(runtime, tenant, number=full) == [ids["delivered"]], full
    # The same number in the other tenant: a different blind index, a different list.
    assert _ids(runtime, seeded.other, number="+8613812345678") == [seeded.other_id]
    assert _ids(runtime, seeded.other, number="5678") == [seeded.other_id]
    assert _ids(runtime, seeded.other, number="0001") == []


def test_keyset_and_offset_paging_agree(runtime: Runtime, seeded: Seed) -> None:
    everything = _ids(runtime, seeded.tenant)
    walked: list[int] = []
    cursor: str | None = None
    pages = 0
    with runtime.engine.connect() as conn:
        while True:
            page = reports.list_messages(
                conn,
                runtime.keyring,
                seeded.tenant,
                reports.MessageFilter(),
                limit=3,
                cursor=cursor,
            )
            assert page.total == 8
            walked += [m["id"] for m in page.items]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        middle = reports.list_messages(
            conn, runtime.keyring, seeded.tenant, reports.MessageFilter(), limit=3, offset=3
        )
        filtered = reports.list_messages(
            conn,
            runtime.keyring,
            seeded.tenant,
            reports.message_filter(SHANGHAI, until="2026-11-10"),
            limit=4,
        )
        rest = reports.list_messages(
            conn,
            runtime.keyring,
            seeded.tenant,
            reports.message_filter(SHANGHAI, until="2026-11-10"),
            limit=4,
            cursor=filtered.next_cursor,
        )
    assert walked == everything and pages == 3
    assert [m["id"] for m in middle.items] == everything[3:6]
    # Six messages were created at the same instant: the id breaks the tie across pages.
    assert [m["id"] for m in filtered.items + rest.items] == everything[2:]
    assert rest.next_cursor is None and rest.total == 6


def test_timeline_of_a_delivered_two_part_message(runtime: Runtime, seeded: Seed) -> None:
    with runtime.engine.connect() as conn:
        tl = reports.message_timeline(conn, seeded.tenant, seeded.ids["delivered"])
    kinds = [e.kind for e in tl.events]
    assert kinds == [
        "created",
        "due",
        "claimed",
        "submitted",
        "submitted",
        "receipt",
        "receipt",
        "final",
        "reply",
    ]
    dated = [e.at for e in tl.events if e.at is not None]
    assert dated == sorted(dated)
    assert tl.message["dest_masked"] == "138****5678" and tl.message["parts"] == 2
    assert "dest_cipher" not in tl.message and "dest_index" not in tl.message
    submitted = [e.detail for e in tl.events if e.kind == "submitted"]
    mid = seeded.ids["delivered"]
    assert [d["carrier_id"] for d in submitted] == [f"{mid:04x}01", f"{mid:04x}02"]
    assert [d["part_no"] for d in submitted] == [1, 2]
    receipts = [e for e in tl.events if e.kind == "receipt"]
    assert all(e.detail["stat"] == "DELIVRD" and e.at is not None for e in receipts)
    final = tl.events[-2]
    assert final.detail["state"] == "delivered" and final.at is not None
    assert tl.events[-1].detail["text"] == "好的，谢谢"
    assert tl.events[2].detail["attempts"] == 1 and tl.events[2].at is None
    assert len(tl.parts) == 2 and len(tl.replies) == 1


def test_timelines_in_the_other_states(runtime: Runtime, seeded: Seed) -> None:
    ids = seeded.ids
    with runtime.engine.connect() as conn:

        def kinds(name: str) -> list[str]:
            return [e.kind for e in reports.message_timeline(conn, seeded.tenant, ids[name]).events]

        invalid = reports.message_timeline(conn, seeded.tenant, ids["invalid"])
        retry = reports.message_timeline(conn, seeded.tenant, ids["retry"])
        sending = reports.message_timeline(conn, seeded.tenant, ids["sending"])
        failed = reports.message_timeline(conn, seeded.tenant, ids["failed"])
        assert kinds("planned") == ["created", "due"]
        assert kinds("submitted") == ["created", "due", "claimed", "submitted", "reply"]
        assert kinds("expired") == ["created", "due", "claimed", "final"]
    receipt = next(e for e in invalid.events if e.kind == "receipt")
    assert receipt.detail == {
        "part_no": 1,
        "carrier_id": f"{ids['invalid']:04x}01",
        "stat": "UNDELIV",
        "err": "001",
        "reason": "invalid_number",
    }
    assert invalid.events[-1].detail == {
        "state": "undelivered",
        "reason": "invalid_number",
        "carrier_code": "001",
    }
    assert [e.kind for e in retry.events] == ["created", "claimed", "retry"]
    assert retry.events[-1].detail["reason"] == "throttled"
    assert retry.events[-1].detail["carrier_code"] == "0x00000058"
    assert retry.events[-1].at == DAY1 + timedelta(seconds=23)
    assert [e.kind for e in sending.events] == ["created", "due", "claimed"]
    assert sending.events[-1].detail["lease_until"] == DAY2 + timedelta(seconds=30)
    assert failed.events[-1].kind == "final"
    assert failed.events[-1].detail["carrier_code"] == "0x00000045"
    assert failed.parts == []


@pytest.mark.parametrize("which", ["other", 0, -5, 2**63, 10**30, 99999])
def test_timeline_across_tenants_or_out_of_range_is_not_found(
    runtime: Runtime, seeded: Seed, which: object
) -> None:
    mid = seeded.other_id if which == "other" else int(which)  # type: ignore[call-overload]
    with runtime.engine.connect() as conn, pytest.raises(NotFound):
        reports.message_timeline(conn, seeded.tenant, mid)


def test_inbox_newest_first_by_kind_and_number(runtime: Runtime, seeded: Seed) -> None:
    k = runtime.keyring
    with runtime.engine.connect() as conn:
        everything = reports.list_inbox(conn, k, seeded.tenant, reports.InboxFilter())
        opt_outs = reports.list_inbox(conn, k, seeded.tenant, reports.inbox_filter(kind="opt_out"))
        by_digits = reports.list_inbox(conn, k, seeded.tenant, reports.inbox_filter(number="5678"))
        exact = reports.list_inbox(
            conn, k, seeded.tenant, reports.inbox_filter(number=NUMBERS["submitted"])
        )
        counts = reports.inbox_counts(conn, k, seeded.tenant, reports.InboxFilter(kind="reply"))
        other = reports.list_inbox(conn, k, seeded.other, reports.InboxFilter())
    assert [x["id"] for x in everything.items] == [
        seeded.replies["optout"],
        seeded.replies["thanks"],
    ]
    assert everything.total == 2
    assert [x["text"] for x in opt_outs.items] == ["退订"]
    assert by_digits.total == 2
    assert [x["phone_masked"] for x in exact.items] == ["137****5678"]
    assert counts == {"reply": 1, "opt_out": 1}
    assert [x["text"] for x in other.items] == ["面很好吃"]
    for item in everything.items:
        assert set(item) == {
            "id",
            "channel",
            "phone_masked",
            "destination",
            "text",
            "kind",
            "message_id",
            "received_at",
        }


def test_suppression_list_masked_and_filtered(runtime: Runtime, seeded: Seed) -> None:
    k = runtime.keyring
    with runtime.engine.connect() as conn:
        mine = reports.list_suppressions(conn, k, seeded.tenant, reports.SuppressionFilter())
        invalid = reports.list_suppressions(
            conn, k, seeded.tenant, reports.suppression_filter(reason="invalid")
        )
        by_number = reports.list_suppressions(
            conn, k, seeded.tenant, reports.suppression_filter(number="13700005678")
        )
        other = reports.list_suppressions(conn, k, seeded.other, reports.SuppressionFilter())
    assert sorted(x["phone_masked"] for x in mine.items) == ["137****5678", "139****0001"]
    assert all("phone_index" not in x and "phone_cipher" not in x for x in mine.items)
    assert [x["reason"] for x in invalid.items] == ["invalid"]
    assert invalid.items[0]["scope"] == "all" and invalid.items[0]["expires_at"] is not None
    assert [(x["reason"], x["source"]) for x in by_number.items] == [("opt_out", "reply")]
    assert [x["reason"] for x in other.items] == ["manual"]


def test_bad_limits_and_cursors_are_typed(runtime: Runtime, seeded: Seed) -> None:
    with runtime.engine.connect() as conn:
        for kwargs in ({"limit": 0}, {"limit": 201}, {"cursor": "nonsense"}, {"offset": -1}):
            with pytest.raises(reports.BadFilter):
                reports.list_messages(
                    conn,
                    runtime.keyring,
                    seeded.tenant,
                    reports.MessageFilter(),
                    **kwargs,  # type: ignore[arg-type]
                )
