"""A report (campaign, journey, segment) as CSV or XLSX: one table per section (pure, no I/O
but the bytes).

Text cells that start like a spreadsheet formula (``=``, ``+``, ``-``, ``@``, a tab or a
carriage return) get a leading apostrophe, so Excel and WPS show them instead of running them;
numbers stay numbers. The CSV starts with a UTF-8 BOM (what Excel opens as UTF-8).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Sequence
from typing import Any

FUNNEL = (
    "planned", "sent", "delivered", "failed", "expired", "cancelled", "pending", "delivery_rate",
    "clicks_total", "clicks_unique", "bot_clicks", "click_rate", "conversions",
    "conversion_rate", "revenue_fen", "parts", "cost_fen", "roi",
)  # fmt: skip


def escape(value: Any) -> Any:
    """A cell value safe to open: formula-leading text gets an apostrophe (pure)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, header, rows) per section of a report: a campaign's or a journey's (groups:
    ``variants``) or a segment's (groups: ``campaigns``)."""
    t = report["totals"]
    if "campaigns" in report:
        keys, groups, failures = ["campaign_id", "name"], "campaigns", "failures_by_campaign"
    else:
        keys, groups, failures = ["variant"], "variants", "failures_by_variant"
    blanks = [""] * (len(keys) - 1)
    out: list[tuple[str, list[str], list[list[Any]]]] = [
        ("funnel", [*keys, *FUNNEL], [["all", *blanks, *(t.get(k) for k in FUNNEL)]]),
    ]
    out[0][2].extend([*(g[k] for k in keys), *(g.get(k) for k in FUNNEL)] for g in report[groups])
    out.append(
        ("failures", [keys[0], "reason", "count"],
         [[f[keys[0]], f["reason"], f["count"]] for f in report[failures]])
    )  # fmt: skip
    for title, keys in (
        ("provinces", ["province"]),
        ("cities", ["province", "city"]),
        ("carriers", ["carrier"]),
    ):
        cols = [*keys, *FUNNEL]
        out.append((title, cols, [[r.get(c) for c in cols] for r in report[title]]))
    out.append(
        ("clicks_by_hour_after_send", ["hour", "clicks"],
         [[h["hour"], h["clicks"]] for h in report["clicks_by_hour_after_send"]])
    )  # fmt: skip
    out.append(
        ("clicks_by_hour_of_day", ["hour", "clicks"],
         [[h["hour"], h["clicks"]] for h in report["clicks_by_hour_of_day"]])
    )  # fmt: skip
    return out


def _cells(row: Sequence[Any]) -> list[Any]:
    return [escape(c) for c in row]


def to_csv(report: dict[str, Any]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    for i, (title, header, rows) in enumerate(tables(report)):
        if i:
            w.writerow([])
        w.writerow([escape(title)])
        w.writerow(_cells(header))
        for row in rows:
            w.writerow(_cells(["" if c is None else c for c in row]))
    return codecs.BOM_UTF8 + buf.getvalue().encode("utf-8")


def to_xlsx(report: dict[str, Any]) -> bytes:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    for title, header, rows in tables(report):
        ws = wb.create_sheet(title[:31])
        ws.append(_cells(header))
        for row in rows:
            ws.append(_cells(row))
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
