"""How task arguments and results are stored: tagged JSON (default) or pickle.

A stored value says which serializer wrote it, whatever column type the
store keeps it in: a pickle always begins with the byte 0x80 (the PROTO
opcode of pickle protocol 2 and later, which is all we write), and UTF-8
JSON text never does. A queue configured for JSON refuses to unpickle, so
reading the database never executes code unless the application opted in.
"""

from __future__ import annotations

# pickle, decimal and uuid are imported where they are needed, not here: most
# processes never meet a pickle, a Decimal or a UUID, and importing the three
# is about 5 ms of a consumer's start-up (uuid imports platform).
import base64
import datetime as dt
import json
import sys
from typing import Any, Literal, Protocol

from .errors import SerializationError

SerializerName = Literal["json", "pickle"]
Stored = str | bytes

_TAG = "__mq__"


class Serializer(Protocol):
    """Turns calls and values into something a database column can hold, and back."""

    name: str

    def dumps(self, value: Any) -> Stored:
        """Encode ``value``; raise ``SerializationError`` if it cannot be stored."""

    def loads(self, data: Stored) -> Any:
        """Decode what ``dumps`` produced; raise ``ValueError`` if it cannot."""


class _Unsupported(TypeError):
    """What ``_encode`` raises for a value of another type; ``dumps`` explains it."""


# JSON holds these as they are. Exact types: a subclass (an Enum, a
# namedtuple) would come back as its base type, and a silent change of type is
# worse than a clear error.
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _encode(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    # Items that are plain are kept without a call each: most task arguments
    # are, and encoding runs on every call of a task.
    if kind is list:
        return [item if type(item) in _PLAIN else _encode(item) for item in value]
    if kind is tuple:
        return {_TAG: "tuple", "v": [_encode(item) for item in value]}
    if kind is dict:
        if not value:
            return value
        if _TAG not in value and all(type(key) is str for key in value):
            return {key: item if type(item) in _PLAIN else _encode(item)
                    for key, item in value.items()}
        return {_TAG: "dict", "v": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if kind is bytes:
        return {_TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}
    if kind is dt.datetime:
        return {_TAG: "datetime", "v": value.isoformat()}
    if kind is dt.date:
        return {_TAG: "date", "v": value.isoformat()}
    if kind is dt.time:
        return {_TAG: "time", "v": value.isoformat()}
    if kind is dt.timedelta:
        return {_TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if kind is _loaded("decimal", "Decimal"):
        return {_TAG: "decimal", "v": str(value)}
    if kind is _loaded("uuid", "UUID"):
        return {_TAG: "uuid", "v": value.hex}
    raise _Unsupported(kind)


def _loaded(module: str, name: str) -> type | None:
    """The class ``module.name`` if its module was imported, else None.

    A value can be a ``Decimal`` or a ``UUID`` only once its module is in
    ``sys.modules``, so looking there tells them apart without importing it.
    """
    found = sys.modules.get(module)
    return None if found is None else getattr(found, name, None)


def _decode_tagged(obj: dict[str, Any]) -> Any:
    tag = obj.get(_TAG)
    if tag is None:
        return obj
    v = obj["v"]
    if tag == "tuple":
        return tuple(v)
    if tag == "dict":
        return {key: item for key, item in v}
    if tag == "bytes":
        return base64.b64decode(v)
    if tag == "datetime":
        return dt.datetime.fromisoformat(v)
    if tag == "date":
        return dt.date.fromisoformat(v)
    if tag == "time":
        return dt.time.fromisoformat(v)
    if tag == "timedelta":
        return dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2])
    if tag == "decimal":
        from decimal import Decimal

        return Decimal(v)
    if tag == "uuid":
        from uuid import UUID

        return UUID(hex=v)
    raise ValueError(f"unknown type tag {tag!r} in stored JSON")


# Built once: json.dumps/loads with options build a new encoder/decoder per call.
_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=True, check_circular=False)
_decoder = json.JSONDecoder(object_hook=_decode_tagged)


class JSONSerializer:
    """JSON with tagged values, so tuples, bytes, dates, Decimal and UUID round-trip exactly."""

    name = "json"

    def dumps(self, value: Any) -> Stored:
        try:
            return _encoder.encode(_encode(value))
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            # Off the fast path: find where the value went wrong, only now.
            raise _json_error(value, exc) from exc

    def loads(self, data: Stored) -> Any:
        if not isinstance(data, str):
            if is_pickle(data):
                raise ValueError(
                    "this value was stored by the pickle serializer, but the queue is "
                    "configured with serializer='json'; create the Minique with "
                    "serializer='pickle' to read it")
            data = bytes(data).decode("utf-8")  # a store that keeps bytes
        return _decoder.decode(data)


class PickleSerializer:
    """Pickle: any picklable object; reading the database can run code, so opt in knowingly."""

    name = "pickle"

    def __init__(self) -> None:
        import pickle  # only by the queues that use it (see the imports at the top)

        self._dumps = pickle.dumps
        self._loads = pickle.loads
        self._protocol = pickle.HIGHEST_PROTOCOL

    def dumps(self, value: Any) -> Stored:
        try:
            return self._dumps(value, protocol=self._protocol)
        except Exception as exc:  # pickle raises many types: PicklingError, TypeError...
            raise _pickle_error(value, exc) from exc

    def loads(self, data: Stored) -> Any:
        if isinstance(data, str) or not is_pickle(data):  # JSON, from before pickle
            return JSONSerializer().loads(data)
        return self._loads(data)


_PICKLE_PROTO = 0x80


def is_pickle(data: Stored) -> bool:
    """True if ``data`` was written by the pickle serializer (its first byte is 0x80)."""
    return not isinstance(data, str) and len(data) > 0 and data[0] == _PICKLE_PROTO


# -- explaining what cannot be stored -------------------------------------------------------
#
# Run only after an encoding failed, so the fast path above stays as it is.
# The walk is iterative: a value nested too deeply for the encoder's
# recursion must not stop the code that explains it.

_JSON_ADVICE = ("pass plain data (dict, list, tuple, str, int, float, bool, None, bytes, "
                "datetime, date, time, timedelta, Decimal, UUID) or create the queue with "
                "serializer='pickle'")
_SCALARS = (str, float, bool, type(None), bytes, dt.datetime, dt.date, dt.time, dt.timedelta)


def where(root: str, path: tuple[object, ...]) -> str:
    """``root`` followed by the keys and indexes of ``path``: ``x['a'][1]``."""
    return root + "".join(f"[{key!r}]" for key in path)


def explain(root: str, error: SerializationError) -> str:
    """The message of ``error`` for the value called ``root`` (``argument x``)."""
    text = f"{where(root, error.path)} {error.problem}"
    return f"{text}; {error.advice}" if error.advice else text


def _error(path: tuple[object, ...], problem: str, advice: str) -> SerializationError:
    error = SerializationError("", path=path, problem=problem, advice=advice)
    error.args = (explain("value" if path else "the value", error),)
    return error


def _kind_name(kind: type) -> str:
    module = getattr(kind, "__module__", "")
    name = getattr(kind, "__qualname__", repr(kind))
    name = name if module == "builtins" else f"{module}.{name}"
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _json_problem(value: Any) -> tuple[tuple[tuple[object, ...], tuple[object, ...]] | None,
                                       tuple[object, ...] | None, str, int]:
    """Walk ``value`` as ``_encode`` does.

    Returns the paths of the first cycle (the container, and where it
    appears again inside itself), the path of the first value that cannot be
    stored and what is wrong with it, and the deepest nesting.
    """
    cycle: tuple[tuple[object, ...], tuple[object, ...]] | None = None  # (holder, inner)
    bad: tuple[object, ...] | None = None
    problem = ""
    deepest = 0
    inside: dict[int, tuple[object, ...]] = {}  # the containers on the current path
    stack: list[tuple[Any, tuple[object, ...], bool]] = [(value, (), False)]
    while stack:
        item, path, leaving = stack.pop()
        if leaving:
            del inside[id(item)]
            continue
        kind = type(item)
        if kind is int:
            try:
                int.__repr__(item)
            except ValueError:
                if bad is None:
                    bad, problem = path, "is an int too long to write as text"
            continue
        if (any(kind is scalar for scalar in _SCALARS) or kind is _loaded("decimal", "Decimal")
                or kind is _loaded("uuid", "UUID")):
            continue
        if kind is list or kind is tuple or kind is dict:
            if id(item) in inside:
                cycle = (inside[id(item)], path) if cycle is None else cycle
                continue
            inside[id(item)] = path
            deepest = max(deepest, len(path) + 1)
            stack.append((item, path, True))
            if kind is dict:
                children = list(item.items())
                if _TAG in item or not all(type(key) is str for key in item):
                    for key in item:  # keys stored as values of their own
                        key_cycle, key_bad, key_problem, _ = _json_problem(key)
                        if bad is None and key_bad is not None:
                            bad = path
                            problem = (f"has a key that {key_problem}" if not key_bad else
                                       f"has a key whose part {where('', key_bad)} "
                                       f"{key_problem}")
            else:
                children = list(enumerate(item))
            stack.extend((child, (*path, key), False) for key, child in reversed(children))
            continue
        if bad is None:
            bad, problem = path, f"is {_kind_name(kind)}"
    return cycle, bad, problem, deepest


def _json_error(value: Any, exc: BaseException) -> SerializationError:
    cycle, bad, problem, deepest = _json_problem(value)
    if isinstance(exc, RecursionError) or bad is None:
        if cycle is not None:
            holder, inner = cycle
            return _error(holder, f"contains itself ({where('', inner[len(holder):])} inside "
                                  "it is that same object), which JSON cannot store",
                          "pass a copy without the cycle, or create the queue with "
                          "serializer='pickle'")
        if isinstance(exc, RecursionError):
            return _error((), f"is nested too deeply to store: {deepest} levels of lists, "
                              "tuples and dicts, where Python's recursion limit allows about "
                              f"{sys.getrecursionlimit() // 2}",
                          "store it flatter (for example as rows of a list), or as a string "
                          "that the task decodes")
    if bad is None:
        return _error((), f"cannot be stored as JSON ({type(exc).__name__}: {exc})",
                      _JSON_ADVICE)
    if problem.startswith("is an int"):
        return _error(bad, f"{problem} ({sys.get_int_max_str_digits()} digits at most)",
                      "pass it as a string (str(n)) and convert it back in the task, or raise "
                      "the limit with sys.set_int_max_str_digits()")
    return _error(bad, problem, _JSON_ADVICE)


def _pickle_error(value: Any, exc: BaseException) -> SerializationError:
    import pickle

    if isinstance(exc, RecursionError):
        return _error((), "is nested too deeply to pickle",
                      "store it flatter, or raise Python's recursion limit")
    # Go down into the first part that fails on its own, as far as containers go.
    path: tuple[object, ...] = ()
    seen: set[int] = set()
    while type(value) in (list, tuple, dict) and id(value) not in seen:
        seen.add(id(value))
        parts = value.items() if type(value) is dict else enumerate(value)
        for key, part in parts:
            try:
                pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as part_exc:  # noqa: BLE001 - any failure marks the culprit
                path, value, exc = (*path, key), part, part_exc
                break
        else:
            break
    return _error(path, f"is {_kind_name(type(value))} that cannot be pickled ({exc})",
                  "pass the data it is made from (an id, a path, plain values) and rebuild it "
                  "in the task")


def get_serializer(name: str) -> Serializer:
    """The serializer called ``name``; ``ValueError`` for an unknown name."""
    if name == "json":
        return JSONSerializer()
    if name == "pickle":
        return PickleSerializer()
    raise ValueError(f"unknown serializer {name!r}: use 'json' (the default) or 'pickle'")
