"""``manage.py minique_status``: counts of the project's tasks by queue and status."""

from __future__ import annotations

import io
from contextlib import redirect_stderr
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from minique.cli import status

from ... import mq


class Command(BaseCommand):
    help = ("Show the counts of tasks by queue and status, the periodic tasks and the live "
            "consumers of the project's minique queue.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        # A Django command writes to self.stdout, which call_command may replace;
        # errors are collected to become a CommandError.
        err = io.StringIO()
        with redirect_stderr(err):
            code = status(mq, options["json"], out=self.stdout)
        if code:
            raise CommandError(err.getvalue().strip().removeprefix("minique: "), returncode=code)
