"""Event-time watermarks that a few outliers cannot move.

A partition's watermark says "up to this event time, its events are in": it
decides when a pending label has waited long enough for its event and when an
event's window for an implicit negative has passed. Taking the newest event
time seen would let one event dated hours ahead (still inside
``Limits.max_future_ms``) move it at once and expire every label that waits.

So the watermark of a partition is a low quantile of its recent event times,
as stream processors bound the lateness they allow: the ``quantile`` (lower
nearest rank) of its last ``window`` event times, taken after every event and
never moving back; below 1 the quantile is never the newest time in the
window, so a partition's first event alone does not set it either. With the
default median of the last 32 events, up to 16 outliers among 32 consecutive
events leave it where the others put it; it lags the newest event time by
about half the window (16 events). It depends only on the
records in their order (not on the wall clock, not on how they are cut into
batches), so a replay of a historical file gets the same watermarks as the
live stream did, and a backtest stays reproducible bit for bit.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

__all__ = ["PartitionClock"]


class PartitionClock:
    """The event-time watermark of one partition.

    Parameters
    ----------
    window
        How many of the partition's latest event times the watermark looks at.
    quantile
        Which of them, as a fraction from the oldest (0 < q <= 1): the
        ``ceil(q * n)``-th smallest of the ``n`` in the window, and below 1
        never the newest of them (so one event alone, the first of a
        partition or after a restart, does not set it). ``1.0`` is the newest
        event time: no protection against outliers.

    Examples
    --------
    >>> clock = PartitionClock(window=5, quantile=0.5)
    >>> clock.observe(1000)
    >>> clock.watermark_ms
    -1
    >>> for t in (2000, 3000):
    ...     clock.observe(t)
    >>> clock.watermark_ms
    2000

    One event dated far ahead does not move it; the events after it do, as
    far as their own times go:

    >>> clock.observe(72_000_000)
    >>> clock.watermark_ms
    2000
    >>> clock.observe(4000)
    >>> clock.watermark_ms
    3000

    It never moves back, whatever comes late:

    >>> for t in (10, 20, 30):
    ...     clock.observe(t)
    >>> clock.watermark_ms
    3000
    """

    __slots__ = ("_recent", "_rank", "_sorted", "watermark_ms", "window")

    def __init__(self, window: int = 32, quantile: float = 0.5) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        self.window = window
        self._rank = quantile
        self._recent: deque[int] = deque()
        self._sorted: list[int] = []
        #: The partition's watermark (-1: no event yet).
        self.watermark_ms = -1

    def observe(self, timestamp_ms: int) -> None:
        """Take one event's time into the window and move the watermark if it rises."""
        self._recent.append(timestamp_ms)
        bisect.insort(self._sorted, timestamp_ms)
        if len(self._recent) > self.window:
            oldest = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        n = len(self._sorted)
        rank = (
            math.ceil(self._rank * n)
            if self._rank >= 1.0
            else min(math.ceil(self._rank * n), n - 1)
        )
        if rank >= 1 and self._sorted[rank - 1] > self.watermark_ms:
            self.watermark_ms = self._sorted[rank - 1]
