"""The benchmark harness (``python -m benchmarks``) runs end to end on tiny sizes.

It measures nothing here: sizes are tiny and no timing is asserted. It keeps
the harness from rotting: probes and consumers of both systems start, their
figures come back, and the table and the JSON file of raw figures are written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("huey", reason="the benchmarks need the bench extra: pip install -e '.[bench]'")
pytest.importorskip("psutil", reason="the benchmarks need the bench extra")


def run_benchmarks(*args: str, timeout: float = 100.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_quick_run_prints_the_table_and_writes_the_raw_figures(tmp_path: Path) -> None:
    # Given a folder for the results
    results = tmp_path / "results"

    # When the harness runs a few scenarios at --quick sizes
    run = run_benchmarks("--quick", "--only", "drain", "latency",
                         "--results-dir", str(results))

    # Then it succeeds and prints one table with both systems and the targets
    assert run.returncode == 0, run.stderr
    assert "| scenario | minique | Huey | ratio | target | holds? |" in run.stdout
    for label in ("drain, 1 worker (durable)",
                  "drain, 8 workers (fast)",
                  "consumer peak RSS, drain 8 workers (durable)",
                  "latency p99, idle consumer, Huey -d 0.001 -m 0.01",
                  "idle consumer CPU, Huey default polling"):
        assert f"| {label} |" in run.stdout
    # ... it reports progress on stderr as it goes
    assert "drain durable minique -w 1" in run.stderr
    # ... and writes one JSON file of raw figures, for both systems, with no errors
    (written,) = results.glob("*.json")
    report = json.loads(written.read_text())
    assert report["errors"] == []
    assert report["quick"] is True
    assert {"nproc", "machine", "python", "sqlite"} <= set(report["machine"])
    drains = report["raw"]["drain"]
    assert {r["system"] for r in drains} == {"minique", "huey"}
    rows = {row["key"]: row for row in report["rows"]}
    assert rows["drain.w1.fast"]["minique"] > 0 and rows["drain.w1.fast"]["huey"] > 0


def test_unknown_scenario_is_refused_with_usage() -> None:
    # When a scenario that does not exist is asked for
    run = run_benchmarks("--only", "nonsense", timeout=30)

    # Then the harness exits 2 and names the scenarios it knows
    assert run.returncode == 2
    assert "enqueue" in run.stderr and "sustained" in run.stderr
