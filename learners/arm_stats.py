"""What one arm of an experiment measured: per-label values of the primary metric,
latencies in a bounded sketch, and its counts.

Examples
--------
>>> stats = ArmStats()
>>> stats.primary.update(label_value("log_loss", True, 0.9))
>>> stats.counts()
{'predictions': 0, 'labels': 1, 'errors': 0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from streamlearn.metrics.clustered import ClusteredMoments
from streamlearn.metrics.quality import binary_log_loss

__all__ = ["ArmStats", "LatencySketch", "Primary", "higher_is_better", "label_value"]

Primary = Literal["positive_rate", "log_loss", "brier"]


def label_value(metric: Primary, y_true: bool, y_pred: float, eps: float = 1e-3) -> float:
    """One label's contribution to ``metric``: the label itself for ``positive_rate``,
    the log loss with the probability clipped to ``[eps, 1 - eps]`` (bounded by
    ``-log(eps)``), or the Brier score.

    Examples
    --------
    >>> label_value("positive_rate", True, 0.5), label_value("brier", True, 0.5)
    (1.0, 0.25)
    >>> round(label_value("log_loss", True, 0.0), 3)    # clipped: -log(0.001)
    6.908
    """
    if metric == "positive_rate":
        return float(y_true)
    if metric == "brier":
        return (float(y_true) - y_pred) ** 2
    return binary_log_loss(y_true, y_pred, eps)


def higher_is_better(metric: Primary) -> bool:
    """Whether a larger value of ``metric`` is an improvement."""
    return metric == "positive_rate"


class LatencySketch:
    """Latencies in log-spaced buckets (10 % wide, 1 µs to ~10 min): bounded memory,
    quantiles within 10 %, serialisable.

    Examples
    --------
    >>> sketch = LatencySketch()
    >>> for i in range(1, 1001):
    ...     sketch.update(i / 1000)       # 1 ms ... 1 s
    >>> 0.98 <= sketch.quantile(0.99) <= 1.1
    True
    """

    GROWTH = 1.1
    LOW = 1e-6
    BUCKETS = 210

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self.counts: dict[int, int] = dict(counts or {})
        self.n = sum(self.counts.values())

    def update(self, seconds: float) -> None:
        if not math.isfinite(seconds):
            return
        index = 0
        if seconds > self.LOW:
            index = min(self.BUCKETS, math.ceil(math.log(seconds / self.LOW, self.GROWTH)))
        self.counts[index] = self.counts.get(index, 0) + 1
        self.n += 1

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket of rank ``q`` (NaN when empty)."""
        if self.n == 0:
            return math.nan
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return float(self.LOW * self.GROWTH**index)
        return math.nan  # unreachable: the counts sum to n

    def to_dict(self) -> dict[str, int]:
        return {str(k): v for k, v in sorted(self.counts.items())}

    @classmethod
    def from_dict(cls, data: Mapping[str, int]) -> LatencySketch:
        return cls({int(k): int(v) for k, v in data.items()})


@dataclass
class ArmStats:
    """What one arm did: predictions, errors, predicted positives, latency, and the
    primary metric over its labels, by unit (:class:`metrics.clustered.ClusteredMoments`:
    its variance counts units, whose labels are correlated, not labels)."""

    predictions: int = 0
    errors: int = 0
    predicted_positive: int = 0
    latency: LatencySketch = field(default_factory=LatencySketch)
    primary: ClusteredMoments = field(default_factory=ClusteredMoments)

    def counts(self) -> dict[str, int]:
        return {"predictions": self.predictions, "labels": self.primary.n, "errors": self.errors}

    def to_dict(self) -> dict[str, Any]:
        return {
            "predictions": self.predictions,
            "errors": self.errors,
            "predicted_positive": self.predicted_positive,
            "latency": self.latency.to_dict(),
            "primary": self.primary.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArmStats:
        return cls(
            int(data["predictions"]),
            int(data["errors"]),
            int(data["predicted_positive"]),
            LatencySketch.from_dict(data["latency"]),
            ClusteredMoments.from_dict(data["primary"]),
        )
