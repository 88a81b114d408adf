"""``python -m benchmarks --postgres`` runs end to end on tiny sizes, on the tests' server.

It measures nothing here: sizes are tiny and no timing is asserted. It keeps
the PostgreSQL harness from rotting: minique's and Procrastinate's producers
and worker commands start on the same server, their figures come back, and
the table and the JSON file of raw figures are written. Under CI=true it never
skips: the server comes from the ``postgres_server`` fixture, and the bench
extra (Procrastinate) is installed by .ci/run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PostgresServer

ROOT = Path(__file__).resolve().parent.parent

if os.environ.get("CI", "").lower() == "true":
    import procrastinate  # noqa: F401 - CI installs the bench extra: missing is a failure
else:
    pytest.importorskip("procrastinate",
                        reason="the PostgreSQL benchmarks need the bench extra: "
                               "pip install -e '.[bench]'")


def run_benchmarks(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)


def bench_schemas(dsn: str) -> set[str]:
    """The schemas the harness makes (one per measurement, dropped after it) in ``dsn``."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\_%'"
                            ).fetchall()
    return {row[0] for row in rows}


def test_quick_postgres_run_prints_both_systems_and_writes_the_raw_figures(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    # Given the tests' PostgreSQL server and a folder for the results
    results = tmp_path / "results"
    schemas_before = bench_schemas(postgres_server.dsn)

    # When the harness runs every PostgreSQL scenario at --quick sizes on that server
    run = run_benchmarks("--postgres", "--quick", "--dsn", postgres_server.dsn,
                         "--results-dir", str(results))

    # Then it succeeds and prints one table of minique beside Procrastinate, with the targets
    assert run.returncode == 0, run.stderr
    assert "| scenario | minique | Procrastinate | ratio | target | holds? |" in run.stdout
    for label in ("enqueue, 1 producer, one at a time",
                  "enqueue in one batch (map vs batch_defer)",
                  "drain 200, 4 workers, from the consumer's start",
                  "latency enqueue→start p99, idle consumer",
                  "in-flight task after SIGKILL of the consumer"):
        assert f"| {label} |" in run.stdout
    # ... it reports progress on stderr as it goes
    assert "drain procrastinate -w 4" in run.stderr
    # ... and the password of the DSN is not printed anywhere
    assert "minique-test-secret" not in run.stdout + run.stderr
    # ... and writes one JSON file of raw figures, for both systems, with no errors
    (written,) = results.glob("*-postgres.json")
    report = json.loads(written.read_text())
    assert report["errors"] == []
    assert report["quick"] is True and report["store"] == "postgres"
    assert {"server_version", "fsync", "synchronous_commit"} <= set(report["machine"]["postgres"])
    for scenario in ("enqueue", "drain", "latency", "kill"):
        assert {r["system"] for r in report["raw"][scenario]} == {"minique", "procrastinate"}
    rows = {row["key"]: row for row in report["rows"]}
    for key in ("enqueue.serial", "enqueue.batch", "drain"):
        assert rows[key]["minique"] > 0 and rows[key]["procrastinate"] > 0
    # ... and leaves no schema of its own behind in the database it was given
    assert bench_schemas(postgres_server.dsn) == schemas_before


def test_postgres_options_are_refused_where_they_do_not_apply() -> None:
    # When --dsn is given without --postgres, or --postgres with a scenario it does not run
    no_postgres = run_benchmarks("--dsn", "postgresql://localhost/x", timeout=30)
    wrong_scenario = run_benchmarks("--postgres", "--only", "growth", timeout=30)

    # Then the harness exits 2 and says why
    assert no_postgres.returncode == 2
    assert "--dsn is the database of the PostgreSQL run" in no_postgres.stderr
    assert wrong_scenario.returncode == 2
    assert "not growth" in wrong_scenario.stderr
