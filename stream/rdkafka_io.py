"""The worker's Kafka edge on librdkafka (``confluent-kafka``): ``kafka.client: librdkafka``.

The same source and sink as :mod:`stream.kafka_io`, for the worker's hot path.
librdkafka fetches, batches and acknowledges in its own C threads, without
the GIL: a record costs the worker's thread a few microseconds where
kafka-python decodes and builds record batches in Python (``python -m bench``
runs the worker with both clients).

:class:`RdKafkaSource` and :class:`RdKafkaSink` implement
:class:`stream.edge.Source` and :class:`stream.edge.Sink`; neither kafka-python
nor its adapter is imported here. Offsets are committed only when the caller
says so, never automatically, and every failure is raised as an
:class:`stream.edge.EdgeError` (a :class:`~stream.rdkafka_base.LibrdkafkaError`), so the worker
recovers from it as from any other.

The sink is in :mod:`stream.rdkafka_sink`, and what both clients share (options,
errors, offsets) in :mod:`stream.rdkafka_base`; this module exports them all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import TopicPartition as RdTopicPartition

from streamlearn.features.schema import RecordKind
from streamlearn.stream.config import KafkaConfig
from streamlearn.stream.edge import Offsets, Record, Sink, Source, TopicPartition, next_offsets
from streamlearn.stream.rdkafka_base import (
    LibrdkafkaError,
    librdkafka_options,
    log_client_error,
    raised_as_edge_errors,
    rd_offsets,
)
from streamlearn.stream.rdkafka_sink import RdKafkaSink
from streamlearn.stream.time_order import OrderKey, Partition, TimeOrder, order_time

__all__ = ["LibrdkafkaError", "RdKafkaSink", "RdKafkaSource", "librdkafka_options"]

log = logging.getLogger(__name__)


class RdKafkaSource:
    """Polls batches of records from the events and labels topics of one consumer group.

    A :class:`stream.edge.Source`, with the same
    event-time order across every partition of both topics
    (:class:`stream.time_order.TimeOrder`): librdkafka hands out a fetched
    partition's backlog before the next one's, so a partition ahead of the
    others is paused until they catch up.
    """

    def __init__(
        self,
        config: KafkaConfig,
        read_committed: bool = True,
        instance_id: str | None = None,
        bootstrap_timeout_ms: int | None = None,  # librdkafka connects in its own threads
    ) -> None:
        self.config = config
        self.kinds: dict[str, RecordKind] = {
            config.topics.events: "events",
            config.topics.labels: "labels",
        }
        #: Times the consumer joined the group again for lack of partitions (librdkafka
        #: follows new topic metadata by itself: always 0).
        self.rejoins = 0
        #: Rebalances so far that took partitions from this consumer (revoked or lost).
        self.revocations = 0
        #: Where the consumer starts in partitions that gave no record yet, until a rebalance.
        self._start_offsets: dict[tuple[str, int], int] = {}
        #: The assignment as the rebalance callbacks left it, the one view of it every
        #: method uses: asking librdkafka waits for its main thread (~0.3 ms a call).
        self._assigned: set[tuple[str, int]] = set()
        self._order = TimeOrder()
        #: The partitions paused because they hold records ahead of the others.
        self._paused: set[Partition] = set()
        options: dict[str, Any] = {
            **librdkafka_options(config),
            "group.id": config.group_id,
            "client.id": config.client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": config.auto_offset_reset,
            "fetch.wait.max.ms": config.fetch_max_wait_ms,
            "fetch.min.bytes": config.fetch_min_bytes,
            "session.timeout.ms": config.session_timeout_ms,
            "heartbeat.interval.ms": max(500, config.session_timeout_ms // 4),
            "topic.metadata.refresh.interval.ms": config.metadata_max_age_ms,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            "error_cb": log_client_error,
        }
        if instance_id and config.static_membership:
            options["group.instance.id"] = instance_id
        with raised_as_edge_errors():
            self.consumer = Consumer(options)
            self.consumer.subscribe(
                list(self.kinds),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )

    def _on_assign(self, _consumer: Consumer, partitions: list[RdTopicPartition]) -> None:
        self._start_offsets.clear()
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}

    def _on_revoke(self, _consumer: Consumer, partitions: list[RdTopicPartition]) -> None:
        """Revoked or lost: the whole assignment (eager protocol) or a part (cooperative)."""
        self._start_offsets.clear()
        if partitions:
            self.revocations += 1
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned -= revoked
        self._order.forget(revoked)
        self._resume_revoked(revoked)

    def _resume_revoked(self, revoked: set[Partition]) -> None:
        """Resume the revoked partitions paused for the order: paused they would stay
        silent if assigned again."""
        paused, self._paused = revoked & self._paused, self._paused - revoked
        if paused:
            try:
                self.consumer.resume([RdTopicPartition(*p) for p in paused])
            except KafkaException as exc:  # lost already
                log.debug("could not resume %s: %s", sorted(paused), exc)

    def rejoin_when_unassigned(self) -> None:
        """Nothing to do: librdkafka rejoins when the topics' metadata changes."""

    def next_batch(self, timeout_ms: int | None = None) -> list[Record]:
        """The next records, in event-time order across partitions; may be empty.

        Returns as soon as one record is there (``consume`` alone would wait
        for a full batch or the whole timeout).
        """
        if timeout_ms is None:
            timeout_ms = self.config.poll_timeout_ms
        limit = self.config.max_poll_records
        with raised_as_edge_errors():
            messages = self.consumer.consume(limit, 0)
            if not messages and timeout_ms > 0:
                first = self.consumer.poll(timeout_ms / 1000)
                if first is not None:
                    messages = [first, *self.consumer.consume(limit - 1, 0)]
        kinds = self.kinds
        polled: dict[Partition, list[tuple[OrderKey, Record]]] = {}
        for m in messages:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise LibrdkafkaError(error)
                log.warning("consumer: %s", error)
                continue
            topic, partition, offset = cast(str, m.topic()), m.partition(), m.offset()
            assert partition is not None and offset is not None  # a message, not an error
            kind = kinds[topic]
            timestamp = m.timestamp()[1]
            headers = cast("list[tuple[str, bytes | None]] | None", m.headers())
            key = (order_time(headers, timestamp), kind == "events", topic, partition, offset)
            record = Record(kind, m.value() or b"", topic, partition, offset, timestamp, m.key())
            items = polled.get((topic, partition))
            if items is None:
                polled[(topic, partition)] = [(key, record)]
            else:
                items.append((key, record))
        order = self._order
        for tp, items in polled.items():
            order.add(tp, items)
        records = order.release(self._behind)
        self._pause_ahead()
        return records

    def _behind(self) -> set[Partition]:
        """The assigned partitions with records left to read, as of the last fetch.

        The positions and the high watermarks librdkafka holds (no request, but
        for where a partition starts, asked once per assignment).
        """
        with raised_as_edge_errors():
            positions = self._fetch_positions()
            behind = set()
            for tp in self._assignment():
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                name = (tp.topic, tp.partition)
                if high < 0 or positions.get(name, -1) < high:
                    behind.add(name)
        return behind

    def _pause_ahead(self) -> None:
        """Pause the partitions holding records ahead of the others; resume the rest."""
        ahead = self._order.ahead()
        if ahead == self._paused:
            return
        pause, resume = ahead - self._paused, self._paused - ahead
        with raised_as_edge_errors():
            if pause:
                self.consumer.pause([RdTopicPartition(*p) for p in pause])
            if resume:
                self.consumer.resume([RdTopicPartition(*p) for p in resume])
        self._paused = ahead

    def position(self, records: Iterable[Record]) -> Offsets:
        """The offsets to commit once ``records`` are done (next offset per partition)."""
        return next_offsets(records)

    def committed(self, partitions: list[str]) -> dict[str, int | None]:
        """The group's committed offsets of ``topic:partition`` names."""
        wanted = []
        for name in partitions:
            topic, partition = name.rsplit(":", 1)
            wanted.append(RdTopicPartition(topic, int(partition)))
        with raised_as_edge_errors():
            found = self.consumer.committed(wanted, timeout=self.config.max_block_ms / 1000)
        return {f"{tp.topic}:{tp.partition}": tp.offset if tp.offset >= 0 else None for tp in found}

    def assigned(self) -> set[tuple[str, int]]:
        """Every (topic, partition) assigned to this consumer."""
        return set(self._assigned)

    def _assignment(self) -> list[RdTopicPartition]:
        """The assigned partitions as librdkafka's calls take them."""
        return [RdTopicPartition(topic, partition) for topic, partition in sorted(self._assigned)]

    def event_partitions(self) -> set[tuple[str, int]]:
        """The partitions of the events topic assigned to this consumer."""
        events = self.config.topics.events
        return {tp for tp in self.assigned() if tp[0] == events}

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` for the group, outside any transaction."""
        if offsets:
            with raised_as_edge_errors():
                self.consumer.commit(offsets=rd_offsets(offsets), asynchronous=False)

    def group_metadata(self) -> object:
        """The consumer's group membership, for a transactional offset commit."""
        return self.consumer.consumer_group_metadata()

    def rewind(self) -> dict[tuple[str, int], int]:
        """Read every assigned partition again from the group's committed offset.

        A partition without one starts where ``auto_offset_reset`` says, as a
        newly assigned partition would. A partition librdkafka is not fetching
        yet starts there anyway and cannot be sought. Returns the offset (or
        logical offset) each now starts at.
        """
        reset = OFFSET_BEGINNING if self.config.auto_offset_reset == "earliest" else OFFSET_END
        starts: dict[tuple[str, int], int] = {}
        self._order.clear()
        if self._paused:
            with raised_as_edge_errors():
                self.consumer.resume([RdTopicPartition(*p) for p in self._paused])
            self._paused.clear()
        if not self._assigned:
            return starts
        with raised_as_edge_errors():
            found = self.consumer.committed(self._assignment(), self.config.max_block_ms / 1000)
            for tp in found:
                start = tp.offset if tp.offset >= 0 else reset
                try:
                    self.consumer.seek(RdTopicPartition(tp.topic, tp.partition, start))
                except KafkaException as exc:
                    if exc.args[0].code() != RdKafkaError._STATE:
                        raise
                    log.debug("%s:%d is not fetching yet: %s", tp.topic, tp.partition, exc)
                starts[(tp.topic, tp.partition)] = start
        return starts

    def end_offsets(self, cached: bool = False) -> dict[tuple[str, int], int]:
        """The end (high watermark) of every assigned partition.

        ``cached``: as of the last fetch response, without asking the broker.
        """
        ends = {}
        timeout = self.config.max_block_ms / 1000
        with raised_as_edge_errors():
            for tp in self._assignment():
                _low, high = self.consumer.get_watermark_offsets(tp, timeout, cached)
                if high >= 0:
                    ends[(tp.topic, tp.partition)] = high
        return ends

    def positions(self) -> dict[tuple[str, int], int]:
        """The next offset to hand out of every assigned partition (records held wait in it)."""
        return {**self._fetch_positions(), **self._order.first_offsets()}

    def _fetch_positions(self) -> dict[tuple[str, int], int]:
        """The next offset to read of every assigned partition.

        librdkafka knows a position only once a partition gave a record, and it
        hands out one partition's backlog before the next one's. Until then the
        position is where the consumer starts: the committed offset, or else the
        end that ``auto_offset_reset`` names. Those take a broker round trip per
        partition, so they are asked once per assignment.
        """
        with raised_as_edge_errors():
            found = self.consumer.position(self._assignment())
            unknown = [tp for tp in found if tp.offset < 0]
            starts = self._starts(unknown)
        out = {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}
        return {**starts, **out}

    def _starts(self, unknown: list[RdTopicPartition]) -> dict[tuple[str, int], int]:
        """Where the consumer starts in the ``unknown`` partitions; kept until a rebalance."""
        missing = [tp for tp in unknown if (tp.topic, tp.partition) not in self._start_offsets]
        if missing:
            timeout = self.config.max_block_ms / 1000
            for tp in self.consumer.committed(missing, timeout=timeout):
                start = tp.offset
                if start < 0:
                    low, high = self.consumer.get_watermark_offsets(tp, timeout)
                    start = low if self.config.auto_offset_reset == "earliest" else high
                self._start_offsets[(tp.topic, tp.partition)] = start
        return {
            (tp.topic, tp.partition): self._start_offsets[(tp.topic, tp.partition)]
            for tp in unknown
        }

    def lag(self, cached: bool = True) -> dict[TopicPartition, int]:
        """Records between the consumer's position and the end, per assigned partition."""
        ends = self.end_offsets(cached)
        positions = self.positions()
        return {
            TopicPartition(*tp): max(0, end - positions[tp])
            for tp, end in ends.items()
            if tp in positions
        }

    def caught_up(self) -> bool:
        """True when every assigned partition has been read to its end (or none is assigned)."""
        assigned = self.assigned()
        lags = self.lag(cached=False)
        return len(lags) == len(assigned) and not any(lags.values()) and not self._order.held

    def pause_assigned(self) -> None:
        with raised_as_edge_errors():
            self.consumer.pause(self._assignment())

    def resume_assigned(self) -> None:
        with raised_as_edge_errors():
            self.consumer.resume(self._assignment())
        self._paused.clear()

    def poll_held(self, timeout_ms: int = 100) -> None:
        """Poll with the partitions paused; rewind what a partition assigned meanwhile gave."""
        with raised_as_edge_errors():
            first: dict[tuple[str, int], int] = {}
            for m in self.consumer.consume(self.config.max_poll_records, timeout_ms / 1000):
                topic, partition, offset = m.topic(), m.partition(), m.offset()
                if m.error() is None and topic and partition is not None and offset is not None:
                    first.setdefault((topic, partition), offset)
            for (topic, partition), offset in first.items():
                self.consumer.seek(RdTopicPartition(topic, partition, offset))
            self.pause_assigned()

    def close(self, timeout_s: float | None = None) -> None:
        with raised_as_edge_errors():
            self.consumer.close()


#: Checked by mypy: the classes implement the edge's protocols.
_SOURCE: type[Source] = RdKafkaSource
_SINK: type[Sink] = RdKafkaSink
