"""The worker's edge: what a source gives, what a sink takes, and how they fail.

The worker reads records from a :class:`Source` and publishes its outputs
through a :class:`Sink`; it knows neither Kafka client. Each client has its
adapter behind these protocols (:mod:`stream.kafka_io` on kafka-python,
:mod:`stream.rdkafka_io` on librdkafka), and tests run the worker on
in-memory ones. Nothing here imports a Kafka client: offsets are plain
:class:`TopicPartition` keys and integers, and every failure of a client
reaches the worker as an :class:`EdgeError` that says what the client said
(the Kafka error code in ``errno``, whether trying again may help, the message).

Examples
--------
>>> record = Record("events", b"{}", "events", 3, 41)
>>> record.source, TopicPartition("events", 3) == ("events", 3)
('events:3:41', True)
>>> next_offsets([record, Record("events", b"", "events", 3, 40)])
{TopicPartition(topic='events', partition=3): 42}
>>> error = EdgeError("no broker", errno=7, retriable=True)
>>> str(error), error.errno, error.retriable
('no broker', 7, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

__all__ = [
    "EdgeError",
    "EdgeTimeoutError",
    "Headers",
    "Offsets",
    "Record",
    "RefusedRecord",
    "Sink",
    "SinkFactory",
    "Source",
    "SourceFactory",
    "TopicPartition",
    "UndeliveredError",
    "named_text",
    "next_offsets",
]

#: A record's headers as the sinks take them: ``(name, value)`` pairs, or None.
Headers = list[tuple[str, bytes]] | None


class TopicPartition(NamedTuple):
    """One partition of a topic; equal to the plain tuple ``(topic, partition)``."""

    topic: str
    partition: int


#: The next offset to read per partition: what a commit stores for the group.
Offsets = dict[TopicPartition, int]


@dataclass(slots=True, frozen=True)
class Record:
    """One raw record: from the ``events`` or the ``labels`` stream."""

    kind: Literal["events", "labels"]
    value: bytes
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    key: bytes | None = None

    @property
    def source(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


def next_offsets(records: Iterable[Record]) -> Offsets:
    """The offsets to commit once ``records`` are done: the next offset of each partition.

    >>> done = [Record("events", b"", "events", 0, 7), Record("events", b"", "events", 0, 5)]
    >>> next_offsets(done)
    {TopicPartition(topic='events', partition=0): 8}
    """
    offsets: Offsets = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, -1), r.offset + 1)
    return offsets


class EdgeError(Exception):
    """A failure of a source or a sink: the client's error, as the worker reads it.

    Adapters raise it (or a subclass) at their boundary; the subclasses of
    this module start their text with their class name, as kafka-python's
    errors do, so that a log line names the error.

    Parameters
    ----------
    message
        What went wrong.
    errno
        The Kafka error code (a broker's, or a client's own negative one), if any.
    retriable
        True when the same call may succeed later.

    >>> error = EdgeTimeoutError("3 records unacknowledged")
    >>> str(error), error.retriable, error.errno is None
    ('EdgeTimeoutError: 3 records unacknowledged', True, True)
    """

    errno: int | None = None
    retriable: bool = False

    def __init__(
        self, message: str = "", *, errno: int | None = None, retriable: bool | None = None
    ) -> None:
        super().__init__(*([message] if message else []))
        if errno is not None:
            self.errno = errno
        if retriable is not None:
            self.retriable = retriable


def named_text(error: BaseException) -> str:
    """An error's text after its class name, as kafka-python's errors read.

    >>> named_text(EdgeTimeoutError("late")), named_text(EdgeTimeoutError())
    ('EdgeTimeoutError: late', 'EdgeTimeoutError')
    """
    name = type(error).__name__
    text = Exception.__str__(error)
    return f"{name}: {text}" if text else name


class EdgeTimeoutError(EdgeError):
    """A wait of a source or a sink that did not end in time."""

    retriable = True
    __str__ = named_text


@dataclass(slots=True, frozen=True)
class RefusedRecord:
    """An output the broker refused for itself, with what it takes to send it again."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    #: One of the values of :data:`stream.delivery.REFUSALS`.
    reason: str
    error: str


class UndeliveredError(EdgeError):
    """Records the broker did not acknowledge: the offsets of their inputs stay uncommitted.

    ``refused`` are those it refused for themselves (see
    :func:`stream.delivery.refusal_reason`); when they are all of them
    (``only_refused``), nothing else went wrong.

    >>> error = UndeliveredError(3, EdgeTimeoutError("expired"))
    >>> error.count, error.only_refused
    (3, False)
    >>> str(error)
    'UndeliveredError: 3 records were not delivered (first error: EdgeTimeoutError: expired)'
    """

    retriable = True
    __str__ = named_text

    def __init__(
        self, count: int, first: BaseException | None, refused: tuple[RefusedRecord, ...] = ()
    ) -> None:
        if first is None:
            detail = "unknown"
        else:
            text, name = str(first), type(first).__name__
            detail = text if text.startswith(name) else f"{name}: {text}"
        super().__init__(f"{count} records were not delivered (first error: {detail})")
        self.count = count
        self.refused = refused

    @property
    def only_refused(self) -> bool:
        return bool(self.refused) and len(self.refused) == self.count


class Source(Protocol):
    """Where the worker reads its records: the events and labels of one consumer group.

    Records come in event-time order across partitions. Offsets are committed
    only when the worker says so (:meth:`commit`, or a sink's transaction),
    never automatically. Every method raises :class:`EdgeError` when the
    client fails; the worker then reconnects and resumes from its checkpoint.
    """

    @property
    def revocations(self) -> int:
        """Rebalances so far that took partitions from this source (revoked or lost).

        Work done since the last commit may be done again by their next owner:
        the worker undoes it when this count moves.
        """
        ...

    def next_batch(self, timeout_ms: int | None = None) -> list[Record]:
        """The next records, in event-time order; may be empty.

        ``timeout_ms`` bounds the wait for a first record (None: the configured
        poll timeout; 0: only what is there).
        """
        ...

    def event_partitions(self) -> set[tuple[str, int]]:
        """The partitions of the events topic assigned to this source now."""
        ...

    def position(self, records: Iterable[Record]) -> Offsets:
        """The offsets to commit once ``records`` are done (next offset per partition)."""
        ...

    def committed(self, partitions: list[str]) -> dict[str, int | None]:
        """The group's committed offsets of ``topic:partition`` names (None: none)."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` for the group, outside any transaction."""
        ...

    def group_metadata(self) -> object:
        """The client's group membership, for a sink's transactional offset commit."""
        ...

    def rewind(self) -> dict[tuple[str, int], int]:
        """Read every assigned partition again from the group's committed offset.

        Records held for the event-time order are dropped. Returns where each
        partition now starts.
        """
        ...

    def lag(self) -> dict[TopicPartition, int]:
        """Records between the position and the end, per assigned partition."""
        ...

    def caught_up(self) -> bool:
        """True when every assigned partition is read to its end and nothing is held."""
        ...

    def close(self, timeout_s: float | None = None) -> None:
        """Leave the group and close; ``timeout_s`` bounds the wait."""
        ...


class Sink(Protocol):
    """Where the worker publishes predictions, dead letters and examples.

    Every send is checked before the offsets of its inputs are committed
    (:meth:`flush`, :meth:`commit`): a record the broker refused or never
    acknowledged raises :class:`UndeliveredError` instead of being lost behind
    a committed offset. Other failures raise :class:`EdgeError`.
    """

    #: True when a live batch's predictions go out one by one, as they are scored.
    send_as_scored: bool
    #: True when outputs and offsets commit together in transactions.
    transactional: bool
    #: True while a transaction is open (always False without transactions).
    in_transaction: bool
    #: Caps each wait (seconds) of the sink; the worker bounds them when stopping.
    limit: Callable[[float], float]

    def begin(self) -> None:
        """Open a transaction unless one is open (a transaction may span many batches)."""
        ...

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = None) -> None:
        """Queue one record; its outcome is known at the next :meth:`flush`."""
        ...

    def send_alone(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers = None
    ) -> None:
        """Send one record in a produce request of its own (the broker refused it before)."""
        ...

    def flush(self) -> None:
        """Wait for the answer to every send since the last flush.

        Raises :class:`UndeliveredError` if some were refused or not acknowledged;
        each failure is raised once.
        """
        ...

    def commit(self, offsets: Mapping[TopicPartition, int], source: Source) -> None:
        """Flush, then commit ``offsets`` (in the transaction, or through ``source``)."""
        ...

    def abort(self) -> None:
        """Forget the sends since the last commit; abort the open transaction, if any."""
        ...

    def close(self) -> None:
        """Send what is queued (within the sink's wait) and close."""
        ...


#: Builds the worker's source (called again after each reconnection).
SourceFactory = Callable[[], Source]
#: Builds the worker's sink (called again after each reconnection).
SinkFactory = Callable[[], Sink]
