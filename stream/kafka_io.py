"""Kafka at the edges: topics, the consumer source and the output sink.

Examples
--------
>>> from stream.config import KafkaConfig
>>> sorted(topic_plan(KafkaConfig()).items())
[('dead-letter', 4), ('events', 4), ('labels', 4), ('predictions', 4)]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from stream.config import KafkaConfig
from stream.processor import Record

__all__ = [
    "KafkaSink",
    "KafkaSource",
    "committed_records",
    "ensure_topics",
    "event_key",
    "route",
    "topic_plan",
]

log = logging.getLogger(__name__)
REJOIN_AFTER_S = 5.0


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


def topic_plan(config: KafkaConfig) -> dict[str, int]:
    """Every topic streamlearn uses, with the partitions it is created with."""
    t = config.topics
    return {name: t.partitions for name in (t.events, t.labels, t.predictions, t.dead_letter)}


def ensure_topics(config: KafkaConfig, topics: Mapping[str, int]) -> list[str]:
    """Create the topics that are missing; returns the names created."""
    admin = KafkaAdminClient(client_id=config.client_id + "-admin", **config.client_options())
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name, partitions, 1)
            for name, partitions in topics.items()
            if name not in existing
        ]
        created = []
        for topic in missing:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def route(line: bytes) -> str:
    """``labels`` for a label record, ``events`` for anything else (bad records included).

    >>> route(b'{"event_id": "e", "timestamp": 1, "label": true}'), route(b"{oops")
    ('labels', 'events')
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "events"
    if isinstance(obj, dict) and "label" in obj and "user_id" not in obj:
        return "labels"
    return "events"


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


class KafkaSource:
    """Polls batches of records from the events and labels topics of one consumer group.

    Offsets are committed only when the caller says so (:meth:`commit` or a
    transaction), never automatically.
    """

    def __init__(
        self, config: KafkaConfig, read_committed: bool = True, instance_id: str | None = None
    ) -> None:
        self.config = config
        self.kinds = {config.topics.events: "events", config.topics.labels: "labels"}
        self._unassigned_since: float | None = None
        #: Times the consumer joined the group again for lack of partitions.
        self.rejoins = 0
        self.consumer = KafkaConsumer(
            *self.kinds,
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
            **config.client_options(),
        )

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
            self.consumer.subscribe(topics=list(self.kinds))
            self._unassigned_since = now
            self.rejoins += 1

    def next_batch(self, timeout_ms: int | None = None) -> list[Record]:
        """The next records, in (record time, topic, partition, offset) order; may be empty.

        ``timeout_ms`` overrides the configured poll timeout (0: only what is there).
        """
        self.rejoin_when_unassigned()
        if timeout_ms is None:
            timeout_ms = self.config.poll_timeout_ms
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.config.max_poll_records)
        records = [
            Record(
                self.kinds[tp.topic],
                r.value or b"",
                tp.topic,
                tp.partition,
                r.offset,
                r.timestamp,
                r.key,
            )  # type: ignore[arg-type]
            for tp, batch in polled.items()
            for r in batch
        ]
        records.sort(key=lambda r: (r.timestamp_ms or 0, r.topic, r.partition, r.offset))
        return records

    def position(self, records: Iterable[Record]) -> dict[TopicPartition, OffsetAndMetadata]:
        """The offsets to commit once ``records`` are done (next offset per partition)."""
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, -1), r.offset + 1)
        return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}

    def committed(self, partitions: list[str]) -> dict[str, int | None]:
        """The group's committed offsets of ``topic:partition`` names."""
        out: dict[str, int | None] = {}
        for name in partitions:
            topic, partition = name.rsplit(":", 1)
            out[name] = self.consumer.committed(TopicPartition(topic, int(partition)))
        return out

    def event_partitions(self) -> set[tuple[str, int]]:
        """The partitions of the events topic assigned to this consumer."""
        events = self.config.topics.events
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment() if tp.topic == events}

    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        if offsets:
            self.consumer.commit(dict(offsets))

    def lag(self) -> dict[TopicPartition, int]:
        """Records between the consumer's position and the end, per assigned partition."""
        assigned = self.consumer.assignment()
        if not assigned:
            return {}
        ends = self.consumer.end_offsets(list(assigned))
        lags = {}
        for tp in assigned:
            try:
                lags[tp] = max(0, ends[tp] - self.consumer.position(tp))
            except (KafkaError, AssertionError) as exc:  # a partition being revoked
                log.debug("no position for %s: %s", tp, exc)
        return lags

    def caught_up(self) -> bool:
        """True when every assigned partition has been read to its end (or none is assigned)."""
        assigned = self.consumer.assignment()
        lags = self.lag()
        return len(lags) == len(assigned) and not any(lags.values())

    def close(self) -> None:
        self.consumer.close()


class KafkaSink:
    """Publishes predictions and dead letters, optionally in transactions."""

    def __init__(self, config: KafkaConfig, transactional_id: str | None = None) -> None:
        self.config = config
        options: dict[str, Any] = {
            "client_id": config.client_id,
            "linger_ms": config.linger_ms,
            "batch_size": config.batch_size,
            "max_block_ms": config.max_block_ms,
            "acks": "all",
            **config.client_options(),
        }
        if transactional_id:
            options["transactional_id"] = transactional_id
            options["enable_idempotence"] = True
        self.producer = KafkaProducer(**options)
        self.transactional = transactional_id is not None
        self.in_transaction = False
        if self.transactional:
            self.producer.init_transactions()

    def begin(self) -> None:
        """Open a transaction unless one is open (a transaction may span many batches)."""
        if self.transactional and not self.in_transaction:
            self.producer.begin_transaction()
            self.in_transaction = True

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.producer.send(topic, key=key, value=value, headers=headers)

    def commit(
        self,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        group_id: str,
        source: KafkaSource,
    ) -> None:
        """Make the batch's outputs visible and its input offsets committed."""
        if self.transactional:
            self.begin()
            transactions = self._transactions()
            if offsets:
                self._await(
                    transactions.send_offsets_to_transaction(dict(offsets), group_id),
                    "adding the offsets to the transaction",
                )
            self._await(transactions.begin_commit(), "committing the transaction")
            self.in_transaction = False
        else:
            self.producer.flush(timeout=self.config.max_block_ms / 1000)
            source.commit(offsets)

    def abort(self) -> None:
        if self.transactional and self.in_transaction:
            self.in_transaction = False
            self._await(self._transactions().begin_abort(), "aborting the transaction")

    def close(self) -> None:
        try:
            self.producer.close(timeout=self.config.max_block_ms / 1000)
        except KafkaTimeoutError:
            log.warning("closed the producer with records unsent (a resumed worker redoes them)")

    def _transactions(self) -> Any:
        # kafka-python's send_offsets_to_transaction, commit_transaction and
        # abort_transaction wait without a bound, and a request lost while the
        # broker restarts never completes; its transaction manager hands back
        # the same results that those calls wait on, so they are waited on here
        # for at most max_block_ms (as kafka-python itself does in init_transactions).
        return self.producer._transaction_manager

    def _await(self, result: Any, step: str) -> None:
        self.producer._sender.wakeup()
        if not result.wait(timeout_ms=self.config.max_block_ms):
            raise KafkaTimeoutError(f"{step} took longer than {self.config.max_block_ms} ms")
