"""A worker never checkpoints a non-finite model nor publishes a non-finite score.

The worker's model factory here returns a logistic model whose intercept is
already NaN (as a model poisoned before the guard existed, or loaded from
elsewhere): every score is NaN and every learn leaves it non-finite. The
worker must publish no prediction (a NaN was published as ``null``), send the
events and labels to the dead letters, write no checkpoint and commit no
offset, so a restart does not resume from a poisoned model.
"""

from __future__ import annotations

import math

import orjson
from kafka import KafkaAdminClient
from river import base

from streamlearn.learners.models import build_model, learn
from streamlearn.learners.registry import ModelRegistry
from streamlearn.stream.harness import drain, lines_of, produce, settings_for
from streamlearn.stream.worker import Worker

KEY = "model-guard-test-signing-key-0123456789"


def poisoned() -> base.Classifier:
    model = build_model("logistic")
    learn(model, {"x": 1.0}, 1.0, 1.0)
    model.steps["LogisticRegression"].intercept = math.nan
    return model


def test_a_worker_with_a_non_finite_model_publishes_no_score_and_commits_no_checkpoint(
    kafka_bootstrap, redis_url, redis_client, unique_prefix
):
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=1,
        features={"mode": "raw"},
        model={"spec": "tests.integration.test_model_guard:poisoned"},
        checkpoint={"every_labels": 10, "every_seconds": 3600},
    )
    events = [
        {
            "event_id": f"e{n}",
            "timestamp": 1_767_225_600_000 + n * 1000,
            "user_id": "u",
            "item_id": "i",
            "features": {"x": float(n % 5)},
            "label": n % 2 == 0,
        }
        for n in range(40)
    ]
    produce(settings, lines_of(events))
    worker = Worker(settings, name="guarded", signing_key=KEY.encode())
    summary = worker.run(idle_timeout_s=3)

    predictions = drain(kafka_bootstrap, settings.kafka.topics.predictions, idle_ms=1000)
    assert predictions == [], "a NaN score is never published"
    letters = [
        orjson.loads(r.value)
        for r in drain(kafka_bootstrap, settings.kafka.topics.dead_letter, idle_ms=1000)
    ]
    reasons = sorted({letter["reason"] for letter in letters})
    assert reasons == ["not_finite", "poisoned_model"]
    assert sum(1 for letter in letters if letter["reason"] == "not_finite") == 40

    assert summary.checkpoints == 0
    registry = ModelRegistry(redis_client, unique_prefix, KEY.encode())
    assert registry.list() == []
    refused = worker.metrics.registry.get_sample_value("streamlearn_checkpoints_refused_total")
    assert refused is not None and refused >= 1
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        committed = admin.list_group_offsets({settings.kafka.group_id: None})
        committed = committed.get(settings.kafka.group_id, {})
    finally:
        admin.close()
    assert committed == {} or all(o.offset < 0 for o in committed.values()), committed
