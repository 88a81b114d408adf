"""What hooks around a task run receive."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .task import Task


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of one call: what ``around_task`` hooks are given."""

    id: str
    task: Task[Any, Any]
    number: int  # 1 for the first attempt
    max_attempts: int
    queue: str


TaskHook = Callable[[Attempt], AbstractContextManager[Any]]
