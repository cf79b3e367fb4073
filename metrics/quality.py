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
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "QualityReport",
    "RollingQuality",
    "binary_log_loss",
    "recall_at_precision",
    "roc_auc",
]


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


def _weights(n: int, weights: Sequence[float] | None) -> Sequence[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} examples")
    return weights


def roc_auc(
    y_true: Sequence[bool], scores: Sequence[float], weights: Sequence[float] | None = None
) -> float | None:
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
    w = _weights(len(y_true), weights)
    order = sorted(range(len(scores)), key=scores.__getitem__)
    neg_below = 0.0
    area = 0.0
    total_pos = total_neg = 0.0
    i = 0
    n = len(order)
    while i < n:
        score = scores[order[i]]
        pos = neg = 0.0
        while i < n and scores[order[i]] == score:
            k = order[i]
            if y_true[k]:
                pos += w[k]
            else:
                neg += w[k]
            i += 1
        area += pos * (neg_below + 0.5 * neg)
        neg_below += neg
        total_pos += pos
        total_neg += neg
    if total_pos <= 0 or total_neg <= 0:
        return None
    return area / (total_pos * total_neg)


def recall_at_precision(
    y_true: Sequence[bool],
    scores: Sequence[float],
    precision_target: float,
    weights: Sequence[float] | None = None,
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
    w = _weights(len(y_true), weights)
    total_pos = sum(wk for yk, wk in zip(y_true, w, strict=True) if yk)
    if total_pos <= 0:
        return None, None
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    best_recall, best_threshold = 0.0, None
    tp = fp = 0.0
    i = 0
    n = len(order)
    while i < n:
        score = scores[order[i]]
        while i < n and scores[order[i]] == score:
            k = order[i]
            if y_true[k]:
                tp += w[k]
            else:
                fp += w[k]
            i += 1
        if tp > 0 and tp >= precision_target * (tp + fp) * (1 - 1e-12):
            recall = tp / total_pos
            if recall > best_recall:
                best_recall, best_threshold = recall, score
    return best_recall, best_threshold


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
        self._items: deque[tuple[bool, float, float]] = deque(maxlen=window)

    def update(self, y_true: bool, score: float, weight: float = 1.0) -> None:
        """Add one labelled prediction (the oldest leaves a full window)."""
        self._items.append((bool(y_true), float(score), float(weight)))

    def reset(self) -> None:
        """Empty the window."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        """True when the window holds ``window`` labels."""
        return len(self._items) == self.window

    @property
    def oldest(self) -> tuple[bool, float, float] | None:
        """The ``(y_true, score, weight)`` that the next update evicts from a full window."""
        return self._items[0] if self._items else None

    def report(self) -> QualityReport:
        """Compute every metric over the window (sorting: O(window log window))."""
        ys = [item[0] for item in self._items]
        ss = [item[1] for item in self._items]
        ws = [item[2] for item in self._items]
        total = sum(ws)
        if not ys or total <= 0:
            return QualityReport(len(ys), None, None, None, None, None, None, None)
        tp = fp = tn = fn = 0.0
        loss = 0.0
        for y, s, w in self._items:
            loss += w * binary_log_loss(y, s)
            if s > self.threshold:
                if y:
                    tp += w
                else:
                    fp += w
            elif y:
                fn += w
            else:
                tn += w
        rap, rap_threshold = recall_at_precision(ys, ss, self.precision_target, ws)
        return QualityReport(
            n=len(ys),
            roc_auc=roc_auc(ys, ss, ws),
            log_loss=loss / total,
            accuracy=(tp + tn) / total,
            precision=tp / (tp + fp) if tp + fp > 0 else None,
            recall=tp / (tp + fn) if tp + fn > 0 else None,
            recall_at_precision=rap,
            threshold_at_precision=rap_threshold,
        )
