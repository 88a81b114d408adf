"""``minique consume`` and ``minique status``; the commands that operate a queue: cli_operations."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import os
import sys
import sysconfig
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from . import cli_operations as operations
from .app import Minique
from .errors import ConsumerFailed, MiniqueError
from .operations import sum_counts
from .records import ConsumerStatus
from .store import STATES

log = logging.getLogger("minique")


class TargetError(Exception):
    """The TARGET argument does not lead to a Minique instance; the message says why."""


def load_target(spec: str) -> Minique:
    """Import ``module`` or ``module:attr`` from the current directory and return its Minique.

    Raises ``TargetError`` with a one-line reason if it cannot.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise TargetError(f"{spec!r} names no module; give one such as app.tasks or app.tasks:mq")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and not _raised_in_user_code(exc):
            raise TargetError(
                f"cannot import {module_name!r}: no module named {exc.name!r} (run minique from "
                "the folder that holds your package, or check the spelling)") from None
        raise TargetError(
            f"importing {module_name!r} failed{_where(exc)}: {_one_line(exc)}") from exc
    except SystemExit as exc:
        raise TargetError(
            f"importing {module_name!r} called exit({exc.code}){_where(exc)}") from exc
    except BaseException as exc:
        raise TargetError(
            f"importing {module_name!r} failed{_where(exc)}: {_one_line(exc)}") from exc
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, Minique):
            what = "nothing" if found is None else type(found).__name__
            raise TargetError(f"{module_name}.{attr} is {what}, not a Minique instance")
        return found
    instances = {name: value for name, value in vars(module).items()
                 if isinstance(value, Minique)}
    unique = {id(v): v for v in instances.values()}
    if not unique:
        raise TargetError(
            f"{module_name!r} holds no Minique instance; create one there "
            f"(mq = Minique('app.db')) or name one: {module_name}:mq")
    if len(unique) > 1:
        names = ", ".join(sorted(instances))
        raise TargetError(f"{module_name!r} holds several Minique instances ({names}); "
                          f"name one: {module_name}:{sorted(instances)[0]}")
    return next(iter(unique.values()))


def _one_line(exc: BaseException) -> str:
    # A SyntaxError's own text repeats the file and line that _where gives.
    message = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
    text = " ".join(message.split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# Code that is not the application's: a failure is reported at the last line
# of the application's own code that led to it, not inside os.environ or importlib.
_NOT_THE_APPLICATION = tuple(
    {sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib")}
    | {str(Path(__file__).resolve().parent)})


def _application_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return [frame for frame in traceback.extract_tb(exc.__traceback__)
            if not frame.filename.startswith("<")  # importlib's frozen frames
            and not os.path.abspath(frame.filename).startswith(_NOT_THE_APPLICATION)]


def _raised_in_user_code(exc: BaseException) -> bool:
    return bool(_application_frames(exc))


def _print_import_traceback(exc: BaseException) -> None:
    """Print ``exc``'s traceback to stderr from the first frame past minique's and importlib's."""
    tb = exc.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename.startswith("<")
                              or tb.tb_frame.f_code.co_filename in (__file__, importlib.__file__)):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb, file=sys.stderr)


def _where(exc: BaseException) -> str:
    """`` at FILE, line N`` of the application's line that raised ``exc`` ("" if none)."""
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        filename, line = exc.filename, exc.lineno
    else:
        frames = _application_frames(exc)
        if not frames:
            return ""
        filename, line = frames[-1].filename, frames[-1].lineno or 0
    shown = os.path.relpath(filename) if filename.startswith(os.getcwd() + os.sep) else filename
    return f" at {shown}, line {line}"


def split_queues(values: Sequence[str] | None) -> list[str] | None:
    """The queues of repeated ``-q`` options, each of which may hold comma-separated names."""
    if not values:
        return None
    return [q for value in values for q in value.split(",") if q]


def add_consume_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``minique consume`` (shared with the framework integrations)."""
    parser.add_argument("-w", "--workers", type=int, default=4,
                        help="worker threads (default 4)")
    parser.add_argument("-q", "--queue", action="append", dest="queues", metavar="QUEUE",
                        help="serve only this queue (repeatable; default: all queues)")
    parser.add_argument("-k", "--worker-type", choices=("thread", "process"), default="thread",
                        help="run each attempt in a thread (default) or in a worker process "
                             "that is killed at the task's timeout")
    parser.add_argument("--no-periodic", action="store_true",
                        help="run no scheduler for periodic tasks")
    parser.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGTERM/SIGINT, how long running tasks may finish (default 30)")
    parser.add_argument("--max-tasks", type=int, default=None, metavar="N",
                        help="after N tasks, stop taking work and exit 0 for a supervisor to "
                             "start a fresh consumer (with -k process: replace the worker "
                             "process after N tasks)")
    parser.add_argument("--max-memory", type=float, default=None, metavar="MB",
                        help="past this resident memory, stop taking work and exit 0 (with "
                             "-k process: replace the worker process)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")


class _LineFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)-7s %(message)s``, with the date formatted once a second.

    A busy consumer logs a line per task; ``time.strftime`` for each one is a
    measurable share of that line's cost.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        # The same text as the format string gives, without its machinery.
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        return f"{record.asctime} {record.levelname:<7} {record.message}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"


def configure_logging(verbose: bool) -> None:
    """Log minique's lines to stderr, unless the application configured logging itself."""
    level = logging.DEBUG if verbose else logging.INFO
    if not logging.getLogger().handlers:
        # Only a formatter of our own: the logging module's global switches
        # (logProcesses, _srcfile...) would also strip the process, thread and
        # caller from the records of the application's own handlers.
        handler = logging.StreamHandler()
        handler.setFormatter(_LineFormatter())
        logging.basicConfig(handlers=[handler], level=level)
    log.setLevel(level)


class ConsumeError(Exception):
    """A consumer cannot run as asked (bad options, an unusable database); exit status 2."""

    exit_status = 2


def run_consumer(mq: Minique, args: argparse.Namespace, *,
                 no_process_workers: str | None = None) -> None:
    """Run a consumer of ``mq`` until SIGTERM/SIGINT: ``minique consume``, Flask's and Django's.

    ``args`` holds the options of ``add_consume_arguments``. Sets up logging
    (``configure_logging``) before the consumer logs its banner.
    ``no_process_workers`` says why ``-k process`` cannot work where this
    runs (a framework whose worker processes could not rebuild the queue),
    following "-k process": "is not supported with ...". Raises
    ``ConsumeError`` for options it cannot honour or a database it cannot
    use, before any task runs.
    """
    configure_logging(args.verbose)
    if args.workers < 1:
        raise ConsumeError("--workers must be at least 1")
    if args.worker_type == "process" and no_process_workers:
        raise ConsumeError(f"-k process {no_process_workers}")
    try:
        consumer = mq.consumer(workers=args.workers, queues=split_queues(args.queues),
                               periodic=not args.no_periodic, grace=args.grace,
                               worker_type=args.worker_type,
                               max_tasks=getattr(args, "max_tasks", None),
                               max_memory=getattr(args, "max_memory", None))
    except ValueError as exc:  # an option the consumer refuses
        raise ConsumeError(str(exc)) from exc
    try:
        consumer.run()
    except ConsumerFailed as exc:  # it ran, and then could not go on: restart it
        error = ConsumeError(str(exc))
        error.exit_status = 1
        raise error from exc
    except MiniqueError as exc:  # the database cannot be opened or written
        raise ConsumeError(str(exc)) from exc


def consume(mq: Minique, args: argparse.Namespace, *,
            no_process_workers: str | None = None) -> int:
    """``run_consumer``, with its refusal printed as one line on stderr; the exit status."""
    try:
        run_consumer(mq, args, no_process_workers=no_process_workers)
    except ConsumeError as exc:
        print(f"minique: {exc}", file=sys.stderr)
        return exc.exit_status
    return 0


def consume_parser(prog: str) -> argparse.ArgumentParser:
    """A parser of the options of ``minique consume`` alone, for commands that take no TARGET."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Run a consumer of the queue's tasks until SIGTERM or Ctrl-C.")
    add_consume_arguments(parser)
    return parser


def status(mq: Minique, as_json: bool, out: TextIO | None = None) -> int:
    """Print counts by queue and status, periodic tasks and consumers to ``out`` (stdout).

    Returns the process's exit status. Counts come from one read, so the
    total row adds up the rows above it.
    """
    out = out or sys.stdout

    def say(line: str) -> None:
        out.write(line + "\n")  # one write per line: Django's OutputWrapper adds no second

    try:
        queues = mq.counts_by_queue()
        consumers = mq.consumers(live_only=False)
        next_fires = mq.next_fire_times()
    except MiniqueError as exc:
        print(f"minique: {exc}", file=sys.stderr)
        return 2
    totals = sum_counts(queues.values())
    now = dt.datetime.now(dt.UTC)
    live = [c for c in consumers if c.state == "live"]
    stale = [c for c in consumers if c.state != "live"]
    periodic = []
    for name, fire in next_fires.items():
        schedule = mq.tasks[name].periodic
        assert schedule is not None
        periodic.append({"name": name, "crontab": schedule.expr,
                         "next_fire": None if fire is None else fire.isoformat("T", "seconds")})
    if as_json:
        say(json.dumps({
            "database": mq.store.location,
            "queues": queues,
            "totals": totals,
            "consumers": [_consumer_json(c, now) for c in live],
            "stale_consumers": [_consumer_json(c, now) for c in stale],
            "periodic": periodic,
        }, indent=2, sort_keys=True))
        return 0
    say(f"database: {mq.store.location}")
    width = max([len("queue"), *map(len, queues)])
    say("  ".join([f"{'queue':<{width}}", *(f"{s:>9}" for s in STATES)]))
    for name in sorted(queues):
        say("  ".join([f"{name:<{width}}", *(f"{queues[name][s]:>9}" for s in STATES)]))
    if len(queues) != 1:
        say("  ".join([f"{'(all)':<{width}}", *(f"{totals[s]:>9}" for s in STATES)]))
    if periodic:
        say(f"periodic tasks: {len(periodic)}")
        for p in periodic:
            when = p["next_fire"] or "when a consumer starts"
            say(f"  {p['name']}  {p['crontab']}  next: {when}")
    say(f"consumers: {len(live)}")
    for c in live:
        say(f"{_consumer_line(c)}  seen {_age(c.seen_ago(now))} ago")
    if stale:
        say(f"not live: {len(stale)}")
    for c in stale:
        if c.state == "dead":
            say(f"{_consumer_line(c)}  dead: its process is gone (seen {_age(c.seen_ago(now))} "
                "ago); the next consumer on this host takes back its tasks")
        else:
            say(f"{_consumer_line(c)}  not seen for {_age(c.seen_ago(now))}")
    return 0


def _consumer_line(c: ConsumerStatus) -> str:
    queues = ",".join(c.queues) if c.queues else "*"
    return f"  {c.id[:8]}  pid {c.pid} on {c.host}  queues {queues}  {c.workers} workers"


def _consumer_json(c: ConsumerStatus, now: dt.datetime) -> dict[str, Any]:
    return {"id": c.id, "host": c.host, "pid": c.pid,
            "queues": None if c.queues is None else list(c.queues), "workers": c.workers,
            "started_at": c.started_at.isoformat(), "last_seen": c.last_seen.isoformat(),
            "seen_ago": round(c.seen_ago(now), 1), "state": c.state}


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minique", description="minique: a durable job queue in one SQLite file.")
    parser.add_argument("--version", action="version", version=f"minique {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("consume", help="run a consumer: worker threads and a scheduler")
    run.add_argument("target", metavar="TARGET",
                     help="module holding your Minique, e.g. app.tasks or app.tasks:mq")
    add_consume_arguments(run)
    show = commands.add_parser(
        "status", help="show counts of tasks by queue and status, periodic tasks, consumers")
    show.add_argument("target", metavar="TARGET")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("-v", "--verbose", action="store_true",
                      help="print the traceback of a target that fails to import")
    operations.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``minique`` command."""
    args = build_parser().parse_args(argv)
    try:
        # Commands that read or operate the queue also take the database itself.
        mq = load_target(args.target) if args.command == "consume" \
            else operations.open_target(args.target, load_target)
    except (FileNotFoundError, MiniqueError) as exc:
        # MiniqueError: a server's database that cannot be opened (its store connects at once)
        print(f"minique: {exc}", file=sys.stderr)
        return 2
    except TargetError as exc:
        cause = exc.__cause__
        if cause is not None and args.verbose:
            _print_import_traceback(cause)
        hint = " (-v prints the traceback)" if cause is not None and not args.verbose else ""
        print(f"minique: {exc}{hint}", file=sys.stderr)
        return 2
    if args.command == "consume":
        # Logging is set up after the import, so that the application's own setup wins.
        return consume(mq, args)
    if args.command in operations.COMMANDS:
        return operations.run(mq, args)
    return status(mq, args.json)


if __name__ == "__main__":
    sys.exit(main())
