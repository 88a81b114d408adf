"""Flask integration: ``FlaskMinique``, configured from ``MINIQUE_*`` keys, tasks in an app context.

::

    mq = FlaskMinique()                 # tasks may be declared before the app exists
    app = Flask(__name__)
    app.config["MINIQUE_DATABASE"] = "app.db"
    mq.init_app(app)

Then ``flask --app APP minique consume`` runs a consumer and ``flask --app APP
minique status`` shows counts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from flask.ctx import AppContext

from minique.cli import consume, consume_parser, status
from minique.errors import ConfigurationError
from minique.hooks import Attempt

from .deferred import OPTIONS, DeferredMinique

__all__ = ["FlaskMinique"]

PREFIX = "MINIQUE_"
DATABASE_KEY = "MINIQUE_DATABASE"
# The config key of each Minique option: MINIQUE_IMMEDIATE, MINIQUE_RESULT_TTL...
OPTION_KEYS = {f"{PREFIX}{name.upper()}": name for name in OPTIONS}


class FlaskMinique(DeferredMinique):
    """A ``Minique`` configured from a Flask app's ``MINIQUE_*`` config keys.

    Tasks may be declared before ``init_app``; they run inside
    ``app.app_context()``, in the consumer and in immediate mode alike. One
    ``FlaskMinique`` serves one app at a time: ``init_app`` with another app
    (an app factory called again in tests) points it at that app's database.
    """

    unconfigured_hint = "call mq.init_app(app) first (or create it as FlaskMinique(app))"

    def __init__(self, app: Flask | None = None) -> None:
        super().__init__()
        self.app: Flask | None = None
        # Registered first, so that hooks added later run inside the app context.
        self.around_task(self._app_context)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Configure the queue from ``app.config`` and add ``flask minique`` to the app's CLI.

        ``MINIQUE_DATABASE`` (the SQLite file) is required; ``MINIQUE_<OPTION>``
        sets any other option of ``Minique``. Raises ``ConfigurationError``
        for a missing database, an unknown ``MINIQUE_*`` key or a bad value.
        """
        path, options = options_from_config(app.config)
        self.configure(path, **options)
        self.app = app
        app.extensions["minique"] = self
        app.cli.add_command(minique_commands)

    def _app_context(self, attempt: Attempt) -> AppContext:
        assert self.app is not None  # tasks only run once configured, i.e. after init_app
        return self.app.app_context()


def options_from_config(config: Mapping[str, Any]) -> tuple[str | os.PathLike[str], dict[str, Any]]:
    """The database path and the Minique options that ``config``'s ``MINIQUE_*`` keys give."""
    unknown = sorted(key for key in config
                     if key.startswith(PREFIX) and key != DATABASE_KEY and key not in OPTION_KEYS)
    if unknown:
        raise ConfigurationError(
            f"unknown config key(s) {', '.join(unknown)}; minique reads {DATABASE_KEY} and "
            f"{', '.join(OPTION_KEYS)}")
    path = config.get(DATABASE_KEY)
    if not path:
        raise ConfigurationError(
            f"app.config[{DATABASE_KEY!r}] is not set; set it to the path of the queue's SQLite "
            "file, e.g. os.path.join(app.instance_path, 'minique.db')")
    options = {name: config[key] for key, name in OPTION_KEYS.items() if key in config}
    return path, options


def _queue() -> FlaskMinique:
    mq: FlaskMinique = current_app.extensions["minique"]
    return mq


minique_commands = AppGroup("minique", help="Run or inspect this app's minique queue.")


# The options are those of `minique consume`, parsed by the same parser: Click
# hands them over as they were typed.
@minique_commands.command(
    "consume", add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def consume_command(options: tuple[str, ...]) -> None:
    """Run a consumer of this app's tasks until SIGTERM or Ctrl-C.

    It takes the options of `minique consume` (--help lists them).
    """
    args = consume_parser("flask minique consume").parse_args(options)
    mq = _queue()
    assert mq.app is not None  # the command exists once init_app gave the queue an app
    refusal = process_workers_refusal(mq.app) if args.worker_type == "process" else None
    code = consume(mq, args, no_process_workers=refusal)
    click.get_current_context().exit(code)


def process_workers_refusal(app: Flask) -> str | None:
    """Why ``-k process`` cannot run ``app``'s tasks, or None if it can.

    A worker process is a fresh interpreter that imports the modules defining
    the tasks and looks there for the queue, configured. That works when a
    module creates the app (and calls ``init_app``) as it is imported; an app
    made by a factory that only ``flask --app`` calls is nowhere to be found.
    """
    for module in list(sys.modules.values()):
        if any(value is app for value in list(getattr(module, "__dict__", {}).values())):
            return None
    return (f"cannot run the tasks of the app {app.name!r}: it is made by an app factory "
            "(create_app()), and a worker process only imports the modules that define the "
            "tasks, where no app is created and the queue stays unconfigured. Use thread "
            "workers (the default), or create the app and call mq.init_app(app) at module "
            "level, in a module that the tasks' modules import")


@minique_commands.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(as_json: bool) -> None:
    """Show the counts of tasks by queue and status, and the live consumers."""
    click.get_current_context().exit(status(_queue(), as_json))
