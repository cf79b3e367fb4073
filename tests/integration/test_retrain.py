"""Retraining from the training log on the real Kafka and Redis: a worker fills the
``examples`` topic, ``model train --from-log`` trains over a window, judges the new
model on the later slice, registers it and enters it as a challenger."""

from __future__ import annotations

import json

import pytest
import redis
import yaml
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.learners.registry import ModelRegistry
from streamlearn.learners.registry_log import records
from streamlearn.stream.config import ExperimentSettings, Settings
from streamlearn.stream.harness import lines_of, produce, run_workers, settings_for, write_config
from streamlearn.stream.kafka_io import KafkaSink
from streamlearn.stream.synthetic import WorldConfig, generate_world
from streamlearn.stream.training_log import read_training_log

pytestmark = pytest.mark.integration

KEY = b"integration test key, 32 bytes.."
HOUR_MS = 3_600_000


def with_training_log(settings: Settings, topic: str) -> Settings:
    topics = settings.kafka.topics.model_copy(update={"examples": topic})
    kafka = settings.kafka.model_copy(update={"topics": topics, "transactions": True})
    return settings.model_copy(update={"kafka": kafka})


@pytest.fixture
def logged(kafka_bootstrap, redis_url, unique_prefix, tmp_path):
    """A worker (with transactions) has learned a synthetic world of about 3.3 hours of
    event time and written its training log; its model is in the registry, as a
    checkpoint leaves it (saved, not promoted)."""
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=2)
    settings = with_training_log(settings, f"{unique_prefix}.examples")
    world = list(generate_world(WorldConfig(events=3_000, seed=11)))
    produce(settings, lines_of(world))
    (worker,) = run_workers(settings, 1)
    learned = worker.processor.slots[0].labels_learned
    assert learned == sum(1 for r in world if "user_id" not in r)
    client = redis.Redis.from_url(redis_url)
    ModelRegistry(client, unique_prefix, KEY).save(
        worker.processor.slots[0].model,
        name=settings.model.spec,
        parent=None,
        events_scored=worker.processor.slots[0].events_scored,
        labels_learned=learned,
        offsets={},
        metrics={},
    )
    client.close()
    return settings, write_config(settings, tmp_path / "config.yaml"), learned


def test_a_model_trained_from_the_log_is_judged_on_the_later_slice_registered_and_entered(
    logged, redis_url, unique_prefix, tmp_path
):
    settings, config, learned = logged
    client = redis.Redis.from_url(redis_url)
    registry = ModelRegistry(client, unique_prefix, KEY)
    checkpoints = [info.version for info in registry.list()]
    assert len(checkpoints) == 1

    section_file = tmp_path / "experiment.yaml"
    args = ["model", "train", "--from-log", "--since", "2h", "--holdout", "0.25"]
    args += ["--challenger", "retrained", "--share", "0.1", "--json"]
    args += ["--experiment-file", str(section_file), "--config", str(config)]
    result = CliRunner().invoke(app, args, env={"STREAMLEARN_MODEL_KEY": KEY.decode()})
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)

    window = doc["window"]
    assert window["until_ms"] - window["start_ms"] == 2 * HOUR_MS
    assert window["outside"] > 0 and window["trained"] > 0 and window["held_out"] > 0
    assert window["trained"] + window["held_out"] + window["outside"] == learned == doc["records"]
    assert doc["skipped"] == {}
    assert doc["current_version"] == checkpoints[-1]  # nothing promoted: the newest version
    for name in ("candidate", "current"):
        assert doc[name]["examples"] == window["held_out"], name
    for name in ("candidate", "current", "served"):
        assert 0 < doc[name]["log_loss"] < 1.5, name
    assert 0 < doc["served"]["examples"] <= window["held_out"]

    version = doc["registered"]
    info = registry.info(version)
    assert info.name == settings.model.spec and info.labels_learned == window["trained"]
    assert info.metrics["log_loss"] == pytest.approx(doc["candidate"]["log_loss"])
    assert info.metrics["current_log_loss"] == pytest.approx(doc["current"]["log_loss"])
    assert info.metrics["holdout_examples"] == window["held_out"]
    assert "retrained from the training log" in info.note
    assert registry.current() is None, "registered, not promoted"
    model, _ = registry.load(version)
    assert model is not None

    challenger, retrained = records(registry)[:2]
    assert retrained["source"] == challenger["source"] == "retrain"
    assert retrained["action"] == "retrain" and retrained["version"] == version
    assert retrained["versions"] == {"new": version, "current": checkpoints[-1]}
    assert retrained["window"] == window
    assert challenger["action"] == "challenger_request" and challenger["version"] == version

    section = yaml.safe_load(section_file.read_text())["experiment"]
    assert section == doc["experiment"] == challenger["experiment"]
    assert section["arms"] == {"champion": 0.9, "retrained": 0.1}
    assert section["models"] == {"retrained": f"version:{version}"}
    checked = ExperimentSettings.model_validate({k: v for k, v in section.items() if k != "models"})
    assert checked.treatments == ["retrained"]
    client.close()


def test_a_window_without_examples_and_bad_records_are_said_not_crashed(
    logged, kafka_bootstrap, tmp_path
):
    settings, config, learned = logged
    topic = settings.kafka.topics.examples
    assert topic is not None
    sink = KafkaSink(settings.kafka.model_copy(update={"transactions": False}))
    try:
        sink.send(topic, b"bad", b'{"event_id": "x"}')
        sink.send(topic, b"bad", b"\xff not json")
        sink.flush()
    finally:
        sink.close()
    read = read_training_log(settings.kafka)
    assert len(read.examples) == learned
    assert read.skipped == {"missing_field": 1, "not_utf8": 1}

    env = {"STREAMLEARN_MODEL_KEY": KEY.decode()}
    args = ["model", "train", "--from-log", "--until", "2025-01-01T00:00:00Z", "--since", "1d"]
    result = CliRunner().invoke(app, [*args, "--config", str(config)], env=env)
    assert result.exit_code == 1, result.output
    assert "nothing to train on: no example in the window" in result.output
    assert "Traceback" not in result.output

    missing = f"{topic}-missing"
    result = CliRunner().invoke(app, [*args, "--topic", missing, "--config", str(config)], env=env)
    assert result.exit_code == 1 and f"topic {missing!r} does not exist" in result.output
    result = CliRunner().invoke(app, ["model", "train", "--from-log", "--since", "30 days",
                                      "--config", str(config)], env=env)  # fmt: skip
    assert result.exit_code == 2 and "a duration is a number and a unit" in result.output
    # seeking by time: a window starting after the log's records reads none of them
    late = read_training_log(settings.kafka, since_ms=4_000_000_000_000, slack_ms=0)
    assert late.records == 0 and set(late.start_offsets) == {0, 1}
