"""Saved segments, previews, exports and snapshots against both databases."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from hongyan.audience import segments
from hongyan.clock import FixedClock
from hongyan.contacts import events, suppression
from hongyan.errors import Conflict, NotFound
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants

PHONES = [f"+861390000{i:04d}" for i in range(12)]
BUYERS = {"rule": {"field": "orders_count", "op": "gte", "value": 1}}


@pytest.fixture
def shop(runtime: Runtime, clock: FixedClock) -> int:
    """12 contacts who browsed 果茶; the first 8 bought; marketing consent granted to 0–9, then
    revoked by 9; 0 opted out (stops marketing), 1 is 空号 (stops everything)."""
    now = clock.now()
    with runtime.engine.begin() as conn:
        tid = tenants.create_tenant(conn, clock, slug="tea", name="鸿雁茶饮").id
        evs = [
            events.Event(f"o{i}", "order", p, now - timedelta(days=i), amount_fen=1000 * (i + 1))
            for i, p in enumerate(PHONES[:8])
        ] + [events.Event(f"b{i}", "browse", p, now, tags=("果茶",)) for i, p in enumerate(PHONES)]
        events.ingest(conn, clock, runtime.keyring, tid, evs)
        suppression.record_consent(
            conn, clock, runtime.keyring,
            [suppression.ConsentChange(tid, p, "marketing", "granted", "门店", "勾选", "test")
             for p in PHONES[:10]],
        )  # fmt: skip
        clock.advance(timedelta(seconds=1))
        suppression.record_consent(
            conn, clock, runtime.keyring,
            [suppression.ConsentChange(tid, PHONES[9], "marketing", "revoked", "电话", "客服",
                                       "t")],
        )  # fmt: skip
        suppression.add(
            conn, clock, runtime.keyring,
            [suppression.NewSuppression(tid, PHONES[0], "opt_out", "reply"),
             suppression.NewSuppression(tid, PHONES[1], "invalid", "receipt")],
        )  # fmt: skip
    return tid


def test_create_list_update_delete(runtime: Runtime, clock: FixedClock, shop: int) -> None:
    with runtime.engine.begin() as conn:
        seg = segments.create(conn, clock, shop, name="买过", rule=BUYERS["rule"], actor="t")
        with pytest.raises(Conflict):
            segments.create(conn, clock, shop, name="买过", rule=BUYERS["rule"], actor="t")
        user = segments.create(
            conn, clock, shop, name="买过的女生",
            rule={"all": [{"field": "segment", "op": "in", "value": "买过"}]}, actor="t",
        )  # fmt: skip
        with pytest.raises(Conflict, match="use this one"):
            segments.delete(conn, clock, shop, seg["id"], actor="t")
        # a change that would close a circle is refused
        with pytest.raises(Exception, match="circle"):
            segments.update(
                conn, clock, shop, seg["id"], actor="t",
                rule={"field": "segment", "op": "in", "value": user["id"]},
            )  # fmt: skip
        clock.advance(timedelta(seconds=1))
        renamed = segments.update(conn, clock, shop, seg["id"], name="老客", actor="t")
        assert renamed["name"] == "老客"
        assert segments.list_segments(conn, shop)[0]["name"] == "老客"
        segments.delete(conn, clock, shop, user["id"], actor="t")
        segments.delete(conn, clock, shop, seg["id"], actor="t")
        assert segments.list_segments(conn, shop) == []


def test_other_tenants_segments_are_not_found(
    runtime: Runtime, clock: FixedClock, shop: int
) -> None:
    with runtime.engine.begin() as conn:
        seg = segments.create(conn, clock, shop, name="买过", rule=BUYERS["rule"], actor="t")
        other = tenants.create_tenant(conn, clock, slug="pharmacy", name="药房").id
        with pytest.raises(NotFound):
            segments.get(conn, other, seg["id"])
        with pytest.raises(Exception, match="no saved segment"):
            segments.count(conn, clock, other, {"field": "segment", "op": "in", "value": seg["id"]})
        assert segments.count(conn, clock, other, {"all": []}) == 0


def test_preview_masks_and_counts_reach(runtime: Runtime, clock: FixedClock, shop: int) -> None:
    with runtime.engine.connect() as conn:
        got = segments.preview(conn, clock, shop, BUYERS["rule"], sample=5, reach="marketing")
    assert got["count"] == 8
    assert len(got["sample"]) == 5
    assert all("****" in r["phone_masked"] for r in got["sample"])
    assert not any(p[3:] in str(got) for p in PHONES)
    assert got["reach"] == {"included": 6, "suppressed": 2, "no_consent": 0}


def test_snapshot_excludes_and_says_why(runtime: Runtime, clock: FixedClock, shop: int) -> None:
    everyone = {"field": "interest", "op": "has", "value": "果茶"}
    with runtime.engine.begin() as conn:
        seg = segments.create(conn, clock, shop, name="果茶", rule=everyone, actor="t")
        aud = segments.snapshot(conn, clock, shop, segment=seg["id"], campaign_ref="c1", actor="t")
    assert aud["counts"] == {"matched": 12, "included": 7, "suppressed": 2, "no_consent": 3}
    with runtime.engine.begin() as conn:
        note = segments.snapshot(
            conn, clock, shop, rule=everyone, purpose="notification", actor="t"
        )
        # notifications: only 空号 stops them; nobody granted notification consent
        assert note["counts"] == {"matched": 12, "included": 0, "suppressed": 1, "no_consent": 11}
        included = segments.members(conn, shop, aud["id"])
    assert len(included) == 7
    # frozen: a later change does not move the audience
    with runtime.engine.begin() as conn:
        suppression.add(
            conn, clock, runtime.keyring,
            [suppression.NewSuppression(shop, PHONES[5], "opt_out", "reply")],
        )  # fmt: skip
        assert len(segments.members(conn, shop, aud["id"])) == 7
        assert segments.get_audience(conn, shop, aud["id"])["rule"]["field"] == "interest"


def test_export_csv(runtime: Runtime, clock: FixedClock, shop: int) -> None:
    with runtime.engine.begin() as conn:
        seg = segments.create(conn, clock, shop, name="买过", rule=BUYERS["rule"], actor="t")
    body = b"".join(segments.export_csv(runtime.engine, clock, shop, seg["id"], actor="t"))
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert len(rows) == 8
    assert {r["revenue_yuan"] for r in rows} == {f"{10 * (i + 1)}.00" for i in range(8)}
    assert all("****" in r["phone_masked"] for r in rows)
