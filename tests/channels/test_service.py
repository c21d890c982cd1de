"""The operator's channels (secrets encrypted) and the tenants' routes, on both databases."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from hongyan.channels import service as store
from hongyan.channels.base import ChannelSpec
from hongyan.channels.service import Route, UnknownChannel
from hongyan.clock import FixedClock
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import channels, routes
from hongyan.dispatch.routing import candidates
from hongyan.dispatch.states import Lane
from hongyan.errors import Conflict, NotFound, ValidationFailed
from hongyan.runtime import Runtime
from hongyan.security.keyring import KeyRingError
from hongyan.tenants.service import create_tenant

PASSWORD = "s3cret-PASSWORD-äöü"
CONFIG = {"host": "127.0.0.1", "port": 2775, "system_id": "hongyan", "source_addr": "10690"}


def add(runtime: Runtime, name: str = "sb", **kw: Any) -> ChannelSpec:
    values: dict[str, Any] = {"kind": "smpp", "config": CONFIG, "secrets": {"password": PASSWORD}}
    values.update(kw)
    with runtime.engine.begin() as conn:
        return store.add_channel(conn, runtime.clock, runtime.keyring, name=name, **values)


def channel_rows(runtime: Runtime) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(unscoped(sa.select(channels).order_by(channels.c.id), "test")))


def tenant(runtime: Runtime, slug: str) -> int:
    with runtime.engine.begin() as conn:
        return create_tenant(conn, runtime.clock, slug=slug, name=slug).id


# -- channels -------------------------------------------------------------------------------------


def test_add_channel_keeps_the_secret_encrypted(runtime: Runtime) -> None:
    spec = add(
        runtime,
        carriers=[" CMCC", "cucc", "cmcc", ""],
        rate=200,
        window=8,
        binds=2,
        price_per_part="0.0450",
        currency="cny",
        priority=5,
    )
    assert spec == ChannelSpec(
        name="sb",
        kind="smpp",
        config=CONFIG,
        secrets={"password": PASSWORD},
        rate=200.0,
        window=8,
        binds=2,
        carriers=frozenset({"cmcc", "cucc"}),
        price_per_part=Decimal("0.0450"),
        currency="CNY",
        enabled=True,
        priority=5,
    )
    assert PASSWORD not in repr(spec)
    [row] = channel_rows(runtime)
    assert row.carriers == "cmcc,cucc"
    # The password is nowhere in the row in plaintext, in any encoding.
    flat = repr(tuple(row)).encode() + bytes(row.secret_cipher)
    for needle in (PASSWORD.encode(), PASSWORD.encode("utf-16-le"), b"s3cret"):
        assert needle not in flat
    assert b"s3cret" not in bytes(row.secret_cipher)
    assert runtime.keyring.decrypt(bytes(row.secret_cipher), "channel:sb") == (
        '{"password": "s3cret-PASSWORD-\\u00e4\\u00f6\\u00fc"}'
    )
    # Bound to the channel's name: the same ciphertext does not open as another channel's.
    with pytest.raises(KeyRingError):
        runtime.keyring.decrypt(bytes(row.secret_cipher), "channel:other")


def test_a_channel_without_secrets_stores_none(runtime: Runtime) -> None:
    spec = add(runtime, "open", secrets={})
    assert spec.secrets == {}
    assert channel_rows(runtime)[0].secret_cipher is None


def test_listing_shows_no_secrets(runtime: Runtime) -> None:
    add(runtime, "b-chan", priority=2, carriers=["ctcc"], price_per_part="0.05")
    add(runtime, "a-chan", priority=2)
    add(runtime, "first", priority=1)
    with runtime.engine.connect() as conn:
        listed = store.list_channels(conn)
    assert [c["name"] for c in listed] == ["first", "a-chan", "b-chan"]
    for item in listed:
        assert "secret_cipher" not in item
        assert PASSWORD not in repr(item)
    b = listed[2]
    assert b["carriers"] == ["ctcc"] and Decimal(b["price_per_part"]) == Decimal("0.05")
    assert listed[0]["carriers"] == []


def test_get_and_load_specs(runtime: Runtime) -> None:
    add(runtime, "z", priority=1)
    add(runtime, "y", priority=1)
    add(runtime, "x", priority=9)
    with runtime.engine.begin() as conn:
        store.update_channel(conn, runtime.clock, "y", enabled=False)
        enabled = store.load_specs(conn, runtime.keyring)
        every = store.load_specs(conn, runtime.keyring, enabled_only=False)
        got = store.get_spec(conn, runtime.keyring, "y")
        with pytest.raises(UnknownChannel):
            store.get_spec(conn, runtime.keyring, "nope")
    assert [s.name for s in enabled] == ["z", "x"]
    assert [s.name for s in every] == ["y", "z", "x"]
    assert [s.enabled for s in every] == [False, True, True]
    assert all(s.secrets == {"password": PASSWORD} for s in every)
    assert got.enabled is False and got.secrets["password"] == PASSWORD


GOOD_NAMES = ["a", "sb-1_x", "9lives", "x" * 64]
BAD_NAMES = ["", "Upper", "-lead", "_lead", "x" * 65, "有", "a b", "a/b", "a.b", "a\n"]
BAD_CHANNELS: list[tuple[dict[str, Any], str]] = [
    ({"kind": "carrier-pigeon"}, "carrier-pigeon"),
    ({"kind": ""}, "kind"),
    ({"rate": -1}, "rate"),
    ({"rate": float("nan")}, "rate"),
    ({"window": 0}, "window"),
    ({"binds": 0}, "binds"),
    ({"price_per_part": "abc"}, "price"),
    ({"price_per_part": "-0.01"}, "price"),
    ({"price_per_part": "NaN"}, "price"),
    ({"price_per_part": "1000000"}, "price"),
    ({"carriers": ["cmcc", "mars"]}, "mars"),
    ({"carriers": ["cmcc,cucc"]}, "cmcc,cucc"),
]


def test_channel_names(runtime: Runtime) -> None:
    for name in GOOD_NAMES:
        assert add(runtime, name).name == name
    for name in BAD_NAMES:
        with pytest.raises(ValidationFailed) as info:
            add(runtime, name)
        assert info.value.message_zh and info.value.message_en, name
    assert [r.name for r in channel_rows(runtime)] == GOOD_NAMES


def test_bad_channels_are_refused_with_typed_errors(runtime: Runtime) -> None:
    for kw, words in BAD_CHANNELS:
        with pytest.raises(ValidationFailed) as info:
            add(runtime, **kw)
        assert words in info.value.message_en, kw
        assert info.value.message_zh
        assert info.value.status == 422
    assert channel_rows(runtime) == []


def test_a_duplicate_name_is_a_conflict(runtime: Runtime) -> None:
    add(runtime, "sb", rate=10)
    with runtime.engine.begin() as conn:
        with pytest.raises(Conflict) as info:
            store.add_channel(
                conn, runtime.clock, runtime.keyring, name="sb", kind="smpp", config={}, secrets={}
            )
        assert "sb" in info.value.message_en and info.value.status == 409
        # The transaction is still usable after the refusal.
        store.add_channel(
            conn, runtime.clock, runtime.keyring, name="sb2", kind="smpp", config={}, secrets={}
        )
    rows = channel_rows(runtime)
    assert [(r.name, r.rate) for r in rows] == [("sb", 10.0), ("sb2", 0.0)]


def test_update_channel(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    add(runtime)
    created = channel_rows(runtime)[0].updated_at
    clock.advance(timedelta(minutes=5))
    with runtime.engine.begin() as conn:
        store.update_channel(
            conn,
            clock,
            "sb",
            rate=50,
            window=3,
            binds=4,
            priority=7,
            enabled=False,
            carriers=["CTCC", "intl"],
            price_per_part="0.1",
        )
        spec = store.get_spec(conn, runtime.keyring, "sb")
    assert (spec.rate, spec.window, spec.binds, spec.priority, spec.enabled) == (
        50.0,
        3,
        4,
        7,
        False,
    )
    assert spec.carriers == frozenset({"ctcc", "intl"})
    assert spec.price_per_part == Decimal("0.1")
    assert spec.secrets == {"password": PASSWORD}  # untouched
    row = channel_rows(runtime)[0]
    assert row.updated_at == clock.now() and row.created_at == created
    with runtime.engine.begin() as conn:
        store.update_channel(conn, clock, "sb", carriers=[])
        assert store.get_spec(conn, runtime.keyring, "sb").carriers == frozenset()


BAD_UPDATES: list[dict[str, Any]] = [
    {"config": {"host": "elsewhere"}},
    {"secrets": {"password": "x"}},
    {"kind": "twilio"},
    {"rate": -5},
    {"window": 0},
    {"binds": -1},
    {"carriers": ["pluto"]},
    {"price_per_part": "cheap"},
    {"price_per_part": "-1"},
]


def test_bad_updates_are_refused_and_change_nothing(runtime: Runtime) -> None:
    add(runtime, rate=10)
    before = channel_rows(runtime)
    for values in BAD_UPDATES:
        with pytest.raises(ValidationFailed), runtime.engine.begin() as conn:
            store.update_channel(conn, runtime.clock, "sb", **values)
    assert channel_rows(runtime) == before


def test_unknown_channels_cannot_be_updated_or_removed(runtime: Runtime) -> None:
    add(runtime)
    with runtime.engine.begin() as conn:
        with pytest.raises(UnknownChannel) as info:
            store.update_channel(conn, runtime.clock, "nope", rate=1)
        assert isinstance(info.value, NotFound) and info.value.status == 404
        assert info.value.code == "unknown_channel"
        with pytest.raises(UnknownChannel):
            store.remove_channel(conn, "nope")
    assert len(channel_rows(runtime)) == 1


def test_remove_channel(runtime: Runtime) -> None:
    add(runtime, "a")
    add(runtime, "b")
    with runtime.engine.begin() as conn:
        store.remove_channel(conn, "a")
        with pytest.raises(UnknownChannel):
            store.remove_channel(conn, "a")
    assert [r.name for r in channel_rows(runtime)] == ["b"]
    assert add(runtime, "a").name == "a"  # the name is free again


# -- routes ---------------------------------------------------------------------------------------


def route_rows(runtime: Runtime, tenant_id: int) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(TenantScope(tenant_id).select(routes).order_by(routes.c.id)))


def set_route(runtime: Runtime, tenant_id: int, names: list[str], **kw: Any) -> Route:
    with runtime.engine.begin() as conn:
        return store.set_route(conn, runtime.clock, tenant_id, names, **kw)


def test_routes_are_set_replaced_and_removed_per_tenant(runtime: Runtime) -> None:
    for name in ("main", "backup", "telecom"):
        add(runtime, name)
    a = tenant(runtime, "tea")
    b = tenant(runtime, "noodle")
    everything = set_route(runtime, a, ["main", "backup"])
    assert everything == Route(a, -1, "*", ("main", "backup"))
    marketing_ct = set_route(runtime, a, ["telecom", "main"], lane=Lane.MARKETING, carrier="CTCC")
    assert marketing_ct == Route(a, int(Lane.MARKETING), "ctcc", ("telecom", "main"))
    assert set_route(runtime, a, ["backup"], carrier="*") == Route(a, -1, "*", ("backup",))
    b_route = set_route(runtime, b, ["telecom"], carrier="")
    with runtime.engine.connect() as conn:
        assert store.tenant_routes(conn, a) == [
            Route(a, int(Lane.MARKETING), "ctcc", ("telecom", "main")),
            Route(a, -1, "*", ("backup",)),
        ]
        assert store.tenant_routes(conn, b) == [b_route] == [Route(b, -1, "*", ("telecom",))]
        by_tenant = store.all_routes(conn)
    assert {t: sorted(rs, key=lambda r: r.lane) for t, rs in by_tenant.items()} == {
        a: [Route(a, -1, "*", ("backup",)), Route(a, 2, "ctcc", ("telecom", "main"))],
        b: [Route(b, -1, "*", ("telecom",))],
    }
    # Setting B's route for the same lane and carrier left A's alone; no channels removes it.
    assert set_route(runtime, a, [], lane=Lane.MARKETING, carrier="ctcc").channels == ()
    assert [(r.lane, r.carrier) for r in route_rows(runtime, a)] == [(-1, "*")]
    assert len(route_rows(runtime, b)) == 1
    with runtime.engine.connect() as conn:
        assert store.tenant_routes(conn, tenant(runtime, "empty")) == []


def test_bad_routes_are_refused_and_leave_the_old_route(runtime: Runtime) -> None:
    add(runtime, "main")
    add(runtime, "backup")
    t = tenant(runtime, "tea")
    set_route(runtime, t, ["main"])
    with pytest.raises(UnknownChannel) as unknown:
        set_route(runtime, t, ["backup", "ghost"])
    assert "ghost" in unknown.value.message_en and "ghost" in unknown.value.message_zh
    with pytest.raises(ValidationFailed) as carrier:
        set_route(runtime, t, ["backup"], carrier="mars")
    assert "mars" in carrier.value.message_en
    with pytest.raises(ValidationFailed):
        set_route(runtime, t, ["backup"], carrier="cmcc,cucc")
    [row] = route_rows(runtime, t)
    assert (row.lane, row.carrier, list(row.channels)) == (-1, "*", ["main"])


def test_stored_channels_and_routes_feed_the_router(runtime: Runtime) -> None:
    add(runtime, "cheap", priority=1, carriers=["cmcc", "cucc"])
    add(runtime, "every", priority=2)
    add(runtime, "off", priority=0)
    t = tenant(runtime, "tea")
    other = tenant(runtime, "noodle")
    set_route(runtime, t, ["off", "every", "cheap"], lane=Lane.MARKETING)
    with runtime.engine.begin() as conn:
        store.update_channel(conn, runtime.clock, "off", enabled=False)
        specs = store.load_specs(conn, runtime.keyring)
        mine = store.tenant_routes(conn, t)
        theirs = store.tenant_routes(conn, other)
    assert candidates(specs, mine, Lane.MARKETING, "cmcc") == ["every", "cheap"]
    assert candidates(specs, mine, Lane.MARKETING, "ctcc") == ["every"]
    assert candidates(specs, mine, Lane.NOTIFICATION, "cmcc") == ["cheap", "every"]
    assert candidates(specs, theirs, Lane.MARKETING, "cmcc") == ["cheap", "every"]
