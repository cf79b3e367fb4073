"""Whole-run quality of a model: River's own metrics plus an exact ROC AUC.

The log loss and accuracy are River's metric objects fed the way
``river.evaluate.progressive_val_score`` feeds them, so a backtest's numbers
can be compared with River's to the last bit.

Examples
--------
>>> card = Scorecard(threshold=0.5)
>>> for y, p in [(True, 0.8), (False, 0.3), (True, 0.4)]:
...     card.update(y, p)
>>> result = card.result()
>>> result["accuracy"], result["roc_auc"], result["labels"]
(0.6666666666666666, 1.0, 3)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from river import metrics

from streamlearn.metrics.quality import recall_at_precision, roc_auc

__all__ = ["Scorecard"]


class _BinaryMetric(Protocol):
    """What the scorecard uses of a River metric (River does not annotate its metrics)."""

    def update(self, y_true: bool, y_pred: Any) -> None: ...

    def get(self) -> float: ...


def _river(metric: Callable[[], _BinaryMetric]) -> _BinaryMetric:
    """A new River metric, typed as :class:`_BinaryMetric`."""
    return metric()


class Scorecard:
    """Log loss, accuracy, precision, recall and ROC AUC over every learned label."""

    def __init__(self, threshold: float = 0.5, precision_target: float = 0.995) -> None:
        self.threshold = threshold
        self.precision_target = precision_target
        self.log_loss = _river(metrics.LogLoss)
        self.accuracy = _river(metrics.Accuracy)
        self.precision = _river(metrics.Precision)
        self.recall = _river(metrics.Recall)
        self.y_true: list[bool] = []
        self.scores: list[float] = []

    def update(self, y_true: bool, score: float) -> None:
        """One labelled prediction; the decision is ``score > threshold``, as River's argmax."""
        decision = score > self.threshold
        self.log_loss.update(y_true, {False: 1.0 - score, True: score})
        self.accuracy.update(y_true, decision)
        self.precision.update(y_true, decision)
        self.recall.update(y_true, decision)
        self.y_true.append(y_true)
        self.scores.append(score)

    def result(self) -> dict[str, Any]:
        """The metrics over every label so far, with the label count and the precision target."""
        recall, threshold = recall_at_precision(self.y_true, self.scores, self.precision_target)
        return {
            "labels": len(self.y_true),
            "log_loss": self.log_loss.get(),
            "accuracy": self.accuracy.get(),
            "precision": self.precision.get(),
            "recall": self.recall.get(),
            "roc_auc": roc_auc(self.y_true, self.scores),
            "recall_at_precision": recall,
            "recall_at_precision_threshold": threshold,
            "precision_target": self.precision_target,
        }
