"""The chaos suite on the real stack: a worker fed random mixtures of valid, hostile and
extreme records (values, weights, timestamps, sizes) through Kafka and Redis.

Invariants: the worker never stalls (it reads the whole stream and stops within a
bounded time); every valid event gets exactly one committed prediction with a finite
score; every invalid record exactly one dead letter that fits its topic; the model
and every gauge stay finite; the pending labels and the Redis keys stay within their
configured bounds.
"""

from __future__ import annotations

import math
import threading
import time

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from streamlearn.metrics.monitoring_metrics import MONITOR_METRICS
from streamlearn.stream.harness import drain, settings_for
from streamlearn.stream.produce import event_key, route
from streamlearn.stream.worker import Worker
from tests.chaos import Case, Outcome, check_invariants, non_finite, random_stream

pytestmark = pytest.mark.integration

#: ``max.message.bytes`` of the dead-letter topic: hostile records are far larger.
DEAD_LETTER_TOPIC_BYTES = 16_384
RECORDS = 800
KEY = "chaos-signing-key"
#: Redis keys bounded by their count, not by a lifetime: the pending labels (``pl``, ``plz``),
#: the implicit-label deadlines (``dl``), the model registry and the checkpoints.
BOUNDED_WITHOUT_TTL = frozenset({"pl", "plz", "dl", "registry", "checkpoint"})


def produce_cases(bootstrap: str, topics: dict[str, str], cases: list[Case]) -> dict[str, int]:
    """Send every case to its topic; returns ``topic:partition:offset`` -> case index."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    futures = [
        producer.send(topics[route(case.value)], case.value, key=event_key(case.value))
        for case in cases
    ]
    producer.flush()
    producer.close()
    where = {}
    for index, future in enumerate(futures):
        meta = future.get(timeout=30)
        where[f"{meta.topic}:{meta.partition}:{meta.offset}"] = index
    return where


@pytest.mark.parametrize(
    ("client", "transactions"),
    [("kafka-python", True), ("librdkafka", False)],
    ids=["kafka-python-transactions", "librdkafka"],
)
def test_a_worker_keeps_every_invariant_on_a_hostile_stream(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, client, transactions
):
    cases = random_stream(seed=17, size=RECORDS, now_ms=time.time_ns() // 1_000_000)
    assert all(route(case.value) == case.topic for case in cases)
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=2,
        kafka={"client": client, "transactions": transactions},
        store={"pending_max": 40},
        checkpoint={"every_labels": 50},
    )
    topics = settings.kafka.topics
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics(
            [
                NewTopic(
                    topics.dead_letter,
                    1,
                    1,
                    topic_configs={"max.message.bytes": str(DEAD_LETTER_TOPIC_BYTES)},
                )
            ]
        )
    finally:
        admin.close()
    where = produce_cases(
        kafka_bootstrap, {"events": topics.events, "labels": topics.labels}, cases
    )

    worker = Worker(settings, name="worker-0", signing_key=KEY.encode())
    thread = threading.Thread(target=lambda: worker.run(idle_timeout_s=4.0), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(timeout=180)
    if thread.is_alive():
        worker.stop()
        thread.join(timeout=60)
        pytest.fail(f"the worker stalled: {worker.summary}")
    assert worker.summary.records >= RECORDS, "the worker stopped before the end of the stream"
    elapsed = time.monotonic() - started

    predictions = [
        (r.key.decode(), orjson.loads(r.value)["score"])
        for r in drain(kafka_bootstrap, topics.predictions)
    ]
    letters = drain(kafka_bootstrap, topics.dead_letter)
    outcome = Outcome(
        predictions,
        [where[r.key.decode()] for r in letters],
        [len(r.value) for r in letters],
    )
    check_invariants(cases, outcome, max_dead_letter=DEAD_LETTER_TOPIC_BYTES)

    assert non_finite(worker.slot.model) == [], "the model holds non-finite numbers"
    # The monitor's gauges are NaN while their windows wait for data (the drift warm-up is
    # longer than this stream); whatever it has computed is finite. Every other gauge is.
    assert worker.slot.monitor is not None
    assert non_finite(worker.slot.monitor.snapshot(refresh=True), "monitor") == []
    gauges = [
        (sample.name, sample.labels, sample.value)
        for metric in worker.registry.collect()
        if metric.type == "gauge" and metric.name not in MONITOR_METRICS
        for sample in metric.samples
        if not math.isfinite(sample.value)
    ]
    assert gauges == [], f"gauges that are not finite: {gauges[:5]}"

    pending = redis_client.hlen(f"{unique_prefix}:pl")
    assert pending <= settings.store.pending_max
    untimed = [
        key
        for key in redis_client.scan_iter(match=f"{unique_prefix}:*", count=1000)
        if key.decode().split(":")[1] not in BOUNDED_WITHOUT_TTL and redis_client.pttl(key) < 0
    ]
    assert untimed == [], f"Redis keys without a lifetime: {untimed[:5]}"
    print(f"{len(cases)} records: {len(predictions)} predictions, {len(letters)} dead letters")
    print(f"in {elapsed:.1f} s")
