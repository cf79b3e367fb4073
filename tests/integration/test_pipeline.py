"""The core pipeline end to end on the real Kafka and Redis."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from streamlearn.stream.harness import (
    drain,
    lines_of,
    produce,
    recount,
    run_workers,
    settings_for,
    stored_counters,
)
from streamlearn.stream.synthetic import WorldConfig, generate_world

pytestmark = pytest.mark.integration


CLIENTS = pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])


@CLIENTS
def test_one_worker_scores_every_event_once_learns_every_label_and_counts_exactly(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, client
):
    records = list(generate_world(WorldConfig(events=10_000, seed=3)))
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, kafka={"client": client})
    sent = produce(settings, lines_of(records))
    assert sent == {"events": 10_000, "labels": 10_000}

    (worker,) = run_workers(settings, 1)

    predictions = drain(kafka_bootstrap, settings.kafka.topics.predictions)
    per_event = Counter(r.key.decode() for r in predictions)
    events = {r["event_id"] for r in records if "user_id" in r}
    assert set(per_event) == events
    assert set(per_event.values()) == {1}
    first = orjson.loads(predictions[0].value)
    assert 0.0 <= first["score"] <= 1.0 and first["model_version"] == "0"
    assert worker.processor.slots[0].labels_learned == 10_000
    assert stored_counters(redis_client, unique_prefix) == recount(records)


@CLIENTS
def test_the_training_log_has_each_learned_label_once_with_its_features(
    kafka_bootstrap, redis_url, unique_prefix, client
):
    records = list(generate_world(WorldConfig(events=1_000, seed=8)))
    kafka = {"client": client, "transactions": True}
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=2, kafka=kafka)
    examples_topic = f"{unique_prefix}.examples"
    topics = settings.kafka.topics.model_copy(update={"examples": examples_topic})
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topics": topics})}
    )
    produce(settings, lines_of(records))

    (worker,) = run_workers(settings, 1)

    examples = [orjson.loads(r.value) for r in drain(kafka_bootstrap, examples_topic)]
    labels = {r["event_id"]: float(r["label"]) for r in records if "user_id" not in r}
    assert len(examples) == worker.processor.slots[0].labels_learned == len(labels)
    assert {e["event_id"]: e["label"] for e in examples} == labels
    assert all(e["kind"] == "labels" and e["source"].startswith(f"{unique_prefix}.labels:")
               for e in examples)  # fmt: skip
    assert all(e["features"]["user_seen"] in (0.0, 1.0) for e in examples)


@CLIENTS
def test_two_workers_in_one_group_give_the_same_counters_as_one(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, client
):
    records = list(generate_world(WorldConfig(events=4_000, seed=5)))
    kafka = {"client": client}
    one = settings_for(kafka_bootstrap, redis_url, unique_prefix + "a", partitions=4, kafka=kafka)
    two = settings_for(kafka_bootstrap, redis_url, unique_prefix + "b", partitions=4, kafka=kafka)
    produce(one, lines_of(records))
    run_workers(one, 1)
    workers = run_workers(
        two, 2, idle_timeout_s=8.0, when_assigned=lambda: produce(two, lines_of(records))
    )

    assert all(w.summary.records > 0 for w in workers), "both workers got records"
    single = stored_counters(redis_client, unique_prefix + "a")
    double = stored_counters(redis_client, unique_prefix + "b")
    assert single == double == recount(records)


def test_invalid_records_go_to_dead_letter_with_a_reason_and_valid_ones_are_scored(
    kafka_bootstrap, redis_url, unique_prefix
):
    valid = [
        {"event_id": f"ok{n}", "timestamp": 1_767_225_600_000 + n, "user_id": "u", "item_id": "i"}
        for n in range(20)
    ]
    bad = [
        b'{"event_id": "x1", "timestamp": ',
        b'{"event_id": "x2", "timestamp": "yesterday", "user_id": "u", "item_id": "i"}',
        b'{"event_id": "x3", "timestamp": 1767225600000, "user_id": 7, "item_id": "i"}',
        b'{"event_id": "x4", "timestamp": 1767225600000, "item_id": "i"}',
        b"\xff\xfe not text",
    ]
    lines = lines_of(valid[:10]) + bad + lines_of(valid[10:])
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=1)
    produce(settings, lines)

    run_workers(settings, 1, idle_timeout_s=3)

    scored = {r.key.decode() for r in drain(kafka_bootstrap, settings.kafka.topics.predictions)}
    assert scored == {v["event_id"] for v in valid}
    letters = [
        orjson.loads(r.value) for r in drain(kafka_bootstrap, settings.kafka.topics.dead_letter)
    ]
    assert [d["reason"] for d in letters] == [
        "invalid_json",
        "wrong_type",
        "wrong_type",
        "missing_field",
        "not_utf8",
    ]
    assert all(d["topic"] == settings.kafka.topics.events for d in letters)
    assert [d["offset"] for d in letters] == [10, 11, 12, 13, 14]
