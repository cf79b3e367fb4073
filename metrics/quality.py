"""Online quality over a rolling window of labelled predictions.

Pure functions compute exact, weighted metrics from ``(y_true, score, weight)``
triples; :class:`RollingQuality` keeps the last ``window`` triples and calls
them when asked, so its ``update`` is a deque append.

Examples
--------
>>> roc_auc([True, False, True, False], [0.9, 0.1, 0.6, 0.7])
0.75
>>> recall_at_precision([True, True, False, True], [0.9, 0.8, 0.7, 0.6], 0.99)
(0.6666666666666666, 0.8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Labels",
    "QualityReport",
    "RollingQuality",
    "binary_log_loss",
    "recall_at_precision",
    "roc_auc",
    "Scores",
]

#: True labels: a sequence of bools, or a numpy array of them.
Labels = Sequence[bool] | npt.NDArray[np.bool_]
#: Scores or weights: a sequence of floats, or a numpy array of them.
Scores = Sequence[float] | npt.NDArray[np.float64]
_Floats = npt.NDArray[np.float64]


def binary_log_loss(y_true: bool, proba: float, eps: float = 1e-7) -> float:
    """Log loss of one prediction, the probability clipped to ``[eps, 1 - eps]``.

    Examples
    --------
    >>> round(binary_log_loss(True, 0.8), 4)
    0.2231
    >>> round(binary_log_loss(False, 0.8), 4)
    1.6094
    >>> round(binary_log_loss(True, 0.0), 2)
    16.12
    """
    p = min(max(proba, eps), 1.0 - eps)
    return -math.log(p) if y_true else -math.log(1.0 - p)


def _arrays(
    y_true: Labels, scores: Scores, weights: Scores | None
) -> tuple[npt.NDArray[np.bool_], _Floats, _Floats]:
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=float)
    if weights is None:
        return y, s, np.ones(len(s))
    if len(weights) != len(s):
        raise ValueError(f"{len(weights)} weights for {len(s)} examples")
    return y, s, np.asarray(weights, dtype=float)


def _class_weights_by_score(
    y: npt.NDArray[np.bool_], s: _Floats, w: _Floats
) -> tuple[_Floats, _Floats, _Floats]:
    """The distinct scores, ascending, with the positive and negative weight at each."""
    distinct, index = np.unique(s, return_inverse=True)
    # A weighted bincount is float64 already (numpy's stubs say intp): astype copies nothing.
    positive = np.bincount(index, weights=np.where(y, w, 0.0), minlength=len(distinct))
    negative = np.bincount(index, weights=np.where(y, 0.0, w), minlength=len(distinct))
    return distinct, positive.astype(float, copy=False), negative.astype(float, copy=False)


def roc_auc(y_true: Labels, scores: Scores, weights: Scores | None = None) -> float | None:
    """Exact (weighted) area under the ROC curve; ties in score count one half.

    Equals the weighted share of (positive, negative) pairs that the scores
    order correctly. None when a class is absent.

    Examples
    --------
    >>> roc_auc([True, False], [0.9, 0.1])
    1.0
    >>> roc_auc([True, False], [0.5, 0.5])
    0.5
    >>> roc_auc([True, True], [0.5, 0.7]) is None
    True
    """
    _, positive, negative = _class_weights_by_score(*_arrays(y_true, scores, weights))
    return _auc(positive, negative)


def _auc(positive: _Floats, negative: _Floats) -> float | None:
    total_pos, total_neg = float(positive.sum()), float(negative.sum())
    if total_pos <= 0 or total_neg <= 0:
        return None
    negatives_below = np.cumsum(negative) - negative
    area = float(np.dot(positive, negatives_below + 0.5 * negative))
    return area / (total_pos * total_neg)


def recall_at_precision(
    y_true: Labels,
    scores: Scores,
    precision_target: float,
    weights: Scores | None = None,
) -> tuple[float | None, float | None]:
    """Best recall among thresholds whose precision reaches ``precision_target``.

    A threshold ``t`` predicts positive when ``score >= t``; candidates are the
    observed scores. Returns ``(recall, threshold)``, the highest threshold on
    equal recall; ``(0.0, None)`` when no threshold reaches the target and
    ``(None, None)`` when the window has no positive.

    Examples
    --------
    >>> y = [True, True, False, True, False]
    >>> s = [0.9, 0.8, 0.7, 0.6, 0.5]
    >>> recall_at_precision(y, s, 0.99)
    (0.6666666666666666, 0.8)
    >>> recall_at_precision(y, s, 0.75)
    (1.0, 0.6)
    >>> recall_at_precision([False, True], [0.9, 0.1], 0.9)
    (0.0, None)
    """
    by_score = _class_weights_by_score(*_arrays(y_true, scores, weights))
    return _recall_at_precision(*by_score, precision_target)


def _recall_at_precision(
    distinct: _Floats, positive: _Floats, negative: _Floats, precision_target: float
) -> tuple[float | None, float | None]:
    total_pos = float(positive.sum())
    if total_pos <= 0:
        return None, None
    tp = np.cumsum(positive[::-1])
    fp = np.cumsum(negative[::-1])
    reaches = (tp > 0) & (tp >= precision_target * (tp + fp) * (1 - 1e-12))
    if not reaches.any():
        return 0.0, None
    recall = np.where(reaches, tp / total_pos, -1.0)
    best = int(np.argmax(recall))  # the first, so the highest threshold, on equal recall
    return float(recall[best]), float(distinct[::-1][best])


@dataclass(frozen=True)
class QualityReport:
    """Quality of the window's predictions; None where a metric is undefined."""

    n: int
    roc_auc: float | None
    log_loss: float | None
    accuracy: float | None
    precision: float | None
    recall: float | None
    recall_at_precision: float | None
    threshold_at_precision: float | None

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain dict."""
        return asdict(self)


class RollingQuality:
    """ROC AUC, log loss, accuracy, precision and recall over the last ``window`` labels.

    Parameters
    ----------
    window
        Labelled predictions kept.
    threshold
        Decision threshold for accuracy, precision and recall
        (positive when ``score > threshold``, River's argmax at 0.5).
    precision_target
        Precision that :attr:`QualityReport.recall_at_precision` must keep.

    Examples
    --------
    >>> q = RollingQuality(window=4, threshold=0.5)
    >>> for y, s in [(True, 0.9), (False, 0.2), (True, 0.4), (False, 0.6), (True, 0.8)]:
    ...     q.update(y, s)
    >>> r = q.report()
    >>> r.n, r.roc_auc, r.accuracy, r.precision, r.recall
    (4, 0.75, 0.5, 0.5, 0.5)
    """

    def __init__(
        self, window: int = 1000, threshold: float = 0.5, precision_target: float = 0.995
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0.0 < precision_target <= 1.0:
            raise ValueError(f"precision_target must be in (0, 1], got {precision_target}")
        self.window = window
        self.threshold = threshold
        self.precision_target = precision_target
        # Ring buffers: slot ``_next`` is the oldest item once the window is full.
        self._y = np.zeros(window, dtype=bool)
        self._s = np.zeros(window)
        self._w = np.zeros(window)
        self._next = 0
        self._n = 0

    def update(self, y_true: bool, score: float, weight: float = 1.0) -> None:
        """Add one labelled prediction (the oldest leaves a full window)."""
        i = self._next
        self._y[i] = bool(y_true)
        self._s[i] = score
        self._w[i] = weight
        self._next = (i + 1) % self.window
        if self._n < self.window:
            self._n += 1

    def reset(self) -> None:
        """Empty the window."""
        self._next = self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def full(self) -> bool:
        """True when the window holds ``window`` labels."""
        return self._n == self.window

    @property
    def oldest(self) -> tuple[bool, float, float] | None:
        """The ``(y_true, score, weight)`` that the next update evicts from a full window."""
        if self._n == 0:
            return None
        i = self._next if self.full else 0
        return bool(self._y[i]), float(self._s[i]), float(self._w[i])

    def roc_auc(self) -> float | None:
        """ROC AUC of the window (None while a class is missing)."""
        n = self._n
        return roc_auc(self._y[:n], self._s[:n], self._w[:n])

    def report(self) -> QualityReport:
        """Compute every metric over the window (sorting: O(window log window))."""
        n = self._n
        y, s, w = self._y[:n], self._s[:n], self._w[:n]
        total = float(w.sum())
        if n == 0 or total <= 0:
            return QualityReport(n, None, None, None, None, None, None, None)
        clipped = np.clip(s, 1e-7, 1.0 - 1e-7)
        loss = float(np.dot(w, np.where(y, -np.log(clipped), -np.log(1.0 - clipped))))
        decided = s > self.threshold
        tp = float(w[decided & y].sum())
        fp = float(w[decided & ~y].sum())
        fn = float(w[~decided & y].sum())
        tn = float(w[~decided & ~y].sum())
        distinct, positive, negative = _class_weights_by_score(y, s, w)
        rap, rap_threshold = _recall_at_precision(
            distinct, positive, negative, self.precision_target
        )
        return QualityReport(
            n=n,
            roc_auc=_auc(positive, negative),
            log_loss=loss / total,
            accuracy=(tp + tn) / total,
            precision=tp / (tp + fp) if tp + fp > 0 else None,
            recall=tp / (tp + fn) if tp + fn > 0 else None,
            recall_at_precision=rap,
            threshold_at_precision=rap_threshold,
        )
