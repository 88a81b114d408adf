"""Serializers: every type the JSON serializer promises comes back exactly (as arguments and as
return values, through a real consumer); what it cannot store is refused at the call; pickle
is opt-in and a JSON queue refuses to unpickle."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pytest

from minique import Minique, SerializationError, TaskError
from minique.consumer import Consumer


def same(a: Any, b: Any) -> bool:
    """Equal and of exactly the same types all the way down (1 == 1.0 == True is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    if isinstance(a, float):
        return repr(a) == repr(b)  # tells -0.0 from 0.0
    if isinstance(a, Decimal):
        return str(a) == str(b)  # keeps the exponent: 1.10 is not 1.1
    if isinstance(a, dt.datetime | dt.time):
        return bool(a == b and a.tzinfo == b.tzinfo)
    return bool(a == b)


PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))

VALUES: dict[str, Any] = {
    "dict": {"a": 1, "b": "two"},
    "empty dict": {},
    "list": [1, "two", 3.5, None],
    "empty list": [],
    "tuple": (1, "two"),
    "empty tuple": (),
    "nested tuples": {"t": (1, (2, [3, (4,)])), "l": [(5, 6), []], "d": ({"x": (7,)},)},
    "str": "héllo ✓ \x00 \"quoted\"",
    "empty str": "",
    "int": -42,
    "big int": 2**80,
    "float": 0.1,
    "negative zero": -0.0,
    "infinity": float("inf"),
    "true": True,
    "false": False,
    "none": None,
    "bytes": b"\x00\xffbinary\n",
    "empty bytes": b"",
    "naive datetime": dt.datetime(2024, 2, 29, 13, 45, 1, 123456),
    "utc datetime": dt.datetime(2024, 2, 29, 13, 45, 1, 123456, tzinfo=dt.UTC),
    "offset datetime": dt.datetime(2024, 2, 29, 13, 45, tzinfo=PLUS_0530),
    "date": dt.date(2024, 2, 29),
    "time": dt.time(13, 45, 1, 500),
    "aware time": dt.time(13, 45, tzinfo=PLUS_0530),
    "timedelta": dt.timedelta(days=-1, seconds=5, microseconds=7),
    "decimal": Decimal("3.14159265358979323846264338327950288"),
    "decimal with trailing zero": Decimal("1.10"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "int keys": {1: "one", 2: "two"},
    "mixed keys": {"s": 1, 2: "int", (3, 4): "tuple", None: "none", dt.date(2024, 1, 1): "date"},
    "tag key": {"__mq__": "tuple", "v": [1, 2]},
    "nested tag key": [{"__mq__": "bytes", "v": "AAE="}, {"inner": {"__mq__": 1}}],
    "tag-like str": "__mq__",
}


@pytest.mark.parametrize("value", list(VALUES.values()), ids=list(VALUES))
def test_json_round_trips_value_as_argument_and_result(
        mq: Minique, start_consumer: Callable[..., Consumer], value: Any) -> None:
    received: list[Any] = []

    @mq.task
    def echo(arg: Any) -> Any:
        received.append(arg)
        return arg

    result = echo(value)
    start_consumer(mq, workers=1)
    returned = result.get(timeout=10)

    assert len(received) == 1
    assert same(received[0], value), f"the task received {received[0]!r}"
    assert same(returned, value), f"get() returned {returned!r}"


def test_json_round_trips_positional_and_keyword_arguments(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    received: list[Any] = []

    @mq.task
    def echo(*args: Any, **kwargs: Any) -> Any:
        received.append((args, kwargs))
        return args, kwargs

    args = (b"raw", (1, 2), Decimal("0.5"))
    kwargs = {"when": dt.date(2024, 1, 1), "ids": [uuid.UUID(int=1)], "__mq__": "x"}
    result = echo(*args, **kwargs)
    start_consumer(mq, workers=1)
    returned = result.get(timeout=10)

    assert same(received[0], (args, kwargs))
    assert same(returned, (args, kwargs))


def test_zoned_datetime_keeps_its_instant_and_offset(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    # The JSON form stores the UTC offset, not the zone's name: the value comes back as the
    # same instant with the same offset, in a fixed-offset zone.
    value = dt.datetime(2024, 7, 1, 9, 30, tzinfo=ZoneInfo("Europe/Paris"))

    @mq.task
    def echo(arg: Any) -> Any:
        return arg

    result = echo(value)
    start_consumer(mq, workers=1)
    returned = result.get(timeout=10)

    assert returned == value
    assert returned.utcoffset() == value.utcoffset()


# -- refused at the call ------------------------------------------------------------------


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 3


class Pair(NamedTuple):
    x: int
    y: int


def _self_containing() -> list[Any]:
    loop: list[Any] = [1]
    loop.append(loop)
    return loop


UNSERIALIZABLE: dict[str, Callable[[], Any]] = {
    "object": object,
    "set": lambda: {1, 2},
    "frozenset": lambda: frozenset({1}),
    "enum member": lambda: Color.RED,
    "int enum member": lambda: Level.HIGH,
    "namedtuple": lambda: Pair(1, 2),
    "object nested in a dict": lambda: {"ok": [1, {"deep": object()}]},
    "list that contains itself": _self_containing,
}


@pytest.mark.parametrize("make", list(UNSERIALIZABLE.values()), ids=list(UNSERIALIZABLE))
def test_unserializable_argument_raises_at_the_call_and_stores_nothing(
        mq: Minique, make: Callable[[], Any]) -> None:
    @mq.task
    def echo(arg: Any) -> Any:
        return arg

    with pytest.raises(SerializationError) as info:
        echo(make())

    assert isinstance(info.value, TypeError)
    assert set(mq.counts().values()) == {0}


def test_unserializable_keyword_argument_raises_and_names_the_type(mq: Minique) -> None:
    @mq.task
    def echo(**kwargs: Any) -> Any:
        return kwargs

    with pytest.raises(SerializationError, match="set"):
        echo(tags={"a"})

    assert set(mq.counts().values()) == {0}


def test_argument_of_a_class_that_cannot_be_hashed_raises_serialization_error(
        mq: Minique) -> None:
    # A metaclass with __eq__ and no __hash__ makes its classes unhashable
    class Meta(type):
        def __eq__(cls, other: object) -> bool:
            return cls is other

    class Odd(metaclass=Meta):
        pass

    @mq.task
    def echo(arg: Any) -> Any:
        return arg

    with pytest.raises(SerializationError, match="pickle"):
        echo([Odd()])

    assert set(mq.counts().values()) == {0}


def test_unserializable_scheduled_argument_raises_and_stores_nothing(mq: Minique) -> None:
    @mq.task
    def echo(arg: Any) -> Any:
        return arg

    with pytest.raises(SerializationError):
        echo.schedule((object(),), delay=10)

    assert set(mq.counts().values()) == {0}


def test_task_returning_an_unserializable_value_fails_saying_so(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task
    def make_set() -> set[int]:
        return {1, 2}

    result = make_set()
    start_consumer(mq, workers=1)

    with pytest.raises(TaskError) as info:
        result.get(timeout=10)
    assert result.status == "failed"
    assert info.value.error_type == "SerializationError"
    assert "return value" in info.value.message
    assert "set" in info.value.message


# -- pickle ---------------------------------------------------------------------------------


@dataclass
class Point:
    x: int
    y: int

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


def test_pickle_serializer_round_trips_a_custom_class(
        db_path: Path, start_consumer: Callable[..., Consumer]) -> None:
    mq = Minique(db_path, serializer="pickle")
    received: list[Any] = []

    @mq.task
    def move(point: Point, tags: set[str]) -> Point:
        received.append((point, tags))
        return Point(point.x + 1, point.y + 1)

    result = move(Point(1, 2), {"a", "b"})
    start_consumer(mq, workers=1)
    returned = result.get(timeout=10)

    assert received == [(Point(1, 2), {"a", "b"})]
    assert type(returned) is Point
    assert returned == Point(2, 3)


def test_json_queue_refuses_a_pickled_payload_with_a_clear_error(
        mq: Minique, db_path: Path, start_consumer: Callable[..., Consumer]) -> None:
    ran: list[Any] = []

    @mq.task(name="shared.echo")
    def echo(arg: Any) -> Any:
        ran.append(arg)
        return arg

    producer = Minique(db_path, serializer="pickle")

    @producer.task(name="shared.echo")
    def echo_elsewhere(arg: Any) -> Any:
        return arg

    result = echo_elsewhere(Point(1, 2))
    start_consumer(mq, workers=1)

    with pytest.raises(TaskError) as info:
        mq.result(result.id).get(timeout=10)
    assert info.value.error_type == "PayloadError"
    assert "pickle" in info.value.message
    assert "serializer='pickle'" in info.value.message
    assert ran == []


def test_the_format_of_a_stored_value_does_not_depend_on_the_column_type() -> None:
    # Given values written by each serializer, read back as bytes (as a store
    # whose column holds bytes returns them) or as they were written
    from minique.serializers import get_serializer

    json_s, pickle_s = get_serializer("json"), get_serializer("pickle")
    as_json = json_s.dumps({"a": (1, b"x")})
    as_pickle = pickle_s.dumps({"a": (1, b"x")})
    json_bytes = as_json.encode() if isinstance(as_json, str) else as_json

    # Then each is recognised by its content
    assert json_s.loads(json_bytes) == {"a": (1, b"x")}
    assert pickle_s.loads(json_bytes) == {"a": (1, b"x")}
    assert pickle_s.loads(as_pickle) == {"a": (1, b"x")}
    with pytest.raises(ValueError, match="serializer='pickle'"):
        json_s.loads(as_pickle)
