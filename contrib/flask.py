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

import argparse
import os
from collections.abc import Mapping
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from flask.ctx import AppContext

from minique.cli import configure_logging, consume, status
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


@minique_commands.command("consume")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Worker threads (or processes with -k process).")
@click.option("-q", "--queue", "queues", multiple=True, metavar="QUEUE",
              help="Serve only this queue (repeatable, or comma-separated; default: all).")
@click.option("-k", "--worker-type", type=click.Choice(["thread", "process"]), default="thread",
              show_default=True,
              help="Run each attempt in a thread, or in a worker process that is killed at the "
                   "task's timeout.")
@click.option("--no-periodic", is_flag=True, help="Run no scheduler for periodic tasks.")
@click.option("--grace", type=float, default=30.0, show_default=True, metavar="SECONDS",
              help="On SIGTERM/SIGINT, how long running tasks may finish.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
def consume_command(workers: int, queues: tuple[str, ...], worker_type: str, no_periodic: bool,
                    grace: float, verbose: bool) -> None:
    """Run a consumer of this app's tasks until SIGTERM or Ctrl-C."""
    configure_logging(verbose)
    args = argparse.Namespace(workers=workers, queues=list(queues), worker_type=worker_type,
                              no_periodic=no_periodic, grace=grace, verbose=verbose)
    click.get_current_context().exit(consume(_queue(), args))


@minique_commands.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(as_json: bool) -> None:
    """Show the counts of tasks by queue and status, and the live consumers."""
    click.get_current_context().exit(status(_queue(), as_json))
