"""How much of every mobile segment the shipped data places in a province (the table in
docs/architecture.md, "Numbers"): one number in each block of 10,000, as
bench/wl_number_enrichment.py measures it. The floors are the measured shares less two points,
so a package update that loses blocks fails here; one that adds blocks passes."""

from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import geocoder

from hongyan.contacts import geo
from hongyan.contacts.numbers import NumberProblem, normalise

# Measured on phone.dat of the phone package (December 2023 data), per allocated segment.
MEASURED = {
    "130": 1.0, "131": 1.0, "132": 1.0, "133": 1.0, "134": 0.999, "135": 1.0, "136": 1.0,
    "137": 1.0, "138": 1.0, "139": 1.0, "145": 0.984, "146": 0.937, "147": 0.996, "148": 0.842,
    "149": 0.373, "150": 1.0, "151": 1.0, "152": 1.0, "153": 1.0, "155": 1.0, "156": 1.0,
    "157": 0.906, "158": 1.0, "159": 1.0, "162": 0.618, "165": 0.768, "166": 0.901,
    "167": 0.78, "170": 0.997, "171": 1.0, "172": 0.896, "173": 0.999, "174": 0.103,
    "175": 0.986, "176": 1.0, "177": 0.997, "178": 0.987, "180": 1.0, "181": 1.0, "182": 1.0,
    "183": 1.0, "184": 0.983, "185": 1.0, "186": 1.0, "187": 1.0, "188": 1.0, "189": 1.0,
    "190": 0.404, "191": 0.986, "192": 0.44, "193": 0.808, "195": 0.907, "196": 0.135,
    "197": 0.281, "198": 1.0, "199": 0.907,
}  # fmt: skip


def _blocks(segment: int) -> list[str]:
    return [f"{segment}{block:03d}00000" for block in range(1000)]


def test_the_allocated_segments_are_the_measured_ones() -> None:
    allocated = []
    for segment in range(130, 200):
        try:
            normalise(f"{segment}00000000")
        except NumberProblem:
            continue
        allocated.append(str(segment))
    assert allocated == sorted(MEASURED)


@pytest.mark.parametrize("segment", sorted(MEASURED))
def test_phone_dat_places_at_least_what_was_measured(segment: str) -> None:
    table = geo.table()
    placed = sum(table.place(n) is not None for n in _blocks(int(segment)))
    assert placed / 1000 >= MEASURED[segment] - 0.02


@pytest.mark.parametrize("segment", ["162", "165", "166", "167", "171", "172", "175", "190",
                                     "191", "193", "195", "198", "199"])  # fmt: skip
def test_phonenumbers_alone_places_none_of_these(segment: str) -> None:
    """Why the province comes from phone.dat: phonenumbers' geocoder answers only 中国 for
    these segments (a sample of 100 blocks each), where phone.dat places what it was measured
    to (less ten points for the sample)."""
    sample = _blocks(int(segment))[::10]
    for national in sample:
        place = geocoder.description_for_number(phonenumbers.parse("+86" + national), "zh")
        assert place in ("", "中国")
    table = geo.table()
    assert sum(table.place(n) is not None for n in sample) >= (MEASURED[segment] - 0.1) * 100
