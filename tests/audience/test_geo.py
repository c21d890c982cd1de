"""Places, a contact's location and the distance test (pure), and locations written by the
recompute and used by rules (both databases)."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from hongyan.audience import geo, recompute, segments, service
from hongyan.clock import FixedClock
from hongyan.contacts import fields
from hongyan.contacts import geo as numbers_geo
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contact_locations, contacts
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants

lat = st.floats(18.0, 53.0)
lon = st.floats(73.0, 135.0)
km = st.floats(0.1, 500.0)


@given(lat, lon, lat, lon, km)
def test_chord_test_is_the_great_circle_test(
    a: float, b: float, c: float, d: float, r: float
) -> None:
    x1, x2 = geo.unit_vector(a, b), geo.unit_vector(c, d)
    chord = sum((p - q) ** 2 for p, q in zip(x1, x2, strict=True))
    dist = geo.distance_km(a, b, c, d)
    if abs(dist - r) > 1e-6:
        assert (chord <= geo.chord_squared_limit(r)) == (dist <= r)


@given(lat, lon, km, st.floats(0, 2 * math.pi), st.floats(0, 1))
def test_the_box_holds_every_point_in_range(
    a: float, b: float, r: float, bearing: float, f: float
) -> None:
    """A point at distance ≤ r in any direction lies inside the bounding box."""
    d = r * f / geo.EARTH_KM
    p1, l1 = math.radians(a), math.radians(b)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(bearing))
    l2 = l1 + math.atan2(
        math.sin(bearing) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
    )
    box = geo.bounding_box(a, b, r)
    y, x = math.degrees(p2), math.degrees(l2)
    assert box.lat_min - 1e-9 <= y <= box.lat_max + 1e-9
    assert box.lon_min - 1e-9 <= x <= box.lon_max + 1e-9


def test_names() -> None:
    assert geo.short_name("广州市") == "广州"
    assert geo.short_name("恩施土家族苗族自治州") == "恩施"
    assert geo.short_name("巴音郭楞蒙古自治州") == "巴音郭楞"
    assert geo.short_name("新疆维吾尔自治区") == "新疆"
    assert geo.short_name("浦东新区") == "浦东"
    assert geo.short_name("城区") == "城区"


def test_places_cover_the_number_data() -> None:
    """Nearly every city the number data names has a centre (the rest: 莱芜 merged into 济南,
    雄安 and 那曲 have no coordinates in the data)."""
    table = geo.places()
    pairs = {(p.province, p.city) for p in numbers_geo.table().records[1:]}
    assert geo.coverage(table, pairs) > 0.98
    assert table.find("广州", "广东").name == "广州市"
    assert table.find("上海").level == "province"  # a municipality's own row
    assert table.find("重庆", "重庆").code == "500000000000"
    assert table.find("库尔勒", "新疆").level == "district"
    assert table.find("朝阳") is not None and table.find("朝阳").level == "city"  # 辽宁 朝阳市
    assert table.find("朝阳", "北京").code == "110105000000"
    assert table.find("没有这个地方") is None


def test_addresses() -> None:
    t = geo.places()
    assert t.in_text("上海市徐汇区虹漕路461号").code == "310104000000"
    assert t.in_text("泉州市洛江区万安塘西工业区").code == "350504000000"
    assert t.in_text("朝阳区建国路88号") is None  # Beijing or Changchun?
    beijing = t.find("北京")
    assert t.in_text("朝阳区建国路88号", near=beijing).code == "110105000000"
    assert t.in_text("上海市黄浦区南京路").code == "310101000000"  # not 南京
    assert t.in_text("长安街1号") is None  # a street, not 长安区
    assert t.in_text("杭州西湖边").name == "杭州市"


def test_locate_order() -> None:
    t = geo.places()
    assert geo.locate(t, attribute="31.2,121.4").source == "coordinates"
    assert geo.locate(t, attribute="121.4, 31.2") == geo.Location(31.2, 121.4, "coordinates", None)
    assert geo.locate(t, attribute="徐汇区", city="上海").source == "place"
    assert geo.locate(t, attribute="不知道", city="杭州").source == "city"
    got = geo.locate(t, city=None, number_city="温州", number_province="浙江")
    assert got is not None and got.source == "number_city" and got.place == "330300000000"
    assert geo.locate(t, province="浙江") is None  # a province is too coarse
    assert geo.parse_coordinates("91,200") is None and geo.parse_coordinates("abc") is None


@pytest.fixture
def tenant(runtime: Runtime, clock: FixedClock) -> int:
    with runtime.engine.begin() as conn:
        return tenants.create_tenant(conn, clock, slug="tea", name="鸿雁茶饮").id


def test_locations_and_store_distance(runtime: Runtime, clock: FixedClock, tenant: int) -> None:
    scope = TenantScope(tenant)
    people = [  # (地址 attribute, city, number city) → expected source
        ("31.1885,121.4361", None, None, "coordinates"),  # at the 徐汇 centre
        ("上海市闵行区莘庄", None, None, "place"),  # ~ 17 km from 徐汇
        (None, "杭州", "上海", "city"),  # ~ 165 km
        (None, None, "苏州", "number_city"),  # ~ 85 km
        (None, None, None, None),
    ]
    with runtime.engine.begin() as conn:
        fields.define(conn, clock, tenant, "地址", "text")
        service.update_settings(conn, clock, tenant, location_attribute="地址")
        service.add_store(conn, clock, tenant, name="徐汇店", address="上海市徐汇区")
        for i, (addr, city, ncity, _) in enumerate(people):
            conn.execute(
                scope.insert(contacts).values(
                    phone_index=bytes([i]) * 32, phone_cipher=b"x", phone_masked=f"138****000{i}",
                    country="CN", city=city, number_city=ncity,
                    attrs={"地址": addr} if addr else {}, source="test",
                    created_at=clock.now(), updated_at=clock.now(),
                )
            )  # fmt: skip
        done = recompute.recompute_locations(conn, clock, tenant)
    assert done["by_source"] == {"coordinates": 1, "place": 1, "city": 1, "number_city": 1}
    with runtime.engine.connect() as conn:
        sources = [
            r.source
            for r in conn.execute(
                scope.select(contact_locations, contact_locations.c.source).order_by(
                    contact_locations.c.contact_id
                )
            )
        ]
        assert sources == ["coordinates", "place", "city", "number_city"]

        def near(km: float) -> int:
            rule = {"field": "location", "op": "within_km", "value": {"km": km, "store": "徐汇店"}}
            return segments.count(conn, clock, tenant, rule)

        assert [near(k) for k in (1, 30, 100, 200)] == [1, 2, 3, 4]
        # the bounding box is on an index: the planner may use it (SQLite says so)
        if conn.dialect.name == "sqlite":
            c = segments.compile_rule(
                conn, clock, tenant, {"field": "location", "op": "within_km", "value": {"km": 5}}
            )
            from hongyan.audience import compiler

            stmt = compiler.query(c.node, c.ctx, sa.func.count())
            sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = " ".join(
                str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
            )
            assert "ix_contact_locations_box" in plan
