"""The wire schema: what an event and a label are, and why a record is refused.

:class:`Event` and :class:`Label` are the records the stream carries;
:data:`REASONS` are the reasons a record can be refused for, raised as a
:class:`DecodeError`. Decoding bytes into these models is :mod:`features.decode`;
the size and range limits it applies are :mod:`features.limits`.

Examples
--------
>>> event = Event(event_id="e1", timestamp="2024-05-01T08:30:00Z", user_id="u1", item_id="i1")
>>> event.timestamp, event.context
(1714552200000, {})
>>> Label(event_id="e1", timestamp=1714552260000, label=True).value
1.0
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

__all__ = [
    "REASONS",
    "DecodeError",
    "Event",
    "Label",
    "RecordKind",
    "field_path",
    "is_event_record",
    "is_label_record",
    "line_kind",
    "record_kind",
    "to_epoch_ms",
]


#: Every reason a record can be refused for; the values of the ``reason`` metric label.
REASONS: tuple[str, ...] = (
    "too_large",
    "not_utf8",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "unknown_field",
    "empty_key",
    "not_finite",
    "timestamp_out_of_range",
    "invalid_value",
    "duplicate_event",
    "unknown_event",
    "duplicate_label",
    "poisoned_model",
)

Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Scalar = float | int | str | bool
SmallText = Annotated[str, StringConstraints(max_length=256)]


def _bool_as_number(value: Any) -> Any:
    return float(value) if isinstance(value, bool) else value


#: A label: a number in [0, 1] (``true``/``false`` are 1 and 0); never a string.
LabelValue = Annotated[float, BeforeValidator(_bool_as_number), Field(strict=True, ge=0.0, le=1.0)]


class DecodeError(ValueError):
    """A record that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def to_epoch_ms(value: Any) -> int:
    """Event time as integer epoch milliseconds.

    Accepts epoch milliseconds (int or float) or an ISO-8601 string with a zone.

    >>> to_epoch_ms("1970-01-01T00:00:01+00:00")
    1000
    >>> to_epoch_ms(1714552200000.0)
    1714552200000
    """
    if isinstance(value, bool):
        raise ValueError("a timestamp is epoch milliseconds or ISO-8601, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("timestamp is not finite")
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"timestamp {value[:40]!r} is not ISO-8601") from exc
        if parsed.tzinfo is None:
            raise ValueError(
                f"timestamp {value[:40]!r} has no time zone; add Z or an offset such as +02:00"
            )
        return int(parsed.timestamp() * 1000)
    raise ValueError("a timestamp is epoch milliseconds or an ISO-8601 string")


EpochMs = Annotated[int, BeforeValidator(to_epoch_ms)]

#: The topic a record belongs on: ``events`` (events, and records that are neither) or ``labels``.
RecordKind = Literal["events", "labels"]


def is_event_record(obj: object) -> bool:
    """Whether a decoded JSON value has an event's shape: an object with a ``user_id``.

    >>> is_event_record({"event_id": "e", "user_id": "u", "label": 1})
    True
    >>> is_event_record({"event_id": "e", "label": 1}), is_event_record(["user_id"])
    (False, False)
    """
    return isinstance(obj, dict) and "user_id" in obj


def is_label_record(obj: object) -> bool:
    """Whether a decoded JSON value is a label record: an object with ``label``, no ``user_id``.

    An event may carry its label inline; it stays an event.

    >>> is_label_record({"event_id": "e", "timestamp": 1, "label": True})
    True
    >>> is_label_record({"event_id": "e", "user_id": "u", "label": True})
    False
    >>> is_label_record({"event_id": "e"}), is_label_record([{"label": 1}])
    (False, False)
    """
    return isinstance(obj, dict) and "label" in obj and not is_event_record(obj)


def record_kind(obj: object) -> RecordKind:
    """The topic kind of a decoded JSON value: ``labels`` for a label record, else ``events``.

    Anything that is not a label record goes with the events, bad records included:
    the worker decodes it there and dead-letters it with its reason.

    >>> record_kind({"event_id": "e", "label": 0}), record_kind({"event_id": "e"}), record_kind(3)
    ('labels', 'events', 'events')
    """
    return "labels" if is_label_record(obj) else "events"


def line_kind(line: bytes) -> RecordKind:
    """:func:`record_kind` of a JSON line; a line that is not JSON is ``events``.

    >>> line_kind(b'{"event_id": "e", "timestamp": 1, "label": true}'), line_kind(b"{oops")
    ('labels', 'events')
    """
    try:
        return record_kind(orjson.loads(line))
    except orjson.JSONDecodeError:
        return "events"


class Event(BaseModel):
    """A user meets an item in some context."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    event_id: Id
    timestamp: EpochMs
    user_id: Id
    item_id: Id
    author_id: Id | None = None
    context: dict[SmallText, float | int | SmallText] = Field(default_factory=dict)
    features: dict[SmallText, Scalar] = Field(default_factory=dict)
    label: LabelValue | None = None


class Label(BaseModel):
    """The outcome of an event, possibly known long after it."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    event_id: Id
    timestamp: EpochMs
    label: LabelValue
    weight: float = Field(default=1.0, gt=0.0, le=1e6, strict=True)

    @property
    def value(self) -> float:
        """The label as a number (``True`` is 1.0)."""
        return self.label


def field_path(loc: tuple[Any, ...]) -> str:
    """Where in a record a problem is, for messages: its path, each part cut to 40 characters.

    >>> field_path(("features", "length")), field_path(())
    ('features.length', 'record')
    """
    parts = [str(part) if len(str(part)) <= 40 else str(part)[:37] + "..." for part in loc]
    return ".".join(parts) or "record"
