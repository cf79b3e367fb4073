"""Replay a historical file into Kafka, in event-time order, at a chosen speed.

The events and labels of one file (or of an events file and a labels file) are
merged into event-time order (each label by its own ``timestamp``), cut to a
time range, and sent to the events and labels topics keyed by ``event_id``,
so a label lands on its event's partition, each with its event time in the
``event-time`` header: a worker catching up reads both topics in that order.
With a speed factor ``F`` the wall time between two sends is the event-time
gap divided by ``F``; with ``max`` records go out as fast as the producer
takes them.

The ordering is stable: records with equal times keep their file order, and
the events file comes before the labels file. A line that cannot be parsed, or
has no usable timestamp, is still sent, right after the line before it in its
file (it takes that line's time; at the top of a file, the file's first
usable time), so the worker dead-letters it with a reason: nothing is dropped
silently. Such lines are counted as ``unparseable`` in the summary. An event
time that no calendar date holds (past year 9999) is no usable time either.

A CSV or Parquet row that the reader refuses (a :class:`stream.sources.BadRow`:
``nan`` in a cell, more cells than columns, ...) cannot be sent as an event:
it goes to the dead-letter topic, in the worker's dead-letter format (reason,
detail, the file as topic, its line as offset, the row's content), at its
place in the order, and is counted by reason in the summary.

A gap in event time longer than ``max_gap_s`` of wall time at the chosen speed
(a ``timestamp: 0`` among this year's events: decades) is shortened to
``max_gap_s``; :func:`gap_notice` says so before the replay starts.

The whole file is read and sorted in memory: fine up to a few million lines
(each line is kept as bytes plus a small tuple). Larger histories should be
split by time range (``since``/``until``) or pre-sorted.

The files are read and ordered by :mod:`stream.replay_files`, the sends paced
by :mod:`stream.replay_pacing`; this module sends them to Kafka and keeps
their public names.

Examples
--------
>>> lines = [b'{"event_id": "e2", "timestamp": 2000, "user_id": "u", "item_id": "i"}',
...          b'{"event_id": "e1", "timestamp": 1000, "user_id": "u", "item_id": "i"}',
...          b'{oops',
...          b'{"event_id": "e1", "timestamp": 1500, "label": true}']
>>> ordered = merge(timed_lines(lines))
>>> [(line.time_ms, line.kind, line.parsed) for line in ordered]
[(1000, 'events', True), (1000, 'events', False), (1500, 'labels', True), (2000, 'events', True)]
>>> send_offsets([line.time_ms for line in ordered], speed=1000.0)
[0.0, 0.0, 0.0005, 0.001]
>>> send_offsets([0, 60_000, 86_400_000], speed=60.0, max_gap_s=5.0)
[0.0, 1.0, 6.0]
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from rich.table import Table

from streamlearn.stream.config import Settings
from streamlearn.stream.kafka_io import KafkaSink
from streamlearn.stream.produce import event_key
from streamlearn.stream.replay_files import (
    Line,
    ReplayPlan,
    in_range,
    merge,
    plan_replay,
    record_time,
    timed_lines,
)
from streamlearn.stream.replay_pacing import (
    duration,
    gap_notice,
    iso,
    long_gaps,
    pace,
    parse_speed,
    parse_time,
    send_offsets,
)
from streamlearn.stream.time_order import event_time_headers
from streamlearn.stream.topics import ensure_topics, topic_plan

__all__ = [
    "Line",
    "ReplayPlan",
    "ReplaySummary",
    "gap_notice",
    "in_range",
    "merge",
    "pace",
    "parse_speed",
    "parse_time",
    "plan_replay",
    "record_time",
    "replay",
    "send_offsets",
    "timed_lines",
]


@dataclass
class ReplaySummary:
    """What a replay did, for the closing table."""

    sent: Counter[str] = field(default_factory=Counter)
    unparseable: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    wall_seconds: float = 0.0
    speed: float | None = None
    max_gap_s: float | None = None
    gaps_shortened: int = 0

    @property
    def achieved_speed(self) -> float | None:
        """Event time covered per second of wall time."""
        if self.first_ms is None or self.last_ms is None or self.wall_seconds <= 0:
            return None
        return (self.last_ms - self.first_ms) / 1000.0 / self.wall_seconds

    def table(self) -> Table:
        table = Table(title="replay summary", show_header=False)
        table.add_column("what")
        table.add_column("value", justify="right")
        for topic, count in self.sent.items():
            table.add_row(f"sent to {topic}", f"{count:,}")
        table.add_row("unparseable (sent, to be dead-lettered)", f"{self.unparseable:,}")
        for reason, count in sorted(self.refused.items()):
            table.add_row(f"rows refused: {reason} (sent to dead-letter)", f"{count:,}")
        table.add_row("skipped (outside the time range)", f"{self.skipped:,}")
        table.add_row("first event time", iso(self.first_ms))
        table.add_row("last event time", iso(self.last_ms))
        table.add_row("wall seconds", f"{self.wall_seconds:.2f}")
        table.add_row("requested speed", "max" if self.speed is None else f"{self.speed:g}x")
        if self.gaps_shortened:
            table.add_row(
                f"gaps shortened to {duration(self.max_gap_s or 0.0)}", f"{self.gaps_shortened:,}"
            )
        achieved = self.achieved_speed
        table.add_row("achieved speed", "-" if achieved is None else f"{achieved:,.1f}x")
        return table


def replay(
    path: Path,
    settings: Settings,
    labels: Path | None = None,
    speed: float | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    on_send: Callable[[int], None] | None = None,
    plan: ReplayPlan | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    max_gap_s: float | None = 60.0,
) -> ReplaySummary:
    """Send a file's records to Kafka in event-time order, paced by ``speed`` (None: max).

    Parameters
    ----------
    path, labels
        The events file (events and labels mixed, or inline labels) and an
        optional labels file: JSON lines, CSV or Parquet.
    settings
        Kafka connection and topic names.
    speed
        Event-time seconds per wall second; None sends as fast as possible.
    since_ms, until_ms
        Keep records with ``since_ms <= event time < until_ms``.
    on_send
        Called with the number of records just sent (progress).
    plan
        An already computed :func:`plan_replay` (the file is then not read again).
    max_gap_s
        The longest wall-time wait for one gap in event time (None: no bound);
        longer gaps are shortened to it (:func:`gap_notice` says which).
    """
    if plan is None:
        plan = plan_replay(path, labels, since_ms, until_ms)
    kafka = settings.kafka
    if kafka.topics.create:
        ensure_topics(kafka, topic_plan(kafka))
    topics = {
        "events": kafka.topics.events,
        "labels": kafka.topics.labels,
        "dead_letter": kafka.topics.dead_letter,
    }
    lines = plan.lines
    times = [line.time_ms for line in lines]
    summary = ReplaySummary(
        sent=Counter({topics["events"]: 0, topics["labels"]: 0}),
        unparseable=plan.unparseable,
        refused=plan.refused,
        skipped=plan.skipped,
        first_ms=plan.first_ms,
        last_ms=plan.last_ms,
        speed=speed,
        max_gap_s=max_gap_s,
        gaps_shortened=len(long_gaps(times, speed, max_gap_s)),
    )
    sink = KafkaSink(kafka)
    try:

        def send(index: int) -> None:
            line = lines[index]
            topic = topics[line.kind]
            if line.refused is not None:
                letter = orjson.loads(line.value)
                key = f"{letter['topic']}:{letter['partition']}:{letter['offset']}".encode()
                sink.send(topic, key, line.value, [("reason", line.refused.encode())])
            else:
                sink.send(
                    topic, event_key(line.value), line.value, event_time_headers(line.time_ms)
                )
            summary.sent[topic] += 1
            if on_send is not None:
                on_send(1)

        start = pace(send_offsets(times, speed, max_gap_s), send, clock, sleep)
        sink.flush()
        summary.wall_seconds = clock() - start
    finally:
        sink.close()
    return summary
