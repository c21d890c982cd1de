"""RFM scores and groups on a small hand-checked dataset, ties included, and lifecycle stages,
on SQLite and PostgreSQL; the pure rules exhaustively."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from hongyan.audience import recompute, scoring, service
from hongyan.audience.scoring import Splits, Thresholds
from hongyan.clock import FixedClock
from hongyan.contacts import events
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contact_activity, contacts
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants

NOW = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)

# name: (days since the last order, orders, revenue in yuan); earlier orders 30 days apart.
BUYERS = {
    "A": (5, 10, 5000),
    "B": (5, 3, 800),
    "C": (20, 1, 800),
    "D": (40, 1, 3500),
    "E": (60, 6, 3000),
    "F": (100, 1, 50),
    "G": (100, 2, 300),
    "H": (200, 1, 4500),
    "I": (300, 8, 4000),
    "J": (400, 1, 20),
}
# Worked by hand (see docs/architecture.md, "RFM"): score = 1 + floor(5 × lower / 10).
# R by last order (older lower): J I H {F G} E D C {A B}; lower = 0 1 2 3 3 5 6 7 8 8.
# F by orders: {C D F H J}=1, G=2, B=3, E=6, I=8, A=10; lower = 0×5, 5, 6, 7, 8, 9.
# M by revenue: J F G {B C} E D I H A; lower = 0 1 2 3 3 5 6 7 8 9.
EXPECTED = {  # R F M, group (means: R 2.9, F 2.6, M 2.9; high = above the mean)
    "A": (5, 5, 5, "important_value"),
    "B": (5, 4, 2, "general_value"),
    "C": (4, 1, 2, "general_develop"),
    "D": (4, 1, 4, "important_develop"),
    "E": (3, 4, 3, "important_value"),
    "F": (2, 1, 1, "general_retain"),
    "G": (2, 3, 2, "general_keep"),
    "H": (2, 1, 5, "important_retain"),
    "I": (1, 5, 4, "important_keep"),
    "J": (1, 1, 1, "general_retain"),
}
STAGES = {
    "A": "active",  # last order 5 days ago, first 275 days ago
    "B": "active",
    "C": "new",  # first (and only) order 20 days ago
    "D": "lapsing",  # 40 days: past active (30), not yet dormant (90)
    "E": "lapsing",
    "F": "dormant",  # 100 days
    "G": "dormant",
    "H": "lost",  # no interaction for 200 days
    "I": "lost",
    "J": "lost",
    "K": "potential",  # browsed 10 days ago, never bought
    "L": "none",  # imported, no behaviour
    "M": "new",  # registered 3 days ago
    "N": "lost",  # browsed 200 days ago, nothing since
}
PHONES = {name: f"+86138000000{i:02d}" for i, name in enumerate("ABCDEFGHIJKLMN")}


def _events() -> list[events.Event]:
    out = []
    for name, (days, orders, yuan) in BUYERS.items():
        fen = yuan * 100
        for k in range(orders):
            amount = fen // orders + (fen % orders if k == 0 else 0)
            at = NOW - timedelta(days=days + 30 * k)
            out.append(
                events.Event(f"{name}-{k}", "order", PHONES[name], at, order_id=f"{name}{k}",
                             amount_fen=amount)
            )  # fmt: skip
    out.append(events.Event("K-1", "browse", PHONES["K"], NOW - timedelta(days=10), tags=("果茶",)))
    out.append(events.Event("M-1", "registration", PHONES["M"], NOW - timedelta(days=3)))
    out.append(events.Event("N-1", "browse", PHONES["N"], NOW - timedelta(days=200)))
    return out


@pytest.fixture
def shop(runtime: Runtime, clock: FixedClock) -> int:
    clock.set(NOW)
    with runtime.engine.begin() as conn:
        tid = tenants.create_tenant(conn, clock, slug="tea", name="鸿雁茶饮").id
        events.ingest(conn, clock, runtime.keyring, tid, _events())
        # L: a contact with no behaviour, as an import leaves it
        events._contact_ids(conn, runtime.keyring, clock, tid, [PHONES["L"]])
    return tid


def _by_name(runtime: Runtime, tid: int, clock: FixedClock | None = None) -> dict[str, tuple]:
    """Every contact's (r, f, m, group, stage) as rules and samples read them: computed from
    the aggregates, the tenant's cuts and splits, and the clock."""
    names = {runtime.keyring.blind_index(p, f"tenant:{tid}:phone"): n for n, p in PHONES.items()}
    a = contact_activity
    with runtime.engine.connect() as conn:
        cuts = service.get_cuts(conn, tid)
        settings = service.get_settings(conn, tid)
        now = clock.now() if clock else NOW
        rows = conn.execute(
            sa.select(
                contacts.c.phone_index,
                scoring.score_sql(a, "r", cuts),
                scoring.score_sql(a, "f", cuts),
                scoring.score_sql(a, "m", cuts),
                scoring.group_sql(a, cuts, settings.splits),
                scoring.stage_sql(a, now, settings.thresholds),
            )
            .select_from(
                contacts.outerjoin(
                    a, sa.and_(a.c.contact_id == contacts.c.id, a.c.tenant_id == tid)
                )
            )
            .where(contacts.c.tenant_id == tid)
            .execution_options(hongyan_tenant=tid)
        ).all()
    return {names[bytes(r[0])]: tuple(r[1:]) for r in rows}


def test_hand_checked_rfm_and_lifecycle(runtime: Runtime, clock: FixedClock, shop: int) -> None:
    figures = recompute.recompute(runtime.engine, clock, shop)
    got = _by_name(runtime, shop)
    assert set(got) == set(PHONES)
    for name, (r, f, m, group) in EXPECTED.items():
        assert got[name][:4] == (r, f, m, group), name
    for name in "KLMN":
        assert got[name][:4] == (None, None, None, None), name
    assert {n: got[n][4] for n in got} == STAGES
    assert figures["buyers"] == 10
    assert figures["means"] == {"r": 2.9, "f": 2.6, "m": 2.9}
    with runtime.engine.connect() as conn:
        report = recompute.distribution(conn, shop)
    assert report["buyers"] == 10 and report["contacts"] == 14
    assert report["means"] == figures["means"]
    assert report["groups"] == {
        "important_value": 2, "important_develop": 1, "important_keep": 1, "important_retain": 1,
        "general_value": 1, "general_develop": 1, "general_keep": 1, "general_retain": 2,
    }  # fmt: skip
    assert report["lifecycle"] == {
        "potential": 1, "new": 2, "active": 2, "lapsing": 2, "dormant": 2, "lost": 4, "none": 1,
    }  # fmt: skip
    with runtime.engine.connect() as conn:
        grid = {(c["r"], c["f"]): c for c in recompute.grid(conn, shop)}
        revenue = recompute.group_revenue(conn, shop)
    assert grid[(5, 5)]["buyers"] == 1 and grid[(5, 5)]["revenue_fen"] == 500_000
    assert grid[(2, 1)]["buyers"] == 2 and grid[(2, 1)]["revenue_fen"] == (50 + 4500) * 100
    assert sum(c["buyers"] for c in grid.values()) == 10
    assert revenue["important_value"] == {"buyers": 2, "revenue_fen": 800_000}


def test_configured_splits_and_thresholds(runtime: Runtime, clock: FixedClock, shop: int) -> None:
    with runtime.engine.begin() as conn:
        service.update_settings(
            conn, clock, shop,
            splits=Splits(r=4, f=None, m=5),
            thresholds=Thresholds(new_days=7, active_days=30, dormant_days=90, lost_days=365),
        )  # fmt: skip
    recompute.recompute(runtime.engine, clock, shop)
    got = _by_name(runtime, shop)
    assert got["E"][3] == "general_keep"  # R 3 < 4: low; M 3 < 5: low; F 4 > 2.6: high
    assert got["H"][3] == "important_retain"  # R 2 low, F 1 low, M 5 high
    assert got["D"][3] == "general_develop"  # R 4 high, F low, M 4 < 5 low
    assert got["C"][4] == "active"  # 20 days: no longer new with new_days = 7
    assert got["H"][4] == "dormant" and got["I"][4] == "dormant" and got["J"][4] == "lost"


def test_matches_the_pure_rules(runtime: Runtime, clock: FixedClock, shop: int) -> None:
    """The SQL and the Python functions agree on the same aggregates."""
    recompute.recompute(runtime.engine, clock, shop)
    a = contact_activity
    with runtime.engine.connect() as conn:
        rows = conn.execute(TenantScope(shop).select(a)).mappings().all()
        cuts = service.get_cuts(conn, shop)
        assert cuts is not None
        stored = {
            r.contact_id: r
            for r in conn.execute(
                TenantScope(shop).select(
                    a,
                    a.c.contact_id,
                    scoring.score_sql(a, "r", cuts).label("r_score"),
                    scoring.score_sql(a, "f", cuts).label("f_score"),
                    scoring.score_sql(a, "m", cuts).label("m_score"),
                    scoring.group_sql(a, cuts, Splits()).label("rfm_group"),
                    scoring.stage_sql(a, NOW, Thresholds()).label("lifecycle"),
                )
            ).all()
        }
    buyers = [r for r in rows if r["orders_count"] > 0]
    rs = scoring.quantile_scores([r["last_order_at"] for r in buyers])
    fs = scoring.quantile_scores([r["orders_count"] for r in buyers])
    ms = scoring.quantile_scores([r["revenue_fen"] for r in buyers])
    means = (sum(rs) / len(rs), sum(fs) / len(fs), sum(ms) / len(ms))
    assert cuts.sums == (sum(rs), sum(fs), sum(ms)) and cuts.n == len(buyers)
    for row, r, f, m in zip(buyers, rs, fs, ms, strict=True):
        s = stored[row["contact_id"]]
        assert (s.r_score, s.f_score, s.m_score) == (r, f, m)
        assert s.rfm_group == scoring.group(r, f, m, Splits(), means)
    for row in rows:
        assert stored[row["contact_id"]].lifecycle == scoring.stage(row, NOW, Thresholds())


@pytest.mark.parametrize("window", [1, 2, 32])
def test_index_walks_give_the_sorted_cuts(
    runtime: Runtime, clock: FixedClock, shop: int, window: int
) -> None:
    """The cuts and the counts above them read from the buyers' indexes equal those of the
    sorted values, ties included; a window of 1 or 2 makes the runs of ties outgrow it (the
    count of values above the cut is then asked for)."""
    with runtime.engine.connect() as conn:
        n, cuts, above = recompute.cut_points(conn, shop, window=window)
        rows = conn.execute(TenantScope(shop).select(contact_activity)).mappings().all()
    buyers = [r for r in rows if r["orders_count"] > 0]
    assert n == len(buyers) == 10
    for d, col in scoring.DIMENSIONS.items():
        values = [r[col] for r in buyers]
        assert cuts[d] == scoring.cut_points(values)
        assert above[d] == tuple(sum(1 for v in values if v > c) for c in cuts[d])


def test_recompute_replaces_and_clock_moves_stages(
    runtime: Runtime, clock: FixedClock, shop: int
) -> None:
    recompute.recompute(runtime.engine, clock, shop)
    clock.advance(timedelta(days=30))
    recompute.recompute(runtime.engine, clock, shop)
    got = _by_name(runtime, shop, clock)
    assert len(got) == 14
    assert got["A"][4] == "lapsing" and got["C"][4] == "lapsing" and got["M"][4] == "none"


def test_schedule_claims_once(runtime: Runtime, clock: FixedClock, shop: int) -> None:
    assert recompute.due_tenants(runtime.engine, clock) == [shop]
    assert recompute.due_tenants(runtime.engine, clock) == []  # claimed
    clock.advance(timedelta(hours=25))
    assert recompute.due_tenants(runtime.engine, clock) == [shop]


# -- pure ------------------------------------------------------------------------------------------


@given(st.lists(st.integers(0, 20), min_size=1, max_size=60))
def test_quantile_scores(values: list[int]) -> None:
    scores = scoring.quantile_scores(values)
    assert all(1 <= s <= 5 for s in scores)
    for v, s in zip(values, scores, strict=True):
        for w, t in zip(values, scores, strict=True):
            if v == w:
                assert s == t  # ties share a score
            elif v < w:
                assert s <= t  # never decreasing
    lower = sum(1 for w in values if w < min(values))
    assert lower == 0 and scoring.quantile_scores([min(values)])[0] == 1
    if len(set(values)) == len(values):
        n = len(values)
        assert sorted(scores) == [1 + 5 * i // n for i in range(n)]


@given(
    st.lists(st.integers(0, 12), min_size=1, max_size=80)
    | st.lists(st.integers(-(10**12), 10**12), min_size=1, max_size=40)
)
def test_cut_points_give_the_documented_scores(values: list[int]) -> None:
    """Scoring by the 12 cut points is ``1 + floor(5 × L / N)`` for every value, ties included
    (few distinct values force ties), checked against a brute-force count of lower values."""
    n = len(values)
    cuts = scoring.cut_points(values)
    assert list(cuts) == sorted(cuts)
    for v in values:
        lower = sum(1 for w in values if w < v)
        assert scoring.score_at(v, cuts) == 1 + (5 * lower) // n
    assert [scoring.score_at(v, cuts) for v in values] == scoring.quantile_scores(values)
    positions = scoring.cut_positions(n)
    for k, q in zip(range(2, 6), positions, strict=True):
        assert q == math.ceil((k - 1) * n / 5) and 1 <= q <= n


@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=80)
    | st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=40),
    st.integers(1, 6),
)
def test_windows_and_counts_give_the_cuts_and_the_sums(values: list[int], window: int) -> None:
    """A cut and the values above it from a window read at its position, ascending or
    descending (None only when the window is all ties short of the end), and from (value,
    count) pairs; the score sums from those counts equal the sum of the rank-method scores."""
    n = len(values)
    order = sorted(values)
    down = order[::-1]
    cuts = scoring.cut_points(values)
    truth = tuple(sum(1 for v in values if v > c) for c in cuts)
    for i, q in enumerate(scoring.cut_positions(n)):
        up_window = order[q - 1 : q - 1 + window]
        cut, up = scoring.cut_above_ascending(q, n, up_window)
        assert cut == cuts[i]
        if up is None:
            assert set(up_window) == {cut} and q - 1 + window < n
        else:
            assert up == truth[i]
        skip = max(0, n - q + 1 - window)
        down_window = down[skip : n - q + 1]
        cut, up = scoring.cut_above_descending(q, n, down_window, top=skip == 0)
        assert cut == cuts[i]
        if up is None:
            assert set(down_window) == {cut} and skip > 0
        else:
            assert up == truth[i]
    counted = [(v, order.count(v)) for v in sorted(set(values))]
    assert scoring.cuts_from_counts(counted) == (n, cuts, truth)
    assert scoring.score_sum(n, truth) == sum(scoring.quantile_scores(values))


@given(
    st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)), min_size=1),
    st.sampled_from([None, 1, 2.5, 3, 4, 5]),
)
def test_exact_means_pick_the_same_groups(
    triples: list[tuple[int, int, int]], split: float | None
) -> None:
    n = len(triples)
    sums = tuple(sum(t[i] for t in triples) for i in range(3))
    cuts = scoring.Cuts(n, (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0), sums)  # type: ignore[arg-type]
    splits = Splits(r=split, f=None, m=split)
    means = tuple(float(Fraction(s, n)) for s in sums)
    for r, f, m in triples:
        assert scoring.group_at(r, f, m, cuts, splits) == scoring.group(r, f, m, splits, means)


def test_the_eight_groups() -> None:
    means = (3.0, 3.0, 3.0)
    seen = {scoring.group(r, f, m, Splits(), means) for r in (1, 5) for f in (1, 5) for m in (1, 5)}
    assert seen == set(scoring.GROUP_NAMES)
    assert scoring.group(3, 3, 3, Splits(), means) == "general_retain"  # at the mean: low
    assert scoring.group(3, 3, 3, Splits(3, 3, 3), means) == "important_value"  # at the split


def test_thresholds_are_checked() -> None:
    with pytest.raises(Exception, match="active"):
        Thresholds(active_days=100, dormant_days=90).check()
    with pytest.raises(Exception, match="1"):
        Splits(r=6).check()


def test_the_schedule_recomputes_due_tenants(
    runtime: Runtime, clock: FixedClock, shop: int
) -> None:
    import asyncio

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(recompute.run_schedule(runtime.engine, clock, stop, every=0.05))
        for _ in range(400):
            with runtime.engine.connect() as conn:
                if service.get_settings(conn, shop).computed.get("buyers") == 10:
                    break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(main())
    with runtime.engine.connect() as conn:
        settings = service.get_settings(conn, shop)
    assert settings.computed["buyers"] == 10 and settings.computed_at == clock.now()
    assert _by_name(runtime, shop)["A"][3] == "important_value"
