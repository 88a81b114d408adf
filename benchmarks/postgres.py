"""minique on PostgreSQL beside Procrastinate 3, in one run: ``python -m benchmarks --postgres``.

Both run on the same PostgreSQL server: a throwaway cluster started for the
run (``tests/pgcluster.py``, the tests' own, with fsync turned back on so that
a commit costs what it costs in production), or the database of ``--dsn``.
Every measurement gets a fresh schema of that database, with only its own
system's tables, dropped when its figures are taken. Producers are
``benchmarks.probe`` processes; consumers are each system's own worker
command (``minique consume``, ``procrastinate worker``), one process each.
Within a repeat the two systems alternate, and which goes first alternates
between repeats. See ``docs/benchmarks.md``, "PostgreSQL", for the figures.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import importlib.util
import itertools
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from .procs import ROOT, BenchError, ConsumerProc, MarkerFile, run_probe, wait_until
from .report import machine, stderr, summary, table, write_json
from .scenarios import Tally, idle_figures, kill_and_recover, run_scenarios
from .targets import EVERY_TIME, RowSpec, at_least_times, at_most, build_rows

SYSTEMS = ("minique", "procrastinate")
SCENARIOS = ("enqueue", "drain", "latency", "kill")
# minique_app gives synchronous="normal" for any mode but "durable": the only
# setting a PostgreSQL store takes (its durability is the server's).
MODE = "postgres"
# What each system's consumer writes when it starts: a row naming it, in its own table.
REGISTERED = {"minique": "SELECT count(*) FROM consumers",
              "procrastinate": "SELECT count(*) FROM procrastinate_workers"}
FINISHED = {"minique": "SELECT count(*) FROM jobs WHERE state = 'done'",
            "procrastinate": "SELECT count(*) FROM procrastinate_jobs"
                             " WHERE status = 'succeeded'"}
# The settings a production server has and the tests' cluster turns off.
DURABLE_SETTINGS = ("fsync", "full_page_writes", "synchronous_commit")


@dataclass(frozen=True)
class PgSizes:
    """How much work each scenario does; ``QUICK`` is the same shape, tiny."""

    enqueue: int = 5_000
    drain: int = 5_000
    workers: int = 4
    latency_tasks: int = 200
    latency_interval: float = 0.020
    settle: float = 3.0  # seconds a started consumer is left alone before it counts as idle
    idle_window: float = 5.0
    kill_tries: int = 3
    recover_timeout: float = 15.0
    # Enqueue and drain take seconds a run, and one run can come out 30 % off
    # either way on a shared machine: their medians are of at least this many.
    short_repeats: int = 7
    timeout: float = 300.0  # for any one wait


FULL = PgSizes()
QUICK = PgSizes(enqueue=200, drain=200, latency_tasks=5, settle=0.2, idle_window=0.3,
                kill_tries=1, recover_timeout=1.0, short_repeats=1, timeout=60.0)


def row_specs(sizes: PgSizes) -> list[RowSpec]:
    """The rows of issue 11's comparison, with design.md's part-two targets."""
    drain = f"drain {sizes.drain:,}, {sizes.workers} workers"
    return [
        RowSpec("enqueue.serial", "enqueue, 1 producer, one at a time", "/s",
                at_least_times(1.0)),
        RowSpec("enqueue.batch", "enqueue in one batch (map vs batch_defer)", "/s",
                at_least_times(3.0)),
        RowSpec("drain", f"{drain}, from the consumer's start", "/s", at_least_times(5.0)),
        RowSpec("drain.steady", f"{drain}, first task to last", "/s"),
        RowSpec("latency.p50", "latency enqueue→start p50, idle consumer", "ms"),
        RowSpec("latency.p99", "latency enqueue→start p99, idle consumer", "ms",
                at_most(5.0, "ms")),
        RowSpec("latency.max", "latency enqueue→start max, idle consumer", "ms"),
        RowSpec("idle_cpu", "idle consumer CPU", "%"),
        RowSpec("kill.recovered", "in-flight task after SIGKILL of the consumer", "recovered",
                EVERY_TIME),
        RowSpec("kill.seconds", "time from the SIGKILL to the task's new start", "ms"),
    ]


# -- the server ----------------------------------------------------------------------------


def _pgcluster() -> ModuleType:
    """tests/pgcluster.py, the tests' throwaway cluster (a script there, not a package)."""
    loaded = sys.modules.get("pgcluster")
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location("pgcluster", ROOT / "tests" / "pgcluster.py")
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load {ROOT / 'tests' / 'pgcluster.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pgcluster"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def with_params(url: str, **params: str) -> str:
    """``url`` with these query parameters added (or replaced)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


class Server:
    """The run's PostgreSQL: a cluster started here (and stopped by ``close``), or ``--dsn``."""

    def __init__(self, dsn: str, cluster: Any = None, folder: Path | None = None) -> None:
        self.dsn = dsn
        self.cluster = cluster
        self.folder = folder

    @classmethod
    def start(cls) -> Server:
        """initdb and start a cluster in a new temporary folder, with production's durability.

        The tests' cluster turns fsync and full_page_writes off; both are
        reloadable settings, turned back on here, so that every commit waits
        for the disk as it does on a real server.
        """
        pgcluster = _pgcluster()
        folder = Path(tempfile.mkdtemp(prefix="minique-bench-pg-"))
        folder.chmod(0o755)  # the server's user must reach the cluster's folder
        try:
            cluster = pgcluster.make(folder / "cluster")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        server = cls(cluster.dsn(), cluster, folder)
        try:
            with server.connect() as conn:
                for name in DURABLE_SETTINGS:
                    conn.execute(f"ALTER SYSTEM SET {name} = on")
                conn.execute("SELECT pg_reload_conf()")
            wait_until(lambda: server.settings()["fsync"] == "on", 10.0, "fsync to be on")
        except BaseException:
            server.close()
            raise
        return server

    def connect(self, dsn: str | None = None) -> Any:
        import psycopg

        return psycopg.connect(dsn or self.dsn, autocommit=True, connect_timeout=10)

    def settings(self) -> dict[str, str]:
        """The server's version and the settings that decide what a commit costs."""
        names = (*DURABLE_SETTINGS, "server_version", "shared_buffers", "wal_sync_method")
        with self.connect() as conn:
            return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in names}

    @contextlib.contextmanager
    def schema(self, name: str, system: str) -> Iterator[str]:
        """A fresh schema with ``system``'s tables; yields the URL whose search_path it is.

        The schema's name is its connections' application_name too, so that
        those a killed consumer left are ended before it is dropped.
        """
        with self.connect() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
            conn.execute(f"CREATE SCHEMA {name}")
        dsn = with_params(self.dsn, options=f"-csearch_path={name}", application_name=name)
        try:
            create_tables(system, dsn, self)
            yield dsn
        finally:
            with contextlib.suppress(Exception), self.connect() as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE application_name = %s AND pid <> pg_backend_pid()",
                             (name,))
                conn.execute("SET lock_timeout = '10s'")
                conn.execute(f"DROP SCHEMA {name} CASCADE")

    def close(self) -> None:
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def create_tables(system: str, dsn: str, server: Server) -> None:
    """Each system's tables, made before anything is timed, as each one's docs say to."""
    if system == "minique":
        from minique import Minique

        Minique(dsn).store.close()  # creates its tables on first use
        return
    from procrastinate.schema import SchemaManager  # `procrastinate schema --apply`

    with server.connect(dsn) as conn:
        conn.execute(SchemaManager.get_schema())


class PgConsumer(ConsumerProc):
    """A consumer process of one system, on a schema of the run's server."""

    def __init__(self, system: str, dsn: str, workers: int, log: Path,
                 marker: Path | None = None, marks: Sequence[int] = ()) -> None:
        import psycopg

        self._watch = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        super().__init__(system, MODE, dsn, workers, log, marker, marks)

    def _ready(self) -> bool:
        # Each system's consumer registers itself in its own table as it starts.
        return bool(self.count(REGISTERED[self.system]))

    def count(self, sql: str) -> int:
        row = self._watch.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def kill(self) -> None:
        try:
            super().kill()
        finally:
            self._watch.close()


# -- the scenarios -------------------------------------------------------------------------


@dataclass
class PgBench(Tally):
    """One run: its sizes, its server, its folder of logs, and the figures so far."""

    systems: ClassVar[Sequence[str]] = SYSTEMS
    sizes: PgSizes
    repeats: int
    folder: Path
    server: Server
    _count: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    # In the schemas' names, so that two runs on one database never meet.
    _run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def short_repeats(self) -> int:
        return max(self.repeats, self.sizes.short_repeats)

    def measure(self, name: str, system: str,
                fn: Callable[[str, str, Path], dict[str, Any]]) -> dict[str, Any]:
        """``fn(system, dsn, folder)`` on a fresh schema and folder, both removed after.

        A failed measurement keeps its folder of logs.
        """
        n = next(self._count)
        folder = self.folder / f"{n:04d}-{name}-{system}"
        folder.mkdir(parents=True)
        with self.server.schema(f"bench_{self._run}_{n:04d}_{system}", system) as dsn:
            out = fn(system, dsn, folder)
        shutil.rmtree(folder, ignore_errors=True)
        return out

    # -- enqueue: one at a time, and in one batch ------------------------------------------

    def enqueue(self) -> None:
        n = self.sizes.enqueue
        for r in range(self.short_repeats):
            for system in self.order(r):
                for action, key, label in (("serial", "enqueue.serial", "one at a time"),
                                           ("map", "enqueue.batch", "in one batch ")):
                    out = self.measure(f"enqueue-{action}", system,
                                       functools.partial(self._probe, action=action, n=n))
                    rate = n / out["seconds"]
                    self.record("enqueue", key, system, rate, repeat=r, **out)
                    self.say(f"enqueue {system:13} {label}: {rate:9,.0f}/s")

    def _probe(self, system: str, dsn: str, folder: Path, *, action: str,
               n: int) -> dict[str, Any]:
        return run_probe(system, MODE, dsn, action, n, log=folder / "probe.log",
                         timeout=self.sizes.timeout)

    # -- drain -------------------------------------------------------------------------------

    def drain(self) -> None:
        for r in range(self.short_repeats):
            for system in self.order(r):
                out = self.measure("drain", system, self._drain_once)
                self.record("drain", "drain", system, out["rate"], repeat=r, **out)
                self.record("drain", "drain.steady", system, out["steady_rate"])
                self.say(f"drain {system:13} -w {self.sizes.workers}: {out['rate']:7,.0f}/s "
                         f"(start-up {out['startup']:.2f} s, then "
                         f"{out['steady_rate']:,.0f}/s)")

    def _drain_once(self, system: str, dsn: str, folder: Path) -> dict[str, Any]:
        n = self.sizes.drain
        run_probe(system, MODE, dsn, "fill", n, log=folder / "fill.log",
                  timeout=self.sizes.timeout)
        marker = MarkerFile(folder / "marks.txt")
        consumer = PgConsumer(system, dsn, self.sizes.workers, folder / "consumer.log",
                              marker.path, marks=(1, n))
        try:
            marks = wait_until(lambda: (m := marker.marks()) and n in m and m,
                               self.sizes.timeout, f"{n} tasks run", consumer)
            # A task is done when its outcome is committed, after its body ran:
            # both systems' times end when the database says all are finished.
            wait_until(lambda: consumer.count(FINISHED[system]) >= n, self.sizes.timeout,
                       f"{n} tasks finished", consumer)
            done = time.time()
        finally:
            consumer.kill()
        seconds = done - consumer.started
        return {
            "count": n, "seconds": seconds, "rate": n / seconds,
            "startup": marks[1] - consumer.started, "last_task_ran": marks[n] - consumer.started,
            "steady_rate": (n - 1) / (marks[n] - marks[1]) if marks[n] > marks[1] else None,
        }

    # -- latency (and CPU) of an idle consumer ----------------------------------------------

    def latency(self) -> None:
        for r in range(self.repeats):
            for system in self.order(r):
                out = self.measure("idle", system, self._idle_once)
                for stat in ("p50", "p99", "max"):
                    self.record("latency", f"latency.{stat}", system, out[stat])
                self.record("latency", "idle_cpu", system, out["cpu_percent"])
                self.record("latency", None, system, None, repeat=r, **out)
                self.say(f"idle {system:13}: CPU {out['cpu_percent']:.2f} %; latency "
                         f"p50 {out['p50']:.2f} ms, p99 {out['p99']:.2f} ms, "
                         f"max {out['max']:.2f} ms")

    def _idle_once(self, system: str, dsn: str, folder: Path) -> dict[str, Any]:
        marker = MarkerFile(folder / "stamps.txt")
        n, sizes = self.sizes.latency_tasks, self.sizes
        consumer = PgConsumer(system, dsn, sizes.workers, folder / "consumer.log", marker.path)
        return idle_figures(
            consumer, marker, sizes.settle, sizes.idle_window, n, sizes.timeout,
            lambda: run_probe(system, MODE, dsn, "latency", n, sizes.latency_interval,
                              log=folder / "probe.log", timeout=sizes.timeout))

    # -- a consumer SIGKILLed mid-task ---------------------------------------------------------

    def kill(self) -> None:
        for t in range(self.sizes.kill_tries):
            for system in self.order(t):
                out = self.measure("kill", system, self._kill_once)
                self.record("kill", "kill.recovered", system, 1.0 if out["recovered"] else 0.0,
                            attempt=t, **out)
                if out["recovered"]:
                    self.record("kill", "kill.seconds", system, out["seconds_to_rerun"] * 1000)
                verdict = (f"ran again {out['seconds_to_rerun']:.2f} s after the kill"
                           if out["recovered"] else
                           f"lost (not run again within {self.sizes.recover_timeout:g} s; "
                           f"its row: {out['row_after']})")
                self.say(f"kill {system:13} try {t + 1}: {verdict}")

    def _kill_once(self, system: str, dsn: str, folder: Path) -> dict[str, Any]:
        marker = MarkerFile(folder / "hold.txt")
        state = "running" if system == "minique" else "doing"
        running = ("SELECT count(*) FROM jobs WHERE state = 'running'" if system == "minique"
                   else "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")

        def look(second: ConsumerProc) -> dict[str, Any]:
            assert isinstance(second, PgConsumer)
            return {"row_after": f"{second.count(running)} {state}"}

        return kill_and_recover(
            lambda log: PgConsumer(system, dsn, self.sizes.workers, folder / log, marker.path),
            marker,
            lambda: run_probe(system, MODE, dsn, "hold", log=folder / "probe.log",
                              timeout=self.sizes.timeout),
            self.sizes.timeout, self.sizes.recover_timeout, look)


# -- the run ---------------------------------------------------------------------------------


def about_run(server: Server) -> dict[str, Any]:
    """What the figures were measured on: the machine, the packages, the server."""
    about = machine()
    for name in ("procrastinate", "psycopg"):
        try:
            about[name] = version(name)
        except PackageNotFoundError:
            about[name] = None
    about["postgres"] = server.settings()
    about["server"] = "a cluster started for the run" if server.cluster else "--dsn"
    about["commit"] = commit_of_tree()
    return about


def main(quick: bool, only: Sequence[str] | None, repeats: int | None, dsn: str | None,
         results_dir: Path, keep: bool) -> int:
    """Run the chosen scenarios on both systems; print the table; write the raw figures."""
    try:
        import procrastinate  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        stderr(f"benchmarks: --postgres needs Procrastinate and psycopg ({exc}): "
               "pip install -e '.[bench]'")
        return 2
    sizes = QUICK if quick else FULL
    repeats = repeats or (1 if quick else 3)
    chosen = [s for s in SCENARIOS if not only or s in only]
    started = dt.datetime.now().astimezone()
    folder = Path(tempfile.mkdtemp(prefix="minique-bench-"))
    try:
        server = Server(dsn) if dsn else Server.start()
    except Exception as exc:
        stderr(f"benchmarks: cannot start a PostgreSQL cluster: {exc}")
        return 1
    errors: list[str] = []
    try:
        about = about_run(server)
    except Exception as exc:
        server.close()
        stderr(f"benchmarks: cannot read the PostgreSQL server's settings: {exc}")
        return 1
    pg = about["postgres"]
    bench = PgBench(sizes, repeats, folder, server)
    try:
        stderr(f"benchmarks --postgres: {', '.join(chosen)}; {repeats} repeat(s); "
               f"{'quick sizes; ' if quick else ''}logs in {folder}")
        stderr(f"  {about['nproc']} CPUs ({about['machine']}), Python {about['python']}, "
               f"PostgreSQL {pg['server_version']} (fsync {pg['fsync']}, synchronous_commit "
               f"{pg['synchronous_commit']}), Procrastinate {about['procrastinate']}, "
               f"psycopg {about['psycopg']}, minique at {about['commit']}, "
               f"load {about['loadavg']}")
        errors += run_scenarios(bench, chosen)
    finally:
        server.close()
    rows = build_rows(row_specs(sizes), bench.figures, peer="procrastinate")
    print(f"minique (PostgreSQL store) vs Procrastinate {about['procrastinate']} — "
          f"{started:%Y-%m-%d %H:%M %Z}, {about['nproc']} CPUs {about['machine']}, "
          f"Python {about['python']}, PostgreSQL {pg['server_version']} (fsync {pg['fsync']}, "
          f"synchronous_commit {pg['synchronous_commit']}), minique at {about['commit']}; "
          f"medians of {repeats} repeat(s), "
          f"{bench.short_repeats} for enqueue and drain"
          f"{' (--quick: not a measurement)' if quick else ''}\n")
    print(table(rows, peer="Procrastinate"))
    print(f"\n{summary(rows)}")
    out = results_dir / f"{started:%Y%m%dT%H%M%S}-postgres.json"
    about["loadavg_end"] = machine()["loadavg"]
    write_json(out, {
        "started_at": started.isoformat(),
        "finished_at": dt.datetime.now().astimezone().isoformat(), "machine": about,
        "store": "postgres", "scenarios": chosen, "repeats": repeats, "quick": quick,
        "sizes": vars(sizes), "raw": bench.raw, "errors": errors,
    }, rows, peer="procrastinate")
    stderr(f"benchmarks: raw figures in {out}")
    if keep or errors:
        stderr(f"benchmarks: logs kept in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if errors else 0


def commit_of_tree() -> str | None:
    """The commit the run's code is at (``+`` if the tree has changes), for the docs."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "minique", "benchmarks"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")

