"""The commands that operate a queue: ``minique jobs``, ``show``, ``retry``, ``revoke``,
``purge``, ``pause``, ``resume``, ``consumers`` and ``move``.

TARGET is a module holding the application's ``Minique`` (as for ``minique
consume``) or the database itself: the path of its file, or a
``postgresql://`` URL, for an operator without the application's code at
hand. Exit status 0 when done, 1 when an id is unknown or a call cannot be
retried or revoked (the reason on stderr, and nothing changed), 2 for a bad
target or bad arguments.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .app import Minique
from .errors import MiniqueError, TaskError
from .moving import move_waiting
from .records import ConsumerStatus
from .store import STATES, is_url

if TYPE_CHECKING:
    from .job import Job, JobAttempt

#: The commands of this module, for ``minique.cli.main``.
COMMANDS = ("jobs", "show", "retry", "revoke", "restore", "purge", "pause", "resume",
            "consumers", "move")

_DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Failed(Exception):
    """A command that cannot do what it was asked (exit status 1); nothing was changed."""


class BadArguments(Exception):
    """Arguments that make no sense together or do not exist (exit status 2)."""


# -- TARGET --------------------------------------------------------------------------


def looks_like_database(spec: str) -> bool:
    """True if TARGET names a database rather than a module: a URL, a file, or a file's name."""
    return (is_url(spec) or os.path.isfile(spec) or spec.endswith(_DATABASE_SUFFIXES)
            or os.sep in spec)


def open_target(spec: str, load_module: Callable[[str], Minique]) -> Minique:
    """The ``Minique`` of TARGET: a database opened as it is, or ``load_module(spec)``.

    A database file is never created here: a path that does not exist is an
    error (raised as ``FileNotFoundError`` with the reason).
    """
    if not looks_like_database(spec):
        return load_module(spec)
    if not is_url(spec) and not os.path.isfile(spec):
        raise FileNotFoundError(
            f"no database file {spec!r} (from {os.getcwd()}); give the path of the queue's "
            "file, or a module holding its Minique such as app.tasks")
    # Read with the default (JSON) serializer: reading never runs code; a
    # pickled call shows as unreadable, through the application's module it reads.
    return Minique(spec)


# -- the parser -------------------------------------------------------------------------


def older_than(text: str) -> float:
    """``--older-than``: ``30s``, ``15m``, ``12h`` or ``7d`` as seconds."""
    match = _AGE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an age; give a number and a unit: 30s, 15m, 12h or 7d")
    return float(match[1]) * _UNITS[match[2]]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of calls >= 1")
    return value


def add_commands(commands: Any) -> None:
    """Add this module's commands to ``minique``'s subparsers."""
    target_help = ("module holding your Minique (app.tasks or app.tasks:mq), or the database "
                   "file itself (or a postgresql:// URL)")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
        parser.add_argument("target", metavar="TARGET", help=target_help)
        parser.add_argument("-v", "--verbose", action="store_true",
                            help="print the traceback of a target that fails to import")
        return parser

    def filters(parser: argparse.ArgumentParser, status: bool = True) -> None:
        if status:
            parser.add_argument("--status", action="append", metavar="S",
                                help=f"only calls in this status ({', '.join(STATES)}); "
                                     "repeatable, or comma-separated")
        parser.add_argument("--queue", action="append", metavar="Q",
                            help="only calls of this queue; repeatable, or comma-separated")
        parser.add_argument("--task", action="append", metavar="NAME",
                            help="only calls of this task; repeatable, or comma-separated")

    jobs = command("jobs", "list calls, newest first")
    filters(jobs)
    jobs.add_argument("--limit", type=_positive, default=20, metavar="N",
                      help="at most N calls (default 20)")
    jobs.add_argument("--json", action="store_true", help="print a JSON list of calls")

    show = command("show", "one call: its arguments, result or error, and every attempt")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print the call as JSON")

    retry = command("retry", "queue failed, expired or revoked calls again")
    retry.add_argument("ids", nargs="*", metavar="ID")
    retry.add_argument("--failed", action="store_true",
                       help="every failed call (or those of --queue, --task) instead of IDs")
    filters(retry, status=False)

    revoke = command("revoke", "stop calls that have not started")
    revoke.add_argument("ids", nargs="*", metavar="ID")
    revoke.add_argument("--task", metavar="NAME",
                        help="every call of this task that has not started, instead of IDs "
                             "(minique restore --task NAME undoes it)")

    restore = command("restore", "queue again the calls that revoke --task revoked")
    restore.add_argument("--task", metavar="NAME", required=True)

    purge = command("purge", "delete calls in a status, and their history")
    filters(purge)
    purge.add_argument("--older-than", type=older_than, metavar="AGE",
                       help="only calls that finished (or, unfinished, were enqueued) longer "
                            "ago than this: 30s, 15m, 12h, 7d")

    for name, what in (("pause", "stop consumers from starting calls of these queues"),
                       ("resume", "let consumers start calls of these queues again")):
        parser = command(name, what)
        parser.add_argument("queues", nargs="+", metavar="QUEUE")

    consumers = command("consumers", "the live consumers and the calls they run")
    consumers.add_argument("--all", action="store_true",
                           help="also those not live: silent (no heartbeat) or dead")
    consumers.add_argument("--json", action="store_true", help="print JSON")

    move = command("move", "move the waiting (queued and scheduled) calls to another store, "
                           "with their ids; stop the consumers of TARGET first")
    move.add_argument("destination", metavar="DESTINATION",
                      help="the store to move them to: a SQLite file (created if missing) "
                           "or a postgresql:// URL")
    move.add_argument("--queue", action="append", metavar="Q",
                      help="only calls of this queue; repeatable, or comma-separated")


def run(mq: Minique, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the command of ``args`` on ``mq``; the exit status."""
    out = out or sys.stdout
    try:
        return _COMMANDS[args.command](mq, args, out)
    except Failed as exc:
        print(f"minique: {exc}", file=sys.stderr)
        return 1
    except (BadArguments, ValueError) as exc:
        print(f"minique: {exc}", file=sys.stderr)
        return 2
    except MiniqueError as exc:  # the database cannot be opened or read
        print(f"minique: {exc}", file=sys.stderr)
        return 2


def _split(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


# -- jobs and show -------------------------------------------------------------------------


def _jobs(mq: Minique, args: argparse.Namespace, out: TextIO) -> int:
    found = mq.jobs(status=_split(args.status), queue=_split(args.queue),
                    task=_split(args.task), limit=args.limit)
    if args.json:
        out.write(_dumps([job_json(job) for job in found]) + "\n")
        return 0
    if not found:
        out.write("no calls\n")
        return 0
    now = dt.datetime.now(dt.UTC)
    rows = [["ID", "TASK", "QUEUE", "STATUS", "TRIES", "ENQUEUED", "ENDED", "ERROR"]]
    for job in found:
        rows.append([
            job.id, job.task, job.queue, job.status, f"{job.attempts}/{job.max_attempts}",
            ago(job.enqueued_at, now), ago(job.finished_at, now) if job.finished_at else "",
            _one_line(job.error),
        ])
    _table(rows, out)
    return 0


def _show(mq: Minique, args: argparse.Namespace, out: TextIO) -> int:
    job = _find(mq, args.id)
    if args.json:
        out.write(_dumps(job_json(job)) + "\n")
        return 0
    now = dt.datetime.now(dt.UTC)

    def line(label: str, value: object) -> None:
        out.write(f"{label:<10} {value}\n")

    line("call", f"{job.id}  {job.task}  (queue {job.queue}, priority {job.priority})")
    tries = f"attempt {job.attempts} of {job.max_attempts}" if job.attempts else \
        f"no attempt yet, {job.max_attempts} allowed"
    line("status", f"{job.status}, {tries}")
    if job.status == "running" and job.consumer:
        line("consumer", job.consumer)
    line("enqueued", when(job.enqueued_at, now))
    if job.eta != job.enqueued_at:
        line("eta", when(job.eta, now))
    if job.expires:
        line("expires", when(job.expires, now))
    if job.started_at:
        line("started", when(job.started_at, now))
    if job.finished_at:
        line("finished", when(job.finished_at, now))
    if job.unreadable:
        line("unreadable", job.unreadable)
    line("args", _shown(job.args))
    line("kwargs", _shown(job.kwargs))
    if job.status == "done":
        line("result", _shown(job.result))
    if job.error is not None:
        line("error", f"{job.error.error_type}: {job.error.message}")
        if job.error.traceback:
            out.write(job.error.traceback.rstrip("\n") + "\n")
    out.write(f"history   {len(job.history)} attempt(s) recorded\n")
    if job.history:
        rows = [["#", "OUTCOME", "STARTED", "TOOK", "CONSUMER", "ERROR"]]
        for attempt in job.history:
            rows.append([str(attempt.number), attempt.outcome,
                         ago(attempt.started_at, now) if attempt.started_at else "",
                         _took(attempt), (attempt.consumer or "")[:12],
                         _one_line(attempt.error)])
        _table(rows, out, indent="  ")
        final = job.error.traceback if job.error is not None else None
        for attempt in job.history:
            error = attempt.error
            if error is not None and error.traceback and error.traceback != final:
                out.write(f"  attempt {attempt.number}: {error.error_type}: {error.message}\n")
                out.write(_indented(error.traceback))
    return 0


def _find(mq: Minique, job_id: str) -> Job:
    try:
        return mq.job(job_id)
    except LookupError as exc:
        raise Failed(_reason(exc)) from None


# -- retry, revoke, restore, purge -------------------------------------------------------


def _retry(mq: Minique, args: argparse.Namespace, out: TextIO) -> int:
    if args.failed == bool(args.ids):
        raise BadArguments("give the ids of the calls to retry, or --failed (not both)")
    if args.failed:
        count = mq.retry_failed(queue=_split(args.queue), task=_split(args.task))
        out.write(f"queued again {count} failed call(s)\n")
        return 0
    if args.queue or args.task:
        raise BadArguments("--queue and --task go with --failed; give ids or --failed")
    # Every id is checked before any call changes: a bad one changes nothing.
    jobs = _all_found(mq, args.ids)
    refused = [f"call {job.id} ({job.task}) cannot be retried: it is {job.status}"
               for job in jobs if job.status not in ("failed", "expired", "revoked")]
    if refused:
        raise Failed("; ".join(refused) + "; nothing was retried (only failed, expired and "
                     "revoked calls can be)")
    for job in jobs:
        mq.retry(job.id)
        out.write(f"queued again: {job.id} ({job.task}, was {job.status})\n")
    return 0


def _revoke(mq: Minique, args: argparse.Namespace, out: TextIO) -> int:
    if bool(args.task) == bool(args.ids):
        raise BadArguments("give the ids of the calls to revoke, or --task NAME (not both)")
    if args.task:
        count = mq.revoke_all(args.task)
        out.write(f"revoked {count} call(s) of {args.task} that had not started "
                  f"(minique restore {args.target} --task {args.task} undoes it)\n")
        return 0
    jobs = _all_found(mq, args.ids)
    refused = [f"call {job.id} ({job.task}) cannot be revoked: it is {job.status}"
               for job in jobs if job.status not in ("queued", "scheduled")]
    if refused:
        raise Failed("; ".join(refused) + "; nothing was revoked (only calls that have not "
                     "started can be)")
    late = []
    for job in jobs:
        if mq.result(job.id).revoke():
            out.write(f"revoked: {job.id} ({job.task})\n")
        else:
            late.append(job.id)
    if late:
        raise Failed(f"started before it could be revoked: {', '.join(late)}")
    return 0


def _restore(mq: Minique, args: argparse.Namespace, out: TextIO) -> int:
    count = mq.restore_all(args.task)
    out.write(f"queued again {count} call(s) of {args.task} that revoke --task revoked\n")
    return 0


def _reason(exc: LookupError) -> str:
    # The message itself: str() of a KeyError would add quotes, and stripping
    # them cut the opening quote of an id quoted in the message ('abc' ...).
    return str(exc.args[0]) if exc.args else str(exc)


def _all_found(mq: Minique, ids: Sequence[str]) -> list[Job]:
    jobs, unknown = [], []
    for job_id in ids:
        try:
            jobs.append(mq.job(job_id))
        except LookupError as exc:
            unknown.append(_reason(exc))
    if unknown:
        raise Failed("; ".join(unknown) + "; nothing was changed")
    return jobs


def _purge(mq: Minique, args: argparse.Namespace, out: TextIO) -> int:
    statuses = _split(args.status)
    if not statuses:
        raise BadArguments("give --status: which calls to delete (e.g. --status done)")
    count = mq.purge(statuses, queue=_split(args.queue), task=_split(args.task),
                     older_than=args.older_than)
    out.write(f"deleted {count} call(s)\n")
    return 0


# -- pause, resume, consumers ---------------------------------------------------------------


def _pause(mq: Minique, args: argparse.Namespace, out: TextIO) -> int:
    for queue in args.queues:
        (mq.pause if args.command == "pause" else mq.resume)(queue)
    paused = sorted(mq.paused())
    out.write(f"paused queues: {', '.join(paused) if paused else '(none)'}\n")
    return 0


def _consumers(mq: Minique, args: argparse.Namespace, out: TextIO) -> int:
    found = mq.consumers(live_only=not args.all)
    if args.json:
        out.write(_dumps({"consumers": [consumer_json(c) for c in found]}) + "\n")
        return 0
    if not found:
        out.write("no live consumers\n" if not args.all else "no consumers\n")
        return 0
    now = dt.datetime.now(dt.UTC)
    rows = [["ID", "HOST", "PID", "QUEUES", "WORKERS", "STARTED", "SEEN", "STATE", "RUNNING"]]
    for c in found:
        running = ", ".join(c.running[:3]) + (f" (+{len(c.running) - 3})"
                                              if len(c.running) > 3 else "")
        rows.append([c.id[:12], c.host, str(c.pid), ",".join(c.queues) if c.queues else "*",
                     str(c.workers), ago(c.started_at, now), ago(c.last_seen, now), c.state,
                     running])
    _table(rows, out)
    return 0


def _move(mq: Minique, args: argparse.Namespace, out: TextIO) -> int:
    destination = Minique(args.destination)
    try:
        moved = move_waiting(mq.store, destination.store, queues=_split(args.queue))
    except ValueError as exc:
        raise BadArguments(str(exc)) from None
    out.write(f"moved {moved} waiting call(s) from {mq.store.location} to "
              f"{destination.store.location}\n")
    return 0


_COMMANDS: dict[str, Callable[[Minique, argparse.Namespace, TextIO], int]] = {
    "jobs": _jobs, "show": _show, "retry": _retry, "revoke": _revoke, "restore": _restore,
    "purge": _purge, "pause": _pause, "resume": _pause, "consumers": _consumers,
    "move": _move,
}


# -- text -------------------------------------------------------------------------------------


def ago(moment: dt.datetime | None, now: dt.datetime) -> str:
    """``"3 min ago"``, ``"in 2 h"``: how far ``moment`` is from ``now``, for people."""
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    text = _span(abs(seconds))
    if text == "now":
        return text
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def _span(seconds: float) -> str:
    if seconds < 1:
        return "now"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def when(moment: dt.datetime, now: dt.datetime) -> str:
    """The time in UTC to the second, and how long ago."""
    return f"{moment.strftime('%Y-%m-%d %H:%M:%S')} UTC ({ago(moment, now)})"


def _took(attempt: JobAttempt) -> str:
    if attempt.started_at is None:
        return ""
    seconds = (attempt.finished_at - attempt.started_at).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _one_line(error: TaskError | None) -> str:
    if error is None:
        return ""
    return " ".join(f"{error.error_type}: {error.message}".split())


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 2000 else text[:2000] + f"... ({len(text)} characters)"


def _indented(text: str) -> str:
    return "".join(f"    {line}\n" for line in text.rstrip("\n").splitlines())


def _table(rows: list[list[str]], out: TextIO, indent: str = "") -> None:
    """Aligned columns; the last one is cut to the terminal's width."""
    import shutil  # here: every command line builds this module's parser, few print a table

    width = shutil.get_terminal_size((120, 24)).columns
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        head = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
        room = max(width - len(indent) - len(head) - 2, 20)
        last = row[-1] if len(row[-1]) <= room else row[-1][:room - 1] + "…"
        out.write(f"{indent}{head}  {last}".rstrip() + "\n")


# -- JSON -----------------------------------------------------------------------------------


def job_json(job: Job) -> dict[str, Any]:
    """A ``Job`` as ``--json`` prints it: its fields, times as ISO 8601 strings."""
    return {
        "id": job.id, "task": job.task, "queue": job.queue, "priority": job.priority,
        "status": job.status, "args": list(job.args), "kwargs": job.kwargs, "key": job.key,
        "enqueued_at": _iso(job.enqueued_at), "eta": _iso(job.eta),
        "expires": _iso(job.expires), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "attempts": job.attempts,
        "max_attempts": job.max_attempts, "error": _error_json(job.error),
        "consumer": job.consumer, "progress": job.progress, "result": job.result,
        "history": [{"number": a.number, "started_at": _iso(a.started_at),
                     "finished_at": _iso(a.finished_at), "outcome": a.outcome,
                     "error": _error_json(a.error), "consumer": a.consumer}
                    for a in job.history],
        "unreadable": job.unreadable,
    }


def consumer_json(c: ConsumerStatus) -> dict[str, Any]:
    """A ``ConsumerStatus`` as ``minique consumers --json`` prints it."""
    return {"id": c.id, "host": c.host, "pid": c.pid,
            "queues": None if c.queues is None else list(c.queues), "workers": c.workers,
            "started_at": _iso(c.started_at), "last_seen": _iso(c.last_seen),
            "running": list(c.running), "state": c.state}


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _error_json(error: TaskError | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"type": error.error_type, "message": error.message, "traceback": error.traceback}


def _dumps(value: object) -> str:
    return json.dumps(_plain(value), indent=2, ensure_ascii=False)


def _plain(value: Any) -> Any:
    """``value`` with what JSON cannot hold as text: times in ISO 8601, bytes in base64."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    # Imported only here: a value this odd is rare, and minique consume need not import them.
    from decimal import Decimal
    from uuid import UUID

    if isinstance(value, Decimal | UUID | Path):
        return str(value)
    return repr(value)
