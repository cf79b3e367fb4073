"""The series of an experiment's arms and of the rollback rule, and their alert rules.

One place for them: the worker sets them (:class:`ExperimentMetrics`), the alert rules
(:func:`experiment_rules`, part of :func:`metrics.alerts.alert_rules`) query them.
Every series is labelled by ``run`` (``experiment`` or ``rollback``) and ``arm``: the
configured arms of the experiment, and for the rollback rule the live model's slot and
``last_known_good``, so a handful at most.
Decisions are counted by ``action`` (``promote``, ``ready_to_promote``, ``revert``,
``stop``, ``rollback``) and ``arm``.

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
from streamlearn.metrics.dashboard_layout import Layout
from streamlearn.metrics.thresholds import AlertThresholds, duration_seconds

__all__ = [
    "EXPERIMENT_CI_LOWER",
    "EXPERIMENT_CI_UPPER",
    "EXPERIMENT_DECISIONS",
    "EXPERIMENT_EVENTS",
    "EXPERIMENT_LABELS",
    "EXPERIMENT_PRIMARY",
    "EXPERIMENT_P_VALUE",
    "ExperimentMetrics",
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
        self.decisions = Counter(
            EXPERIMENT_DECISIONS,
            "Decisions of the experiment and of the rollback rule, by action and arm.",
            ["action", "arm"],
            registry=registry,
        )

    def publish(self, summary: Mapping[str, Any], run: str = "experiment") -> None:
        """Set the gauges from a run's summary (``arms``: events, labels, primary, ci,
        p_value per arm); a value unknown or not finite removes its series. ``run`` is
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
                gauge = self.gauges[key]
                if value is not None and math.isfinite(value):
                    gauge.labels(run=run, arm=arm).set(value)
                else:
                    try:
                        gauge.remove(run, arm)
                    except KeyError:
                        pass

    def decided(self, action: str, arm: str | None) -> None:
        """Count a decision."""
        self.decisions.labels(action=action, arm=arm or "").inc()


def experiment_panels(lay: Layout) -> None:
    """The dashboard's row of the arms: primary metric, interval, p-value, labels, decisions."""
    legend = "{{instance}} {{run}} {{arm}}"
    lay.row("Experiments and rollback")
    lay.timeseries("Primary metric by arm", [(EXPERIMENT_PRIMARY, legend)])
    lay.timeseries(
        "Always-valid interval of the difference with the control",
        [(EXPERIMENT_CI_LOWER, f"{legend} lower"), (EXPERIMENT_CI_UPPER, f"{legend} upper")],
    )
    lay.timeseries(
        "Always-valid p-value by arm", [(EXPERIMENT_P_VALUE, legend)], min_value=0, max_value=1
    )
    lay.timeseries("Labels judged by arm", [(EXPERIMENT_LABELS, legend)], min_value=0)
    lay.timeseries(
        f"Decisions by action ({DECISION_WINDOW})",
        [
            (
                f"sum by (action, arm) (increase({EXPERIMENT_DECISIONS}[{DECISION_WINDOW}]))",
                "{{action}} {{arm}}",
            )
        ],
        min_value=0,
    )


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
