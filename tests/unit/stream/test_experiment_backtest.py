"""Experiments and the rollback rule in the backtest: arms served, decisions taken, in-process."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamlearn.learners.rollback import RollbackConfig
from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import ExperimentSettings, Settings
from streamlearn.stream.synthetic import WorldConfig, generate_world

FACTORIES = "tests.unit.stream.factories:"


def world_file(
    path: Path,
    events: int,
    seed: int,
    flip: tuple[int, int, float] | None = None,
    users: int = 300,
) -> Path:
    """A synthetic world; ``flip``: labels ``[start, end)`` (label order) flipped, with a
    weight, as a broken label pipeline sends them."""
    lines = []
    labels = 0
    for record in generate_world(WorldConfig(events=events, seed=seed, users=users)):
        if "label" in record and "user_id" not in record:
            if flip is not None and flip[0] <= labels < flip[1]:
                record = {**record, "label": not record["label"], "weight": flip[2]}
            labels += 1
        lines.append(orjson.dumps(record) + b"\n")
    path.write_bytes(b"".join(lines))
    return path


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> Path:
    return world_file(tmp_path_factory.mktemp("world") / "world.jsonl", 8000, seed=3)


def run(path: Path, models: list[str], **experiment: Any) -> tuple[dict[str, Any], list[dict]]:
    predictions = io.BytesIO()
    settings = ExperimentSettings(**experiment)
    result = backtest(path, Settings(), models, predictions=predictions, experiment=settings)
    lines = [orjson.loads(line) for line in predictions.getvalue().splitlines()]
    assert result.experiment is not None
    return result.experiment, lines


def broken_at_10_percent(path: Path) -> tuple[dict[str, Any], list[dict]]:
    """The control against an arm that always scores high, served 10 % of the events."""
    return run(
        path,
        ["control=logistic", f"broken={FACTORIES}always_high"],
        arms={"control": 0.9, "broken": 0.1},
        primary="log_loss",
        min_labels_per_arm=200,
        guardrails={"min_predictions": 200},
    )


def served(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["served"]]


def test_a_broken_treatment_at_10_percent_is_reverted_then_the_control_serves_everyone(stream):
    summary, lines = broken_at_10_percent(stream)
    [decision] = summary["decisions"]
    assert (decision["action"], decision["arm"]) == ("revert", "broken")
    assert summary["status"] == "reverted"
    first = served(lines)[: decision["event_index"]]
    after = served(lines)[decision["event_index"] :]
    assert 0.05 < sum(line["arm"] == "broken" for line in first) / len(first) < 0.15
    assert after and {line["arm"] for line in after} == {"control"}
    # the reverted arm keeps scoring every event in the shadow
    shadow = [line for line in lines if not line["served"]]
    assert len(shadow) == len(served(lines)) == 8000


def test_a_better_treatment_is_promoted_only_once_significant(stream):
    models = [f"uninformed={FACTORIES}uninformed", "logistic=logistic"]
    config = {
        "arms": {"uninformed": 0.5, "logistic": 0.5},
        "primary": "log_loss",
        "guardrails": {"positive_rate_shift": None, "min_predictions": 200},
    }
    summary, lines = run(stream, models, min_labels_per_arm=500, **config)
    [decision] = summary["decisions"]
    assert (decision["action"], decision["arm"]) == ("promote", "logistic")
    assert decision["p_value"] < 0.05 and decision["interval"][1] < 0
    assert min(c["labels"] for c in decision["counts"].values()) >= 500
    assert summary["arms"]["logistic"]["primary"] < summary["arms"]["uninformed"]["primary"]
    after = served(lines)[decision["event_index"] :]
    assert after and {line["arm"] for line in after} == {"logistic"}
    # the same evidence before the minimum sample decides nothing
    waiting, _ = run(stream, models, min_labels_per_arm=50_000, **config)
    assert waiting["decisions"] == [] and waiting["status"] == "running"


@pytest.mark.parametrize(
    ("users", "shares", "unit"),
    [(3000, {"a": 0.9, "b": 0.1}, "user_id"), (300, {"a": 0.5, "b": 0.5}, "event_id")],
)
def test_an_a_a_experiment_decides_nothing(tmp_path, users, shares, unit):
    """The same spec twice: the arms differ only by the events they serve.

    Labels of one user are not independent (each user has a click propensity) while
    the test treats labels as independent, so with few users per arm a split by user
    can look significant: enough users per arm, or a split by event, keep it honest.
    """
    path = world_file(tmp_path / "aa.jsonl", 12_000, seed=11, users=users)
    summary, _ = run(
        path,
        ["a=logistic", "b=logistic"],
        arms=shares,
        unit_field=unit,
        primary="log_loss",
        min_labels_per_arm=300,
        guardrails={"min_predictions": 300},
    )
    assert summary["decisions"] == [] and summary["status"] == "running"
    assert all(arm["labels"] > 1000 for arm in summary["arms"].values())
    assert summary["arms"]["b"]["p_value"] > 0.05


def test_own_arm_learning_learns_only_the_labels_an_arm_served(stream):
    result = backtest(
        stream,
        Settings(),
        ["a=logistic", "b=logistic"],
        experiment=ExperimentSettings(
            arms={"a": 0.5, "b": 0.5},
            primary="log_loss",
            learn="own_arm",
            min_labels_per_arm=100_000,  # no decision: each arm keeps its own units
        ),
    )
    learned = {slot.name: slot.labels_learned for slot in result.slots}
    assert result.experiment is not None and result.experiment["decisions"] == []
    labels = {name: arm["labels"] for name, arm in result.experiment["arms"].items()}
    assert learned == labels and sum(learned.values()) == result.labels_learned == 8000
    assert min(learned.values()) > 2000


def test_the_summary_has_the_experiment_shape_and_is_the_same_twice(stream, tmp_path):
    first, lines = broken_at_10_percent(stream)
    assert broken_at_10_percent(stream) == (first, lines)
    assert first["mode"] == "ab"
    for arm in first["arms"].values():
        assert {"events", "labels", "primary", "ci"} <= arm.keys()
        assert arm["ci"] is None or len(arm["ci"]) == 2
    for decision in first["decisions"]:
        assert {"event_index", "timestamp", "action", "arm", "p_value", "reason"} <= decision.keys()
    assert all({"arm", "model_version", "served"} <= line.keys() for line in lines)


@pytest.mark.parametrize("flipped", [True, False])
def test_flipped_labels_roll_the_live_model_back_to_its_last_good_copy(tmp_path, flipped):
    flip = (5700, 6000, 10.0) if flipped else None
    path = world_file(tmp_path / "flip.jsonl", 12_000, seed=7, flip=flip)
    result = backtest(
        path,
        Settings(),
        ["live=logistic"],
        rollback=RollbackConfig(min_labels=500, min_labels_after_rollback=500),
        rollback_refresh_every=5000,
    )
    summary = result.experiment
    assert summary is not None and summary["mode"] == "rollback"
    assert set(summary["arms"]) == {"live", "last_known_good"}
    if not flipped:
        assert summary["decisions"] == []
        return
    [decision] = summary["decisions"]
    assert decision["action"] == "rollback" and decision["p_value"] < 0.05
    # after the flipped stretch (labels come about ten minutes after their events)
    assert 5700 < decision["event_index"] < 8000
    assert summary["refreshes"][0] < decision["event_index"]
