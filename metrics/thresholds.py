"""The single definition of alert thresholds and of the monitoring settings.

:class:`AlertThresholds` feeds the generated Prometheus rules, the Grafana
threshold lines, the ``streamlearn_alert_threshold{name}`` gauges and the
in-process drift events of :class:`metrics.monitor.Monitor`.
:class:`MonitoringConfig` is the ``monitoring`` section of the stream config.

Examples
--------
>>> t = AlertThresholds()
>>> t.psi_warning, t.psi_critical, t.p99_latency_seconds
(0.1, 0.25, 0.05)
>>> MonitoringConfig(features=("amount", "country")).features
('amount', 'country')
>>> AlertThresholds(psi_warning=0.3)
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for AlertThresholds
...
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from streamlearn.metrics.concept_drift import BINARY_DETECTORS, DETECTORS

__all__ = ["AlertThresholds", "Duration", "MonitoringConfig", "duration_seconds"]

#: A Prometheus duration such as ``30s``, ``5m`` or ``1h30m``.
Duration = Annotated[str, StringConstraints(pattern=r"^([0-9]+(ms|s|m|h|d|w|y))+$")]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(duration: str) -> float:
    """Seconds in a Prometheus duration.

    Examples
    --------
    >>> duration_seconds("1h30m"), duration_seconds("15s"), duration_seconds("0m")
    (5400.0, 15.0, 0.0)
    """
    parts = re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return float(sum(int(n) * _UNITS[u] for n, u in parts))


class AlertThresholds(BaseModel):
    """Alert thresholds and how long a condition must hold before an alert fires.

    Attributes
    ----------
    psi_warning, psi_critical
        Prediction PSI levels (0.1 moderate shift, 0.25 major shift).
    ks_critical
        Prediction KS statistic level.
    positive_rate_ratio_high, positive_rate_ratio_low
        Allowed band of current over reference positive rate (share of scores above
        ``model.threshold``, a fixed reference whatever the decision policy); outside it
        the pipeline is more likely broken than the world changed.
    p99_latency_seconds
        Event-to-prediction P99 guardrail.
    auc_drop
        Alert when the rolling ROC AUC falls this far below the reference AUC.
    auc_min
        Alert when the rolling ROC AUC falls below this value.
    ece_max
        Alert when the expected calibration error of the scores rises above this value.
    consumer_lag_records
        Records behind the end of a topic, summed over its partitions.
    dead_letter_ratio
        Dead letters per consumed record.
    fairness_ratio_low, fairness_ratio_high
        Allowed band of a slice's mean score (and decision rate) over the rest's
        (``streamlearn_slice_score_ratio``, ``streamlearn_slice_decision_rate_ratio``);
        the defaults are the four-fifths rule and its inverse.
    concept_drift_window
        Window of ``increase()`` over the concept-drift detections counter.
    not_finite_window, not_finite_min_predictions
        A streamlearn series that is NaN or infinite alerts only on a worker that
        published more than ``not_finite_min_predictions`` predictions in the last
        ``not_finite_window``: the drift and quality gauges start at NaN ("no data
        yet") and stay so until their windows fill (about 3000 predictions with
        the default monitoring windows), which is no fault.
    poisoned_window
        Window of ``increase()`` over the counters of labels undone because they
        left a model non-finite, non-finite scores and refused checkpoints.
    label_lag_seconds
        Label freshness: alert when the newest event that learned an explicit label
        (inline or from the labels topic; implicit negatives do not count) is older,
        in event time, than the newest event by more than this. Set it above the
        longest usual label delay (clicks arriving minutes to hours after the event).
    *_for
        Durations a condition must hold before its alert fires.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    psi_warning: float = Field(0.1, gt=0, le=10)
    psi_critical: float = Field(0.25, gt=0, le=10)
    ks_critical: float = Field(0.2, gt=0, le=1)
    positive_rate_ratio_high: float = Field(3.0, gt=1, le=1000)
    positive_rate_ratio_low: float = Field(1 / 3, gt=0, lt=1)
    p99_latency_seconds: float = Field(0.05, gt=0, le=3600)
    auc_drop: float = Field(0.05, gt=0, lt=1)
    auc_min: float = Field(0.55, ge=0, le=1)
    ece_max: float = Field(0.1, gt=0, le=1)
    consumer_lag_records: int = Field(10_000, gt=0, le=1_000_000_000_000)
    dead_letter_ratio: float = Field(0.01, gt=0, le=1)
    not_finite_min_predictions: int = Field(5000, ge=0, le=1_000_000_000)
    fairness_ratio_low: float = Field(0.8, gt=0, lt=1)
    fairness_ratio_high: float = Field(1.25, gt=1, le=1000)
    label_lag_seconds: float = Field(7200.0, gt=0, le=31_536_000)

    concept_drift_window: Duration = "15m"
    not_finite_window: Duration = "1h"
    poisoned_window: Duration = "15m"
    prediction_drift_for: Duration = "10m"
    positive_rate_for: Duration = "2m"
    feature_drift_for: Duration = "15m"
    fairness_for: Duration = "15m"
    quality_for: Duration = "10m"
    latency_for: Duration = "5m"
    consumer_lag_for: Duration = "5m"
    dead_letter_for: Duration = "5m"
    worker_down_for: Duration = "1m"
    dependency_down_for: Duration = "1m"
    undelivered_for: Duration = "1m"
    not_finite_for: Duration = "15m"
    label_lag_for: Duration = "10m"

    @model_validator(mode="after")
    def _ordered(self) -> AlertThresholds:
        if self.psi_warning >= self.psi_critical:
            raise ValueError(
                f"psi_warning ({self.psi_warning}) must be below psi_critical ({self.psi_critical})"
            )
        return self

    def levels(self) -> dict[str, float]:
        """The numeric thresholds by name (the ``name`` label of the threshold gauges).

        Examples
        --------
        >>> AlertThresholds().levels()["consumer_lag_records"]
        10000.0
        """
        return {
            name: float(value)
            for name, value in self.model_dump().items()
            if isinstance(value, int | float)
        }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1_000_000


def _probability(value: Any) -> bool:
    return _number(value) and 0 < value < 1


#: The valid values of each drift detector's arguments: (check, what is allowed).
_DETECTOR_PARAMS: dict[str, dict[str, tuple[Any, str]]] = {
    "adwin": {
        "delta": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
        "clock": (_count, "an integer in [1, 1000000]"),
        "max_buckets": (_count, "an integer in [1, 1000000]"),
        "min_window_length": (_count, "an integer in [1, 1000000]"),
        "grace_period": (_count, "an integer in [1, 1000000]"),
    },
    "page_hinkley": {
        "min_instances": (_count, "an integer in [1, 1000000]"),
        "delta": (lambda v: _number(v) and v >= 0, "a number >= 0"),
        "threshold": (lambda v: _number(v) and v > 0, "a number > 0"),
        "alpha": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
        "mode": (lambda v: v in ("up", "down", "both"), "up, down or both"),
    },
    "hddm_a": {
        "drift_confidence": (_probability, "a number in (0, 1)"),
        "warning_confidence": (_probability, "a number in (0, 1)"),
        "two_sided_test": (lambda v: isinstance(v, bool), "true or false"),
    },
    "hddm_w": {
        "drift_confidence": (_probability, "a number in (0, 1)"),
        "warning_confidence": (_probability, "a number in (0, 1)"),
        "lambda_val": (_probability, "a number in (0, 1)"),
        "two_sided_test": (lambda v: isinstance(v, bool), "true or false"),
    },
    "ddm": {
        "warm_start": (_count, "an integer in [1, 1000000]"),
        "warning_threshold": (lambda v: _number(v) and v > 0, "a number > 0"),
        "drift_threshold": (lambda v: _number(v) and v > 0, "a number > 0"),
    },
}


class MonitoringConfig(BaseModel):
    """Settings of the drift and quality monitor (the ``monitoring`` config section).

    Attributes
    ----------
    reference_mode
        ``"first_n"``: the first ``reference_size`` predictions of a model
        version; ``"trailing"``: the ``reference_size`` predictions before the
        current window.
    reference_size, window_size
        Predictions in the reference and current drift windows.
    n_bins
        Quantile bins of the PSI.
    evaluate_every
        Observations (predictions plus labels) between two computations of the
        windowed statistics; bounds their cost per event. The default, 250,
        recomputes them about eight times per current window of 1000 events
        with their labels.
    detail_evaluate_every
        Observations between two computations of the per-feature (PSI, KS)
        and per-slice statistics, at the first scheduled evaluation at or after
        that many: their cost grows with the number of features and slices, so
        they are computed less often than the prediction statistics (the
        default, 1000, about twice per current window with its labels).
    features
        Features whose input drift is monitored (at most 32, each exported as a
        ``feature`` label value). Empty (the default): every input feature of
        the model, the first ``max_monitored_features`` seen, of which only the
        ``feature_top_k`` with the highest PSI are exported by name.
    max_monitored_features
        Features with drift windows when ``features`` is empty (0: no feature
        drift); later new names are not monitored.
    feature_scope
        Which of the model's inputs the worker watches when ``features`` is
        empty: ``inputs`` (the default), what producers send, the event's
        ``features`` and its ``context`` (``ctx_*``), where a broken pipeline
        shows; ``all`` adds the derived ones, the time of day and the
        interaction counters, which drift by construction (counts grow, the
        clock turns) and would keep the alert firing.
    feature_top_k
        Features exported as ``streamlearn_feature_psi{feature}`` and
        ``streamlearn_feature_ks{feature}`` when ``features`` is empty: the
        names of the current top K by PSI; a name leaving the top K has its
        series removed, so a scrape never holds more than K. The others are
        summarised by ``streamlearn_feature_psi_max`` and
        ``streamlearn_features_drifted`` (PSI above ``psi_critical``).
    feature_action
        What a feature drift of the champion (a feature's PSI crossing
        ``psi_critical``) does besides its drift event and alert: ``alert``
        nothing more, ``challenger`` start a challenger as ``concept_action``
        does.
    slices
        Slice keys: ``context.<name>`` (a field of the event's context) or an
        event field (``author_id``, ``item_id``, ``user_id``); at most 8.
    slice_top_k
        Values per slice key reported by name: the most frequent in the slice
        window; the rest pool into the slice ``other``.
    slice_window
        Predictions, and labels, in the slice windows.
    slice_min_count
        Predictions a slice and the rest each need before its ratios are
        reported (fewer: NaN, which no alert matches).
    slice_min_decisions
        Positive decisions the smaller of a slice and the rest would hold at
        their pooled decision rate before the decision-rate ratio is reported:
        with rare positive decisions (clicks predicted at a few per cent) the
        ratio of two small counts is noise, 1.3 or 0.77 on slices scored alike.
    max_categories
        Categories kept per categorical feature's reference; the rest are pooled.
    concept_detector, concept_params
        River detector fed ``concept_signal`` of each learned label, and its
        arguments. ``hddm_a``, ``hddm_w`` and ``ddm`` take 0/1 values: the
        ``error`` signal only.
    concept_signal
        What the detector watches per label (:func:`metrics.concept_drift.concept_signal`):
        ``error`` (the decision's 0/1 error), ``brier`` or ``log_loss``.
    concept_warmup_labels
        Labels after a start or a reset during which no concept drift is
        reported (the model's own learning moves its loss).
    drift_warmup_labels
        Labels a model learns before its predictions and features enter the
        drift windows: the reference is taken from a settled model, and the
        first comparison waits for it. A stream without labels starts them
        after ten times as many predictions.
    concept_action
        What the learner does on a concept drift detection: nothing, reset the
        model, or start a challenger.
    max_detections, max_drift_events
        Detections and drift events kept in memory.
    quality_window
        Labels in the rolling quality window.
    precision_target
        Precision that ``recall_at_precision`` must keep.
    thresholds
        The alert thresholds.

    Notes
    -----
    The defaults (``"trailing"``, 2000 reference and 1000 current predictions)
    come from backtests of the logistic preset on synthetic worlds
    (:mod:`stream.synthetic`, 30k events, three seeds) with drift injected at
    a known event. An online model moves its own score distribution while it
    learns, so a ``"first_n"`` reference (its cold-start predictions) keeps the
    prediction PSI and the positive-rate ratio past their critical levels on
    every evaluation of a stationary stream: a permanent alert. A trailing
    reference compares the last 1000 predictions with the 2000 before them: no
    critical crossing after the warm-up on the stationary streams (a 1000/1000
    trailing pair had 0 to 6 per 30k events, 500/500 had 10 to 20; 2000/2000
    missed most broken pipelines), the positive-rate ratio crossing 160 to 360
    events after a broken pipeline and the feature PSI about 410 events after
    a feature shift. The price: after a cold start the statistics stay past
    their levels until 4000 to 6500 predictions (reference and window both
    past the first learning), and a change is compared with what came just
    before it, so a drift slower than about 3000 predictions is not seen here
    (the concept drift detector and the quality metrics watch that).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    reference_mode: Literal["first_n", "trailing"] = "trailing"
    reference_size: int = Field(2000, ge=10, le=1_000_000)
    window_size: int = Field(1000, ge=10, le=1_000_000)
    n_bins: int = Field(10, ge=2, le=100)
    evaluate_every: int = Field(250, ge=1, le=1_000_000)
    features: tuple[Annotated[str, StringConstraints(min_length=1, max_length=64)], ...] = Field(
        (), max_length=32
    )
    detail_evaluate_every: int = Field(1000, ge=1, le=1_000_000)
    max_monitored_features: int = Field(64, ge=0, le=1000)
    feature_scope: Literal["inputs", "all"] = "inputs"
    feature_top_k: int = Field(10, ge=1, le=100)
    feature_action: Literal["alert", "challenger"] = "alert"
    slices: tuple[
        Annotated[
            str,
            StringConstraints(pattern=r"^(context\.[^\s]{1,64}|author_id|item_id|user_id)$"),
        ],
        ...,
    ] = Field((), max_length=8)
    slice_top_k: int = Field(10, ge=1, le=100)
    slice_window: int = Field(5000, ge=10, le=1_000_000)
    slice_min_count: int = Field(200, ge=1, le=1_000_000)
    slice_min_decisions: int = Field(100, ge=1, le=1_000_000)
    max_categories: int = Field(50, ge=1, le=1000)
    concept_detector: Literal["adwin", "page_hinkley", "hddm_a", "hddm_w", "ddm"] = "adwin"
    concept_params: dict[str, int | float | str] = Field(default_factory=dict)
    concept_signal: Literal["error", "brier", "log_loss"] = "error"
    concept_warmup_labels: int = Field(1000, ge=0, le=1_000_000)
    drift_warmup_labels: int = Field(1000, ge=0, le=1_000_000)
    concept_action: Literal["none", "reset", "challenger"] = "none"
    max_detections: int = Field(1000, ge=1, le=100_000)
    max_drift_events: int = Field(1000, ge=1, le=100_000)
    quality_window: int = Field(1000, ge=10, le=1_000_000)
    precision_target: float = Field(0.995, gt=0, le=1)
    thresholds: AlertThresholds = Field(default_factory=AlertThresholds)

    @model_validator(mode="after")
    def _check(self) -> MonitoringConfig:
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"monitored features must be unique: {self.features}")
        if len(set(self.slices)) != len(self.slices):
            raise ValueError(f"slice keys must be unique: {self.slices}")
        try:
            DETECTORS[self.concept_detector](**self.concept_params)
        except TypeError as exc:
            raise ValueError(f"bad concept_params for {self.concept_detector}: {exc}") from exc
        for name, value in self.concept_params.items():
            allowed = _DETECTOR_PARAMS[self.concept_detector].get(name)
            if allowed is not None and not allowed[0](value):
                raise ValueError(
                    f"concept_params.{name} of {self.concept_detector} must be {allowed[1]}"
                    f" (got {value!r})"
                )
        if self.concept_detector in BINARY_DETECTORS and self.concept_signal != "error":
            raise ValueError(
                f"concept_detector {self.concept_detector} takes 0/1 values:"
                f" set concept_signal to error (it is {self.concept_signal})"
            )
        return self

    def summary(self) -> dict[str, Any]:
        """The settings as a plain dict (for reports).

        Examples
        --------
        >>> MonitoringConfig().summary()["concept_detector"]
        'adwin'
        """
        return self.model_dump(mode="json")
