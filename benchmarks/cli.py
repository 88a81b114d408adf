"""``python -m benchmarks [--quick] [--only SCENARIO ...] [--repeats N]``."""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import shutil
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from .procs import ROOT, BenchError
from .report import machine, stderr, summary, table, write_json
from .scenarios import FULL, QUICK, SCENARIOS, Bench
from .targets import build_rows, row_specs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="minique against Huey's SqliteHuey, side by side in one run.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and 1 repeat: checks that the harness works, "
                             "measures nothing")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, metavar="SCENARIO",
                        help=f"run only these scenarios ({', '.join(SCENARIOS)})")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repeats of each measurement; the table shows medians "
                             "(default 3, 1 with --quick)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results",
                        help="where the JSON file of raw figures goes "
                             "(default benchmarks/results)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder of databases and logs")
    return parser


def compile_sources() -> None:
    """Compile minique's and the harness's modules to bytecode, as installing a package does.

    pip compiled Huey's modules when it installed them; minique runs from this
    source tree. Where PYTHONDONTWRITEBYTECODE is set (as on some CI machines)
    no bytecode is ever cached, and every process the harness starts would
    compile minique anew (about 30 ms), a cost an installed minique never pays.
    Python reads bytecode files whatever that variable says.
    """
    for package in ("minique", "benchmarks"):
        compileall.compile_dir(ROOT / package, quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        stderr("benchmarks: --repeats must be at least 1")
        return 2
    chosen = [s for s in SCENARIOS if not args.only or s in args.only]
    compile_sources()
    started = dt.datetime.now().astimezone()
    folder = Path(tempfile.mkdtemp(prefix="minique-bench-"))
    bench = Bench(sizes, repeats, folder)
    about = machine()
    stderr(f"benchmarks: {', '.join(chosen)}; {repeats} repeat(s); "
           f"{'quick sizes; ' if args.quick else ''}databases in {folder}")
    stderr(f"  {about['nproc']} CPUs ({about['machine']}), Python {about['python']}, "
           f"SQLite {about['sqlite']}, Huey {about['huey']}, load {about['loadavg']}")
    errors: list[str] = []
    for name in chosen:
        t0 = time.monotonic()
        try:
            getattr(bench, name)()
        except BenchError as exc:
            errors.append(f"{name}: {exc}")
            stderr(f"benchmarks: scenario {name} failed: {exc}")
        except Exception:
            errors.append(f"{name}: {traceback.format_exc()}")
            stderr(f"benchmarks: scenario {name} failed:\n{traceback.format_exc()}")
        stderr(f"benchmarks: {name} took {time.monotonic() - t0:.0f} s")
    rows = build_rows(row_specs(sizes.growth), bench.figures)
    print(f"minique vs Huey {about['huey']} — {started:%Y-%m-%d %H:%M %Z}, "
          f"{about['nproc']} CPUs {about['machine']}, Python {about['python']}, "
          f"SQLite {about['sqlite']}; medians of {repeats} repeat(s), "
          f"{bench.short_repeats} for enqueue, producers and drain, "
          f"{max(repeats, sizes.growth_repeats)} for the backlog"
          f"{' (--quick: not a measurement)' if args.quick else ''}\n")
    print(table(rows))
    print(f"\n{summary(rows)}")
    out = args.results_dir / f"{started:%Y%m%dT%H%M%S}.json"
    about["loadavg_end"] = machine()["loadavg"]
    write_json(out, {
        "started_at": started.isoformat(), "finished_at": dt.datetime.now().astimezone()
        .isoformat(), "machine": about, "scenarios": chosen, "repeats": repeats,
        "quick": args.quick, "sizes": vars(sizes),
        "raw": bench.raw, "errors": errors,
    }, rows)
    stderr(f"benchmarks: raw figures in {out}")
    if args.keep or errors:
        stderr(f"benchmarks: databases and logs kept in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if errors else 0
