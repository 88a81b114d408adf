"""The chaos soak's verdict: what the records of its processes and the database say.

Inputs, all kept outside the processes that died:

- the runs: each task's ``S`` and ``E`` lines (``benchmarks.chaos_app``);
- the calls their producers got back (``R`` lines);
- the kills: which process (by its label in the run) the soak SIGKILLed, when
  the signal was sent and when the process was reaped;
- the outcomes that consumers committed: a consumer logs ``NAME[ID] done in``
  at INFO only after the transaction that wrote the outcome has committed;
- each returned call's final row, read from the database after the drain.

When does a kill explain a second run? The earlier run's process must have
been SIGKILLed by the soak, the later run must have started after the signal
was sent (before that, the first process still held the call: two runs at
once are never explained), and, if the earlier run completed, its outcome
must not have been committed: no ``done`` line for that call in that
process's log. (A kill between the commit and that line, microseconds, would
pass a real re-run of a finished call as explained; nothing else would.)
"""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minique import Minique
from minique.store import JobRecord

UNFINISHED = ("queued", "scheduled", "running")
# A committed outcome, as the consumer logs it (minique's CLI format).
_DONE_LINE = re.compile(r"^\S+ \S+ INFO\s+chaos\.\w+\[(\d+)\] done in ")


@dataclass(slots=True)
class Run:
    """One run of a call, from its records."""

    call: str
    attempt: int
    token: str
    label: str
    pid: int
    start: float
    end: float | None = None
    how: str | None = None  # "ok", "raised", or None if it never reached its end


@dataclass(frozen=True, slots=True)
class Kill:
    """A process the soak ended without a clean stop: when the signal went, when it was reaped."""

    label: str
    role: str
    pid: int
    sent: float
    reaped: float
    signal: str = "SIGKILL"


@dataclass
class Records:
    """Everything the processes of a run wrote down, read back."""

    runs: dict[str, list[Run]] = field(default_factory=lambda: defaultdict(list))
    returned: dict[str, str] = field(default_factory=dict)  # call id -> token
    committed: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # by label
    commits: Counter[str] = field(default_factory=Counter)  # call id -> done lines, all logs
    torn_lines: int = 0


def read_records(events: Path, logs: Path) -> Records:
    """Read every ``*.events`` file of the run and every consumer's log."""
    records = Records()
    for path in sorted(events.glob("*.events")):
        text = path.read_text()
        whole = text.splitlines()[: text.count("\n")]  # a last line without its end is torn
        records.torn_lines += len(text.splitlines()) - len(whole)
        open_runs: dict[tuple[str, int, str], list[Run]] = defaultdict(list)
        for line in whole:
            kind, *f = line.split()
            if kind == "R":
                records.returned[f[0]] = f[1]
            elif kind == "S":
                run = Run(f[0], int(f[1]), f[2], f[3], int(f[4]), float(f[5]))
                records.runs[run.call].append(run)
                open_runs[run.call, run.attempt, run.token].append(run)
            elif kind == "E":
                pending = open_runs.get((f[0], int(f[1]), f[2]))
                if pending:
                    run = pending.pop(0)
                    run.end, run.how = float(f[5]), f[6]
    for path in sorted(logs.glob("*.log")):
        label = path.stem
        with path.open(errors="replace") as lines:
            for line in lines:
                match = _DONE_LINE.match(line)
                if match:
                    records.committed[label].add(match[1])
                    records.commits[match[1]] += 1
    for runs in records.runs.values():
        runs.sort(key=lambda r: r.start)
    return records


@dataclass
class Verdict:
    """The figures of the table, and examples of whatever went wrong."""

    figures: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    FAILING = ("calls lost", "calls stuck after the drain",
               "duplicate runs not explained by a kill",
               "re-runs not explained by a kill", "outcomes committed twice",
               "done without a completed run", "runs of another call's arguments",
               "runs that went on after their process was killed",
               "processes that died on their own")

    @property
    def failures(self) -> list[str]:
        """The figures that must be 0 and are not."""
        return [name for name in self.FAILING if self.figures.get(name, 0) > 0]

    def example(self, kind: str, call: str, runs: Iterable[Run], **detail: Any) -> None:
        if len(self.examples[kind]) < 20:
            self.examples[kind].append({
                "call": call, **detail,
                "runs": [{"label": r.label, "pid": r.pid, "attempt": r.attempt,
                          "start": r.start, "end": r.end, "how": r.how} for r in runs]})


class Judge:
    """Decides, call by call, whether each run and each outcome is as minique promises."""

    def __init__(self, records: Records, kills: list[Kill], exited: int) -> None:
        self.records = records
        self.killed_at = {k.label: k.sent for k in kills}
        self.reaped_at = {k.label: k.reaped for k in kills}
        self.verdict = Verdict()
        self.verdict.figures["processes that died on their own"] = exited

    def rerun_explained(self, before: Run, after: Run) -> bool:
        """Whether ``after`` may run although ``before`` ran, by minique's promises."""
        if before.how == "raised":
            # Its attempt failed (on purpose) and was retried; the retry starts after.
            return before.end is not None and after.start >= before.end
        sent = self.killed_at.get(before.label)
        if sent is None or after.start < sent:
            return False  # its process lived on while the call ran again
        # A completed run whose outcome was committed must never run again.
        return not (before.how == "ok" and before.call in self.records.committed[before.label])

    def judge_runs(self) -> None:
        figures = self.verdict.figures
        for name in ("runs started", "runs completed", "runs killed mid-run",
                     "duplicate runs (a call completed more than once)",
                     "duplicate runs not explained by a kill", "re-runs not explained by a kill",
                     "outcomes committed twice", "runs of another call's arguments",
                     "calls run that no producer recorded as returned",
                     "runs that went on after their process was killed"):
            figures[name] = 0
        returned = self.records.returned
        for call, runs in self.records.runs.items():
            figures["runs started"] += len(runs)
            completed = [r for r in runs if r.how == "ok"]
            figures["runs completed"] += len(completed)
            figures["runs killed mid-run"] += sum(
                r.how is None and r.label in self.killed_at for r in runs)
            # Written after the killed process was reaped: by a worker
            # process (-k process) that outlived its consumer.
            went_on = [r for r in runs if r.label in self.reaped_at
                       and max(r.start, r.end or 0.0) > self.reaped_at[r.label]]
            if went_on:
                figures["runs that went on after their process was killed"] += len(went_on)
                self.verdict.example("runs that went on after their process was killed", call,
                                     runs, **self._kills_of(runs))
            if call not in returned:
                figures["calls run that no producer recorded as returned"] += 1
            elif any(r.token != returned[call] for r in runs):
                figures["runs of another call's arguments"] += 1
                self.verdict.example("runs of another call's arguments", call, runs,
                                     token=returned[call])
            for before, after in itertools.pairwise(completed):
                figures["duplicate runs (a call completed more than once)"] += 1
                if not self.rerun_explained(before, after):
                    figures["duplicate runs not explained by a kill"] += 1
                    self.verdict.example("duplicate runs not explained by a kill", call,
                                         runs, **self._kills_of(runs))
            for before, after in itertools.pairwise(runs):
                if not self.rerun_explained(before, after):
                    figures["re-runs not explained by a kill"] += 1
                    self.verdict.example("re-runs not explained by a kill", call, runs,
                                         **self._kills_of(runs))
        for call, count in self.records.commits.items():
            if count > 1:
                figures["outcomes committed twice"] += 1
                self.verdict.example("outcomes committed twice", call,
                                     self.records.runs.get(call, []), commits=count)

    def _kills_of(self, runs: list[Run]) -> dict[str, Any]:
        return {"killed": {r.label: self.killed_at.get(r.label) for r in runs},
                "committed_by": [r.label for r in runs
                                 if r.call in self.records.committed[r.label]]}

    def judge_outcomes(self, mq: Minique) -> None:
        """Read each returned call's final row and count the lost and the stuck."""
        figures = self.verdict.figures
        for name in ("calls returned", "calls done", "calls lost",
                     "  failed WorkerLost, never started", "  failed WorkerLost, started",
                     "  failed WorkerLost, completed", "  failed otherwise, revoked, expired",
                     "  missing from the database", "calls stuck after the drain",
                     "failed WorkerLost after every attempt was killed mid-run (documented)",
                     "done without a completed run", "calls charged an attempt they never ran"):
            figures[name] = 0
        for call in self.records.returned:
            runs = self.records.runs.get(call, [])
            try:
                row: JobRecord = mq.result(call).record
            except LookupError:
                figures["calls lost"] += 1
                figures["  missing from the database"] += 1
                self.verdict.example("calls lost", call, runs, state="missing")
                continue
            if row.attempts > len(runs):
                figures["calls charged an attempt they never ran"] += 1
                self.verdict.example("calls charged an attempt they never ran", call, runs,
                                     state=row.state, attempts=row.attempts,
                                     **self._kills_of(runs))
            if row.state in UNFINISHED:
                figures["calls stuck after the drain"] += 1
                self.verdict.example("calls stuck after the drain", call, runs, state=row.state,
                                     attempts=row.attempts)
            elif row.state == "done":
                figures["calls done"] += 1
                if not any(r.how == "ok" for r in runs):
                    figures["done without a completed run"] += 1
                    self.verdict.example("done without a completed run", call, runs)
            elif row.error_type == "WorkerLost" and self._every_attempt_killed(row, runs):
                figures["failed WorkerLost after every attempt was killed mid-run "
                        "(documented)"] += 1
            else:
                figures["calls lost"] += 1
                if row.error_type != "WorkerLost":
                    kind = "  failed otherwise, revoked, expired"
                elif any(r.how == "ok" for r in runs):
                    kind = "  failed WorkerLost, completed"
                elif runs:
                    kind = "  failed WorkerLost, started"
                else:
                    kind = "  failed WorkerLost, never started"
                figures[kind] += 1
                self.verdict.example("calls lost", call, runs, state=row.state,
                                     error_type=row.error_type, error=row.error_message,
                                     attempts=row.attempts, max_attempts=row.max_attempts,
                                     **self._kills_of(runs))
        figures["calls returned"] = len(self.records.returned)

    def _every_attempt_killed(self, row: JobRecord, runs: list[Run]) -> bool:
        # As documented, a call whose consumer dies under it at each of its
        # max(retries + 1, 2) attempts ends failed: each attempt must have been
        # a real run, and the last one interrupted by a kill of its process.
        if len(runs) < max(row.max_attempts, 2) or runs[-1].how is not None:
            return False
        sent = self.killed_at.get(runs[-1].label)
        return sent is not None and sent >= runs[-1].start


def judge(mq: Minique, events: Path, logs: Path, kills: list[Kill], exited: int,
          stuck_in_queue: int) -> Verdict:
    """The verdict of a run whose records are in ``events`` and ``logs``."""
    records = read_records(events, logs)
    court = Judge(records, kills, exited)
    court.judge_runs()
    court.judge_outcomes(mq)
    figures = court.verdict.figures
    # Calls no producer saw return (it was killed first) must not stay unfinished either.
    figures["calls stuck after the drain"] = max(figures["calls stuck after the drain"],
                                                 stuck_in_queue)
    figures["torn record lines"] = records.torn_lines
    return court.verdict


ORDER = (
    "calls returned", "runs started", "runs completed", "calls done",
    "calls lost", "  failed WorkerLost, never started", "  failed WorkerLost, started",
    "  failed WorkerLost, completed", "  failed otherwise, revoked, expired",
    "  missing from the database",
    "failed WorkerLost after every attempt was killed mid-run (documented)",
    "duplicate runs (a call completed more than once)", "duplicate runs not explained by a kill",
    "re-runs not explained by a kill", "calls stuck after the drain",
    "runs killed mid-run", "calls charged an attempt they never ran",
    "outcomes committed twice", "done without a completed run",
    "runs of another call's arguments", "calls run that no producer recorded as returned",
    "runs that went on after their process was killed", "processes that died on their own",
)


def table(verdict: Verdict) -> str:
    """The figures as a Markdown table, failing ones marked."""
    lines = ["| figure | count |", "|---|---:|"]
    for name in ORDER:
        value = verdict.figures.get(name, 0)
        mark = " **(must be 0)**" if name in verdict.FAILING and value else ""
        lines.append(f"| {name.replace('  ', '— ', 1) if name.startswith('  ') else name} "
                     f"| {value:,}{mark} |")
    return "\n".join(lines)
