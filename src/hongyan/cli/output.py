"""How commands report: rich text for people, one JSON object with ``--json``."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console

from hongyan.errors import HongyanError

out = Console()
err = Console(stderr=True)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, bytes):
        return None
    return str(value)


def emit(data: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, default=_default) + "\n")
    else:
        out.print(text if text is not None else data)


def fail(exc: HongyanError, as_json: bool) -> NoReturn:
    if as_json:
        sys.stdout.write(json.dumps({"error": exc.body()}, ensure_ascii=False) + "\n")
    else:
        err.print(f"[red]✗ {exc.message_zh}[/red]\n  {exc.message_en} [dim]({exc.code})[/dim]")
    raise typer.Exit(code=1)


def note(message: str) -> None:
    err.print(f"[yellow]•[/yellow] {message}")
