"""Recovery on the real stack: SIGTERM, Redis and Kafka restarts, promotion and rollback."""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import orjson
import psutil
import pytest
import redis as redis_lib

from streamlearn.learners.checkpoint import CheckpointStore
from streamlearn.learners.models import score
from streamlearn.learners.registry import ModelRegistry
from streamlearn.stack import Stack
from streamlearn.stream.harness import (
    drain,
    lines_of,
    produce,
    recount,
    settings_for,
    stored_counters,
    worker_process,
    write_config,
)
from streamlearn.stream.synthetic import WorldConfig, generate_world
from streamlearn.stream.worker import Worker

from .pipeline import exit_code, wait_for, worker_state

pytestmark = pytest.mark.integration

KEY = "recovery-test-signing-key-0123456789"


def test_sigterm_finishes_the_batch_checkpoints_and_exits_zero(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, tmp_path
):
    records = list(generate_world(WorldConfig(events=4000, seed=21)))
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=2,
        kafka={"max_poll_records": 50, "transactions": True},
        checkpoint={"every_labels": 100000, "every_seconds": 3600},
    )
    produce(settings, lines_of(records))
    config = write_config(settings, tmp_path / "worker.yaml")
    env = {"STREAMLEARN_MODEL_KEY": KEY}

    process = worker_process(config, env=env)
    log_path = tmp_path / "worker.log"
    predictions = settings.kafka.topics.predictions
    wait_for(
        lambda: redis_client.exists(f"{unique_prefix}:s:ev-21-300"),
        60,
        "the worker to be busy",
        explain=lambda: worker_state(process, log_path),
    )
    process.send_signal(signal.SIGTERM)
    assert exit_code(process, log_path, 60) == 0

    store = CheckpointStore(redis_client, unique_prefix, settings.kafka.group_id, "worker-0")
    assert store.recover(lambda names: {}) is not None, "a confirmed checkpoint was written"
    done_before = len(drain(kafka_bootstrap, predictions))
    assert 0 < done_before < 4000, "SIGTERM stopped the worker mid-stream with its work committed"

    final = worker_process(config, "--idle-timeout", "4", env=env)
    assert final.wait(timeout=300) == 0
    per_event = Counter(r.key.decode() for r in drain(kafka_bootstrap, predictions))
    assert len(per_event) == 4000 and set(per_event.values()) == {1}
    assert stored_counters(redis_client, unique_prefix) == recount(records)


@pytest.fixture
def own_stack(fresh_stack_config) -> Iterator[Stack]:
    """Kafka and Redis of the test's own, to restart; Redis keeps its data (AOF) across restarts."""
    stack = Stack(fresh_stack_config.model_copy(update={"redis_appendonly": True}))
    stack.up(services=["kafka", "redis"])
    try:
        yield stack
    finally:
        stack.down()


@pytest.mark.timeout(400)
def test_redis_and_kafka_restarts_mid_stream_lose_and_double_nothing(
    own_stack, unique_prefix, tmp_path
):
    cfg = own_stack.config
    records = list(generate_world(WorldConfig(events=6000, seed=33)))
    settings = settings_for(
        cfg.kafka_bootstrap,
        cfg.redis_url,
        unique_prefix,
        partitions=2,
        kafka={"max_poll_records": 50, "transactions": True, "session_timeout_ms": 6000},
        checkpoint={"every_labels": 200, "every_seconds": 1},
    )
    produce(settings, lines_of(records))
    config = write_config(settings, tmp_path / "worker.yaml")
    client = redis_lib.Redis.from_url(cfg.redis_url)
    process = worker_process(config, "--idle-timeout", "10", env={"STREAMLEARN_MODEL_KEY": KEY})
    log_path = tmp_path / "worker.log"

    for service, at_event in (("redis", 1500), ("kafka", 3500)):
        wait_for(
            lambda n=at_event: _exists(client, f"{unique_prefix}:s:ev-33-{n}"),
            120,
            f"event {at_event} before restarting {service}",
            explain=lambda: worker_state(process, log_path),
        )
        _stop(own_stack, service)
        time.sleep(random.uniform(1.0, 2.0))
        _start(own_stack, service)
        assert process.poll() is None, f"the worker survived the {service} restart"

    assert exit_code(process, log_path, 240) == 0, log_path.read_text()[-3000:]
    per_event = Counter(
        r.key.decode() for r in drain(cfg.kafka_bootstrap, settings.kafka.topics.predictions)
    )
    assert len(per_event) == 6000 and set(per_event.values()) == {1}
    assert stored_counters(client, unique_prefix) == recount(records)
    assert re.search(r"Redis at \S+ unreachable since", log_path.read_text())


@pytest.mark.timeout(300)
def test_a_worker_waits_out_redis_being_away_between_batches(own_stack, unique_prefix, tmp_path):
    """Every Redis call of the worker's loop, the registry's too, waits for Redis and retries."""
    cfg = own_stack.config
    records = list(generate_world(WorldConfig(events=400, seed=34)))
    first, then = records[:200], records[200:]
    settings = settings_for(
        cfg.kafka_bootstrap,
        cfg.redis_url,
        unique_prefix,
        partitions=1,
        checkpoint={"registry_poll_seconds": 0.2},
    )
    produce(settings, lines_of(first))
    config = write_config(settings, tmp_path / "worker.yaml")
    log_path = tmp_path / "worker.log"
    client = redis_lib.Redis.from_url(cfg.redis_url)
    process = worker_process(config, env={"STREAMLEARN_MODEL_KEY": KEY})
    wait_for(
        lambda: _exists(client, f"{unique_prefix}:s:{_last_event(first)}"),
        120,
        "the first records",
        explain=lambda: worker_state(process, log_path),
    )
    _stop(own_stack, "redis")
    time.sleep(3.0)  # many registry polls of an idle worker
    assert process.poll() is None, worker_state(process, log_path)
    _start(own_stack, "redis")
    produce(settings, lines_of(then))
    wait_for(
        lambda: _exists(client, f"{unique_prefix}:s:{_last_event(then)}"),
        120,
        "the records sent after Redis came back",
        explain=lambda: worker_state(process, log_path),
    )
    process.send_signal(signal.SIGTERM)
    assert exit_code(process, log_path, 60) == 0
    assert re.search(r"Redis at \S+ unreachable since", log_path.read_text())


def _last_event(records: list[dict]) -> str:
    return [r for r in records if "user_id" in r][-1]["event_id"]


def _exists(client: redis_lib.Redis, key: str) -> bool:
    try:
        return bool(client.exists(key))
    except redis_lib.ConnectionError:
        return False


def _stop(stack: Stack, service: str) -> None:
    process = psutil.Process(stack.pids()[service])
    process.terminate()
    process.wait(timeout=60)


def _start(stack: Stack, service: str) -> None:
    stack.up(services=[service])
    states = {s.service: s.state for s in stack.status()}
    assert states[service] == "up", f"{service} is back: {states}"


def test_promotion_and_rollback_change_the_scores_the_worker_publishes(
    kafka_bootstrap, redis_url, redis_client, unique_prefix
):
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=1,
        features={"mode": "raw"},
        checkpoint={"every_labels": 300, "every_seconds": 3600, "registry_poll_seconds": 0.2},
    )
    rng = random.Random(2)
    training = []
    for n in range(1200):
        x = rng.gauss(0, 1)
        training.append(
            {
                "event_id": f"train{n}",
                "timestamp": 1_767_225_600_000 + n * 1000,
                "user_id": "u",
                "item_id": "i",
                "features": {"x": x},
                "label": x + rng.gauss(0, 0.5) > 0,
            }
        )
    produce(settings, lines_of(training))
    first = Worker(settings, name="trainer", signing_key=KEY.encode())
    first.run(idle_timeout_s=3)
    registry = ModelRegistry(redis_client, unique_prefix, KEY.encode())
    versions = [info.version for info in registry.list()]
    assert len(versions) >= 3
    early, late = versions[0], versions[-1]
    probe = {"x": 1.5}
    early_score = score(registry.load(early)[0], probe)
    late_score = score(registry.load(late)[0], probe)
    assert early_score != late_score
    registry.promote(early)
    registry.promote(late)

    server = Worker(settings, name="server", signing_key=KEY.encode())
    thread = threading.Thread(target=server.run)
    thread.start()
    try:

        def publish_probe(tag: str) -> float:
            event = {
                "event_id": tag,
                "timestamp": 1_767_230_000_000,
                "user_id": "u",
                "item_id": "i",
                "features": probe,
            }
            produce(settings, lines_of([event]))
            found: list[dict] = []

            def published() -> bool:
                found[:] = [
                    orjson.loads(r.value)
                    for r in drain(kafka_bootstrap, settings.kafka.topics.predictions, idle_ms=500)
                    if r.key == tag.encode()
                ]
                return bool(found)

            wait_for(published, 60, f"the prediction of {tag}")
            return found[0]["score"]

        assert publish_probe("probe-promoted") == late_score
        assert registry.rollback() == early
        time.sleep(1.0)
        assert publish_probe("probe-rolled-back") == early_score
    finally:
        server.stop()
        thread.join(timeout=60)
