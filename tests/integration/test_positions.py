"""Both Kafka sources report where they are in every assigned partition (real Kafka).

A partition that has given no record yet is at the group's committed offset,
or at the start that ``auto_offset_reset`` names; one that has is just past
its last record handed out. The lag and the end check are built on these.
"""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streamlearn.stream.config import Settings
from streamlearn.stream.harness import settings_for
from streamlearn.stream.kafka_io import KafkaSink, KafkaSource
from streamlearn.stream.processor import Record
from streamlearn.stream.rdkafka_io import RdKafkaSource
from streamlearn.stream.topics import ensure_topics

pytestmark = pytest.mark.integration

SOURCES = {"kafka-python": KafkaSource, "librdkafka": RdKafkaSource}
#: Records per partition of the events topic; partition 2 stays empty.
EVENTS = {0: 30, 1: 20, 2: 0}


def fill(settings: Settings) -> None:
    kafka = settings.kafka
    ensure_topics(kafka, {kafka.topics.events: len(EVENTS), kafka.topics.labels: 1})
    sink = KafkaSink(kafka)
    for partition, count in EVENTS.items():
        for n in range(count):
            sink.producer.send(kafka.topics.events, b"{}", partition=partition, key=b"%d" % n)
    sink.producer.flush()
    sink.close()


def expected_positions(
    records: list[Record], committed: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    positions = {**committed}
    for record in records:
        positions[(record.topic, record.partition)] = record.offset + 1
    return positions


@pytest.mark.parametrize("client", list(SOURCES))
def test_positions_of_partitions_read_or_not_follow_the_records_handed_out(
    kafka_bootstrap, redis_url, unique_prefix, client
):
    settings = settings_for(
        kafka_bootstrap, redis_url, unique_prefix, kafka={"max_poll_records": 5}
    )
    events, labels = settings.kafka.topics.events, settings.kafka.topics.labels
    fill(settings)
    committer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=settings.kafka.group_id,
        enable_auto_commit=False,
    )
    committer.assign([TopicPartition(events, 1)])
    committer.commit({TopicPartition(events, 1): OffsetAndMetadata(7, "", -1)})
    committer.close()
    start = {(events, 0): 0, (events, 1): 7, (events, 2): 0, (labels, 0): 0}

    source = SOURCES[client](settings.kafka, read_committed=True)
    try:
        records: list[Record] = []
        for _ in range(200):
            records += source.next_batch(100)
            if records and len(source.assigned()) == len(start):
                break
        assert records, "no record within 20 s"
        assert source.assigned() == set(start)
        assert source.positions() == expected_positions(records, start)
        for _ in range(200):
            records += source.next_batch(100)
            if len(records) == 30 + 20 - 7:
                break
        ends = {(events, 0): 30, (events, 1): 20, (events, 2): 0, (labels, 0): 0}
        assert source.positions() == expected_positions(records, start) == ends
        assert source.end_offsets() == ends
        assert source.caught_up()
    finally:
        source.close()
