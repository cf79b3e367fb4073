"""Outputs the broker refuses are never lost behind a committed offset, and never stall
the worker (real Kafka).

The predictions topic is created with a ``max.message.bytes`` below the size of
a prediction, so the broker refuses every one. The worker (at-least-once mode,
with ``kafka.max_delivery_attempts`` high enough never to give up in the test)
must not commit the offsets of their events; once the topic accepts them, a
worker resumes from the last commit and every event gets its prediction.
(Not in transactions: the broker cannot write a transaction's end marker into
a topic of 64 bytes either, so such a transaction never ends.)

A dead-letter topic that takes 2,000 bytes gets every dead letter, those of large
records truncated to fit; one that takes 600 bytes (under the smallest dead
letter, 1 KiB) refuses those of large records even truncated: each is sent
``kafka.max_delivery_attempts`` times with backoff, then dropped and counted,
and every event still gets exactly one prediction. Both with and without
transactions: a 600-byte topic still holds a transaction marker (under 100
bytes); without transactions the refused dead letters are sent again in place,
so the predictions already delivered are not sent twice.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.stream.config import Settings
from streamlearn.stream.edge import EdgeError, UndeliveredError
from streamlearn.stream.harness import (
    drain,
    lines_of,
    produce,
    run_workers,
    settings_for,
    write_config,
)
from streamlearn.stream.kafka_io import KafkaSink
from streamlearn.stream.synthetic import WorldConfig, generate_world
from streamlearn.stream.topics import max_message_bytes
from streamlearn.stream.worker import Worker

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
        kafka={"commit_interval_s": 2.0, "client": client, "max_delivery_attempts": 1000},
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
            except EdgeError as error:  # its last commit fails too
                failures.append(error)

        thread = threading.Thread(target=run)
        thread.start()
        try:  # a failed wait must not leave the worker running past the test
            deadline = time.monotonic() + 120
            undelivered = worker.registry.get_sample_value("streamlearn_undelivered_records_total")
            # Refusals are counted as the broker answers each batch: wait for them all.
            while (undelivered or 0) < 300:
                assert time.monotonic() < deadline, f"{undelivered} refused predictions noticed"
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


#: Records no event decodes from, each with a dead letter larger than 2,000 bytes: JSON
#: of escaped characters (twice its size as a dead letter), a record over the size limit
#: (``too_large``), bytes that are not UTF-8 (twice their size in hex).
LARGE_BAD = [
    b'{"event_id": "bad-quotes", "note": "' + b'\\"' * 2_500,
    b'{"event_id": "bad-newlines", "note": "' + b"\\n" * 2_000 + b'"',
    orjson.dumps({"event_id": "bad-large", "features": {"blob": "x" * 70_000}}),
    b"\xff\xfe" * 1_500,
]
SMALL_BAD = [b"{oops", b'{"event_id": "bad-short", "timestamp": ']
DROPPED = {"output": "dead_letter", "reason": "too_large"}
TRANSACTIONS = [
    pytest.param("kafka-python", False, id="kafka-python"),
    pytest.param("librdkafka", False, id="librdkafka"),
    pytest.param("kafka-python", True, id="kafka-python-transactions"),
    pytest.param("librdkafka", True, id="librdkafka-transactions"),
]


def mixed(records: list[dict], bad: list[bytes]) -> list[bytes]:
    """The lines of ``records`` with the ``bad`` ones spread among them."""
    lines = lines_of(records)
    step = len(lines) // (len(bad) + 1)
    for n, raw in enumerate(bad):
        lines.insert((n + 1) * step + n, raw)
    return lines


def run_one(settings: Settings, timeout_s: float = 150.0) -> Worker:
    """One worker until the topics are idle; fails if it is still at work after ``timeout_s``."""
    worker = Worker(settings, name="worker-0")
    thread = threading.Thread(target=lambda: worker.run(idle_timeout_s=4.0))
    thread.start()
    thread.join(timeout=timeout_s)
    running = thread.is_alive()
    if running:
        worker.stop()
        thread.join(timeout=120)
    assert not running, (
        f"the worker still ran after {timeout_s:.0f} s: {worker.summary.predictions} predictions,"
        f" {worker.summary.recoveries} recoveries"
    )
    return worker


def with_dead_letter_topic(settings: Settings, bootstrap: str, max_bytes: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        topic = NewTopic(
            settings.kafka.topics.dead_letter,
            2,
            1,
            topic_configs={"max.message.bytes": str(max_bytes)},
        )
        admin.create_topics([topic])
    finally:
        admin.close()


def sample(worker: Worker, name: str, labels: dict[str, str] | None = None) -> float:
    return worker.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.mark.parametrize(("client", "transactions"), TRANSACTIONS)
def test_dead_letters_too_large_for_their_topic_are_truncated_to_fit_it(
    kafka_bootstrap, redis_url, unique_prefix, client, transactions
):
    records = list(generate_world(WorldConfig(events=100, seed=12)))
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=2,
        kafka={"client": client, "transactions": transactions, "commit_interval_s": 0.5},
    )
    with_dead_letter_topic(settings, kafka_bootstrap, 2_000)
    assert max_message_bytes(settings.kafka, settings.kafka.topics.dead_letter) == 2_000
    produce(settings, mixed(records, LARGE_BAD + SMALL_BAD))

    worker = run_one(settings)

    events = {r["event_id"] for r in records if "user_id" in r}
    predicted = [r.key.decode() for r in drain(kafka_bootstrap, settings.kafka.topics.predictions)]
    assert sorted(predicted) == sorted(events), "every event scored once"
    letters = drain(kafka_bootstrap, settings.kafka.topics.dead_letter)
    assert all(len(letter.value) <= 2_000 for letter in letters)
    docs = {orjson.loads(letter.value)["sha256"]: orjson.loads(letter.value) for letter in letters}
    assert len(letters) == len(docs) == len(LARGE_BAD + SMALL_BAD)
    for raw in LARGE_BAD + SMALL_BAD:
        doc = docs[hashlib.sha256(raw).hexdigest()]
        kept = doc["value"].encode() if "value" in doc else bytes.fromhex(doc["value_hex"])
        assert doc["size"] == len(raw)
        assert doc["truncated"] is (raw in LARGE_BAD)
        assert raw.startswith(kept) and (kept == raw) is (raw in SMALL_BAD)
    assert sample(worker, "streamlearn_dropped_outputs_total", DROPPED) == 0
    if client == "kafka-python":  # it splits a batch the topic refuses: each record fits alone
        assert sample(worker, "streamlearn_undelivered_records_total") == 0
        assert worker.summary.recoveries == 0
    # librdkafka does not: the records of a refused batch are sent again, each alone


@pytest.mark.parametrize(("client", "transactions"), TRANSACTIONS)
def test_dead_letters_the_topic_refuses_even_truncated_are_dropped_after_bounded_attempts(
    kafka_bootstrap, redis_url, unique_prefix, client, transactions
):
    records = list(generate_world(WorldConfig(events=100, seed=13)))
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=2,
        kafka={
            "client": client,
            "transactions": transactions,
            "commit_interval_s": 0.5,
            "max_delivery_attempts": 3,
        },
    )
    with_dead_letter_topic(settings, kafka_bootstrap, 600)
    produce(settings, mixed(records, LARGE_BAD + SMALL_BAD))

    started = time.monotonic()
    worker = run_one(settings)
    took = time.monotonic() - started

    events = {r["event_id"] for r in records if "user_id" in r}
    predicted = [r.key.decode() for r in drain(kafka_bootstrap, settings.kafka.topics.predictions)]
    assert sorted(predicted) == sorted(events), "every event scored once, none again"
    letters = [
        orjson.loads(r.value) for r in drain(kafka_bootstrap, settings.kafka.topics.dead_letter)
    ]
    assert sorted(letter["sha256"] for letter in letters) == sorted(
        hashlib.sha256(raw).hexdigest() for raw in SMALL_BAD
    ), "the dead letters that fit are delivered, the others dropped"
    assert sample(worker, "streamlearn_dropped_outputs_total", DROPPED) == len(LARGE_BAD)
    refused = sample(worker, "streamlearn_undelivered_records_total")
    assert refused >= 3 * len(LARGE_BAD)
    if transactions:  # each refusal aborts the transaction: the worker resumes, with backoff
        assert 1 <= worker.summary.recoveries <= 3 * len(LARGE_BAD)
    else:  # sent again in place, alone: nothing else is sent twice
        assert worker.summary.recoveries == 0
        # a dead letter that fits is refused at most once: with its batch (librdkafka), or
        # as a send after a refusal (kafka-python's idempotent producer fails them all)
        assert refused <= 3 * len(LARGE_BAD) + len(SMALL_BAD)
    assert took > 1.5, "attempts are spaced by a backoff (0.5 s, then 1 s)"
