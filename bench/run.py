"""Run every workload in bench/ (each module with a ``run() -> dict``) and write JSON results.

Each workload measures its own anchor in the same run, so the ratio it reports is meaningful on
whatever machine runs it. Results go to stdout and to ``bench/results/<name>.json``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import platform
import sys
from pathlib import Path

import bench

RESULTS = Path(__file__).parent / "results"


def main(names: list[str]) -> int:
    RESULTS.mkdir(exist_ok=True)
    found = [m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("wl_")]
    for name in sorted(found):
        if names and name.removeprefix("wl_") not in names:
            continue
        module = importlib.import_module(f"bench.{name}")
        result = {
            "workload": name.removeprefix("wl_"),
            "python": platform.python_version(),
            "machine": platform.machine(),
            **module.run(),
        }
        text = json.dumps(result, ensure_ascii=False, indent=2)
        (RESULTS / f"{result['workload']}.json").write_text(text + "\n", encoding="utf-8")
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
