"""The event-time watermark of a partition: monotonic, deterministic, not moved by outliers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlearn.stream.watermark import PartitionClock

T0 = 1_767_225_600_000
HOUR = 3_600_000
times = st.lists(st.integers(T0 - 48 * HOUR, T0 + 48 * HOUR), max_size=200)
windows = st.integers(1, 64)
quantiles = st.sampled_from([0.05, 0.25, 0.5, 0.75, 0.99])


def marks(clock: PartitionClock, values: list[int]) -> list[int]:
    seen = []
    for t in values:
        clock.observe(t)
        seen.append(clock.watermark_ms)
    return seen


@settings(max_examples=200, deadline=None)
@given(values=times, window=windows, quantile=quantiles)
def test_the_watermark_never_moves_back_and_is_never_set_by_one_event_alone(
    values, window, quantile
):
    seen = marks(PartitionClock(window, quantile), values)
    assert seen == sorted(seen), "monotonic"
    for n, mark in enumerate(seen):
        so_far = sorted(values[: n + 1])
        assert mark == -1 or mark in so_far
        assert mark <= (so_far[-2] if len(so_far) > 1 else -1), "never the newest time alone"


@settings(max_examples=100, deadline=None)
@given(values=times, window=windows, quantile=quantiles)
def test_the_same_event_times_give_the_same_watermarks(values, window, quantile):
    assert marks(PartitionClock(window, quantile), values) == marks(
        PartitionClock(window, quantile), values
    )


@settings(max_examples=100, deadline=None)
@given(values=times, window=windows)
def test_quantile_one_is_the_newest_event_time(values, window):
    seen = marks(PartitionClock(window, 1.0), values)
    assert seen == [max(values[: n + 1]) for n in range(len(values))]


def test_outliers_fewer_than_half_the_window_leave_the_median_with_the_stream():
    clock = PartitionClock(window=32, quantile=0.5)
    for n in range(200):
        future = n % 5 == 4  # one event in five dated 20 h ahead
        clock.observe(T0 + 20 * HOUR if future else T0 + n * 1000)
        assert clock.watermark_ms <= T0 + n * 1000
    assert clock.watermark_ms >= T0 + 150_000, "and it follows the stream's own time"


@pytest.mark.parametrize(("window", "quantile"), [(0, 0.5), (8, 0.0), (8, 1.5)])
def test_a_bad_window_or_quantile_is_refused(window, quantile):
    with pytest.raises(ValueError, match="window|quantile"):
        PartitionClock(window, quantile)
