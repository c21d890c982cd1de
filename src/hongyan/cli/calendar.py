"""`hongyan calendar`: holidays, solar terms, lunar festivals and when to send around them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hongyan.cli.main import JsonOpt, open_runtime, reports_errors
from hongyan.cli.output import emit, out

calendar_app = typer.Typer(
    help="The marketing calendar: holidays, 调休, solar terms, festivals, suggested send dates",
    invoke_without_command=True,
)

_KINDS = {
    "holiday": "假期",
    "solar_term": "节气",
    "lunar_festival": "传统节日",
    "shopping": "购物节",
}


@calendar_app.callback()
@reports_errors
def calendar_year(
    ctx: typer.Context,
    year: Annotated[int | None, typer.Option(help="Gregorian year (default: this year)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A year's occasions and the suggested pre-sale, urgency and follow-up dates."""
    if ctx.invoked_subcommand is not None:
        return
    from hongyan.campaigns.calendar_data import marketing_calendar

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        calendar = marketing_calendar(conn)
    year = year or runtime.clock.now().year
    data = calendar.year(year)
    if as_json:
        emit(data, True)
        return
    if not data["holidays_known"]:
        out.print(f"[yellow]• 法定节假日：{data['holidays_unknown']['zh']}[/yellow]")
    else:
        out.print(f"[dim]节假日来源：{data['arrangement']['source']}[/dim]")
    table = Table(title=f"{year} 营销日历")
    for column in ("日期", "类型", "名称", "预热", "临近提醒", "返场"):
        table.add_column(column)
    suggested = {
        (s["occasion"]["date"], s["occasion"]["name"]["zh"]): s for s in data["suggestions"]
    }

    def md(iso: str) -> str:  # 2026-02-15 → 02-15 (the year is in the title unless it differs)
        return iso[5:] if iso.startswith(str(year)) else iso

    for o in data["occasions"]:
        s = suggested.get((o["date"], o["name"]["zh"]))
        table.add_row(
            md(o["date"]) + (f"–{md(o['end'])}" if "end" in o else ""),
            _KINDS[o["kind"]],
            o["name"]["zh"],
            f"{md(s['pre_sale']['from'])}–{md(s['pre_sale']['to'])}" if s else "",
            md(s["urgency"]) if s else "",
            md(s["follow_up"]) if s else "",
        )
    out.print(table)


@calendar_app.command("load")
@reports_errors
def calendar_load(
    file: Annotated[Path, typer.Argument(help="The year's arrangement as JSON (see docs)")],
    as_json: JsonOpt = False,
) -> None:
    """Load a year's official holiday arrangement (the State Council's notice)."""
    from hongyan.campaigns.calendar_data import load_arrangement, read_file

    runtime = open_runtime()
    data = read_file(file)
    with runtime.engine.begin() as conn:
        arrangement = load_arrangement(conn, runtime.clock, data, actor="cli")
    emit(
        arrangement.as_dict(),
        as_json,
        f"[green]✓[/green] {arrangement.year}: {len(arrangement.periods)} holiday periods "
        f"from {arrangement.source}",
    )
