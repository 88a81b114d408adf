"""A task without the ORM, on its own queue."""

from __future__ import annotations

from minique.contrib.django import periodic_task, task

from minique import crontab


@task(queue="emails", retries=2)
def send_welcome(address: str) -> str:
    return f"welcome mail sent to {address}"


@periodic_task(crontab("0 3 * * *"))
def nightly_digest() -> str:
    return "digest sent"
