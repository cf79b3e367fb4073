"""Each arm's quality, prediction drift and guardrails, exported as series labelled by arm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamlearn.learners.experiment import Experiment, ExperimentConfig
from streamlearn.learners.rollback import RollbackConfig
from streamlearn.metrics.arm_monitoring import ARM_MONITOR_KEYS, GUARDRAILS, guardrail_values
from streamlearn.metrics.experiment_metrics import (
    ARM_MONITOR_SERIES,
    GUARDRAIL_LIMIT,
    GUARDRAIL_VALUE,
    ExperimentMetrics,
)
from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings
from tests.unit.stream.test_experiment_backtest import (
    FACTORIES,
    broken_at_10_percent,
    run,
    served,
    world_file,
)


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> Path:
    return world_file(tmp_path_factory.mktemp("world") / "world.jsonl", 8000, seed=3)


@pytest.fixture(scope="module")
def broken(stream) -> tuple[dict[str, Any], list[dict]]:
    return broken_at_10_percent(stream)


def exported(summary: dict[str, Any], run_name: str = "experiment") -> CollectorRegistry:
    registry = CollectorRegistry()
    ExperimentMetrics(registry).publish(summary, run=run_name)
    return registry


def label_sets(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


def test_every_monitored_value_has_its_series():
    assert tuple(ARM_MONITOR_SERIES) == ARM_MONITOR_KEYS
    names = [name for name, _ in ARM_MONITOR_SERIES.values()]
    assert len(set(names)) == len(names)
    assert all(name.startswith("streamlearn_experiment_") for name in names)


def test_each_arm_is_monitored_on_the_events_it_served(broken):
    summary, lines = broken
    monitors = {arm: stats["monitor"] for arm, stats in summary["arms"].items()}
    assert set(monitors) == {"control", "broken"}
    # ab: an arm's monitor sees the events it served, before and after the revert
    for arm, monitor in monitors.items():
        assert monitor["predictions"] == sum(line["arm"] == arm for line in served(lines))
        assert monitor["labels"] > 0
    control, bad = monitors["control"], monitors["broken"]
    assert bad["log_loss"] > 2 * control["log_loss"]
    assert bad["brier"] > control["brier"]
    assert 0.5 < control["roc_auc"] <= 1.0
    # the drift windows wait for the arm's warm-up (drift_warmup_labels), as the champion's
    assert bad["positive_rate"] is None and bad["labels"] < 1000
    assert control["positive_rate"] < 0.5 and control["labels"] > 1000
    assert 0.0 < control["positive_label_rate"] < 1.0


def test_the_series_carry_run_and_arm_and_the_summary_values(broken):
    summary, _ = broken
    registry = exported(summary)
    for key, (name, _) in ARM_MONITOR_SERIES.items():
        for arm, stats in summary["arms"].items():
            value = stats["monitor"][key]
            got = registry.get_sample_value(name, {"run": "experiment", "arm": arm})
            assert got == value, (name, arm)  # None: no series (not known yet)
        arms = {labels["arm"] for labels in label_sets(registry, name)}
        assert arms <= {"control", "broken"}
    log_loss = ARM_MONITOR_SERIES["log_loss"][0]
    assert registry.get_sample_value(log_loss, {"run": "experiment", "arm": "broken"}) > 1.0


def test_the_guardrails_values_and_limits_are_gauges(broken):
    summary, _ = broken
    registry = exported(summary)

    def value(arm: str, guardrail: str) -> float | None:
        labels = {"run": "experiment", "arm": arm, "guardrail": guardrail}
        return registry.get_sample_value(GUARDRAIL_VALUE, labels)

    # the arm that always scores high predicts every event positive
    assert value("broken", "predicted_positive_rate") == 1.0
    assert value("control", "predicted_positive_rate") < 0.5
    shift = value("broken", "positive_rate_shift")
    limit = registry.get_sample_value(GUARDRAIL_LIMIT, {"guardrail": "positive_rate_shift"})
    assert limit == 0.5 and shift is not None and shift > limit
    assert value("control", "positive_rate_shift") is None  # the control has no shift
    assert value("broken", "error_ratio") == 0.0
    # the backtest judges no wall-clock time: no latency limit, a flat latency
    assert registry.get_sample_value(GUARDRAIL_LIMIT, {"guardrail": "latency_p99_s"}) is None
    assert value("broken", "latency_p99_ratio") == 1.0
    guardrails = {labels["guardrail"] for labels in label_sets(registry, GUARDRAIL_VALUE)}
    assert guardrails <= set(GUARDRAILS)


def test_a_shadow_arm_is_monitored_on_every_event(stream):
    summary, lines = run(
        stream,
        ["control=logistic", f"tree={FACTORIES}always_high"],
        arms={"control": 0.5, "tree": 0.5},
        mode="shadow",
        primary="log_loss",
        min_labels_per_arm=100_000,
        guardrails={"min_predictions": 1_000_000},
    )
    monitors = {arm: stats["monitor"] for arm, stats in summary["arms"].items()}
    assert monitors["control"]["predictions"] == monitors["tree"]["predictions"] == 8000
    # the same labels: the same positive-label rate
    assert monitors["control"]["labels"] == monitors["tree"]["labels"] > 0
    assert monitors["control"]["positive_label_rate"] == monitors["tree"]["positive_label_rate"]


def test_the_rollback_rules_slots_are_monitored(stream):
    result = backtest(stream, Settings(), ["live=logistic"], rollback=RollbackConfig())
    summary = result.experiment
    assert summary is not None
    live, good = summary["arms"]["live"]["monitor"], summary["arms"]["last_known_good"]["monitor"]
    assert live["predictions"] == good["predictions"] == 8000
    registry = exported(summary, "rollback")
    name = ARM_MONITOR_SERIES["log_loss"][0]
    for arm, report in (("live", live), ("last_known_good", good)):
        got = registry.get_sample_value(name, {"run": "rollback", "arm": arm})
        assert got == report["log_loss"] is not None


@pytest.mark.parametrize(("positives", "reverted"), [(15, False), (16, True)])
def test_the_shift_gauge_is_what_the_guardrail_judges(positives, reverted):
    config = ExperimentConfig(
        id="g", arms={"c": 0.5, "t": 0.5}, guardrails={"min_predictions": 100}
    )
    experiment = Experiment(config, started_at=0.0)
    for i in range(100):
        experiment.observe_prediction("c", 0.001, score=0.9 if i < 10 else 0.1)
        experiment.observe_prediction("t", 0.001, score=0.9 if i < positives else 0.1)
    shift = guardrail_values(experiment)["t"]["positive_rate_shift"]
    decision = experiment.decide(at=1.0, event_index=200)
    assert (decision.action == "revert") is reverted
    assert shift is not None and (shift > config.guardrails.positive_rate_shift) is reverted


def test_a_worker_exports_each_arms_series_beside_the_champions():
    from tests.memory_edge import MemoryBroker, MemoryCheckpoints, MemoryRegistry
    from tests.unit.stream.test_worker_arms import ARMS, settings, worker_of
    from tests.unit.stream.test_worker_loop import run as run_worker
    from tests.unit.stream.test_worker_loop import world

    config = settings(monitoring={"drift_warmup_labels": 0, "evaluate_every": 10})
    events, labels = world(300)
    broker = MemoryBroker()
    broker.append(config, events + labels)
    worker = worker_of(config, broker, MemoryCheckpoints(broker), MemoryRegistry())
    run_worker(worker, idle_timeout_s=0.2)

    registry = worker.registry
    log_loss, psi = ARM_MONITOR_SERIES["log_loss"][0], ARM_MONITOR_SERIES["psi"][0]
    for arm in ARMS:
        labels_of = {"run": "experiment", "arm": arm}
        assert registry.get_sample_value(log_loss, labels_of) is not None, arm
        latency = {**labels_of, "guardrail": "latency_p99_s"}
        assert registry.get_sample_value(GUARDRAIL_VALUE, latency) > 0
    assert {labels["arm"] for labels in label_sets(registry, psi)} <= set(ARMS)
    # the champion's own series are there as before, without an arm
    assert registry.get_sample_value("streamlearn_online_log_loss") is not None
    limit = registry.get_sample_value(GUARDRAIL_LIMIT, {"guardrail": "error_ratio"})
    assert limit == config.experiment.guardrails.error_ratio


def test_the_dashboards_experiment_row_draws_guardrails_against_limits_and_quality():
    from streamlearn.metrics.dashboard import dashboard
    from streamlearn.metrics.thresholds import AlertThresholds

    row: list[dict[str, Any]] = []
    for panel in dashboard(AlertThresholds())["panels"]:
        if panel["type"] == "row":
            if row:
                break
            row = [panel] if panel["title"] == "Experiment" else []
        elif row:
            row.append(panel)
    queries = [[t["expr"] for t in panel["targets"]] for panel in row[1:]]
    for guardrail in ("latency_p99_s", "latency_p99_ratio", "error_ratio", "positive_rate_shift"):
        assert [
            f'{GUARDRAIL_VALUE}{{guardrail="{guardrail}"}}',
            f'max({GUARDRAIL_LIMIT}{{guardrail="{guardrail}"}})',
        ] in queries
    drawn = {expr for exprs in queries for expr in exprs}
    for key in ("log_loss", "roc_auc", "brier", "positive_label_rate", "psi"):
        assert ARM_MONITOR_SERIES[key][0] in drawn
    titles = " | ".join(panel["title"] for panel in row)
    assert "p-value" in titles and "Decisions" in titles and "Primary metric" in titles
