"""The commands that operate a queue: jobs, show, retry, revoke, restore, purge, pause,
resume and consumers, with their exit statuses.

Every command runs on a real SQLite file and on a fresh PostgreSQL schema (the
``pg_dsn`` fixture of conftest.py; skipped without a server, outside CI). Most
run ``minique.cli.main`` in this process on the database itself, the file's
path or the server's URL (the operator's TARGET when no application code is at
hand); the module target runs as a real process. Bad input must say what is
wrong, exit 1 or 2, and change nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import ROOT, PostgresServer, wait_for

from minique import Minique
from minique.cli import main
from minique.cli_operations import ago
from minique.consumer import Consumer


@pytest.fixture
def mq(location: str) -> Minique:
    """A queue on a fresh database of each engine."""
    return Minique(location)


class Ran:
    def __init__(self, status: int, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(mq: Minique, location: str,
        capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """Run ``minique COMMAND <the database> ARGS...`` here; its status and output."""
    mq.counts()  # the database exists: the commands never create one

    def run(command: str, *args: str) -> Ran:
        capsys.readouterr()
        try:
            status = main([command, location, *args])
        except SystemExit as exc:  # argparse refusing the arguments
            status = int(exc.code or 0)
        captured = capsys.readouterr()
        return Ran(status, captured.out, captured.err)

    return run


@pytest.fixture
def calls(mq: Minique) -> dict[str, str]:
    """Calls in several statuses: failed (after 2 attempts), done, queued, revoked."""
    mq.immediate = True

    @mq.task(name="boom", retries=1)
    def boom(x: int) -> None:
        raise ValueError(f"no luck with {x}\nand a second line")

    @mq.task(name="add", queue="maths")
    def add(a: int, b: int) -> int:
        return a + b

    failed, done = boom(1).id, add(1, 2).id
    mq.immediate = False
    queued = add(3, 4).id
    revoked = add(5, 6)
    revoked.revoke()
    return {"failed": failed, "done": done, "queued": queued, "revoked": revoked.id}


def snapshot(location: str) -> tuple[list[tuple[Any, ...]], set[str]]:
    """Every call (status, attempts, times, error, history) and the paused queues, as
    another program reads them through its own connection."""
    reader = Minique(location)
    try:
        jobs = reader.jobs(limit=10_000)
        paused = reader.paused()
    finally:
        reader.store.close()
    assert len(jobs) < 10_000, "the snapshot must see every call"
    calls = sorted(((j.id, j.status, j.attempts, j.max_attempts, j.eta, j.expires, j.started_at,
                     j.finished_at, j.consumer,
                     None if j.error is None else (j.error.error_type, j.error.message),
                     [(a.number, a.outcome, a.started_at, a.finished_at) for a in j.history])
                    for j in jobs), key=lambda call: call[0])
    return calls, paused


# -- jobs ---------------------------------------------------------------------------------------


def test_jobs_lists_calls_newest_first_in_aligned_columns(
        cli: Callable[..., Ran], calls: dict[str, str]) -> None:
    ran = cli("jobs")

    assert ran.status == 0, ran.err
    header, *rows = ran.out.splitlines()
    assert header.split() == ["ID", "TASK", "QUEUE", "STATUS", "TRIES", "ENQUEUED", "ENDED",
                              "ERROR"]
    assert [r.split()[0] for r in rows] == [calls["revoked"], calls["queued"], calls["done"],
                                           calls["failed"]]
    # aligned: every row's status starts in the header's column
    column = header.index("STATUS")
    assert [r[column:].split()[0] for r in rows] == ["revoked", "queued", "done", "failed"]
    failed = rows[-1]
    assert "2/2" in failed and "now" in failed
    assert failed.endswith("ValueError: no luck with 1 and a second line")  # one line


def test_jobs_filters_by_status_queue_and_task_and_limits(
        cli: Callable[..., Ran], calls: dict[str, str]) -> None:
    def ids(*args: str) -> list[str]:
        ran = cli("jobs", "--json", *args)
        assert ran.status == 0, ran.err
        return [job["id"] for job in ran.json()]

    assert ids("--status", "failed") == [calls["failed"]]
    assert ids("--status", "done,queued") == [calls["queued"], calls["done"]]
    assert ids("--status", "done", "--status", "revoked") == [calls["revoked"], calls["done"]]
    assert ids("--queue", "maths", "--limit", "2") == [calls["revoked"], calls["queued"]]
    assert ids("--task", "boom") == [calls["failed"]]
    assert cli("jobs", "--task", "nothing").out == "no calls\n"


def test_jobs_json_has_every_field_of_a_job(
        cli: Callable[..., Ran], calls: dict[str, str]) -> None:
    (failed,) = cli("jobs", "--json", "--status", "failed").json()

    assert set(failed) >= {"id", "task", "queue", "priority", "status", "args", "kwargs", "key",
                           "enqueued_at", "eta", "started_at", "finished_at", "attempts",
                           "max_attempts", "error", "consumer", "progress", "result", "history"}
    assert (failed["args"], failed["attempts"], failed["max_attempts"]) == ([1], 2, 2)
    assert dt.datetime.fromisoformat(failed["enqueued_at"]).tzinfo is not None
    assert failed["error"]["type"] == "ValueError"
    assert "Traceback" in failed["error"]["traceback"]
    assert [(a["number"], a["outcome"]) for a in failed["history"]] == [(1, "retry"),
                                                                        (2, "failed")]


def test_jobs_with_a_status_that_does_not_exist_exits_2(
        cli: Callable[..., Ran], calls: dict[str, str]) -> None:
    ran = cli("jobs", "--status", "finished")

    assert ran.status == 2
    assert "'finished' is not a status; the statuses are queued" in ran.err


def test_text_fits_the_terminal(cli: Callable[..., Ran], calls: dict[str, str],
                                mq: Minique, monkeypatch: pytest.MonkeyPatch) -> None:
    mq.immediate = True

    @mq.task(name="long")
    def long() -> None:
        raise RuntimeError("x" * 500)

    long()
    monkeypatch.setenv("COLUMNS", "100")

    lines = cli("jobs").out.splitlines()

    assert max(len(line) for line in lines) <= 100
    assert lines[1].endswith("…")


def test_ages_read_as_people_say_them() -> None:
    now = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)

    assert ago(now, now) == "now"
    assert ago(now - dt.timedelta(seconds=42), now) == "42 s ago"
    assert ago(now - dt.timedelta(minutes=3), now) == "3 min ago"
    assert ago(now - dt.timedelta(hours=5), now) == "5 h ago"
    assert ago(now - dt.timedelta(days=9), now) == "9 days ago"
    assert ago(now + dt.timedelta(minutes=10), now) == "in 10 min"


# -- show ----------------------------------------------------------------------------------------


def test_show_prints_the_arguments_the_error_in_full_and_every_attempt(
        cli: Callable[..., Ran], calls: dict[str, str]) -> None:
    ran = cli("show", calls["failed"])

    assert ran.status == 0, ran.err
    assert f"call       {calls['failed']}  boom  (queue default, priority 0)" in ran.out
    assert "status     failed, attempt 2 of 2" in ran.out
    assert "args       (1,)" in ran.out
    assert "error      ValueError: no luck with 1\nand a second line" in ran.out  # in full
    assert 'raise ValueError(f"no luck with {x}\\nand a second line")' in ran.out
    history = ran.out[ran.out.index("history"):].splitlines()
    assert history[0] == "history   2 attempt(s) recorded"
    assert history[2].split()[:3] == ["1", "retry", "now"]
    assert history[3].split()[:3] == ["2", "failed", "now"]


def test_show_of_a_done_call_prints_its_result(
        cli: Callable[..., Ran], calls: dict[str, str]) -> None:
    ran = cli("show", calls["done"])

    assert "result     3" in ran.out
    shown = cli("show", calls["done"], "--json").json()
    assert (shown["id"], shown["result"], shown["status"]) == (calls["done"], 3, "done")


@pytest.mark.parametrize("job_id", ["12345", "not-an-id"])
def test_show_of_an_unknown_id_exits_1(cli: Callable[..., Ran], calls: dict[str, str],
                                       job_id: str) -> None:
    ran = cli("show", job_id)

    assert ran.status == 1
    assert job_id in ran.err and ran.out == ""


# -- retry ---------------------------------------------------------------------------------------


def test_retry_queues_failed_and_revoked_calls_again(
        cli: Callable[..., Ran], calls: dict[str, str], mq: Minique) -> None:
    ran = cli("retry", calls["failed"], calls["revoked"])

    assert ran.status == 0, ran.err
    assert f"queued again: {calls['failed']} (boom, was failed)" in ran.out
    assert mq.result(calls["failed"]).status == mq.result(calls["revoked"]).status == "queued"


def test_retry_of_a_call_that_did_not_fail_exits_1_and_changes_nothing(
        cli: Callable[..., Ran], calls: dict[str, str], location: str) -> None:
    before = snapshot(location)

    ran = cli("retry", calls["failed"], calls["done"])

    assert ran.status == 1
    assert f"call {calls['done']} (add) cannot be retried: it is done" in ran.err
    assert "nothing was retried" in ran.err
    assert snapshot(location) == before


def test_retry_of_an_unknown_id_exits_1_and_changes_nothing(
        cli: Callable[..., Ran], calls: dict[str, str], location: str) -> None:
    before = snapshot(location)

    ran = cli("retry", calls["failed"], "999")

    assert ran.status == 1
    assert "no call with id 999" in ran.err and "nothing was changed" in ran.err
    assert snapshot(location) == before


def test_retry_failed_retries_every_failed_call_of_a_queue(
        cli: Callable[..., Ran], calls: dict[str, str], mq: Minique) -> None:
    assert cli("retry", "--failed", "--queue", "maths").out == "queued again 0 failed call(s)\n"

    ran = cli("retry", "--failed", "--task", "boom")

    assert (ran.status, ran.out) == (0, "queued again 1 failed call(s)\n")
    assert mq.result(calls["failed"]).status == "queued"


@pytest.mark.parametrize("args", [[], ["--failed", "1"], ["1", "--queue", "q"]])
def test_retry_with_arguments_that_do_not_go_together_exits_2(
        cli: Callable[..., Ran], calls: dict[str, str], args: list[str]) -> None:
    ran = cli("retry", *args)

    assert ran.status == 2
    assert "minique" in ran.err and "Traceback" not in ran.err


# -- revoke and restore --------------------------------------------------------------------------


def test_revoke_stops_calls_that_have_not_started(
        cli: Callable[..., Ran], calls: dict[str, str], mq: Minique) -> None:
    ran = cli("revoke", calls["queued"])

    assert (ran.status, ran.out) == (0, f"revoked: {calls['queued']} (add)\n")
    assert mq.result(calls["queued"]).status == "revoked"


def test_revoke_of_a_finished_call_exits_1_and_changes_nothing(
        cli: Callable[..., Ran], calls: dict[str, str], location: str) -> None:
    before = snapshot(location)

    ran = cli("revoke", calls["queued"], calls["done"])

    assert ran.status == 1
    assert "cannot be revoked: it is done" in ran.err
    assert snapshot(location) == before


def test_revoke_task_and_restore_task(
        cli: Callable[..., Ran], calls: dict[str, str], mq: Minique) -> None:
    ran = cli("revoke", "--task", "add")

    assert ran.status == 0
    assert ran.out.startswith("revoked 1 call(s) of add that had not started")
    assert mq.result(calls["queued"]).status == "revoked"
    assert cli("restore", "--task", "add").out.startswith("queued again 1 call(s) of add")
    assert mq.result(calls["queued"]).status == "queued"
    assert mq.result(calls["revoked"]).status == "revoked"  # revoked on its own


# -- purge --------------------------------------------------------------------------------------


def test_purge_deletes_calls_of_a_status_older_than_an_age(
        cli: Callable[..., Ran], calls: dict[str, str], mq: Minique) -> None:
    assert cli("purge", "--status", "done", "--older-than", "1h").out == "deleted 0 call(s)\n"

    ran = cli("purge", "--status", "done,failed", "--older-than", "0s")

    assert (ran.status, ran.out) == (0, "deleted 2 call(s)\n")
    assert [j.id for j in mq.jobs()] == [calls["revoked"], calls["queued"]]


@pytest.mark.parametrize("args, message", [
    (["--status", "done", "--older-than", "3 weeks"], "is not an age"),
    (["--status", "old"], "'old' is not a status"),
    (["--status", "running"], "running calls cannot be purged"),
    ([], "give --status"),
])
def test_purge_with_bad_arguments_exits_2_and_deletes_nothing(
        cli: Callable[..., Ran], calls: dict[str, str], location: str, args: list[str],
        message: str) -> None:
    before = snapshot(location)

    ran = cli("purge", *args)

    assert ran.status == 2
    assert message in ran.err
    assert snapshot(location) == before


# -- pause, resume, consumers -------------------------------------------------------------------


def test_pause_and_resume_queues(cli: Callable[..., Ran], mq: Minique) -> None:
    ran = cli("pause", "emails", "reports")

    assert (ran.status, ran.out) == (0, "paused queues: emails, reports\n")
    assert mq.paused() == {"emails", "reports"}
    assert cli("resume", "emails").out == "paused queues: reports\n"
    assert mq.paused() == {"reports"}


def test_consumers_shows_each_live_consumer_and_what_it_runs(
        cli: Callable[..., Ran], mq: Minique, start_consumer: Callable[..., Consumer],
        gate: threading.Event) -> None:
    @mq.task(name="hold")
    def hold() -> None:
        gate.wait(10)

    assert cli("consumers").out == "no live consumers\n"
    consumer = start_consumer(mq, workers=3, queues=["default", "emails"])
    call = hold()
    wait_for(lambda: call.status == "running", what="the call to start")

    text = cli("consumers").out.splitlines()
    (shown,) = cli("consumers", "--json").json()["consumers"]

    assert text[0].split() == ["ID", "HOST", "PID", "QUEUES", "WORKERS", "STARTED", "SEEN",
                               "STATE", "RUNNING"]
    assert text[1].split()[0] == consumer.id[:12]
    assert text[1].endswith(call.id)
    assert (shown["id"], shown["pid"], shown["queues"], shown["workers"], shown["running"],
            shown["state"]) == (consumer.id, os.getpid(), ["default", "emails"], 3, [call.id],
                                "live")
    assert dt.datetime.fromisoformat(shown["last_seen"]).tzinfo is not None


# -- targets ---------------------------------------------------------------------------------------


def test_a_database_file_that_does_not_exist_exits_2_and_is_not_created(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # SQLite only: about the file itself (the next test is PostgreSQL's)
    missing = tmp_path / "missing.db"

    assert main(["jobs", str(missing)]) == 2

    assert "no database file" in capsys.readouterr().err
    assert not missing.exists()


def test_a_server_database_that_does_not_exist_exits_2_and_is_not_created(
        postgres_server: PostgresServer, capsys: pytest.CaptureFixture[str]) -> None:
    # Given the URL of a database the server does not have
    missing = urlunsplit(urlsplit(postgres_server.dsn)._replace(path="/minique_no_such_db"))

    # When an operator lists its calls
    status = main(["jobs", missing])

    # Then the reason, not a traceback, exit 2; and the database is not created
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("minique: cannot open the PostgreSQL database") and "Traceback" not in err
    assert 'database "minique_no_such_db" does not exist' in err
    import psycopg

    with psycopg.connect(postgres_server.dsn, autocommit=True, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'minique_no_such_db'"
                            ).fetchall() == []


def test_commands_take_the_application_module_as_target(tmp_path: Path, location: str) -> None:
    (tmp_path / "ops_app.py").write_text(textwrap.dedent(f"""
        from minique import Minique
        mq = Minique({location!r})

        @mq.task(name="add")
        def add(a, b):
            return a + b
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]))

    def minique(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "minique", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=30)

    producer = Minique(location)

    @producer.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    call = add(2, 3)

    listed = minique("jobs", "ops_app", "--json")
    paused = minique("pause", "ops_app:mq", "default")
    unknown = minique("show", "ops_app", "1")
    status = minique("status", location, "--json")

    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)] == [call.id]
    assert (paused.returncode, producer.paused()) == (0, {"default"})
    assert unknown.returncode == 1 and "no call with id 1" in unknown.stderr
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["queues"]["default"]["queued"] == 1


@pytest.mark.parametrize("command", ["show", "retry", "revoke"])
def test_an_id_that_is_not_a_call_id_is_quoted_whole_in_the_message(
        cli: Callable[..., Ran], command: str) -> None:
    # When an operator gives something that is no call id
    ran = cli(command, "abc")

    # Then the message quotes it as given (its quotes are not cut off), exit 1
    assert ran.status == 1
    assert "'abc' is not a minique call id" in ran.err
