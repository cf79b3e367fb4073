"""Prometheus gauges of the decision policy and of the unfiltered holdout.

The policy's current threshold, the lower confidence bound on precision it keeps,
and the recall it buys (both over its window of labelled events); online quality
measured on the holdout's labels only (unbiased by the filter), beside the
monitor's over all labels.

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> m = DecisionMetrics(registry)
>>> m.publish(0.93, 0.996, 0.41, None, 0.8, None, None)
>>> registry.get_sample_value("streamlearn_decision_threshold")
0.93
>>> registry.get_sample_value("streamlearn_holdout_recall")
0.8
"""

from __future__ import annotations

import math
import weakref

from prometheus_client import CollectorRegistry, Gauge

__all__ = [
    "DECISION_PRECISION_LOWER_BOUND",
    "DECISION_RECALL",
    "DECISION_THRESHOLD",
    "HOLDOUT_PRECISION",
    "HOLDOUT_RECALL",
    "HOLDOUT_ROC_AUC",
    "CALIBRATION_ECE",
    "DecisionMetrics",
]

DECISION_THRESHOLD = "streamlearn_decision_threshold"
DECISION_PRECISION_LOWER_BOUND = "streamlearn_decision_precision_lower_bound"
DECISION_RECALL = "streamlearn_decision_recall"
HOLDOUT_PRECISION = "streamlearn_holdout_precision"
HOLDOUT_RECALL = "streamlearn_holdout_recall"
HOLDOUT_ROC_AUC = "streamlearn_holdout_roc_auc"
CALIBRATION_ECE = "streamlearn_calibration_ece"


def _value(x: float | None) -> float:
    return math.nan if x is None else float(x)


_ON: weakref.WeakKeyDictionary[CollectorRegistry, DecisionMetrics] = weakref.WeakKeyDictionary()


class DecisionMetrics:
    """The decision and holdout gauges, registered once on ``registry`` (NaN: no data).

    :meth:`on` gives the instance of a registry, made at its first call: several
    processors on one registry (a worker's restarts) share its gauges.
    """

    @classmethod
    def on(cls, registry: CollectorRegistry, holdout: bool = True) -> DecisionMetrics:
        """The gauges registered on ``registry``, registering them the first time.

        >>> registry = CollectorRegistry()
        >>> DecisionMetrics.on(registry) is DecisionMetrics.on(registry)
        True
        """
        found = _ON.get(registry)
        if found is None:
            found = _ON[registry] = cls(registry, holdout)
        return found

    def __init__(self, registry: CollectorRegistry, holdout: bool = True) -> None:
        """``holdout``: whether the holdout's quality gauges exist. Without a holdout they
        would stay NaN for good, which the non-finite series alert would report.

        >>> registry = CollectorRegistry()
        >>> m = DecisionMetrics(registry, holdout=False)
        >>> m.publish(0.5, 0.0, 0.0, None, None, None, 0.02)
        >>> registry.get_sample_value("streamlearn_holdout_recall") is None
        True
        """
        self.holdout = holdout

        def gauge(name: str, doc: str) -> Gauge:
            g = Gauge(name, doc, registry=registry)
            g.set(math.nan)
            return g

        self.threshold = gauge(
            DECISION_THRESHOLD, "The decision policy's current score threshold (1: none)."
        )
        self.precision_lower_bound = gauge(
            DECISION_PRECISION_LOWER_BOUND,
            "Lower confidence bound on precision above the decision threshold (label window).",
        )
        self.recall = gauge(
            DECISION_RECALL, "Recall bought by the decision threshold (label window)."
        )
        if holdout:
            self.holdout_precision = gauge(
                HOLDOUT_PRECISION, "Precision at the decision threshold on holdout labels."
            )
            self.holdout_recall = gauge(
                HOLDOUT_RECALL, "Recall at the decision threshold on holdout labels."
            )
            self.holdout_roc_auc = gauge(HOLDOUT_ROC_AUC, "Rolling ROC AUC on holdout labels.")
        self.ece = gauge(
            CALIBRATION_ECE, "Expected calibration error of the scores over the quality window."
        )

    def publish(
        self,
        threshold: float,
        precision_lower_bound: float,
        recall: float,
        holdout_precision: float | None,
        holdout_recall: float | None,
        holdout_roc_auc: float | None,
        ece: float | None,
    ) -> None:
        """Set every gauge (None: no data, NaN)."""
        self.threshold.set(threshold)
        self.precision_lower_bound.set(precision_lower_bound)
        self.recall.set(recall)
        if self.holdout:
            self.holdout_precision.set(_value(holdout_precision))
            self.holdout_recall.set(_value(holdout_recall))
            self.holdout_roc_auc.set(_value(holdout_roc_auc))
        self.ece.set(_value(ece))
