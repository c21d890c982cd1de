"""Contact import from an XLSX workbook: reading it, and importing it on SQLite.

The rows are those of ``wl_contacts_import`` (the same generator and seed), written as Excel
writes a workbook (XlsxWriter: shared strings, numbers typed as numbers, birthdays as dates with
a date format). Each measurement runs in its own process, with its CPU seconds and its peak
memory (sampled, the process and its children).

* ``read``: one pass over the sheet's rows as the import reads them (``sources.open_table``),
  against the anchor measured in the same run: what the import did before ``contacts/xlsx.py``
  on the same workbook, openpyxl's read-only ``iter_rows(values_only=True)`` with each value
  made text and blank rows left out.
* ``import_sqlite``: the whole import of the workbook, against the anchor of the same rows
  imported from the CSV they were generated as, in the same run.

``HONGYAN_BENCH_XLSX_ROWS`` sets the size (default 200,000; a sheet holds at most 1,048,576).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.wl_contacts_import import _cpu_seconds, _MemoryWatch, bench_tenant, generate
from bench.wl_contacts_import import _spawn as _spawn_child

ROWS = int(os.environ.get("HONGYAN_BENCH_XLSX_ROWS", "200000"))


def workbook_from(csv_path: Path, out: Path) -> None:
    """The CSV's rows as Excel would save them: text in shared strings, an eleven-digit number
    typed as a number, a birthday that is a date as a date cell."""
    import xlsxwriter

    book = xlsxwriter.Workbook(str(out), {"constant_memory": False})
    sheet = book.add_worksheet()
    born = book.add_format({"num_format": "yyyy-mm-dd"})
    with csv_path.open(encoding="utf-8", newline="") as fh:
        for r, row in enumerate(csv.reader(fh)):
            for c, value in enumerate(row):
                if not value:
                    continue
                if r and c == 0 and value.isdigit() and len(value) == 11:
                    sheet.write_number(r, c, int(value))
                elif r and c == 3:
                    try:
                        sheet.write_datetime(r, c, datetime.strptime(value, "%Y-%m-%d"), born)
                    except ValueError:
                        sheet.write_string(r, c, value)
                else:
                    sheet.write_string(r, c, value)
    book.close()


def _read(kind: str, path: str) -> dict[str, Any]:
    rows = 0
    with open(path, "rb") as stream:
        if kind == "read-openpyxl":  # the import's reading before contacts/xlsx.py
            from openpyxl import load_workbook

            from hongyan.contacts.xlsx import text_of

            book = load_workbook(stream, read_only=True, data_only=False)
            for values in book.worksheets[0].iter_rows(values_only=True):
                cells = [text_of(v) for v in values]
                while cells and cells[-1] == "":
                    cells.pop()
                if cells and "".join(cells).strip():
                    rows += 1
            book.close()
        else:
            from hongyan.contacts.sources import open_table

            table = open_table(stream)
            rows = 1 + sum(1 for _ in table.rows)
    return {"rows_read": rows}


def _import(url: str, path: str) -> dict[str, Any]:
    from hongyan.contacts import service

    runtime, tenant_id, options = bench_tenant(
        url, Path(path).parent / f"var-{uuid.uuid4().hex[:6]}"
    )
    result = service.import_path(runtime, tenant_id, Path(path), options)
    runtime.close()
    return {k: v for k, v in result.counters().items() if k != "errors"}


def _child(kind: str, url: str, path: str) -> None:
    with _MemoryWatch() as watch:
        t0 = time.perf_counter()
        out = _import(url, path) if kind == "import" else _read(kind, path)
        out["seconds"] = round(time.perf_counter() - t0, 3)
    out["cpu_seconds"] = round(_cpu_seconds(), 1)
    # (not ru_maxrss: it counts the bench's own pages shared between fork and exec)
    out["total_peak_mb"] = round(watch.peak_kb / 1024, 1)
    print(json.dumps(out))


def _spawn(kind: str, url: str, path: Path) -> dict[str, Any]:
    return _spawn_child(kind, url, path, "bench.wl_contacts_xlsx")


def run() -> dict[str, Any]:
    out: dict[str, Any] = {"rows": ROWS}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        csv_path, book_path = tmpdir / "contacts.csv", tmpdir / "contacts.xlsx"
        generate(csv_path, ROWS)
        t0 = time.perf_counter()
        workbook_from(csv_path, book_path)
        out["workbook_mb"] = round(book_path.stat().st_size / 1e6, 1)
        out["write_seconds"] = round(time.perf_counter() - t0, 1)

        anchor = _spawn("read-openpyxl", "", book_path)
        ours = _spawn("read-ours", "", book_path)
        out["read"] = {
            "anchor": "openpyxl read-only iter_rows(values_only=True), values made text",
            "anchor_rows_per_s": round(ROWS / anchor["seconds"]),
            "anchor_peak_mb": anchor["total_peak_mb"],
            "rows_per_s": round(ROWS / ours["seconds"]),
            "speedup": round(anchor["seconds"] / ours["seconds"], 2),
            **ours,
        }
        from_csv = _spawn("import", f"sqlite:///{tmpdir / 'csv.db'}", csv_path)
        from_book = _spawn("import", f"sqlite:///{tmpdir / 'xlsx.db'}", book_path)
        out["import_sqlite"] = {
            "anchor": "the same rows imported from CSV",
            "anchor_rows_per_s": round(ROWS / from_csv["seconds"]),
            "anchor_total_peak_mb": from_csv["total_peak_mb"],
            "rows_per_s": round(ROWS / from_book["seconds"]),
            "ratio_to_anchor": round(from_book["seconds"] / from_csv["seconds"], 2),
            **from_book,
        }
    return out


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        print(json.dumps(run(), ensure_ascii=False, indent=2))
