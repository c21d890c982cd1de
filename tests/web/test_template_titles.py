"""A page's title block is the text of the browser tab: words and expressions, never markup (a
merge once left a whole table inside one)."""

from __future__ import annotations

import re
from pathlib import Path

import hongyan.web

TEMPLATES = Path(hongyan.web.__file__).parent / "templates"
TITLE = re.compile(r"{%-?\s*block title\s*-?%}(.*?){%-?\s*endblock", re.DOTALL)


def test_every_title_block_is_plain_text() -> None:
    checked = 0
    for path in sorted(TEMPLATES.rglob("*.html")):
        for body in TITLE.findall(path.read_text(encoding="utf-8")):
            checked += 1
            assert "<" not in body and "\n" not in body, f"{path.name}: title block holds {body!r}"
    assert checked > 10  # the pattern finds the pages' titles
