"""A rebalance in the middle of uncommitted work, on the real stack: nothing doubled or lost.

A second worker joins the group while the first holds a transaction (or offsets)
it has not committed; the partitions it gives up are read again by their new
owner from the committed offsets, so the first worker must undo its own work.
"""

from __future__ import annotations

import threading
import time

import pytest
from kafka import KafkaConsumer

from streamlearn.stream.harness import lines_of, produce, recount, settings_for, stored_counters
from streamlearn.stream.kafka_io import KafkaSink, KafkaSource
from streamlearn.stream.rdkafka_io import RdKafkaSource
from streamlearn.stream.synthetic import WorldConfig, generate_world
from streamlearn.stream.topics import ensure_topics
from streamlearn.stream.worker import Worker

from .pipeline import assert_every_event_scored, wait_for

pytestmark = pytest.mark.integration

KEY = b"rebalance-test-signing-key-0123456789"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
@pytest.mark.parametrize("transactions", [True, False], ids=["transactions", "at-least-once"])
def test_a_worker_joining_mid_stream_doubles_no_prediction_or_label(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, client, transactions
):
    records = list(generate_world(WorldConfig(events=6000, seed=12)))
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=4,
        kafka={
            "client": client,
            "transactions": transactions,
            "max_poll_records": 50,
            "session_timeout_ms": 6000,
        },
        # no checkpoint before the second worker joins, so that its join always finds
        # uncommitted work to undo (a join right after a checkpoint would find none)
        checkpoint={"every_labels": 1_000_000, "every_seconds": 3600},
    )
    produce(settings, lines_of(records))
    workers = [Worker(settings, name=f"worker-{n}", signing_key=KEY) for n in range(2)]
    threads = [threading.Thread(target=w.run, kwargs={"idle_timeout_s": 6.0}) for w in workers]

    threads[0].start()
    wait_for(lambda: workers[0].summary.records >= 1500, 120, "the first worker to be busy", 0.01)
    assert workers[0].summary.records < len(records) / 2, "the first worker is mid-stream"
    threads[1].start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(thread.is_alive() for thread in threads), "both workers finished"

    assert workers[0].summary.rewinds >= 1, "the first worker undid its uncommitted work"
    assert workers[1].summary.records > 0, "the second worker took partitions over"
    assert workers[0].registry.get_sample_value("streamlearn_rebalance_rewinds_total") >= 1
    assert_every_event_scored(kafka_bootstrap, settings, records, once=transactions)
    assert stored_counters(redis_client, unique_prefix) == recount(records)
    labels = sum(1 for r in records if "user_id" not in r)
    learned = sum(w.slot.labels_learned for w in workers)
    assert learned == labels, "each label learned by exactly one model"


def describe(source: KafkaSource | RdKafkaSource) -> str:
    """Where a source stands: positions, and for kafka-python what its fetcher holds back."""
    text = f"at {source.positions()}, holding {source._order.first_offsets()}"
    consumer = getattr(source, "consumer", None)
    if isinstance(consumer, KafkaConsumer):
        fetcher = consumer._fetcher
        states = {
            (tp.topic, tp.partition): (state.paused, state.highwater)
            for tp, state in consumer._subscription.assignment.items()
        }
        text += (
            f"; (paused, high) {states}; in line {fetcher._next_partition_records!r}"
            f"; parked {list(fetcher._paused_partition_records)}"
            f" and {list(fetcher._paused_completed_fetches)}"
            f"; completed {len(fetcher._completed_fetches)}"
            f"; pending nodes {fetcher._nodes_with_pending_fetch_requests}"
            f"; futures {[f.is_done for f in fetcher._fetch_futures]}"
            f"; reset {fetcher._reset_task}"
            f"; fetchable {consumer._subscription.fetchable_partitions()}"
            f"; group {consumer._coordinator.state} {consumer._coordinator._generation}"
            f" rejoin {consumer._coordinator.rejoin_needed} {consumer._coordinator.rejoining}"
            f" join {consumer._coordinator._join_task}"
        )
    return text


@pytest.mark.timeout(180)
@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_records_held_for_the_order_are_read_again_when_a_rebalance_gives_their_partitions_back(
    kafka_bootstrap, redis_url, unique_prefix, client
):
    """A member joining for another topic rebalances the group while the source holds
    records for the order; it keeps its partitions (kafka-python keeps their positions)
    but drops what it held, which must then be read again."""
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=2,
        kafka={"max_poll_records": 7, "session_timeout_ms": 6000},
    )
    kafka = settings.kafka
    other_topic = f"{unique_prefix}.other"
    ensure_topics(kafka, {kafka.topics.events: 2, kafka.topics.labels: 1, other_topic: 1})
    sink = KafkaSink(kafka)
    per_partition = 400
    # Recent times: records older than the topic's retention (7 days) go at the broker's
    # next retention check, which would leave nothing to read again.
    start_ms = int(time.time() * 1000) - 60_000
    for n in range(per_partition):
        for partition in (0, 1):  # interleaved event times: each partition waits for the other
            time_ms = start_ms + 2 * n + partition
            sink.producer.send(
                kafka.topics.events, b"{}", partition=partition, timestamp_ms=time_ms
            )
    sink.producer.flush()
    sink.close()

    everything = {(p, n) for p in (0, 1) for n in range(per_partition)}
    source = (KafkaSource if client == "kafka-python" else RdKafkaSource)(kafka)
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def poll() -> None:
        seen.extend((r.partition, r.offset) for r in source.next_batch(200))

    def join_for_another_topic() -> None:
        member = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=kafka.group_id, enable_auto_commit=False
        )
        member.subscribe([other_topic])
        try:
            while not stop.is_set():
                member.poll(timeout_ms=200)
        finally:
            member.close()

    member = threading.Thread(target=join_for_another_topic, daemon=True)
    try:
        wait_for(lambda: poll() or source._order.held, 60, "records held for the order", 0.0)
        held, revocations = source._order.held, source.revocations
        member.start()
        time.sleep(4.0)  # the group waits for this member, which holds its records meanwhile
        wait_for(lambda: poll() or source.revocations > revocations, 60, "a rebalance", 0.0)
        wait_for(
            lambda: poll() or len(set(seen)) >= 2 * per_partition,
            60,
            "every record",
            0.0,
            explain=lambda: f"{len(everything - set(seen))} missing; {describe(source)}",
        )
    finally:
        stop.set()
        member.join(timeout=30)
        source.close()
    assert held > 0
    assert everything - set(seen) == set(), "no record skipped"
