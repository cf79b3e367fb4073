"""The worker's edge on kafka-python (``kafka.client: kafka-python``, the default).

:class:`KafkaSource` (here) and :class:`~stream.kafka_sink.KafkaSink` implement
:class:`stream.edge.Source` and :class:`stream.edge.Sink`. Every failure of
kafka-python leaves them as an :class:`stream.edge.EdgeError`
(:mod:`stream.kafka_errors`), and what they need from kafka-python's private
attributes is in :mod:`stream.kafka_shim`. The librdkafka adapter is
:mod:`stream.rdkafka_io`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka import TopicPartition as KafkaPartition
from kafka.errors import KafkaError

from streamlearn.features.schema import RecordKind
from streamlearn.stream import kafka_shim
from streamlearn.stream.config import KafkaConfig
from streamlearn.stream.edge import Offsets, Record, Sink, Source, TopicPartition, next_offsets
from streamlearn.stream.kafka_errors import raising_edge_errors
from streamlearn.stream.kafka_sink import KafkaSink, kafka_offsets
from streamlearn.stream.time_order import Partition, TimeOrder, order_time
from streamlearn.stream.topics import bootstrap_option

__all__ = ["KafkaSink", "KafkaSource"]

log = logging.getLogger(__name__)
REJOIN_AFTER_S = 5.0


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    """Counts the rebalances that took partitions away (revoked, or lost to an expired session)."""

    def __init__(
        self,
        on_revoked: Callable[[Any], None] | None = None,
        on_assigned: Callable[[Any], None] | None = None,
    ) -> None:
        self.count = 0
        self.on_revoked = on_revoked
        self.on_assigned = on_assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            self.count += 1
            if self.on_revoked is not None:
                self.on_revoked(revoked)

    def on_partitions_lost(self, lost: Any) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: Any) -> None:
        if self.on_assigned is not None:
            self.on_assigned(assigned)


@raising_edge_errors
class KafkaSource:
    """Polls batches of records from the events and labels topics of one consumer group.

    Records come in event-time order across every partition of both topics
    (:class:`~stream.time_order.TimeOrder`): a partition ahead of the others is paused until they
    catch up, so a backlog is read as the live stream was. Offsets are
    committed only when the caller says so (:meth:`commit` or a
    transaction), never automatically. :attr:`revocations` counts the
    rebalances that took partitions from this consumer: work done since the
    last commit may then be done again by the partitions' next owner.
    ``bootstrap_timeout_ms`` bounds the wait for a first broker at construction.
    """

    def __init__(
        self,
        config: KafkaConfig,
        read_committed: bool = True,
        instance_id: str | None = None,
        bootstrap_timeout_ms: int | None = None,
    ) -> None:
        self.config = config
        self.kinds: dict[str, RecordKind] = {
            config.topics.events: "events",
            config.topics.labels: "labels",
        }
        self._unassigned_since: float | None = None
        #: Times the consumer joined the group again for lack of partitions.
        self.rejoins = 0
        self._order = TimeOrder()
        #: The partitions paused because they hold records ahead of the others.
        self._paused: set[Partition] = set()
        #: Where the records dropped at the last revocation started, per partition.
        self._dropped: dict[Partition, int] = {}
        self._revocations = _Revocations(self._forget, self._reassigned)
        self.consumer = KafkaConsumer(
            group_id=config.group_id,
            client_id=config.client_id,
            enable_auto_commit=False,
            auto_offset_reset=config.auto_offset_reset,
            max_poll_records=config.max_poll_records,
            fetch_max_wait_ms=config.fetch_max_wait_ms,
            fetch_min_bytes=config.fetch_min_bytes,
            session_timeout_ms=config.session_timeout_ms,
            metadata_max_age_ms=config.metadata_max_age_ms,
            heartbeat_interval_ms=max(500, config.session_timeout_ms // 4),
            isolation_level="read_committed" if read_committed else "read_uncommitted",
            group_instance_id=instance_id if config.static_membership else None,
            **bootstrap_option(bootstrap_timeout_ms),
            **config.client_options(),
        )
        self.consumer.subscribe(topics=list(self.kinds), listener=self._revocations)

    @property
    def revocations(self) -> int:
        """Rebalances so far that took partitions from this consumer."""
        return self._revocations.count

    def _forget(self, revoked: Any) -> None:
        """Drop what the revoked partitions held, and resume those paused for the order."""
        partitions = {(tp.topic, tp.partition) for tp in revoked}
        self._dropped = self._order.forget(partitions)
        paused, self._paused = partitions & self._paused, self._paused - partitions
        if paused:
            try:
                self.consumer.resume(*(KafkaPartition(*p) for p in paused))
            except (KafkaError, KeyError) as exc:  # lost already
                log.debug("could not resume %s: %s", sorted(paused), exc)

    def _reassigned(self, assigned: Any) -> None:
        """Read the records dropped at the revocation again from partitions assigned back.

        kafka-python keeps the position of a partition that a rebalance revokes
        and assigns again to the same consumer (as the eager protocol does with
        every partition it keeps): the records held for the order when it was
        revoked are past that position and would be skipped.
        """
        dropped, self._dropped = self._dropped, {}
        for tp in assigned:
            offset = dropped.get((tp.topic, tp.partition))
            if offset is not None:
                self.consumer.seek(tp, offset)

    def rejoin_when_unassigned(self) -> None:
        """Join the group again when it formed without partitions (topic metadata not yet in).

        kafka-python otherwise keeps the empty assignment until its next metadata
        refresh; we do not wait for it.
        """
        if self.consumer.assignment():
            self._unassigned_since = None
            return
        now = time.monotonic()
        if self._unassigned_since is None:
            self._unassigned_since = now
        elif now - self._unassigned_since > REJOIN_AFTER_S:
            log.warning("no partitions after %.0f s: joining the group again", REJOIN_AFTER_S)
            self.consumer.unsubscribe()
            self.consumer.subscribe(topics=list(self.kinds), listener=self._revocations)
            self._unassigned_since = now
            self.rejoins += 1

    def next_batch(self, timeout_ms: int | None = None) -> list[Record]:
        """The next records, in event-time order across partitions (:class:`TimeOrder`).

        ``timeout_ms`` overrides the configured poll timeout (0: only what is there).
        """
        self.rejoin_when_unassigned()
        if timeout_ms is None:
            timeout_ms = self.config.poll_timeout_ms
        kafka_shim.unpark(self.consumer)
        kafka_shim.keep_joining(self.consumer)
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.config.max_poll_records)
        order = self._order
        for tp, batch in polled.items():
            topic, partition = tp.topic, tp.partition
            kind = self.kinds[topic]
            is_event = kind == "events"
            order.add(
                (topic, partition),
                [
                    (
                        (order_time(r.headers, r.timestamp), is_event, topic, partition, r.offset),
                        Record(
                            kind, r.value or b"", topic, partition, r.offset, r.timestamp, r.key
                        ),
                    )
                    for r in batch
                ],
            )
        records = order.release(self._behind)
        self._pause_ahead()
        return records

    def _behind(self) -> set[Partition]:
        """The assigned partitions with records left to read, as of the last fetch (no request).

        Read from kafka-python's subscription state (:func:`stream.kafka_shim.fetch_states`).
        """
        behind = set()
        for topic, partition, high, position in kafka_shim.fetch_states(self.consumer):
            if high is None or position is None or position < high:
                behind.add((topic, partition))
        return behind

    def _pause_ahead(self) -> None:
        """Pause the partitions holding records ahead of the others; resume the rest."""
        ahead = self._order.ahead()
        if ahead == self._paused:
            return
        pause, resume = ahead - self._paused, self._paused - ahead
        if pause:
            self.consumer.pause(*(KafkaPartition(*p) for p in pause))
        if resume:
            self.consumer.resume(*(KafkaPartition(*p) for p in resume))
        self._paused = ahead

    def position(self, records: Iterable[Record]) -> Offsets:
        """The offsets to commit once ``records`` are done (next offset per partition)."""
        return next_offsets(records)

    def committed(self, partitions: list[str]) -> dict[str, int | None]:
        """The group's committed offsets of ``topic:partition`` names."""
        out: dict[str, int | None] = {}
        for name in partitions:
            topic, partition = name.rsplit(":", 1)
            out[name] = self.consumer.committed(KafkaPartition(topic, int(partition)))
        return out

    def assigned(self) -> set[tuple[str, int]]:
        """Every (topic, partition) assigned to this consumer."""
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def event_partitions(self) -> set[tuple[str, int]]:
        """The partitions of the events topic assigned to this consumer."""
        events = self.config.topics.events
        return {tp for tp in self.assigned() if tp[0] == events}

    def end_offsets(self) -> dict[tuple[str, int], int]:
        """The end (high watermark) of every assigned partition."""
        ends = self.consumer.end_offsets(list(self.consumer.assignment()))
        return {(tp.topic, tp.partition): end for tp, end in ends.items()}

    def positions(self) -> dict[tuple[str, int], int]:
        """The next offset to hand out of every assigned partition (records held wait in it)."""
        consumer = self.consumer
        fetched = {(tp.topic, tp.partition): consumer.position(tp) for tp in consumer.assignment()}
        return {**fetched, **self._order.first_offsets()}

    def pause_assigned(self) -> None:
        assigned = self.consumer.assignment()
        if assigned:
            self.consumer.pause(*assigned)

    def resume_assigned(self) -> None:
        self.consumer.resume(*self.consumer.paused())
        self._paused.clear()

    def poll_held(self, timeout_ms: int = 100) -> None:
        """Poll with the partitions paused; rewind what a partition assigned meanwhile gave."""
        kafka_shim.keep_joining(self.consumer)
        for tp, batch in self.consumer.poll(timeout_ms=timeout_ms).items():
            if batch:
                self.consumer.seek(tp, batch[0].offset)
        self.pause_assigned()

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` for the group, outside any transaction."""
        if offsets:
            self.consumer.commit(kafka_offsets(offsets))

    def group_metadata(self) -> object:
        """The consumer's group membership (generation included), for a transaction."""
        return self.consumer.group_metadata()

    def rewind(self) -> dict[tuple[str, int], int]:
        """Read every assigned partition again from the group's committed offset.

        A partition without one starts where ``auto_offset_reset`` says, as a
        newly assigned partition would. Returns the offset each now starts at.
        What a revocation dropped is forgotten too: the committed offsets come
        before it, and seeking to it when the rebalance's assignment arrives (the
        rewind may come first) would skip the records between them.
        """
        self._order.clear()
        self._dropped = {}
        if self._paused:
            self.consumer.resume(*(KafkaPartition(*p) for p in self._paused))
            self._paused.clear()
        starts = {}
        for tp in self.consumer.assignment():
            committed = self.consumer.committed(tp)
            if committed is not None:
                self.consumer.seek(tp, committed)
            elif self.config.auto_offset_reset == "earliest":
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek_to_end(tp)
            starts[(tp.topic, tp.partition)] = self.consumer.position(tp)
        return starts

    def lag(self) -> dict[TopicPartition, int]:
        """Records between the consumer's position and the end, per assigned partition."""
        assigned = self.consumer.assignment()
        if not assigned:
            return {}
        ends = self.consumer.end_offsets(list(assigned))
        lags: dict[TopicPartition, int] = {}
        for tp in assigned:
            try:
                lags[TopicPartition(tp.topic, tp.partition)] = max(
                    0, ends[tp] - self.consumer.position(tp)
                )
            except (KafkaError, AssertionError) as exc:  # a partition being revoked
                log.debug("no position for %s: %s", tp, exc)
        return lags

    def caught_up(self) -> bool:
        """True when every assigned partition has been read to its end (or none is assigned)."""
        assigned = self.consumer.assignment()
        lags = self.lag()
        return len(lags) == len(assigned) and not any(lags.values()) and not self._order.held

    def close(self, timeout_s: float | None = None) -> None:
        """Leave the group and close; ``timeout_s`` bounds the wait for the coordinator."""
        self.consumer.close(timeout_ms=None if timeout_s is None else max(1, int(timeout_s * 1000)))


#: Checked by mypy: the classes implement the edge's protocols.
_SOURCE: type[Source] = KafkaSource
_SINK: type[Sink] = KafkaSink
