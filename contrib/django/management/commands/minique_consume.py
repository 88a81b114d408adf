"""``manage.py minique_consume``: run a consumer of the project's tasks."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from minique.cli import ConsumeError, add_consume_arguments, run_consumer

from ... import mq

NO_PROCESS_WORKERS = (
    "is not supported with Django yet: the worker processes would import the tasks modules "
    "without setting up Django; use thread workers")


class Command(BaseCommand):
    help = ("Run a minique consumer for the tasks of the installed apps until SIGTERM or "
            "Ctrl-C. Takes the options of `minique consume`.")

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # `minique consume -v` means verbose, and Django's commands already have
        # -v (--verbosity): the later -v (minique's) wins; --verbosity stays.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        add_consume_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        consume_args = argparse.Namespace(
            workers=options["workers"], queues=options["queues"],
            worker_type=options["worker_type"], no_periodic=options["no_periodic"],
            grace=options["grace"], verbose=options["verbose"] or options["verbosity"] >= 2)
        try:
            run_consumer(mq, consume_args, no_process_workers=NO_PROCESS_WORKERS)
        except ConsumeError as exc:
            raise CommandError(str(exc), returncode=exc.exit_status) from None
