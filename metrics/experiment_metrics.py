"""The series of an experiment's arms and of the rollback rule, and their alert rules.

One place for them: the worker sets them (:class:`ExperimentMetrics`), the alert rules
(:func:`experiment_rules`, part of :func:`metrics.alerts.alert_rules`) query them.
Every series is labelled by ``run`` (``experiment`` or ``rollback``) and ``arm``: the
configured arms of the experiment, and for the rollback rule the live model's slot and
``last_known_good``, so a handful at most.
Decisions are counted by ``action`` (``promote``, ``ready_to_promote``, ``revert``,
``stop``, ``rollback``) and ``arm``.

Each arm is also monitored as the champion is (:class:`metrics.arm_monitoring.ArmMonitors`):
its online quality and prediction drift are the champion's series renamed by
:func:`arm_series` (``streamlearn_online_log_loss`` becomes
``streamlearn_experiment_online_log_loss{run,arm}``), with its Brier score and
positive-label rate beside them (:data:`ARM_MONITOR_SERIES`). The guardrails' values are
``streamlearn_experiment_guardrail_value{run,arm,guardrail}`` and the limits in force
``streamlearn_experiment_guardrail_limit{guardrail}`` (:data:`metrics.arm_monitoring.GUARDRAILS`).

A gauge is set only while its value is known and finite (an interval bound is
infinite before the test has seen enough, a p-value does not exist before the first
label): a NaN series would look like a broken statistic to the non-finite alert.

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> m = ExperimentMetrics(registry)
>>> m.publish({"arms": {"b": {"events": 7, "labels": 3, "primary": 0.25,
...                           "ci": [None, 0.1], "p_value": 0.5}}})
>>> registry.get_sample_value("streamlearn_experiment_events", {"run": "experiment", "arm": "b"})
7.0
>>> registry.get_sample_value("streamlearn_experiment_ci_lower", {"run": "experiment", "arm": "b"})
>>> m.publish({"arms": {"b": {"monitor": {"log_loss": 0.4, "roc_auc": None},
...                           "guardrails": {"error_ratio": 0.02}}},
...            "guardrail_limits": {"error_ratio": 0.01}})
>>> registry.get_sample_value("streamlearn_experiment_online_log_loss",
...                           {"run": "experiment", "arm": "b"})
0.4
>>> registry.get_sample_value("streamlearn_experiment_guardrail_value",
...                           {"run": "experiment", "arm": "b", "guardrail": "error_ratio"})
0.02
>>> registry.get_sample_value(GUARDRAIL_LIMIT, {"guardrail": "error_ratio"})
0.01
>>> m.decided("revert", "b")
>>> registry.get_sample_value("streamlearn_experiment_decisions_total",
...                           {"action": "revert", "arm": "b"})
1.0
>>> [r.alert for r in experiment_rules(AlertThresholds())]
['StreamlearnExperimentReverted', 'StreamlearnModelRolledBack']
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from streamlearn.metrics.alert_rule import INSTANCE, AlertRule, Scenario, counter_values, selector
from streamlearn.metrics.arm_monitoring import GUARDRAILS
from streamlearn.metrics.dashboard_layout import Layout
from streamlearn.metrics.monitoring_metrics import (
    ONLINE_LOG_LOSS,
    ONLINE_ROC_AUC,
    POSITIVE_RATE,
    POSITIVE_RATE_RATIO,
    PREDICTION_KS,
    PREDICTION_PSI,
)
from streamlearn.metrics.thresholds import AlertThresholds, duration_seconds

__all__ = [
    "ARM_MONITOR_SERIES",
    "EXPERIMENT_CI_LOWER",
    "EXPERIMENT_CI_UPPER",
    "EXPERIMENT_DECISIONS",
    "EXPERIMENT_EVENTS",
    "EXPERIMENT_LABELS",
    "EXPERIMENT_PRIMARY",
    "EXPERIMENT_P_VALUE",
    "GUARDRAIL_LIMIT",
    "GUARDRAIL_VALUE",
    "ExperimentMetrics",
    "arm_series",
    "experiment_panels",
    "experiment_rules",
]

EXPERIMENT_EVENTS = "streamlearn_experiment_events"
EXPERIMENT_LABELS = "streamlearn_experiment_labels"
EXPERIMENT_PRIMARY = "streamlearn_experiment_primary"
EXPERIMENT_P_VALUE = "streamlearn_experiment_p_value"
EXPERIMENT_CI_LOWER = "streamlearn_experiment_ci_lower"
EXPERIMENT_CI_UPPER = "streamlearn_experiment_ci_upper"
EXPERIMENT_DECISIONS = "streamlearn_experiment_decisions_total"
#: How long a decision keeps its alert firing (the counter's increase window).
DECISION_WINDOW = "15m"
GUARDRAIL_VALUE = "streamlearn_experiment_guardrail_value"
GUARDRAIL_LIMIT = "streamlearn_experiment_guardrail_limit"


def arm_series(name: str) -> str:
    """The per-arm series of the champion's monitor series ``name``.

    >>> arm_series(ONLINE_LOG_LOSS)
    'streamlearn_experiment_online_log_loss'
    """
    return name.replace("streamlearn_", "streamlearn_experiment_", 1)


#: An arm's monitored values (the keys of :meth:`metrics.arm_monitoring.ArmMonitors.report`)
#: and their series, labelled ``run`` and ``arm``: the champion's where it has one.
ARM_MONITOR_SERIES: dict[str, tuple[str, str]] = {
    "log_loss": (arm_series(ONLINE_LOG_LOSS), "Log loss of an arm over its quality window."),
    "roc_auc": (arm_series(ONLINE_ROC_AUC), "ROC AUC of an arm over its quality window."),
    "brier": (
        "streamlearn_experiment_online_brier",
        "Brier score of an arm over its quality window.",
    ),
    "positive_label_rate": (
        "streamlearn_experiment_positive_label_rate",
        "Share of positive labels among those credited to an arm (in ab mode, of the events"
        " it served), over its quality window.",
    ),
    "psi": (arm_series(PREDICTION_PSI), "PSI of an arm's current scores against its reference."),
    "ks": (arm_series(PREDICTION_KS), "KS statistic of an arm's current against reference scores."),
    "positive_rate": (
        arm_series(POSITIVE_RATE),
        "Share of an arm's current scores above model.threshold.",
    ),
    "positive_rate_ratio": (
        arm_series(POSITIVE_RATE_RATIO),
        "Current over reference share of an arm's scores above model.threshold.",
    ),
}


class ExperimentMetrics:
    """The arms' gauges and the decisions' counter, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ["run", "arm"], registry=registry)

        self.gauges = {
            "events": gauge(EXPERIMENT_EVENTS, "Events an arm scored and was judged on."),
            "labels": gauge(EXPERIMENT_LABELS, "Labels an arm was judged on."),
            "primary": gauge(EXPERIMENT_PRIMARY, "An arm's primary metric so far."),
            "p_value": gauge(
                EXPERIMENT_P_VALUE,
                "Always-valid p-value of an arm against the control (rollback: of the live"
                " model against its last-known-good copy).",
            ),
            "ci_lower": gauge(
                EXPERIMENT_CI_LOWER,
                "Lower bound of the always-valid interval of an arm's difference with the control.",
            ),
            "ci_upper": gauge(
                EXPERIMENT_CI_UPPER,
                "Upper bound of the always-valid interval of an arm's difference with the control.",
            ),
        }
        self.monitored = {key: gauge(name, doc) for key, (name, doc) in ARM_MONITOR_SERIES.items()}
        self.guardrail_value = Gauge(
            GUARDRAIL_VALUE,
            "What a guardrail judges of an arm: p99 scoring latency (s), its ratio to the"
            " control's, error ratio, predicted-positive rate and its relative shift from the"
            " control's.",
            ["run", "arm", "guardrail"],
            registry=registry,
        )
        self.guardrail_limit = Gauge(
            GUARDRAIL_LIMIT,
            "The limit in force of a guardrail (experiment.guardrails); none when not checked.",
            ["guardrail"],
            registry=registry,
        )
        self._series: dict[tuple[Gauge, tuple[str, ...]], Gauge] = {}
        self.decisions = Counter(
            EXPERIMENT_DECISIONS,
            "Decisions of the experiment and of the rollback rule, by action and arm.",
            ["action", "arm"],
            registry=registry,
        )

    def publish(self, summary: Mapping[str, Any], run: str = "experiment") -> None:
        """Set the gauges from a run's summary (``arms``: events, labels, primary, ci,
        p_value per arm, and when monitored its ``monitor`` and ``guardrails`` values;
        ``guardrail_limits``); a value unknown or not finite removes its series. ``run`` is
        ``experiment`` or ``rollback`` (both may name the live model's arm)."""
        for arm, stats in summary.get("arms", {}).items():
            ci = stats.get("ci") or [None, None]
            values = {
                "events": stats.get("events"),
                "labels": stats.get("labels"),
                "primary": stats.get("primary"),
                "p_value": stats.get("p_value"),
                "ci_lower": ci[0],
                "ci_upper": ci[1],
            }
            for key, value in values.items():
                self._set(self.gauges[key], value, run, arm)
            monitored = stats.get("monitor")
            if monitored is not None:
                for key, gauge in self.monitored.items():
                    self._set(gauge, monitored.get(key), run, arm)
            guardrails = stats.get("guardrails")
            if guardrails is not None:
                for name in GUARDRAILS:
                    self._set(self.guardrail_value, guardrails.get(name), run, arm, name)
        limits = summary.get("guardrail_limits")
        if limits is not None:
            for name in GUARDRAILS:
                self._set(self.guardrail_limit, limits.get(name), name)

    def _set(self, gauge: Gauge, value: float | None, *labels: str) -> None:
        """Set the series of ``labels`` to ``value``, or remove it when not known and
        finite (the series set are kept: a batch's publish looks each up once)."""
        key = (gauge, labels)
        series = self._series.get(key)
        if value is not None and math.isfinite(value):
            if series is None:
                series = self._series[key] = gauge.labels(*labels)
            series.set(value)
        elif series is not None:
            del self._series[key]
            gauge.remove(*labels)

    def decided(self, action: str, arm: str | None) -> None:
        """Count a decision."""
        self.decisions.labels(action=action, arm=arm or "").inc()


def experiment_panels(lay: Layout) -> None:
    """The dashboard's row "Experiment": per arm (of the experiment and of the rollback
    rule) the primary metric, its interval and p-value, labels, decisions, each guardrail's
    value against its limit, and the arm's quality and prediction drift."""
    legend = "{{instance}} {{run}} {{arm}}"
    lay.row("Experiment")
    lay.timeseries("Primary metric by arm", [(EXPERIMENT_PRIMARY, legend)])
    lay.timeseries(
        "Always-valid interval of the difference with the control",
        [(EXPERIMENT_CI_LOWER, f"{legend} lower"), (EXPERIMENT_CI_UPPER, f"{legend} upper")],
    )
    lay.timeseries(
        "Always-valid p-value by arm",
        [(EXPERIMENT_P_VALUE, legend)],
        min_value=0,
        max_value=1,
        w=8,
    )
    lay.timeseries("Labels judged by arm", [(EXPERIMENT_LABELS, legend)], min_value=0, w=8)
    lay.timeseries(
        f"Decisions by action ({DECISION_WINDOW})",
        [
            (
                f"sum by (action, arm) (increase({EXPERIMENT_DECISIONS}[{DECISION_WINDOW}]))",
                "{{action}} {{arm}}",
            )
        ],
        min_value=0,
        w=8,
    )
    guardrails = (
        ("Guardrail: p99 scoring latency by arm", "latency_p99_s", "s"),
        ("Guardrail: p99 scoring latency over the control's", "latency_p99_ratio", "short"),
        ("Guardrail: error ratio by arm", "error_ratio", "percentunit"),
        (
            "Guardrail: predicted-positive rate shift from the control",
            "positive_rate_shift",
            "short",
        ),
    )
    for title, name, unit in guardrails:
        lay.timeseries(
            title,
            [
                (f'{GUARDRAIL_VALUE}{{guardrail="{name}"}}', legend),
                (f'max({GUARDRAIL_LIMIT}{{guardrail="{name}"}})', f"limit {name}"),
            ],
            unit=unit,
            min_value=0,
            w=6,
        )
    quality: tuple[tuple[str, str, float | None], ...] = (
        ("Log loss by arm", "log_loss", None),
        ("ROC AUC by arm", "roc_auc", 1.0),
        ("Brier score by arm", "brier", 1.0),
        ("Positive-label rate by arm", "positive_label_rate", 1.0),
        ("Prediction PSI by arm", "psi", None),
        ("Predicted-positive rate by arm (current window)", "positive_rate", 1.0),
    )
    for title, key, top in quality:
        name = ARM_MONITOR_SERIES[key][0]
        lay.timeseries(title, [(name, legend)], min_value=0, max_value=top, w=8)


def experiment_rules(t: AlertThresholds) -> list[AlertRule]:
    """An experiment's treatment reverted, and a live model rolled back: each alerts for
    :data:`DECISION_WINDOW` after the decision (``t`` is the thresholds of the others)."""
    del t  # the decisions carry their own thresholds (the experiment's, the rule's)
    return [
        AlertRule(
            alert="StreamlearnExperimentReverted",
            group="streamlearn-model",
            expr=f'increase({EXPERIMENT_DECISIONS}{{action="revert"}}[{DECISION_WINDOW}]) > 0',
            for_="0m",
            severity="warning",
            summary="Experiment arm {{ $labels.arm }} was reverted on {{ $labels.instance }}",
            description=(
                "{{ $labels.instance }} reverted treatment {{ $labels.arm }}: a guardrail"
                " breached or its primary metric is significantly worse than the control's."
                " Its units are served by the control again; the decision and its evidence are"
                " in `streamlearn model history`."
            ),
            scenarios=(_decision_scenario("revert", "challenger"),),
        ),
        AlertRule(
            alert="StreamlearnModelRolledBack",
            group="streamlearn-model",
            expr=f'increase({EXPERIMENT_DECISIONS}{{action="rollback"}}[{DECISION_WINDOW}]) > 0',
            for_="0m",
            severity="critical",
            summary="The live model of {{ $labels.instance }} was rolled back",
            description=(
                "{{ $labels.instance }} rolled its live model back to its last-known-good"
                " version: its primary metric dropped significantly against that version on"
                " the same labels (poisoned or shifted labels, a broken feature). Check the"
                " label and feature pipelines; the evidence is in `streamlearn model history`."
            ),
            scenarios=(_decision_scenario("rollback", "champion"),),
        ),
    ]


def _decision_scenario(action: str, arm: str) -> Scenario:
    """One decision counted, then none."""
    labels = {**INSTANCE, "action": action, "arm": arm}
    during = 60.0
    before = 600.0
    return Scenario(
        series=(
            (
                selector(EXPERIMENT_DECISIONS, labels),
                counter_values([(0.0, before), (1.0, during), (0.0, 3600.0)]),
            ),
        ),
        start=before,
        end=before + during,
        value=1.0,
        labels=labels,
        resolve_after=duration_seconds(DECISION_WINDOW) + 180.0,
        fire_after=60.0,
    )
