"""Context features: pure functions of one event, no state, no I/O.

Examples
--------
>>> x = context_features(0, {"device": "ios", "screen": 2})
>>> x["hour_cos"], x["dow_sin"] == cyclic(3, 7)[0], x["ctx_device"], x["ctx_screen"]
(1.0, True, 'ios', 2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["context_features", "cyclic"]

_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 86_400_000


def cyclic(value: float, period: float) -> tuple[float, float]:
    """Sine and cosine of ``value`` on a circle of ``period``, so 23h sits next to 0h.

    >>> [round(v, 6) for v in cyclic(6, 24)]
    [1.0, 0.0]
    """
    angle = 2.0 * math.pi * value / period
    return math.sin(angle), math.cos(angle)


def context_features(timestamp_ms: int, context: Mapping[str, float | int | str]) -> dict:
    """Time-of-day and day-of-week (UTC, cyclic) of the event time, plus its context.

    Context entries keep their type: strings are categorical (one-hot encoded by
    the model), numbers are numeric. They are prefixed ``ctx_``.
    """
    hour = (timestamp_ms % _MS_PER_DAY) / _MS_PER_HOUR
    weekday = ((timestamp_ms // _MS_PER_DAY) + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    hour_sin, hour_cos = cyclic(hour, 24.0)
    dow_sin, dow_cos = cyclic(weekday, 7.0)
    features: dict = {
        "hour_sin": hour_sin,
        "hour_cos": hour_cos,
        "dow_sin": dow_sin,
        "dow_cos": dow_cos,
    }
    for key, value in context.items():
        features["ctx_" + key] = value
    return features
