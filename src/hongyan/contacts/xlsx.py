"""The first worksheet of an XLSX workbook as rows of text, read as a stream.

openpyxl's read-only mode built a cell object and its style for every cell, some 240 µs a row
of seven cells where CSV took 3.4 µs (a million-row workbook, read twice: once to check it
whole and once to import it, took minutes). This reader drives the standard library's expat
over the worksheet's XML as it is inflated from the zip, and keeps only what an import needs:
each cell's text, as openpyxl's ``values_only`` rows turned to text (see :func:`text_of`), which
the tests hold it to on the same workbooks. openpyxl stays the authority on number formats
(which styles are dates) and on Excel's serial dates.

Memory: the XML is parsed 64 KiB at a time; a row is kept until it is handed over. The shared
strings (which Excel and WPS use for every text cell) are held joined, a chunk of
:data:`_CHUNK` strings in one ``str`` with an array of offsets, about 4 bytes a string besides
the text itself (a ``list`` of ``str`` costs some 60).

Untrusted input: a document type declaration (where entity expansion bombs live) is refused
in every part; a part larger than its limit is refused before it is inflated (zip's declared
size is what ``zipfile`` inflates at most); a broken zip, XML or cell is a clear
:class:`~hongyan.contacts.sources.ImportFileError`, never a crash.
"""

from __future__ import annotations

import lzma
import posixpath
import re
import zipfile
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import IO, Any
from xml.parsers import expat

from hongyan.contacts.sources import MAX_COLUMNS, MAX_LINE, ImportFileError

# Both the transitional and the strict namespaces of SpreadsheetML; expat names an element
# "namespace local" whatever prefix the file used (``<c>``, ``<x:c>``).
_MAIN = (
    "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "http://purl.oclc.org/ooxml/spreadsheetml/main",
)
_SMALL_PART = 64 << 20  # workbook, relationships, styles
_STRINGS_PART = 1 << 30  # the shared strings' XML, inflated
_CHUNK = 4096  # shared strings joined into one str
_READ = 1 << 16
_DATE_CACHE = 1 << 16  # texts of date cells, by serial and style
_LETTERS = re.compile(r"[A-Za-z]{1,3}")  # of a cell reference
_DIGITS = "0123456789"

# Built-in number formats that are dates in Chinese (and other East Asian) Excel, which
# openpyxl's table of built-in formats leaves out (ECMA-376 Part 1, 18.8.30): 31 is
# yyyy"年"m"月"d"日", 57 and 58 their year-month and month-day forms. 32-35 are times.
_EAST_ASIAN_DATES = frozenset({*range(27, 37), *range(50, 59)})


class _Refused(Exception):
    """A document type declaration: no part of a workbook needs one."""


def _error(code: str, en: str, zh: str, **details: Any) -> ImportFileError:
    err = ImportFileError(en, zh, details=details or None)
    err.code = code
    return err


def _unreadable(what: str) -> ImportFileError:
    return _error(
        "import_file_type",
        f"This is not a readable XLSX workbook ({what})",
        "这不是可读取的 XLSX 工作簿",
    )


def _parser() -> Any:
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.buffer_text = True
    parser.buffer_size = _READ

    def refuse(*_: Any) -> None:
        raise _Refused

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    return parser


def _local(name: str) -> str:
    return name.rpartition(" ")[2]


#: What ``zipfile`` raises for a damaged container or member (RuntimeError: an encrypted one;
#: ValueError: a member name flagged UTF-8 that is not, among others; LZMAError: a member
#: compressed with LZMA whose data is damaged).
_BROKEN = (
    zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, NotImplementedError,
    RuntimeError, ValueError,
)  # fmt: skip


def _open_part(book: zipfile.ZipFile, name: str, limit: int) -> IO[bytes]:
    try:
        info = book.getinfo(name)
    except KeyError:
        raise _unreadable(f"{name} is missing") from None
    if info.file_size > limit:
        raise _unreadable(f"{name} is larger than {limit >> 20} MiB")
    try:
        return book.open(info)
    except _BROKEN as exc:  # its local header damaged, encrypted, an unknown compression
        raise _unreadable(f"{name}: {exc}") from None


def _feed(parser: Any, part: IO[bytes], name: str) -> Iterator[int]:
    """Feed ``part`` to ``parser`` a block at a time, yielding the bytes fed so far."""
    done = 0
    try:
        while True:
            block = part.read(_READ)
            parser.Parse(block, not block)
            if not block:
                return
            done += len(block)
            yield done
    except _Refused:
        raise _unreadable(f"{name} declares a document type") from None
    except expat.ExpatError as exc:
        raise _unreadable(f"{name} is not valid XML: {expat.errors.messages[exc.code]}") from None
    except _BROKEN as exc:
        raise _unreadable(f"{name}: {exc}") from None


@dataclass
class _Element:
    name: str  # local name
    attrs: dict[str, str]  # by local name
    parent: str


def _elements(book: zipfile.ZipFile, name: str) -> list[_Element]:
    """Every element of a small part (workbook, relationships, styles), without its text."""
    found: list[_Element] = []
    path = [""]
    parser = _parser()

    def start(tag: str, attrs: dict[str, str]) -> None:
        local = _local(tag)
        found.append(_Element(local, {_local(k): v for k, v in attrs.items()}, path[-1]))
        path.append(local)

    def end(_tag: str) -> None:
        path.pop()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    with _open_part(book, name, _SMALL_PART) as part:
        for _ in _feed(parser, part, name):
            pass
    return found


def _relationships(book: zipfile.ZipFile, part: str) -> list[tuple[str, str, str]]:
    """(id, type, target part) of ``part``'s relationships, targets resolved to zip names."""
    folder, base = posixpath.split(part)
    rels = posixpath.join(folder, "_rels", base + ".rels")
    if rels not in book.NameToInfo:
        return []
    out = []
    for e in _elements(book, rels):
        target = e.attrs.get("Target", "")
        if e.name != "Relationship" or e.attrs.get("TargetMode") == "External" or not target:
            continue
        if target.startswith("/"):
            resolved = target[1:]
        else:
            resolved = posixpath.normpath(posixpath.join(folder, target))
        out.append((e.attrs.get("Id", ""), e.attrs.get("Type", ""), resolved))
    return out


def _styles(book: zipfile.ZipFile, name: str | None) -> tuple[frozenset[int], frozenset[int]]:
    """The cell styles (their index in ``cellXfs``) whose number format is a date, and those
    that are a duration (``[h]:mm``), judged by openpyxl's own rules."""
    from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format, is_timedelta_format

    if name is None or name not in book.NameToInfo:
        return frozenset(), frozenset()
    elements = _elements(book, name)
    custom = {
        e.attrs.get("numFmtId"): e.attrs.get("formatCode")
        for e in elements
        if e.name == "numFmt" and e.parent == "numFmts"
    }
    dates, durations = set(), set()
    for index, e in enumerate(x for x in elements if x.name == "xf" and x.parent == "cellXfs"):
        key = e.attrs.get("numFmtId", "0")
        fmt = custom.get(key)
        if fmt is None and key.isdigit():
            fmt = BUILTIN_FORMATS.get(int(key))
            if fmt is None and int(key) in _EAST_ASIAN_DATES:
                dates.add(index)
        if is_date_format(fmt):
            dates.add(index)
        if is_timedelta_format(fmt):
            durations.add(index)
    return frozenset(dates), frozenset(durations)


class SharedStrings:
    """The workbook's shared strings, joined :data:`_CHUNK` at a time (see the module)."""

    def __init__(self) -> None:
        self._texts: list[str] = []
        self._starts: list[array[int]] = []
        self._pending: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self._pending.append(text)
        self.count += 1
        if len(self._pending) == _CHUNK:
            self._close()

    def _close(self) -> None:
        starts = array("I", [0])
        at = 0
        for text in self._pending:
            at += len(text)
            starts.append(at)
        self._texts.append("".join(self._pending))
        self._starts.append(starts)
        self._pending = []

    def done(self) -> None:
        if self._pending:
            self._close()

    def chunks(self) -> tuple[list[str], list[array[int]]]:
        """The joined texts and their start offsets, for a reader that looks strings up inline:
        string ``i`` is ``texts[c][starts[c][j] : starts[c][j + 1]]``, ``c, j = divmod(i,
        _CHUNK)``."""
        return self._texts, self._starts

    def __getitem__(self, i: int) -> str:
        chunk, j = divmod(i, _CHUNK)
        if i < 0 or chunk >= len(self._texts):
            raise IndexError(i)
        starts = self._starts[chunk]
        return self._texts[chunk][starts[j] : starts[j + 1]]

    @classmethod
    def read(cls, book: zipfile.ZipFile, name: str) -> SharedStrings:
        """The strings of ``<si>`` elements in order: the text of their ``<t>``, of rich text
        runs included, of phonetic guides (``<rPh>``) not; ``_x005F_`` read as openpyxl
        does."""
        strings = cls()
        parts: list[str] = []
        depth = [0, 0]  # inside <t>, inside <rPh>
        parser = _parser()
        t_tags = {f"{ns} t" for ns in _MAIN}
        rph_tags = {f"{ns} rPh" for ns in _MAIN}
        si_tags = {f"{ns} si" for ns in _MAIN}

        def start(tag: str, _attrs: Any) -> None:
            if tag in t_tags:
                depth[0] += 1
            elif tag in rph_tags:
                depth[1] += 1

        def end(tag: str) -> None:
            if tag in t_tags:
                depth[0] -= 1
            elif tag in rph_tags:
                depth[1] -= 1
            elif tag in si_tags:
                text = "".join(parts)
                parts.clear()
                strings.add(text.replace("x005F_", "") if "x005F_" in text else text)

        def text(data: str) -> None:
            if depth[0] and not depth[1]:
                parts.append(data)

        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = text
        with _open_part(book, name, _STRINGS_PART) as part:
            for _ in _feed(parser, part, name):
                pass
        strings.done()
        return strings


def text_of(value: Any) -> str:
    """A cell's value (as openpyxl gives it) as the text an import reads: a whole number stored
    as a float without its ``.0`` (13812345678 typed as a number), a date without a midnight."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time.min else str(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


@dataclass
class Sheet:
    """The first worksheet: its rows (number, cells), and how far through its XML they are."""

    rows: Iterator[tuple[int, list[str]]]
    fraction: Callable[[], float]


def first_sheet(stream: IO[bytes]) -> Sheet:
    """Open the workbook in ``stream`` (seekable) and its first worksheet (the first ``<sheet>``
    of the workbook that is a worksheet, not a chart sheet), with its styles and shared strings.
    Rows come as openpyxl's ``iter_rows(values_only=True)`` gives them, each value made text by
    :func:`text_of`, without the trailing empty cells; a row without any cell is left out."""
    try:
        book = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _unreadable(type(exc).__name__) from None
    office = next(
        (t for _i, kind, t in _relationships(book, "") if kind.endswith("/officeDocument")),
        "xl/workbook.xml",
    )
    elements = _elements(book, office)
    epoch = datetime(1899, 12, 30)
    for e in elements:
        if e.name == "workbookPr" and e.attrs.get("date1904", "").lower() in ("1", "true"):
            epoch = datetime(1904, 1, 1)
    related = _relationships(book, office)
    by_id = {i: (kind, target) for i, kind, target in related}
    sheet_part = None
    for e in elements:
        if e.name == "sheet" and e.parent == "sheets":
            kind, target = by_id.get(e.attrs.get("id", ""), ("", ""))
            if kind.endswith("/worksheet"):
                sheet_part = target
                break
    if sheet_part is None:
        raise _error("import_empty", "The workbook has no sheet", "工作簿没有工作表")
    strings_part = next((t for _i, k, t in related if k.endswith("/sharedStrings")), None)
    styles_part = next((t for _i, k, t in related if k.endswith("/styles")), None)
    dates, durations = _styles(book, styles_part)
    strings = (
        SharedStrings.read(book, strings_part)
        if strings_part is not None and strings_part in book.NameToInfo
        else SharedStrings()
    )
    try:
        size = book.getinfo(sheet_part).file_size
    except KeyError:
        raise _unreadable(f"{sheet_part} is missing") from None
    done = [0]
    reader = _SheetReader(strings, dates, durations, epoch)

    def rows() -> Iterator[tuple[int, list[str]]]:
        out = reader.out
        with _open_part(book, sheet_part, 1 << 62) as part:
            for done[0] in _feed(reader.parser, part, sheet_part):
                if out:
                    yield from out
                    out.clear()
        yield from out
        out.clear()

    return Sheet(rows(), lambda: min(1.0, done[0] / size) if size else 0.0)


class _SheetReader:
    """The expat handlers of a worksheet, collecting finished rows in ``out``: closures over
    local state (an attribute lookup per access cost a fifth of the time), the common cases
    first (a cell's ``<v>``, a cell in the next column)."""

    def __init__(
        self,
        strings: SharedStrings,
        dates: frozenset[int],
        durations: frozenset[int],
        epoch: datetime,
    ) -> None:
        self.out: list[tuple[int, list[str]]] = []
        out = self.out
        row = [0]  # this row's number
        line: list[str] = []  # its cells so far ("" for a gap)
        last = [0]  # the column of its last cell (1-based)
        cell: list[Any] = [None, "n", None]  # this cell's reference, type, style
        value: list[str] = []  # text of <v>
        inline: list[str] = []  # text of <t> (in <is>)
        formula: list[list[str] | None] = [None]  # text of <f>, if the cell has one
        into: list[list[str] | None] = [None]  # where character data goes now
        rph = [0]  # inside a phonetic guide
        columns: dict[str, int] = {}  # a reference's letters -> column (1-based)
        date_texts: dict[tuple[str, str], str] = {}  # birthdays repeat
        string_texts, string_starts = strings.chunks()
        kinds: dict[str, int] = {}
        for ns in _MAIN:
            for code, local in enumerate(("c", "v", "t", "f", "row", "rPh"), start=1):
                kinds[f"{ns} {local}"] = code
        kind_of = kinds.get

        def start(tag: str, attrs: dict[str, str]) -> None:
            k = kind_of(tag)
            if k == 2:  # <v> (cleared at its <c>)
                into[0] = value
            elif k == 1:  # <c r="B2" t="s" s="3">
                cell[0], cell[1], cell[2] = attrs.get("r"), attrs.get("t", "n"), attrs.get("s")
                formula[0] = None
                value.clear()
                if inline:
                    inline.clear()
            elif k == 5:  # <row r="2">
                given = attrs.get("r")
                number = int(given) if given and given.isdigit() else row[0] + 1
                if number <= row[0]:
                    raise _error(
                        "import_file_type",
                        f"Row {number} comes after row {row[0]} in the sheet; nothing was imported",
                        f"工作表第 {number} 行出现在第 {row[0]} 行之后，整个文件未导入",
                        line=number,
                    )
                row[0], last[0] = number, 0
                line.clear()
            elif k == 3:  # <t> of an inline string
                into[0] = None if rph[0] else inline
            elif k == 4:
                formula[0] = into[0] = []
            elif k == 6:
                rph[0] += 1

        def end(tag: str) -> None:
            k = kind_of(tag)
            if k == 2:
                into[0] = None
            elif k == 1:  # </c>: the cell's text, as openpyxl's reader would give its value
                if cell[1] == "s" and formula[0] is None and len(value) == 1:
                    text = shared(value[0])  # the common case, first
                else:
                    text = cell_text()  # (formulas as their text: the import refuses them)
                ref = cell[0]
                if ref:
                    letters = ref.rstrip(_DIGITS)
                    column = columns.get(letters)
                    if column is None:
                        column = _column(letters) or last[0] + 1
                        if len(columns) < 1024:
                            columns[letters] = column
                else:
                    column = last[0] + 1
                last[0] = column
                if not text:
                    return
                if column > MAX_COLUMNS or len(text) > MAX_LINE:
                    raise _error(
                        "import_line_too_long",
                        f"Row {row[0]} is too long; nothing was imported",
                        f"第 {row[0]} 行过长，整个文件未导入",
                        line=row[0],
                    )
                at = len(line) + 1
                if column == at:
                    line.append(text)
                elif column > at:
                    line.extend([""] * (column - at))
                    line.append(text)
                else:  # a column again, or back (Excel writes neither): the later cell wins
                    line[column - 1] = text
            elif k == 5:
                if line:
                    out.append((row[0], line[:]))
            elif k == 6:
                rph[0] -= 1
            elif k:
                into[0] = None

        def text(data: str) -> None:
            target = into[0]
            if target is not None:
                target.append(data)

        def cell_text() -> str:
            if formula[0] is not None:
                return "=" + "".join(formula[0])
            kind = cell[1]
            if kind == "inlineStr":
                return "".join(inline)
            raw = value[0] if len(value) == 1 else "".join(value)
            if not raw:
                return ""
            try:
                if kind == "s":
                    return shared(raw)
                if kind == "n":
                    style = cell[2]
                    if style is not None and style.isdigit() and int(style) in dates:
                        known = date_texts.get((raw, style))
                        if known is None:
                            known = date_text(raw, int(style) in durations)
                            if len(date_texts) < _DATE_CACHE:
                                date_texts[raw, style] = known
                        return known
                    if raw.isdigit() and raw[0] != "0":
                        return raw  # a whole number, as str(int(raw)) would give it
                    return text_of(_number(raw))
                if kind == "b":
                    return "true" if int(raw) else "false"
                if kind == "d":
                    from openpyxl.utils.datetime import from_ISO8601

                    return text_of(from_ISO8601(raw))
            except (ValueError, IndexError):
                raise _error(
                    "import_file_type",
                    f"Row {row[0]} holds a cell this reader cannot read ({kind}: {raw[:40]!r});"
                    " nothing was imported",
                    f"第 {row[0]} 行有无法读取的单元格，整个文件未导入",
                    line=row[0],
                ) from None
            return raw  # str (a formula's cached text), e (an error such as #N/A)

        def shared(raw: str) -> str:
            """Shared string ``raw`` (:meth:`SharedStrings.__getitem__`, inlined)."""
            try:
                if not raw.isdigit():
                    raise ValueError(raw)
                chunk, j = divmod(int(raw), _CHUNK)
                starts = string_starts[chunk]
                return string_texts[chunk][starts[j] : starts[j + 1]]
            except (ValueError, IndexError):
                raise _error(
                    "import_file_type",
                    f"Row {row[0]} holds a cell this reader cannot read (s: {raw[:40]!r}); "
                    "nothing was imported",
                    f"第 {row[0]} 行有无法读取的单元格，整个文件未导入",
                    line=row[0],
                ) from None

        def date_text(raw: str, duration: bool) -> str:
            from openpyxl.utils.datetime import from_excel

            try:
                return text_of(from_excel(_number(raw), epoch, timedelta=duration))
            except (OverflowError, ValueError):
                return "#VALUE!"  # as openpyxl: a date style on a serial no date has

        parser = _parser()
        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = text
        self.parser = parser


def _number(raw: str) -> int | float:
    """A number cell's value as openpyxl casts it."""
    return float(raw) if "." in raw or "e" in raw or "E" in raw else int(raw)


def _column(ref: str) -> int:
    """The 1-based column of a cell reference (``"AB12"`` → 28), 0 if it names none."""
    letters = _LETTERS.match(ref)
    column = 0
    for ch in letters.group().upper() if letters else "":
        column = column * 26 + ord(ch) - 64
    return column
