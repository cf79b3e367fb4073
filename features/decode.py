"""Decoding: bytes into an :class:`Event` or a :class:`Label`, with orjson and pydantic.

A record that cannot become an :class:`Event` or a :class:`Label` raises
:class:`DecodeError` with a machine-readable ``reason`` (a small fixed set, used
as a metric label and written to the dead-letter topic) and a human ``detail``.

Examples
--------
>>> limits = Limits()
>>> event = decode_event(b'{"event_id": "e1", "timestamp": "2024-05-01T08:30:00Z",'
...     b' "user_id": "u1", "item_id": "i1", "context": {"device": "ios"}}', limits)
>>> event.timestamp
1714552200000
>>> decode_event(b'{"event_id": "e1"', limits)
Traceback (most recent call last):
...
streamlearn.features.schema.DecodeError: invalid_json: unexpected end of data: line 1 column 18 (char 17)
>>> decode_label(b'{"event_id": "e1", "timestamp": 1714552260000, "label": true}', limits).value
1.0

How each kind of bad record is classified (the first problem found wins):

=============================================================  ==========================
record                                                         ``reason``
=============================================================  ==========================
bigger than ``Limits.max_bytes``; ``context``/``features``     ``too_large``
with too many entries; a string over its maximum length;
JSON nested deeper than orjson's limit (1024 levels)
bytes that are not UTF-8                                       ``not_utf8``
not JSON                                                       ``invalid_json``
JSON, but not an object (array, number, string, null)          ``not_an_object``
a required field absent                                        ``missing_field``
a value of the wrong JSON type (an id that is a number,        ``wrong_type``
``context`` a list, a nested object in ``features``, a label
given as a string); a timestamp that is not epoch
milliseconds or ISO-8601, or ISO-8601 without a time zone
a field the schema does not know, when                         ``unknown_field``
``Limits.unknown_fields`` is ``"reject"`` (ignored otherwise)
an empty ``event_id``, ``user_id``, ``item_id`` or             ``empty_key``
``author_id``
``NaN``, ``Infinity``, ``-Infinity``, or a number that         ``not_finite``
overflows a double (``1e999``)
event time before ``Limits.min_timestamp_ms`` or more than     ``timestamp_out_of_range``
``Limits.max_future_ms`` past the clock (``now_ms``)
a label outside [0, 1], a weight outside (0, 1e6]              ``invalid_value``
a number in ``features`` or ``context`` outside its bound      ``invalid_value``
(``Limits.feature_bounds`` by name, else
[-``Limits.max_abs_value``, ``Limits.max_abs_value``])
=============================================================  ==========================

An ISO-8601 timestamp without a zone is refused rather than guessed: the
same string would mean different instants on machines in different zones.
A number far outside what the model was built for (a length of ``1e300``) would
overflow the model's arithmetic, so it is refused with the feature and the bound:

>>> decode_event(b'{"event_id": "e3", "timestamp": 1714552200000, "user_id": "u1",'
...              b' "item_id": "i1", "features": {"length": 1e300}}', limits)
Traceback (most recent call last):
...
streamlearn.features.schema.DecodeError: invalid_value: features.length: 1e+300 is outside [-1e+09, 1e+09]
>>> bounded = Limits(feature_bounds={"length": (0, 1e6)})
>>> try:
...     decode_event(b'{"event_id": "e3", "timestamp": 1714552200000, "user_id": "u1",'
...                  b' "item_id": "i1", "features": {"length": -1}}', bounded)
... except DecodeError as error:
...     print(error.detail)
features.length: -1 is outside [0, 1e+06] (feature_bounds)

A label weight above ``Limits.max_label_weight`` is not refused: the processor
clips it to that bound (and counts it), so one label cannot outweigh thousands.

``duplicate_event`` and ``unknown_event`` are given later, by the processor, to
records that decode but conflict with the stream's state (an event id seen from
another record; a label whose event never came); ``duplicate_label`` is reserved
for a second label of one event, which the processor skips and counts.

>>> try:
...     decode_event(b'{"event_id": "e2", "timestamp": "2024-05-01T08:30:00",'
...                  b' "user_id": "u1", "item_id": "i1"}', limits)
... except DecodeError as error:
...     print(error.reason)
...     print(error.detail)
wrong_type
timestamp: timestamp '2024-05-01T08:30:00' has no time zone; add Z or an offset such as +02:00
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import ValidationError

from streamlearn.features.limits import Limits, check_time, check_values
from streamlearn.features.schema import DecodeError, Event, Label, field_path

__all__ = ["decode_event", "decode_label", "json_error", "validate_event"]

_ERROR_REASONS = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "finite_number": "not_finite",
    "string_too_short": "empty_key",
    "string_too_long": "too_large",
    "too_long": "too_large",
    "greater_than": "invalid_value",
    "greater_than_equal": "invalid_value",
    "less_than": "invalid_value",
    "less_than_equal": "invalid_value",
    "value_error": "invalid_value",
}

#: The last part of an error's location when pydantic tried one member of a union.
_UNION_BRANCHES = {
    "float": "a number",
    "int": "a number",
    "bool": "a boolean",
    "str": "a string",
    "constrained-str": "a string of at most 256 characters",
}


def _json_type(value: Any) -> str:
    """How a decoded JSON value is named in messages: its JSON type, not Python's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return (
            f"a string of {len(value)} characters" if len(value) > 40 else f"the string {value!r}"
        )
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _reason_of(error: ValidationError) -> DecodeError:
    """The first problem of a failed validation, as a reason and a message naming the field."""
    errors = error.errors(include_url=False)
    first = errors[0]
    loc = first["loc"]
    if len(loc) > 1 and loc[-1] in _UNION_BRANCHES:
        # A value that fits no member of a union (a context or feature value): one
        # error per member; say what was expected instead of the first member's complaint.
        tried = [e for e in errors if e["loc"][:-1] == loc[:-1]]
        types = {e["type"] for e in tried}
        where = field_path(loc[:-1])
        if "string_too_long" in types:
            return DecodeError(
                "too_large", f"{where}: {_json_type(first['input'])}, the limit is 256"
            )
        if "finite_number" in types:
            return DecodeError("not_finite", f"{where}: {first['msg']}")
        kinds = list(dict.fromkeys(_UNION_BRANCHES[str(e["loc"][-1])] for e in tried))
        expected = " or ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 1 else kinds)
        return DecodeError(
            "wrong_type", f"{where}: expected {expected}, got {_json_type(first['input'])}"
        )
    kind = first["type"]
    reason = _ERROR_REASONS.get(kind, "wrong_type")
    message = first["msg"]
    if kind == "value_error":
        message = str(first.get("ctx", {}).get("error", message))
        if "timestamp" in loc:
            reason = "wrong_type"
    elif reason == "wrong_type":
        message = f"{message}, got {_json_type(first['input'])}"
    elif kind == "string_too_long":
        message = f"{message}, got {len(first['input'])}"
    return DecodeError(reason, f"{field_path(loc)}: {message}")


#: A JSON-ish spelling of a non-finite number (Python's ``json`` writes the first three).
_NON_FINITE = re.compile(r"[-+]?(?:NaN|Infinity|nan|inf(?:inity)?)\b", re.IGNORECASE)


def _not_json(raw: bytes, exc: orjson.JSONDecodeError) -> DecodeError:
    """Why orjson refused ``raw``: not UTF-8, a non-finite number, too deep, or not JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return DecodeError("not_utf8", f"the record is not UTF-8 text: invalid byte at {bad.start}")
    where = f"line {exc.lineno} column {exc.colno} (char {exc.pos})"
    if "infinity" in exc.msg:
        return DecodeError(
            "not_finite", f"a number too large for a double (it would be infinity) at {where}"
        )
    start = exc.pos - 1 if exc.pos > 0 and text[exc.pos - 1 : exc.pos] in "+-" else exc.pos
    found = _NON_FINITE.match(text, start)
    if found:
        return DecodeError(
            "not_finite", f"{found.group()} at {where}: NaN and infinity are not numbers in JSON"
        )
    if "depth limit" in exc.msg:
        return DecodeError("too_large", f"JSON nested deeper than 1024 levels at {where}")
    return DecodeError("invalid_json", str(exc))


def _load(raw: bytes, limits: Limits, fields: frozenset[str]) -> dict[str, Any]:
    if len(raw) > limits.max_bytes:
        raise DecodeError("too_large", f"{len(raw)} bytes, the limit is {limits.max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _not_json(raw, exc) from exc
    if not isinstance(obj, dict):
        raise DecodeError("not_an_object", f"expected a JSON object, got {_json_type(obj)}")
    if limits.unknown_fields == "reject":
        unknown = obj.keys() - fields
        if unknown:
            names = ", ".join(repr(name[:40]) for name in sorted(unknown)[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise DecodeError(
                "unknown_field",
                f"unknown fields {names}{more}; known: {', '.join(sorted(fields))}",
            )
    return obj


_EVENT_FIELDS = frozenset(Event.model_fields)
_LABEL_FIELDS = frozenset(Label.model_fields)


def decode_event(raw: bytes, limits: Limits, now_ms: int | None = None) -> Event:
    """Decode and validate one event record, or raise :class:`DecodeError`."""
    return validate_event(_load(raw, limits, _EVENT_FIELDS), limits, now_ms)


def validate_event(obj: dict[str, Any], limits: Limits, now_ms: int | None = None) -> Event:
    """Validate one event already parsed from JSON, or raise :class:`DecodeError`.

    What :func:`decode_event` does after parsing, for callers that receive events
    inside a larger document (the HTTP API's ranking requests).

    >>> validate_event({"event_id": "e", "timestamp": 0, "user_id": "u", "item_id": ""},
    ...                Limits())
    Traceback (most recent call last):
    ...
    streamlearn.features.schema.DecodeError: empty_key: item_id: String should have at least 1 character
    """
    context, features = obj.get("context"), obj.get("features")
    if isinstance(context, dict) and len(context) > limits.max_context:
        raise DecodeError(
            "too_large", f"context has {len(context)} entries, the limit is {limits.max_context}"
        )
    if isinstance(features, dict) and len(features) > limits.max_features:
        raise DecodeError(
            "too_large", f"features has {len(features)} entries, the limit is {limits.max_features}"
        )
    try:
        event = Event.model_validate(obj)
    except ValidationError as exc:
        raise _reason_of(exc) from None
    check_values("features", event.features, limits)
    check_values("context", event.context, limits)
    check_time(event.timestamp, limits, now_ms)
    return event


def json_error(raw: bytes, exc: orjson.JSONDecodeError) -> DecodeError:
    """Why orjson refused ``raw`` (``not_utf8``, ``not_finite``, ``too_large`` or
    ``invalid_json``), as :func:`decode_event` says it.

    >>> try:
    ...     orjson.loads(b'{"a": NaN}')
    ... except orjson.JSONDecodeError as exc:
    ...     json_error(b'{"a": NaN}', exc).reason
    'not_finite'
    """
    return _not_json(raw, exc)


def decode_label(raw: bytes, limits: Limits, now_ms: int | None = None) -> Label:
    """Decode and validate one label record, or raise :class:`DecodeError`."""
    obj = _load(raw, limits, _LABEL_FIELDS)
    try:
        label = Label.model_validate(obj)
    except ValidationError as exc:
        raise _reason_of(exc) from None
    check_time(label.timestamp, limits, now_ms)
    return label
