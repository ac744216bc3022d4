"""Write benchmark results: JSON under ``benchmarks/results/`` and a row in the README's table.

The README's performance table sits between ``<!-- perf:start -->`` and
``<!-- perf:end -->``; each row is keyed by its benchmark id and replaced when
the benchmark runs again, so the table always shows the latest measurement.
"""

from __future__ import annotations

import json
import os
import platform
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
START, END = "<!-- perf:start -->", "<!-- perf:end -->"
HEADER = ("| id | what | edgefleet | reference | ratio | target | met |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine()}


def write_result(bench_id: str, result: dict, *, results_dir: Path = RESULTS) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{bench_id}.json"
    document = {"id": bench_id, "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": machine(), **result}
    _atomic_write(path, json.dumps(document, indent=2) + "\n")
    return path


def update_readme_rows(rows: dict[str, str], *, readme: Path = README) -> None:
    """Replace (or add) the table rows whose first cell is each key of ``rows``."""
    text = readme.read_text()
    if START not in text:
        raise SystemExit(f"{readme} has no {START} … {END} section for the performance table")
    head, rest = text.split(START, 1)
    body, tail = rest.split(END, 1)
    existing = {}
    for line in body.strip().splitlines():
        match = re.match(r"^\|\s*([A-Za-z0-9.-]+)\s*\|", line)
        if match and not line.startswith("| id ") and not line.startswith("| ---"):
            existing[match.group(1)] = line
    existing.update(rows)
    ordered = [existing[key] for key in sorted(existing, key=_row_order)]
    _atomic_write(readme, f"{head}{START}\n{HEADER}\n" + "\n".join(ordered) + f"\n{END}{tail}")


def _row_order(key: str) -> tuple[int, str]:
    match = re.match(r"B(\d+)", key)
    return (int(match.group(1)) if match else 99, key)


def _atomic_write(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)
