"""Event-time order across partitions: which polled record goes first, and when.

A record's time is its :data:`EVENT_TIME_HEADER` header (set by ``produce`` and
``replay``), else its Kafka timestamp; a label goes before an event of the same
time. Both sources (:mod:`stream.kafka_io`, :mod:`stream.rdkafka_io`) hold what
they poll in a :class:`TimeOrder`. Pure: no Kafka client here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter

from streamlearn.stream.edge import Record

__all__ = [
    "EVENT_TIME_HEADER",
    "HOLD_LIMIT_S",
    "OrderKey",
    "Partition",
    "TimeOrder",
    "event_time_headers",
    "order_time",
]

log = logging.getLogger(__name__)

#: The record header that carries a record's event time (epoch ms, ASCII digits);
#: ``produce`` and ``replay`` set it, and the sources read records in its order.
EVENT_TIME_HEADER = "event-time"
#: How long polled records wait for a partition that has records to read but gives
#: none (e.g. one that ends with a transaction marker) before they go without it.
HOLD_LIMIT_S = 1.0

Partition = tuple[str, int]
#: (time, is an event, topic, partition, offset): labels before events of the same time.
OrderKey = tuple[int, bool, str, int, int]


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
                items[n] = ((latest, *key[1:]), record)
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
