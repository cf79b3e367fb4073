"""Experiment decisions: promote, revert (metric or guardrail), manual promotion, stop,
their evidence as JSON, and the state's round trip."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from streamlearn.learners.arm_stats import LatencySketch
from streamlearn.learners.decision import Decision
from streamlearn.learners.experiment import Experiment, ExperimentConfig

NO_GUARDS = {"error_ratio": None, "latency_p99_ratio": None, "positive_rate_shift": None}


def _config(**overrides: Any) -> ExperimentConfig:
    base: dict[str, Any] = {
        "id": "exp",
        "arms": {"control": 0.5, "treatment": 0.5},
        "min_labels_per_arm": 500,
        "guardrails": {"min_predictions": 500},
    }
    return ExperimentConfig(**{**base, **overrides})


def _feed(
    experiment: Experiment,
    rates: dict[str, float],
    labels_per_arm: int,
    seed: int = 0,
    latency: dict[str, float] | None = None,
    failures: dict[str, float] | None = None,
    scores: dict[str, float] | None = None,
) -> None:
    rng = np.random.default_rng(seed)
    for arm, rate in rates.items():
        for y in rng.random(labels_per_arm) < rate:
            ok = rng.random() >= (failures or {}).get(arm, 0.0)
            score = (scores or {}).get(arm, 0.1)
            experiment.observe_prediction(arm, (latency or {}).get(arm, 0.002), ok, score)
            experiment.observe_label(arm, bool(y), score)


def _run(experiment: Experiment, rates: dict[str, float], batches: int, **kwargs: Any) -> Decision:
    decision = experiment.decide(at=0.0)
    for batch in range(batches):
        _feed(experiment, rates, 1000, seed=batch, **kwargs)
        decision = experiment.decide(at=60.0 * (batch + 1), event_index=2000 * (batch + 1))
        if decision.action != "continue":
            return decision
    return decision


def test_a_better_treatment_is_promoted_with_its_evidence() -> None:
    experiment = Experiment(_config())
    decision = _run(experiment, {"control": 0.10, "treatment": 0.16}, 30)
    assert (decision.action, decision.arm) == ("promote", "treatment")
    assert decision.p_value is not None and decision.p_value <= 0.05
    assert decision.interval is not None and decision.interval[0] > 0
    assert experiment.status == "promoted" and experiment.winner == "treatment"
    record = json.loads(json.dumps(decision.to_dict()))
    assert {"event_index", "timestamp", "action", "arm", "p_value", "reason"} <= set(record)
    assert record["counts"]["treatment"]["labels"] >= 500
    # an ended experiment answers with the decision that ended it
    assert experiment.decide(at=1e9) == decision


def test_a_worse_treatment_is_reverted_at_once() -> None:
    experiment = Experiment(_config())
    decision = _run(experiment, {"control": 0.16, "treatment": 0.10}, 30)
    assert (decision.action, decision.arm) == ("revert", "treatment")
    assert decision.interval is not None and decision.interval[1] < 0
    assert experiment.status == "reverted"


def test_log_loss_lower_is_better() -> None:
    experiment = Experiment(_config(primary="log_loss", mode="shadow"))
    rng = np.random.default_rng(1)
    for batch in range(20):
        for _ in range(1000):
            p = rng.uniform(0.05, 0.95)
            y = bool(rng.random() < p)
            experiment.observe_label("control", y, 0.5)  # uninformed
            experiment.observe_label("treatment", y, p)  # calibrated
        decision = experiment.decide(at=float(batch))
        if decision.action != "continue":
            break
    assert (decision.action, decision.arm) == ("promote", "treatment")
    assert decision.estimate is not None and decision.estimate < 0


def test_manual_promotion_waits_and_guardrails_still_watch() -> None:
    experiment = Experiment(_config(promotion="manual"))
    decision = _run(experiment, {"control": 0.10, "treatment": 0.16}, 30)
    assert decision.action == "ready_to_promote"
    assert experiment.status == "ready_to_promote"
    assert "waiting for a manual promotion" in experiment.decide(at=1.0).reason
    assert [d.action for d in experiment.decisions] == ["ready_to_promote"]
    final = experiment.promote("treatment", at=2.0)
    assert final.action == "promote" and experiment.status == "promoted"
    with pytest.raises(ValueError, match="has ended"):
        experiment.promote("treatment")
    with pytest.raises(ValueError, match="has ended"):
        experiment.revert("treatment")


def test_a_manual_revert_sends_the_arm_back() -> None:
    experiment = Experiment(_config())
    decision = experiment.revert("treatment", at=5.0, reason="broken feature")
    assert (decision.action, decision.reason) == ("revert", "broken feature")
    assert experiment.status == "reverted"
    with pytest.raises(ValueError, match="has ended"):
        experiment.revert("treatment")


def test_better_on_the_metric_but_slow_is_reverted_not_promoted() -> None:
    config = _config(guardrails={"min_predictions": 500, "latency_p99_ratio": 1.5})
    experiment = Experiment(config)
    decision = _run(
        experiment,
        {"control": 0.10, "treatment": 0.16},
        30,
        latency={"control": 0.002, "treatment": 0.010},
    )
    assert (decision.action, decision.arm) == ("revert", "treatment")
    assert decision.reason.startswith("guardrail latency_p99_ratio")
    assert (
        decision.guardrails["latency_p99_s"]["value"]
        > decision.guardrails["latency_p99_s"]["control"]
    )


@pytest.mark.parametrize(
    ("kwargs", "guardrails", "reason"),
    [
        ({"failures": {"treatment": 0.05}}, {"error_ratio": 0.01}, "guardrail error_ratio"),
        ({"latency": {"treatment": 0.2}}, {"latency_p99_s": 0.05}, "guardrail latency_p99_s"),
        (
            {"scores": {"treatment": 0.9}},
            {"positive_rate_shift": 0.5},
            "guardrail positive_rate_shift",
        ),
    ],
)
def test_each_guardrail_reverts(
    kwargs: dict[str, Any], guardrails: dict[str, Any], reason: str
) -> None:
    limits = {**NO_GUARDS, "min_predictions": 500, **guardrails}
    experiment = Experiment(_config(guardrails=limits))
    decision = _run(experiment, {"control": 0.10, "treatment": 0.10}, 3, **kwargs)
    assert decision.action == "revert" and decision.reason.startswith(reason), decision


def test_guardrails_wait_for_their_minimum() -> None:
    experiment = Experiment(_config(guardrails={"min_predictions": 5000, "latency_p99_s": 0.05}))
    decision = _run(experiment, {"control": 0.1, "treatment": 0.1}, 2, latency={"treatment": 0.2})
    assert decision.action == "continue"


def test_no_difference_stops_at_the_maximum_duration() -> None:
    experiment = Experiment(_config(max_duration_s=300.0), started_at=0.0)
    decision = _run(experiment, {"control": 0.1, "treatment": 0.1}, 10)
    assert decision.action == "stop" and decision.timestamp == 300.0
    assert experiment.status == "stopped"


def test_too_few_labels_says_so() -> None:
    experiment = Experiment(_config(min_labels_per_arm=5000))
    decision = _run(experiment, {"control": 0.1, "treatment": 0.5}, 1)
    assert decision.action == "continue"
    assert decision.reason == "1000 labels in the smallest arm, 5000 needed"


def test_one_of_two_treatments_reverted_the_experiment_goes_on() -> None:
    config = _config(arms={"control": 0.5, "good": 0.25, "bad": 0.25}, guardrails=NO_GUARDS)
    experiment = Experiment(config)
    actions = []
    for batch in range(40):
        _feed(experiment, {"control": 0.10, "good": 0.15, "bad": 0.05}, 1000, seed=batch)
        decision = experiment.decide(at=float(batch))
        if decision.action != "continue":
            actions.append((decision.action, decision.arm))
        if experiment.status != "running":
            break
    assert actions[0] == ("revert", "bad")
    assert actions[-1] == ("promote", "good")


def test_the_state_round_trips_mid_experiment_and_decides_the_same() -> None:
    experiment = Experiment(_config(promotion="manual"))
    _run(experiment, {"control": 0.10, "treatment": 0.11}, 3, latency={"treatment": 0.003})
    state = json.loads(json.dumps(experiment.to_dict()))
    again = Experiment.from_dict(state)
    assert again.to_dict() == experiment.to_dict()
    for batch in range(3, 40):
        _feed(experiment, {"control": 0.10, "treatment": 0.13}, 1000, seed=batch)
        _feed(again, {"control": 0.10, "treatment": 0.13}, 1000, seed=batch)
        assert again.decide(at=float(batch)) == experiment.decide(at=float(batch))
    assert again.to_dict() == experiment.to_dict()
    assert [Decision.from_dict(d.to_dict()) for d in experiment.decisions] == experiment.decisions


def test_summary_has_the_backtest_shape() -> None:
    experiment = Experiment(_config())
    _run(experiment, {"control": 0.10, "treatment": 0.16}, 30)
    summary = json.loads(json.dumps(experiment.summary()))
    assert set(summary["arms"]["treatment"]) >= {"events", "labels", "primary", "ci"}
    assert summary["decisions"][-1]["action"] == "promote"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"arms": {"only": 1.0}}, "a control and a treatment"),
        ({"arms": {"a": 0.5, "b": 0.6}}, "sum to 1"),
        ({"mode": "shadow", "primary": "positive_rate"}, "shadow arm serves nothing"),
        ({"primary": "roc_auc"}, "positive_rate"),
    ],
)
def test_bad_configs_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _config(**overrides)


def test_unknown_arm_is_named() -> None:
    with pytest.raises(KeyError, match="unknown arm 'other'"):
        Experiment(_config()).observe_label("other", True, 0.5)


def test_latency_sketch_is_within_ten_percent() -> None:
    rng = np.random.default_rng(0)
    samples = rng.lognormal(-5, 1, 50_000)
    sketch = LatencySketch()
    for x in samples:
        sketch.update(float(x))
    exact = float(np.quantile(samples, 0.99))
    assert exact <= sketch.quantile(0.99) <= 1.1 * exact * 1.01
    assert LatencySketch.from_dict(sketch.to_dict()).counts == sketch.counts
