"""A replay's records: read from the files, timed, merged into event-time order, cut to a range.

The events and labels of one file (or of an events file and a labels file)
are merged into event-time order (each label by its own ``timestamp``). The
ordering is stable: records with equal times keep their file order, and the
events file comes before the labels file. A line that cannot be parsed, or
has no usable timestamp, takes the time of the line before it in its file (at
the top of a file, the file's first usable time), so it is still sent and the
worker dead-letters it with a reason. A row the reader refuses (a
:class:`stream.sources.BadRow`) becomes a line for the dead-letter topic.

Examples
--------
>>> lines = [b'{"event_id": "e2", "timestamp": 2000, "user_id": "u", "item_id": "i"}',
...          b'{"event_id": "e1", "timestamp": 1000, "user_id": "u", "item_id": "i"}',
...          b'{oops',
...          b'{"event_id": "e1", "timestamp": 1500, "label": true}']
>>> [(line.time_ms, line.kind) for line in merge(timed_lines(lines))]
[(1000, 'events'), (1000, 'events'), (1500, 'labels'), (2000, 'events')]
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from streamlearn.features.schema import record_kind, to_epoch_ms
from streamlearn.stream.outputs import DeadLetter
from streamlearn.stream.replay_pacing import MAX_MS, MIN_MS
from streamlearn.stream.sources import BadRow, read_records

__all__ = [
    "Kind",
    "Line",
    "ReplayPlan",
    "in_range",
    "merge",
    "plan_replay",
    "record_time",
    "timed_lines",
]

Kind = Literal["events", "labels", "dead_letter"]


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
    line_kind: Kind
    own: int | None
    refused: str | None
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
