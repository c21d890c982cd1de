"""Reading the files marketers bring: CSV (UTF-8 with or without BOM, UTF-16 with BOM, GBK /
GB18030) and XLSX, as a stream of rows with bounded memory.

The format is told by the file's first bytes, never by its name: ``PK\\x03\\x04`` is an XLSX
(zip) workbook, ``\\xd0\\xcf\\x11\\xe0`` a legacy XLS (refused with a clear message), anything
with NUL bytes in its first 64 KiB is not text, and the rest is read as CSV. The encoding is
chosen from the BOM, else by decoding the first 1 MiB as strict UTF-8, else GB18030 (a superset
of GBK and GB2312); a decoding error later in the file stops the import with the line number.
The delimiter (``,`` tab ``;`` ``|``) is sniffed from the first lines. A line longer than
:data:`MAX_LINE` characters stops the import: nothing is stored.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from hongyan.errors import ValidationFailed

MAX_LINE = 64 * 1024  # characters in one CSV field / line
SNIFF_BYTES = 1 << 20
MAX_COLUMNS = 200


class ImportFileError(ValidationFailed):
    code = "import_file_invalid"
    message_zh = "导入文件无法读取"
    message_en = "The import file cannot be read"


def _fail(code: str, en: str, zh: str, **details: Any) -> ImportFileError:
    err = ImportFileError(en, zh, details=details or None)
    err.code = code
    return err


class _Counting(io.RawIOBase):
    """A binary stream that counts the bytes read through it (for a progress bar)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.consumed += n
        return n


@dataclass
class Table:
    """Rows of a file: ``header`` and an iterator of (line number, cells)."""

    kind: str  # csv, xlsx
    encoding: str | None
    header: list[str]
    rows: Iterator[tuple[int, list[str]]]
    total_bytes: int = 0
    _counter: _Counting | None = field(default=None, repr=False)
    _fraction: Callable[[], float] | None = field(default=None, repr=False)  # an XLSX's

    def fraction(self) -> float:
        """How far through the file the reader is, 0 … 1."""
        if self._counter is not None and self.total_bytes:
            return min(1.0, self._counter.consumed / self.total_bytes)
        if self._fraction is not None:
            return self._fraction()
        return 0.0


def detect_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=len(head) < SNIFF_BYTES)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    gb = codecs.getincrementaldecoder("gb18030")()
    try:
        gb.decode(head, final=len(head) < SNIFF_BYTES)
    except UnicodeDecodeError:
        raise _fail(
            "import_encoding",
            "The file is neither UTF-8 nor GBK/GB18030 text; save it as CSV UTF-8",
            "文件既不是 UTF-8 也不是 GBK/GB18030 编码，请另存为“CSV UTF-8”格式",
        ) from None
    foreign = _foreign_encoding(head)
    if foreign is not None:
        en, zh = foreign
        raise _fail(
            "import_encoding",
            f"The file looks like {en} text, not GBK; save it as CSV UTF-8",
            f"文件看起来是{zh}编码，而不是 GBK，请另存为“CSV UTF-8”格式",
            encoding=en,
        )
    return "gb18030"


# Encodings GB18030 decodes without an error but into nonsense, by what charset-normalizer
# names them: a Traditional Chinese export from Taiwan or Hong Kong, a Japanese or Korean one
# (another is refused under charset-normalizer's own name).
_FOREIGN = {
    "big5": ("Big5", "繁体中文 Big5 "),
    "big5hkscs": ("Big5-HKSCS", "繁体中文 Big5-HKSCS "),
    "cp950": ("Big5", "繁体中文 Big5 "),
    "cp932": ("Shift-JIS", "日文 Shift-JIS "),
    "shift_jis": ("Shift-JIS", "日文 Shift-JIS "),
    "shift_jis_2004": ("Shift-JIS", "日文 Shift-JIS "),
    "shift_jisx0213": ("Shift-JIS", "日文 Shift-JIS "),
    "euc_jp": ("EUC-JP", "日文 EUC-JP "),
    "euc_jis_2004": ("EUC-JP", "日文 EUC-JP "),
    "euc_jisx0213": ("EUC-JP", "日文 EUC-JP "),
    "cp949": ("EUC-KR", "韩文 EUC-KR "),
    "euc_kr": ("EUC-KR", "韩文 EUC-KR "),
}


def _foreign_encoding(head: bytes) -> tuple[str, str] | None:
    """Whether bytes that are not UTF-8 are Big5 or Japanese rather than GBK, which GB18030
    would read as other characters without an error (a Big5 name becomes a rare GBK one).
    charset-normalizer weighs which decodings read as a language; a file is refused only when
    none of its candidates is a GB encoding, so a short GBK file that reads as well in Korean
    (two names) still imports. Korean EUC-KR shares GB2312's byte ranges and is among the
    candidates GB18030 reads: it is not caught here."""
    from charset_normalizer import from_bytes

    matches = list(from_bytes(head[: 256 * 1024]))
    names = [m.encoding for m in matches]
    if not names or any(n in ("gb18030", "gbk", "gb2312", "hz") for n in names):
        return None
    return _FOREIGN.get(names[0], (names[0], f"{names[0]} "))


def open_table(stream: IO[bytes], total_bytes: int = 0) -> Table:
    """Open a CSV or XLSX stream (seekable); raises :class:`ImportFileError` for anything else."""
    head = stream.read(SNIFF_BYTES)
    stream.seek(0)
    if not head.strip():
        raise _fail("import_empty", "The file is empty", "文件为空")
    if head.startswith(b"PK\x03\x04"):
        return _open_xlsx(stream)
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise _fail(
            "import_file_type",
            "Legacy .xls workbooks are not supported; save the sheet as .xlsx or CSV",
            "不支持旧版 .xls 文件，请另存为 .xlsx 或 CSV",
        )
    encoding = detect_encoding(head)
    probe = head[: 64 * 1024]
    if encoding != "utf-16" and b"\x00" in probe:
        raise _fail(
            "import_file_type",
            "This is not a CSV or XLSX file",
            "这不是 CSV 或 XLSX 文件",
        )
    return _open_csv(stream, encoding, head, total_bytes)


def _sniff_dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    lines = sample.splitlines()[:20]
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",\t;|")
    except csv.Error:
        return csv.excel


def _open_csv(stream: IO[bytes], encoding: str, head: bytes, total_bytes: int) -> Table:
    counter = _Counting(stream)
    text = io.TextIOWrapper(
        io.BufferedReader(counter, buffer_size=1 << 16), encoding=encoding, newline=""
    )
    sample = head[:65536].decode(encoding, errors="ignore")
    dialect = _sniff_dialect(sample)
    # A field may span lines (a quoted address), but not beyond MAX_LINE characters: a quote
    # left open would otherwise swallow the rest of the file into one odd row.
    csv.field_size_limit(MAX_LINE)
    reader = csv.reader(text, dialect)

    def rows() -> Iterator[tuple[int, list[str]]]:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                line = reader.line_num
                if "field larger" in str(exc):
                    raise _fail(
                        "import_line_too_long",
                        f"Line {line} is longer than {MAX_LINE} characters; nothing was imported",
                        f"第 {line} 行超过 {MAX_LINE} 个字符，整个文件未导入",
                        line=line,
                    ) from None
                raise _fail(
                    "import_csv_invalid",
                    f"Line {line} is not valid CSV ({exc}); nothing was imported",
                    f"第 {line} 行不是有效的 CSV（{exc}），整个文件未导入",
                    line=line,
                ) from None
            except UnicodeDecodeError:
                line = reader.line_num + 1
                raise _fail(
                    "import_encoding",
                    f"Line {line} is not valid {encoding} text; nothing was imported",
                    f"第 {line} 行不是有效的 {encoding} 编码文本，整个文件未导入",
                    line=line,
                ) from None
            if not "".join(row).strip():  # no row, or only blank cells
                continue
            if len(row) > MAX_COLUMNS:
                raise _fail(
                    "import_line_too_long",
                    f"Line {reader.line_num} has more than {MAX_COLUMNS} columns; "
                    "nothing was imported",
                    f"第 {reader.line_num} 行超过 {MAX_COLUMNS} 列，整个文件未导入",
                    line=reader.line_num,
                )
            yield reader.line_num, row

    it = rows()
    try:
        _line, header = next(it)
    except StopIteration:
        raise _fail("import_empty", "The file has no rows", "文件没有数据行") from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    return Table("csv", encoding, header, it, total_bytes=total_bytes, _counter=counter)


def _open_xlsx(stream: IO[bytes]) -> Table:
    from hongyan.contacts.xlsx import first_sheet

    sheet = first_sheet(stream)

    def rows() -> Iterator[tuple[int, list[str]]]:
        for number, cells in sheet.rows:  # (no trailing empty cell)
            if "".join(cells).strip():  # not only blank cells
                yield number, cells

    it = rows()
    try:
        _line, header = next(it)
    except StopIteration:
        raise _fail("import_empty", "The sheet has no rows", "工作表没有数据行") from None
    return Table("xlsx", None, [h.strip() for h in header], it, _fraction=sheet.fraction)


# -- writing a CSV people open in Excel ------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def is_formula(text: str) -> bool:
    """A cell a spreadsheet would run: ``=…``, ``@…``, or ``+`` / ``-`` followed by more than a
    number (``+8613812345678`` and ``-5`` are data, ``+cmd|' /C calc'!A0`` is not)."""
    if not text or text[0] not in _FORMULA_START:
        return False
    if text[0] in "+-":
        rest = text[1:].replace(" ", "").replace(".", "").replace("-", "")
        return bool(rest) and not rest.isdigit()
    return True


def escape_cell(text: str) -> str:
    """A cell safe to open in Excel or WPS: formula-leading text gets a leading apostrophe."""
    return "'" + text if is_formula(text) else text


def csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    """A UTF-8-with-BOM CSV (what Excel opens as UTF-8), every cell escaped."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([escape_cell(h) for h in header])
    for row in rows:
        writer.writerow([escape_cell(c) for c in row])
    return codecs.BOM_UTF8 + out.getvalue().encode("utf-8")


def check_whole(stream: IO[bytes], table: Table) -> None:
    """Read the whole file once before anything is stored, and refuse it if it is broken as a
    whole: text that does not decode, a NUL character, a line over :data:`MAX_LINE`
    characters (a CSV), or any error the workbook reader meets (an XLSX, read row by row). The
    stream is left at its start. For a CSV this decodes in large chunks and counts lines, then
    parses the CSV itself once (a quote left open, a row of too many columns), so that nothing
    the import's own reading of the file meets later can stop it after batches were stored."""
    stream.seek(0)
    if table.kind != "csv":
        for _ in table.rows:
            pass
        stream.seek(0)
        return
    assert table.encoding is not None
    decoder = codecs.getincrementaldecoder(table.encoding)()
    line, length = 1, 0
    while True:
        chunk = stream.read(1 << 20)
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError:
            raise _fail(
                "import_encoding",
                f"Line {line} is not valid {table.encoding} text; nothing was imported",
                f"第 {line} 行不是有效的 {table.encoding} 编码文本，整个文件未导入",
                line=line,
            ) from None
        if "\x00" in text:
            at = line + text[: text.index("\x00")].count("\n")
            raise _fail(
                "import_csv_invalid",
                f"Line {at} holds a NUL character; nothing was imported",
                f"第 {at} 行含有空字符（NUL），整个文件未导入",
                line=at,
            )
        pieces = text.split("\n")
        for i, piece in enumerate(pieces):
            length = length + len(piece) if i == 0 else len(piece)
            if length > MAX_LINE:
                at = line + i
                raise _fail(
                    "import_line_too_long",
                    f"Line {at} is longer than {MAX_LINE} characters; nothing was imported",
                    f"第 {at} 行超过 {MAX_LINE} 个字符，整个文件未导入",
                    line=at,
                )
        line += len(pieces) - 1
        if not chunk:
            break
    stream.seek(0)
    for _ in open_table(stream, table.total_bytes).rows:  # the rows' own checks, nothing kept
        pass
    stream.seek(0)
