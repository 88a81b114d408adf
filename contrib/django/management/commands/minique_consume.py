"""``manage.py minique_consume``: run a consumer of the project's tasks."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from minique.cli import add_consume_arguments, configure_logging, split_queues
from minique.errors import MiniqueError

from ... import mq


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
        configure_logging(options["verbose"] or options["verbosity"] >= 2)
        if options["worker_type"] == "process":
            raise CommandError(
                "-k process is not supported with Django yet: the worker processes would "
                "import the tasks modules without setting up Django; use thread workers",
                returncode=2)
        try:
            consumer = mq.consumer(workers=options["workers"],
                                   queues=split_queues(options["queues"]),
                                   periodic=not options["no_periodic"], grace=options["grace"])
        except ValueError as exc:  # e.g. --workers 0
            raise CommandError(str(exc), returncode=2) from None
        try:
            consumer.run()
        except MiniqueError as exc:  # the database cannot be opened or written
            raise CommandError(str(exc), returncode=2) from None

