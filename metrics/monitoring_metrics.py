"""The series of the drift and quality monitor: their names, and the gauges it sets.

:class:`metrics.monitor.Monitor` computes the statistics;
:meth:`~metrics.monitor.Monitor.publish` writes them to :class:`MonitoringMetrics`.

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> metrics = MonitoringMetrics(registry)
>>> registry.get_sample_value(FEATURES_MONITORED)
0.0
>>> set(MONITOR_METRICS).isdisjoint(LABELLED_METRICS)
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from streamlearn.metrics.instruments import counter
from streamlearn.metrics.prediction_drift import PredictionDriftReport
from streamlearn.metrics.quality import QualityReport
from streamlearn.metrics.slices import SliceReport
from streamlearn.metrics.thresholds import AlertThresholds

__all__ = [
    "CONCEPT_DRIFT_DETECTIONS",
    "DRIFT_EVENTS",
    "FEATURE_KS",
    "FEATURE_PSI",
    "FEATURE_PSI_MAX",
    "FEATURES_DRIFTED",
    "FEATURES_MONITORED",
    "LABELLED_METRICS",
    "MONITOR_METRICS",
    "ONLINE_ACCURACY",
    "ONLINE_LOG_LOSS",
    "ONLINE_PRECISION",
    "ONLINE_RECALL",
    "ONLINE_RECALL_AT_PRECISION",
    "ONLINE_ROC_AUC",
    "ONLINE_THRESHOLD_AT_PRECISION",
    "POSITIVE_RATE",
    "POSITIVE_RATE_RATIO",
    "PREDICTION_KS",
    "PREDICTION_PSI",
    "REFERENCE_ROC_AUC",
    "SLICE_DECISION_RATE",
    "SLICE_DECISION_RATE_RATIO",
    "SLICE_LOG_LOSS",
    "SLICE_MEAN_SCORE",
    "SLICE_POSITIVE_LABEL_RATE",
    "SLICE_PREDICTIONS",
    "SLICE_ROC_AUC",
    "SLICE_SCORE_RATIO",
    "THRESHOLD",
    "MonitoringMetrics",
]

PREDICTION_PSI = "streamlearn_prediction_psi"
PREDICTION_KS = "streamlearn_prediction_ks"
POSITIVE_RATE = "streamlearn_prediction_positive_rate"
POSITIVE_RATE_RATIO = "streamlearn_prediction_positive_rate_ratio"
FEATURE_PSI = "streamlearn_feature_psi"
FEATURE_KS = "streamlearn_feature_ks"
FEATURE_PSI_MAX = "streamlearn_feature_psi_max"
FEATURES_MONITORED = "streamlearn_features_monitored"
FEATURES_DRIFTED = "streamlearn_features_drifted"
SLICE_PREDICTIONS = "streamlearn_slice_predictions"
SLICE_MEAN_SCORE = "streamlearn_slice_mean_score"
SLICE_DECISION_RATE = "streamlearn_slice_decision_rate"
SLICE_POSITIVE_LABEL_RATE = "streamlearn_slice_positive_label_rate"
SLICE_ROC_AUC = "streamlearn_slice_roc_auc"
SLICE_LOG_LOSS = "streamlearn_slice_log_loss"
SLICE_SCORE_RATIO = "streamlearn_slice_score_ratio"
SLICE_DECISION_RATE_RATIO = "streamlearn_slice_decision_rate_ratio"
CONCEPT_DRIFT_DETECTIONS = "streamlearn_concept_drift_detections_total"
DRIFT_EVENTS = "streamlearn_drift_events_total"
ONLINE_ROC_AUC = "streamlearn_online_roc_auc"
ONLINE_LOG_LOSS = "streamlearn_online_log_loss"
ONLINE_ACCURACY = "streamlearn_online_accuracy"
ONLINE_PRECISION = "streamlearn_online_precision"
ONLINE_RECALL = "streamlearn_online_recall"
ONLINE_RECALL_AT_PRECISION = "streamlearn_online_recall_at_precision"
ONLINE_THRESHOLD_AT_PRECISION = "streamlearn_online_threshold_at_precision"
REFERENCE_ROC_AUC = "streamlearn_reference_roc_auc"
THRESHOLD = "streamlearn_alert_threshold"

#: Every series name :class:`MonitoringMetrics` exports from the start.
MONITOR_METRICS: tuple[str, ...] = (
    PREDICTION_PSI,
    PREDICTION_KS,
    POSITIVE_RATE,
    POSITIVE_RATE_RATIO,
    FEATURE_PSI,
    FEATURE_PSI_MAX,
    FEATURES_MONITORED,
    FEATURES_DRIFTED,
    CONCEPT_DRIFT_DETECTIONS,
    DRIFT_EVENTS,
    ONLINE_ROC_AUC,
    ONLINE_LOG_LOSS,
    ONLINE_ACCURACY,
    ONLINE_PRECISION,
    ONLINE_RECALL,
    ONLINE_RECALL_AT_PRECISION,
    ONLINE_THRESHOLD_AT_PRECISION,
    REFERENCE_ROC_AUC,
    THRESHOLD,
)

#: Series whose label values come with the data (a feature's first KS, a slice's
#: first report): absent from a fresh registry, present once the monitor has them.
LABELLED_METRICS: tuple[str, ...] = (
    FEATURE_KS,
    SLICE_PREDICTIONS,
    SLICE_MEAN_SCORE,
    SLICE_DECISION_RATE,
    SLICE_POSITIVE_LABEL_RATE,
    SLICE_ROC_AUC,
    SLICE_LOG_LOSS,
    SLICE_SCORE_RATIO,
    SLICE_DECISION_RATE_RATIO,
)

_NAN = math.nan


def _value(x: float | None) -> float:
    return _NAN if x is None else float(x)


class MonitoringMetrics:
    """Gauges and counters of the monitor, registered once on ``registry``.

    Gauges start at NaN (no data yet), which no alert condition matches.
    Label values are bounded: ``window`` takes two values, ``feature`` the
    configured features or the current top K by PSI (a name that leaves the
    top K has its series removed), ``slice_key`` the configured slice keys,
    ``slice`` each key's top K values plus ``other`` (removed likewise),
    ``name`` the threshold names, ``kind`` four values.

    Examples
    --------
    >>> registry = CollectorRegistry()
    >>> m = MonitoringMetrics(registry)
    >>> m.set_thresholds(AlertThresholds())
    >>> registry.get_sample_value("streamlearn_alert_threshold", {"name": "psi_critical"})
    0.25
    >>> math.isnan(registry.get_sample_value("streamlearn_prediction_psi"))
    True
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        self.prediction_psi = gauge(
            PREDICTION_PSI, "PSI of the current scores against the reference window's bins."
        )
        self.prediction_ks = gauge(
            PREDICTION_KS, "Two-sample KS statistic between reference and current scores."
        )
        self.positive_rate = gauge(
            POSITIVE_RATE,
            "Share of scores above model.threshold, by window (reference or current).",
            ("window",),
        )
        self.positive_rate_ratio = gauge(
            POSITIVE_RATE_RATIO, "Current over reference share of scores above model.threshold."
        )
        self.feature_psi = gauge(
            FEATURE_PSI, "PSI of a monitored feature against its reference window.", ("feature",)
        )
        self.feature_ks = gauge(
            FEATURE_KS,
            "Two-sample KS statistic of a numeric monitored feature against its reference.",
            ("feature",),
        )
        self.feature_psi_max = gauge(
            FEATURE_PSI_MAX, "Highest feature PSI among all monitored features."
        )
        self.features_monitored = gauge(
            FEATURES_MONITORED, "Features whose drift is monitored (windows kept)."
        )
        self.features_drifted = gauge(
            FEATURES_DRIFTED, "Monitored features whose PSI is above psi_critical."
        )
        slice_labels = ("slice_key", "slice")
        self.slice_predictions = gauge(
            SLICE_PREDICTIONS, "Predictions of the slice in the slice window.", slice_labels
        )
        self.slice_mean_score = gauge(
            SLICE_MEAN_SCORE, "Mean score of the slice's predictions.", slice_labels
        )
        self.slice_decision_rate = gauge(
            SLICE_DECISION_RATE, "Share of positive decisions in the slice.", slice_labels
        )
        self.slice_positive_label_rate = gauge(
            SLICE_POSITIVE_LABEL_RATE, "Share of positive labels in the slice.", slice_labels
        )
        self.slice_roc_auc = gauge(
            SLICE_ROC_AUC, "ROC AUC of the slice's labelled predictions.", slice_labels
        )
        self.slice_log_loss = gauge(
            SLICE_LOG_LOSS, "Log loss of the slice's labelled predictions.", slice_labels
        )
        self.slice_score_ratio = gauge(
            SLICE_SCORE_RATIO,
            "Mean score of the slice over the mean score of the rest (fairness gap).",
            slice_labels,
        )
        self.slice_decision_rate_ratio = gauge(
            SLICE_DECISION_RATE_RATIO,
            "Positive-decision rate of the slice over that of the rest (fairness gap).",
            slice_labels,
        )
        self._slice_gauges = (
            (self.slice_predictions, "n_predictions"),
            (self.slice_mean_score, "mean_score"),
            (self.slice_decision_rate, "decision_rate"),
            (self.slice_positive_label_rate, "positive_label_rate"),
            (self.slice_roc_auc, "roc_auc"),
            (self.slice_log_loss, "log_loss"),
            (self.slice_score_ratio, "score_ratio"),
            (self.slice_decision_rate_ratio, "decision_rate_ratio"),
        )
        self._slice_series: set[tuple[str, str]] = set()
        self._feature_series: set[str] = set()
        self._feature_ks_series: set[str] = set()
        self.concept_drift_detections = counter(
            registry,
            CONCEPT_DRIFT_DETECTIONS,
            "Concept drift detections on the loss of learned labels.",
        )
        self.drift_events = counter(
            registry,
            DRIFT_EVENTS,
            "Drift statistics crossing their critical threshold, by kind.",
            ("kind",),
        )
        self.online_roc_auc = gauge(ONLINE_ROC_AUC, "ROC AUC over the rolling quality window.")
        self.online_log_loss = gauge(ONLINE_LOG_LOSS, "Log loss over the rolling quality window.")
        self.online_accuracy = gauge(
            ONLINE_ACCURACY, "Accuracy at the decision threshold over the rolling quality window."
        )
        self.online_precision = gauge(
            ONLINE_PRECISION, "Precision at the decision threshold over the rolling quality window."
        )
        self.online_recall = gauge(
            ONLINE_RECALL, "Recall at the decision threshold over the rolling quality window."
        )
        self.online_recall_at_precision = gauge(
            ONLINE_RECALL_AT_PRECISION,
            "Best recall over the rolling window among thresholds keeping the precision target.",
        )
        self.online_threshold_at_precision = gauge(
            ONLINE_THRESHOLD_AT_PRECISION,
            "Score threshold achieving streamlearn_online_recall_at_precision.",
        )
        self.reference_roc_auc = gauge(
            REFERENCE_ROC_AUC, "ROC AUC of the reference quality window."
        )
        self.threshold = gauge(
            THRESHOLD, "Alert threshold values, by name (for dashboards).", ("name",)
        )
        for g in (
            self.prediction_psi,
            self.prediction_ks,
            self.positive_rate_ratio,
            self.online_roc_auc,
            self.online_log_loss,
            self.online_accuracy,
            self.online_precision,
            self.online_recall,
            self.online_recall_at_precision,
            self.online_threshold_at_precision,
            self.reference_roc_auc,
            self.feature_psi_max,
        ):
            g.set(_NAN)
        self.features_monitored.set(0)
        self.features_drifted.set(0)
        for window in ("reference", "current"):
            self.positive_rate.labels(window=window).set(_NAN)
        for kind in ("prediction", "feature", "concept", "fairness"):
            self.drift_events.labels(kind=kind)

    def set_thresholds(self, thresholds: AlertThresholds) -> None:
        """Export every numeric threshold as ``streamlearn_alert_threshold{name}``."""
        for name, value in thresholds.levels().items():
            self.threshold.labels(name=name).set(value)

    def declare_features(self, features: tuple[str, ...]) -> None:
        """Create the ``feature`` series of the monitored features, at NaN."""
        for name in features:
            self.feature_psi.labels(feature=name).set(_NAN)
            self._feature_series.add(name)

    def set_features(
        self,
        exported: Mapping[str, Mapping[str, Any]],
        monitored: int,
        drifted: int,
        psi_max: float | None,
    ) -> None:
        """Set the per-feature series of ``exported`` and remove the others, and the summary."""
        for name in self._feature_series - exported.keys():
            self.feature_psi.remove(name)
        for name in self._feature_ks_series - exported.keys():
            self.feature_ks.remove(name)
        self._feature_ks_series &= exported.keys()
        for name, report in exported.items():
            self.feature_psi.labels(feature=name).set(_value(report["psi"]))
            if "ks" in report:
                self.feature_ks.labels(feature=name).set(_value(report["ks"]))
                self._feature_ks_series.add(name)
        self._feature_series = set(exported)
        self.features_monitored.set(monitored)
        self.features_drifted.set(drifted)
        self.feature_psi_max.set(_value(psi_max))

    def set_slices(self, reports: list[SliceReport]) -> None:
        """Set the slice series of ``reports`` and remove those of slices no longer reported."""
        current = {(r.slice_key, r.slice) for r in reports}
        for key in self._slice_series - current:
            for g, _ in self._slice_gauges:
                g.remove(*key)
        for r in reports:
            for g, field in self._slice_gauges:
                g.labels(slice_key=r.slice_key, slice=r.slice).set(_value(getattr(r, field)))
        self._slice_series = current

    def set_prediction(self, report: PredictionDriftReport) -> None:
        """Set the prediction drift gauges (NaN where the report has no value)."""
        self.prediction_psi.set(_value(report.psi))
        self.prediction_ks.set(_value(report.ks))
        self.positive_rate.labels(window="current").set(_value(report.positive_rate))
        self.positive_rate.labels(window="reference").set(_value(report.reference_positive_rate))
        self.positive_rate_ratio.set(_value(report.positive_rate_ratio))

    def set_quality(self, report: QualityReport, reference_roc_auc: float | None) -> None:
        """Set the online quality gauges."""
        self.online_roc_auc.set(_value(report.roc_auc))
        self.online_log_loss.set(_value(report.log_loss))
        self.online_accuracy.set(_value(report.accuracy))
        self.online_precision.set(_value(report.precision))
        self.online_recall.set(_value(report.recall))
        self.online_recall_at_precision.set(_value(report.recall_at_precision))
        self.online_threshold_at_precision.set(_value(report.threshold_at_precision))
        self.reference_roc_auc.set(_value(reference_roc_auc))
