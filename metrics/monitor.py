"""The drift and quality monitor of one worker.

:class:`Monitor` is the one object the worker and the backtest call: a deque
append per prediction or label, the windowed statistics every
``evaluate_every`` observations (counted in events, not batches, so a replay
gives the same drift events as the live run), and the gauges of
:class:`metrics.monitoring_metrics.MonitoringMetrics` set by :meth:`Monitor.publish`.

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> from streamlearn.metrics.thresholds import MonitoringConfig
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

from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from streamlearn.metrics.concept_drift import ConceptDrift, concept_signal
from streamlearn.metrics.feature_drift import FeatureDrift
from streamlearn.metrics.monitoring_metrics import MonitoringMetrics
from streamlearn.metrics.prediction_drift import PredictionDrift, PredictionDriftReport
from streamlearn.metrics.quality import QualityReport, RollingQuality
from streamlearn.metrics.slices import SliceMonitor, SliceReport
from streamlearn.metrics.thresholds import MonitoringConfig

# MonitoringMetrics is what a Monitor publishes to: importable with it from here.
__all__ = ["Monitor", "MonitoringMetrics"]


class LearningInfo(Protocol):
    """What says how labels are learned (e.g. :class:`learners.imbalance.ClassWeights`)."""

    def metadata(self) -> Mapping[str, float]: ...


class Monitor:
    """Prediction drift, feature drift, concept drift and online quality of one worker.

    Parameters
    ----------
    config
        The monitoring settings and thresholds.
    metrics
        Where :meth:`publish` writes; None to only compute (backtests, tests).
    threshold
        The model's configured threshold (``model.threshold``): a fixed reference.
        The prediction-drift windows count a score above it as positive, whatever
        the decision policy decided, so a policy whose threshold moves by design
        (``precision_at_least``, ``top_fraction``) raises no drift alarm on a
        stationary stream; the decisions themselves go to what is about decisions
        (the slices' decision rates, the fairness ratios).

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
        #: How the model learns its labels (class weights), reported beside its quality.
        self.learning: LearningInfo | None = None
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
        :func:`metrics.slices.slice_values`). Prediction drift watches the score
        and ``score > threshold`` (the fixed reference), never ``decision``: the
        policy's threshold moves with the labels, the model's scores are what drift.
        The decision feeds the slices' decision rates.

        Returns True when the evaluation this prediction triggered found a
        feature newly past ``psi_critical`` (what ``feature_action`` acts on).
        """
        if self.settled:
            self.prediction.update(score, score > self.threshold)
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

    def reports(self) -> tuple[PredictionDriftReport, QualityReport]:
        """The latest evaluation's prediction drift and quality (computed now if none yet)."""
        if self._pred_report is None or self._quality_report is None:
            self.evaluate()
        assert self._pred_report is not None and self._quality_report is not None
        return self._pred_report, self._quality_report

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
            "quality": {
                **self._quality_report.as_dict(),
                **(self.learning.metadata() if self.learning is not None else {}),
            },
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
