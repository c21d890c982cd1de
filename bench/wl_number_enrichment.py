"""Number normalisation and enrichment: coverage per segment, and the fast path's speed.

Coverage: for every three-digit segment 130–199, one number in each of its 1,000 blocks of
10,000 (``1SS B BBB 0000``, B = 000 … 999 stepping the 4th–6th digits); the share that
* our normaliser accepts (allocated mobile segments),
* ``phonenumbers`` accepts as valid,
* ``phonenumbers``' geocoder places in a province (anything but "中国"),
* ``phone.dat`` (the ``phone`` package, the table :mod:`hongyan.contacts.geo` reads) places.

Speed: normalise + enrich 200,000 mixed-format Chinese mobiles through our fast path, against
the anchor of ``phonenumbers.parse`` + ``is_valid_number`` + ``format_number`` + geocoder on the
same inputs, in the same run.
"""

from __future__ import annotations

import random
import time
from typing import Any

import phonenumbers
from phonenumbers import geocoder

from hongyan.contacts import geo
from hongyan.contacts.numbers import NumberProblem, normalise

N = 200_000


def coverage() -> dict[str, Any]:
    table = geo.table()
    per_segment: dict[str, dict[str, float]] = {}
    totals = {"ours_valid": 0, "pn_valid": 0, "pn_province": 0, "phone_dat": 0, "n": 0}
    for seg in range(130, 200):
        counts = {"ours_valid": 0, "pn_valid": 0, "pn_province": 0, "phone_dat": 0}
        for block in range(1000):
            national = f"{seg}{block:03d}00000"  # the block 1SS-BBB0-0000
            e164 = "+86" + national
            try:
                normalise(national)
                counts["ours_valid"] += 1
            except NumberProblem:
                pass
            parsed = phonenumbers.parse(e164)
            counts["pn_valid"] += phonenumbers.is_valid_number(parsed)
            place = geocoder.description_for_number(parsed, "zh")
            counts["pn_province"] += bool(place) and place != "中国"
            counts["phone_dat"] += table.place(national) is not None
        for k, v in counts.items():
            totals[k] += v
        totals["n"] += 1000
        if counts["ours_valid"]:
            per_segment[str(seg)] = {k: round(v / 1000, 3) for k, v in counts.items()}
    allocated = [s for s, c in per_segment.items() if c["ours_valid"]]
    summary = {
        k: round(sum(per_segment[s][k] for s in allocated) / len(allocated), 3)
        for k in ("pn_valid", "pn_province", "phone_dat")
    }
    return {
        "phone_dat_version": table.version,
        "phone_dat_prefixes": table.prefixes,
        "allocated_segments": len(allocated),
        "mean_over_allocated_segments": summary,
        "segments": per_segment,
    }


def _inputs() -> list[str]:
    rng = random.Random(3)
    segs = ("138", "139", "186", "189", "166", "171", "199", "192", "177", "150")
    out = []
    for _ in range(N):
        n = f"{rng.choice(segs)}{rng.randrange(10**8):08d}"
        forms = (n, f"+86 {n}", f"{n[:3]}-{n[3:7]}-{n[7:]}", "0086" + n)
        out.append(forms[rng.randrange(4)])
    return out


def run() -> dict[str, Any]:
    inputs = _inputs()
    table = geo.table()
    t0 = time.perf_counter()
    for text in inputs:
        geo.describe(normalise(text), table)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for text in inputs:
        p = phonenumbers.parse(text, "CN")
        if phonenumbers.is_valid_number(p):
            phonenumbers.format_number(p, phonenumbers.PhoneNumberFormat.E164)
            geocoder.description_for_number(p, "zh")
    anchor = time.perf_counter() - t0
    return {
        "numbers": N,
        "anchor_phonenumbers_per_s": round(N / anchor),
        "fast_path_per_s": round(N / ours),
        "speedup": round(anchor / ours, 2),
        "coverage": coverage(),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), ensure_ascii=False, indent=2))
