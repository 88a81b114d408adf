"""How task arguments and results are stored: tagged JSON (default) or pickle.

A stored value says which serializer wrote it: JSON is stored as text and
pickle as bytes. A queue configured for JSON refuses to unpickle, so reading
the database never executes code unless the application opted in.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import pickle
from decimal import Decimal
from typing import Any, Literal, Protocol
from uuid import UUID

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


def _unsupported(value: Any) -> SerializationError:
    kind = type(value)
    return SerializationError(
        f"cannot store a value of type {kind.__module__}.{kind.__qualname__} with the json "
        "serializer; pass plain data (dict, list, tuple, str, int, float, bool, None, bytes, "
        "datetime, date, time, timedelta, Decimal, UUID) or create the queue with "
        "serializer='pickle'"
    )


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
    if kind is Decimal:
        return {_TAG: "decimal", "v": str(value)}
    if kind is UUID:
        return {_TAG: "uuid", "v": value.hex}
    raise _unsupported(value)


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
        return Decimal(v)
    if tag == "uuid":
        return UUID(hex=v)
    raise ValueError(f"unknown type tag {tag!r} in stored JSON")


# Built once: json.dumps/loads with options build a new encoder/decoder per call.
_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=True, check_circular=False)
_decoder = json.JSONDecoder(object_hook=_decode_tagged)


def _make_c_encoder() -> Any:
    # JSONEncoder.encode() builds the C encoder anew on every call (a
    # microsecond of the ~6 a task call spends in Python): build it once, with
    # the same settings as _encoder. Where the C accelerator is missing,
    # _encoder does the work.
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    return make(None, _encoder.default, json.encoder.encode_basestring_ascii, None,
                _encoder.key_separator, _encoder.item_separator, _encoder.sort_keys,
                _encoder.skipkeys, _encoder.allow_nan)


_c_encoder = _make_c_encoder()


def _to_json(value: Any) -> str:
    if _c_encoder is None or type(value) is str:
        return _encoder.encode(value)
    return "".join(_c_encoder(value, 0))


class JSONSerializer:
    """JSON with tagged values, so tuples, bytes, dates, Decimal and UUID round-trip exactly."""

    name = "json"

    def dumps(self, value: Any) -> Stored:
        try:
            return _to_json(_encode(value))
        except (ValueError, OverflowError) as exc:  # e.g. an int of more than 4,300 digits
            raise SerializationError(f"cannot store the value as JSON: {exc}") from exc
        except RecursionError as exc:
            raise SerializationError("cannot store a value that contains itself") from exc
        except TypeError as exc:  # a type that cannot be looked up (its class is unhashable)
            raise SerializationError(
                f"cannot store the value as JSON ({exc}); pass plain data or create the "
                "queue with serializer='pickle'") from exc

    def loads(self, data: Stored) -> Any:
        if isinstance(data, bytes):
            raise ValueError(
                "this value was stored by the pickle serializer, but the queue is configured "
                "with serializer='json'; create the Minique with serializer='pickle' to read it"
            )
        return _decoder.decode(data)


class PickleSerializer:
    """Pickle: any picklable object; reading the database can run code, so opt in knowingly."""

    name = "pickle"

    def dumps(self, value: Any) -> Stored:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pickle raises many types: PicklingError, TypeError...
            raise SerializationError(f"cannot pickle the value: {exc}") from exc

    def loads(self, data: Stored) -> Any:
        if isinstance(data, str):
            return JSONSerializer().loads(data)
        return pickle.loads(data)


def get_serializer(name: str) -> Serializer:
    """The serializer called ``name``; ``ValueError`` for an unknown name."""
    if name == "json":
        return JSONSerializer()
    if name == "pickle":
        return PickleSerializer()
    raise ValueError(f"unknown serializer {name!r}: use 'json' (the default) or 'pickle'")
