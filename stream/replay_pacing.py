"""When a replay sends each record: event-time gaps turned into wall-clock waits.

With a speed factor ``F`` the wall time between two sends is the event-time
gap divided by ``F``; with ``max`` (None) records go out as fast as the
producer takes them. A gap longer than ``max_gap_s`` of wall time is shortened
to it, and :func:`gap_notice` says so once. Deadlines are absolute from the
first send, so a late send does not push the later ones back. Also the time
words of the replay command: speed and time bounds parsed, times and spans printed.

Examples
--------
>>> send_offsets([1000, 1000, 1500, 2000], speed=1000.0)
[0.0, 0.0, 0.0005, 0.001]
>>> send_offsets([0, 60_000, 86_400_000], speed=60.0, max_gap_s=5.0)
[0.0, 1.0, 6.0]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

__all__ = [
    "MAX_MS",
    "MIN_MS",
    "duration",
    "gap_notice",
    "iso",
    "long_gaps",
    "pace",
    "parse_speed",
    "parse_time",
    "send_offsets",
]

#: Event times that a calendar date holds (years 1 to 9999), in epoch ms.
MIN_MS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp() * 1000)
MAX_MS = int(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp() * 1000)


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
