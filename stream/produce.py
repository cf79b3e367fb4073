"""Producing JSON lines of events and labels to Kafka, and reading a topic back.

The ``produce`` command's loop (:class:`LineProducer`), the routing rule of a
line (:func:`route`) and its key (:func:`event_key`), on kafka-python.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from kafka import KafkaConsumer
from kafka.errors import KafkaError

from streamlearn.features.schema import RecordKind, line_kind
from streamlearn.stream.config import KafkaConfig
from streamlearn.stream.kafka_io import KafkaSink
from streamlearn.stream.time_order import event_time_headers
from streamlearn.stream.topics import ensure_topics, topic_plan

__all__ = ["LineProducer", "committed_records", "event_key", "produce_lines", "route"]


def committed_records(bootstrap: str, topic: str, idle_ms: int = 3000) -> Iterator[Any]:
    """Every committed record of ``topic`` from the beginning, until ``idle_ms`` bring no more.

    Outside any consumer group, for reading outputs back (demo, tests, benchmarks).
    """
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        consumer_timeout_ms=idle_ms,
    )
    try:
        yield from consumer
    finally:
        consumer.close()


def route(line: bytes) -> RecordKind:
    """``labels`` for a label record, ``events`` for anything else (bad records included).

    The rule is :func:`features.schema.line_kind`'s.

    >>> route(b'{"event_id": "e", "timestamp": 1, "label": true}'), route(b"{oops")
    ('labels', 'events')
    """
    return line_kind(line)


def event_key(line: bytes) -> bytes | None:
    """The record key: the event id, so that a label and its event share a partition.

    >>> event_key(b'{"event_id": "e7"}'), event_key(b"[]")
    (b'e7', None)
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and "event_id" in obj:
        return str(obj["event_id"]).encode()
    return None


class LineProducer:
    """Sends JSON lines of events and labels to Kafka: the ``produce`` command's loop.

    Each line goes to the events or the labels topic by :func:`route`'s rule (a label
    record has ``label`` and no ``user_id``), keyed by :func:`event_key`, so that a
    label and its event share a partition; the topics are created first when
    ``config.topics.create``. Each record carries its event time in the
    :data:`~stream.time_order.EVENT_TIME_HEADER` header (:func:`event_time_headers`; a
    line without one takes the time of the line before it, as
    :func:`stream.replay.timed_lines` says), so that a worker catching up reads both
    topics in event-time order. A line the producer refuses at once (over its
    ``max_request_size``) stops the send:
    :attr:`stopped` holds its index among the lines, its size and the error.
    Whatever was sent before it is flushed, and :meth:`send` raises
    :class:`~stream.edge.UndeliveredError` if the broker refused or never acknowledged some of it.

    Parameters
    ----------
    config
        The Kafka settings (topics, servers, security, ``linger_ms``, ...).

    Attributes
    ----------
    counts
        Lines handed to the producer per kind (``events``, ``labels``); they stay
        readable when :meth:`send` raises.
    stopped
        ``(index, size, error)`` of the line that stopped the send, or None.

    Examples
    --------
    >>> from streamlearn.stream.config import KafkaConfig
    >>> producer = LineProducer(KafkaConfig())
    >>> producer.topics, producer.sent
    ({'events': 'events', 'labels': 'labels'}, 0)
    """

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self.topics = {"events": config.topics.events, "labels": config.topics.labels}
        self.counts = {"events": 0, "labels": 0}
        self.stopped: tuple[int, int, KafkaError] | None = None

    @property
    def sent(self) -> int:
        """Lines handed to the producer so far, of both kinds."""
        return self.counts["events"] + self.counts["labels"]

    def send(self, lines: Iterable[bytes], on_sent: Callable[[], object] | None = None) -> None:
        """Send ``lines`` in order and wait for the broker's acknowledgement of each.

        ``on_sent`` is called after each line handed to the producer (a progress bar).
        """
        from streamlearn.stream.replay import timed_lines  # stream.replay imports this module

        timed = timed_lines(lines)  # event times (inherited where missing) and kinds
        if self.config.topics.create:
            ensure_topics(self.config, topic_plan(self.config))
        sink = KafkaSink(self.config)
        try:
            for index, line in enumerate(timed):
                kind, value = line.kind, line.value
                headers = event_time_headers(line.time_ms)
                try:
                    sink.send(self.topics[kind], event_key(value), value, headers)
                except KafkaError as error:
                    self.stopped = (index, len(value), error)
                    break
                self.counts[kind] += 1
                if on_sent is not None:
                    on_sent()
            sink.flush()
        finally:
            sink.close()


def produce_lines(config: KafkaConfig, lines: Iterable[bytes]) -> dict[str, int]:
    """Send every line with a :class:`LineProducer`; returns the counts per kind.

    Raises the producer's error for a line it refused (nothing after it is sent),
    and :class:`~stream.edge.UndeliveredError` for records the broker did not acknowledge.
    """
    producer = LineProducer(config)
    producer.send(lines)
    if producer.stopped is not None:
        raise producer.stopped[2]
    return producer.counts
