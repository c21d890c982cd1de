"""A new contact's row, as a tuple for the driver and packed for PostgreSQL's binary COPY: the
two forms must hold the same values (pure; no database)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hongyan.contacts import importer
from hongyan.contacts.geo import table as segment_table
from hongyan.contacts.importer import NEW_COLUMNS, Parsed
from hongyan.security.keyring import KeyRing
from tests.contacts.test_normalise import MOBILE_WAYS

RING = KeyRing({"k1": bytes(range(32))}, "k1", b"i" * 32)
BUILDER = importer._Builder(RING, 7, segment_table())
CIPHERS = {
    "phone_cipher": "tenant:7:phone",
    "name_cipher": "tenant:7:contact-name",
    "birthday_cipher": "tenant:7:contact-birthday",
}

_cn = st.builds(
    lambda seg, rest: f"+86{seg}{rest:08d}",
    st.sampled_from(["138", "134", "170", "171", "192", "199", "166", "145", "100"]),
    st.integers(0, 10**8 - 1),
)
_foreign = st.sampled_from(["+12025550123", "+447911123456", "+818012345678", "+85291234567"])


def _make(e164: str, *fields: Any) -> Parsed:
    name, gender, born, province, city, zone, attrs, digest = fields
    index = RING.blind_index(e164, "tenant:7:phone")
    return Parsed(
        e164, index, name, gender, born, province, city, zone, frozenset(), attrs, True, digest
    )


_parsed = st.builds(
    _make,
    _cn | _foreign,
    st.none() | st.text(min_size=1, max_size=12),
    st.sampled_from([None, "f", "m"]),
    st.none() | st.dates(date(1900, 1, 1), date(2100, 12, 31)),
    st.none() | st.sampled_from(["上海", "广东", "x" * 16]),
    st.none() | st.text(min_size=1, max_size=32),
    st.none() | st.sampled_from(["Asia/Tokyo", "America/New_York"]),
    st.dictionaries(st.text(max_size=6), st.text(max_size=6) | st.integers(), max_size=3),
    st.none() | st.binary(min_size=16, max_size=16),
)


def _comparable(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(NEW_COLUMNS, row, strict=True))
    for column, context in CIPHERS.items():  # fresh nonces: compare what they decrypt to
        if out[column] is not None:
            out[column] = RING.decrypt(out[column], context)
    return out


@given(parsed=_parsed)
@settings(max_examples=300)
def test_packed_row_holds_the_values_of_new_row(parsed: Parsed) -> None:
    packed = BUILDER.packed_row(parsed)
    assert _comparable(BUILDER.packer.unpack(packed)) == _comparable(BUILDER.new_row(parsed))


def test_packed_row_is_the_same_from_its_caches() -> None:
    # the second row of a number block and birthday comes from the caches
    first = Parsed("+8613812345678", b"a" * 32, birthday=date(1990, 5, 6))
    second = Parsed("+8613812349999", b"b" * 32, birthday=date(1990, 5, 6))
    for p in (first, second, first):
        assert _comparable(BUILDER.packer.unpack(BUILDER.packed_row(p))) == _comparable(
            BUILDER.new_row(p)
        )


# -- readers in parallel ----------------------------------------------------------------------


def _batches(text: str, n: int, size: int, skip: int = 0) -> list[importer.Batch]:
    """The batches n readers of ``text`` make, taken in turn as the writer takes them."""
    import io

    from hongyan.contacts import sources

    options = importer.ImportOptions(batch_size=size)
    streams = []
    for j in range(n):
        table = sources.open_table(io.BytesIO(text.encode()), len(text))
        plan = importer.plan_mapping(table.header, {}, [])
        parts = importer.produce(
            table, plan, RING, 7, options, segment_table(), skip=skip, part=(j, n)
        )
        streams.append(iter(parts))
    out: list[importer.Batch] = []
    turn = 0
    while True:
        batch = next(streams[turn % n], None)
        if batch is None:
            break
        if not batch.stored:
            turn += 1
        out.append(batch)
    return list(importer.in_file_order(out))


def _summary(batches: list[importer.Batch]) -> list[tuple[object, ...]]:
    return [
        (b.line, b.rows, b.invalid, b.duplicates, [(k, first) for k, first, *_ in b.items],
         [line for line, *_ in b.bad])
        for b in batches
    ]  # fmt: skip


@given(
    picks=st.lists(st.integers(0, 40), min_size=1, max_size=120),
    n=st.integers(1, 4),
    size=st.integers(1, 9),
    skip=st.integers(0, 30),
)
@settings(max_examples=150)
def test_readers_in_parallel_make_the_batches_one_reader_makes(
    picks: list[int], n: int, size: int, skip: int
) -> None:
    # numbers from a small pool repeat within and across batches; 0 is an invalid row
    lines = [("bad" if p == 0 else f"1381234{p:04d}") + f",名{i}\n" for i, p in enumerate(picks)]
    text = "手机号,姓名\n" + "".join(lines)
    one = _batches(text, 1, size, skip)
    assert _summary(_batches(text, n, size, skip)) == _summary(one)
    data = [b for b in one if not b.stored]
    stored = min(len(picks), max(0, skip - 1))  # line 1 is the header; row i is on line i + 2
    assert sum(b.rows for b in data) == len(picks) - stored
    counted = sum(b.invalid + b.duplicates for b in data) + sum(
        1 for b in data for _, first, *_ in b.items if first
    )
    assert counted == sum(b.rows for b in data)  # every row is exactly one of them
    # a repeat is a valid row whose number came on any earlier line, stored ones included
    repeats = sum(1 for i, p in enumerate(picks) if i >= stored and p and p in picks[:i])
    assert sum(b.duplicates for b in data) == repeats


@pytest.mark.parametrize(
    ("cores", "asked", "expected"),
    [(1, None, 1), (2, None, 1), (3, None, 2), (5, None, 4), (64, None, 4), (2, 3, 3), (8, 0, 1)],
)
def test_reader_count_leaves_a_core_to_the_writer(
    cores: int, asked: int | None, expected: int
) -> None:
    options = importer.ImportOptions(readers=asked)
    assert importer.reader_count(options, cores=cores) == expected


@pytest.mark.parametrize(
    ("cores", "memory_mb", "backend", "expected"),
    [
        (8, 500, "sqlite", 1),  # the default budget: one reader, whatever the cores
        (8, 500, "postgresql", 1),
        (8, 1000, "sqlite", 4),  # (1000 - 350) // 140
        (8, 700, "postgresql", 3),  # (700 - 250) // 140
        (3, 2000, "postgresql", 2),  # the cores bound first
        (8, 200, "sqlite", 1),  # never none
    ],
)
def test_reader_count_keeps_to_the_memory_budget(
    cores: int, memory_mb: int, backend: str, expected: int
) -> None:
    options = importer.ImportOptions()
    got = importer.reader_count(options, cores=cores, memory_mb=memory_mb, backend=backend)
    assert got == expected
    if got > 1:  # the estimate of what they take stays inside the budget
        assert importer.WRITER_MB[backend] + got * importer.READER_MB <= memory_mb
    asked = importer.ImportOptions(readers=3)  # asked for: as asked
    assert importer.reader_count(asked, cores=cores, memory_mb=memory_mb, backend=backend) == 3


PLAN = importer.plan_mapping(["手机号", "姓名", "城市", "会员等级"], {}, {})
# Cells a row accepts (no formula lead), with the separator among them.
CELLS = st.lists(st.text(st.sampled_from("ab 1张三\x1f"), max_size=6), min_size=4, max_size=4)


@given(CELLS, CELLS)
def test_a_row_digest_is_equal_only_for_equal_cells(a: list[str], b: list[str]) -> None:
    """Keyed, per tenant and mapping; the cells joined by U+001F, so a cell holding U+001F
    gets none (two such rows could join alike) and is always written."""
    parse = importer.row_parser(
        PLAN, 0, RING.indexer("tenant:7:phone"), importer.row_digester(RING, 7, PLAN)
    )
    a[0] = b[0] = "13812345678"
    pa, pb = parse(a), parse(b)
    if any("\x1f" in c for c in a):
        assert pa.digest is None
        return
    assert pa.digest is not None and len(pa.digest) == 16
    if not any("\x1f" in c for c in b):
        assert (pa.digest == pb.digest) == (a == b)


def test_a_row_digest_depends_on_the_tenant_key_and_mapping() -> None:
    joined = "13812345678\x1f张三\x1f上海\x1f金卡"
    base = importer.row_digester(RING, 7, PLAN)(joined)
    assert importer.row_digester(RING, 7, PLAN)(joined) == base
    other_ring = KeyRing({"k1": bytes(range(32))}, "k1", b"j" * 32)
    remapped = importer.plan_mapping(["手机号", "城市", "姓名", "会员等级"], {}, {})
    for other in (
        importer.row_digester(RING, 8, PLAN),
        importer.row_digester(other_ring, 7, PLAN),
        importer.row_digester(RING, 7, remapped),
    ):
        assert other(joined) != base


def test_merged_rows_digest_both_in_order() -> None:
    def row(digest: bytes | None) -> Parsed:
        return Parsed("+8613812345678", b"k" * 32, digest=digest)

    one, two = row(b"1" * 16), row(b"2" * 16)
    one.merge(two)
    again = row(b"1" * 16)
    again.merge(row(b"2" * 16))
    swapped = row(b"2" * 16)
    swapped.merge(row(b"1" * 16))
    assert one.digest == again.digest != swapped.digest
    assert one.digest is not None and len(one.digest) == 16
    unknown = row(b"1" * 16)
    unknown.merge(row(None))
    assert unknown.digest is None


_PLAN = importer.plan_mapping(["手机号", "姓名"], None)
_PARSE = importer.row_parser(_PLAN, 0, RING.indexer("tenant:7:phone"))


@pytest.mark.parametrize("text", MOBILE_WAYS)
def test_a_row_takes_every_way_of_writing_a_mobile(text: str) -> None:
    """A number cell that starts like a formula (a tab, "+86 (138) …", a no-break space after
    +86) is still a number: the row is imported, not refused as a formula."""
    assert _PARSE([text, "李"]).e164 == "+8613812345678"


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        (['=HYPERLINK("http://x")', "李"], "formula"),
        (["+cmd|' /C calc'!A0", "李"], "formula"),
        (["@SUM(1)", "李"], "formula"),
        (["13812345678", "=1+1"], "formula"),
        (["13812345678", "-2+3"], "formula"),
        (["+86 1381234567", "李"], "wrong_length"),
    ],
)
def test_a_formula_in_any_cell_refuses_the_row(cells: list[str], reason: str) -> None:
    with pytest.raises(importer.RowProblem) as caught:
        _PARSE(cells)
    assert caught.value.code == reason


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(0, 40), max_size=30),
                     max_size=12),
    in_memory=st.integers(0, 60),
)  # fmt: skip
def test_numbers_seen_are_the_same_in_memory_and_on_disk(
    batches: list[list[int]], in_memory: int
) -> None:
    """:class:`importer.SeenNumbers` answers as a set would, before and after its keys move to
    disk (at ``in_memory``), keys repeated within a batch included, the full 64-bit range."""
    seen = importer.SeenNumbers(in_memory)
    reference: set[int] = set()
    try:
        for keys in batches:
            expected = []
            for k in keys:
                expected.append(k not in reference)
                reference.add(k)
            assert seen.first(keys) == expected
            assert len(seen) == len(reference)
    finally:
        seen.close()


def test_number_keys_are_signed_64_bit() -> None:
    assert importer.number_key(b"\xff" * 32) == -1
    assert importer.number_key(b"\x7f" + b"\xff" * 31) == 2**63 - 1
    assert importer.number_key(bytes(32)) == 0
