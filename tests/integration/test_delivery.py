"""Predictions the broker refuses are never lost behind a committed offset (real Kafka).

The predictions topic is created with a ``max.message.bytes`` below the size of
a prediction, so the broker refuses every one. The worker (at-least-once mode)
must not commit the offsets of their events; once the topic accepts them, a
worker resumes from the last commit and every event gets its prediction.
"""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError

from stream.synthetic import WorldConfig, generate_world
from stream.worker import Worker

from .pipeline import drain, lines_of, produce, run_workers, settings_for

pytestmark = pytest.mark.integration


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return [consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        consumer.close()


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_refused_predictions_leave_their_offsets_uncommitted_until_they_are_delivered(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, client
):
    records = list(generate_world(WorldConfig(events=300, seed=5)))
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=2,
        kafka={"commit_interval_s": 2.0, "client": client},
    )
    topics = settings.kafka.topics
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics(
            [NewTopic(topics.predictions, 2, 1, topic_configs={"max.message.bytes": "64"})]
        )
        produce(settings, lines_of(records))

        worker = Worker(settings, name="worker-0")
        failures: list[BaseException] = []

        def run() -> None:
            try:
                worker.run()
            except KafkaError as error:  # its last commit fails too
                failures.append(error)

        thread = threading.Thread(target=run)
        thread.start()
        try:  # a failed wait must not leave the worker running past the test
            deadline = time.monotonic() + 120
            undelivered = worker.registry.get_sample_value("streamlearn_undelivered_records_total")
            while not undelivered:
                assert time.monotonic() < deadline, "the refused predictions were never noticed"
                time.sleep(0.2)
                undelivered = worker.registry.get_sample_value(
                    "streamlearn_undelivered_records_total"
                )
        finally:
            worker.stop()
            thread.join(timeout=120)
        assert not thread.is_alive()

        assert undelivered >= 300
        assert committed_offsets(kafka_bootstrap, settings.kafka.group_id, topics.events, 2) == [
            None,
            None,
        ]
        assert drain(kafka_bootstrap, topics.predictions, idle_ms=1000) == []

        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, topics.predictions, {"max.message.bytes": "1048588"}
                )
            ]
        )
        run_workers(settings, 1)
    finally:
        admin.close()

    predicted = {
        orjson.loads(r.value)["event_id"] for r in drain(kafka_bootstrap, topics.predictions)
    }
    assert predicted == {r["event_id"] for r in records if "user_id" in r}
