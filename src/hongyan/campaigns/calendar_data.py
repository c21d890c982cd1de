"""The operator's holiday arrangements in the database, and the calendar built from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.campaigns.calendar import Arrangement, ArrangementInvalid, MarketingCalendar
from hongyan.campaigns.calendar import parse_arrangement as parse
from hongyan.clock import Clock
from hongyan.db.tables import calendar_arrangements
from hongyan.security import audit

MAX_FILE = 256 * 1024


def read_file(path: Path) -> dict[str, Any]:
    """An arrangement file's JSON; ArrangementInvalid for anything that is not one."""
    try:
        if path.stat().st_size > MAX_FILE:
            raise ArrangementInvalid(
                "The arrangement file is larger than 256 KB", "节假日安排文件超过 256 KB"
            )
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArrangementInvalid(
            f"Cannot read the arrangement file: {exc}", f"无法读取节假日安排文件：{exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ArrangementInvalid("The file must hold one JSON object", "文件内容应为一个 JSON 对象")
    return data


def load_arrangement(
    conn: Connection, clock: Clock, data: dict[str, Any], *, actor: str
) -> Arrangement:
    """Check and store a year's arrangement (replacing an earlier one), with an audit entry."""
    arrangement = parse(data)
    row = {
        "source": arrangement.source,
        "data": arrangement.as_dict(),
        "loaded_by": actor,
        "loaded_at": clock.now(),
    }
    table = calendar_arrangements
    replaced = conn.execute(
        sa.update(table).where(table.c.year == arrangement.year).values(**row)
    ).rowcount
    if not replaced:
        conn.execute(sa.insert(table).values(year=arrangement.year, **row))
    audit.record(
        conn,
        clock,
        tenant_id=None,
        actor=actor,
        action="calendar.load",
        target=str(arrangement.year),
        detail={"source": arrangement.source, "replaced": bool(replaced)},
    )
    return arrangement


def marketing_calendar(conn: Connection) -> MarketingCalendar:
    """The package's years plus every loaded arrangement (a loaded year wins)."""
    rows = conn.execute(sa.select(calendar_arrangements.c.year, calendar_arrangements.c.data))
    loaded = {}
    for year, data in rows:
        loaded[int(year)] = _from_stored(data)
    return MarketingCalendar(loaded)


def _from_stored(data: dict[str, Any]) -> Arrangement:
    holidays = [
        {
            "name": h["name"]["en"],
            "start": h["start"],
            "end": h["end"],
            "workdays": h["workdays"],
        }
        for h in data["holidays"]
    ]
    return parse({"year": data["year"], "source": data["source"], "holidays": holidays})
