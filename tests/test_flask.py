"""The Flask integration, against real Flask apps: ``FlaskMinique`` and ``flask minique``.

Covers tasks declared before ``init_app``, the ``MINIQUE_*`` config keys (and
the refusal of unknown or missing ones), tasks running inside the app context
(in a consumer thread, in immediate mode from a view, and in real consumer
processes: ``flask --app ... minique consume`` with thread and process workers,
and ``minique consume module:mq``), ``flask minique status``, and that
``import minique`` imports neither Flask nor Django.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import ModuleType

import pytest
from conftest import Proc, wait_for
from flask import Flask, current_app, has_app_context, jsonify
from flask.typing import ResponseReturnValue
from minique.contrib.flask import FlaskMinique

from minique.consumer import Consumer
from minique.errors import ConfigurationError
from minique.hooks import Attempt


def make_app(db_path: Path, **config: object) -> Flask:
    app = Flask("shop")
    app.config.update(MINIQUE_DATABASE=str(db_path), GREETING="hello", **config)
    return app


def test_tasks_declared_before_init_app_run_once_it_is_called(
    db_path: Path, start_consumer: Callable[..., Consumer],
) -> None:
    # Given tasks declared on a FlaskMinique before any app exists
    mq = FlaskMinique()

    @mq.task
    def double(x: int) -> int:
        return 2 * x

    # When an app is created later and init_app binds the queue to it
    mq.init_app(make_app(db_path))
    start_consumer(mq, workers=1)

    # Then the task is known and runs
    assert double(21).get(timeout=10) == 42
    assert mq.path == db_path


def test_queue_used_before_init_app_says_to_call_it() -> None:
    # Given a FlaskMinique that no app has been given yet
    mq = FlaskMinique()

    @mq.task
    def ping() -> str:
        return "pong"

    # When a task is called, or the counts read, then the error says what to do
    with pytest.raises(ConfigurationError, match=r"init_app\(app\)"):
        ping()
    with pytest.raises(ConfigurationError, match=r"init_app\(app\)"):
        mq.counts()
    assert repr(mq) == "<FlaskMinique (not configured)>"


def test_minique_config_keys_set_the_queue_options(db_path: Path) -> None:
    # Given an app whose config sets Minique options through MINIQUE_* keys
    app = make_app(db_path, MINIQUE_IMMEDIATE=True, MINIQUE_SERIALIZER="pickle",
                   MINIQUE_RESULT_TTL=60, MINIQUE_LEASE=5, MINIQUE_TZ="UTC")

    # When the queue is created with the app in one step
    mq = FlaskMinique(app)

    @mq.task
    def as_set(*items: int) -> set[int]:
        return set(items)

    # Then each key set its option (a set result proves the pickle serializer)
    assert (mq.path, mq.immediate, mq.result_ttl, mq.lease, mq.tz) == (db_path, True, 60, 5, "UTC")
    assert as_set(1, 2, 2).get() == {1, 2}
    assert app.extensions["minique"] is mq


def test_immediate_false_from_the_environment_queues_calls(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the config read from FLASK_* variables, with immediate spelt as Python spells False
    monkeypatch.setenv("FLASK_MINIQUE_DATABASE", str(db_path))
    monkeypatch.setenv("FLASK_MINIQUE_IMMEDIATE", "False")
    app = Flask("shop")
    app.config.from_prefixed_env()
    assert app.config["MINIQUE_IMMEDIATE"] == "False"  # not JSON, so it stays a string

    # When the queue is configured from it
    mq = FlaskMinique(app)

    @mq.task
    def work() -> None: ...

    # Then immediate mode is off: a call is queued, not run in the caller
    assert mq.immediate is False
    assert work().status == "queued"


def test_immediate_that_is_not_a_boolean_word_is_refused(db_path: Path) -> None:
    app = make_app(db_path, MINIQUE_IMMEDIATE="nope")
    with pytest.raises(ConfigurationError, match="immediate='nope' is not a boolean"):
        FlaskMinique(app)


def test_unknown_minique_config_key_is_refused(db_path: Path) -> None:
    # Given a misspelt option key, when the app is initialised, then it is refused by name
    app = make_app(db_path, MINIQUE_IMEDIATE=True)
    with pytest.raises(ConfigurationError, match="MINIQUE_IMEDIATE.*MINIQUE_IMMEDIATE"):
        FlaskMinique(app)


def test_missing_database_key_is_refused() -> None:
    # Given an app without MINIQUE_DATABASE, when the app is initialised, then it says so
    with pytest.raises(ConfigurationError, match="MINIQUE_DATABASE"):
        FlaskMinique(Flask("shop"))


def test_task_runs_inside_a_fresh_app_context(
    db_path: Path, start_consumer: Callable[..., Consumer],
) -> None:
    # Given a task reading the app's config and extensions, and a teardown handler
    mq = FlaskMinique()
    app = make_app(db_path)
    app.extensions["greeter"] = "the greeter extension"
    torn_down: list[BaseException | None] = []
    app.teardown_appcontext(torn_down.append)

    @mq.task
    def greet(who: str) -> str:
        return f"{current_app.config['GREETING']} {who}, from {current_app.extensions['greeter']}"

    mq.init_app(app)
    start_consumer(mq, workers=1)

    # When a consumer thread runs it
    value = greet("ann").get(timeout=10)

    # Then current_app was this app, and its context was popped after the task
    assert value == "hello ann, from the greeter extension"
    wait_for(lambda: torn_down == [None], what="the app context to be torn down")


def test_hooks_added_after_init_app_run_inside_the_app_context(db_path: Path) -> None:
    # Given a hook of the user's (a database session, say) registered after init_app
    mq = FlaskMinique(make_app(db_path, MINIQUE_IMMEDIATE=True))
    seen: list[bool] = []

    @mq.around_task
    def record(attempt: Attempt) -> AbstractContextManager[None]:
        seen.append(has_app_context())
        return nullcontext()

    @mq.task
    def noop() -> None:
        return None

    # When a task runs, then the hook found the app context already pushed
    noop()
    assert seen == [True]


def test_immediate_mode_from_config_runs_a_call_from_a_view_at_once(db_path: Path) -> None:
    # Given an app in immediate mode, with a view that enqueues and one that shows a result
    mq = FlaskMinique()
    app = make_app(db_path, MINIQUE_IMMEDIATE=True)

    @mq.task
    def greet(who: str) -> str:
        return f"{current_app.config['GREETING']} {who}"

    @app.post("/greet/<who>")
    def start(who: str) -> ResponseReturnValue:
        return jsonify(id=greet(who).id), 202

    @app.get("/result/<id>")
    def show(id: str) -> ResponseReturnValue:
        result = mq.result(id)
        return jsonify(status=result.status, value=result.get(blocking=False))

    mq.init_app(app)
    client = app.test_client()

    # When the test client posts to the view
    task_id = client.post("/greet/bob").get_json()["id"]

    # Then the task already ran, inline, and its result is there
    assert client.get(f"/result/{task_id}").get_json() == {"status": "done",
                                                           "value": "hello bob"}


def test_init_app_with_another_app_points_the_queue_at_it(tmp_path: Path) -> None:
    # Given an app factory, called once per test as usual, and one FlaskMinique
    mq = FlaskMinique()

    @mq.task
    def app_name() -> str:
        return str(current_app.config["NAME"])

    def create_app(name: str) -> Flask:
        app = Flask(name)
        app.config.update(MINIQUE_DATABASE=str(tmp_path / f"{name}.db"), MINIQUE_IMMEDIATE=True,
                          NAME=name)
        mq.init_app(app)
        return app

    # When a second app is created
    create_app("first")
    create_app("second")

    # Then tasks run in the second app, on its database
    assert app_name().get() == "second"
    assert mq.path == tmp_path / "second.db"


WEBAPP = """
    import os

    from flask import Flask, current_app, jsonify

    from minique.contrib.flask import FlaskMinique

    mq = FlaskMinique()


    @mq.task
    def greet(who):
        return {"text": f"{current_app.config['GREETING']} {who}", "pid": os.getpid()}


    app = Flask(__name__)
    app.config["MINIQUE_DATABASE"] = os.path.join(os.path.dirname(__file__), "queue.db")
    app.config["GREETING"] = "bonjour"
    mq.init_app(app)


    @app.post("/greet/<who>")
    def start(who):
        return jsonify(id=greet(who).id), 202
"""


@pytest.fixture
def webapp(app_dir: Callable[[str, str], Path], monkeypatch: pytest.MonkeyPatch,
           ) -> Iterator[ModuleType]:
    """A Flask app module in tmp_path, imported here as the producer side."""
    root = app_dir("webapp", WEBAPP)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "webapp", raising=False)
    module = importlib.import_module("webapp")
    yield module
    sys.modules.pop("webapp", None)


FLASK_CONSUME = ["-m", "flask", "--app", "webapp", "minique", "consume", "-w", "2"]


@pytest.mark.parametrize(("command", "in_consumer_process"), [
    (FLASK_CONSUME, True),
    ([*FLASK_CONSUME, "-k", "process"], False),
    (["-m", "minique", "consume", "webapp:mq", "-w", "2"], True),
], ids=["flask minique consume", "flask minique consume -k process", "minique consume"])
def test_consumer_process_runs_a_task_a_view_enqueued_in_the_app_context(
    webapp: ModuleType, spawn: Callable[..., Proc], command: list[str],
    in_consumer_process: bool,
) -> None:
    # Given a real consumer process for the app
    consumer = spawn(*command)

    # When a request to the app's view enqueues a task
    response = webapp.app.test_client().post("/greet/ann")
    assert response.status_code == 202

    # Then the consumer runs it with the app's config (in a worker process with -k process)
    value = webapp.mq.result(response.get_json()["id"]).get(timeout=30)
    assert value["text"] == "bonjour ann"
    assert (value["pid"] == consumer.pid) is in_consumer_process

    # And it stops cleanly on SIGTERM
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(30) == 0
    assert "1 tasks: webapp.greet" in consumer.output()


def test_flask_minique_status_prints_the_counts(webapp: ModuleType) -> None:
    # Given two calls waiting in the app's queue
    webapp.greet("ann")
    webapp.greet("bob")

    # When `flask minique status --json` runs
    result = webapp.app.test_cli_runner().invoke(args=["minique", "status", "--json"])

    # Then it shows them
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["totals"]["queued"] == 2
    assert status["database"] == str(Path(str(webapp.__file__)).parent / "queue.db")


def test_flask_minique_consume_refuses_zero_workers(webapp: ModuleType) -> None:
    # When the consumer is asked for no workers, then it exits with status 2 and says why
    result = webapp.app.test_cli_runner().invoke(args=["minique", "consume", "-w", "0"])
    assert result.exit_code == 2
    assert "--workers" in result.output


FACTORY = """
    import os

    from flask import Flask

    from minique.contrib.flask import FlaskMinique

    mq = FlaskMinique()


    @mq.task
    def ping():
        return "pong"


    def create_app():
        app = Flask(__name__)
        app.config["MINIQUE_DATABASE"] = os.path.join(os.path.dirname(__file__), "queue.db")
        mq.init_app(app)
        return app
"""


@pytest.mark.parametrize("target", ["factory:create_app()", "factory"])
def test_flask_minique_consume_refuses_process_workers_for_an_app_factory(
    app_dir: Callable[[str, str], Path], tmp_path: Path, target: str,
) -> None:
    # Given an app made by a factory, named (create_app()) or found by Flask (create_app)
    app_dir("factory", FACTORY)

    # When a consumer with worker processes is asked for
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", target, "minique", "consume", "-k", "process"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)

    # Then it refuses at once, with status 2 and one line saying why and what to do
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("minique: -k process cannot run the tasks of the app 'factory': "
                           "it is made by an app factory"), line
    assert "Use thread workers" in line


def test_flask_minique_consume_runs_an_app_factory_with_thread_workers(
    app_dir: Callable[[str, str], Path], spawn: Callable[..., Proc],
) -> None:
    # Given an app made by a factory, when a consumer with thread workers is started
    app_dir("factory", FACTORY)
    consumer = spawn("-m", "flask", "--app", "factory:create_app()", "minique", "consume")

    # Then it runs, and stops cleanly on SIGTERM
    wait_for(lambda: "1 tasks: factory.ping" in consumer.output(), timeout=15,
             what="the consumer's banner")
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(30) == 0


def test_flask_minique_consume_takes_the_options_of_minique_consume(
        webapp: ModuleType) -> None:
    # When `flask minique consume --help` runs, then it lists the options of `minique consume`
    flask_help = webapp.app.test_cli_runner().invoke(args=["minique", "consume", "--help"])
    cli_help = subprocess.run([sys.executable, "-m", "minique", "consume", "--help"],
                              capture_output=True, text=True, timeout=30, check=True).stdout
    assert flask_help.exit_code == 0, flask_help.output
    assert option_names(flask_help.output) == option_names(cli_help.split("options:")[1])


def option_names(help_text: str) -> list[str]:
    """The option names (-w, --workers...) a --help text lists."""
    return sorted(set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", help_text)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_fork_resets_every_queue_though_one_has_no_app_yet(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a FlaskMinique no app was given yet, beside one whose consumer in this
    # process added its wake-up
    unconfigured = FlaskMinique()
    configured = FlaskMinique(make_app(db_path))
    woken: list[int] = []
    configured.add_waker(lambda: woken.append(os.getpid()))
    # (an exception in a fork hook is only reported, as unraisable)
    problems: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: problems.append(repr(u.exc_value)))
    out = tmp_path / "child.json"

    # When the process forks, and the child commits work through the configured queue
    pid = os.fork()
    if pid == 0:
        try:
            configured.wake_consumers()
            out.write_text(json.dumps({"problems": problems, "woken": woken}))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)

    # Then the hook went through every queue: the parent's consumer was not called in the child
    assert json.loads(out.read_text()) == {"problems": [], "woken": []}
    assert repr(unconfigured) == "<FlaskMinique (not configured)>"


def test_importing_minique_imports_neither_flask_nor_django() -> None:
    # Given a fresh interpreter, when minique and its command line are imported
    code = ("import sys, minique, minique.cli, minique.consumer, minique.contrib; "
            "print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('flask', 'django', 'click', 'werkzeug')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout

    # Then no web framework was imported
    assert out.strip() == "[]"
