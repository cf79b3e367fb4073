"""Crash safety on the real stack: kill -9 at random moments loses and doubles nothing."""

from __future__ import annotations

import random

import pytest
import redis as redis_lib

from streamlearn.stream.harness import (
    kill_randomly,
    labels_learned_by_last_checkpoint,
    lines_of,
    produce,
    recount,
    settings_for,
    stored_counters,
    worker_process,
    write_config,
)
from streamlearn.stream.synthetic import WorldConfig, generate_world

from .pipeline import assert_every_event_scored

pytestmark = pytest.mark.integration

KEY = "crash-test-signing-key-0123456789"


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
@pytest.mark.parametrize("transactions", [True, False], ids=["transactions", "at-least-once"])
def test_kill_9_at_random_moments_then_restart_loses_and_doubles_nothing(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, tmp_path, transactions, client
):
    records = list(generate_world(WorldConfig(events=3000, seed=9)))
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=2,
        kafka={
            "client": client,
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

    kills = kill_randomly(config, 10, rng, env, alive_s=(0.2, 1.5))
    client = redis_lib.Redis.from_url(redis_url)
    group = settings.kafka.group_id
    learned_while_killed = labels_learned_by_last_checkpoint(
        client, unique_prefix, group, KEY.encode()
    )
    final = worker_process(config, "--idle-timeout", "4", env=env)
    assert final.wait(timeout=300) == 0, (tmp_path / "worker.log").read_text()[-3000:]

    assert kills >= 5, "the worker was killed several times"
    assert learned_while_killed > 0, "the killed workers checkpointed progress between kills"
    assert_every_event_scored(kafka_bootstrap, settings, records, once=transactions)
    assert stored_counters(redis_client, unique_prefix) == recount(records)
    assert labels_learned_by_last_checkpoint(client, unique_prefix, group, KEY.encode()) == 3000
