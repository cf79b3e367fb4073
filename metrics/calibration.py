"""Calibration: do scores mean probabilities? ECE and the reliability table.

Scores are cut into ``bins`` equal-width bins of ``[0, 1]``; in each bin the mean
score is compared with the share of positives. The expected calibration error
(ECE) is the mean absolute gap, weighted by the bin's share of the labels.
:class:`RollingCalibration` keeps the last ``window`` labelled scores for an online
figure (the ``streamlearn_calibration_ece`` gauge).

Examples
--------
>>> expected_calibration_error([True, False, True, False], [0.9, 0.1, 0.6, 0.4], bins=2)
0.25
>>> rows = reliability_table([True, False, True, False], [0.9, 0.1, 0.6, 0.4], bins=2)
>>> [(r["bin"], r["count"], r["mean_score"], r["positive_rate"]) for r in rows]
[(0, 2, 0.25, 0.0), (1, 2, 0.75, 1.0)]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["RollingCalibration", "expected_calibration_error", "reliability_table"]


def reliability_table(
    y_true: Sequence[bool], scores: Sequence[float], bins: int = 10
) -> list[dict[str, Any]]:
    """Per non-empty bin: its bounds, count, mean score and share of positives."""
    y = np.asarray(y_true, dtype=bool)
    s = np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    index = np.minimum((s * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        if count == 0:
            continue
        rows.append(
            {
                "bin": b,
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": count,
                "mean_score": float(s[mask].mean()),
                "positive_rate": float(y[mask].mean()),
            }
        )
    return rows


def expected_calibration_error(
    y_true: Sequence[bool], scores: Sequence[float], bins: int = 10
) -> float | None:
    """The ECE of the scores (None without labels)."""
    rows = reliability_table(y_true, scores, bins)
    total = sum(int(r["count"]) for r in rows)
    if total == 0:
        return None
    gap = sum(float(r["count"]) * abs(float(r["mean_score"] - r["positive_rate"])) for r in rows)
    return round(gap / total, 12)


class RollingCalibration:
    """ECE and the reliability table over the last ``window`` labelled scores.

    >>> rolling = RollingCalibration(window=2, bins=2)
    >>> for y, s in [(True, 0.1), (True, 0.9), (False, 0.2)]:
    ...     rolling.update(y, s)
    >>> rolling.ece()
    0.15
    """

    def __init__(self, window: int = 1000, bins: int = 10) -> None:
        self.bins = bins
        self._items: deque[tuple[bool, float]] = deque(maxlen=window)

    def update(self, y_true: bool, score: float) -> None:
        self._items.append((y_true, score))

    def __len__(self) -> int:
        return len(self._items)

    def ece(self) -> float | None:
        if not self._items:
            return None
        y, s = zip(*self._items, strict=True)
        return expected_calibration_error(y, s, self.bins)

    def table(self) -> list[dict[str, Any]]:
        if not self._items:
            return []
        y, s = zip(*self._items, strict=True)
        return reliability_table(y, s, self.bins)
