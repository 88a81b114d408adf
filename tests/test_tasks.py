"""Declaring tasks (bare decorator, options, names), ``call_local``, ``map``, and the
``around_task`` hooks that wrap each run in a consumer."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from minique import Minique, Result, SerializationError, TaskError
from minique.consumer import Consumer
from minique.hooks import Attempt
from minique.task import Task

# -- declaring -------------------------------------------------------------------------


def test_bare_decorator_makes_a_task_whose_call_is_queued(mq: Minique) -> None:
    @mq.task
    def send(to: str) -> str:
        return to

    result = send("ada@example.com")

    assert isinstance(send, Task)
    assert isinstance(result, Result)
    assert result.status == "queued"


def test_decorator_with_options_applies_them_to_each_call(mq: Minique) -> None:
    @mq.task(queue="emails", priority=5, retries=3, retry_delay=2.0, retry_backoff=3.0,
             retry_max_delay=60.0, retry_jitter=0.0, retry_on=KeyError)
    def send(to: str) -> str:
        return to

    result = send("ada@example.com")

    assert send.options.queue == "emails"
    assert send.options.priority == 5
    assert send.options.retries == 3
    assert send.options.retry_delay == 2.0
    assert send.options.retry_backoff == 3.0
    assert send.options.retry_max_delay == 60.0
    assert send.options.retry_jitter == 0.0
    assert send.options.retry_on == (KeyError,)
    assert result.record.queue == "emails"
    assert result.record.max_attempts == 4
    assert mq.counts(queue="emails")["queued"] == 1
    assert mq.counts(queue="default")["queued"] == 0


def test_default_name_is_module_and_qualname(mq: Minique) -> None:
    @mq.task
    def send() -> None: ...

    assert send.name == f"{__name__}.test_default_name_is_module_and_qualname.<locals>.send"


def test_name_option_is_the_stored_name(mq: Minique) -> None:
    @mq.task(name="emails.send")
    def send() -> None: ...

    result = send()

    assert send.name == "emails.send"
    assert mq.result(result.id).record.name == "emails.send"
    assert mq.tasks["emails.send"] is send


@pytest.mark.parametrize("options", [
    {"retries": -1},
    {"retries": 1.5},
    {"retry_delay": -1},
    {"retry_backoff": 0.5},
    {"retry_max_delay": -1},
    {"retry_jitter": 1.5},
    {"retry_jitter": -0.1},
    {"retry_on": (int,)},
    {"retry_on": "ValueError"},
    {"queue": ""},
    {"priority": "high"},
    {"name": ""},
    {"expires": "tomorrow"},
], ids=lambda options: ",".join(f"{k}={v!r}" for k, v in options.items()))
def test_invalid_option_raises_value_error(mq: Minique, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        @mq.task(**options)
        def send() -> None: ...


def test_two_functions_with_one_name_raise_value_error(mq: Minique) -> None:
    @mq.task(name="shared")
    def first() -> None: ...

    with pytest.raises(ValueError, match="shared"):
        @mq.task(name="shared")
        def second() -> None: ...

    assert mq.tasks["shared"] is first


def test_call_local_runs_here_and_stores_nothing(mq: Minique) -> None:
    @mq.task
    def add(a: int, b: int) -> int:
        return a + b

    assert add.call_local(2, b=3) == 5
    assert set(mq.counts().values()) == {0}


def test_send_name_is_the_registered_name(mq: Minique) -> None:
    @mq.task(name="custom")
    def send() -> None: ...

    @mq.task
    def other() -> None: ...

    assert send.name == "custom"
    assert other.name in mq.tasks
    assert mq.tasks[other.name] is other


# -- map ----------------------------------------------------------------------------------


def test_map_enqueues_one_call_per_item_in_one_transaction(
        mq: Minique, monkeypatch: pytest.MonkeyPatch) -> None:
    @mq.task
    def echo(*args: Any) -> Any:
        return list(args)

    transactions: list[int] = []
    store_enqueue = mq.store.enqueue

    def counting_enqueue(jobs: Any, now: float) -> None:
        transactions.append(len(jobs))
        store_enqueue(jobs, now)

    monkeypatch.setattr(mq.store, "enqueue", counting_enqueue)

    results = echo.map([1, (2, 3), "four", [5, 6]])

    assert transactions == [4]
    assert [r.status for r in results] == ["queued"] * 4
    assert mq.counts()["queued"] == 4


def test_map_items_are_args_tuples_or_single_arguments(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task
    def echo(*args: Any) -> Any:
        return list(args)

    results = echo.map([1, (2, 3), "four", [5, 6], ()])
    start_consumer(mq, workers=2)

    assert [r.get(timeout=10) for r in results] == [[1], [2, 3], ["four"], [[5, 6]], []]


def test_map_returns_results_in_item_order(mq: Minique, db_path: Path) -> None:
    @mq.task
    def echo(x: int) -> int:
        return x

    results = echo.map(range(20))

    with closing(sqlite3.connect(db_path)) as db:
        stored = db.execute("SELECT id, payload FROM jobs ORDER BY id").fetchall()
    assert [r.id for r in results] == [str(job_id) for job_id, _ in stored]
    assert [mq.decode_call(payload) for _, payload in stored] == [((x,), {}) for x in range(20)]


def test_map_with_one_unserializable_item_stores_nothing(mq: Minique) -> None:
    @mq.task
    def echo(x: object) -> object:
        return x

    with pytest.raises(SerializationError):
        echo.map([1, 2, object(), 4])

    assert set(mq.counts().values()) == {0}


def test_map_of_nothing_returns_no_results(mq: Minique) -> None:
    @mq.task
    def echo(x: int) -> int:
        return x

    assert echo.map([]) == []
    assert set(mq.counts().values()) == {0}


# -- hooks ------------------------------------------------------------------------------


def test_around_task_hooks_enter_in_order_and_exit_in_reverse(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    events: list[str] = []

    def hook(label: str) -> Callable[[Attempt], Any]:
        @contextmanager
        def around(attempt: Attempt) -> Iterator[None]:
            events.append(f"enter {label} {attempt.task.name} #{attempt.number}")
            yield
            events.append(f"exit {label}")
        return around

    mq.around_task(hook("outer"))
    mq.around_task(hook("inner"))

    @mq.task(name="work")
    def work() -> str:
        events.append("run")
        return "ok"

    result = work()
    start_consumer(mq, workers=1)

    assert result.get(timeout=10) == "ok"
    assert events == ["enter outer work #1", "enter inner work #1", "run", "exit inner",
                      "exit outer"]


def test_around_task_hook_sees_the_task_exception(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    seen: list[BaseException] = []

    @mq.around_task
    @contextmanager
    def watch(attempt: Attempt) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            seen.append(exc)
            raise

    @mq.task
    def explode() -> None:
        raise ValueError("boom")

    result = explode()
    start_consumer(mq, workers=1)

    with pytest.raises(TaskError) as info:
        result.get(timeout=10)
    assert info.value.error_type == "ValueError"
    assert len(seen) == 1
    assert isinstance(seen[0], ValueError)
    assert str(seen[0]) == "boom"


def test_around_task_hooks_run_in_the_worker_thread(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    threads: list[str] = []

    @mq.around_task
    @contextmanager
    def note_thread(attempt: Attempt) -> Iterator[None]:
        threads.append(threading.current_thread().name)
        yield

    @mq.task
    def work() -> str:
        threads.append(threading.current_thread().name)
        return "ok"

    result = work()
    start_consumer(mq, workers=1)

    assert result.get(timeout=10) == "ok"
    assert len(threads) == 2
    assert threads[0] == threads[1] != threading.current_thread().name


def test_misspelled_option_raises_value_error_naming_it(mq: Minique) -> None:
    with pytest.raises(ValueError, match="retires") as raised:
        @mq.task(retires=3)  # type: ignore[call-overload]
        def send() -> None: ...

    assert "retries" in str(raised.value)  # the list of real options helps the fix


def test_error_swallowed_by_a_hook_still_fails_the_attempt(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    def swallow(attempt: Attempt) -> suppress:
        return suppress(ValueError)  # a careless hook: the task must still fail, not hang

    mq.around_task(swallow)

    @mq.task
    def broken() -> None:
        raise ValueError("lost in a hook")

    @mq.task
    def fine() -> str:
        return "ok"

    failed, after = broken(), fine()
    start_consumer(mq, workers=1)

    with pytest.raises(TaskError) as raised:
        failed.get(timeout=10)
    assert raised.value.error_type == "ValueError"
    assert "lost in a hook" in raised.value.traceback
    assert after.get(timeout=10) == "ok"
