"""Shared fixtures: a real queue file per test, consumers that always stop, owned subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from minique import Minique
from minique.consumer import Consumer

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.005,
             what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {last!r}")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def mq(db_path: Path) -> Minique:
    """A queue on a fresh SQLite file in tmp_path."""
    return Minique(db_path)


@pytest.fixture
def start_consumer() -> Iterator[Callable[..., Consumer]]:
    """Start consumers of a queue in this process; every one is stopped at the end of the test."""
    started: list[Consumer] = []

    def start(queue: Minique, **options: object) -> Consumer:
        consumer = queue.consumer(**options)  # type: ignore[arg-type]
        consumer.start()
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        consumer.stop(timeout=5)


@pytest.fixture
def gate(start_consumer: Callable[..., Consumer]) -> Iterator[threading.Event]:
    """An event that blocked tasks wait on; set after the test, before its consumers stop."""
    event = threading.Event()
    yield event
    event.set()


class Proc:
    """A subprocess owned by a test: output captured to a file, killed at the end."""

    def __init__(self, args: list[str], cwd: Path, log: Path, env: dict[str, str]) -> None:
        self.args = args
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(args, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT,
                                      env=env, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def children(self) -> list[int]:
        """The pids of its child processes (Linux's /proc), such as its worker processes."""
        return [int(pid) for path in Path(f"/proc/{self.pid}/task").glob("*/children")
                for pid in path.read_text().split()]

    def kill(self) -> None:
        """SIGKILL and reap it (so it is gone, not a zombie)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def wait(self, timeout: float = 30.0) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._out.close()


@pytest.fixture
def app_dir(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a module (e.g. ``("jobs", source)``) into tmp_path and return tmp_path."""

    def write(module: str, source: str) -> Path:
        path = tmp_path / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return tmp_path

    return write


@pytest.fixture
def spawn(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Proc]]:
    """Start Python subprocesses in tmp_path; all are killed after the test, their output
    printed if it failed."""
    procs: list[Proc] = []

    def start(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Proc:
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(cwd or tmp_path), str(ROOT), full_env.get("PYTHONPATH", "")])
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        log = tmp_path / f"proc-{len(procs)}.log"
        proc = Proc([sys.executable, *args], cwd or tmp_path, log, full_env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for proc in procs:
            print(f"--- output of {' '.join(proc.args)} (pid {proc.pid}) ---")
            print(proc.output())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report


# -- PostgreSQL ------------------------------------------------------------------------------
#
# One server for the session: MINIQUE_TEST_POSTGRES (the URL of a database the
# tests may fill with schemas of their own) if set, else a throwaway cluster
# started here (tests/pgcluster.py) and stopped at the end. Each test gets a
# fresh schema of its own, named in its URL's search_path. Under CI=true a test
# that cannot have its server fails; elsewhere it is skipped, saying why.


class PostgresServer:
    """The session's PostgreSQL: a URL, and the cluster itself when this session started it."""

    def __init__(self, dsn: str, cluster: object | None) -> None:
        self.dsn = dsn
        self.cluster = cluster


def postgres_unavailable(reason: str) -> None:
    """Fail under CI (it must have its server), skip elsewhere; never returns."""
    message = (f"no PostgreSQL server for this test: {reason}. Set MINIQUE_TEST_POSTGRES to a "
               "database URL, or install PostgreSQL's server binaries (see docs/postgres.md)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def make_private_cluster(request: pytest.FixtureRequest) -> object:
    """A cluster of this test's own (stopped at its end), for tests that restart the server."""
    import shutil
    import tempfile

    import pgcluster

    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        postgres_unavailable(f"psycopg is not installed ({exc})")
    parent = Path(tempfile.mkdtemp(prefix="minique-pg-"))
    parent.chmod(0o755)  # the server's user must reach the cluster's folder
    try:
        cluster = pgcluster.make(parent / "cluster")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(parent, ignore_errors=True)
        postgres_unavailable(str(exc))
        raise  # not reached

    def stop() -> None:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(parent, ignore_errors=True)

    request.addfinalizer(stop)
    return cluster


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
    """The session's PostgreSQL server (see above)."""
    dsn = os.environ.get("MINIQUE_TEST_POSTGRES", "").strip()
    if dsn:
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            postgres_unavailable(f"psycopg is not installed ({exc})")
        return PostgresServer(dsn, None)
    cluster = make_private_cluster(request)
    return PostgresServer(cluster.dsn(), cluster)  # type: ignore[attr-defined]


def with_params(dsn: str, **params: str) -> str:
    """``dsn`` with these query parameters added (or replaced)."""
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema of this test's own."""
    import uuid

    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        with psycopg.connect(postgres_server.dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        postgres_unavailable(f"cannot create a schema on the test server ({exc})")
    # The schema's name is the connections' application_name too, so that the
    # ones a test left open can be ended before the schema is dropped.
    yield with_params(postgres_server.dsn, options=f"-csearch_path={schema}",
                      application_name=schema)
    try:
        with psycopg.connect(postgres_server.dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE application_name = %s AND pid <> pg_backend_pid()", (schema,))
            conn.execute("SET lock_timeout = '5s'")
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    except psycopg.Error:
        pass  # a throwaway schema left behind is harmless


@pytest.fixture
def pg_mq(pg_dsn: str) -> Minique:
    """A queue on a fresh PostgreSQL schema."""
    return Minique(pg_dsn)


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, db_path: Path) -> str:
    """A fresh database of each store, as an operator names it: the SQLite file's path,
    or the URL of a fresh PostgreSQL schema.

    A test module runs on both stores by overriding ``mq`` with ``Minique(location)``.
    """
    if request.param == "sqlite":
        return str(db_path)
    return str(request.getfixturevalue("pg_dsn"))
