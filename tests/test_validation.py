"""Every option and argument a user passes is checked where it is given, with an error that
names it and says what to give; a refused call stores nothing."""

from __future__ import annotations

import datetime as dt
import functools
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import minique
from minique import (
    ConfigurationError,
    DatabaseError,
    Minique,
    Result,
    ResultTimeout,
    Retry,
    SerializationError,
    TaskError,
    TaskTimeout,
    crontab,
)
from minique.consumer import Consumer
from minique.task import TaskOptions


def nothing_stored(mq: Minique) -> bool:
    return set(mq.counts().values()) == {0}


# -- per-call options: schedule() and Minique.enqueue -----------------------------------------


@pytest.mark.parametrize("priority", ["high", "5", 1.5, True, math.nan])
def test_schedule_refuses_a_priority_that_is_not_an_int_and_stores_nothing(
        mq: Minique, priority: object) -> None:
    # Given a task
    @mq.task
    def send(to: str) -> None: ...

    # When a call is scheduled with a priority that is not an int
    with pytest.raises(ConfigurationError, match="priority=.*give an int") as info:
        send.schedule(("ann",), priority=priority)  # type: ignore[arg-type]

    # Then it is refused as a ValueError too, and no consumer ever sees it
    assert isinstance(info.value, ValueError)
    assert nothing_stored(mq)


@pytest.mark.parametrize("priority", [2**63, -(2**63) - 1, 2**70])
def test_schedule_refuses_a_priority_past_64_bits_with_a_clear_error(
        mq: Minique, priority: int) -> None:
    @mq.task
    def send(to: str) -> None: ...

    # When the priority would not fit the database's 64-bit column, then it says the range
    with pytest.raises(ConfigurationError, match=r"between -2\*\*63 and 2\*\*63 - 1"):
        send.schedule(("ann",), priority=priority)
    assert nothing_stored(mq)


@pytest.mark.parametrize("delay", [
    math.nan, math.inf, -1, "10", True, dt.timedelta(seconds=-1), 1e300, [5],
], ids=["nan", "inf", "negative", "string", "bool", "negative-timedelta", "past-9999", "list"])
def test_schedule_refuses_a_delay_that_is_not_a_finite_number_of_seconds(
        mq: Minique, delay: object) -> None:
    @mq.task
    def send(to: str) -> None: ...

    with pytest.raises(ConfigurationError, match=r"delay="):
        send.schedule(("ann",), delay=delay)  # type: ignore[arg-type]
    assert nothing_stored(mq)


@pytest.mark.parametrize("eta", [5, dt.date(2030, 1, 1), "2030-01-01T00:00:00"])
def test_schedule_refuses_an_eta_that_is_not_a_datetime(mq: Minique, eta: object) -> None:
    @mq.task
    def send(to: str) -> None: ...

    with pytest.raises(ConfigurationError, match=r"eta=.*give a datetime"):
        send.schedule(("ann",), eta=eta)  # type: ignore[arg-type]
    assert nothing_stored(mq)


def test_enqueue_refuses_delay_and_eta_together_and_a_bad_priority(mq: Minique) -> None:
    # Given a task, enqueued through Minique.enqueue as integrations do
    @mq.task
    def send(to: str) -> None: ...

    # When both a delay and an eta are given, or a priority that is not an int
    with pytest.raises(ValueError, match="delay or eta, not both"):
        mq.enqueue(send, ("ann",), {}, delay=5, eta=dt.datetime.now())
    with pytest.raises(ConfigurationError, match="priority"):
        mq.enqueue(send, ("ann",), {}, priority="urgent")  # type: ignore[arg-type]

    # Then nothing is stored
    assert nothing_stored(mq)


def test_schedule_refuses_args_given_as_a_string(mq: Minique) -> None:
    # Given a task of any number of arguments, when args is a string, not a tuple
    @mq.task
    def tag(*labels: str) -> None: ...

    # Then it is refused rather than stored as one call per letter
    with pytest.raises(TypeError, match=r"args='urgent'.*give a tuple"):
        tag.schedule(args="urgent")
    assert nothing_stored(mq)


# -- task options at declaration -----------------------------------------------------------------


@pytest.mark.parametrize("options", [
    {"priority": 2**70},
    {"priority": True},
    {"retries": True},
    {"retries": 2**63},
    {"retry_delay": math.inf},
    {"retry_backoff": math.inf},
    {"retry_max_delay": math.inf},
    {"timeout": math.inf},
    {"expires": math.nan},
    {"expires": math.inf},
    {"expires": 0},
    {"expires": -5},
    {"expires": dt.timedelta(seconds=-1)},
], ids=lambda options: "{}={}".format(*next(iter(options.items()))))
def test_task_option_out_of_range_or_not_finite_is_refused_at_declaration(
        mq: Minique, options: dict[str, Any]) -> None:
    # When a task is declared with an option that makes no sense
    with pytest.raises(ConfigurationError) as info:
        @mq.task(name="send", **options)
        def send() -> None: ...

    # Then the error names the task and the option, and is a ValueError as before
    (option,) = options
    assert str(info.value).startswith(f"task 'send': {option}=")
    assert isinstance(info.value, ValueError)
    assert "send" not in mq.tasks


def test_retry_wait_of_a_late_retry_is_capped_instead_of_overflowing() -> None:
    # Given a task with many retries whose backoff passes the largest float
    options = TaskOptions(name="t", retries=5000, retry_delay=1.0, retry_backoff=2.0,
                          retry_max_delay=60.0, retry_jitter=0)

    # When the wait before retry 2000 is computed, then it is the cap
    assert options.retry_wait(2000) == 60.0


# -- the queue's options ----------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value"), [
    ("lease", math.nan),
    ("lease", math.inf),
    ("lease", "soon"),
    ("lease", True),
    ("result_ttl", math.nan),
    ("result_ttl", math.inf),
    ("result_ttl", "a week"),
    ("busy_timeout", "x"),
    ("busy_timeout", [30]),
    ("tz", 5),
])
def test_queue_option_that_is_not_a_finite_number_is_refused_naming_it(
        db_path: Path, option: str, value: object) -> None:
    # When a Minique is created with a value that is not a number of seconds
    with pytest.raises(ConfigurationError) as info:
        Minique(db_path, **{option: value})  # type: ignore[arg-type]

    # Then the error names the option and says what to give
    assert str(info.value).startswith(f"{option}={value!r}: give ")


def test_queue_options_given_as_numeric_strings_are_read_as_numbers(db_path: Path) -> None:
    # Given options as an environment variable would give them
    options: dict[str, Any] = {"lease": " 30 ", "result_ttl": "3600", "busy_timeout": "2.5",
                               "synchronous": "FULL"}
    mq = Minique(db_path, **options)

    # Then they are numbers (and a setting's name in any case)
    assert (mq.lease, mq.result_ttl, mq.store.busy_timeout, mq.synchronous) == (
        30.0, 3600.0, 2.5, "full")
    assert Minique(db_path, result_ttl="None").result_ttl is None  # type: ignore[arg-type]


@pytest.mark.parametrize("path", [
    ":memory:", "file::memory:", "file:jobs?mode=memory&cache=shared",
])
def test_in_memory_database_is_refused_pointing_to_a_temporary_file(path: str) -> None:
    # When a queue is created on an in-memory database, then it says why not and what to do
    with pytest.raises(ConfigurationError, match="in-memory") as info:
        Minique(path)
    assert "immediate=True" in str(info.value)
    assert "tmp_path" in str(info.value)


@pytest.mark.parametrize("path", ["", "   "])
def test_empty_database_path_is_refused(path: str) -> None:
    with pytest.raises(ConfigurationError, match="database path is empty"):
        Minique(path)


def test_folder_as_database_path_is_refused(tmp_path: Path) -> None:
    # When the path is a folder, then the error proposes a file in it
    with pytest.raises(ConfigurationError, match="is a folder.*minique.db"):
        Minique(tmp_path)


@pytest.mark.parametrize(("value", "expected"), [
    ("yes", True), ("True", True), (" ON ", True), ("1", True), (1, True),
    ("False", False), ("no", False), ("off", False), ("0", False), (0, False),
])
def test_immediate_reads_the_usual_spellings_of_true_and_false(
        db_path: Path, value: object, expected: bool) -> None:
    # When immediate is given as a word, as a config file or environment gives it
    mq = Minique(db_path, immediate=value)  # type: ignore[arg-type]

    # Then it is that boolean
    assert mq.immediate is expected


@pytest.mark.parametrize("value", ["maybe", "", 2, None, "Falsey"])
def test_immediate_that_is_not_a_boolean_is_refused_naming_it(db_path: Path,
                                                              value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"immediate=.* is not a boolean"):
        Minique(db_path, immediate=value)  # type: ignore[arg-type]


def test_string_false_for_immediate_queues_calls_instead_of_running_them(db_path: Path) -> None:
    # Given a queue configured with immediate="False" (as read from a file)
    mq = Minique(db_path, immediate="False")  # type: ignore[arg-type]
    ran: list[int] = []

    @mq.task
    def work(n: int) -> None:
        ran.append(n)

    # When a task is called, then it is queued, not run in the caller
    assert work(1).status == "queued"
    assert ran == []


# -- consumer options -------------------------------------------------------------------------


def test_consumer_given_one_queue_name_as_a_string_serves_that_queue(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    # Given a task on the "emails" queue
    @mq.task(queue="emails")
    def send(to: str) -> str:
        return f"sent to {to}"

    # When a consumer is told queues="emails", as one name
    consumer = start_consumer(mq, workers=1, queues="emails")

    # Then it serves that queue (not the queues 'e', 'm', 'a'...)
    assert consumer.queues == ("emails",)
    assert send("ann").get(timeout=10) == "sent to ann"


@pytest.mark.parametrize(("queues", "message"), [
    ([1], "1 is not a queue name"),
    (["emails", ""], "'' is not a queue name"),
    ("", "'' is not a queue name"),
    (5, "give None"),
    ({"emails": 3, "reports": 1}, "queue weights are not supported yet"),
])
def test_consumer_refuses_queues_that_are_not_names(
        mq: Minique, queues: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        mq.consumer(queues=queues)  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [
    {"workers": 0}, {"workers": 2.5}, {"workers": "4"}, {"workers": True},
    {"grace": math.nan}, {"grace": math.inf}, {"grace": -1},
    {"poll_interval": 0}, {"poll_interval": math.nan}, {"poll_interval": 1e9},
    {"periodic": "sometimes"},
], ids=lambda options: "{}={}".format(*next(iter(options.items()))))
def test_consumer_refuses_options_that_make_no_sense_naming_them(
        mq: Minique, options: dict[str, Any]) -> None:
    (option,) = options
    with pytest.raises(ConfigurationError, match=f"^{option}="):
        mq.consumer(**options)


def test_consumer_reads_a_periodic_flag_given_as_a_word(mq: Minique) -> None:
    assert mq.consumer(periodic="off").periodic is False  # type: ignore[arg-type]


# -- declaring and calling tasks --------------------------------------------------------------


def test_periodic_task_taking_arguments_is_refused_at_declaration(mq: Minique) -> None:
    # When a function that needs an argument is declared periodic, then it is refused at once
    with pytest.raises(ValueError, match=r"takes argument\(s\) day, but a periodic task is "
                                         r"called with none"):
        @mq.periodic_task(crontab("@daily"))  # type: ignore[arg-type]
        def report(day: str) -> None: ...

    # And one whose arguments all have defaults is fine
    @mq.periodic_task(crontab("@daily"))
    def cleanup(days: int = 7, *paths: str) -> None: ...

    assert list(mq.periodic_tasks) == [cleanup.name]


def test_async_function_is_refused_at_declaration_until_supported(mq: Minique) -> None:
    with pytest.raises(TypeError, match="async def function, which minique cannot run yet"):
        @mq.task
        async def fetch(url: str) -> None: ...


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((), {}, "missing 1 required positional argument: 'to'"),
    (("ann", "hi", "extra"), {}, "takes from 1 to 2 positional arguments but 3 were given"),
    (("ann",), {"cc": "bob"}, "got an unexpected keyword argument 'cc'"),
    (("ann",), {"to": "bob"}, "got multiple values for argument 'to'"),
])
def test_call_that_does_not_fit_the_function_is_refused_and_nothing_is_stored(
        mq: Minique, args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    # Given a task of one required and one optional argument
    @mq.task(name="send")
    def send(to: str, subject: str = "") -> None: ...

    # When it is called with arguments it cannot take, then the caller hears at once
    with pytest.raises(TypeError, match=rf"cannot enqueue send: send\(\) {message}"):
        send(*args, **kwargs)
    with pytest.raises(TypeError, match=message):
        send.schedule(args, kwargs, delay=5)

    # And nothing is stored for a consumer to fail on later
    assert nothing_stored(mq)


def test_map_refuses_an_item_that_does_not_fit_and_stores_none_of_them(mq: Minique) -> None:
    @mq.task(name="send")
    def send(to: str, subject: str) -> None: ...

    # When one item of a map lacks an argument, then the error says which item
    with pytest.raises(TypeError, match=r"item 1 of the map: .*missing 1 required"):
        send.map([("ann", "hi"), ("bob",), ("cy", "hey")])

    # And the whole map is refused
    assert nothing_stored(mq)


def test_immediate_mode_refuses_a_call_that_does_not_fit_at_the_call(db_path: Path) -> None:
    # Given a queue in immediate mode
    mq = Minique(db_path, immediate=True)

    @mq.task
    def double(n: int) -> int:
        return 2 * n

    # When the task is called without its argument, then the call raises (no failed row)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'n'"):
        double()  # type: ignore[call-arg]
    assert nothing_stored(mq)


def test_arguments_are_checked_against_the_decorated_function_not_what_it_wraps(
        mq: Minique) -> None:
    # Given a decorator that supplies an argument of the function it wraps
    def with_session(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(user_id: int) -> Any:
            return fn(user_id, session="open")
        return wrapper

    @mq.task
    @with_session
    def greet(user_id: int, session: str) -> str:
        return f"{user_id} {session}"

    # Then the call is checked against the wrapper: user_id only
    assert greet(7).status == "queued"
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'user_id'"):
        greet()


# -- revoke -----------------------------------------------------------------------------------


def test_revoke_of_an_unknown_id_raises_lookup_error_as_status_does(mq: Minique) -> None:
    # Given an id the database never held
    result = mq.result("12345")

    # When it is revoked, then it says so, as status does
    with pytest.raises(LookupError, match="no task with id 12345"):
        result.revoke()
    with pytest.raises(LookupError, match="no task with id 12345"):
        _ = result.status


# -- what cannot be stored --------------------------------------------------------------------


@pytest.mark.parametrize(("call", "where"), [
    (lambda send: send({"a": [1, {2}]}), "argument x['a'][1] is a set"),
    (lambda send: send(1, 2, {3}), "argument rest[1] is a set"),
    (lambda send: send(1, tags={"b": frozenset()}), "argument tags['b'] is a frozenset"),
    (lambda send: send({frozenset({1}): "v"}), "argument x has a key that is a frozenset"),
    (lambda send: send([threading.Lock()]), "argument x[0] is a _thread.lock"),
], ids=["positional", "star-args", "keyword", "key", "object"])
def test_argument_that_cannot_be_stored_is_named_where_it_sits_with_advice_once(
        mq: Minique, call: Callable[[Any], Result[Any]], where: str) -> None:
    # Given a task
    @mq.task(name="send")
    def send(x: Any, *rest: Any, **tags: Any) -> None: ...

    # When it is called with something JSON cannot store inside an argument
    with pytest.raises(SerializationError) as info:
        call(send)

    # Then the message names the task and the place, and gives its advice once
    message = str(info.value)
    assert message.startswith(f"send: {where}; pass plain data")
    assert message.count("serializer='pickle'") == 1
    assert nothing_stored(mq)


def test_argument_nested_too_deeply_is_reported_as_too_deep_not_as_a_cycle(
        mq: Minique) -> None:
    @mq.task(name="send")
    def send(x: Any) -> None: ...

    deep: Any = 1
    for _ in range(600):
        deep = [deep]

    with pytest.raises(SerializationError) as info:
        send(deep)

    message = str(info.value)
    assert message.startswith("send: argument x is nested too deeply to store: 600 levels")
    assert "itself" not in message


def test_argument_that_contains_itself_is_reported_as_a_cycle_where_it_is(
        mq: Minique) -> None:
    @mq.task(name="send")
    def send(x: Any) -> None: ...

    loop: list[Any] = [1]
    loop.append(loop)

    with pytest.raises(SerializationError,
                       match=r"^send: argument x\['l'\] contains itself \(\[1\] inside it"):
        send({"l": loop})


def test_pickle_argument_that_cannot_be_pickled_is_named_where_it_sits(db_path: Path) -> None:
    # Given a pickle queue, when an argument holds a lock (which pickle refuses)
    mq = Minique(db_path, serializer="pickle")

    @mq.task(name="send")
    def send(x: Any) -> None: ...

    # Then the message says where the lock is
    with pytest.raises(SerializationError,
                       match=r"^send: argument x\['a'\]\[1\] is a _thread.lock that cannot be "
                             r"pickled"):
        send({"a": [1, threading.Lock()]})


def test_return_value_that_cannot_be_stored_fails_with_its_place_and_advice_once(
        db_path: Path) -> None:
    # Given an immediate queue and a task returning a set inside a dict
    mq = Minique(db_path, immediate=True)

    @mq.task
    def tags() -> dict[str, set[str]]:
        return {"tags": {"a"}}

    # When it runs, then it fails saying where the set is, with the advice once
    with pytest.raises(TaskError) as info:
        tags().get()
    assert info.value.error_type == "SerializationError"
    assert "value['tags'] is a set; pass plain data" in info.value.message
    assert info.value.message.count("serializer='pickle'") == 1


# -- what minique exports ---------------------------------------------------------------------


def test_errors_users_catch_are_importable_from_minique() -> None:
    # The names of the API contract, and the errors users catch around them
    for name in ("Minique", "crontab", "Result", "Retry", "TaskError", "ResultTimeout",
                 "SerializationError", "ConfigurationError", "DatabaseError", "TaskTimeout"):
        assert name in minique.__all__
    assert issubclass(DatabaseError, minique.errors.MiniqueError)
    assert issubclass(TaskTimeout, minique.errors.MiniqueError)
    assert (Result, Retry, ResultTimeout) == (minique.Result, minique.Retry,
                                              minique.ResultTimeout)
