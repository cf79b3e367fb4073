"""The worker's Kafka clients as configured: the adapter of ``kafka.client``, and its topics.

The worker's default factories (:class:`stream.worker.Worker` takes others, e.g.
in-memory ones in tests): :func:`open_source` and :func:`open_sink` build the
source and sink of the configured client (:mod:`stream.kafka_io` for
``kafka-python``, :mod:`stream.rdkafka_io` for ``librdkafka``), and
:func:`prepare_topics` creates the topics when ``kafka.topics.create`` and
says how large a dead letter its topic takes. Each raises
:class:`stream.edge.EdgeError` when Kafka fails.
"""

from __future__ import annotations

from streamlearn.stream.config import KafkaConfig
from streamlearn.stream.edge import Sink, Source
from streamlearn.stream.kafka_errors import edge_errors
from streamlearn.stream.kafka_io import KafkaSink, KafkaSource
from streamlearn.stream.rdkafka_io import RdKafkaSink, RdKafkaSource
from streamlearn.stream.topics import ensure_topics, max_message_bytes, topic_plan

__all__ = ["CONNECT_ATTEMPT_MS", "open_sink", "open_source", "prepare_topics"]

#: The longest a Kafka client's construction waits for a first broker: while Kafka is
#: out of reach the worker says so (and since when) once per attempt, and tries again.
CONNECT_ATTEMPT_MS = 5_000


def prepare_topics(kafka: KafkaConfig) -> int | None:
    """Create the missing topics (when ``kafka.topics.create``); returns the dead letter
    topic's ``max.message.bytes`` (None: unknown)."""
    with edge_errors():
        if kafka.topics.create:
            ensure_topics(kafka, topic_plan(kafka), CONNECT_ATTEMPT_MS)
        return max_message_bytes(kafka, kafka.topics.dead_letter, CONNECT_ATTEMPT_MS)


def open_source(kafka: KafkaConfig, name: str) -> Source:
    """The consumer of worker ``name`` (read committed; ``name`` is its static member id)."""
    kind = RdKafkaSource if kafka.client == "librdkafka" else KafkaSource
    return kind(
        kafka, read_committed=True, instance_id=name, bootstrap_timeout_ms=CONNECT_ATTEMPT_MS
    )


def open_sink(kafka: KafkaConfig, name: str) -> Sink:
    """The producer of worker ``name`` (transactional when ``kafka.transactions``)."""
    kind = RdKafkaSink if kafka.client == "librdkafka" else KafkaSink
    transactional_id = f"{kafka.group_id}-{name}" if kafka.transactions else None
    client = kafka.model_copy(update={"client_id": f"{kafka.client_id}-{name}"})
    return kind(client, transactional_id, bootstrap_timeout_ms=CONNECT_ATTEMPT_MS)
