"""An in-memory Kafka edge for the worker's unit tests: a broker, a source and a sink.

:class:`MemoryBroker` holds the input partitions (records per partition), the
group's committed offsets and the outputs made visible (committed); the
:class:`MemorySource` and :class:`MemorySink` built on it implement
:class:`stream.edge.Source` and :class:`stream.edge.Sink`, so that
:class:`stream.worker.Worker` runs its loop on them without a server. Switches
make the broker misbehave: refuse an output for itself (:attr:`MemoryBroker.refuse`),
fail the next flush once (:attr:`MemoryBroker.fail_next_flush`), and take
partitions from a source as a rebalance does (:meth:`MemorySource.revoke`).
Every step that matters to delivery is written in :attr:`MemoryBroker.journal`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamlearn.features.schema import line_kind
from streamlearn.learners.checkpoint import Checkpoint, choose
from streamlearn.stream.config import Settings
from streamlearn.stream.edge import (
    EdgeError,
    Headers,
    Offsets,
    Record,
    RefusedRecord,
    TopicPartition,
    UndeliveredError,
    next_offsets,
)
from streamlearn.stream.worker import Worker

__all__ = [
    "MemoryBroker",
    "MemoryCheckpoints",
    "MemoryRegistry",
    "MemorySink",
    "MemorySource",
    "memory_worker",
]

Output = tuple[str, bytes | None, bytes, Headers]


@dataclass
class MemoryBroker:
    """Partitions, committed offsets, visible outputs, and the switches of misbehaviour."""

    partitions: dict[TopicPartition, list[Record]] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    #: Outputs made visible (acknowledged without transactions; committed with them).
    visible: list[Output] = field(default_factory=list)
    #: Outputs (topic, key) the broker refuses for themselves (too large), always.
    refuse: set[tuple[str, bytes | None]] = field(default_factory=set)
    #: An error the next flush raises (once), as a delivery timeout would.
    fail_next_flush: EdgeError | None = None
    #: What happened, in order: ("flush", sent), ("commit", offsets), ("abort", dropped), ...
    journal: list[tuple[str, Any]] = field(default_factory=list)
    sources: list[MemorySource] = field(default_factory=list)
    sinks: list[MemorySink] = field(default_factory=list)

    def append(self, settings: Settings, lines: Iterable[bytes], partitions: int = 2) -> None:
        """Write JSON lines to the events and labels topics, by event id's hash."""
        topics = settings.kafka.topics
        for line in lines:
            kind = line_kind(line)
            topic = topics.events if kind == "events" else topics.labels
            key = line.split(b'"event_id":"', 1)[1].split(b'"', 1)[0]
            tp = TopicPartition(topic, sum(key) % partitions)
            records = self.partitions.setdefault(tp, [])
            records.append(Record(kind, line, tp.topic, tp.partition, len(records), None, key))
        for topic in (topics.events, topics.labels):
            for p in range(partitions):
                self.partitions.setdefault(TopicPartition(topic, p), [])

    def outputs(self, topic: str) -> list[Output]:
        return [output for output in self.visible if output[0] == topic]

    def ends(self) -> dict[TopicPartition, int]:
        return {tp: len(records) for tp, records in self.partitions.items()}


class MemorySource:
    """A :class:`stream.edge.Source` over a :class:`MemoryBroker`: every partition assigned."""

    def __init__(self, broker: MemoryBroker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings
        self.revocations = 0
        self.assigned = set(broker.partitions)
        self.positions = {tp: broker.committed.get(tp, 0) for tp in self.assigned}
        self.closed = False
        broker.sources.append(self)

    def next_batch(self, timeout_ms: int | None = None) -> list[Record]:
        """Up to ``max_poll_records`` records, a partition's in offset order."""
        out: list[Record] = []
        limit = self.settings.kafka.max_poll_records
        for tp in sorted(self.assigned):
            records = self.broker.partitions[tp]
            while self.positions[tp] < len(records) and len(out) < limit:
                out.append(records[self.positions[tp]])
                self.positions[tp] += 1
        return out

    def event_partitions(self) -> set[tuple[str, int]]:
        events = self.settings.kafka.topics.events
        return {(tp.topic, tp.partition) for tp in self.assigned if tp.topic == events}

    def position(self, records: Iterable[Record]) -> Offsets:
        return next_offsets(records)

    def committed(self, partitions: list[str]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for name in partitions:
            topic, partition = name.rsplit(":", 1)
            out[name] = self.broker.committed.get(TopicPartition(topic, int(partition)))
        return out

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.broker.journal.append(("commit", dict(offsets)))
        self.broker.committed.update(offsets)

    def group_metadata(self) -> object:
        return self

    def rewind(self) -> dict[tuple[str, int], int]:
        self.positions = {tp: self.broker.committed.get(tp, 0) for tp in self.assigned}
        self.broker.journal.append(("rewind", dict(self.positions)))
        return {(tp.topic, tp.partition): offset for tp, offset in self.positions.items()}

    def lag(self) -> dict[TopicPartition, int]:
        ends = self.broker.ends()
        return {tp: ends[tp] - self.positions[tp] for tp in self.assigned}

    def caught_up(self) -> bool:
        return not any(self.lag().values())

    def close(self, timeout_s: float | None = None) -> None:
        self.closed = True

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        """A rebalance takes ``partitions`` from this source and gives them straight back
        (the eager protocol): the positions are kept, the revocation counted."""
        self.revocations += 1
        self.broker.journal.append(("revoke", sorted(partitions)))


class MemorySink:
    """A :class:`stream.edge.Sink` over a :class:`MemoryBroker`."""

    send_as_scored = False

    def __init__(self, broker: MemoryBroker, transactional: bool = False) -> None:
        self.broker = broker
        self.transactional = transactional
        self.in_transaction = False
        self.limit: Callable[[float], float] = lambda timeout_s: timeout_s
        #: Sent since the last flush, and acknowledged since the last commit (transactions).
        self.pending: list[Output] = []
        self.acknowledged: list[Output] = []
        self.alone: list[Output] = []
        self.closed = False
        broker.sinks.append(self)

    def begin(self) -> None:
        if self.transactional and not self.in_transaction:
            self.in_transaction = True

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = None) -> None:
        self.pending.append((topic, key, value, headers))

    def send_alone(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers = None
    ) -> None:
        self.alone.append((topic, key, value, headers))
        self.send(topic, key, value, headers)

    def flush(self) -> None:
        broker, pending, self.pending = self.broker, self.pending, []
        broker.journal.append(("flush", len(pending)))
        error, broker.fail_next_flush = broker.fail_next_flush, None
        if error is not None:
            raise UndeliveredError(len(pending), error)
        refused = tuple(
            RefusedRecord(topic, key, value, headers, "too_large", "EdgeError: too large")
            for topic, key, value, headers in pending
            if (topic, key) in broker.refuse
        )
        taken = [output for output in pending if (output[0], output[1]) not in broker.refuse]
        if self.transactional:
            self.acknowledged += taken
        else:
            broker.visible += taken
        if refused:
            raise UndeliveredError(len(refused), EdgeError("too large", errno=10), refused)

    def commit(self, offsets: Mapping[TopicPartition, int], source: Any) -> None:
        self.flush()
        if self.transactional:
            self.broker.visible += self.acknowledged
            self.acknowledged = []
            self.broker.journal.append(("commit", dict(offsets)))
            self.broker.committed.update(offsets)
            self.in_transaction = False
        else:
            source.commit(offsets)

    def abort(self) -> None:
        self.broker.journal.append(("abort", len(self.pending) + len(self.acknowledged)))
        self.pending, self.acknowledged = [], []
        self.in_transaction = False

    def close(self) -> None:
        self.closed = True


@dataclass
class _Info:
    version: str
    labels_learned: int = 0
    events_scored: int = 0


class MemoryRegistry:
    """The calls of :class:`learners.registry.ModelRegistry` a worker makes, in memory."""

    def __init__(self) -> None:
        self.snapshots: dict[str, tuple[Any, _Info]] = {}

    def save(self, model: Any, **meta: Any) -> _Info:
        info = _Info(str(len(self.snapshots) + 1), meta["labels_learned"], meta["events_scored"])
        self.snapshots[info.version] = (copy.deepcopy(model), info)
        return info

    def load(self, version: str) -> tuple[Any, _Info]:
        model, info = self.snapshots[version]
        return copy.deepcopy(model), info

    def current_state(self) -> tuple[str | None, int]:
        return None, 0

    def prune(self, note: str, keep: int, protect: Any = ()) -> list[str]:
        return []


class MemoryCheckpoints:
    """The two-phase record of :class:`learners.checkpoint.CheckpointStore`, in memory."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.prepared: Checkpoint | None = None
        self.confirmed: Checkpoint | None = None

    def prepare(self, checkpoint: Checkpoint) -> None:
        self.broker.journal.append(("prepare", checkpoint.version))
        self.prepared = checkpoint

    def confirm(self) -> bool:
        self.broker.journal.append(("confirm", self.prepared and self.prepared.version))
        if self.prepared is None:
            return False
        self.confirmed, self.prepared = self.prepared, None
        return True

    def recover(self, committed: Callable[[list[str]], Mapping[str, int | None]]) -> Any:
        if self.prepared is None:
            return self.confirmed
        chosen = choose(self.prepared, self.confirmed, committed(list(self.prepared.offsets)))
        self.confirmed, self.prepared = chosen, None
        return chosen


def memory_worker(
    settings: Settings,
    broker: MemoryBroker,
    *,
    transactional: bool = False,
    checkpoints: MemoryCheckpoints | None = None,
) -> Worker:
    """A worker on ``broker``, with an in-memory interaction store (and registry, when
    ``checkpoints`` are given): no server at all."""
    from streamlearn.features.memory_store import MemoryStore
    from streamlearn.learners.checkpointer import Checkpointer

    def services() -> tuple[Any, Any]:
        if checkpoints is None:
            return None, None
        registry = MemoryRegistry()
        return registry, Checkpointer(registry, checkpoints, "memory", 3)

    return Worker(
        settings,
        name="memory-0",
        source_factory=lambda: MemorySource(broker, settings),
        sink_factory=lambda: MemorySink(broker, transactional),
        store_factory=lambda: MemoryStore(settings.store, settings.features.interactions),
        prepare_topics=lambda: None,
        model_services=services,
    )
