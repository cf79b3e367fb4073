"""Slices: scores, decisions and quality per value of a context or event field.

A slice key names where an event's slice value comes from: ``context.<name>``
(a field of the event's context) or an event field (``author_id``,
``item_id``, ``user_id``). :class:`SliceMonitor` keeps one bounded window of
predictions and one of labels, each entry a tuple of the event's slice values,
so an update is one deque append whatever the number of distinct values. When
asked, it groups the windows by value: per key the ``top_k`` most frequent
values of the prediction window are reported by name and the rest pool into
:data:`OTHER_SLICE`, so a key never yields more than ``top_k + 1`` slices.

Per slice: predictions, mean score, decision rate, labels, positive-label
rate, ROC AUC and log loss, and the fairness gap: the slice's mean score (and
decision rate) over the rest's, the rest being the window's other events with
a value for the key.

Examples
--------
>>> monitor = SliceMonitor(("context.group",), window=1000, top_k=2, min_count=10)
>>> for i in range(400):
...     group = "b" if i % 4 == 0 else "a"
...     score = 0.6 if group == "b" else 0.3
...     monitor.observe_prediction((group,), score, score > 0.5)
...     monitor.observe_label((group,), i % 3 == 0, score)
>>> by_slice = {r.slice: r for r in monitor.report()}
>>> sorted(by_slice)
['a', 'b']
>>> round(by_slice["b"].score_ratio, 6), by_slice["b"].decision_rate
(2.0, 1.0)
>>> round(by_slice["a"].mean_score, 6), by_slice["a"].n_predictions
(0.3, 300)
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streamlearn.metrics.quality import roc_auc

__all__ = [
    "EVENT_FIELDS",
    "OTHER_SLICE",
    "SliceMonitor",
    "SliceReport",
    "slice_value",
    "slice_values",
]

#: The slice of the values outside a key's top K.
OTHER_SLICE = "other"

#: Event fields a slice key may name (besides ``context.<name>``).
EVENT_FIELDS = ("author_id", "item_id", "user_id")

#: Longest slice value kept (longer ones are cut, so a label value stays small).
MAX_VALUE_LENGTH = 64


def slice_value(key: str, context: Mapping[str, Any], event: Any = None) -> str | None:
    """The slice value of one event for ``key``; None when the event has none.

    Numbers become strings; values are cut at :data:`MAX_VALUE_LENGTH` characters.

    Examples
    --------
    >>> slice_value("context.country", {"country": "fr"})
    'fr'
    >>> slice_value("context.screen", {"screen": 2}), slice_value("context.x", {})
    ('2', None)
    >>> from types import SimpleNamespace
    >>> slice_value("author_id", {}, SimpleNamespace(author_id="a3"))
    'a3'
    """
    if key.startswith("context."):
        value = context.get(key[len("context.") :])
    elif key in EVENT_FIELDS:
        value = getattr(event, key, None)
    else:
        raise ValueError(
            f"unknown slice key {key!r}: use context.<name> or one of {', '.join(EVENT_FIELDS)}"
        )
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_VALUE_LENGTH]


def slice_values(
    keys: Sequence[str], context: Mapping[str, Any], event: Any = None
) -> tuple[str | None, ...]:
    """The slice values of one event, one per key (see :func:`slice_value`).

    Examples
    --------
    >>> slice_values(("context.device", "context.country"), {"device": "ios"})
    ('ios', None)
    """
    return tuple(slice_value(key, context, event) for key in keys)


@dataclass(frozen=True)
class SliceReport:
    """What one slice of one key looks like over the slice windows.

    Statistics are None when undefined: no predictions or labels in the slice,
    one class only (ROC AUC), or fewer than ``min_count`` predictions in the
    slice or in the rest (the ratios).
    """

    slice_key: str
    slice: str
    n_predictions: int
    mean_score: float | None
    decision_rate: float | None
    n_labels: int
    positive_label_rate: float | None
    roc_auc: float | None
    log_loss: float | None
    score_ratio: float | None
    decision_rate_ratio: float | None

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain dict."""
        return asdict(self)


class SliceMonitor:
    """Per-slice statistics over bounded windows of predictions and labels.

    Parameters
    ----------
    keys
        The slice keys (see :func:`slice_value`).
    window
        Predictions, and labels, kept.
    top_k
        Values per key reported by name; the rest form :data:`OTHER_SLICE`.
    min_count
        Predictions both a slice and the rest need before its ratios are reported.
    min_decisions
        Positive decisions the smaller of the slice and the rest would hold at
        the pooled decision rate before the decision-rate ratio is reported:
        with rare positive decisions the ratio of two small counts is noise
        (its relative error is about ``1 / sqrt(min_decisions)``).

    Notes
    -----
    The decision-rate ratio floors both rates at half a decision of the
    smaller side, as :class:`metrics.prediction_drift.PredictionDrift` does, so that two
    sides without a positive decision give 1 rather than 0/0.
    """

    def __init__(
        self,
        keys: Sequence[str],
        window: int = 5000,
        top_k: int = 10,
        min_count: int = 200,
        min_decisions: int = 100,
    ) -> None:
        self.keys = tuple(keys)
        for key in self.keys:
            slice_value(key, {})  # refuses an unknown key now
        if window < 1 or top_k < 1 or min_count < 1:
            raise ValueError("window, top_k and min_count must be >= 1")
        self.window = window
        self.top_k = top_k
        self.min_count = min_count
        self.min_decisions = min_decisions
        # Columns: one deque per key of the slice values, one per number.
        self._pred_values = [deque[str | None](maxlen=window) for _ in self.keys]
        self._scores: deque[float] = deque(maxlen=window)
        self._decisions: deque[bool] = deque(maxlen=window)
        self._label_values = [deque[str | None](maxlen=window) for _ in self.keys]
        self._y: deque[bool] = deque(maxlen=window)
        self._label_scores: deque[float] = deque(maxlen=window)
        self._weights: deque[float] = deque(maxlen=window)

    def observe_prediction(
        self, values: tuple[str | None, ...], score: float, decision: bool
    ) -> None:
        """Add one prediction with its event's slice values (one per key)."""
        for column, value in zip(self._pred_values, values, strict=True):
            column.append(value)
        self._scores.append(score)
        self._decisions.append(decision)

    def observe_label(
        self, values: tuple[str | None, ...], y_true: bool, score: float, weight: float = 1.0
    ) -> None:
        """Add one learned label with the score it was given and its event's slice values."""
        for column, value in zip(self._label_values, values, strict=True):
            column.append(value)
        self._y.append(y_true)
        self._label_scores.append(score)
        self._weights.append(weight)

    def reset(self) -> None:
        """Empty both windows."""
        for column in (*self._pred_values, *self._label_values):
            column.clear()
        for numbers in (self._scores, self._decisions, self._y, self._label_scores, self._weights):
            numbers.clear()

    def report(self) -> list[SliceReport]:
        """Every slice of every key, the most frequent first, :data:`OTHER_SLICE` last."""
        out: list[SliceReport] = []
        scores = np.array(self._scores, dtype=float)
        decisions = np.array(self._decisions, dtype=float)
        y = np.array(self._y, dtype=bool)
        s = np.array(self._label_scores, dtype=float)
        w = np.array(self._weights, dtype=float)
        for key, pred_values, label_values in zip(
            self.keys, self._pred_values, self._label_values, strict=True
        ):
            volume = Counter(v for v in pred_values if v is not None)
            top = [v for v, _ in volume.most_common(self.top_k)]
            names = top + ([OTHER_SLICE] if len(volume) > len(top) else [])
            # Codes: 0..len(top)-1 the named values, len(top) the others, len(top)+1 no value.
            other = len(top)
            code: dict[str | None, int] = dict.fromkeys(volume, other)
            code.update(dict.fromkeys(label_values, other))
            code.update((v, i) for i, v in enumerate(top))
            code[None] = other + 1
            slots = other + 2
            pred_codes = np.fromiter(map(code.__getitem__, pred_values), dtype=np.intp)
            label_codes = np.fromiter(map(code.__getitem__, label_values), dtype=np.intp)
            counts = np.bincount(pred_codes, minlength=slots)
            score_sums = np.bincount(pred_codes, weights=scores, minlength=slots)
            decision_sums = np.bincount(pred_codes, weights=decisions, minlength=slots)
            n_all = int(counts[: slots - 1].sum())
            score_all = float(score_sums[: slots - 1].sum())
            decision_all = float(decision_sums[: slots - 1].sum())
            for i, name in enumerate(names):
                n = int(counts[i])
                in_label = label_codes == i
                out.append(
                    self._slice(
                        key,
                        name,
                        (n, float(score_sums[i]), float(decision_sums[i])),
                        (
                            n_all - n,
                            score_all - float(score_sums[i]),
                            decision_all - float(decision_sums[i]),
                        ),
                        y[in_label],
                        s[in_label],
                        w[in_label],
                    )
                )
        return out

    def _slice(
        self,
        key: str,
        name: str,
        inside: tuple[int, float, float],
        rest: tuple[int, float, float],
        y: np.ndarray,
        s: np.ndarray,
        w: np.ndarray,
    ) -> SliceReport:
        """One slice from its and the rest's (count, score sum, positive decisions)."""
        n, score_sum, decided = inside
        n_rest, rest_score_sum, rest_decided = rest
        mean = score_sum / n if n else None
        rate = decided / n if n else None
        score_ratio = decision_ratio = None
        if n >= self.min_count and n_rest >= self.min_count:
            rest_mean = rest_score_sum / n_rest
            if mean is not None and rest_mean > 0:
                score_ratio = mean / rest_mean
            pooled = (decided + rest_decided) / (n + n_rest)
            if pooled * min(n, n_rest) >= self.min_decisions:
                floor = 0.5 / min(n, n_rest)
                decision_ratio = max(decided / n, floor) / max(rest_decided / n_rest, floor)
        total = float(w.sum())
        positive_rate = log_loss = None
        if len(y) and total > 0:
            positive_rate = float(w[y].sum()) / total
            clipped = np.clip(s, 1e-7, 1.0 - 1e-7)
            losses = np.where(y, -np.log(clipped), -np.log(1.0 - clipped))
            log_loss = float(np.dot(w, losses)) / total
        auc = roc_auc(y, s, w) if len(y) else None
        return SliceReport(
            slice_key=key,
            slice=name,
            n_predictions=n,
            mean_score=mean,
            decision_rate=rate,
            n_labels=len(y),
            positive_label_rate=positive_rate,
            roc_auc=auc,
            log_loss=log_loss,
            score_ratio=_finite(score_ratio),
            decision_rate_ratio=_finite(decision_ratio),
        )


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None
