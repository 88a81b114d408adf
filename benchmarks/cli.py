"""``python -m benchmarks [--quick] [--only SCENARIO ...] [--repeats N]``.

``python -m benchmarks --postgres [--dsn URL] [--quick] [--only SCENARIO ...]`` runs
minique's PostgreSQL store beside Procrastinate 3 instead (``benchmarks/postgres.py``),
on a throwaway cluster of its own or on the database of ``--dsn``.

``python -m benchmarks --only chaos [--duration SECONDS] [--database PATH_OR_URL]`` runs
the chaos soak instead (``benchmarks/chaos.py``): it measures no speed, it checks
what minique promises when processes are killed.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import chaos, postgres
from .procs import ROOT
from .report import machine, stderr, summary, table, write_json
from .scenarios import FULL, QUICK, SCENARIOS, Bench, run_scenarios
from .targets import build_rows, row_specs

CHAOS_OPTIONS = ("duration", "database", "producers", "consumers", "workers", "worker_type",
                 "seed", "drain_timeout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="minique against Huey's SqliteHuey, side by side in one run.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and 1 repeat: checks that the harness works, "
                             "measures nothing")
    parser.add_argument("--only", nargs="+", choices=(*SCENARIOS, "chaos"), metavar="SCENARIO",
                        help=f"run only these scenarios ({', '.join(SCENARIOS)}); or "
                             "'chaos' alone: the chaos soak")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repeats of each measurement; the table shows medians "
                             "(default 3, 1 with --quick)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results",
                        help="where the JSON file of raw figures goes "
                             "(default benchmarks/results)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder of databases and logs")
    pg = parser.add_argument_group("the PostgreSQL store beside Procrastinate (--postgres)")
    pg.add_argument("--postgres", action="store_true",
                    help="minique's PostgreSQL store against Procrastinate 3 on the same "
                         f"server; scenarios {', '.join(postgres.SCENARIOS)}")
    pg.add_argument("--dsn", default=None, metavar="URL",
                    help="the PostgreSQL database to run on (each measurement makes and drops "
                         "a schema of its own in it); default: a throwaway cluster started "
                         "for the run")
    soak = parser.add_argument_group("the chaos soak (--only chaos)")
    soak.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                      help="how long processes are killed (default 180)")
    soak.add_argument("--database", default=None, metavar="PATH_OR_URL",
                      help="the database, as Minique() takes it (default: a new SQLite file "
                           "in the run's folder)")
    soak.add_argument("--producers", type=int, default=None, help="producer processes (3)")
    soak.add_argument("--consumers", type=int, default=None, help="consumer processes (2)")
    soak.add_argument("--workers", type=int, default=None,
                      help="workers per consumer (4)")
    soak.add_argument("-k", "--worker-type", choices=("thread", "process"), default=None,
                      help="the consumers' worker type, as minique consume -k takes it "
                           "(thread)")
    soak.add_argument("--seed", type=int, default=None,
                      help="seed of the kills and the calls (default: random, printed)")
    soak.add_argument("--drain-timeout", type=float, default=None, metavar="SECONDS",
                      help="how long the final drain may take before what is left counts "
                           "as stuck (default 120)")
    return parser


def chaos_config(args: argparse.Namespace) -> chaos.ChaosConfig:
    """The soak's settings from the command line: the defaults, but for those given."""
    given = {name: getattr(args, name) for name in CHAOS_OPTIONS
             if getattr(args, name) is not None}
    return chaos.ChaosConfig(**given)


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


def postgres_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--postgres``: minique's PostgreSQL store beside Procrastinate (benchmarks/postgres.py)."""
    if args.only and not set(args.only) <= set(postgres.SCENARIOS):
        parser.error(f"--postgres runs the scenarios {', '.join(postgres.SCENARIOS)}; "
                     f"not {', '.join(s for s in args.only if s not in postgres.SCENARIOS)}")
    if any(getattr(args, name) is not None for name in CHAOS_OPTIONS):
        parser.error("the chaos soak's options do not apply to --postgres")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    compile_sources()
    return postgres.main(args.quick, args.only, args.repeats, args.dsn, args.results_dir,
                         args.keep)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dsn is not None and not args.postgres:
        parser.error("--dsn is the database of the PostgreSQL run: add --postgres")
    if args.postgres:
        return postgres_run(parser, args)
    if args.only and "chaos" in args.only:
        if len(args.only) > 1 or args.quick or args.repeats is not None:
            parser.error("--only chaos runs the chaos soak alone, without --quick or --repeats")
        try:
            config = chaos_config(args)
        except ValueError as exc:
            parser.error(str(exc))
        compile_sources()
        return chaos.main(config, args.results_dir, args.keep)
    if any(getattr(args, name) is not None for name in CHAOS_OPTIONS):
        parser.error("--duration, --database, --producers, --consumers, --workers, "
                     "--worker-type, --seed and --drain-timeout are options of the chaos "
                     "soak: add --only chaos")
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
    errors = run_scenarios(bench, chosen)
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
