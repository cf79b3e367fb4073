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

from metrics.quality import roc_auc

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

    Notes
    -----
    The decision-rate ratio floors both rates at half a decision of the
    smaller side, as :class:`metrics.drift.PredictionDrift` does, so that two
    sides without a positive decision give 1 rather than 0/0.
    """

    def __init__(
        self,
        keys: Sequence[str],
        window: int = 5000,
        top_k: int = 10,
        min_count: int = 200,
    ) -> None:
        self.keys = tuple(keys)
        for key in self.keys:
            slice_value(key, {})  # refuses an unknown key now
        if window < 1 or top_k < 1 or min_count < 1:
            raise ValueError("window, top_k and min_count must be >= 1")
        self.window = window
        self.top_k = top_k
        self.min_count = min_count
        self._predictions: deque[tuple[tuple[str | None, ...], float, bool]] = deque(maxlen=window)
        self._labels: deque[tuple[tuple[str | None, ...], bool, float, float]] = deque(
            maxlen=window
        )

    def observe_prediction(
        self, values: tuple[str | None, ...], score: float, decision: bool
    ) -> None:
        """Add one prediction with its event's slice values (one per key)."""
        self._predictions.append((values, score, decision))

    def observe_label(
        self, values: tuple[str | None, ...], y_true: bool, score: float, weight: float = 1.0
    ) -> None:
        """Add one learned label with the score it was given and its event's slice values."""
        self._labels.append((values, y_true, score, weight))

    def reset(self) -> None:
        """Empty both windows."""
        self._predictions.clear()
        self._labels.clear()

    def report(self) -> list[SliceReport]:
        """Every slice of every key, the most frequent first, :data:`OTHER_SLICE` last."""
        out: list[SliceReport] = []
        preds = list(self._predictions)
        labels = list(self._labels)
        scores = np.fromiter((p[1] for p in preds), dtype=float, count=len(preds))
        decisions = np.fromiter((p[2] for p in preds), dtype=bool, count=len(preds))
        y = np.fromiter((lab[1] for lab in labels), dtype=bool, count=len(labels))
        s = np.fromiter((lab[2] for lab in labels), dtype=float, count=len(labels))
        w = np.fromiter((lab[3] for lab in labels), dtype=float, count=len(labels))
        for j, key in enumerate(self.keys):
            pred_values = [p[0][j] if j < len(p[0]) else None for p in preds]
            label_values = [lab[0][j] if j < len(lab[0]) else None for lab in labels]
            volume = Counter(v for v in pred_values if v is not None)
            top = [v for v, _ in volume.most_common(self.top_k)]
            named = set(top)
            pred_slices = np.array(
                [None if v is None else v if v in named else OTHER_SLICE for v in pred_values],
                dtype=object,
            )
            label_slices = np.array(
                [None if v is None else v if v in named else OTHER_SLICE for v in label_values],
                dtype=object,
            )
            has_pred = pred_slices != None  # noqa: E711 (element-wise)
            names = top + ([OTHER_SLICE] if len(volume) > len(top) else [])
            for name in names:
                in_pred = pred_slices == name
                rest = has_pred & ~in_pred
                in_label = label_slices == name
                out.append(
                    self._slice(
                        key,
                        name,
                        scores,
                        decisions,
                        in_pred,
                        rest,
                        y[in_label],
                        s[in_label],
                        w[in_label],
                    )  # fmt: skip
                )
        return out

    def _slice(
        self,
        key: str,
        name: str,
        scores: np.ndarray,
        decisions: np.ndarray,
        in_slice: np.ndarray,
        rest: np.ndarray,
        y: np.ndarray,
        s: np.ndarray,
        w: np.ndarray,
    ) -> SliceReport:
        n, n_rest = int(in_slice.sum()), int(rest.sum())
        mean = float(scores[in_slice].mean()) if n else None
        rate = float(decisions[in_slice].mean()) if n else None
        score_ratio = decision_ratio = None
        if n >= self.min_count and n_rest >= self.min_count:
            rest_mean = float(scores[rest].mean())
            if mean is not None and rest_mean > 0:
                score_ratio = mean / rest_mean
            floor = 0.5 / min(n, n_rest)
            rest_rate = float(decisions[rest].mean())
            decision_ratio = max(rate or 0.0, floor) / max(rest_rate, floor)
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
