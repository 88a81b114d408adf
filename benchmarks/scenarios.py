"""The scenarios of issue 4, each measured for minique and Huey in turn, repeat by repeat.

Every measurement gets a fresh folder (database, marker file, logs) inside
the run's temporary folder, removed once its figures are taken. Within a
repeat the two systems alternate, and which goes first alternates between
repeats, so that a noisy neighbour on the machine hurts both alike.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sqlite3
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .procs import BenchError, ConsumerProc, MarkerFile, Probe, run_probe, wait_until
from .report import stderr
from .targets import Figures

SYSTEMS = ("minique", "huey")
MODES = ("durable", "fast")
HUEY_FAST_POLLING = ("-d", "0.001", "-m", "0.01")
SCENARIOS = ("enqueue", "producers", "drain", "latency", "growth", "sustained", "kill")


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does; ``QUICK`` is the same shape, tiny."""

    enqueue: int = 5_000
    producers: int = 4
    per_producer: int = 2_000
    drain: int = 5_000
    drain_workers: tuple[int, ...] = (1, 4, 8)
    latency_tasks: int = 200
    latency_interval: float = 0.020
    settle: float = 3.0  # seconds a started consumer is left alone before it counts as idle
    idle_window: float = 10.0
    growth: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    growth_huey: tuple[int, ...] = (100_000,)
    # The drain rate is timed from the growth_skip-th task to growth_window more, the
    # same tasks whatever the backlog, so that only the backlog differs.
    growth_skip: int = 100
    growth_window: int = 900
    growth_enqueue: int = 2_000
    # That window lasts tens of milliseconds, so one hiccup of the machine moves
    # a figure by half: growth takes the median of at least this many repeats.
    growth_repeats: int = 11
    # Enqueue, producers and drain take about a second a run, and one run can
    # come out 30 % off either way on a shared machine, for either system:
    # their medians are of at least this many repeats.
    short_repeats: int = 7
    sustained_seconds: float = 20.0
    sustained_producers: int = 2
    kill_tries: int = 3
    recover_timeout: float = 15.0
    timeout: float = 300.0  # for any one wait; the machine may be slow, never this slow


FULL = Sizes()
QUICK = Sizes(enqueue=200, per_producer=100, drain=200, drain_workers=(1, 8),
              latency_tasks=5, settle=0.2, idle_window=0.5, growth=(200, 2_000),
              growth_huey=(2_000,), growth_skip=20, growth_window=150, growth_enqueue=100,
              growth_repeats=1, short_repeats=1,
              sustained_seconds=1.5, kill_tries=1, recover_timeout=3.0, timeout=60.0)


@dataclass
class Tally:
    """What every benchmark run keeps: the figures so far, the raw records, its clock.

    Its fields are keyword-only, so that a run's own fields come first.
    """

    systems: ClassVar[Sequence[str]] = SYSTEMS
    figures: Figures = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)),
                             kw_only=True)
    raw: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list),
                                                  kw_only=True)
    _t0: float = field(default_factory=time.monotonic, kw_only=True)

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self._t0:7.1f} s] {message}", file=sys.stderr, flush=True)

    def record(self, scenario: str, key: str | None, system: str, value: float | None,
               **detail: Any) -> None:
        if key is not None and value is not None:
            self.figures[key][system].append(value)
        self.raw[scenario].append({"key": key, "system": system, "value": value, **detail})

    def order(self, repeat: int, systems: Sequence[str] | None = None) -> list[str]:
        """The systems in turn, the first one alternating from repeat to repeat."""
        systems = self.systems if systems is None else systems
        return list(systems) if repeat % 2 == 0 else list(reversed(systems))


def run_scenarios(bench: Tally, chosen: Sequence[str]) -> list[str]:
    """Run each chosen scenario (a method of ``bench``); the failures, one line each."""
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
    return errors


def idle_figures(consumer: ConsumerProc, marker: MarkerFile, settle: float, window: float,
                 n: int, timeout: float, latency: Callable[[], object]) -> dict[str, Any]:
    """An idle consumer's CPU over ``window`` seconds, then the waits of ``n`` latency tasks.

    ``latency()`` runs the producer that enqueues them, stamped; the consumer
    is killed at the end.
    """
    try:
        consumer.wait_ready(timeout)
        time.sleep(settle)
        cpu0, t0 = consumer.cpu_seconds(), time.monotonic()
        time.sleep(window)
        cpu = (consumer.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        latency()
        lines = marker.wait_lines(n, timeout, f"{n} latency tasks", consumer)
    finally:
        consumer.kill()
    waits = sorted((float(b) - float(a)) * 1000 for a, b in (x.split() for x in lines))
    return {"cpu_percent": cpu, "idle_seconds": window, "p50": percentile(waits, 50),
            "p99": percentile(waits, 99), "max": waits[-1], "latencies_ms": waits}


def kill_and_recover(start: Callable[[str], ConsumerProc], marker: MarkerFile,
                     hold: Callable[[], object], timeout: float, recover_timeout: float,
                     look: Callable[[ConsumerProc], dict[str, Any]] | None = None,
                     ) -> dict[str, Any]:
    """SIGKILL a consumer mid-task and time how soon a second one runs the task again.

    ``start(log_name)`` starts a consumer; ``hold()`` enqueues the task that
    marks its start and runs on; ``look(second)`` adds figures read before the
    second consumer is killed.
    """
    first = start("consumer-1.log")
    try:
        first.wait_ready(timeout)
        hold()
        marker.wait_lines(1, timeout, "the task to start", first)
    finally:
        first.kill()
    killed = time.time()
    second = start("consumer-2.log")
    try:
        deadline = time.monotonic() + recover_timeout
        while len(marker.lines()) < 2 and time.monotonic() < deadline:
            second.check_alive()
            time.sleep(0.01)
        recovered = len(marker.lines()) >= 2
        rerun = time.time() - killed
        extra = look(second) if look is not None else {}
    finally:
        second.kill()
    return {"recovered": recovered, "seconds_to_rerun": rerun if recovered else None, **extra}


@dataclass
class Bench(Tally):
    """One run: its sizes, its folder, and the figures gathered so far."""

    sizes: Sizes
    repeats: int
    folder: Path
    _count: int = 0

    @property
    def short_repeats(self) -> int:
        """Repeats of the scenarios that take about a second a run."""
        return max(self.repeats, self.sizes.short_repeats)

    def measure(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args, folder)`` in a new, empty folder, removed after (kept if it failed)."""
        self._count += 1
        folder = self.folder / f"{self._count:04d}-{name}"
        folder.mkdir(parents=True)
        out = fn(*args, folder)
        shutil.rmtree(folder, ignore_errors=True)
        return out

    # -- 1. enqueue, one producer ---------------------------------------------------

    def enqueue(self) -> None:
        n = self.sizes.enqueue
        for r in range(self.short_repeats):
            for mode in MODES:
                for system in self.order(r):
                    out = self.measure(f"enqueue-{system}-{mode}", self._probe_once,
                                       system, mode, "serial", n)
                    rate = n / out["seconds"]
                    self.record("enqueue", f"enqueue.serial.{mode}", system, rate, mode=mode,
                                repeat=r, **out)
                    self.say(f"enqueue {mode:7} {system:7} one at a time: {rate:9,.0f}/s")
                    if system != "minique":
                        continue
                    out = self.measure(f"map-{system}-{mode}", self._probe_once,
                                       system, mode, "map", n)
                    rate = n / out["seconds"]
                    self.record("enqueue", f"enqueue.map.{mode}", system, rate, mode=mode,
                                repeat=r, **out)
                    self.say(f"enqueue {mode:7} {system:7} map:          {rate:9,.0f}/s")

    def _probe_once(self, system: str, mode: str, action: str, n: int,
                    folder: Path) -> dict[str, Any]:
        return run_probe(system, mode, folder / "queue.db", action, n, log=folder / "probe.log",
                         timeout=self.sizes.timeout)

    # -- 2. enqueue, several producer processes ---------------------------------------

    def producers(self) -> None:
        k, n = self.sizes.producers, self.sizes.per_producer
        for r in range(self.short_repeats):
            for mode in MODES:
                for system in self.order(r):
                    out = self.measure(f"producers-{system}-{mode}", self._producers_once,
                                       system, mode)
                    self.record("producers", f"producers.{mode}", system, out["rate"], mode=mode,
                                repeat=r, **out)
                    self.say(f"producers {mode:7} {system:7} {k} x {n:,}: {out['rate']:9,.0f}/s")

    def _producers_once(self, system: str, mode: str, folder: Path) -> dict[str, Any]:
        db = folder / "queue.db"
        # Tables first, so that the timed producers do not race to create them.
        run_probe(system, mode, db, "serial", 0, log=folder / "setup.log",
                  timeout=self.sizes.timeout)
        probes = [Probe(system, mode, db, "producer", self.sizes.per_producer,
                        log=folder / f"producer-{i}.log") for i in range(self.sizes.producers)]
        try:
            for probe in probes:
                probe.wait_ready()
            for probe in probes:
                probe.go()
            outs = [probe.result(self.sizes.timeout) for probe in probes]
        finally:
            for probe in probes:
                probe.kill()
        total = sum(o["count"] for o in outs)
        span = max(o["end"] for o in outs) - min(o["start"] for o in outs)
        return {"count": total, "seconds": span, "rate": total / span}

    # -- 3. drain (and 5b. peak RSS with 8 workers) --------------------------------------

    def drain(self) -> None:
        n = self.sizes.drain
        for r in range(self.short_repeats):
            for mode in MODES:
                for workers in self.sizes.drain_workers:
                    for system in self.order(r):
                        out = self.measure(f"drain-{system}-{mode}-w{workers}",
                                           self._drain_once, system, mode, workers, n)
                        self.record("drain", f"drain.w{workers}.{mode}", system, out["rate"],
                                    mode=mode, workers=workers, repeat=r, **out)
                        if workers == 8:
                            self.record("drain", f"rss.w8.{mode}", system, out["peak_rss_mib"],
                                        mode=mode, workers=workers, repeat=r)
                        self.say(f"drain {mode:7} {system:7} -w {workers}: {out['rate']:7,.0f}/s"
                                 f" (start-up {out['startup']:.2f} s, then "
                                 f"{out['steady_rate']:,.0f}/s; peak RSS "
                                 f"{out['peak_rss_mib']:.1f} MiB)")

    def _drain_once(self, system: str, mode: str, workers: int, n: int,
                    folder: Path) -> dict[str, Any]:
        db = folder / "queue.db"
        # The queue is filled before the timed part, with the fast setting: only the
        # consumer runs with the pairing's.
        run_probe(system, "fast", db, "fill", n, log=folder / "fill.log",
                  timeout=self.sizes.timeout)
        marker = MarkerFile(folder / "marks.txt")
        consumer = ConsumerProc(system, mode, db, workers, folder / "consumer.log",
                                marker.path, marks=(1, n))
        try:
            marks = wait_until(lambda: (m := marker.marks()) and n in m and m,
                               self.sizes.timeout, f"{n} tasks run", consumer)
            # minique's last finish is a commit after the task body: wait for it, so
            # that minique's time ends when every task is durably done. Huey has
            # nothing left to write once a task without a result has run.
            done = finished_at(system, db, n, self.sizes.timeout)
            rss = consumer.peak_rss_mib()
        finally:
            consumer.kill()
        seconds = done - consumer.started
        return {
            "count": n, "seconds": seconds, "rate": n / seconds,
            "startup": marks[1] - consumer.started, "last_task_ran": marks[n] - consumer.started,
            "steady_rate": (n - 1) / (marks[n] - marks[1]) if marks[n] > marks[1] else None,
            "peak_rss_mib": rss,
        }

    # -- 4 and 5a. latency and CPU of an idle consumer -------------------------------------

    def latency(self) -> None:
        configs = [("minique", "fast", (), "default"), ("huey", "durable", (), "default"),
                   ("huey", "durable", HUEY_FAST_POLLING, "fastpoll")]
        for r in range(self.repeats):
            ordered = configs if r % 2 == 0 else configs[::-1]
            for system, mode, flags, polling in ordered:
                out = self.measure(f"idle-{system}-{polling}", self._idle_once,
                                   system, mode, flags)
                # minique has no polling flags: its one figure stands in both rows.
                pollings = ("default", "fastpoll") if system == "minique" else (polling,)
                for p in pollings:
                    for stat in ("p50", "p99", "max"):
                        self.record("latency", f"latency.{stat}.{p}", system, out[stat])
                    self.record("latency", f"idle_cpu.{p}", system, out["cpu_percent"])
                self.record("latency", None, system, None, polling=polling, flags=list(flags),
                            mode=mode, repeat=r, **out)
                self.say(f"idle {system:7} {polling:8}: CPU {out['cpu_percent']:.2f} %; latency "
                         f"p50 {out['p50']:.2f} ms, p99 {out['p99']:.2f} ms, "
                         f"max {out['max']:.2f} ms")

    def _idle_once(self, system: str, mode: str, flags: Sequence[str],
                   folder: Path) -> dict[str, Any]:
        db = folder / "queue.db"
        marker = MarkerFile(folder / "stamps.txt")
        n, sizes = self.sizes.latency_tasks, self.sizes
        consumer = ConsumerProc(system, mode, db, 4, folder / "consumer.log", marker.path,
                                flags=flags)
        return idle_figures(
            consumer, marker, sizes.settle, sizes.idle_window, n, sizes.timeout,
            lambda: run_probe(system, mode, db, "latency", n, sizes.latency_interval,
                              log=folder / "probe.log", timeout=sizes.timeout))

    # -- 6. how cost grows with the backlog ------------------------------------------------

    def growth(self) -> None:
        for n in self.sizes.growth:
            systems = SYSTEMS if n in self.sizes.growth_huey else ("minique",)
            templates = {s: self._growth_template(s, n) for s in systems}
            try:
                for r in range(max(self.repeats, self.sizes.growth_repeats)):
                    for system in self.order(r, systems):
                        out = self.measure(f"growth-{system}-{n}", self._growth_once,
                                           system, n, templates[system])
                        self.record("growth", f"growth.enqueue.{n}", system, out["enqueue_rate"],
                                    repeat=r, **out)
                        self.record("growth", f"growth.drain.{n}", system, out["drain_rate"])
                        self.say(f"growth {system:7} {n:>9,} waiting: enqueue "
                                 f"{out['enqueue_rate']:7,.0f}/s, drain "
                                 f"{out['drain_rate']:7,.0f}/s")
            finally:
                for template in templates.values():
                    shutil.rmtree(template.parent, ignore_errors=True)

    def _growth_template(self, system: str, n: int) -> Path:
        folder = self.folder / f"template-{system}-{n}"
        folder.mkdir(parents=True)
        db = folder / "queue.db"
        out = run_probe(system, "fast", db, "fill", n, log=folder / "fill.log",
                        timeout=self.sizes.timeout * 4)
        checkpoint(db)
        self.say(f"growth {system:7} {n:>9,} waiting: filled in {out['seconds']:.1f} s "
                 f"({db.stat().st_size / 2**20:,.0f} MiB)")
        return db

    def _growth_once(self, system: str, n: int, template: Path, folder: Path) -> dict[str, Any]:
        # Two copies of the backlog: enqueueing onto one, draining the other.
        shutil.copyfile(template, folder / "enqueue.db")
        db = folder / "queue.db"
        shutil.copyfile(template, db)
        m = self.sizes.growth_enqueue
        enq = run_probe(system, "fast", folder / "enqueue.db", "serial", m,
                        log=folder / "probe.log", timeout=self.sizes.timeout)
        first = min(self.sizes.growth_skip, n - 1)
        last = min(n, first + self.sizes.growth_window)
        marker = MarkerFile(folder / "marks.txt")
        consumer = ConsumerProc(system, "fast", db, 4, folder / "consumer.log", marker.path,
                                marks=(first, last))
        try:
            marks = wait_until(lambda: (x := marker.marks()) and last in x and x,
                               self.sizes.timeout, f"{last} tasks run", consumer)
        finally:
            consumer.kill()
        return {"waiting": n, "enqueued": m, "enqueue_seconds": enq["seconds"],
                "enqueue_rate": m / enq["seconds"], "timed_tasks": last - first,
                "drain_seconds": marks[last] - marks[first],
                "drain_rate": (last - first) / (marks[last] - marks[first])}

    # -- 7. producers and consumer together ------------------------------------------------

    def sustained(self) -> None:
        for r in range(self.repeats):
            for mode in MODES:
                for system in self.order(r):
                    out = self.measure(f"sustained-{system}-{mode}", self._sustained_once,
                                       system, mode)
                    self.record("sustained", f"sustained.rate.{mode}", system, out["rate"],
                                mode=mode, repeat=r, **out)
                    self.record("sustained", f"sustained.backlog.{mode}", system,
                                out["backlog"])
                    self.say(f"sustained {mode:7} {system:7}: enqueued "
                             f"{out['enqueue_rate']:7,.0f}/s, finished {out['rate']:7,.0f}/s, "
                             f"backlog {out['backlog']:,}")

    def _sustained_once(self, system: str, mode: str, folder: Path) -> dict[str, Any]:
        db = folder / "queue.db"
        k, seconds = self.sizes.sustained_producers, self.sizes.sustained_seconds
        consumer = ConsumerProc(system, mode, db, 4, folder / "consumer.log")
        probes: list[Probe] = []
        try:
            consumer.wait_ready(self.sizes.timeout)
            probes = [Probe(system, mode, db, "flood", log=folder / f"producer-{i}.log")
                      for i in range(k)]
            for probe in probes:
                probe.wait_ready()
            start = time.time()
            deadline = start + seconds
            for probe in probes:
                probe.go(repr(deadline))
            time.sleep(max(deadline - time.time(), 0))
            # Counted while the consumer runs on; the count takes milliseconds of 20 s.
            finished, backlog = progress_of(system, db)
            outs = [probe.result(self.sizes.timeout) for probe in probes]
        finally:
            for probe in probes:
                probe.kill()
            consumer.kill()
        enqueued = sum(o["count"] for o in outs) + k  # and one untimed call per producer
        if finished is None:
            finished = enqueued - backlog  # Huey: whatever left the queue table has run or runs
        return {"seconds": seconds, "producers": k, "enqueued": enqueued,
                "enqueue_rate": (enqueued - k) / seconds, "finished": finished,
                "rate": max(finished - k, 0) / seconds, "backlog": backlog}

    # -- 8. a consumer SIGKILLed mid-task ----------------------------------------------------

    def kill(self) -> None:
        for t in range(self.sizes.kill_tries):
            for system in self.order(t):
                mode = "fast" if system == "minique" else "durable"  # each one's default
                out = self.measure(f"kill-{system}", self._kill_once, system, mode)
                self.record("kill", "kill.recovered", system, 1.0 if out["recovered"] else 0.0,
                            mode=mode, attempt=t, **out)
                verdict = (f"ran again {out['seconds_to_rerun']:.2f} s after the kill"
                           if out["recovered"] else
                           f"lost (not run again within {self.sizes.recover_timeout:g} s)")
                self.say(f"kill {system:7} try {t + 1}: {verdict}")

    def _kill_once(self, system: str, mode: str, folder: Path) -> dict[str, Any]:
        db = folder / "queue.db"
        marker = MarkerFile(folder / "hold.txt")
        return kill_and_recover(
            lambda log: ConsumerProc(system, mode, db, 4, folder / log, marker.path),
            marker,
            lambda: run_probe(system, mode, db, "hold", log=folder / "probe.log",
                              timeout=self.sizes.timeout),
            self.sizes.timeout, self.sizes.recover_timeout)


# -- helpers -----------------------------------------------------------------------------


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def checkpoint(db: Path) -> None:
    """Fold the WAL into the database file, so that copying the file copies the queue."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def finished_at(system: str, db: Path, n: int, timeout: float) -> float:
    """The time at which all ``n`` tasks are finished in the database, seen by polling."""
    if system == "huey":
        with contextlib.closing(sqlite3.connect(db)) as conn:
            (left,) = conn.execute("SELECT COUNT(*) FROM task").fetchone()
        if left:
            raise BenchError(f"Huey ran its {n}th task but {left} are still queued")
        return time.time()
    from minique import Minique

    mq = Minique(db)
    try:
        wait_until(lambda: mq.counts()["done"] >= n, timeout, f"{n} tasks done")
    finally:
        mq.store.close()
    return time.time()


def progress_of(system: str, db: Path) -> tuple[int | None, int]:
    """(finished, backlog) now: minique counts done tasks; Huey only knows what is queued."""
    if system == "huey":
        with contextlib.closing(sqlite3.connect(db)) as conn:
            (pending,) = conn.execute("SELECT COUNT(*) FROM task").fetchone()
        return None, int(pending)
    from minique import Minique

    mq = Minique(db)
    try:
        counts = mq.counts()
    finally:
        mq.store.close()
    return counts["done"], counts["queued"] + counts["running"]
