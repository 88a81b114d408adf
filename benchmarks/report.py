"""The table (Markdown, so it reads in a terminal and pastes into the docs) and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import sys
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .targets import Row


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    def package(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    conn = sqlite3.connect(":memory:")
    (sync,) = conn.execute("PRAGMA synchronous").fetchone()
    conn.close()
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlite_default_synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync),
        "minique": package("minique"),
        "huey": package("huey"),
        "peewee": package("peewee"),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _figure(value: float | None, unit: str, row: Row) -> str:
    if value is None:
        return "—"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.2f} ms"
    if unit == "%":
        return f"{value:.2f} %"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "recovered":
        tries = next(iter(row.repeats.values()), [])
        return f"{round(value * len(tries))}/{len(tries)}"
    return f"{value:,.0f}"


def table(rows: list[Row], peer: str = "Huey") -> str:
    """scenario | minique | peer | ratio (minique ÷ peer) | target | holds?"""
    lines = [f"| scenario | minique | {peer} | ratio | target | holds? |",
             "|---|--:|--:|--:|---|---|"]
    for row in rows:
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "—"
        holds = {True: "yes", False: "**NO**", None: "—"}[row.holds]
        if row.holds is None and row.target != "—":
            holds = "n/a"
        lines.append(f"| {row.label} | {_figure(row.minique, row.unit, row)} | "
                     f"{_figure(row.peer, row.unit, row)} | {ratio} | {row.target} | {holds} |")
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any], rows: list[Row], peer: str = "huey") -> None:
    """The run's raw figures and its rows; each row names the peer's figure by the peer."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def named(row: Row) -> dict[str, Any]:
        fields = asdict(row)
        return {(peer if key == "peer" else key): value for key, value in fields.items()}

    payload = {**payload, "rows": [named(row) for row in rows]}
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")


def summary(rows: list[Row]) -> str:
    judged = [row for row in rows if row.holds is not None]
    missed = [row.label for row in judged if not row.holds]
    text = f"targets: {len(judged) - len(missed)} of {len(judged)} hold"
    if missed:
        text += "; missed: " + "; ".join(missed)
    return text


def stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
