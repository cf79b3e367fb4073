"""Predictions the broker refuses are never lost behind a committed offset (real Kafka).

The predictions topic is created with a ``max.message.bytes`` below the size of
a prediction, so the broker refuses every one. The worker (at-least-once mode)
must not commit the offsets of their events; once the topic accepts them, a
worker resumes from the last commit and every event gets its prediction.
(Not in transactions: the broker cannot write a transaction's end marker into
a topic this small either, so such a transaction never ends.)
"""

from __future__ import annotations

import re
import threading
import time

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError
from typer.testing import CliRunner

from stream.cli import app
from stream.harness import drain, lines_of, produce, run_workers, settings_for, write_config
from stream.kafka_io import KafkaSink, UndeliveredError
from stream.synthetic import WorldConfig, generate_world
from stream.worker import Worker

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


def small_topic(bootstrap: str, topic: str) -> None:
    """A topic of one partition that refuses records over 64 bytes."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "64"})])
    finally:
        admin.close()


class NoCommits:
    def commit(self, offsets: object) -> None:
        raise AssertionError("offsets committed for records the broker refused")


def test_records_of_a_batch_split_for_being_too_large_are_reported_undelivered(
    kafka_bootstrap, redis_url, unique_prefix
):
    """kafka-python splits a batch the broker refuses as too large and fails a flush
    waiting on it with UnknownError("Future not done"); the sink flushes the halves
    until each record is refused, and reports them all."""
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, kafka={"linger_ms": 1000})
    topic = f"{unique_prefix}.small"
    small_topic(kafka_bootstrap, topic)
    sink = KafkaSink(settings.kafka)
    try:
        for n in range(200):
            sink.send(topic, b"%d" % n, b"x" * 100)
        with pytest.raises(UndeliveredError) as refused:
            sink.commit({}, NoCommits())
        assert refused.value.count == 200
        assert "MessageSizeTooLargeError" in str(refused.value)
        sink.flush()  # each refusal is reported once, so nothing is left to report
    finally:
        sink.close()
    assert drain(kafka_bootstrap, topic, idle_ms=500) == []


def test_produce_says_how_many_records_the_broker_refused_and_exits_1(
    tmp_path, kafka_bootstrap, redis_url, unique_prefix
):
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=1)
    small_topic(kafka_bootstrap, settings.kafka.topics.events)
    records = list(generate_world(WorldConfig(events=50, seed=8)))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines_of(records)))
    config = write_config(settings, tmp_path / "config.yaml")

    result = CliRunner().invoke(app, ["produce", str(path), "--config", str(config)])

    assert result.exit_code == 1, result.output
    refused = re.search(r"(\d+) records were not delivered", result.output)
    assert refused, result.output
    assert int(refused[1]) >= 50  # kafka-python fails the labels after the first refusal too
    assert "MessageSizeTooLargeError" in result.output
    assert "sent" not in result.output
