"""The chaos soak of issue 9: ``python -m benchmarks --only chaos [--duration S] [--database DB]``.

Producer and consumer processes share one database while the soak SIGKILLs
one of them at random every 1-3 s and starts it again. Every task records
each start and each end of its runs, and every producer each call whose
enqueue returned, in files of their own (``benchmarks.chaos_app``). Then the
killing stops, the survivors stop cleanly, a fresh consumer drains what is
left, and ``benchmarks.chaos_analysis`` holds the records against minique's
promises: nothing returned is lost, nothing stays stuck, and nothing runs
twice unless a kill of the process that ran it explains it.

The database is any that ``Minique(...)`` opens: by default a new SQLite file
in the run's folder; ``--database`` takes a path or, for another store, a
URL. The run's calls go to a queue of their own, so a database that holds
other work is left as it was.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from minique import Minique

from .chaos_analysis import Kill, Verdict, judge, table

ROOT = Path(__file__).resolve().parent.parent
CONSUMER_GRACE = 10.0  # seconds a consumer stopped at the end may finish its tasks
BURST_EVERY = 5.0  # seconds between a producer's bursts, on average


def shown(database: str) -> str:
    """The database as printed and written down: a URL's password masked."""
    if "://" not in database:
        return database
    url = urlsplit(database)
    if url.password is None:
        return database
    return url._replace(netloc=f"{url.username}:***@{url.netloc.rpartition('@')[2]}").geturl()


@dataclass(frozen=True)
class ChaosConfig:
    """How a soak runs; the defaults are issue 9's."""

    duration: float = 180.0
    database: str | None = None  # None: a new SQLite file in the run's folder
    producers: int = 3
    consumers: int = 2
    workers: int = 4
    worker_type: str = "thread"  # or "process": minique consume -k
    rate: float = 50.0  # enqueue calls a second, per producer
    kill_every: tuple[float, float] = (1.0, 3.0)
    drain_timeout: float = 120.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if min(self.producers, self.consumers, self.workers) < 1:
            raise ValueError("a soak needs at least one producer, one consumer and one worker")
        if self.worker_type not in ("thread", "process"):
            raise ValueError(f"the worker type is thread or process, not {self.worker_type!r}")
        if min(self.duration, self.rate, self.kill_every[0], self.drain_timeout) <= 0 \
                or self.kill_every[0] > self.kill_every[1]:
            raise ValueError("the duration, the rate, the seconds between kills and the drain "
                             "timeout must be positive")


@dataclass
class Report:
    """What a soak found; ``ok`` when every figure that must be 0 is."""

    config: ChaosConfig
    seed: int
    database: str
    queue: str
    folder: Path
    started_at: str
    kills: list[Kill]
    verdict: Verdict
    drained: bool
    lifetimes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def figures(self) -> dict[str, int]:
        return self.verdict.figures

    @property
    def ok(self) -> bool:
        return not self.verdict.failures

    def heading(self) -> str:
        c = self.config
        consumer_kills = sum(k.role == "consumer" for k in self.kills)
        return (f"chaos soak, {self.started_at}: {c.duration:g} s, {c.producers} producers "
                f"({c.rate:g} enqueues/s each), {c.consumers} consumers x {c.workers} "
                f"{c.worker_type} workers, {len(self.kills)} kills ({consumer_kills} of "
                f"consumers), seed {self.seed}; "
                f"database {self.database}, queue {self.queue}")

    def to_json(self) -> dict[str, Any]:
        config = asdict(self.config)
        config["database"] = self.database if self.config.database else None
        return {"config": config, "seed": self.seed, "database": self.database,
                "queue": self.queue, "started_at": self.started_at, "drained": self.drained,
                "ok": self.ok, "failures": self.verdict.failures, "figures": self.figures,
                "kills": [asdict(k) for k in self.kills], "processes": self.lifetimes,
                "examples": self.verdict.examples}


class Member:
    """One process of the soak in its slot; a restart is a new member with a new label."""

    def __init__(self, role: str, slot: int, generation: int, command: list[str],
                 env: dict[str, str], logs: Path) -> None:
        self.role = role
        self.slot = slot
        self.label = f"{role}{slot}-{generation}"
        self.log = logs / f"{self.label}.log"
        self._out: IO[bytes] = open(self.log, "wb")  # noqa: SIM115 - closed in _reaped()
        self.started = time.time()
        self.popen = subprocess.Popen(command, cwd=ROOT, env={**env, "CHAOS_LABEL": self.label},
                                      stdin=subprocess.DEVNULL, stdout=self._out,
                                      stderr=subprocess.STDOUT)
        self.ended: float | None = None
        self.end = ""

    def kill(self) -> Kill:
        """SIGKILL it and reap it."""
        sent = time.time()
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        self._reaped("killed")
        return Kill(self.label, self.role, self.popen.pid, sent, time.time())

    def stop(self, timeout: float) -> Kill | None:
        """SIGTERM, as an operator stops it; a Kill if it had to be killed or died of it."""
        sent = time.time()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            kill = self.kill()
            self.end = f"killed: still running {timeout:g} s after SIGTERM"
            return kill
        self._reaped("stopped" if code == 0 else f"exit {code} after SIGTERM")
        if code == -signal.SIGTERM:  # it had not yet set up its handler: died as if killed
            return Kill(self.label, self.role, self.popen.pid, sent, time.time(), "SIGTERM")
        return None

    def exited(self) -> bool:
        """True (and noted) if it ended by itself."""
        code = self.popen.poll()
        if code is None:
            return False
        self._reaped(f"exited by itself with status {code}")
        return True

    def _reaped(self, how: str) -> None:
        self.ended = time.time()
        self.end = how
        self._out.close()

    def discard(self) -> None:
        """SIGKILL it if it still runs, without a record: the soak is being abandoned."""
        if self.ended is None:
            self.popen.kill()
            self.popen.wait()
            self._reaped("abandoned")

    def lifetime(self) -> dict[str, Any]:
        return {"label": self.label, "role": self.role, "pid": self.popen.pid,
                "started": self.started, "ended": self.ended, "end": self.end}

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class Soak:
    """One run of the soak: its folder, its processes, what it killed."""

    def __init__(self, config: ChaosConfig, folder: Path) -> None:
        self.config = config
        self.folder = folder
        self.seed = config.seed if config.seed is not None else random.randrange(2**32)
        self.rng = random.Random(self.seed)
        self.events = folder / "events"
        self.logs = folder / "logs"
        self.events.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.database = config.database or str(folder / "chaos.db")
        self.queue = f"chaos-{uuid.uuid4().hex[:12]}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", ""))
                                            if p)
        env.update(PYTHONUNBUFFERED="1", CHAOS_DB=self.database, CHAOS_QUEUE=self.queue,
                   CHAOS_EVENTS=str(self.events))
        self.env = env
        self.kills: list[Kill] = []
        self.exited = 0
        self.members: list[Member] = []  # every process ever started, in order
        self.generations: dict[tuple[str, int], int] = {}
        self._t0 = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self._t0:6.1f} s] chaos: {message}", file=sys.stderr,
              flush=True)

    def command(self, role: str) -> list[str]:
        if role == "producer":
            return [sys.executable, "-m", "benchmarks.chaos", "produce",
                    str(self.config.rate), str(self.rng.randrange(2**32))]
        return [sys.executable, "-m", "minique", "consume", "benchmarks.chaos_app",
                "-w", str(self.config.workers), "-k", self.config.worker_type,
                "-q", self.queue, "--no-periodic",
                "--grace", str(CONSUMER_GRACE)]

    def start(self, role: str, slot: int) -> Member:
        generation = self.generations.get((role, slot), 0) + 1
        self.generations[role, slot] = generation
        member = Member(role, slot, generation, self.command(role), self.env, self.logs)
        self.members.append(member)
        return member

    def run(self, mq: Minique) -> bool:
        """Kill and restart for the duration, stop everything, drain; True if it drained."""
        try:
            slots = self.rampage(mq)
            self.say(f"{len(self.kills)} kills; stopping the producers, then the consumers")
            for member in slots:
                if member.role == "producer":
                    self._stop(member, 10.0)
            for member in slots:
                if member.role == "consumer":
                    self._stop(member, CONSUMER_GRACE + 10.0)
            return self.drain(mq)
        finally:
            # Only after an error (an interrupt, a database that cannot be read):
            # no process of the soak outlives it.
            for member in self.members:
                member.discard()

    def rampage(self, mq: Minique) -> list[Member]:
        """Start the processes, then kill one at random every few seconds for the duration."""
        c = self.config
        slots = [self.start("consumer", i) for i in range(c.consumers)]
        slots += [self.start("producer", i) for i in range(c.producers)]
        end = time.monotonic() + c.duration
        next_kill = time.monotonic() + self.rng.uniform(*c.kill_every)
        next_news = time.monotonic() + 15
        while (now := time.monotonic()) < end:
            for i, member in enumerate(slots):
                if member.exited():
                    self.exited += 1
                    self.say(f"{member.label} {member.end}; its output ends:\n{member.tail()}")
                    slots[i] = self.start(member.role, member.slot)
            if now >= next_kill:
                i = self.rng.randrange(len(slots))
                victim = slots[i]
                if victim.popen.poll() is None:
                    self.kills.append(victim.kill())
                    slots[i] = self.start(victim.role, victim.slot)
                next_kill = now + self.rng.uniform(*c.kill_every)
            if now >= next_news:
                self.say(f"{len(self.kills)} kills so far; {self._unfinished(mq)} calls "
                         "unfinished")
                next_news = now + 15
            time.sleep(min(0.05, max(0.0, min(next_kill, end) - time.monotonic())))
        return slots

    def _stop(self, member: Member, timeout: float) -> None:
        if member.exited():
            self.exited += 1
            self.say(f"{member.label} {member.end}; its output ends:\n{member.tail()}")
            return
        kill = member.stop(timeout)
        if kill is not None:
            self.kills.append(kill)
        if member.end != "stopped":
            self.say(f"{member.label}: {member.end}")

    def _unfinished(self, mq: Minique) -> int:
        counts = mq.counts(queue=self.queue)
        return counts["queued"] + counts["scheduled"] + counts["running"]

    def drain(self, mq: Minique) -> bool:
        """A fresh consumer runs what is left, until nothing is unfinished or the timeout."""
        self.say(f"draining {self._unfinished(mq)} unfinished calls with a fresh consumer")
        drainer = self.start("drain", 0)
        deadline = time.monotonic() + self.config.drain_timeout
        drained = False
        try:
            while time.monotonic() < deadline:
                # Once it runs: as it starts, it takes back the calls of the killed.
                started = any(c.pid == drainer.popen.pid for c in mq.consumers())
                if started and self._unfinished(mq) == 0:
                    drained = True
                    break
                if drainer.exited():
                    self.exited += 1
                    self.say(f"{drainer.label} {drainer.end}; its output ends:\n"
                             f"{drainer.tail()}")
                    drainer = self.start("drain", 0)
                time.sleep(0.05)
        finally:
            self._stop(drainer, CONSUMER_GRACE + 10.0)
        if not drained:
            self.say(f"still {self._unfinished(mq)} unfinished calls after "
                     f"{self.config.drain_timeout:g} s of draining")
        return drained


def run_soak(config: ChaosConfig, folder: Path | None = None) -> Report:
    """Run one soak and judge it; its records and logs stay in ``folder`` (made if None)."""
    folder = folder or Path(tempfile.mkdtemp(prefix="minique-chaos-"))
    started_at = dt.datetime.now().astimezone()
    soak = Soak(config, folder)
    mq = Minique(soak.database)  # creates the tables before the processes race to
    soak.say(f"seed {soak.seed}; database {shown(soak.database)}; records and logs in "
             f"{folder}")
    drained = soak.run(mq)
    counts = mq.counts(queue=soak.queue)
    stuck = counts["queued"] + counts["scheduled"] + counts["running"]
    soak.say("reading the records")
    verdict = judge(mq, soak.events, soak.logs, soak.kills, soak.exited, stuck)
    return Report(config, soak.seed, shown(soak.database), soak.queue, folder,
                  f"{started_at:%Y-%m-%d %H:%M %Z}", soak.kills, verdict, drained,
                  [m.lifetime() for m in soak.members])


def main(config: ChaosConfig, results_dir: Path, keep: bool) -> int:
    """Run the soak, print its table, write its JSON; 0 if every figure that must be 0 is."""
    report = run_soak(config)
    print(report.heading() + "\n")
    print(table(report.verdict))
    failures = report.verdict.failures
    print("\n" + (f"FAILED: {', '.join(failures)}" if failures else
                  "held: nothing lost, nothing stuck, no run twice without a kill"))
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"chaos-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(report.to_json(), indent=1, default=str) + "\n")
    print(f"chaos: figures, kills and examples of each failure in {out}", file=sys.stderr)
    if keep or failures:
        print(f"chaos: records and logs kept in {report.folder}", file=sys.stderr)
    else:
        shutil.rmtree(report.folder, ignore_errors=True)
    return 1 if failures else 0


def burst(app: Any, token: str, rng: random.Random) -> list[tuple[Any, str]]:
    """A few hundred calls at once, short and slow mixed, as a batch job or a spike sends.

    Consumers fall behind for a moment and claim short calls ahead of their
    busy workers: the claimed-ahead calls a kill then catches are what issue
    9's first finding was about.
    """
    calls: list[tuple[Any, str]] = []
    for round_ in range(10):
        quick = [f"{token}.b{round_}q{i}" for i in range(24)]
        calls += zip(app.quick.map(quick), quick, strict=True)
        slow = [f"{token}.b{round_}s{i}" for i in range(6)]
        calls += zip(app.slow.map([(t, rng.uniform(0.02, 0.08)) for t in slow]), slow,
                     strict=True)
    return calls


def produce(rate: float, seed: int) -> None:
    """A producer: enqueue a mix of calls at ``rate`` a second until SIGTERM, recording each."""
    from . import chaos_app as app

    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    rng = random.Random(seed)
    sequence = 0
    next_at = time.monotonic()
    while not stopping:
        sequence += 1
        token = f"{app.LABEL}.{sequence}"
        draw = rng.random()
        if draw < 0.70:
            calls = [(app.quick(token), token)]
        elif draw < 0.80:
            calls = [(app.slow(token, rng.uniform(0.01, 0.08)), token)]
        elif draw < 0.90:
            calls = [(app.flaky(token), token)]
        elif draw < 0.95:
            calls = [(app.quick.schedule(args=(token,), delay=rng.uniform(0.05, 0.5)), token)]
        else:
            tokens = [f"{token}.{i}" for i in range(rng.randint(2, 10))]
            calls = list(zip(app.quick.map(tokens), tokens, strict=True))
        if rng.random() < 1 / (rate * BURST_EVERY):
            calls += burst(app, token, rng)
        app.returned(calls)
        # At the rate on average; after a stall (a locked database), no burst to catch up.
        next_at = max(next_at + 1 / rate, time.monotonic() - 1.0)
        time.sleep(max(0.0, next_at - time.monotonic()))


def _produce_main(argv: Sequence[str]) -> int:
    if len(argv) != 3 or argv[0] != "produce":
        print("usage: python -m benchmarks.chaos produce RATE SEED (the soak starts these)",
              file=sys.stderr)
        return 2
    produce(float(argv[1]), int(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(_produce_main(sys.argv[1:]))
