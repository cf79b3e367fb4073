"""The drift and quality monitor, and its Prometheus gauges.

:class:`Monitor` is the one object the worker and the backtest call: a deque
append per prediction or label, the windowed statistics every
``evaluate_every`` observations (counted in events, not batches, so a replay
gives the same drift events as the live run), gauges set by :meth:`Monitor.publish`.

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> from metrics.thresholds import MonitoringConfig
>>> registry = CollectorRegistry()
>>> config = MonitoringConfig(reference_size=100, window_size=100, evaluate_every=10,
...                           drift_warmup_labels=0)
>>> monitor = Monitor(config, MonitoringMetrics(registry))
>>> for i in range(200):
...     score = 0.9 if i >= 100 and i % 5 else (i % 10) / 20
...     _ = monitor.observe_prediction(score, score >= 0.5, {}, event_time_ms=i)
>>> monitor.publish()
>>> registry.get_sample_value("streamlearn_prediction_positive_rate", {"window": "current"})
0.8
>>> [(e["kind"], e["name"]) for e in monitor.drift_events]
[('prediction', 'psi'), ('prediction', 'ks'), ('prediction', 'positive_rate_ratio')]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from metrics.concept_drift import ConceptDrift, concept_signal
from metrics.feature_drift import FeatureDrift
from metrics.prediction_drift import PredictionDrift, PredictionDriftReport
from metrics.quality import QualityReport, RollingQuality
from metrics.slices import SliceMonitor, SliceReport
from metrics.thresholds import AlertThresholds, MonitoringConfig

__all__ = [
    "CONCEPT_DRIFT_DETECTIONS",
    "DRIFT_EVENTS",
    "FEATURE_KS",
    "FEATURE_PSI",
    "FEATURE_PSI_MAX",
    "LABELLED_METRICS",
    "FEATURES_DRIFTED",
    "FEATURES_MONITORED",
    "MONITOR_METRICS",
    "ONLINE_ACCURACY",
    "ONLINE_LOG_LOSS",
    "ONLINE_PRECISION",
    "ONLINE_RECALL",
    "ONLINE_RECALL_AT_PRECISION",
    "ONLINE_ROC_AUC",
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
    "Monitor",
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
            "Share of positive decisions, by window (reference or current).",
            ("window",),
        )
        self.positive_rate_ratio = gauge(
            POSITIVE_RATE_RATIO, "Current over reference positive-decision rate."
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
        self.concept_drift_detections = Counter(
            CONCEPT_DRIFT_DETECTIONS.removesuffix("_total"),
            "Concept drift detections on the loss of learned labels.",
            registry=registry,
        )
        self.drift_events = Counter(
            DRIFT_EVENTS.removesuffix("_total"),
            "Drift statistics crossing their critical threshold, by kind.",
            ["kind"],
            registry=registry,
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


class Monitor:
    """Prediction drift, feature drift, concept drift and online quality of one worker.

    Parameters
    ----------
    config
        The monitoring settings and thresholds.
    metrics
        Where :meth:`publish` writes; None to only compute (backtests, tests).
    threshold
        The model's decision threshold: a score above it is a positive decision.

    Attributes
    ----------
    drift_events
        Bounded list of dicts ``{"kind", "name", "event_index", "timestamp",
        "value"}``, one each time a statistic crosses its critical threshold
        (edge-triggered: it must fall back before it can fire again).
        ``kind`` is ``"prediction"`` (name ``psi``, ``ks`` or
        ``positive_rate_ratio``), ``"feature"`` (name: the feature) or
        ``"concept"`` (name: the detector). ``event_index`` counts predictions
        (labels for ``"concept"``) since the monitor was built; ``timestamp``
        is the event time in milliseconds given with the observation.

    Notes
    -----
    The reference ROC AUC is the AUC of the first full quality window after a
    reset in ``"first_n"`` mode, and of the ``quality_window`` labels before
    the current window in ``"trailing"`` mode.
    """

    def __init__(
        self,
        config: MonitoringConfig,
        metrics: MonitoringMetrics | None = None,
        threshold: float = 0.5,
    ) -> None:
        self.config = config
        self.thresholds = config.thresholds
        self.metrics = metrics
        self.prediction = PredictionDrift(
            reference_size=config.reference_size,
            window_size=config.window_size,
            mode=config.reference_mode,
            n_bins=config.n_bins,
        )
        auto = not config.features and config.max_monitored_features > 0
        self.features = FeatureDrift(
            None if auto else config.features,
            reference_size=config.reference_size,
            window_size=config.window_size,
            mode=config.reference_mode,
            n_bins=config.n_bins,
            max_categories=config.max_categories,
            max_features=max(config.max_monitored_features, len(config.features)),
        )
        self._features_on = auto or bool(config.features)
        self.slices = (
            SliceMonitor(
                config.slices,
                window=config.slice_window,
                top_k=config.slice_top_k,
                min_count=config.slice_min_count,
                min_decisions=config.slice_min_decisions,
            )
            if config.slices
            else None
        )
        self.concept = ConceptDrift(
            config.concept_detector,
            config.concept_params,
            max_detections=config.max_detections,
            warmup=config.concept_warmup_labels,
        )
        self.threshold = threshold
        self.quality = RollingQuality(
            window=config.quality_window,
            threshold=threshold,
            precision_target=config.precision_target,
        )
        self._reference_quality = RollingQuality(window=config.quality_window)
        self.reference_roc_auc: float | None = None
        self.drift_events: deque[dict[str, Any]] = deque(maxlen=config.max_drift_events)
        self.n_predictions = 0
        self.n_labels = 0
        self.last_event_time_ms: float | None = None
        self._observations = 0
        self._active: dict[tuple[str, str], bool] = {}
        self._pred_report: PredictionDriftReport | None = None
        self._feature_report: dict[str, dict[str, Any]] = {}
        self._quality_report: QualityReport | None = None
        self._slice_report: list[SliceReport] = []
        self._details_at = 0
        self._checked: tuple[dict[str, dict[str, Any]], list[SliceReport]] = ({}, [])
        #: A feature crossed ``psi_critical`` since :meth:`observe_prediction` last returned.
        self._feature_drift = False
        self._published_detections = 0
        self._labels_since_reset = 0
        self._predictions_since_reset = 0
        if metrics is not None:
            metrics.set_thresholds(self.thresholds)
            metrics.declare_features(config.features)

    def observe_prediction(
        self,
        score: float,
        decision: bool,
        features: Mapping[str, Any] | None = None,
        event_time_ms: float | None = None,
        slices: tuple[str | None, ...] | None = None,
    ) -> bool:
        """Record one prediction: its score, decision, the features it used, its slice values.

        Until the model has settled (``drift_warmup_labels``) the prediction is
        counted but kept out of the drift and slice windows. ``slices`` holds
        the event's value for each of ``config.slices`` (see
        :func:`metrics.slices.slice_values`).

        Returns True when the evaluation this prediction triggered found a
        feature newly past ``psi_critical`` (what ``feature_action`` acts on).
        """
        if self.settled:
            self.prediction.update(score, decision)
            if features is not None and self._features_on:
                self.features.update(features)
            if slices is not None and self.slices is not None:
                self.slices.observe_prediction(slices, score, decision)
        self.n_predictions += 1
        self._predictions_since_reset += 1
        if event_time_ms is not None:
            self.last_event_time_ms = event_time_ms
        self._tick()
        drifted, self._feature_drift = self._feature_drift, False
        return drifted

    def observe_label(
        self,
        score: float,
        y_true: bool,
        weight: float = 1.0,
        event_time_ms: float | None = None,
        slices: tuple[str | None, ...] | None = None,
    ) -> bool:
        """Record a learned label with the score the model gave; True on a concept drift.

        ``slices``: the labelled event's slice values, or None when they are
        not known (the label is then left out of the slice statistics).
        """
        if self.config.reference_mode == "trailing" and self.quality.full:
            oldest = self.quality.oldest
            if oldest is not None:
                self._reference_quality.update(*oldest)
        self.quality.update(y_true, score, weight)
        if slices is not None and self.slices is not None:
            self.slices.observe_label(slices, y_true, score, weight)
        index = self.n_labels
        self.n_labels += 1
        self._labels_since_reset += 1
        signal = concept_signal(self.config.concept_signal, y_true, score, self.threshold)
        detected = self.concept.update(signal, event_time_ms)
        if detected:
            self.drift_events.append(
                {
                    "kind": "concept",
                    "name": self.concept.detector_name,
                    "event_index": index,
                    "timestamp": event_time_ms,
                    "value": None,
                }
            )
            if self.metrics is not None:
                self.metrics.drift_events.labels(kind="concept").inc()
        self._tick()
        return detected

    @property
    def settled(self) -> bool:
        """Whether the model has learned enough for its predictions to enter the drift windows."""
        warmup = self.config.drift_warmup_labels
        return self._labels_since_reset >= warmup or self._predictions_since_reset >= 10 * warmup

    def _tick(self) -> None:
        self._observations += 1
        if self._observations % self.config.evaluate_every == 0:
            self.evaluate(scheduled=True)

    def evaluate(self, scheduled: bool = False) -> None:
        """Compute every windowed statistic now.

        The reference AUC is taken and threshold crossings are recorded only on
        the scheduled evaluations (``scheduled=True``, every ``evaluate_every``
        observations), so what the monitor records about a stream does not
        depend on when or how often the caller publishes.
        """
        self._pred_report = self.prediction.report(refresh=True)
        due = self._observations - self._details_at >= self.config.detail_evaluate_every
        if not scheduled or due:
            self._feature_report = self.features.report(refresh=True)
            if self.slices is not None:
                self._slice_report = self.slices.report()
            if scheduled:
                # Crossings are checked on these only, whenever the caller publishes.
                self._details_at = self._observations
                self._checked = (self._feature_report, self._slice_report)
        self._quality_report = self.quality.report()
        if scheduled:
            self._update_reference_auc(self._quality_report)
            self._record_crossings()

    def _record_crossings(self) -> None:
        assert self._pred_report is not None
        t = self.thresholds
        pred = self._pred_report
        ratio = pred.positive_rate_ratio
        checks: list[tuple[str, str, float | None, bool]] = [
            ("prediction", "psi", pred.psi, pred.psi is not None and pred.psi > t.psi_critical),
            ("prediction", "ks", pred.ks, pred.ks is not None and pred.ks > t.ks_critical),
            (
                "prediction",
                "positive_rate_ratio",
                ratio,
                ratio is not None
                and not t.positive_rate_ratio_low <= ratio <= t.positive_rate_ratio_high,
            ),
        ]
        feature_report, slice_report = self._checked
        for name, report in feature_report.items():
            value = report["psi"]
            checks.append(("feature", name, value, value is not None and value > t.psi_critical))
        low, high = t.fairness_ratio_low, t.fairness_ratio_high
        for r in slice_report:
            for stat in ("score_ratio", "decision_rate_ratio"):
                value = getattr(r, stat)
                crossed = value is not None and not low <= value <= high
                checks.append(("fairness", f"{r.slice_key}={r.slice}:{stat}", value, crossed))
        checked = {(kind, name) for kind, name, _, _ in checks}
        for key in [k for k in self._active if k[0] == "fairness" and k not in checked]:
            del self._active[key]  # a slice that left the top K: its state goes with it
        for kind, name, value, crossed in checks:
            key = (kind, name)
            if crossed and not self._active.get(key, False):
                if kind == "feature":
                    self._feature_drift = True
                self.drift_events.append(
                    {
                        "kind": kind,
                        "name": name,
                        "event_index": self.n_predictions,
                        "timestamp": self.last_event_time_ms,
                        "value": value,
                    }
                )
                if self.metrics is not None:
                    self.metrics.drift_events.labels(kind=kind).inc()
            self._active[key] = crossed

    def _update_reference_auc(self, report: QualityReport) -> None:
        if self.config.reference_mode == "first_n":
            if self.reference_roc_auc is None and self.quality.full:
                self.reference_roc_auc = report.roc_auc
        elif self._reference_quality.full:
            self.reference_roc_auc = self._reference_quality.roc_auc()

    def publish(self, refresh: bool = False) -> None:
        """Set the gauges from the latest evaluation (computed first if ``refresh`` or none yet)."""
        if refresh or self._pred_report is None:
            self.evaluate()
        if self.metrics is None:
            return
        assert self._pred_report is not None and self._quality_report is not None
        self.metrics.set_prediction(self._pred_report)
        summary = self.feature_summary()
        self.metrics.set_features(
            self.exported_features(),
            summary["monitored"],
            summary["drifted"],
            summary["psi_max"],
        )
        if self.slices is not None:
            self.metrics.set_slices(self._slice_report)
        self.metrics.set_quality(self._quality_report, self.reference_roc_auc)
        new = self.concept.n_detections - self._published_detections
        if new > 0:
            self.metrics.concept_drift_detections.inc(new)
            self._published_detections = self.concept.n_detections

    def exported_features(self) -> dict[str, dict[str, Any]]:
        """The feature reports exported by name: the configured features, or the top K by PSI.

        Examples
        --------
        >>> config = MonitoringConfig(reference_size=10, window_size=10, evaluate_every=5,
        ...                           detail_evaluate_every=5, drift_warmup_labels=0,
        ...                           feature_top_k=2)
        >>> m = Monitor(config)
        >>> for i in range(20):
        ...     _ = m.observe_prediction(0.5, False, {"a": i, "b": i % 2, "c": i % 3})
        >>> sorted(m.exported_features())
        ['a', 'c']
        """
        if self.config.features:
            return dict(self._feature_report)
        ranked = sorted(
            (
                (report["psi"], name)
                for name, report in self._feature_report.items()
                if report["psi"] is not None
            ),
            key=lambda item: (-item[0], item[1]),
        )
        top = ranked[: self.config.feature_top_k]
        return {name: self._feature_report[name] for _, name in top}

    def feature_summary(self) -> dict[str, Any]:
        """Monitored features, how many are past ``psi_critical``, and the highest PSI."""
        values = [r["psi"] for r in self._feature_report.values() if r["psi"] is not None]
        return {
            "monitored": len(self._feature_report),
            "unmonitored_observations": self.features.n_unmonitored,
            "drifted": sum(v > self.thresholds.psi_critical for v in values),
            "psi_max": max(values) if values else None,
        }

    def reset_reference(self) -> None:
        """Start new reference windows (call when the served model version changes).

        The new model warms up again before its predictions enter the drift windows.
        """
        self._labels_since_reset = 0
        self._predictions_since_reset = 0
        self.prediction.reset()
        self.features.reset()
        if self.slices is not None:
            self.slices.reset()
        self.quality.reset()
        self._reference_quality.reset()
        self.reference_roc_auc = None
        self.concept.reset()
        self._active.clear()
        self._checked = ({}, [])
        self._details_at = self._observations
        self.evaluate()

    def snapshot(self, refresh: bool = False) -> dict[str, Any]:
        """Everything the monitor knows, as plain data (for backtest reports).

        Examples
        --------
        >>> m = Monitor(MonitoringConfig())
        >>> m.observe_label(0.9, True, event_time_ms=5)
        False
        >>> snap = m.snapshot(refresh=True)
        >>> snap["n_labels"], snap["quality"]["accuracy"], snap["prediction"]["psi"]
        (1, 1.0, None)
        """
        if refresh or self._pred_report is None:
            self.evaluate()
        assert self._pred_report is not None and self._quality_report is not None
        return {
            "n_predictions": self.n_predictions,
            "n_labels": self.n_labels,
            "last_event_time_ms": self.last_event_time_ms,
            "prediction": self._pred_report.as_dict(),
            "features": {name: dict(r) for name, r in self._feature_report.items()},
            "feature_summary": self.feature_summary(),
            "slices": [r.as_dict() for r in self._slice_report],
            "quality": self._quality_report.as_dict(),
            "reference_roc_auc": self.reference_roc_auc,
            "concept": {
                "detector": self.concept.detector_name,
                "n_detections": self.concept.n_detections,
                "detections": [
                    {"index": d.index, "event_time": d.event_time} for d in self.concept.detections
                ],
            },
            "drift_events": [dict(e) for e in self.drift_events],
        }
