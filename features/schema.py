"""The wire schema: events and labels, decoded with orjson, validated with pydantic.

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
features.schema.DecodeError: invalid_json: unexpected end of data: line 1 column 18 (char 17)
>>> decode_label(b'{"event_id": "e1", "timestamp": 1714552260000, "label": true}', limits).value
1.0
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

__all__ = [
    "REASONS",
    "DecodeError",
    "Event",
    "Label",
    "Limits",
    "decode_event",
    "decode_label",
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
)

Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Scalar = float | int | str | bool
SmallText = Annotated[str, StringConstraints(max_length=256)]


class DecodeError(ValueError):
    """A record that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Limits(BaseModel):
    """Size and range limits applied to every record."""

    model_config = ConfigDict(frozen=True)

    max_bytes: int = Field(default=64 * 1024, gt=0, description="Largest accepted record value.")
    max_context: int = Field(default=32, gt=0, description="Most entries in `context`.")
    max_features: int = Field(default=256, gt=0, description="Most entries in `features`.")
    min_timestamp_ms: int = Field(
        default=946_684_800_000, description="Oldest accepted event time (2000-01-01)."
    )
    max_future_ms: int = Field(
        default=86_400_000, ge=0, description="How far past the wall clock an event time may be."
    )
    unknown_fields: Literal["ignore", "reject"] = Field(
        default="ignore", description="What to do with fields the schema does not know."
    )


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
            raise ValueError(f"timestamp {value[:40]!r} has no time zone")
        return int(parsed.timestamp() * 1000)
    raise ValueError("a timestamp is epoch milliseconds or an ISO-8601 string")


EpochMs = Annotated[int, BeforeValidator(to_epoch_ms)]


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
    label: float | None = None

    @field_validator("label", mode="before")
    @classmethod
    def _label_as_number(cls, value: Any) -> Any:
        return float(value) if isinstance(value, bool) else value


class Label(BaseModel):
    """The outcome of an event, possibly known long after it."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    event_id: Id
    timestamp: EpochMs
    label: float
    weight: float = Field(default=1.0, gt=0.0, le=1e6)

    @field_validator("label", mode="before")
    @classmethod
    def _label_as_number(cls, value: Any) -> Any:
        return float(value) if isinstance(value, bool) else value

    @property
    def value(self) -> float:
        """The label as a number (``True`` is 1.0)."""
        return self.label


_ERROR_REASONS = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "finite_number": "not_finite",
    "string_too_short": "empty_key",
    "string_too_long": "too_large",
    "too_long": "too_large",
    "greater_than": "invalid_value",
    "less_than_equal": "invalid_value",
    "value_error": "invalid_value",
}


def _reason_of(error: ValidationError) -> DecodeError:
    first = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"]) or "record"
    reason = _ERROR_REASONS.get(first["type"], "wrong_type")
    if reason == "invalid_value" and "timestamp" in first["loc"]:
        reason = "wrong_type"
    return DecodeError(reason, f"{location}: {first['msg']}")


def _load(raw: bytes, limits: Limits, fields: frozenset[str]) -> dict[str, Any]:
    if len(raw) > limits.max_bytes:
        raise DecodeError("too_large", f"{len(raw)} bytes, the limit is {limits.max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("not_utf8", "the record is not UTF-8 text") from exc
        if "infinity" in str(exc) or b"NaN" in raw or b"Infinity" in raw:
            raise DecodeError(
                "not_finite", f"NaN and infinity are not numbers here: {exc}"
            ) from exc
        raise DecodeError("invalid_json", str(exc)) from exc
    if not isinstance(obj, dict):
        raise DecodeError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    if limits.unknown_fields == "reject":
        unknown = obj.keys() - fields
        if unknown:
            raise DecodeError("unknown_field", f"unknown fields: {sorted(unknown)[:5]}")
    return obj


def _check_time(timestamp: int, limits: Limits, now_ms: int | None) -> None:
    latest = (time.time_ns() // 1_000_000 if now_ms is None else now_ms) + limits.max_future_ms
    if not limits.min_timestamp_ms <= timestamp <= latest:
        raise DecodeError(
            "timestamp_out_of_range",
            f"timestamp {timestamp} is outside [{limits.min_timestamp_ms}, {latest}]",
        )


_EVENT_FIELDS = frozenset(Event.model_fields)
_LABEL_FIELDS = frozenset(Label.model_fields)


def decode_event(raw: bytes, limits: Limits, now_ms: int | None = None) -> Event:
    """Decode and validate one event record, or raise :class:`DecodeError`."""
    obj = _load(raw, limits, _EVENT_FIELDS)
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
    _check_time(event.timestamp, limits, now_ms)
    return event


def decode_label(raw: bytes, limits: Limits, now_ms: int | None = None) -> Label:
    """Decode and validate one label record, or raise :class:`DecodeError`."""
    obj = _load(raw, limits, _LABEL_FIELDS)
    try:
        label = Label.model_validate(obj)
    except ValidationError as exc:
        raise _reason_of(exc) from None
    _check_time(label.timestamp, limits, now_ms)
    return label
