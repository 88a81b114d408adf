"""The processes of a run: probes (producers) and consumers, each system in its own.

Every process is started from the repository root with ``BENCH_*`` in its
environment, its output captured to a log file in the run's folder, and is
killed by PID when its measurement is over.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
POLL = 0.005  # seconds between looks at a marker file or a count


class BenchError(RuntimeError):
    """A measurement could not be taken (a process failed or timed out); says which and why."""


def environment(db: Path | str, mode: str, marker: Path | None = None,
                marks: Iterable[int] = ()) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["BENCH_DB"] = str(db)
    env["BENCH_MODE"] = mode
    env["BENCH_MARKER"] = str(marker) if marker else ""
    env["BENCH_MARKS"] = ",".join(str(m) for m in marks)
    return env


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


class Probe:
    """A ``benchmarks.probe`` process: a producer of one system."""

    def __init__(self, system: str, mode: str, db: Path | str, action: str, *args: object,
                 log: Path) -> None:
        self.what = f"probe {system} {action} {' '.join(map(str, args))}".strip()
        self.log = log
        self._err: IO[bytes] = open(log, "ab")  # noqa: SIM115 - closed in result()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.probe", system, action, *map(str, args)],
            cwd=ROOT, env=environment(db, mode), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._err, text=True)

    def wait_ready(self) -> None:
        """Block until the probe printed ``ready`` (it has opened the database)."""
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline().strip()
        if line != "ready":
            self.kill()
            raise BenchError(f"{self.what} did not get ready (said {line!r}):\n"
                             f"{_tail(self.log)}")

    def go(self, line: str = "go") -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the probe to finish and return its figures."""
        try:
            out, _ = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"{self.what} took more than {timeout:g} s:\n"
                             f"{_tail(self.log)}") from None
        finally:
            self._err.close()
        if self.popen.returncode != 0 or not out.strip():
            raise BenchError(f"{self.what} failed (exit {self.popen.returncode}):\n"
                             f"{_tail(self.log)}")
        figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return figures

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


def run_probe(system: str, mode: str, db: Path | str, action: str, *args: object, log: Path,
              timeout: float) -> dict[str, Any]:
    """Run one probe to the end and return its figures."""
    return Probe(system, mode, db, action, *args, log=log).result(timeout)


def consumer_command(system: str, workers: int, flags: Sequence[str] = ()) -> list[str]:
    """Each system's own consumer command, as a user runs it (threads, ``workers`` of them)."""
    if system == "minique":
        return [sys.executable, "-m", "minique", "consume", "benchmarks.minique_app",
                "-w", str(workers), *flags]
    if system == "procrastinate":  # one asyncio worker running ``workers`` jobs at once
        return [sys.executable, "-m", "procrastinate", "--app=benchmarks.procrastinate_app.app",
                "worker", f"--concurrency={workers}", *flags]
    return [sys.executable, "-m", "huey.bin.huey_consumer", "benchmarks.huey_app.huey",
            "-w", str(workers), "-k", "thread", *flags]


class ConsumerProc:
    """A consumer process of one system; ``started``: the epoch time just before its spawn."""

    def __init__(self, system: str, mode: str, db: Path | str, workers: int, log: Path,
                 marker: Path | None = None, marks: Iterable[int] = (),
                 flags: Sequence[str] = ()) -> None:
        self.system = system
        self.db = db
        self.log = log
        self.what = f"{system} consumer -w {workers} {' '.join(flags)}".strip()
        self._out = open(log, "ab")  # noqa: SIM115 - closed in kill()
        env = environment(db, mode, marker, marks)
        self.started = time.time()
        self.popen = subprocess.Popen(consumer_command(system, workers, flags), cwd=ROOT,
                                      env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        self.process = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.what} exited with status {self.popen.returncode}:\n"
                             f"{_tail(self.log)}")

    def _ready(self) -> bool:
        if self.system == "minique":
            folder = Path(f"{self.db}-wake")
            return folder.is_dir() and any(p.suffix == ".sock" for p in folder.iterdir())
        return "Huey consumer started" in self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the consumer has started its workers (its own sign of life)."""
        wait_until(self._ready, timeout, f"{self.what} to start", self)

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def peak_rss_mib(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MiB."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float(self.process.memory_info().rss) / 2**20

    def kill(self) -> None:
        """SIGKILL and reap it: the database is thrown away, nothing needs a clean stop."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        self._out.close()

    def pause(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGSTOP)


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               consumer: ConsumerProc | None = None) -> Any:
    """Poll ``predicate`` every few milliseconds; ``BenchError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if consumer is not None:
            consumer.check_alive()
        if time.monotonic() > deadline:
            log = f":\n{_tail(consumer.log)}" if consumer is not None else ""
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}{log}")
        time.sleep(POLL)


class MarkerFile:
    """The lines tasks append to ``BENCH_MARKER``, read again only when the file grew."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._size = -1
        self._lines: list[str] = []

    def lines(self) -> list[str]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size != self._size:
            text = self.path.read_text()
            self._lines = text.splitlines()[: text.count("\n")]  # whole lines only
            self._size = size
        return self._lines

    def marks(self) -> dict[int, float]:
        """``{count: time}`` for the marked counts reached so far."""
        found = {}
        for line in self.lines():
            count, at = line.split()
            found[int(count)] = float(at)
        return found

    def wait_lines(self, n: int, timeout: float, what: str,
                   consumer: ConsumerProc | None = None) -> list[str]:
        wait_until(lambda: len(self.lines()) >= n, timeout, what, consumer)
        return self.lines()
