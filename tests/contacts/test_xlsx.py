"""The streaming XLSX reader: the same rows as openpyxl's read-only reader on workbooks written
by openpyxl (inline strings) and by XlsxWriter (shared strings, number formats, rich text, the
1904 date system, as Excel writes them), and a clear error for every broken or hostile part."""

from __future__ import annotations

import io
import zipfile
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
import xlsxwriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook

from hongyan.contacts import xlsx
from hongyan.contacts.sources import MAX_COLUMNS, MAX_LINE, ImportFileError, open_table

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
STRICT = "http://purl.oclc.org/ooxml/spreadsheetml/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def reference(data: bytes) -> list[tuple[int, list[str]]]:
    """What the import read through openpyxl before this reader: ``values_only`` rows numbered
    from 1, each value made text, trailing empty cells dropped, blank rows left out."""
    book = load_workbook(io.BytesIO(data), read_only=True, data_only=False)
    rows = []
    for number, values in enumerate(book.worksheets[0].iter_rows(values_only=True), start=1):
        cells = [xlsx.text_of(v) for v in values]
        while cells and cells[-1] == "":
            cells.pop()
        if cells and "".join(cells).strip():
            rows.append((number, cells))
    book.close()
    return rows


def ours(data: bytes) -> list[tuple[int, list[str]]]:
    table = open_table(io.BytesIO(data))
    return [(0, table.header), *table.rows]


def same_rows(data: bytes) -> None:
    want = reference(data)
    assert ours(data) == [(0, [c.strip() for c in want[0][1]]), *want[1:]]


# -- differential: the reader gives what openpyxl gives -------------------------------------------

_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("<>&\"' \t\n=+-@_x005F123张三李四省市")),
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Co")),
    ),
    max_size=12,
)
_value = st.one_of(
    st.none(),
    _text,
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.booleans(),
    st.dates(min_value=date(1900, 3, 1), max_value=date(2100, 12, 31)),
    st.datetimes(min_value=datetime(1900, 3, 1), max_value=datetime(2100, 12, 31)),
)
_grid = st.lists(st.lists(_value, max_size=7), min_size=1, max_size=8)


def _openpyxl_book(grid: list[list[Any]]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in grid:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


_FORMATS = ["yyyy-mm-dd", 'yyyy"年"m"月"d"日"', "m/d/yy h:mm", "[h]:mm:ss", "h:mm", "0.00"]


def _xlsxwriter_book(grid: list[list[Any]], *, date_1904: bool = False, fmt: int = 0) -> bytes:
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True, "date_1904": date_1904})
    sheet = book.add_worksheet()
    dates = book.add_format({"num_format": _FORMATS[fmt % len(_FORMATS)]})
    bold = book.add_format({"bold": True})
    for r, row in enumerate(grid):
        for c, value in enumerate(row):
            if value is None:
                continue
            if isinstance(value, bool):
                sheet.write_boolean(r, c, value)
            elif isinstance(value, (date, datetime, time)):
                sheet.write_datetime(r, c, value, dates)
            elif isinstance(value, str) and len(value) > 1 and (r + c) % 3 == 0:
                sheet.write_rich_string(r, c, value[:1], bold, value[1:])  # two runs
            elif isinstance(value, str):
                sheet.write_string(r, c, value)
            else:
                sheet.write_number(r, c, value)
    book.close()
    return out.getvalue()


def _header_first(grid: list[list[Any]]) -> list[list[Any]]:
    return [["手机号", "姓名"], *grid]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid=_grid)
def test_openpyxl_workbooks_read_alike(grid: list[list[Any]]) -> None:
    same_rows(_openpyxl_book(_header_first(grid)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid=_grid, date_1904=st.booleans(), fmt=st.integers(0, 10))
def test_excel_like_workbooks_read_alike(grid: list[list[Any]], date_1904: bool, fmt: int) -> None:
    same_rows(_xlsxwriter_book(_header_first(grid), date_1904=date_1904, fmt=fmt))


def test_formulas_gaps_and_times() -> None:
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, ["手机号", "姓名", "生日"])
    sheet.write_number(1, 0, 13812345678)
    sheet.write_formula(1, 1, '=HYPERLINK("http://x")', None, "x")
    sheet.write_datetime(1, 4, time(12, 30), book.add_format({"num_format": "h:mm"}))
    sheet.write_string(3, 0, "   ")  # a blank row
    sheet.write_string(5, 2, "1990-01-02")
    book.close()
    data = out.getvalue()
    same_rows(data)
    assert ours(data)[1:] == [
        (2, ["13812345678", '=HYPERLINK("http://x")', "", "", "12:30:00"]),
        (6, ["", "", "1990-01-02"]),
    ]


# -- parts written by hand: what other writers do ------------------------------------------------


def _book(
    sheet: str,
    *,
    strings: str | None = None,
    styles: str | None = None,
    workbook: str | None = None,
    rels: str | None = None,
    extra: dict[str, str] | None = None,
) -> bytes:
    workbook = workbook or (
        f'<workbook xmlns="{MAIN}" xmlns:r="{REL}"><sheets>'
        '<sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )
    kinds = f"{REL}/"
    rels = rels or (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{kinds}worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{kinds}sharedStrings" Target="sharedStrings.xml"/>'
        f'<Relationship Id="rId3" Type="{kinds}styles" Target="/xl/styles.xml"/>'
        "</Relationships>"
    )
    parts = {
        "_rels/.rels": (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="r" Type="{kinds}officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>"
        ),
        "xl/workbook.xml": workbook,
        "xl/_rels/workbook.xml.rels": rels,
        "xl/worksheets/sheet1.xml": sheet,
        **({"xl/sharedStrings.xml": strings} if strings is not None else {}),
        **({"xl/styles.xml": styles} if styles is not None else {}),
        **(extra or {}),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(name, text)
    return out.getvalue()


def _sheet(rows: str, ns: str = MAIN, prefix: str = "") -> str:
    p = f"{prefix}:" if prefix else ""
    decl = f'xmlns:{prefix}="{ns}"' if prefix else f'xmlns="{ns}"'
    return f"<{p}worksheet {decl}><{p}sheetData>{rows}</{p}sheetData></{p}worksheet>"


def rows_of(data: bytes) -> list[tuple[int, list[str]]]:
    with io.BytesIO(data) as stream:
        return list(xlsx.first_sheet(stream).rows)


def test_prefixed_and_strict_namespaces() -> None:
    cells = (
        '<x:row r="1"><x:c r="A1" t="s"><x:v>0</x:v></x:c><x:c r="B1"><x:v>5</x:v></x:c></x:row>'
    )
    strings = f'<x:sst xmlns:x="{MAIN}"><x:si><x:t>手机</x:t></x:si></x:sst>'
    assert rows_of(_book(_sheet(cells, prefix="x"), strings=strings)) == [(1, ["手机", "5"])]
    strict = cells.replace("x:", "")
    sst = f'<sst xmlns="{STRICT}"><si><t>手机</t></si></sst>'
    assert rows_of(_book(_sheet(strict, ns=STRICT), strings=sst)) == [(1, ["手机", "5"])]


def test_references_missing_or_with_gaps() -> None:
    data = _book(
        _sheet(
            '<row><c t="inlineStr"><is><t>a</t></is></c><c/><c><v>2</v></c></row>'
            '<row><c r="C2"><v>3</v></c><c><v>4</v></c></row>'
            '<row r="7"><c r="b7" t="b"><v>1</v></c></row>'
        )
    )
    assert rows_of(data) == [(1, ["a", "", "2"]), (2, ["", "", "3", "4"]), (7, ["", "true"])]


def test_rich_text_phonetic_guides_and_escapes() -> None:
    strings = (
        f'<sst xmlns="{MAIN}"><si><r><rPr><b/></rPr><t>张</t></r>'
        '<r><t xml:space="preserve"> 三 </t></r><rPh sb="0" eb="1"><t>ちょう</t></rPh></si>'
        "<si><t>a_x005F_x000D_b &amp; &lt;c&gt;</t></si></sst>"
    )
    sheet = _sheet(
        '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c>'
        '<c r="C1" t="inlineStr"><is><t>李</t><rPh><t>り</t></rPh></is></c></row>'
    )
    assert rows_of(_book(sheet, strings=strings)) == [(1, ["张 三 ", "a_x000D_b & <c>", "李"])]


def test_cell_types_and_east_asian_date_formats() -> None:
    styles = (
        f'<styleSheet xmlns="{MAIN}"><numFmts count="1"><numFmt numFmtId="164" '
        'formatCode="yyyy&quot;年&quot;m&quot;月&quot;d&quot;日&quot;"/></numFmts>'
        '<cellStyleXfs count="1"><xf numFmtId="14"/></cellStyleXfs>'
        '<cellXfs count="4"><xf numFmtId="0"/><xf numFmtId="31"/><xf numFmtId="164"/>'
        '<xf numFmtId="58"/></cellXfs></styleSheet>'
    )
    sheet = _sheet(
        '<row r="1"><c r="A1" s="1"><v>45000</v></c><c r="B1" s="2"><v>45000.5</v></c>'
        '<c r="C1" s="3"><v>1</v></c><c r="D1" s="0"><v>45000</v></c>'
        '<c r="E1" t="d"><v>2024-05-06</v></c><c r="F1" t="e"><v>#N/A</v></c>'
        '<c r="G1" t="str"><v>cached</v></c><c r="H1"><v>1.5E3</v></c>'
        '<c r="I1"><v>13812345678.0</v></c><c r="J1"><v>0.1</v></c></row>'
    )
    want = ["2023-03-15", "2023-03-15 12:00:00", "1900-01-01", "45000", "2024-05-06",
            "#N/A", "cached", "1500", "13812345678", "0.1"]  # fmt: skip
    assert rows_of(_book(sheet, styles=styles)) == [(1, want)]
    # 1904: the same serial is four years and a day later
    workbook = (
        f'<workbook xmlns="{MAIN}" xmlns:r="{REL}"><workbookPr date1904="1"/><sheets>'
        '<sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )
    assert rows_of(_book(sheet, styles=styles, workbook=workbook))[0][1][0] == "2027-03-16"


def test_first_worksheet_not_a_chart_sheet() -> None:
    workbook = (
        f'<workbook xmlns="{MAIN}" xmlns:r="{REL}"><sheets>'
        '<sheet name="Chart" sheetId="2" r:id="rId9"/><sheet name="S" sheetId="1" r:id="rId1"/>'
        "</sheets></workbook>"
    )
    rels = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId9" Type="{REL}/chartsheet" Target="chartsheets/sheet1.xml"/>'
        f'<Relationship Id="rId1" Type="{REL}/worksheet" Target="worksheets/sheet1.xml"/>'
        "</Relationships>"
    )
    sheet = _sheet('<row r="3"><c r="A3"><v>7</v></c></row>')
    assert rows_of(_book(sheet, workbook=workbook, rels=rels)) == [(3, ["7"])]


def test_progress_reaches_the_end() -> None:
    rows = "".join(f'<row r="{i}"><c r="A{i}"><v>{i}</v></c></row>' for i in range(1, 20_000))
    with io.BytesIO(_book(_sheet(rows))) as stream:
        sheet = xlsx.first_sheet(stream)
        seen = []
        for _ in sheet.rows:
            seen.append(sheet.fraction())
    assert seen == sorted(seen) and 0 < seen[0] < 1 and seen[-1] == 1.0


def test_shared_strings_across_chunks() -> None:
    strings = xlsx.SharedStrings()
    texts = [f"{i}号{'x' * (i % 7)}" for i in range(3 * xlsx._CHUNK + 5)]
    for t in texts:
        strings.add(t)
    strings.add("")
    strings.done()
    assert [strings[i] for i in range(len(texts))] == texts
    assert strings[len(texts)] == ""
    for bad in (-1, len(texts) + 1, 10 * xlsx._CHUNK):
        with pytest.raises(IndexError):
            strings[bad]


# -- broken and hostile workbooks: a clear error ---------------------------------------------------

_BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
    '"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
)


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (_book(_BOMB + _sheet('<row r="1"><c r="A1"><v>1</v></c></row>')), "import_file_type",
         "document type"),
        (_book(_sheet('<row r="1"><c r="A1" t="s"><v>0</v></c></row>'),
               strings=_BOMB + f'<sst xmlns="{MAIN}"><si><t>&lol2;</t></si></sst>'),
         "import_file_type", "document type"),
        (_book(_sheet('<row r="1"><c r="A1"><v>1</v></c></row>')[:-30]), "import_file_type",
         "not valid XML"),
        (_book(_sheet('<row r="2"><c><v>1</v></c></row><row r="2"><c><v>2</v></c></row>')),
         "import_file_type", "comes after"),
        (_book(_sheet(f'<row r="1"><c r="A1"><v>1</v></c><c r="{"GT"}1"><v>1</v></c></row>')),
         "import_line_too_long", "too long"),
        (_book(_sheet(f'<row r="1"><c r="A1" t="inlineStr"><is><t>{"9" * (MAX_LINE + 1)}'
                      "</t></is></c></row>")), "import_line_too_long", "too long"),
        (_book(_sheet('<row r="1"><c r="A1" t="s"><v>3</v></c></row>'),
               strings=f'<sst xmlns="{MAIN}"><si><t>a</t></si></sst>'), "import_file_type",
         "cannot read"),
        (_book(_sheet('<row r="1"><c r="A1" t="s"><v>-1</v></c></row>'),
               strings=f'<sst xmlns="{MAIN}"><si><t>a</t></si></sst>'), "import_file_type",
         "cannot read"),
        (_book(_sheet('<row r="1"><c r="A1"><v>12abc</v></c></row>')), "import_file_type",
         "cannot read"),
        (_book(_sheet("<row/>"), rels='<Relationships xmlns="x"/>'), "import_empty", "no sheet"),
    ],
)  # fmt: skip
def test_broken_workbooks(data: bytes, code: str, words: str) -> None:
    with pytest.raises(ImportFileError) as caught:
        ours(data)
    assert caught.value.code == code and words in str(caught.value)


def test_a_column_past_the_limit() -> None:
    assert xlsx._column("GR") == MAX_COLUMNS
    ours(_book(_sheet('<row r="1"><c r="GR1"><v>1</v></c></row>')))  # the last one allowed


def test_a_corrupt_member_is_an_error_not_a_crash() -> None:
    data = bytearray(_book(_sheet("".join(
        f'<row r="{i}"><c r="A{i}" t="inlineStr"><is><t>{i * 7919}</t></is></c></row>'
        for i in range(1, 3000)
    ))))  # fmt: skip
    at = data.find(b"xl/worksheets/sheet1.xml") + 200  # inside the deflated sheet
    data[at : at + 8] = b"\x00" * 8
    with pytest.raises(ImportFileError) as caught:
        ours(bytes(data))
    assert caught.value.code == "import_file_type"


def test_a_part_over_its_limit_is_not_inflated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xlsx, "_STRINGS_PART", 100)
    strings = f'<sst xmlns="{MAIN}">' + "<si><t>a</t></si>" * 20 + "</sst>"
    with pytest.raises(ImportFileError, match="larger than"):
        ours(_book(_sheet('<row r="1"><c r="A1" t="s"><v>0</v></c></row>'), strings=strings))


def test_a_real_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "客户.xlsx"
    path.write_bytes(_xlsxwriter_book([["手机号", "生日"], [13812345678, date(1990, 5, 6)]]))
    with path.open("rb") as stream:
        table = open_table(stream)
        assert table.kind == "xlsx" and table.header == ["手机号", "生日"]
        assert list(table.rows) == [(2, ["13812345678", "1990-05-06"])]
        assert table.fraction() == 1.0


# -- mangled workbooks: read, or refused with our own error ---------------------------------------

_PARTS = [
    "xl/worksheets/sheet1.xml", "xl/sharedStrings.xml", "xl/styles.xml", "xl/workbook.xml",
    "xl/_rels/workbook.xml.rels", "[Content_Types].xml",
]  # fmt: skip
_SNIPPETS = st.sampled_from(
    [b"<", b">", b"</c>", b"<row>", b'r="A0"', b'r="ZZZZ1"', b't="s"', b't="d"', b"<v>",
     b"99999999999999999999", b"-1", b"&#0;", b"&amp", b"<!DOCTYPE x>", b"\x00", b"\xff\xfe",
     b'<c r="A1" t="inlineStr"><is><t>', b"</sheetData>", b'<sheetPr/>', b'count="-5"']
)  # fmt: skip
_EDITS = st.lists(
    st.tuples(st.floats(0, 1), st.integers(0, 40), st.one_of(_SNIPPETS, st.binary(max_size=12))),
    min_size=1,
    max_size=4,
)


def _edit(data: bytes, edits: list[tuple[float, int, bytes]]) -> bytes:
    out = bytearray(data)
    for where, cut, put in edits:
        at = int(where * len(out))
        out[at : at + cut] = put
    return bytes(out)


def _rezip(data: bytes, part: str, edits: list[tuple[float, int, bytes]]) -> bytes:
    """The workbook with one part's XML edited (and the container itself sound)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as book:
        for info in source.infolist():
            member = source.read(info.filename)
            book.writestr(info.filename, _edit(member, edits) if info.filename == part else member)
    return out.getvalue()


def _read_or_refused(data: bytes) -> None:
    """Any outcome but an exception that is not the import's own error (which would be a
    500 in the API and a crash in the CLI); a refusal says what is wrong in both languages."""
    try:
        ours(data)
    except ImportFileError as exc:
        body = exc.body()
        assert body["code"].startswith("import_"), body
        assert body["message"]["en"] and body["message"]["zh"], body


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    grid=st.lists(st.lists(_value, max_size=4), min_size=1, max_size=4),
    part=st.sampled_from(_PARTS),
    edits=_EDITS,
    excel_like=st.booleans(),
)
def test_a_workbook_with_a_mangled_part_is_read_or_refused(
    grid: list[list[Any]], part: str, edits: list[tuple[float, int, bytes]], excel_like: bool
) -> None:
    made = _xlsxwriter_book(_header_first(grid)) if excel_like else _openpyxl_book(grid)
    _read_or_refused(_rezip(made, part, edits))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(grid=st.lists(st.lists(_value, max_size=4), min_size=1, max_size=4), edits=_EDITS)
def test_a_workbook_with_damaged_bytes_is_read_or_refused(
    grid: list[list[Any]], edits: list[tuple[float, int, bytes]]
) -> None:
    """Bytes of the container itself cut or replaced: its directory, a member's header, its
    deflated data."""
    _read_or_refused(_edit(_xlsxwriter_book(_header_first(grid)), edits))


def test_a_damaged_name_of_a_member_flagged_utf8_is_refused() -> None:
    """Excel and Java write every member name flagged UTF-8; a damaged byte of such a name in a
    member's own header made ``zipfile`` raise UnicodeDecodeError, which escaped the reader."""
    data = bytearray(_openpyxl_book([["手机号"], ["13812345678"]]))
    for signature, flags in ((b"PK\x03\x04", 7), (b"PK\x01\x02", 9)):  # local, central
        at = data.find(signature)
        while at >= 0:
            data[at + flags] |= 0x08  # bit 11 of the flags: the name is UTF-8
            at = data.find(signature, at + 4)
    at = data.find(b"xl/workbook.xml")  # its local header comes first
    data[at + 3] = 0xFF
    with pytest.raises(ImportFileError) as caught:
        ours(bytes(data))
    assert caught.value.code == "import_file_type"
