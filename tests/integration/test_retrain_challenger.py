"""A model retrained from the training log, entered as a challenger and decided by the
experiment, end to end on the real stack: worker processes with transactions and
checkpoints, the training log in Kafka, the registry and the audit log in Redis."""

from __future__ import annotations

import json
from collections import Counter

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.learners.registry import ModelRegistry
from streamlearn.learners.registry_log import records
from streamlearn.stream.config import ExperimentSettings
from streamlearn.stream.harness import (
    drain,
    lines_of,
    produce,
    settings_for,
    worker_process,
    write_config,
)
from streamlearn.stream.synthetic import WorldConfig, generate_world

pytestmark = pytest.mark.integration

if "models" not in ExperimentSettings.model_fields:
    pytest.skip(
        "the workers' experiment section takes no arm models (models: {arm: version:N}) here",
        allow_module_level=True,
    )

KEY = "retrain-challenger-test-signing-key-0123"
HOUR_MS = 3_600_000


@pytest.mark.timeout(240)
def test_a_retrained_challenger_beats_a_stale_champion_and_is_promoted_after_significance(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, tmp_path
):
    env = {"STREAMLEARN_MODEL_KEY": KEY}
    first = list(generate_world(WorldConfig(events=2_000, seed=61)))
    end_ms = max(r["timestamp"] for r in first)
    second = list(generate_world(WorldConfig(events=2_000, seed=62, start_ms=end_ms + HOUR_MS)))
    sections = {
        "kafka": {"transactions": True, "max_poll_records": 100},
        "checkpoint": {"every_labels": 200, "every_seconds": 1.0},
        # the live model knows nothing and never learns: what retraining is for
        "model": {"spec": "tests.unit.stream.factories:uninformed"},
    }
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=2, **sections)
    topics = settings.kafka.topics.model_copy(update={"examples": f"{unique_prefix}.examples"})
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topics": topics})}
    )
    produce(settings, lines_of(first))
    config = write_config(settings, tmp_path / "worker.yaml")
    worker = worker_process(config, "--idle-timeout", "4", env=env)
    assert worker.wait(timeout=120) == 0, (tmp_path / "worker.log").read_text()[-3000:]

    section_file = tmp_path / "experiment.yaml"
    args = ["model", "train", "--from-log", "--since", "30d", "--spec", "logistic", "--json"]
    args += ["--challenger", "retrained", "--share", "0.5", "--primary", "log_loss"]
    args += ["--experiment-file", str(section_file), "--config", str(config)]
    trained = CliRunner().invoke(app, args, env=env)
    assert trained.exit_code == 0, trained.output
    doc = json.loads(trained.stdout)
    version = doc["registered"]
    assert doc["better"] is True and doc["candidate"]["log_loss"] < doc["current"]["log_loss"]

    experiment = yaml.safe_load(section_file.read_text())["experiment"]
    assert experiment["models"] == {"retrained": f"version:{version}"}
    # the stale champion scores 0.5, "positive" for every event, and a constant scores
    # faster than any model: its predicted-positive rate and latency are no yardstick
    guardrails = {"min_predictions": 200, "positive_rate_shift": None, "latency_p99_ratio": None}
    experiment |= {"min_labels_per_arm": 200, "guardrails": guardrails}
    settings = settings.model_copy(
        update={"experiment": ExperimentSettings.model_validate(experiment)}
    )
    config = write_config(settings, tmp_path / "worker.yaml")
    produce(settings, lines_of(second))
    worker = worker_process(config, "--idle-timeout", "4", env=env)
    assert worker.wait(timeout=120) == 0, (tmp_path / "worker.log").read_text()[-3000:]

    entries = records(ModelRegistry(redis_client, unique_prefix, KEY.encode()))
    promotions = [e for e in entries if e["action"] == "promote"]
    assert promotions and promotions[0]["arm"] == "retrained", [
        (e["action"], e.get("reason")) for e in entries
    ]
    assert promotions[0]["source"] == "experiment" and promotions[0]["p_value"] < 0.05
    assert [e["action"] for e in entries if e["source"] == "retrain"] == [
        "challenger_request",
        "retrain",
    ]
    published = [
        orjson.loads(r.value) for r in drain(kafka_bootstrap, f"{unique_prefix}.predictions")
    ]
    per_event = Counter(p["event_id"] for p in published)
    assert set(per_event.values()) == {1} and len(per_event) == 4_000
    later = [p for p in published if p["event_id"].startswith("ev-62-")]
    # the arm starts from the registered version, then learns on: its checkpoints follow it
    served = [int(p["model_version"]) for p in later if p.get("arm") == "retrained"]
    assert served[0] == int(version) and min(served) == int(version)
    assert {p.get("arm") for p in later[-100:]} == {"retrained"}, "promoted: served to everyone"
