"""Topic creation and the produce loop that the CLI, the tests and the benchmarks share."""

from __future__ import annotations

import orjson
import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError, MessageSizeTooLargeError

from streamlearn.stream.harness import drain, settings_for
from streamlearn.stream.produce import LineProducer, produce_lines
from streamlearn.stream.topics import ensure_topics

pytestmark = pytest.mark.integration


def partitions_with_leaders(bootstrap: str, topic: str) -> list[int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    return sorted(p["partition_index"] for p in described["partitions"] if p["leader_id"] >= 0)


def test_ensure_topics_creates_only_the_missing_ones_and_leaves_them_ready(
    kafka_bootstrap, redis_url, unique_prefix
):
    kafka = settings_for(kafka_bootstrap, redis_url, unique_prefix).kafka
    old, new = f"{unique_prefix}.old", f"{unique_prefix}.new"
    assert ensure_topics(kafka, {old: 2}) == [old]

    assert ensure_topics(kafka, {old: 5, new: 3}) == [new]
    assert ensure_topics(kafka, {old: 5, new: 3}) == []

    assert partitions_with_leaders(kafka_bootstrap, old) == [0, 1]  # not changed to 5
    assert partitions_with_leaders(kafka_bootstrap, new) == [0, 1, 2]


def test_a_topic_the_broker_refuses_raises_its_error(kafka_bootstrap, redis_url, unique_prefix):
    kafka = settings_for(kafka_bootstrap, redis_url, unique_prefix).kafka
    with pytest.raises(KafkaError, match="creating topic .*InvalidPartitionsError: ."):
        ensure_topics(kafka, {f"{unique_prefix}.none": 0})


def test_produce_lines_routes_by_kind_keys_by_event_id_and_carries_event_times(
    kafka_bootstrap, redis_url, unique_prefix
):
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=1)
    event = {"event_id": "e1", "timestamp": 1, "user_id": "u", "item_id": "i", "label": 1}
    label = {"event_id": "e1", "timestamp": 2, "label": 0}
    lines = [orjson.dumps(event), orjson.dumps(label), b"{oops"]

    assert produce_lines(settings.kafka, lines) == {"events": 2, "labels": 1}

    topics = settings.kafka.topics
    events = [(r.key, r.value, r.headers) for r in drain(kafka_bootstrap, topics.events)]
    labels = [(r.key, r.value, r.headers) for r in drain(kafka_bootstrap, topics.labels)]
    # each record carries its event time; a line without one takes the time before it
    assert events == [
        (b"e1", lines[0], [("event-time", b"1")]),
        (None, b"{oops", [("event-time", b"2")]),
    ]
    assert labels == [(b"e1", lines[1], [("event-time", b"2")])]


def test_a_line_the_producer_refuses_stops_the_send_after_the_lines_before_it(
    kafka_bootstrap, redis_url, unique_prefix
):
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=1)
    ok = orjson.dumps({"event_id": "e1", "timestamp": 1, "user_id": "u", "item_id": "i"})
    huge = orjson.dumps({"event_id": "e2", "timestamp": 1, "pad": "x" * 2_000_000})
    producer = LineProducer(settings.kafka)

    producer.send([ok, huge, ok])

    assert producer.stopped is not None
    index, size, error = producer.stopped
    assert (index, size) == (1, len(huge)) and isinstance(error, MessageSizeTooLargeError)
    assert producer.counts == {"events": 1, "labels": 0}
    assert [r.value for r in drain(kafka_bootstrap, settings.kafka.topics.events)] == [ok]
    with pytest.raises(MessageSizeTooLargeError):
        produce_lines(settings.kafka, [huge])
