"""The ``minique`` command line, run as a real process: consume, status, and bad input.

Both ``minique`` (the console script in the venv's bin folder) and
``python -m minique`` are exercised. Bad targets and unusable databases must
end with exit status 2 and one line on stderr, never a traceback; bad rows
(an unknown task name, a corrupt payload) fail their task and the consumer
goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import ROOT, Proc, wait_for

from minique import Minique, TaskError
from minique.cli import status
from minique.store import STATES
from minique.task import Task

SCRIPT = Path(sys.executable).parent / "minique"

APP = """
    from minique import Minique

    mq = Minique("queue.db")


    @mq.task(name="greet")
    def greet(who):
        return f"hello {who}"


    @mq.task(name="boom")
    def boom():
        raise ValueError("no luck")


    @mq.task(name="mail", queue="emails")
    def mail(to):
        return to
"""


class App(NamedTuple):
    root: Path
    mq: Minique
    greet: Task[[str], str]
    boom: Task[[], None]
    mail: Task[[str], str]


@pytest.fixture
def app(app_dir: Callable[[str, str], Path], db_path: Path) -> App:
    """The jobs module for the command, and the test's producer side of the same queue."""
    root = app_dir("jobs", APP)
    mq = Minique(db_path)

    @mq.task(name="greet")
    def greet(who: str) -> str:
        raise AssertionError("runs in the consumer")

    @mq.task(name="boom")
    def boom() -> None:
        raise AssertionError("runs in the consumer")

    @mq.task(name="mail", queue="emails")
    def mail(to: str) -> str:
        raise AssertionError("runs in the consumer")

    return App(root, mq, greet, boom, mail)


LAUNCHERS = pytest.mark.parametrize("launcher", [[str(SCRIPT)], [sys.executable, "-m", "minique"]],
                                    ids=["minique", "python -m minique"])


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command that should end by itself (status, or a consume that must refuse)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)


def consume(spawn: Callable[..., Proc], *args: str) -> Proc:
    proc = spawn("-m", "minique", "consume", *args)
    wait_for(lambda: "started on" in proc.output(), timeout=15, what="the consumer's banner")
    return proc


def assert_refused(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit status 2, one line on stderr naming the problem, no traceback anywhere."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, output
    for fragment in fragments:
        assert fragment in lines[0], output


# -- consume ---------------------------------------------------------------------------------


def test_console_script_is_installed_beside_python() -> None:
    assert SCRIPT.exists(), f"no console script at {SCRIPT}: is the package installed?"


@LAUNCHERS
def test_consume_prints_a_banner_and_one_line_per_task(
        app: App, spawn: Callable[..., Proc], db_path: Path, launcher: list[str]) -> None:
    # Given a consumer started from the command line (spawn runs it with this Python)
    args = launcher[1:] if launcher[0] == sys.executable else launcher
    proc = spawn(*args, "consume", "jobs", "-w", "3", "--no-periodic")

    # Then its banner names the database, the queues and the workers
    banner = [f"started on {db_path.resolve()}", "queues: all", "workers: 3"]
    wait_for(lambda: all(part in proc.output() for part in banner), timeout=15,
             what=f"a banner with {banner}")

    # When a task succeeds and another fails
    done = app.greet("you")
    failed = app.boom()
    assert done.get(timeout=15) == "hello you"
    with pytest.raises(TaskError):
        failed.get(timeout=15)

    # Then each gets one log line with its name, id, outcome and duration
    # (after a timestamp and the level)
    duration = r"[\d.]+ m?s"
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    wait_for(lambda: re.search(rf"{stamp} INFO    \S*greet\[{done.id}\] done in {duration}$",
                               proc.output(), re.M),
             timeout=10, what="the log line of the task that succeeded")
    wait_for(lambda: re.search(rf"{stamp} ERROR   \S*boom\[{failed.id}\] failed in {duration}: "
                               "ValueError: no luck", proc.output(), re.M),
             timeout=10, what="the log line of the task that failed")
    assert proc.output().count(done.id) == 1
    assert proc.output().count(failed.id) == 1


def test_consume_with_queue_option_serves_only_those_queues(
        app: App, spawn: Callable[..., Proc]) -> None:
    # Given a consumer of the emails queue only, and a task waiting in each queue
    elsewhere = app.greet("default queue")
    proc = consume(spawn, "jobs", "-q", "emails", "--no-periodic")
    wait_for(lambda: "queues: emails" in proc.output(), timeout=15,
             what="the banner to name the emails queue")

    # When an email task is enqueued behind the other one
    mail = app.mail("someone@example.com")

    # Then only the email task runs
    assert mail.get(timeout=15) == "someone@example.com"
    assert elsewhere.status == "queued"
    assert elsewhere.id not in proc.output()


def test_task_with_an_unknown_name_fails_and_the_consumer_goes_on(
        app: App, spawn: Callable[..., Proc]) -> None:
    # Given a call of a task that the consumer's module does not define, then a good call
    @app.mq.task(name="ghost")
    def ghost() -> None:
        raise AssertionError("no consumer knows this task")

    unknown = ghost()
    after = app.greet("next")

    # When a consumer runs them in order
    proc = consume(spawn, "jobs", "-w", "1", "--no-periodic")

    # Then the unknown one fails, naming the problem, and the next one runs
    assert after.get(timeout=15) == "hello next"
    with pytest.raises(TaskError) as info:
        unknown.get(timeout=1)
    assert info.value.error_type == "UnknownTask"
    assert "'ghost'" in info.value.message
    assert unknown.status == "failed"
    assert proc.popen.poll() is None


def test_corrupt_payload_fails_its_task_and_the_consumer_goes_on(
        app: App, spawn: Callable[..., Proc], db_path: Path) -> None:
    # Given a stored call whose arguments were damaged, then a good call
    damaged = app.greet("damaged")
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE jobs SET payload = ? WHERE id = ?", (b"\x00{not json", damaged.id))
    after = app.greet("next")

    # When a consumer runs them in order
    proc = consume(spawn, "jobs", "-w", "1", "--no-periodic")

    # Then the damaged one fails, saying its arguments cannot be decoded, and the next one runs
    assert after.get(timeout=15) == "hello next"
    with pytest.raises(TaskError) as info:
        damaged.get(timeout=1)
    assert info.value.error_type == "PayloadError"
    assert "cannot be decoded" in info.value.message
    assert proc.popen.poll() is None


# -- status ------------------------------------------------------------------------------------


@LAUNCHERS
def test_status_prints_counts_by_queue_and_status(
        app: App, db_path: Path, launcher: list[str]) -> None:
    # Given two calls waiting in the default queue and one in emails
    app.greet("a")
    app.greet("b")
    app.mail("c")

    # When the status is asked for
    done = run_cli([*launcher, "status", "jobs"], app.root)

    # Then it names the database and has a row of counts per queue, one column per status
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(db_path.resolve()) in done.stdout
    lines = done.stdout.splitlines()
    header = next(line.split() for line in lines if line.split()[:1] == ["queue"])
    assert header == ["queue", *STATES]
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.split()[:1]
            and line.split()[0] in ("default", "emails")}
    queued = STATES.index("queued")
    assert rows["default"][queued] == "2"
    assert rows["emails"][queued] == "1"


def test_status_json_gives_counts_by_queue_and_status(app: App) -> None:
    # Given two calls waiting in the default queue and one in emails
    app.greet("a")
    app.greet("b")
    app.mail("c")

    # When the status is asked for as JSON
    done = run_cli([str(SCRIPT), "status", "jobs", "--json"], app.root)

    # Then it has the documented shape
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(done.stdout)
    assert set(status["queues"]) == {"default", "emails"}
    for counts in status["queues"].values():
        assert set(counts) <= set(STATES)
        assert all(isinstance(count, int) for count in counts.values())
    assert status["queues"]["default"]["queued"] == 2
    assert status["queues"]["emails"]["queued"] == 1
    assert status["queues"]["default"].get("done", 0) == 0


def test_status_shows_live_consumers_with_the_age_of_their_heartbeat(
        app: App, spawn: Callable[..., Proc]) -> None:
    # Given a running consumer
    proc = consume(spawn, "jobs", "-w", "2", "--no-periodic")

    # When the status is asked for, as text and as JSON
    text = run_cli([sys.executable, "-m", "minique", "status", "jobs"], app.root)
    as_json = run_cli([sys.executable, "-m", "minique", "status", "jobs", "--json"], app.root)

    # Then the consumer is listed as live, with how long ago it was last heard of
    assert text.returncode == 0, text.stdout + text.stderr
    assert "consumers: 1\n" in text.stdout
    assert re.search(rf"^  [0-9a-f]{{8}}  pid {proc.pid} on \S+  queues \*  2 workers  "
                     r"seen \d+ s ago$", text.stdout, re.M), text.stdout
    assert "not live" not in text.stdout
    (live,) = json.loads(as_json.stdout)["consumers"]
    assert (live["pid"], live["queues"], live["workers"], live["state"]) == (
        proc.pid, None, 2, "live")
    assert live["last_seen"].endswith("+00:00")
    assert 0 <= live["seen_ago"] < 60


def test_status_shows_a_killed_consumer_as_dead_not_live(
        app: App, spawn: Callable[..., Proc]) -> None:
    # Given a consumer killed with SIGKILL, so that it could not unregister,
    # and no other consumer running to notice
    proc = consume(spawn, "jobs", "--no-periodic")
    proc.kill()

    # When the status is asked for, at once
    text = run_cli([sys.executable, "-m", "minique", "status", "jobs"], app.root)
    as_json = run_cli([sys.executable, "-m", "minique", "status", "jobs", "--json"], app.root)

    # Then no consumer is live, and the killed one is listed as dead
    assert text.returncode == 0, text.stdout + text.stderr
    assert "consumers: 0\n" in text.stdout
    assert "not live: 1\n" in text.stdout
    assert re.search(rf"^  [0-9a-f]{{8}}  pid {proc.pid} on \S+ .* dead: its process is gone",
                     text.stdout, re.M), text.stdout
    report = json.loads(as_json.stdout)
    assert report["consumers"] == []
    assert [(c["pid"], c["state"]) for c in report["stale_consumers"]] == [(proc.pid, "dead")]


def test_status_total_row_adds_up_the_rows_above_while_calls_arrive(
        app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Given calls in two queues, and a producer that commits another call right
    # after every read of the counts
    app.greet("a")
    app.mail("b")
    read = app.mq.store.counts_by_queue

    def read_then_another_call_arrives() -> dict[str, dict[str, int]]:
        counts = read()
        app.mail("arrived meanwhile")
        return counts

    monkeypatch.setattr(app.mq.store, "counts_by_queue", read_then_another_call_arrives)

    # When the status is printed, as JSON and as text
    assert status(app.mq, as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert status(app.mq, as_json=False) == 0
    rows = {line.split()[0]: [int(n) for n in line.split()[1:]]
            for line in capsys.readouterr().out.splitlines()
            if line.split()[:1] and line.split()[0] in ("default", "emails", "(all)")}

    # Then the totals are those of the same read as the rows
    queued = STATES.index("queued")
    assert report["totals"]["queued"] == sum(q["queued"] for q in report["queues"].values()) == 2
    assert rows["(all)"] == [a + b for a, b in zip(rows["default"], rows["emails"], strict=True)]
    assert rows["(all)"][queued] == 3


@pytest.mark.parametrize("command", ["consume", "status"])
def test_target_raising_at_import_names_the_file_and_line(
        app_dir: Callable[[str, str], Path], tmp_path: Path, command: str) -> None:
    # Given a module that reads a setting missing from the environment when imported
    app_dir("settings_app", """
        import os

        SECRET = os.environ["MINIQUE_TEST_SECRET"]
    """)

    # When the command is run on it
    done = run_cli([sys.executable, "-m", "minique", command, "settings_app"], tmp_path)

    # Then its one line says where in the application it failed, and how to see more
    assert_refused(done, "KeyError: 'MINIQUE_TEST_SECRET'", "at settings_app.py, line 4",
                   "-v prints the traceback")

    # And with -v, the traceback comes first, then the same line
    verbose = run_cli([sys.executable, "-m", "minique", command, "settings_app", "-v"], tmp_path)
    assert verbose.returncode == 2
    assert verbose.stderr.startswith("Traceback (most recent call last):"), verbose.stderr
    assert 'SECRET = os.environ["MINIQUE_TEST_SECRET"]' in verbose.stderr
    assert verbose.stderr.splitlines()[-1] == done.stderr.strip().removesuffix(
        " (-v prints the traceback)")


def test_target_importing_a_missing_module_names_its_line(
        app_dir: Callable[[str, str], Path], tmp_path: Path) -> None:
    # Given a target whose name begins with the name of a module it fails to import
    app_dir("billing", "import bill\n")

    # When it is run, then the reason is that import, at its line (not a missing target)
    done = run_cli([sys.executable, "-m", "minique", "status", "billing"], tmp_path)
    assert_refused(done, "importing 'billing' failed at billing.py, line 1",
                   "No module named 'bill'")


def test_target_may_name_the_instance_with_module_colon_attr(
        app_dir: Callable[[str, str], Path], tmp_path: Path) -> None:
    # Given a module with two Minique instances on two files
    root = app_dir("two", """
        from minique import Minique

        mq = Minique("first.db")
        other = Minique("second.db")
    """)

    # When the target names one of them
    done = run_cli([sys.executable, "-m", "minique", "status", "two:other", "--json"], root)

    # Then that one is used
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["database"] == str((tmp_path / "second.db").resolve())


# -- refusals ------------------------------------------------------------------------------------


BAD_TARGETS = {
    "missing module": (None, "nosuchmodule", ["nosuchmodule"]),
    "module importing something missing": (
        "import nosuchdependency\n", "bad", ["ModuleNotFoundError", "nosuchdependency"]),
    "module raising at import": (
        "raise RuntimeError('boom at import')\n", "bad", ["RuntimeError", "boom at import"]),
    "module with a syntax error": ("def broken(:\n    pass\n", "bad", ["SyntaxError"]),
    "module with no Minique": ("x = 1\n", "bad", ["no Minique instance"]),
    "module with two Minique": (
        "from minique import Minique\nmq = Minique('a.db')\nmq2 = Minique('b.db')\n", "bad",
        ["several Minique instances", "mq", "mq2"]),
    "attribute that is missing": (
        "from minique import Minique\nmq = Minique('a.db')\n", "bad:nothing",
        ["bad.nothing", "not a Minique"]),
    "attribute that is not a Minique": (
        "from minique import Minique\nmq = Minique('a.db')\nx = 1\n", "bad:x",
        ["bad.x", "not a Minique"]),
}


@pytest.mark.parametrize("case", list(BAD_TARGETS))
@pytest.mark.parametrize("command", ["consume", "status"])
def test_bad_target_exits_2_with_one_line(
        app_dir: Callable[[str, str], Path], tmp_path: Path, case: str, command: str) -> None:
    # Given a target that does not lead to one Minique instance
    source, target, fragments = BAD_TARGETS[case]
    if source is not None:
        app_dir("bad", source)

    # When the command is run on it
    done = run_cli([sys.executable, "-m", "minique", command, target], tmp_path)

    # Then it refuses with status 2 and one line saying why
    assert_refused(done, *fragments)


def test_database_in_a_missing_folder_exits_2_with_one_line(
        app_dir: Callable[[str, str], Path]) -> None:
    # Given a Minique whose database file would be in a folder that does not exist
    root = app_dir("jobs", """
        from minique import Minique

        mq = Minique("missing/queue.db")
    """)

    # When a consumer is started on it
    done = run_cli([str(SCRIPT), "consume", "jobs"], root)

    # Then it refuses with status 2 and a clear line
    assert_refused(done, "missing", "does not exist")
    assert not (root / "missing").exists()


def without_root_override(db_path: Path) -> list[str]:
    """A command prefix under which ``db_path`` (mode 0444) is not writable, or skip the test.

    Root writes any file; without CAP_DAC_OVERRIDE it obeys the mode like anyone else.
    """
    if not os.access(db_path, os.W_OK):
        return []
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip(f"euid {os.geteuid()} may write a file with mode 0444")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, sys.executable, "-c",
                            f"import os, sys; sys.exit(os.access({str(db_path)!r}, os.W_OK))"],
                           capture_output=True, timeout=20)
    if probe.returncode != 0:
        pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE to make a file read-only")
    return prefix


def test_read_only_database_exits_2_with_one_line(app: App, db_path: Path) -> None:
    # Given a database file that this user may not write
    app.greet("stored")
    db_path.chmod(0o444)
    prefix = without_root_override(db_path)

    # When a consumer is started on it
    done = run_cli([*prefix, str(SCRIPT), "consume", "jobs"], app.root)

    # Then it refuses with status 2 and a clear line
    assert_refused(done, "read-only")


def test_logging_configured_by_the_application_is_kept(
        app_dir: Callable[[str, str], Path], spawn: Callable[..., Proc]) -> None:
    # Given a tasks module that sets up logging its own way
    app_dir("logged", """
        import logging
        from minique import Minique

        logging.basicConfig(format="APP %(levelname)s %(message)s", level=logging.INFO)
        mq = Minique("logged.db")
    """)

    # When the consumer starts
    proc = spawn("-m", "minique", "consume", "logged", "--no-periodic")

    # Then minique's lines come out in the application's format
    wait_for(lambda: "APP INFO minique consumer" in proc.output(), timeout=15,
             what="the banner in the application's log format")


def test_log_lines_read_as_the_standard_format_would_write_them() -> None:
    # Given records a few milliseconds apart, within a second and across one
    from minique.cli import _LineFormatter

    standard = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s")
    ours = _LineFormatter()
    records = []
    for created in (1_795_000_000.001, 1_795_000_000.5, 1_795_000_000.999, 1_795_000_001.25):
        record = logging.LogRecord("minique", logging.INFO, __file__, 1, "task %s", ("x",), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        records.append(record)
    # and one of each other level, and one with a traceback
    try:
        raise ValueError("boom")
    except ValueError:
        failure = sys.exc_info()
    for level, exc_info in ((logging.WARNING, None), (logging.ERROR, failure)):
        records.append(logging.LogRecord("minique", level, __file__, 1, "it went %s", ("wrong",),
                                         exc_info))

    # Then our formatter, which formats the date once a second, writes the same lines
    # and leaves the same attributes on the records
    assert [ours.format(r) for r in records] == [standard.format(r) for r in records]
    for record in records:
        stamp = record.asctime  # type: ignore[attr-defined]
        del record.asctime  # type: ignore[attr-defined]
        ours.format(record)
        assert record.asctime == stamp  # type: ignore[attr-defined]


def test_configuring_logging_leaves_the_logging_module_switches_alone() -> None:
    # Given a process whose application logs process, thread and caller
    script = textwrap.dedent("""
        import logging
        from minique.cli import configure_logging
        switches = ("logProcesses", "logThreads", "logMultiprocessing", "_srcfile")
        before = [getattr(logging, name) for name in switches]
        configure_logging(False)
        print([getattr(logging, name) for name in switches] == before)
    """)

    # When minique configures its own log lines there
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)

    # Then the records of the application's own handlers keep all of it
    assert done.stdout.strip() == "True"
