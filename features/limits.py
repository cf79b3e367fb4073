"""Size and range limits of a record: :class:`Limits`, and the checks of its numbers and time.

A number in ``features`` or ``context`` is bounded by ``Limits.feature_bounds`` for its
name, else by ``Limits.max_abs_value``; an event time by ``Limits.min_timestamp_ms`` and
``Limits.max_future_ms`` past the clock. Out of bounds is a :class:`DecodeError`
(``invalid_value``, ``timestamp_out_of_range``); :mod:`features.decode` applies them.

Examples
--------
>>> limits = Limits(feature_bounds={"length": (0, 1e6)})
>>> check_values("features", {"length": 12.0, "device": "ios", "clicks": 3}, limits)
>>> check_values("features", {"length": -1}, limits)
Traceback (most recent call last):
...
streamlearn.features.schema.DecodeError: invalid_value: features.length: -1 is outside [0, 1e+06] (feature_bounds)
>>> check_time(1714552200000, Limits(), now_ms=1714552200000)
>>> check_time(0, Limits(), now_ms=1714552200000)
Traceback (most recent call last):
...
streamlearn.features.schema.DecodeError: timestamp_out_of_range: timestamp 0 is outside [946684800000, 1714638600000]
"""  # noqa: E501

from __future__ import annotations

import math
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamlearn.features.schema import DecodeError, field_path

__all__ = ["Limits", "check_time", "check_values"]


class Limits(BaseModel):
    """Size and range limits applied to every record."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_bytes: int = Field(
        default=64 * 1024,
        gt=0,
        le=64 * 1024 * 1024,
        description="Largest accepted record value.",
    )
    max_context: int = Field(default=32, gt=0, le=10_000, description="Most entries in `context`.")
    max_features: int = Field(
        default=256, gt=0, le=100_000, description="Most entries in `features`."
    )
    min_timestamp_ms: int = Field(
        default=946_684_800_000,
        ge=0,
        le=4_102_444_800_000,
        description="Oldest accepted event time (2000-01-01); at most 2100-01-01.",
    )
    max_future_ms: int = Field(
        default=86_400_000,
        ge=0,
        le=31_536_000_000,
        description="How far past the wall clock an event time may be (at most 365 days).",
    )
    unknown_fields: Literal["ignore", "reject"] = Field(
        default="ignore", description="What to do with fields the schema does not know."
    )
    max_abs_value: float = Field(
        default=1e9,
        gt=0,
        le=1e15,
        description="Largest magnitude of a number in `features` or `context` without a bound"
        " of its own; beyond it the record is refused (invalid_value).",
    )
    feature_bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Per name, the [low, high] range of a number in `features` or `context`"
        ", e.g. {length: [0, 1e6]}; replaces max_abs_value for that name.",
    )
    max_label_weight: float = Field(
        default=100.0,
        gt=0,
        le=1e6,
        description="Label weights above this are clipped to it before learning (and counted).",
    )

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Limits:
        for name, (low, high) in self.feature_bounds.items():
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(
                    f"feature_bounds[{name!r}]: expected finite [low, high] with low <= high,"
                    f" got [{low}, {high}]"
                )
        return self


def check_time(timestamp: int, limits: Limits, now_ms: int | None) -> None:
    """Refuse an event time before ``min_timestamp_ms`` or more than ``max_future_ms`` past
    the clock (``now_ms``, default the wall clock): ``timestamp_out_of_range``."""
    latest = (time.time_ns() // 1_000_000 if now_ms is None else now_ms) + limits.max_future_ms
    if not limits.min_timestamp_ms <= timestamp <= latest:
        raise DecodeError(
            "timestamp_out_of_range",
            f"timestamp {timestamp} is outside [{limits.min_timestamp_ms}, {latest}]",
        )


def check_values(section: str, values: dict[str, Any], limits: Limits) -> None:
    """Refuse a number of ``features`` or ``context`` outside its bound (``invalid_value``)."""
    bounds = limits.feature_bounds
    top = limits.max_abs_value
    for name, value in values.items():
        if type(value) is str or type(value) is bool:
            continue
        bound = bounds.get(name)
        if bound is None:
            if -top <= value <= top:
                continue
            where = f"[{-top:g}, {top:g}]"
        else:
            if bound[0] <= value <= bound[1]:
                continue
            where = f"[{bound[0]:g}, {bound[1]:g}] (feature_bounds)"
        raise DecodeError(
            "invalid_value", f"{field_path((section, name))}: {value:g} is outside {where}"
        )
