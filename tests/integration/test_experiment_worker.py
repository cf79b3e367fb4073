"""An experiment in worker processes on the real stack: arms, exactly-once, kill -9, revert."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import orjson
import pytest
import redis as redis_lib
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.learners.assignment import Assignment
from streamlearn.learners.audit import AuditLog
from streamlearn.learners.checkpoint import CheckpointStore
from streamlearn.learners.registry import ModelRegistry
from streamlearn.stream.harness import (
    drain,
    kill_randomly,
    lines_of,
    produce,
    settings_for,
    worker_process,
    write_config,
)
from streamlearn.stream.synthetic import WorldConfig, generate_world

pytestmark = pytest.mark.integration

KEY = "experiment-test-signing-key-0123456789"
ARMS = {"control": 0.7, "treatment": 0.3}


def _settings(kafka_bootstrap: str, redis_url: str, prefix: str, experiment: dict[str, Any]):
    return settings_for(
        kafka_bootstrap,
        redis_url,
        prefix,
        partitions=2,
        kafka={
            "transactions": True,
            "max_poll_records": 50,
            "session_timeout_ms": 6000,
            "static_membership": True,
        },
        checkpoint={"every_labels": 150, "every_seconds": 0.5},
        experiment=experiment,
    )


def _learned_per_arm(client: redis_lib.Redis, prefix: str, group: str) -> dict[str, int]:
    """Each arm's learned-label count in the worker's confirmed checkpoint."""
    checkpoint = CheckpointStore(client, prefix, group, "worker-0").recover(lambda names: {})
    assert checkpoint is not None
    registry = ModelRegistry(client, prefix, KEY.encode())
    versions = {"control": checkpoint.version, **checkpoint.arms}
    return {arm: registry.load(version)[1].labels_learned for arm, version in versions.items()}


@pytest.mark.timeout(240)
def test_ab_arms_killed_mid_stream_score_each_event_once_and_learn_each_label_once_per_arm(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, tmp_path
):
    records = list(generate_world(WorldConfig(events=2000, seed=51)))
    experiment = {
        "id": "ab-51",
        "arms": ARMS,
        # Two fresh models of the same spec: no decision can move a unit to another arm.
        "guardrails": {"latency_p99_ratio": None, "positive_rate_shift": None},
        "min_labels_per_arm": 1_000_000,
    }
    settings = _settings(kafka_bootstrap, redis_url, unique_prefix, experiment)
    produce(settings, lines_of(records))
    config = write_config(settings, tmp_path / "worker.yaml")
    env = {"STREAMLEARN_MODEL_KEY": KEY}

    kills = kill_randomly(config, 4, random.Random(5), env, alive_s=(0.5, 2.0))
    final = worker_process(config, "--idle-timeout", "4", env=env)
    assert final.wait(timeout=180) == 0, (tmp_path / "worker.log").read_text()[-3000:]

    assert kills >= 2
    events = {r["event_id"]: r for r in records if "user_id" in r}
    published = [
        orjson.loads(r.value) for r in drain(kafka_bootstrap, unique_prefix + ".predictions")
    ]
    per_event = Counter(p["event_id"] for p in published)
    assert set(per_event) == set(events) and set(per_event.values()) == {1}
    assignment = Assignment("ab-51", ARMS, "user_id")
    assert all(p["arm"] == assignment.arm_for(events[p["event_id"]]) for p in published)
    assert {p["arm"] for p in published} == set(ARMS)
    labels = sum(1 for r in records if "user_id" not in r)
    learned = _learned_per_arm(redis_client, unique_prefix, settings.kafka.group_id)
    assert learned == {"control": labels, "treatment": labels}


@pytest.mark.timeout(180)
def test_a_broken_treatment_is_reverted_and_the_revert_is_in_the_registry_history(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, tmp_path
):
    records = list(generate_world(WorldConfig(events=2500, seed=52)))
    experiment = {
        "id": "broken-52",
        "arms": ARMS,
        "models": {"treatment": "tests.unit.stream.factories:always_high"},
        "guardrails": {"min_predictions": 200, "latency_p99_ratio": None},
        "min_labels_per_arm": 200,
    }
    settings = _settings(kafka_bootstrap, redis_url, unique_prefix, experiment)
    produce(settings, lines_of(records))
    config = write_config(settings, tmp_path / "worker.yaml")
    process = worker_process(config, "--idle-timeout", "4", env={"STREAMLEARN_MODEL_KEY": KEY})
    assert process.wait(timeout=150) == 0, (tmp_path / "worker.log").read_text()[-3000:]

    audit = AuditLog(redis_client, unique_prefix).entries()
    reverts = [e for e in audit if e["action"] == "revert"]
    assert reverts and reverts[0]["arm"] == "treatment" and reverts[0]["experiment"] == "broken-52"
    assert reverts[0]["source"] == "experiment" and reverts[0]["worker"] == "worker-0"
    published = [
        orjson.loads(r.value) for r in drain(kafka_bootstrap, unique_prefix + ".predictions")
    ]
    per_event = Counter(p["event_id"] for p in published)
    assert len(per_event) == sum(1 for r in records if "user_id" in r)
    assert set(per_event.values()) == {1}
    last = published[-200:]  # after the revert every unit is served by the control
    assert {p["arm"] for p in last} == {"control"}
    checkpoint = CheckpointStore(redis_client, unique_prefix, settings.kafka.group_id, "worker-0")
    state = checkpoint.recover(lambda names: {})
    assert state is not None and state.state["experiment"]["reverted"] == ["treatment"]

    runner = CliRunner()
    shown = runner.invoke(app, ["experiment", "status", "--json", "--config", str(config)])
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.output)["worker-0"]["experiment"]
    assert summary["status"] == "reverted" and set(summary["arms"]) == set(ARMS)
    assert [d["action"] for d in summary["decisions"]] == ["revert"]
    env = {"STREAMLEARN_MODEL_KEY": KEY}
    history = runner.invoke(app, ["model", "history", "--json", "--config", str(config)], env=env)
    assert history.exit_code == 0, history.output
    assert [d["action"] for d in json.loads(history.output)["decisions"]] == ["revert"]


@pytest.mark.timeout(240)
def test_a_champion_poisoned_by_flipped_labels_is_rolled_back_and_audited(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, tmp_path
):
    records, labels = [], 0
    for record in generate_world(WorldConfig(events=12_000, seed=7, users=300)):
        if "user_id" not in record:
            if 5700 <= labels < 6000:  # a broken label pipeline: flipped, and weighted
                record = {**record, "label": not record["label"], "weight": 10.0}
            labels += 1
        records.append(record)
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=1,
        kafka={"transactions": True, "max_poll_records": 200},
        checkpoint={"every_labels": 1000, "every_seconds": 5},
        # A first look after 1000 labels: a cold-start model is not judged against its
        # untrained copy before it has learned anything.
        rollback={"min_labels": 1000, "min_labels_after_rollback": 500, "refresh_every": 5000},
    )
    produce(settings, lines_of(records))
    config = write_config(settings, tmp_path / "worker.yaml")
    process = worker_process(config, "--idle-timeout", "4", env={"STREAMLEARN_MODEL_KEY": KEY})
    assert process.wait(timeout=200) == 0, (tmp_path / "worker.log").read_text()[-3000:]

    rollbacks = [
        e for e in AuditLog(redis_client, unique_prefix).entries() if e["action"] == "rollback"
    ]
    keys = ("event_index", "timestamp", "versions", "counts", "primary", "reason")
    assert len(rollbacks) == 1, [{k: e[k] for k in keys} for e in rollbacks]
    [entry] = rollbacks
    assert entry["source"] == "rollback" and entry["p_value"] < 0.05
    assert 5700 < entry["event_index"] < 8000  # after the flipped stretch, not before
    assert entry["counts"]["champion"]["labels"] >= 500 and entry["primary"]
    checkpoint = CheckpointStore(redis_client, unique_prefix, settings.kafka.group_id, "worker-0")
    state = checkpoint.recover(lambda names: {})
    assert state is not None and state.state["rollback"]["rule"]["rollbacks"] == 1
    assert "last_known_good" in state.arms
