"""Context features: pure functions of one event, no state, no I/O.

Examples
--------
>>> x = context_features(0, {"device": "ios", "screen": 2})
>>> x["hour_cos"], x["weekday"], x["ctx_device"], x["ctx_screen"]
(1.0, 'thu', 'ios', 2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["context_features", "cyclic"]

_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 86_400_000
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def cyclic(value: float, period: float) -> tuple[float, float]:
    """Sine and cosine of ``value`` on a circle of ``period``, so 23h sits next to 0h.

    >>> [round(v, 6) for v in cyclic(6, 24)]
    [1.0, 0.0]
    """
    angle = 2.0 * math.pi * value / period
    return math.sin(angle), math.cos(angle)


def context_features(
    timestamp_ms: int, context: Mapping[str, float | int | str]
) -> dict[str, float | int | str]:
    """Time of day (UTC, cyclic) and weekday of the event time, plus its context.

    The weekday is categorical: it changes once a day, and as a number it would
    sit constant for hours, then jump, and a running scaler would blow it up.
    Context entries keep their type: strings are categorical (one-hot encoded by
    the model), numbers are numeric. They are prefixed ``ctx_``.
    """
    hour = (timestamp_ms % _MS_PER_DAY) / _MS_PER_HOUR
    hour_sin, hour_cos = cyclic(hour, 24.0)
    weekday = _WEEKDAYS[((timestamp_ms // _MS_PER_DAY) + 3) % 7]  # 1970-01-01 was a Thursday
    features: dict[str, float | int | str] = {
        "hour_sin": hour_sin,
        "hour_cos": hour_cos,
        "weekday": weekday,
    }
    for key, value in context.items():
        features["ctx_" + key] = value
    return features
