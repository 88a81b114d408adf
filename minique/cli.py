"""``minique consume`` and ``minique status``."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from . import __version__
from .app import Minique
from .errors import MiniqueError
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
        if exc.name and module_name.startswith(exc.name):
            raise TargetError(
                f"cannot import {module_name!r}: no module named {exc.name!r} (run minique from "
                "the folder that holds your package, or check the spelling)") from None
        raise TargetError(f"importing {module_name!r} failed: {_one_line(exc)}") from None
    except SystemExit as exc:
        raise TargetError(f"importing {module_name!r} called exit({exc.code})") from None
    except BaseException as exc:
        raise TargetError(f"importing {module_name!r} failed: {_one_line(exc)}") from None
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
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


def consume(mq: Minique, args: argparse.Namespace) -> int:
    """Run a consumer of ``mq`` until SIGTERM/SIGINT; the process's exit status."""
    if args.workers < 1:
        print("minique: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        consumer = mq.consumer(workers=args.workers, queues=split_queues(args.queues),
                               periodic=not args.no_periodic, grace=args.grace,
                               worker_type=args.worker_type)
        consumer.run()
    except MiniqueError as exc:
        print(f"minique: {exc}", file=sys.stderr)
        return 2
    return 0


def status(mq: Minique, as_json: bool, out: TextIO | None = None) -> int:
    """Print counts by queue and status to ``out`` (stdout); the process's exit status."""
    out = out or sys.stdout

    def say(line: str) -> None:
        out.write(line + "\n")  # one write per line: Django's OutputWrapper adds no second

    try:
        queues = mq.store.counts_by_queue()
        consumers = mq.store.consumers()
        slots = {name: (expr, fire) for name, expr, fire in mq.store.periodic_slots()}
        totals = mq.counts()
    except MiniqueError as exc:
        print(f"minique: {exc}", file=sys.stderr)
        return 2
    periodic = []
    for name, task in sorted(mq.periodic_tasks.items()):
        assert task.periodic is not None
        stored = slots.get(name)
        next_fire = None
        if stored is not None and stored[0] == task.periodic.expr:
            next_fire = mq.local_time(stored[1])
        periodic.append({"name": name, "crontab": task.periodic.expr, "next_fire": next_fire})
    if as_json:
        say(json.dumps({
            "database": str(mq.path.resolve()),
            "queues": queues,
            "totals": totals,
            "consumers": [{"id": c.id, "hostname": c.hostname, "pid": c.pid,
                           "queues": c.queues, "workers": c.workers,
                           "heartbeat_at": c.heartbeat_at} for c in consumers],
            "periodic": periodic,
        }, indent=2, sort_keys=True))
        return 0
    say(f"database: {mq.path.resolve()}")
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
    say(f"consumers: {len(consumers)}")
    for c in consumers:
        say(f"  {c.id[:8]}  pid {c.pid} on {c.hostname}  queues {c.queues}  "
              f"{c.workers} workers")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minique", description="minique: a durable job queue in one SQLite file.")
    parser.add_argument("--version", action="version", version=f"minique {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("consume", help="run a consumer: worker threads and a scheduler")
    run.add_argument("target", metavar="TARGET",
                     help="module holding your Minique, e.g. app.tasks or app.tasks:mq")
    add_consume_arguments(run)
    show = commands.add_parser("status", help="show counts of tasks by queue and status")
    show.add_argument("target", metavar="TARGET")
    show.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``minique`` command."""
    args = build_parser().parse_args(argv)
    try:
        mq = load_target(args.target)
    except TargetError as exc:
        print(f"minique: {exc}", file=sys.stderr)
        return 2
    if args.command == "consume":
        # After the import, so that logging the application set up there wins.
        configure_logging(args.verbose)
        return consume(mq, args)
    return status(mq, args.json)


if __name__ == "__main__":
    sys.exit(main())
