"""Crash safety on the real stack: kill -9 at random moments loses and doubles nothing."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter

import pytest
import redis as redis_lib

from learners.registry import ModelRegistry
from stream.synthetic import WorldConfig, generate_world

from .pipeline import (
    drain,
    lines_of,
    produce,
    recount,
    settings_for,
    stored_counters,
    worker_process,
    write_config,
)

pytestmark = pytest.mark.integration

KEY = "crash-test-signing-key-0123456789"


def final_labels_learned(redis_url: str, prefix: str, group: str) -> int:
    client = redis_lib.Redis.from_url(redis_url)
    raw = client.hget(f"{prefix}:checkpoint:{group}:worker-0", "confirmed")
    assert raw is not None, "the last run left a confirmed checkpoint"
    version = __import__("orjson").loads(raw)["version"]
    _, info = ModelRegistry(client, prefix, KEY.encode()).load(version)
    return info.labels_learned


@pytest.mark.parametrize("transactions", [True])
def test_kill_9_at_random_moments_then_restart_loses_and_doubles_nothing(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, tmp_path, transactions
):
    records = list(generate_world(WorldConfig(events=3000, seed=9)))
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=2,
        kafka={
            "transactions": transactions,
            "max_poll_records": 50,
            "session_timeout_ms": 6000,
            "static_membership": True,
        },
        checkpoint={"every_labels": 150, "every_seconds": 0.5},
    )
    produce(settings, lines_of(records))
    config = write_config(settings, tmp_path / "worker.yaml")
    env = {"STREAMLEARN_MODEL_KEY": KEY}
    rng = random.Random(4)

    kills = 0
    for _ in range(10):
        process = worker_process(config, "--idle-timeout", "3", env=env)
        time.sleep(rng.uniform(2.0, 4.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=30)
    final = worker_process(config, "--idle-timeout", "4", env=env)
    assert final.wait(timeout=300) == 0, (tmp_path / "worker.log").read_text()[-3000:]

    assert kills >= 5, "the worker was killed mid-stream several times"
    events = {r["event_id"] for r in records if "user_id" in r}
    per_event = Counter(
        r.key.decode() for r in drain(kafka_bootstrap, settings.kafka.topics.predictions)
    )
    assert set(per_event) == events
    assert set(per_event.values()) == {1}, "each event_id once among committed predictions"
    assert stored_counters(redis_client, unique_prefix) == recount(records)
    assert final_labels_learned(redis_url, unique_prefix, settings.kafka.group_id) == 3000
