"""Kafka at the edges: topics, the consumer source and the output sink on kafka-python.

Topics, routing and the producers of the CLI and replay use kafka-python; the
worker uses the source and sink of this module with ``kafka.client:
kafka-python`` (the default) and those of :mod:`stream.rdkafka_io` with
``kafka.client: librdkafka``.

Examples
--------
>>> from streamlearn.stream.config import KafkaConfig
>>> sorted(topic_plan(KafkaConfig()).items())
[('dead-letter', 4), ('events', 4), ('labels', 4), ('predictions', 4)]
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson
from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    UnknownError,
    for_code,
)
from kafka.structs import OffsetAndMetadata

from streamlearn.features.schema import RecordKind, line_kind
from streamlearn.stream.config import KafkaConfig
from streamlearn.stream.processor import Record

__all__ = [
    "EVENT_TIME_HEADER",
    "REFUSALS",
    "Deliveries",
    "KafkaSink",
    "KafkaSource",
    "LineProducer",
    "RefusedRecord",
    "TimeOrder",
    "UndeliveredError",
    "committed_records",
    "ensure_topics",
    "event_key",
    "event_time_headers",
    "max_message_bytes",
    "next_offsets",
    "order_time",
    "produce_lines",
    "refusal_reason",
    "route",
    "topic_plan",
]

log = logging.getLogger(__name__)
REJOIN_AFTER_S = 5.0

#: The record header that carries a record's event time (epoch ms, ASCII digits);
#: ``produce`` and ``replay`` set it, and the sources read records in its order.
EVENT_TIME_HEADER = "event-time"
#: How long polled records wait for a partition that has records to read but gives
#: none (e.g. one that ends with a transaction marker) before they go without it.
HOLD_LIMIT_S = 1.0

Partition = tuple[str, int]
#: (time, is an event, topic, partition, offset): labels before events of the same time.
OrderKey = tuple[int, bool, str, int, int]


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
    config: KafkaConfig,
    topics: Mapping[str, int],
    bootstrap_timeout_ms: int | None = None,
    *,
    timeout_s: float = 30.0,
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
    bootstrap_timeout_ms
        Bounds the wait for a first broker, as for :class:`KafkaSource` and
        :class:`KafkaSink` (the worker's connection attempts); by default ``timeout_s``.
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
        **_bootstrap(timeout_ms if bootstrap_timeout_ms is None else bootstrap_timeout_ms),
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


def _bootstrap(timeout_ms: int | None) -> dict[str, Any]:
    """The option that bounds a kafka-python client's wait for its first broker, when given."""
    return {} if timeout_ms is None else {"bootstrap_timeout_ms": timeout_ms}


def max_message_bytes(
    config: KafkaConfig, topic: str, bootstrap_timeout_ms: int | None = None
) -> int | None:
    """The ``max.message.bytes`` of ``topic`` (its own, or the broker's default).

    None when the broker does not say (the topic is missing, or describing its
    configuration is not allowed): the caller keeps its own limit.
    """
    admin = KafkaAdminClient(
        client_id=config.client_id + "-admin",
        **config.client_options(),
        **_bootstrap(bootstrap_timeout_ms),
    )
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})
        described = admin.describe_configs([resource], config_filter="all")
    except KafkaError as exc:
        log.warning("the max.message.bytes of %s is unknown: %s", topic, exc)
        return None
    finally:
        admin.close()
    return _config_value(described, topic, "max.message.bytes")


def _config_value(described: Any, topic: str, name: str) -> int | None:
    """``name`` of ``topic`` in what kafka-python's ``describe_configs`` returned.

    >>> _config_value({"topic": {"t": {"max.message.bytes": {"value": "2000"}}}},
    ...               "t", "max.message.bytes")
    2000
    >>> _config_value({"topic": {}}, "t", "max.message.bytes") is None
    True
    """
    try:
        entries = described["topic"][topic]
        entry = entries[name]
        return int(entry["value"] if isinstance(entry, dict) else entry)
    except (KeyError, TypeError, ValueError):
        return None


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
    :data:`EVENT_TIME_HEADER` header (:func:`event_time_headers`; a line without one
    takes the time of the line before it, as :func:`stream.replay.timed_lines` says),
    so that a worker catching up reads both topics in event-time order. A line the
    producer refuses at once (over its ``max_request_size``) stops the send:
    :attr:`stopped` holds its index among the lines, its size and the error.
    Whatever was sent before it is flushed, and :meth:`send` raises
    :class:`UndeliveredError` if the broker refused or never acknowledged some of it.

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


def event_time_headers(time_ms: int | None) -> list[tuple[str, bytes]] | None:
    """The headers that give a record its event time, for the sources' ordering.

    >>> event_time_headers(1767225600000), event_time_headers(None)
    ([('event-time', b'1767225600000')], None)
    """
    if time_ms is None:
        return None
    return [(EVENT_TIME_HEADER, str(time_ms).encode())]


def order_time(headers: Sequence[tuple[str, bytes | None]] | None, timestamp_ms: int | None) -> int:
    """The time a record is read in: its event-time header, else its Kafka timestamp.

    >>> order_time([("event-time", b"1500")], 9000), order_time(None, 9000)
    (1500, 9000)
    >>> order_time([("event-time", b"soon")], 9000), order_time([], None)
    (9000, 0)
    """
    if headers:
        for name, value in headers:
            if name == EVENT_TIME_HEADER and value is not None:
                try:
                    return int(value)
                except ValueError:
                    break
    return timestamp_ms if timestamp_ms is not None and timestamp_ms > 0 else 0


class TimeOrder:
    """Polled records, held until no assigned partition can still give an earlier one.

    Records are released in (time, labels before events, topic, partition,
    offset) order across every partition of both topics: a record waits while
    a partition that still has records to read (``behind``) may give one that
    comes before it. A partition's records come in offset order and, written
    in event-time order, in time order, so its next record comes after the
    latest one it gave. A partition read to its end holds nothing back (a
    label that has not come yet is not waited for); one that has records to
    read but gives none for ``hold_limit_s`` (a transaction marker at its
    end) is then passed over until it gives one. A partition's records are
    released as a prefix, so a committed offset never passes a record still
    held: a record whose time goes back (a partition not written in time
    order) comes right after the record before it, never before it.

    The source pauses the partitions in :meth:`ahead` (they hold records) and
    resumes the others, so the consumer fetches what the order waits for.

    Examples
    --------
    >>> order = TimeOrder()
    >>> def records(topic, kind, times):
    ...     return [((t, kind == "events", topic, 0, n), Record(kind, b"", topic, 0, n, t))
    ...             for n, t in enumerate(times)]
    >>> order.add(("events", 0), records("events", "events", [10, 20, 30, 40]))
    >>> [r.offset for r in order.release(lambda: {("events", 0), ("labels", 0)})]
    []
    >>> order.add(("labels", 0), records("labels", "labels", [20, 25]))
    >>> [(r.kind, r.timestamp_ms) for r in order.release(lambda: {("events", 0), ("labels", 0)})]
    [('events', 10), ('labels', 20), ('events', 20), ('labels', 25)]
    >>> sorted(order.ahead()), order.held
    ([('events', 0)], 2)
    >>> [r.timestamp_ms for r in order.release(lambda: {("events", 0)})]  # labels read to the end
    [30, 40]
    """

    def __init__(
        self, hold_limit_s: float = HOLD_LIMIT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.hold_limit_s = hold_limit_s
        self.clock = clock
        self._held: dict[Partition, list[tuple[OrderKey, Record]]] = {}
        #: The greatest key each partition gave: its next records come after it.
        self._last: dict[Partition, OrderKey] = {}
        self._blocked_since: float | None = None
        #: Partitions passed over (no record for ``hold_limit_s``) until they give one.
        self._passed: set[Partition] = set()

    @property
    def held(self) -> int:
        """Records held."""
        return sum(map(len, self._held.values()))

    def ahead(self) -> set[Partition]:
        """The partitions that hold records: they wait for the others."""
        return set(self._held)

    def first_offsets(self) -> dict[Partition, int]:
        """The offset of the first record held, per partition holding any: where its
        records handed out end."""
        return {p: items[0][1].offset for p, items in self._held.items()}

    def add(self, partition: Partition, items: list[tuple[OrderKey, Record]]) -> None:
        """Hold the records of one partition just polled, in offset order, with their keys."""
        if not items:
            return
        last = self._last.get(partition)
        latest = last[0] if last is not None else None
        for n, (key, record) in enumerate(items):
            if latest is not None and key[0] < latest:  # back in time: right after the latest
                items[n] = ((latest, *key[1:]), record)  # type: ignore[assignment]
            else:
                latest = key[0]
        self._last[partition] = items[-1][0]
        held = self._held.get(partition)
        if held:
            held.extend(items)
        else:
            self._held[partition] = items
        self._passed.discard(partition)

    def release(self, behind: Callable[[], set[Partition]]) -> list[Record]:
        """The held records that no partition can still precede, in order.

        ``behind()`` names the assigned partitions that have records left to
        read (asked only when records are held).
        """
        held = self._held
        if not held:
            return []
        waiting = behind()
        limit: OrderKey | None = None
        empty = [p for p in waiting if p not in held and p not in self._passed]
        if empty and self._stalled(empty):
            empty = []
        for p in empty:
            last = self._last.get(p)
            if last is None:  # nothing read from it yet: anything may come first
                return []
            limit = last if limit is None or last < limit else limit
        if not empty:
            self._blocked_since = None
        for p in waiting:
            if p in held:
                last = self._last[p]
                limit = last if limit is None or last < limit else limit
        out: list[tuple[OrderKey, Record]] = []
        for p in list(held):
            items = held[p]
            if limit is None or self._last[p] <= limit:
                out += items
                del held[p]
                continue
            n = 0
            while n < len(items) and items[n][0] <= limit:
                n += 1
            if n:
                out += items[:n]
                held[p] = items[n:]
        if out:
            self._blocked_since = None
        out.sort(key=itemgetter(0))
        return [record for _, record in out]

    def _stalled(self, empty: list[Partition]) -> bool:
        """True once ``empty`` held the others back for ``hold_limit_s``; they are then
        passed over until they give a record."""
        now = self.clock()
        if self._blocked_since is None:
            self._blocked_since = now
            return False
        if now - self._blocked_since <= self.hold_limit_s:
            return False
        log.info(
            "%s gave no record for %.1f s though not read to the end: reading on without it",
            ", ".join(f"{t}:{p}" for t, p in sorted(empty)),
            self.hold_limit_s,
        )
        self._passed.update(empty)
        return True

    def forget(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """Drop what is held from ``partitions`` (revoked: their next owner reads them).

        Returns the offset of the first record dropped, per partition that held
        any: a partition assigned again with its position kept must be read
        again from there.

        >>> order = TimeOrder()
        >>> record = Record("events", b"", "events", 0, 7, 5)
        >>> order.add(("events", 0), [((5, True, "events", 0, 7), record)])
        >>> order.forget([("events", 0), ("events", 1)]), order.held
        ({('events', 0): 7}, 0)
        """
        dropped = {}
        for p in partitions:
            held = self._held.pop(p, None)
            if held:
                dropped[p] = held[0][1].offset
            self._last.pop(p, None)
            self._passed.discard(p)
        return dropped

    def clear(self) -> None:
        """Drop everything (the partitions are read again from elsewhere)."""
        self._held.clear()
        self._last.clear()
        self._passed.clear()
        self._blocked_since = None


class _Revocations(ConsumerRebalanceListener):
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


class KafkaSource:
    """Polls batches of records from the events and labels topics of one consumer group.

    Records come in event-time order across every partition of both topics
    (:class:`TimeOrder`): a partition ahead of the others is paused until they
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
        self.kinds = {config.topics.events: "events", config.topics.labels: "labels"}
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
            **_bootstrap(bootstrap_timeout_ms),
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
                self.consumer.resume(*(TopicPartition(*p) for p in paused))
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
        self._unpark()
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
                        ),  # type: ignore[arg-type]
                    )
                    for r in batch
                ],
            )
        records = order.release(self._behind)
        self._pause_ahead()
        return records

    def _behind(self) -> set[Partition]:
        """The assigned partitions with records left to read, as of the last fetch (no request).

        kafka-python keeps each partition's position and the high watermark of
        its last fetch response in its subscription state; its public
        ``position()`` may ask the coordinator, so the state is read directly.
        """
        behind = set()
        for tp, state in self.consumer._subscription.assignment.items():
            high, position = state.highwater, state.position
            if high is None or position is None or position.offset < high:
                behind.add((tp.topic, tp.partition))
        return behind

    def _unpark(self) -> None:
        """Let the poll hand back the records kafka-python parked for a resumed partition.

        kafka-python 3.0 parks the fetched records of a paused partition and
        restores them on a later poll only when its in-line record slot is
        None; a drained slot (empty, not None) leaves them parked, and a
        partition with parked records is never fetched again: it would stay
        silent for good. The drained slot holds nothing, so it is emptied.
        """
        fetcher = self.consumer._fetcher
        inline = fetcher._next_partition_records
        if inline is not None and not inline and fetcher._paused_partition_records:
            fetcher._next_partition_records = None

    def _pause_ahead(self) -> None:
        """Pause the partitions holding records ahead of the others; resume the rest."""
        ahead = self._order.ahead()
        if ahead == self._paused:
            return
        pause, resume = ahead - self._paused, self._paused - ahead
        if pause:
            self.consumer.pause(*(TopicPartition(*p) for p in pause))
        if resume:
            self.consumer.resume(*(TopicPartition(*p) for p in resume))
        self._paused = ahead

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
        self._order.clear()
        if self._paused:
            self.consumer.resume(*(TopicPartition(*p) for p in self._paused))
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
        return len(lags) == len(assigned) and not any(lags.values()) and not self._order.held

    def close(self, timeout_s: float | None = None) -> None:
        """Leave the group and close; ``timeout_s`` bounds the wait for the coordinator."""
        self.consumer.close(timeout_ms=None if timeout_s is None else max(1, int(timeout_s * 1000)))


#: Why the broker refused an output for itself, by error code: sending it again
#: cannot succeed (unless the topic's configuration changes). Anything else (a
#: timeout, the broker away, an aborted transaction) is not the record's fault.
REFUSALS: dict[int, str] = {
    10: "too_large",  # MESSAGE_TOO_LARGE (broker), MSG_SIZE_TOO_LARGE (librdkafka, local)
    18: "too_large",  # RECORD_LIST_TOO_LARGE
    87: "invalid_record",  # INVALID_RECORD (e.g. a compacted topic and no key)
}


def refusal_reason(error: BaseException) -> str | None:
    """Why the broker refused a record for itself (``REFUSALS``), or None.

    Errors of either client carry the Kafka error code in ``errno``.

    >>> from kafka.errors import MessageSizeTooLargeError
    >>> refusal_reason(MessageSizeTooLargeError()), refusal_reason(KafkaTimeoutError())
    ('too_large', None)
    """
    errno = getattr(error, "errno", None)
    return REFUSALS.get(errno) if isinstance(errno, int) else None


@dataclass(slots=True, frozen=True)
class RefusedRecord:
    """An output the broker refused for itself, with what it takes to send it again."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None
    #: One of the values of ``REFUSALS``.
    reason: str
    error: str


class UndeliveredError(KafkaError):
    """Records the broker did not acknowledge: the offsets of their inputs stay uncommitted.

    ``refused`` are those it refused for themselves (see :func:`refusal_reason`);
    when they are all of them (``only_refused``), nothing else went wrong.

    >>> error = UndeliveredError(3, KafkaTimeoutError("expired"))
    >>> error.count, error.only_refused
    (3, False)
    >>> str(error)
    'UndeliveredError: 3 records were not delivered (first error: KafkaTimeoutError: expired)'
    """

    retriable = True

    def __init__(
        self, count: int, first: BaseException | None, refused: tuple[RefusedRecord, ...] = ()
    ) -> None:
        if first is None:
            detail = "unknown"
        elif isinstance(first, KafkaError):  # its str() starts with its class name
            detail = str(first)
        else:
            detail = f"{type(first).__name__}: {first}"
        super().__init__(f"{count} records were not delivered (first error: {detail})")
        self.count = count
        self.refused = refused

    @property
    def only_refused(self) -> bool:
        return bool(self.refused) and len(self.refused) == self.count


class Deliveries:
    """The sends since the last check, until the broker acknowledges or refuses each.

    The producer settles sends in its own thread; :meth:`check` waits for all
    of them and raises :class:`UndeliveredError` for those that failed. It
    does not rely on ``flush()`` alone: kafka-python's flush waits for the
    batches it finds when it starts, and a batch the broker finds too large is
    split into new ones that it does not wait for. A send that failed for
    itself (:func:`refusal_reason`) is kept, with its record, in the error's
    ``refused``, so that the caller may send it again or drop it.

    >>> from kafka.future import Future
    >>> from kafka.errors import MessageSizeTooLargeError
    >>> deliveries = Deliveries()
    >>> first, second, third = Future(), Future(), Future()
    >>> deliveries.track(first); deliveries.track(second)
    >>> deliveries.track(third, ("dead-letter", b"events:0:7", b"{}", None))
    >>> _ = first.success("metadata"); _ = second.failure(KafkaTimeoutError("expired"))
    >>> _ = third.failure(MessageSizeTooLargeError())
    >>> try:
    ...     deliveries.check(timeout_s=1.0)
    ... except UndeliveredError as error:
    ...     print(error.count, "undelivered,", [(r.key, r.reason) for r in error.refused])
    2 undelivered, [(b'events:0:7', 'too_large')]
    >>> deliveries.check(timeout_s=1.0)  # each failure is raised once
    """

    def __init__(self) -> None:
        self._settled_changed = threading.Condition()
        self._sent = 0
        self._settled = 0
        self._failed = 0
        self._first_failure: BaseException | None = None
        self._refused: list[RefusedRecord] = []

    def track(self, future: Any, output: tuple[Any, ...] | None = None) -> None:
        """Count a kafka-python send; its future settles it.

        ``output`` is the send's ``(topic, key, value, headers)``, kept if it is refused.
        """
        self.sent()
        future.add_callback(self.delivered)
        if output is None:
            future.add_errback(self.failed)
        else:
            future.add_errback(self._failed_output, output)

    def _failed_output(self, output: tuple[Any, ...], error: BaseException) -> None:
        self.failed(error, output)

    def sent(self) -> None:
        """Count one send whose outcome :meth:`delivered` or :meth:`failed` will report."""
        self._sent += 1

    def delivered(self, _metadata: Any = None) -> None:
        with self._settled_changed:
            self._settled += 1
            self._settled_changed.notify_all()

    def failed(self, error: BaseException, output: tuple[Any, ...] | None = None) -> None:
        """Settle a send that failed; ``output``: its ``(topic, key, value, headers)``."""
        reason = refusal_reason(error) if output is not None else None
        with self._settled_changed:
            self._settled += 1
            self._failed += 1
            if self._first_failure is None:
                self._first_failure = error
            if reason is not None and output is not None:
                topic, key, value, headers = output
                self._refused.append(RefusedRecord(topic, key, value, headers, reason, str(error)))
            self._settled_changed.notify_all()

    def check(self, timeout_s: float) -> None:
        """Wait until every tracked send is settled; raise if any failed. Starts afresh."""
        with self._settled_changed:
            if not self._settled_changed.wait_for(lambda: self._settled >= self._sent, timeout_s):
                waiting = self._sent - self._settled
                raise KafkaTimeoutError(f"{waiting} records unacknowledged after {timeout_s:g} s")
            failed, first, refused = self._failed, self._first_failure, tuple(self._refused)
            self.reset()
        if failed:
            raise UndeliveredError(failed, first, refused)

    def reset(self) -> None:
        """Forget every tracked send (their transaction was aborted, or the producer closed)."""
        self._sent = self._settled = self._failed = 0
        self._first_failure = None
        self._refused = []


class KafkaSink:
    """Publishes predictions and dead letters, optionally in transactions.

    Every send is checked before the offsets of its inputs are committed: a
    record the broker refused or never acknowledged raises
    :class:`UndeliveredError` at :meth:`commit` instead of being lost behind a
    committed offset. Every wait is bounded by ``kafka.max_block_ms``, and by
    :attr:`limit` of it: a worker asked to stop gives its last waits a grace period.
    """

    #: A batch's predictions go out together once it is scored: kafka-python's sender
    #: thread runs Python, and records trickling in while the batch is scored wake it
    #: to take the GIL from scoring (the transactional worker lost 13-27 % of its rate).
    send_as_scored = False

    def __init__(
        self,
        config: KafkaConfig,
        transactional_id: str | None = None,
        bootstrap_timeout_ms: int | None = None,
    ) -> None:
        self.config = config
        #: Caps each wait (seconds) of the sink: the identity unless the owner bounds them.
        self.limit: Callable[[float], float] = lambda timeout_s: timeout_s
        options: dict[str, Any] = {
            **_bootstrap(bootstrap_timeout_ms),
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
        self._options = options
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
        try:
            future = self.producer.send(topic, key=key, value=value, headers=headers)
        except KafkaError:
            if self.transactional:  # failed for a record refused before? that is the error
                self.flush()
            raise
        self.deliveries.track(future, (topic, key, value, headers))

    def send_alone(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Send a record in a produce request of its own (one the broker refused before).

        The broker refuses a whole record batch larger than the topic takes; a
        record refused within one is tried again alone, so that only a record
        too large by itself is refused again. Its outcome is checked at the next
        :meth:`flush`, as any other send's.
        """
        timeout_s = self.config.max_block_ms / 1000
        self._flush_producer(timeout_s)
        self._renew_if_failed()
        self.send(topic, key, value, headers)
        self._flush_producer(timeout_s)
        self._renew_if_failed()  # settled: a refusal must not fail the next record's send

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
        deadline = time.monotonic() + self.limit(self.config.max_block_ms / 1000)
        self._flush_producer(deadline - time.monotonic())
        try:
            self.deliveries.check(max(0.0, deadline - time.monotonic()))
        except UndeliveredError:
            self._renew_if_failed()
            raise

    def _renew_if_failed(self) -> None:
        """Replace the producer if a refused record left it failing every later send.

        kafka-python's idempotent producer (its default) treats a record the broker
        refuses (too large) as fatal and fails every later send with that error;
        every send not yet answered is failed with it, so a new producer loses nothing. (A
        transactional producer only needs its transaction aborted.)
        """
        manager = getattr(self.producer, "_transaction_manager", None)
        if self.transactional or manager is None or not manager.has_fatal_error():
            return
        log.info("the producer failed for good after a refused record: replacing it")
        self.producer.close(timeout=0)
        self.producer = KafkaProducer(**self._options)

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
        timeout_s = self.limit(self.config.max_block_ms / 1000)
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
        timeout_ms = max(1, int(self.limit(self.config.max_block_ms / 1000) * 1000))
        if not result.wait(timeout_ms=timeout_ms):
            raise KafkaTimeoutError(f"{step} took longer than {timeout_ms} ms")
