"""Where a Chinese mobile number was issued (号码归属地), offline, from ``phone``'s data file.

The ``phone`` package (PyPI, https://github.com/ls0f/phone) ships ``phone.dat``: for each
seven-digit prefix (``1381234``) the province, city, postcode and area code, and a card type
(移动 / 联通 / 电信 / 广电 and their virtual operators). We read the file ourselves, once per
process, into a dense table indexed by prefix (700,000 slots for 130 0000 … 199 9999: 2.1 MB),
so a lookup is an ``int()`` and two array reads, never a binary search per row.

``phonenumbers``' Chinese geocoding answers only "中国" for 16x, 171–175 and 19x, so a province
report built on it alone is wrong for a large share of today's numbers; ``phone.dat`` covers
them (coverage per segment: ``bench/wl_number_enrichment.py`` and docs/architecture.md).

The file's version (``YYMM``) is shown by :func:`table` (``hongyan contacts segments``). To refresh
it, upgrade the ``phone`` package, or point ``HONGYAN_PHONE_DATA`` at a newer file in the same
format (the format is documented in the package's README; forks keep it up to date).
"""

from __future__ import annotations

import struct
import threading
from array import array
from dataclasses import dataclass
from pathlib import Path

FIRST = 1_300_000
SLOTS = 2_000_000 - FIRST
# Card types of phone.dat: 1 移动, 2 联通, 3 电信, 4 电信虚拟运营商, 5 联通虚拟运营商,
# 6 移动虚拟运营商, 7 广电, 8 广电虚拟运营商.
VIRTUAL_TYPES = frozenset({4, 5, 6, 8})
# Segments allocated to virtual operators as a whole (MIIT), whatever a data file's type says.
VIRTUAL_PREFIXES = ("170", "171", "162", "165", "167")


@dataclass(frozen=True)
class Place:
    province: str
    city: str


@dataclass(frozen=True)
class SegmentTable:
    version: str  # YYMM of the data file
    path: str
    records: tuple[Place, ...]  # index 0 unused: "no record"
    slot: array[int]  # prefix - FIRST -> record number (0: none)
    kind: bytes  # prefix - FIRST -> card type (0: none)
    prefixes: int  # how many seven-digit prefixes the file knows

    def place(self, national: str) -> Place | None:
        """Province and city of an 11-digit national mobile number, or None if unknown."""
        i = int(national[:7]) - FIRST
        if not 0 <= i < SLOTS:
            return None
        r = self.slot[i]
        return self.records[r] if r else None

    def is_virtual(self, national: str) -> bool:
        """A virtual operator's number: the segments allocated to them (170, 171, 162, 165,
        167), else what the data file's card type says."""
        if national[:3] in VIRTUAL_PREFIXES:
            return True
        i = int(national[:7]) - FIRST
        return 0 <= i < SLOTS and self.kind[i] in VIRTUAL_TYPES


def _default_path() -> Path:
    from hongyan.settings import get_settings

    override = get_settings().phone_data
    if override:
        return Path(override)
    import phone

    return Path(phone.__file__).parent / "phone.dat"


def load(path: Path) -> SegmentTable:
    """Read a ``phone.dat`` file (header ``<4si``, records ``province|city|zip|area\\0``, index
    entries ``<iiB``: prefix, record offset, card type)."""
    buf = path.read_bytes()
    version, first_index = struct.unpack_from("<4si", buf, 0)
    places: dict[int, int] = {}
    records: list[Place] = [Place("", "")]
    slot = array("H", bytes(2 * SLOTS))
    kind = bytearray(SLOTS)
    count = 0
    end = first_index + (len(buf) - first_index) // 9 * 9
    for prefix, offset, card in struct.iter_unpack("<iiB", buf[first_index:end]):
        i = prefix - FIRST
        if not 0 <= i < SLOTS:
            continue
        r = places.get(offset)
        if r is None:
            stop = buf.index(b"\x00", offset)
            province, city, *_ = buf[offset:stop].decode("utf-8").split("|")
            r = places[offset] = len(records)
            records.append(Place(province, city))
        slot[i] = r
        kind[i] = card
        count += 1
    return SegmentTable(
        version=version.decode("ascii", "replace").strip("\x00"),
        path=str(path),
        records=tuple(records),
        slot=slot,
        kind=bytes(kind),
        prefixes=count,
    )


_lock = threading.Lock()
_table: SegmentTable | None = None


def table() -> SegmentTable:
    """The process's table, read on first use (about 0.2 s)."""
    global _table
    if _table is None:
        with _lock:
            if _table is None:
                _table = load(_default_path())
    return _table


@dataclass(frozen=True, slots=True)
class NumberInfo:
    country: str  # ISO 3166 region
    carrier: str | None  # cmcc, cucc, ctcc, cbn (the host network for virtual operators), intl
    mvno: bool  # a virtual operator's number (虚拟运营商)
    province: str | None
    city: str | None


def describe(e164: str, segments: SegmentTable | None = None) -> NumberInfo:
    """Country, carrier, virtual operator and province/city of an E.164 number."""
    from hongyan.contacts.numbers import carrier_of, country_of

    carrier = carrier_of(e164)
    if not e164.startswith("+86"):
        return NumberInfo(country_of(e164), carrier, False, None, None)
    national = e164[3:]
    segments = segments or table()
    place = segments.place(national)
    return NumberInfo(
        "CN",
        carrier,
        segments.is_virtual(national),
        place.province if place else None,
        place.city if place else None,
    )
