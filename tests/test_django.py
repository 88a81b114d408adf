"""The Django integration, against a real project (tests/djangoproj) with pytest-django.

Covers the app building ``mq`` from ``settings.MINIQUE`` and discovering the
``tasks`` module of every installed app, ``ImproperlyConfigured`` for a
missing or wrong setting, ``task.on_commit`` on commit and on rollback,
database connections closed around each task (and left alone inside the
caller's transaction in immediate mode), the ``minique_status`` and
``minique_consume`` commands through ``call_command``, and a real ``manage.py
minique_consume`` process running a task that writes through the ORM.

Django is set up when this module is imported, with the settings module
``djangoproj.settings`` and its files in a temporary folder; other test
modules never import Django, so they are not affected by it.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

DATA = Path(tempfile.mkdtemp(prefix="minique-djangoproj-"))
atexit.register(shutil.rmtree, DATA, True)
os.environ["DJANGOPROJ_DATA"] = str(DATA)
os.environ["DJANGO_SETTINGS_MODULE"] = "djangoproj.settings"

import django  # noqa: E402

django.setup()

import pytest  # noqa: E402
from conftest import Proc  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import CommandError, call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from djangoproj.notes.models import Note  # noqa: E402
from djangoproj.notes.tasks import connection_was_closed, write_note  # noqa: E402
from minique.contrib.django import DjangoMinique, mq  # noqa: E402

from minique import SerializationError  # noqa: E402

MANAGE = Path(__file__).resolve().parent / "djangoproj" / "manage.py"


@pytest.fixture
def queue(settings: Any, tmp_path: Path) -> DjangoMinique:
    """The project's ``mq``, on a fresh queue database for this test (via settings.MINIQUE)."""
    settings.MINIQUE = {"database": tmp_path / "queue.db"}
    return mq


def test_tasks_modules_of_installed_apps_are_discovered_at_startup() -> None:
    # Given the project set up by django.setup() (this module never imports mailer.tasks)
    # Then the tasks of both apps are registered on the queue built from settings.MINIQUE
    assert "djangoproj.mailer.tasks" in sys.modules
    assert {"djangoproj.notes.tasks.write_note", "djangoproj.mailer.tasks.send_welcome",
            "djangoproj.mailer.tasks.nightly_digest"} <= set(mq.tasks)
    assert mq.path == DATA / "minique.db"
    assert mq.periodic_tasks.keys() == {"djangoproj.mailer.tasks.nightly_digest"}


def test_minique_setting_gives_every_queue_option(settings: Any, tmp_path: Path) -> None:
    # When settings.MINIQUE sets options besides the database
    settings.MINIQUE = {"database": tmp_path / "q.db", "immediate": True, "lease": 5,
                        "result_ttl": None, "tz": "UTC"}

    # Then mq follows them
    assert (mq.path, mq.immediate, mq.lease, mq.result_ttl, mq.tz) == (
        tmp_path / "q.db", True, 5.0, None, "UTC")


def test_minique_setting_immediate_as_the_string_false_is_off(settings: Any,
                                                              tmp_path: Path) -> None:
    # When settings.MINIQUE spells immediate as a string, as one read from the environment is
    settings.MINIQUE = {"database": tmp_path / "q.db", "immediate": "False"}

    # Then immediate mode is off
    assert mq.immediate is False


@pytest.mark.parametrize(("value", "message"), [
    ({"database": "queue.db", "immediate": "nope"}, "immediate='nope' is not a boolean"),
    ("queue.db", "must be a dict"),
    ({"immediate": True}, "has no 'database'"),
    ({"database": "/no/such/folder/queue.db"}, "folder /no/such/folder does not exist"),
    ({"database": "queue.db", "imediate": True}, "unknown minique option.*imediate"),
    ({"database": "queue.db", "serializer": "xml"}, "unknown serializer 'xml'"),
])
def test_wrong_minique_setting_is_improperly_configured(
    settings: Any, value: object, message: str,
) -> None:
    # When settings.MINIQUE is set to something wrong, then Django's error says what
    with pytest.raises(ImproperlyConfigured, match=message):
        settings.MINIQUE = value

    # And the queue keeps its working configuration
    assert mq.path == DATA / "minique.db"


def test_missing_minique_setting_stops_django_at_startup() -> None:
    # Given settings without MINIQUE, when the project starts (here: manage.py check)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "djangoproj.settings_without_minique"}
    done = subprocess.run([sys.executable, str(MANAGE), "check"], capture_output=True,
                          text=True, env=env, timeout=60)

    # Then it fails with ImproperlyConfigured naming the setting and an example
    assert done.returncode != 0
    assert "ImproperlyConfigured: settings.MINIQUE is not set" in done.stderr
    assert "MINIQUE = {'database': BASE_DIR / 'minique.db'}" in done.stderr


@pytest.mark.django_db(transaction=True)
def test_on_commit_enqueues_when_the_transaction_commits(queue: DjangoMinique) -> None:
    # Given a call made with on_commit inside transaction.atomic()
    with transaction.atomic():
        Note.objects.create(text="first")
        write_note.on_commit("after the first note")
        # Then it is not enqueued while the transaction is open
        assert queue.counts()["queued"] == 0

    # And it is enqueued once the transaction commits
    assert queue.counts()["queued"] == 1


@pytest.mark.django_db(transaction=True)
def test_on_commit_enqueues_nothing_when_the_transaction_rolls_back(
    queue: DjangoMinique,
) -> None:
    # Given a call made with on_commit in a transaction that then fails
    with pytest.raises(RuntimeError), transaction.atomic():
        Note.objects.create(text="lost")
        write_note.on_commit("never")
        raise RuntimeError("rolled back")

    # Then nothing was enqueued, just as the note was not stored
    assert queue.counts()["queued"] == 0
    assert not Note.objects.exists()


def test_on_commit_refuses_arguments_it_cannot_store_at_once(queue: DjangoMinique) -> None:
    # When on_commit is given an argument the serializer cannot store, then the caller hears
    with pytest.raises(SerializationError):
        write_note.on_commit(object())  # type: ignore[arg-type]


def test_on_commit_refuses_a_call_the_function_cannot_take_at_once(
        queue: DjangoMinique) -> None:
    # When on_commit is called without the task's argument, then the caller hears at once,
    # not when the transaction commits
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'text'"):
        write_note.on_commit()  # type: ignore[call-arg]


@pytest.mark.django_db
def test_immediate_task_runs_inside_the_callers_transaction(settings: Any, tmp_path: Path) -> None:
    # Given immediate mode, and this test inside pytest-django's transaction
    settings.MINIQUE = {"database": tmp_path / "queue.db", "immediate": True}

    # When a task that writes through the ORM is called
    note_id = write_note("inline").get()

    # Then it ran in the caller's transaction, which is still usable
    assert Note.objects.get(pk=note_id).text == "inline"
    assert connection.in_atomic_block


@pytest.mark.django_db(transaction=True)
def test_connections_are_closed_around_each_task(queue: DjangoMinique) -> None:
    # Given one worker thread, so that both calls run in the same thread
    with queue.consumer(workers=1):
        # When two tasks that query the database run one after the other
        first, second = connection_was_closed(), connection_was_closed()

        # Then the connection the first one opened was closed before the second began
        assert first.get(timeout=10) is True
        assert second.get(timeout=10) is True


def test_minique_status_command_shows_the_counts(queue: DjangoMinique) -> None:
    # Given two calls of a task of the mailer app waiting
    from djangoproj.mailer.tasks import send_welcome

    send_welcome("ann@example.com")
    send_welcome("bob@example.com")

    # When `manage.py minique_status --json` runs
    out = StringIO()
    call_command("minique_status", "--json", stdout=out)

    # Then it shows them by queue, with the periodic task
    status = json.loads(out.getvalue())
    assert status["queues"]["emails"]["queued"] == 2
    assert [p["name"] for p in status["periodic"]] == ["djangoproj.mailer.tasks.nightly_digest"]


def test_minique_status_command_prints_one_line_per_row(queue: DjangoMinique) -> None:
    out = StringIO()
    call_command("minique_status", stdout=out)

    # Django's OutputWrapper must not double the line ends: no blank lines
    assert "\n\n" not in out.getvalue()
    assert out.getvalue().splitlines()[0].startswith("database: ")


@pytest.mark.parametrize(("args", "message"), [
    (["-w", "0"], "--workers must be at least 1"),
    (["-k", "process"], "-k process is not supported with Django"),
])
def test_minique_consume_command_refuses_what_it_cannot_run(
    queue: DjangoMinique, args: list[str], message: str,
) -> None:
    # When the consume command is given options it cannot honour, then it says so (status 2)
    with pytest.raises(CommandError, match=message) as raised:
        call_command("minique_consume", *args)
    assert raised.value.returncode == 2


@pytest.mark.django_db(transaction=True)
def test_manage_py_minique_consume_runs_a_task_that_writes_through_the_orm(
    queue: DjangoMinique, spawn: Callable[..., Proc],
) -> None:
    # Given a real `manage.py minique_consume` on this test's database and queue
    consumer = spawn(str(MANAGE), "minique_consume", "-w", "2", env={
        "DJANGOPROJ_DB": str(connection.settings_dict["NAME"]),
        "DJANGOPROJ_QUEUE": str(queue.path),
    })

    # When a task that writes a note is enqueued here
    note_id = write_note("from the consumer").get(timeout=30)

    # Then the consumer process wrote the note, which this process reads
    note = Note.objects.get(pk=note_id)
    assert (note.text, note.written_by_pid) == ("from the consumer", consumer.pid)

    # And the consumer knew every app's tasks, and stops cleanly on SIGTERM
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(30) == 0
    assert "djangoproj.mailer.tasks.send_welcome" in consumer.output()
