"""A rebalance in the middle of uncommitted work, on the real stack: nothing doubled or lost.

A second worker joins the group while the first holds a transaction (or offsets)
it has not committed; the partitions it gives up are read again by their new
owner from the committed offsets, so the first worker must undo its own work.
"""

from __future__ import annotations

import threading

import pytest

from stream.harness import lines_of, produce, recount, settings_for, stored_counters
from stream.synthetic import WorldConfig, generate_world
from stream.worker import Worker

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
        checkpoint={"every_labels": 300, "every_seconds": 3600},
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
