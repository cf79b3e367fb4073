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

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson
from rich.table import Table

from features.schema import record_kind, to_epoch_ms
from stream.config import Settings
from stream.kafka_io import KafkaSink
from stream.processor import DeadLetter
from stream.produce import event_key
from stream.sources import BadRow, read_records
from stream.time_order import event_time_headers
from stream.topics import ensure_topics, topic_plan

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

Kind = Literal["events", "labels", "dead_letter"]

#: Event times that a calendar date holds (years 1 to 9999), in epoch ms.
MIN_MS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp() * 1000)
MAX_MS = int(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Line:
    """One record to send: its event time (own or inherited), topic kind and bytes.

    ``refused`` is the reason of a row the reader refused (sent to the dead-letter topic).
    """

    time_ms: int | None
    kind: Kind
    value: bytes
    parsed: bool
    refused: str | None = None


# ---------------------------------------------------------------------- parsing


def record_time(value: bytes) -> int | None:
    """The record's own event time in epoch ms, or None when it has no usable one.

    >>> record_time(b'{"timestamp": "1970-01-01T00:00:01Z"}'), record_time(b'{"timestamp": 5}')
    (1000, 5)
    >>> record_time(b"{oops"), record_time(b'{"timestamp": "yesterday"}'), record_time(b"[]")
    (None, None, None)
    >>> record_time(b'{"timestamp": 1e300}')  # past year 9999: no date holds it
    """
    return _inspect(value)[0]


def _inspect(value: bytes) -> tuple[int | None, Kind]:
    """Event time and topic kind of a line, parsed once (``route``'s rule for the kind)."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, "events"
    if not isinstance(obj, dict):
        return None, "events"
    kind: Kind = record_kind(obj)
    try:
        ms = to_epoch_ms(obj.get("timestamp"))
    except (ValueError, OverflowError):
        return None, kind
    return (ms if MIN_MS <= ms <= MAX_MS else None), kind


def parse_speed(text: str) -> float | None:
    """A speed factor: ``max`` (None: no pacing) or a positive number.

    >>> parse_speed("60"), parse_speed("max"), parse_speed("0.5")
    (60.0, None, 0.5)
    >>> parse_speed("0")
    Traceback (most recent call last):
    ...
    ValueError: speed '0': a positive number (1 = real time, 60 = a minute per second) or max
    """
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = math.nan
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(
            f"speed {text!r}: a positive number (1 = real time, 60 = a minute per second) or max"
        )
    return speed


def parse_time(text: str) -> int:
    """A time bound as epoch ms: digits are epoch ms, else ISO-8601 (UTC if no zone).

    >>> parse_time("1767225600000"), parse_time("2026-01-01T00:00:00Z"), parse_time("2026-01-01")
    (1767225600000, 1767225600000, 1767225600000)
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"time {text!r}: epoch milliseconds or ISO-8601 such as 2026-01-01T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def iso(ms: int | None) -> str:
    """Epoch ms as ISO-8601 UTC with milliseconds; ``-`` for None.

    >>> iso(1000), iso(None), iso(10**20)
    ('1970-01-01T00:00:01.000Z', '-', '100000000000000000000 ms (no calendar date)')
    """
    if ms is None:
        return "-"
    if not MIN_MS <= ms <= MAX_MS:
        return f"{ms} ms (no calendar date)"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def duration(seconds: float) -> str:
    """A wall or event-time span for people: seconds, minutes, hours, days or years.

    >>> duration(42), duration(5400), duration(86400 * 3), duration(86400 * 365.25 * 56)
    ('42 s', '90.0 min', '3.0 days', '56.0 years')
    """
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    if seconds < 2 * 365.25 * 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / (365.25 * 86400):.1f} years"


# ---------------------------------------------------------------------- ordering


def timed_lines(
    raw: Iterable[bytes | BadRow], kind: Kind | None = None, source: str = "file"
) -> list[Line]:
    """The lines of one file with their event times, in file order.

    ``kind`` forces every line to one topic (a labels file); by default each
    line is routed by its content (the rule of :func:`stream.kafka_io.route`). A line
    without a usable time takes the time of the line before it, or the file's
    first usable time at the top; in a file without any, the time stays None.
    A :class:`BadRow` becomes a dead letter (``source`` names the file in it).

    >>> bad = BadRow("not_finite", "line 3, column 'x': 'nan' ...", b'{"x":"nan"}', 3)
    >>> [(x.time_ms, x.kind, x.refused) for x in timed_lines([b'{"timestamp": 7}', bad])]
    [(7, 'events', None), (7, 'dead_letter', 'not_finite')]
    """
    lines: list[Line] = []
    previous: int | None = None
    leading: list[tuple[bytes, Kind, str | None]] = []
    for item in raw:
        if isinstance(item, BadRow):
            letter = DeadLetter(item.reason, item.detail, item.value, source, 0, item.line)
            value, own, line_kind, refused = letter.to_json(), None, "dead_letter", item.reason
        else:
            own, routed = _inspect(item)
            value, line_kind, refused = item, kind or routed, None
        if own is None and previous is None:
            leading.append((value, line_kind, refused))
            continue
        if previous is None:
            lines += [Line(own, k, v, False, r) for v, k, r in leading]
            leading = []
        if own is not None:
            previous = own
        lines.append(Line(previous, line_kind, value, own is not None, refused))
    lines += [Line(None, k, v, False, r) for v, k, r in leading]
    return lines


def merge(*files: Sequence[Line]) -> list[Line]:
    """Every line of the files in event-time order, stable (file order, then first file first).

    Lines without any time (a file with no usable timestamp) go first.
    """
    lines = [line for lines in files for line in lines]
    lines.sort(key=lambda line: -math.inf if line.time_ms is None else line.time_ms)
    return lines


def in_range(
    lines: Iterable[Line], since_ms: int | None = None, until_ms: int | None = None
) -> tuple[list[Line], int]:
    """The lines with ``since_ms <= time < until_ms``, and how many were left out.

    Lines without any time are kept: they cannot be placed, and are sent to be
    dead-lettered.

    >>> kept, skipped = in_range([Line(t, "events", b"", True) for t in (1, 2, 3)], 2, 3)
    >>> [line.time_ms for line in kept], skipped
    ([2], 2)
    """
    kept: list[Line] = []
    skipped = 0
    for line in lines:
        t = line.time_ms
        if t is not None and (
            (since_ms is not None and t < since_ms) or (until_ms is not None and t >= until_ms)
        ):
            skipped += 1
        else:
            kept.append(line)
    return kept, skipped


# ---------------------------------------------------------------------- pacing


def send_offsets(
    times_ms: Sequence[int | None], speed: float | None, max_gap_s: float | None = None
) -> list[float]:
    """When to send each record, in wall seconds after the first send.

    The event-time gap from the first record divided by ``speed``; all zeros
    for ``max`` (None). Times must be in order; missing times count as the first.
    With ``max_gap_s``, each gap between consecutive times waits at most that
    long in wall time (the later records move earlier by what was cut).

    >>> send_offsets([1000, 1000, 4000, 61000], speed=60.0)
    [0.0, 0.0, 0.05, 1.0]
    >>> send_offsets([1000, 9000], speed=None)
    [0.0, 0.0]
    """
    if speed is None:
        return [0.0] * len(times_ms)
    offsets: list[float] = []
    previous: int | None = None
    offset = 0.0
    for t in times_ms:
        if t is not None:
            if previous is not None:
                wait = (t - previous) / 1000.0 / speed
                offset += wait if max_gap_s is None else min(wait, max_gap_s)
            previous = t
        offsets.append(offset)
    return offsets


def long_gaps(
    times_ms: Sequence[int | None], speed: float | None, max_gap_s: float | None
) -> list[tuple[int, int]]:
    """The consecutive times ``(before, after)`` whose gap would wait over ``max_gap_s``.

    >>> long_gaps([0, 1000, 1_767_225_600_000], speed=60.0, max_gap_s=60.0)
    [(1000, 1767225600000)]
    """
    if speed is None or max_gap_s is None:
        return []
    known = [t for t in times_ms if t is not None]
    return [
        (a, b)
        for a, b in zip(known, known[1:], strict=False)
        if (b - a) / 1000.0 / speed > max_gap_s
    ]


def gap_notice(
    times_ms: Sequence[int | None], speed: float | None, max_gap_s: float | None
) -> str | None:
    """What a replay says, once, about the gaps it shortens; None when there is none.

    >>> print(gap_notice([0, 1_767_225_600_000], speed=60.0, max_gap_s=60.0))
    ... # doctest: +NORMALIZE_WHITESPACE
    a gap of 56.0 years in event time (1970-01-01T00:00:00.000Z to 2026-01-01T00:00:00.000Z)
    would wait 340.9 days at 60x; 1 gap over 60 s of wall time is shortened to 60 s (--max-gap)
    """
    gaps = long_gaps(times_ms, speed, max_gap_s)
    if not gaps or speed is None or max_gap_s is None:
        return None
    before, after = max(gaps, key=lambda gap: gap[1] - gap[0])
    span = (after - before) / 1000.0
    many = "1 gap" if len(gaps) == 1 else f"{len(gaps):,} gaps"
    verb = "is" if len(gaps) == 1 else "are"
    return (
        f"a gap of {duration(span)} in event time ({iso(before)} to {iso(after)}) would wait"
        f" {duration(span / speed)} at {speed:g}x; {many} over {duration(max_gap_s)} of wall"
        f" time {verb} shortened to {duration(max_gap_s)} (--max-gap)"
    )


def pace(
    offsets: Sequence[float],
    send: Callable[[int], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Call ``send(i)`` for each record at ``start + offsets[i]``; returns the start time.

    Deadlines are absolute (from the start, on a monotonic ``clock``): a late
    send or a long sleep does not push the later ones back. A record whose
    deadline has passed goes at once; there is no sleep at all for zero offsets.

    >>> now = [0.0]
    >>> def sleep(s): now[0] += s
    >>> sent = []
    >>> _ = pace([0.0, 0.5, 0.5, 2.0], lambda i: sent.append((i, now[0])), lambda: now[0], sleep)
    >>> sent
    [(0, 0.0), (1, 0.5), (2, 0.5), (3, 2.0)]
    """
    start = clock()
    for index, offset in enumerate(offsets):
        if offset > 0:
            delay = start + offset - clock()
            if delay > 0:
                sleep(delay)
        send(index)
    return start


# ---------------------------------------------------------------------- replay


@dataclass
class ReplayPlan:
    """What a replay sends, in order, and what it left out."""

    lines: list[Line]
    skipped: int = 0

    @property
    def unparseable(self) -> int:
        """Lines sent to be dead-lettered by the worker (no usable time, or not JSON)."""
        return sum(1 for line in self.lines if not line.parsed and line.refused is None)

    @property
    def refused(self) -> Counter[str]:
        """Rows the reader refused (sent to the dead-letter topic), by reason."""
        return Counter(line.refused for line in self.lines if line.refused is not None)

    @property
    def first_ms(self) -> int | None:
        return next((line.time_ms for line in self.lines if line.time_ms is not None), None)

    @property
    def last_ms(self) -> int | None:
        return next(
            (line.time_ms for line in reversed(self.lines) if line.time_ms is not None), None
        )


def plan_replay(
    path: Path,
    labels: Path | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> ReplayPlan:
    """Read, merge into event-time order and filter by time range (no Kafka).

    Raises :class:`stream.sources.SourceError` for a file that cannot be read at all.
    """
    files = [timed_lines(read_records(path), source=path.name)]
    if labels is not None:
        files.append(timed_lines(read_records(labels), kind="labels", source=labels.name))
    lines, skipped = in_range(merge(*files), since_ms, until_ms)
    return ReplayPlan(lines, skipped)


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
