"""Kafka at the edges: topics, the consumer source and the output sink on kafka-python.

Topics, routing and the producers of the CLI and replay use kafka-python; the
worker uses the source and sink of this module with ``kafka.client:
kafka-python`` (the default) and those of :mod:`stream.rdkafka_io` with
``kafka.client: librdkafka``.

Examples
--------
>>> from stream.config import KafkaConfig
>>> sorted(topic_plan(KafkaConfig()).items())
[('dead-letter', 4), ('events', 4), ('labels', 4), ('predictions', 4)]
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson
from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    UnknownError,
    for_code,
)
from kafka.structs import OffsetAndMetadata

from features.schema import RecordKind, line_kind
from stream.config import KafkaConfig
from stream.processor import Record

__all__ = [
    "Deliveries",
    "KafkaSink",
    "KafkaSource",
    "LineProducer",
    "UndeliveredError",
    "committed_records",
    "ensure_topics",
    "event_key",
    "in_record_order",
    "next_offsets",
    "produce_lines",
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
    names = (t.events, t.labels, t.predictions, t.dead_letter, t.examples)
    return {name: t.partitions for name in names if name is not None}


def ensure_topics(
    config: KafkaConfig, topics: Mapping[str, int], *, timeout_s: float = 30.0
) -> list[str]:
    """Create the missing topics (replication 1) and wait until every partition has a leader.

    The one topic creator: the worker, ``produce``, ``replay``, the demo, ``stack up
    --topic`` and the tests all call it. Existing topics are left as they are (their
    partition count is not changed), and so is one another client creates meanwhile.

    Parameters
    ----------
    config
        The Kafka settings: bootstrap servers, security options and client id.
    topics
        Partition count per topic name.
    timeout_s
        Seconds to wait for the broker, for the creation and for the leaders.

    Returns
    -------
    list of str
        The names created, in the given order.

    Raises
    ------
    KafkaError
        The broker refused a creation (the error of its code), could not be reached,
        or a partition had no leader within ``timeout_s`` (``KafkaTimeoutError``).
    """
    names = list(topics)
    if not names:
        return []
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        client_id=config.client_id + "-admin",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
        **config.client_options(),
    )
    try:
        existing = set(admin.list_topics())
        missing = {
            name: {"num_partitions": int(partitions), "replication_factor": 1}
            for name, partitions in topics.items()
            if name not in existing
        }
        created: set[str] = set()
        if missing:
            result = admin.create_topics(missing, timeout_ms=timeout_ms, raise_errors=False)
            for topic in result["topics"]:
                code = topic["error_code"]
                if not code:
                    created.add(topic["name"])
                elif for_code(code) is not TopicAlreadyExistsError:
                    error, why = for_code(code), topic.get("error_message")
                    detail = f"{error.__name__}: {why}" if why else error.__name__
                    raise error(f"creating topic {topic['name']!r} failed: {detail}")
        admin.wait_for_topics(names, timeout_ms=timeout_ms)
    finally:
        admin.close()
    return [name for name in names if name in created]


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

    Each line goes to the events or the labels topic by :func:`route` (a label record
    has ``label`` and no ``user_id``), keyed by :func:`event_key`, so that a label and
    its event share a partition; the topics are created first when
    ``config.topics.create``. A line the producer refuses at once (over its
    ``max_request_size``) stops the send: :attr:`stopped` holds its index among the
    lines, its size and the error. Whatever was sent before it is flushed, and
    :meth:`send` raises :class:`UndeliveredError` if the broker refused or never
    acknowledged some of it.

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
    >>> from stream.config import KafkaConfig
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
        if self.config.topics.create:
            ensure_topics(self.config, topic_plan(self.config))
        sink = KafkaSink(self.config)
        try:
            for index, line in enumerate(lines):
                kind = route(line)
                try:
                    sink.send(self.topics[kind], event_key(line), line)
                except KafkaError as error:
                    self.stopped = (index, len(line), error)
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
    and :class:`UndeliveredError` for records the broker did not acknowledge.
    """
    producer = LineProducer(config)
    producer.send(lines)
    if producer.stopped is not None:
        raise producer.stopped[2]
    return producer.counts


def next_offsets(records: Iterable[Record]) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets to commit once ``records`` are done: the next offset of each partition.

    >>> done = [Record("events", b"", "events", 0, 7), Record("events", b"", "events", 0, 5)]
    >>> [(tp.partition, o.offset) for tp, o in next_offsets(done).items()]
    [(0, 8)]
    """
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, -1), r.offset + 1)
    return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}


def in_record_order(records: list[Record]) -> list[Record]:
    """``records`` sorted by (record time, topic, partition, offset), in place; returned."""
    records.sort(key=lambda r: (r.timestamp_ms or 0, r.topic, r.partition, r.offset))
    return records


class _Revocations(ConsumerRebalanceListener):
    """Counts the rebalances that took partitions away (revoked, or lost to an expired session)."""

    def __init__(self) -> None:
        self.count = 0

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            self.count += 1

    def on_partitions_lost(self, lost: Any) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: Any) -> None:
        pass


class KafkaSource:
    """Polls batches of records from the events and labels topics of one consumer group.

    Offsets are committed only when the caller says so (:meth:`commit` or a
    transaction), never automatically. :attr:`revocations` counts the
    rebalances that took partitions from this consumer: work done since the
    last commit may then be done again by the partitions' next owner.
    """

    def __init__(
        self, config: KafkaConfig, read_committed: bool = True, instance_id: str | None = None
    ) -> None:
        self.config = config
        self.kinds = {config.topics.events: "events", config.topics.labels: "labels"}
        self._unassigned_since: float | None = None
        #: Times the consumer joined the group again for lack of partitions.
        self.rejoins = 0
        self._revocations = _Revocations()
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
            **config.client_options(),
        )
        self.consumer.subscribe(topics=list(self.kinds), listener=self._revocations)

    @property
    def revocations(self) -> int:
        """Rebalances so far that took partitions from this consumer."""
        return self._revocations.count

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
        return in_record_order(records)

    def position(self, records: Iterable[Record]) -> dict[TopicPartition, OffsetAndMetadata]:
        """The offsets to commit once ``records`` are done (next offset per partition)."""
        return next_offsets(records)

    def committed(self, partitions: list[str]) -> dict[str, int | None]:
        """The group's committed offsets of ``topic:partition`` names."""
        out: dict[str, int | None] = {}
        for name in partitions:
            topic, partition = name.rsplit(":", 1)
            out[name] = self.consumer.committed(TopicPartition(topic, int(partition)))
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
        """The next offset to read of every assigned partition."""
        consumer = self.consumer
        return {(tp.topic, tp.partition): consumer.position(tp) for tp in consumer.assignment()}

    def pause_assigned(self) -> None:
        assigned = self.consumer.assignment()
        if assigned:
            self.consumer.pause(*assigned)

    def resume_assigned(self) -> None:
        self.consumer.resume(*self.consumer.paused())

    def poll_held(self, timeout_ms: int = 100) -> None:
        """Poll with the partitions paused; rewind what a partition assigned meanwhile gave."""
        for tp, batch in self.consumer.poll(timeout_ms=timeout_ms).items():
            if batch:
                self.consumer.seek(tp, batch[0].offset)
        self.pause_assigned()

    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        if offsets:
            self.consumer.commit(dict(offsets))

    def rewind(self) -> dict[tuple[str, int], int]:
        """Read every assigned partition again from the group's committed offset.

        A partition without one starts where ``auto_offset_reset`` says, as a
        newly assigned partition would. Returns the offset each now starts at.
        """
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


class UndeliveredError(KafkaError):
    """Records the broker did not acknowledge: the offsets of their inputs stay uncommitted.

    >>> error = UndeliveredError(3, KafkaTimeoutError("expired"))
    >>> error.count, str(error)
    (3, 'UndeliveredError: 3 records were not delivered (first error: KafkaTimeoutError: expired)')
    """

    retriable = True

    def __init__(self, count: int, first: BaseException | None) -> None:
        if first is None:
            detail = "unknown"
        elif isinstance(first, KafkaError):  # its str() starts with its class name
            detail = str(first)
        else:
            detail = f"{type(first).__name__}: {first}"
        super().__init__(f"{count} records were not delivered (first error: {detail})")
        self.count = count


class Deliveries:
    """The sends since the last check, until the broker acknowledges or refuses each.

    The producer settles sends in its own thread; :meth:`check` waits for all
    of them and raises :class:`UndeliveredError` for those that failed. It
    does not rely on ``flush()`` alone: kafka-python's flush waits for the
    batches it finds when it starts, and a batch the broker finds too large is
    split into new ones that it does not wait for.

    >>> from kafka.future import Future
    >>> deliveries = Deliveries()
    >>> first, second = Future(), Future()
    >>> deliveries.track(first); deliveries.track(second)
    >>> _ = first.success("metadata"); _ = second.failure(KafkaTimeoutError("expired"))
    >>> try:
    ...     deliveries.check(timeout_s=1.0)
    ... except UndeliveredError as error:
    ...     print(error.count, "undelivered")
    1 undelivered
    >>> deliveries.check(timeout_s=1.0)  # each failure is raised once
    """

    def __init__(self) -> None:
        self._settled_changed = threading.Condition()
        self._sent = 0
        self._settled = 0
        self._failed = 0
        self._first_failure: BaseException | None = None

    def track(self, future: Any) -> None:
        """Count a kafka-python send; its future settles it."""
        self.sent()
        future.add_callback(self.delivered)
        future.add_errback(self.failed)

    def sent(self) -> None:
        """Count one send whose outcome :meth:`delivered` or :meth:`failed` will report."""
        self._sent += 1

    def delivered(self, _metadata: Any = None) -> None:
        with self._settled_changed:
            self._settled += 1
            self._settled_changed.notify_all()

    def failed(self, error: BaseException) -> None:
        with self._settled_changed:
            self._settled += 1
            self._failed += 1
            if self._first_failure is None:
                self._first_failure = error
            self._settled_changed.notify_all()

    def check(self, timeout_s: float) -> None:
        """Wait until every tracked send is settled; raise if any failed. Starts afresh."""
        with self._settled_changed:
            if not self._settled_changed.wait_for(lambda: self._settled >= self._sent, timeout_s):
                waiting = self._sent - self._settled
                raise KafkaTimeoutError(f"{waiting} records unacknowledged after {timeout_s:g} s")
            failed, first = self._failed, self._first_failure
            self.reset()
        if failed:
            raise UndeliveredError(failed, first)

    def reset(self) -> None:
        """Forget every tracked send (their transaction was aborted, or the producer closed)."""
        self._sent = self._settled = self._failed = 0
        self._first_failure = None


class KafkaSink:
    """Publishes predictions and dead letters, optionally in transactions.

    Every send is checked before the offsets of its inputs are committed: a
    record the broker refused or never acknowledged raises
    :class:`UndeliveredError` at :meth:`commit` instead of being lost behind a
    committed offset.
    """

    #: A batch's predictions go out together once it is scored: kafka-python's sender
    #: thread runs Python, and records trickling in while the batch is scored wake it
    #: to take the GIL from scoring (the transactional worker lost 13-27 % of its rate).
    send_as_scored = False

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
        self.deliveries = Deliveries()
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
        self.deliveries.track(self.producer.send(topic, key=key, value=value, headers=headers))

    def commit(
        self,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        source: KafkaSource,
    ) -> None:
        """Make the batch's outputs visible and its input offsets committed.

        In a transaction the offsets carry the consumer's group generation: the
        broker refuses them from a member the group has since moved on from.
        """
        self.flush()
        if self.transactional:
            self.begin()
            transactions = self._transactions()
            if offsets:
                self._await(
                    transactions.send_offsets_to_transaction(
                        dict(offsets), source.consumer.group_metadata()
                    ),
                    "adding the offsets to the transaction",
                )
            self._await(transactions.begin_commit(), "committing the transaction")
            self.in_transaction = False
        else:
            source.commit(offsets)

    def flush(self) -> None:
        """Send what is buffered and wait for the answer to every send since the last flush.

        Raises :class:`UndeliveredError` if it refused or never acknowledged some of them.
        """
        timeout_s = self.config.max_block_ms / 1000
        self._flush_producer(timeout_s)
        self.deliveries.check(timeout_s)

    def _flush_producer(self, timeout_s: float) -> None:
        # kafka-python's flush raises UnknownError("Future not done") when the broker
        # finds a batch it waits on too large and the batch is split into new ones;
        # those are flushed in turn, down to single records the broker accepts or refuses.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.producer.flush(timeout=max(deadline - time.monotonic(), 0.001))
                return
            except UnknownError:
                if time.monotonic() >= deadline:
                    raise KafkaTimeoutError(f"batches still split after {timeout_s:g} s") from None

    def abort(self) -> None:
        self.deliveries.reset()
        if self.transactional and self.in_transaction:
            self.in_transaction = False
            self._await(self._transactions().begin_abort(), "aborting the transaction")

    def close(self) -> None:
        timeout_s = self.config.max_block_ms / 1000
        try:
            self._flush_producer(timeout_s)
            self.producer.close(timeout=timeout_s)
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
