"""The worker loop's own state: its idle clock, its checkpoint clock, its summary.

Examples
--------
>>> summary = WorkerSummary()
>>> summary.records, summary.checkpoints
(0, 0)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from streamlearn.learners.checkpointer import ModelState
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.stream.edge import TopicPartition
from streamlearn.stream.processor import BatchOutput, ModelSlot

__all__ = [
    "CheckpointClock",
    "IdleClock",
    "WorkerSummary",
    "partition_list",
    "report_lag",
    "slot_state",
]


def report_lag(metrics: WorkerMetrics, lags: Mapping[TopicPartition, int], pending: int) -> None:
    """Set the consumer lag of each partition and the count of labels waiting."""
    for tp, lag in lags.items():
        metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
    metrics.pending_labels.set(pending)


def slot_state(slot: ModelSlot) -> tuple[ModelState, dict[str, float | int | None]]:
    """What a checkpoint records of ``slot`` besides its model: its state and its
    monitor's online quality.

    >>> from streamlearn.learners.models import build_model
    >>> slot_state(ModelSlot("m", build_model("logistic"), version="3"))
    (ModelState(name='m', parent='3', events_scored=0, labels_learned=0), {})
    """
    monitor = slot.monitor
    quality = monitor.snapshot()["quality"] if monitor is not None else {}
    metrics = {k: v for k, v in quality.items() if isinstance(v, float | int | None)}
    state = ModelState(slot.name, slot.version, slot.events_scored, slot.labels_learned)
    return state, metrics


def partition_list(partitions: set[tuple[str, int]]) -> str:
    """Partitions for a log line, sorted.

    >>> partition_list({("events", 1), ("events", 0)})
    'events:0, events:1'
    >>> partition_list(set())
    'none'
    """
    return ", ".join(f"{topic}:{p}" for topic, p in sorted(partitions)) or "none"


class IdleClock:
    """When a worker asked to stop once idle has waited long enough.

    Idle time runs from the last record or the last change of the assignment.
    Before the first assignment the worker waits for the group join, up to
    twice the session timeout more (a dead member must time out first).

    >>> clock = IdleClock(3.0, session_timeout_s=6.0, started=0.0)
    >>> clock.expired(10.0, 0, set()), clock.expired(16.0, 0, set())
    (False, True)
    >>> clock, owned = IdleClock(3.0, 6.0, 0.0), {("events", 0)}
    >>> clock.expired(1.0, 0, owned), clock.expired(3.5, 0, owned), clock.expired(4.1, 0, owned)
    (False, False, True)
    >>> clock.expired(4.2, 0, set()), clock.expired(7.3, 0, set())
    (False, True)
    """

    def __init__(self, timeout_s: float | None, session_timeout_s: float, started: float) -> None:
        self.timeout_s = timeout_s
        self.join_s = (timeout_s or 0.0) + 2 * session_timeout_s
        self.started = started
        self.last = started
        self.assignment: set[tuple[str, int]] = set()
        self.joined = False

    def rejoin(self, now: float) -> None:
        """Wait for a new group join from ``now`` (after reconnecting to Kafka).

        >>> clock = IdleClock(3.0, session_timeout_s=6.0, started=0.0)
        >>> clock.expired(1.0, 5, {("events", 0)}), clock.expired(40.0, 0, {("events", 0)})
        (False, True)
        >>> clock.rejoin(40.0)
        >>> clock.expired(41.0, 0, {("events", 0)}), clock.expired(48.0, 0, set())
        (False, False)
        """
        self.started = self.last = now
        self.assignment = set()
        self.joined = False

    def expired(self, now: float, records: int, assignment: set[tuple[str, int]]) -> bool:
        if records or assignment != self.assignment:
            self.last, self.assignment = now, set(assignment)
            self.joined = self.joined or bool(assignment)
        if self.timeout_s is None:
            return False
        if not self.joined:
            return now - self.started >= self.join_s
        return now - self.last >= self.timeout_s


@dataclass
class WorkerSummary:
    records: int = 0
    events: int = 0
    predictions: int = 0
    labels_learned: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    checkpoints: int = 0
    recoveries: int = 0
    rewinds: int = 0
    seconds: float = 0.0
    busy_seconds: float = 0.0

    def add(self, records: int, out: BatchOutput) -> None:
        self.records += records
        self.batches += 1
        self.predictions += len(out.predictions)
        self.labels_learned += out.labels_learned
        for letter in out.dead_letters:
            self.dead_letters[letter.reason] = self.dead_letters.get(letter.reason, 0) + 1


class CheckpointClock:
    """When the work since the last checkpoint is due to be committed.

    With checkpoints, after ``every_labels`` labels learned or ``every_seconds``;
    without (``every_labels`` None), every ``every_seconds`` (``kafka.commit_interval_s``).

    >>> now = [0.0]
    >>> clock = CheckpointClock(every_labels=3, every_seconds=60.0, clock=lambda: now[0])
    >>> clock.learned(2); clock.due()
    False
    >>> clock.learned(1); clock.due()
    True
    >>> clock.reset(); now[0] = 61.0; clock.due()
    True
    """

    def __init__(
        self,
        every_labels: int | None,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_labels = every_labels
        self.every_seconds = every_seconds
        self.clock = clock
        #: Labels learned since the last checkpoint.
        self.labels = 0
        self.last = clock()

    def learned(self, labels: int) -> None:
        self.labels += labels

    def due(self) -> bool:
        if self.every_labels is not None and self.labels >= self.every_labels:
            return True
        return self.clock() - self.last >= self.every_seconds

    def reset(self) -> None:
        """A checkpoint was made (or skipped): count afresh from now."""
        self.labels = 0
        self.last = self.clock()

    def touch(self) -> None:
        """Offsets were committed, or nothing was to be: the interval starts again."""
        self.last = self.clock()
