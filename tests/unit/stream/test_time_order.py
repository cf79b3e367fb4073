"""The sources' event-time order across partitions and topics (:class:`TimeOrder`)."""

from __future__ import annotations

import random

from streamlearn.stream.processor import Record
from streamlearn.stream.time_order import TimeOrder, event_time_headers, order_time

EVENTS, LABELS = "t.events", "t.labels"


def items(topic: str, partition: int, times: list[int], first_offset: int = 0) -> list:
    kind = "events" if topic == EVENTS else "labels"
    return [
        (
            (t, kind == "events", topic, partition, first_offset + n),
            Record(kind, b"", topic, partition, first_offset + n, t),
        )  # fmt: skip
        for n, t in enumerate(times)
    ]


def times(records: list[Record]) -> list[tuple[str, int]]:
    return [(r.kind, r.timestamp_ms) for r in records]  # type: ignore[misc]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_partition_ahead_waits_for_the_other_topic_and_ties_put_labels_first():
    order = TimeOrder()
    both = {(EVENTS, 0), (LABELS, 0)}
    order.add((EVENTS, 0), items(EVENTS, 0, [10, 20, 30, 40]))
    assert order.release(lambda: both) == [], "nothing read from the labels yet"
    order.add((LABELS, 0), items(LABELS, 0, [5, 20]))
    assert times(order.release(lambda: both)) == [("labels", 5), ("events", 10), ("labels", 20)]
    assert order.ahead() == {(EVENTS, 0)} and order.held == 3, "a label at 20 may still come"
    order.add((LABELS, 0), items(LABELS, 0, [35], first_offset=2))
    assert times(order.release(lambda: both)) == [("events", 20), ("events", 30), ("labels", 35)]


def test_a_topic_read_to_its_end_does_not_hold_the_other_back():
    order = TimeOrder()
    order.add((EVENTS, 0), items(EVENTS, 0, [10, 20]))
    order.add((LABELS, 0), items(LABELS, 0, [5]))
    released = order.release(lambda: {(EVENTS, 0)})  # the labels have nothing more to read
    assert times(released) == [("labels", 5), ("events", 10), ("events", 20)]
    assert order.held == 0 and order.ahead() == set()


def test_records_wait_for_a_partition_that_has_records_to_read_until_it_gives_them():
    order = TimeOrder()
    behind = {(EVENTS, 0), (EVENTS, 1)}
    order.add((EVENTS, 0), items(EVENTS, 0, [10, 50]))
    order.add((EVENTS, 1), items(EVENTS, 1, [20]))
    assert times(order.release(lambda: behind)) == [("events", 10), ("events", 20)]
    assert order.release(lambda: behind) == [], "events:1 may still give a record before 50"
    order.add((EVENTS, 1), items(EVENTS, 1, [60], first_offset=1))
    assert times(order.release(lambda: {(EVENTS, 0)})) == [("events", 50)]
    assert times(order.release(lambda: set())) == [("events", 60)]


def test_a_partition_that_gives_nothing_though_behind_is_passed_over_after_the_hold_limit():
    clock = Clock()
    order = TimeOrder(hold_limit_s=1.0, clock=clock)
    behind = {(EVENTS, 0), (LABELS, 0)}
    order.add((EVENTS, 0), items(EVENTS, 0, [10]))
    assert order.release(lambda: behind) == []
    clock.now = 0.9
    assert order.release(lambda: behind) == []
    clock.now = 1.1
    assert times(order.release(lambda: behind)) == [("events", 10)]
    order.add((EVENTS, 0), items(EVENTS, 0, [20], first_offset=1))
    assert times(order.release(lambda: behind)) == [("events", 20)], "still passed over"
    order.add((LABELS, 0), items(LABELS, 0, [30]))
    order.add((EVENTS, 0), items(EVENTS, 0, [40], first_offset=2))
    assert times(order.release(lambda: behind)) == [("labels", 30)], "waited for again"


def test_a_partition_whose_time_goes_back_is_released_in_offset_order_and_never_stalls():
    order = TimeOrder()
    both = {(EVENTS, 0), (EVENTS, 1)}
    order.add((EVENTS, 0), items(EVENTS, 0, [10, 10_000, 20, 30]))
    order.add((EVENTS, 1), items(EVENTS, 1, [15, 25]))
    released = order.release(lambda: both)
    assert [(r.partition, r.offset) for r in released] == [(0, 0), (1, 0), (1, 1)]
    released = order.release(lambda: {(EVENTS, 0)})  # events:1 read to its end
    assert [r.offset for r in released] == [1, 2, 3], "the record at 10000 keeps its followers"


def test_revoked_partitions_and_a_rewind_drop_what_they_held():
    order = TimeOrder()
    order.add((EVENTS, 0), items(EVENTS, 0, [10, 20]))
    order.add((EVENTS, 1), items(EVENTS, 1, [5]))
    order.forget([(EVENTS, 0)])
    assert times(order.release(lambda: {(EVENTS, 1)})) == [("events", 5)]
    order.add((EVENTS, 1), items(EVENTS, 1, [30], first_offset=1))
    order.clear()
    assert order.held == 0 and order.release(lambda: set()) == []


def test_any_fetch_pattern_gives_the_one_event_time_order_of_all_partitions():
    rng = random.Random(11)
    streams = {}
    for topic in (EVENTS, LABELS):
        for partition in range(4):
            stamps = sorted(rng.randrange(0, 5_000) for _ in range(rng.randrange(0, 60)))
            streams[(topic, partition)] = items(topic, partition, stamps)
    expected = sorted(item for stream in streams.values() for item in stream)
    for _trial in range(20):
        order = TimeOrder()
        read = dict.fromkeys(streams, 0)
        out: list[Record] = []

        def behind(read=read) -> set:
            return {p for p, n in read.items() if n < len(streams[p])}

        paused: set = set()
        while behind() or order.held:
            fetchable = [p for p in behind() if p not in paused]
            for p in rng.sample(fetchable, k=min(len(fetchable), rng.randrange(1, 4))):
                n = rng.randrange(1, 40)
                order.add(p, streams[p][read[p] : read[p] + n])
                read[p] = min(read[p] + n, len(streams[p]))
            out += order.release(behind)
            paused = order.ahead()
        assert [r.source for r in out] == [record.source for _, record in expected]


def test_the_event_time_header_orders_a_record_and_the_kafka_timestamp_stands_in_for_it():
    assert order_time(event_time_headers(1_767_225_600_000), 99) == 1_767_225_600_000
    assert order_time([("other", b"5")], 99) == 99
    assert order_time([("event-time", None)], 99) == 99
    assert order_time(None, -1) == 0
