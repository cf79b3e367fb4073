"""The alerting rules: what each alert watches, its threshold, its message and its test.

The rules are built from :class:`metrics.thresholds.AlertThresholds` and the
metric names of :mod:`metrics.instruments` and :mod:`metrics.monitoring_metrics`;
the model's rules (drift, quality, fairness, non-finite numbers) are here, the
pipeline's in :mod:`metrics.pipeline_alerts`. :mod:`metrics.alert_files` renders
them, with the promtool tests that prove each alert fires and resolves;
``streamlearn metrics generate`` writes the files.

Examples
--------
>>> rules = alert_rules(AlertThresholds())
>>> sorted({r.alert for r in rules})[:3]
['StreamlearnCalibrationECEHigh', 'StreamlearnConceptDrift', 'StreamlearnConsumerLagHigh']
>>> next(r.expr for r in rules if r.alert == "StreamlearnWorkerDown")
'up{job="streamlearn"} == 0'
"""

from __future__ import annotations

import math

from streamlearn.metrics.alert_rule import (
    AFTER,
    BEFORE,
    INSTANCE,
    VALUE3,
    AlertRule,
    Scenario,
    abnormal_seconds,
    counter_values,
    gauge_scenario,
    selector,
    steps,
)
from streamlearn.metrics.decision_metrics import CALIBRATION_ECE
from streamlearn.metrics.experiment_metrics import experiment_rules
from streamlearn.metrics.instruments import (
    CHECKPOINTS_REFUSED,
    JOB,
    LABELS_LEARNED,
    LABELS_POSITIVE,
    LABELS_SKIPPED,
    PREDICTIONS,
    SCORES_NOT_FINITE,
)
from streamlearn.metrics.monitoring_metrics import (
    CONCEPT_DRIFT_DETECTIONS,
    FEATURE_PSI,
    ONLINE_ROC_AUC,
    POSITIVE_RATE_RATIO,
    PREDICTION_KS,
    PREDICTION_PSI,
    REFERENCE_ROC_AUC,
    SLICE_DECISION_RATE_RATIO,
    SLICE_SCORE_RATIO,
)
from streamlearn.metrics.pipeline_alerts import delivery_rules, serving_rules
from streamlearn.metrics.thresholds import AlertThresholds, duration_seconds

__all__ = [
    "ALL_SERIES",
    "POSITIVE_LABEL_RATE",
    "alert_names",
    "alert_rules",
    "recording_rules",
]

#: Recording rule: positive labels per learned label over 5m (the click-through rate).
POSITIVE_LABEL_RATE = "streamlearn:positive_label_rate:5m"
#: Every series of the workers, with its name copied into a ``metric`` label, so
#: arithmetic on them keeps series of different names apart.
ALL_SERIES = (
    f'label_replace({{__name__=~"streamlearn_.+", job="{JOB}"}},'
    ' "metric", "$1", "__name__", "(.+)")'
)


def alert_rules(t: AlertThresholds) -> list[AlertRule]:
    """The alerting rules for thresholds ``t``, each with its test scenario(s).

    Examples
    --------
    >>> [r.severity for r in alert_rules(AlertThresholds()) if "PSI" in r.alert][:2]
    ['warning', 'critical']
    """
    return [
        *_model_rules(t), *serving_rules(t), *_not_finite_rules(t), *delivery_rules(t),
        *experiment_rules(t),
    ]  # fmt: skip


def _model_rules(t: AlertThresholds) -> list[AlertRule]:
    """Prediction and feature drift, fairness, concept drift, online quality."""
    low, high = t.positive_rate_ratio_low, t.positive_rate_ratio_high
    return [
        AlertRule(
            alert="StreamlearnPredictionDriftPSI",
            group="streamlearn-model",
            expr=f"{PREDICTION_PSI} > {t.psi_warning!r}",
            for_=t.prediction_drift_for,
            severity="warning",
            summary=f"Prediction distribution shifted (PSI {VALUE3})",
            description=(
                f"PSI of the scores of {{{{ $labels.instance }}}} against its reference window is "
                f"{VALUE3}, above {t.psi_warning!r} for {t.prediction_drift_for}. Check the inputs "
                "for data drift; retrain if it persists."
            ),
            scenarios=(
                gauge_scenario(
                    PREDICTION_PSI,
                    t.psi_warning / 2,
                    (t.psi_warning + t.psi_critical) / 2,
                    t.prediction_drift_for,
                ),
            ),
        ),
        AlertRule(
            alert="StreamlearnPredictionDriftPSI",
            group="streamlearn-model",
            expr=f"{PREDICTION_PSI} > {t.psi_critical!r}",
            for_=t.prediction_drift_for,
            severity="critical",
            summary=f"Prediction distribution shifted a lot (PSI {VALUE3})",
            description=(
                f"PSI of the scores of {{{{ $labels.instance }}}} against its reference window is "
                f"{VALUE3}, above {t.psi_critical!r} for {t.prediction_drift_for}: a major shift. "
                "Check the feature pipeline before trusting the model."
            ),
            scenarios=(
                gauge_scenario(
                    PREDICTION_PSI,
                    t.psi_warning / 2,
                    round(t.psi_critical * 1.5, 6),
                    t.prediction_drift_for,
                    also_firing=("warning",),
                ),
            ),
        ),
        AlertRule(
            alert="StreamlearnPredictionKS",
            group="streamlearn-model",
            expr=f"{PREDICTION_KS} > {t.ks_critical!r}",
            for_=t.prediction_drift_for,
            severity="warning",
            summary=f"Score distribution differs from the reference (KS {VALUE3})",
            description=(
                f"Two-sample KS statistic between the reference and current scores of "
                f"{{{{ $labels.instance }}}} is {VALUE3}, above {t.ks_critical!r} for "
                f"{t.prediction_drift_for}."
            ),
            scenarios=(
                gauge_scenario(
                    PREDICTION_KS,
                    t.ks_critical / 4,
                    round(min(1.0, t.ks_critical * 2), 6),
                    t.prediction_drift_for,
                ),
            ),
        ),
        AlertRule(
            alert="StreamlearnPositiveRateShift",
            group="streamlearn-model",
            expr=(f"{POSITIVE_RATE_RATIO} > {high!r} or {POSITIVE_RATE_RATIO} < {low!r}"),
            for_=t.positive_rate_for,
            severity="critical",
            summary=f"Positive rate is {VALUE3}x its reference",
            description=(
                f"{{{{ $labels.instance }}}} scores events above model.threshold at {VALUE3} times"
                f" the reference rate, outside [{low:.3g}, {high:.3g}] for {t.positive_rate_for}. "
                "A jump like 5% to 80% means a broken pipeline (features, schema, model load), "
                "not a changed world: check the inputs and roll back the model if needed."
            ),
            scenarios=(
                gauge_scenario(POSITIVE_RATE_RATIO, 1.0, round(high * 2, 6), t.positive_rate_for),
                gauge_scenario(POSITIVE_RATE_RATIO, 1.0, round(low / 2, 6), t.positive_rate_for),
            ),
        ),
        AlertRule(
            alert="StreamlearnFeatureDriftPSI",
            group="streamlearn-model",
            expr=f"{FEATURE_PSI} > {t.psi_critical!r}",
            for_=t.feature_drift_for,
            severity="warning",
            summary=f"Feature {{{{ $labels.feature }}}} drifted (PSI {VALUE3})",
            description=(
                f"PSI of feature {{{{ $labels.feature }}}} on {{{{ $labels.instance }}}} against "
                f"its reference window is {VALUE3}, above {t.psi_critical!r} for "
                f"{t.feature_drift_for}. Data drift: schedule retraining or check the source."
            ),
            scenarios=(
                gauge_scenario(
                    FEATURE_PSI,
                    t.psi_warning / 2,
                    round(t.psi_critical * 2, 6),
                    t.feature_drift_for,
                    labels={"feature": "amount"},
                ),
            ),
        ),
        _fairness_rule(t),
        AlertRule(
            alert="StreamlearnConceptDrift",
            group="streamlearn-model",
            expr=f"increase({CONCEPT_DRIFT_DETECTIONS}[{t.concept_drift_window}]) > 0",
            for_="0m",
            severity="warning",
            summary="Concept drift detected on the online loss",
            description=(
                f"The drift detector on the log loss of learned labels fired on "
                f"{{{{ $labels.instance }}}} in the last {t.concept_drift_window}: the relation "
                "between features and labels changed. Watch the online AUC; the configured "
                "concept action (reset or challenger) applies."
            ),
            scenarios=(
                Scenario(
                    series=(
                        (
                            selector(CONCEPT_DRIFT_DETECTIONS, INSTANCE),
                            f"0x{steps(BEFORE) - 1} 1x{steps(3600.0) - 1}",
                        ),
                    ),
                    start=BEFORE,
                    end=BEFORE,
                    value=1.0,
                    labels=dict(INSTANCE),
                    resolve_after=duration_seconds(t.concept_drift_window) + 300.0,
                    fire_after=60.0,
                ),
            ),
        ),
        AlertRule(
            alert="StreamlearnOnlineAUCDrop",
            group="streamlearn-model",
            expr=f"{ONLINE_ROC_AUC} < {REFERENCE_ROC_AUC} - {t.auc_drop!r}",
            for_=t.quality_for,
            severity="critical",
            summary=f"Online ROC AUC dropped to {VALUE3}",
            description=(
                f"Rolling ROC AUC of {{{{ $labels.instance }}}} is {VALUE3}, more than "
                f"{t.auc_drop!r} below its reference for {t.quality_for}. Online quality "
                "degraded: roll back to the previous model version and investigate."
            ),
            scenarios=(
                gauge_scenario(
                    ONLINE_ROC_AUC,
                    0.8,
                    round(0.8 - 2 * t.auc_drop, 6),
                    t.quality_for,
                    extra=(
                        (
                            selector(REFERENCE_ROC_AUC, INSTANCE),
                            f"0.8x{steps(BEFORE + abnormal_seconds(t.quality_for) + AFTER)}",
                        ),
                    ),
                ),
            ),
        ),
        AlertRule(
            alert="StreamlearnOnlineAUCLow",
            group="streamlearn-model",
            expr=f"{ONLINE_ROC_AUC} < {t.auc_min!r}",
            for_=t.quality_for,
            severity="warning",
            summary=f"Online ROC AUC is {VALUE3}",
            description=(
                f"Rolling ROC AUC of {{{{ $labels.instance }}}} is {VALUE3}, below "
                f"{t.auc_min!r} for {t.quality_for}: the model barely ranks better than chance."
            ),
            scenarios=(
                gauge_scenario(
                    ONLINE_ROC_AUC,
                    round(min(1.0, t.auc_min + 0.2), 6),
                    round(t.auc_min / 2, 6),
                    t.quality_for,
                ),
            ),
        ),
        AlertRule(
            alert="StreamlearnCalibrationECEHigh",
            group="streamlearn-model",
            expr=f"{CALIBRATION_ECE} > {t.ece_max!r}",
            for_=t.quality_for,
            severity="warning",
            summary=f"Expected calibration error is {VALUE3}",
            description=(
                f"The scores of {{{{ $labels.instance }}}} are off their observed positive rates by"
                f" {VALUE3} on average (ECE), above {t.ece_max!r} for {t.quality_for}: scores no"
                " longer mean probabilities, and thresholds set on them drift."
            ),
            scenarios=(
                gauge_scenario(
                    CALIBRATION_ECE,
                    round(t.ece_max / 2, 6),
                    round(min(1.0, t.ece_max * 2), 6),
                    t.quality_for,
                ),
            ),
        ),
    ]


def _not_finite_rules(t: AlertThresholds) -> list[AlertRule]:
    """A series or a model with NaN or infinite numbers."""
    return [
        AlertRule(
            alert="StreamlearnSeriesNotFinite",
            group="streamlearn-model",
            # NaN * 0 and Inf * 0 are NaN, and NaN != 0; a finite value times 0 is 0.
            expr=(
                f"({ALL_SERIES} * 0 != 0) and on (job, instance) "
                f"(increase({PREDICTIONS}[{t.not_finite_window}]) > {t.not_finite_min_predictions})"
            ),
            for_=t.not_finite_for,
            severity="warning",
            summary="{{ $labels.metric }} of {{ $labels.instance }} is NaN or infinite",
            description=(
                "{{ $labels.metric }} on {{ $labels.instance }} has been NaN or infinite for "
                f"{t.not_finite_for} while the worker published more than "
                f"{t.not_finite_min_predictions} predictions in {t.not_finite_window}. A drift or "
                "quality statistic that stays undefined this long means a broken input (no "
                "labels of one class, a feature that is never sent) or a model with non-finite "
                f"numbers: see {LABELS_SKIPPED} with reason poisoned_model, and "
                f"{SCORES_NOT_FINITE}."
            ),
            scenarios=(
                _not_finite_scenario(t, math.nan),
                _not_finite_scenario(t, math.inf),
            ),
        ),
        AlertRule(
            alert="StreamlearnModelNotFinite",
            group="streamlearn-model",
            expr=(
                f'increase({LABELS_SKIPPED}{{reason="poisoned_model"}}[{t.poisoned_window}]) > 0'
                f" or increase({SCORES_NOT_FINITE}[{t.poisoned_window}]) > 0"
                f" or increase({CHECKPOINTS_REFUSED}[{t.poisoned_window}]) > 0"
            ),
            for_="0m",
            severity="critical",
            summary="A model of {{ $labels.instance }} met non-finite numbers",
            description=(
                f"In the last {t.poisoned_window}, {{{{ $labels.instance }}}} undid a label that "
                "left a model with NaN or infinite numbers (dead letters with reason "
                "poisoned_model), scored an event NaN or infinite (reason not_finite), or refused "
                "to checkpoint a non-finite model. No bad score was published and no bad model "
                "saved; find the records in the dead-letter topic and fix their source or the "
                "feature bounds (limits.feature_bounds)."
            ),
            scenarios=(_poisoned_scenario(t),),
        ),
    ]


def recording_rules() -> list[dict[str, str]]:
    """The recording rules (group ``streamlearn-labels``).

    Examples
    --------
    >>> [r["record"] for r in recording_rules()]
    ['streamlearn:positive_label_rate:5m']
    """
    return [
        {
            "record": POSITIVE_LABEL_RATE,
            "expr": (
                f"sum by (job) (rate({LABELS_POSITIVE}[5m]))"
                f" / sum by (job) (rate({LABELS_LEARNED}[5m]))"
            ),
        }
    ]


def _not_finite_scenario(t: AlertThresholds, abnormal: float) -> Scenario:
    """A drift gauge turns NaN (or infinite) on a worker publishing predictions steadily."""
    during = abnormal_seconds(t.not_finite_for)
    after = AFTER
    total = BEFORE + during + after
    per_sample = float(t.not_finite_min_predictions) / steps(BEFORE) + 1.0
    series_labels = dict(INSTANCE)
    # The values notation has no repetition of NaN or Inf ("NaNx9"): spelled out.
    spelled = " ".join(["NaN" if math.isnan(abnormal) else "Inf"] * steps(during))
    gauge = f"0.05x{steps(BEFORE) - 1} {spelled} 0.05x{steps(after) - 1}"
    return Scenario(
        series=(
            (selector(PREDICTION_PSI, series_labels), gauge),
            (selector(PREDICTIONS, series_labels),
             counter_values([(per_sample, total)])),
        ),
        start=BEFORE,
        end=BEFORE + during,
        value=abnormal,
        labels={**series_labels, "metric": PREDICTION_PSI},
    )  # fmt: skip


def _poisoned_scenario(t: AlertThresholds) -> Scenario:
    """One label undone as poisoned_model."""
    during = 60.0
    labels = {**INSTANCE, "reason": "poisoned_model"}
    return Scenario(
        series=(
            (
                selector(LABELS_SKIPPED, labels),
                counter_values([(0.0, BEFORE), (1.0, during), (0.0, 3600.0)]),
            ),
        ),
        start=BEFORE,
        end=BEFORE + during,
        value=1.0,
        labels=labels,
        resolve_after=duration_seconds(t.poisoned_window) + 180.0,
        fire_after=60.0,
    )


def _fairness_rule(t: AlertThresholds) -> AlertRule:
    """A slice scored (or decided) out of proportion to the rest of the traffic."""
    low, high = t.fairness_ratio_low, t.fairness_ratio_high
    expr = " or ".join(
        f"{name} {op} {bound!r}"
        for name in (SLICE_SCORE_RATIO, SLICE_DECISION_RATE_RATIO)
        for op, bound in (("<", low), (">", high))
    )
    where = {"slice_key": "context.group", "slice": "b"}
    return AlertRule(
        alert="StreamlearnFairnessGap",
        group="streamlearn-model",
        expr=expr,
        for_=t.fairness_for,
        severity="warning",
        summary=(
            "Slice {{ $labels.slice_key }}={{ $labels.slice }} gets "
            f"{VALUE3}x the rest's scores or positive decisions"
        ),
        description=(
            "On {{ $labels.instance }} the mean score or the positive-decision rate of slice "
            "{{ $labels.slice_key }}={{ $labels.slice }} is "
            f"{VALUE3} times that of the other events, outside [{low:.3g}, {high:.3g}] for "
            f"{t.fairness_for}. Check whether the model's inputs or its labels treat this "
            "group differently (a feature proxying for it, fewer labels, a shifted source)."
        ),
        scenarios=(
            gauge_scenario(SLICE_SCORE_RATIO, 1.0, round(high * 1.6, 6), t.fairness_for, where),
            gauge_scenario(
                SLICE_DECISION_RATE_RATIO, 1.0, round(low / 2, 6), t.fairness_for, where
            ),
        ),
    )


def alert_names(t: AlertThresholds | None = None) -> list[str]:
    """The distinct alert names, in rule order.

    Examples
    --------
    >>> "StreamlearnPositiveRateShift" in alert_names()
    True
    """
    names: list[str] = []
    for rule in alert_rules(t or AlertThresholds()):
        if rule.alert not in names:
            names.append(rule.alert)
    return names
