"""Drift of the score distribution and of the positive rate.

The positive rate is what the caller counts as positive: the monitor gives
``score > model.threshold``, a fixed reference, not the decision policy's moving
threshold (see :class:`metrics.monitor.Monitor`). Bounded windows
(:mod:`metrics.drift_windows`), statistics computed only when asked
(:meth:`PredictionDrift.report`), so the per-event cost of ``update`` is a deque
append.

Examples
--------
>>> drift = PredictionDrift(reference_size=10, window_size=10)
>>> for i in range(20):
...     drift.update(score=i / 20, decision=i >= 10)
>>> drift.report().ks
1.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streamlearn.metrics.drift_statistics import (
    FloatArray,
    bin_counts,
    float_array,
    ks_statistic,
    psi,
    quantile_edges,
)
from streamlearn.metrics.drift_windows import Mode, Windows, check_min_current, stale

__all__ = ["PredictionDrift", "PredictionDriftReport"]


@dataclass(frozen=True)
class PredictionDriftReport:
    """Prediction drift between the reference and current windows.

    Statistics are None until the reference is full and the current window
    holds at least ``min_current`` predictions (rates: until their window has one).
    """

    n_reference: int
    n_current: int
    psi: float | None
    ks: float | None
    positive_rate: float | None
    reference_positive_rate: float | None
    positive_rate_ratio: float | None

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain dict."""
        return asdict(self)


class PredictionDrift:
    """Drift of the score distribution and of the positive rate.

    ``psi`` bins the scores on the reference's quantile edges; ``ks`` is the
    exact two-sample KS statistic; ``positive_rate_ratio`` is the current
    positive rate over the reference one, each rate floored at half a count of
    the smaller window (so an empty class does not divide by zero, and two
    windows without positives give 1). A spam filter that predicted 5% spam and
    now predicts 80% shows a ratio of 16: a broken pipeline, not a new world.

    Parameters
    ----------
    reference_size
        Predictions in the reference window.
    window_size
        Predictions in the current window.
    mode
        ``"first_n"`` or ``"trailing"`` (see :mod:`metrics.drift_windows`).
    n_bins
        Quantile bins for the PSI.
    every
        Recompute in :meth:`report` only when at least this many updates
        happened since the last computation (1: on every call that follows an update).
    min_current
        Predictions the current window needs before statistics are reported;
        defaults to ``window_size``.

    Examples
    --------
    >>> drift = PredictionDrift(reference_size=100, window_size=100)
    >>> for i in range(100):
    ...     drift.update(score=(i % 10) / 10, decision=i % 20 == 0)
    >>> drift.report().psi is None
    True
    >>> for i in range(100):
    ...     drift.update(score=0.9, decision=i % 5 != 0)
    >>> report = drift.report()
    >>> report.positive_rate, report.reference_positive_rate, report.positive_rate_ratio
    (0.8, 0.05, 16.0)
    >>> report.psi > 0.25, report.ks
    (True, 0.9)
    """

    def __init__(
        self,
        reference_size: int = 1000,
        window_size: int = 1000,
        mode: Mode = "first_n",
        n_bins: int = 10,
        every: int = 1,
        min_current: int | None = None,
    ) -> None:
        self.min_current = check_min_current(reference_size, window_size, min_current)
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.mode = mode
        self.n_bins = n_bins
        self.every = every
        self._scores = Windows(reference_size, window_size, mode)
        self._decisions = Windows(reference_size, window_size, mode)
        self.n = 0
        self._computed_at = -1
        self._report: PredictionDriftReport | None = None
        self._ref_key = -1
        self._ref_sorted: FloatArray = np.empty(0)
        self._ref_edges: list[float] = []
        self._ref_bins: list[int] = []

    def update(self, score: float, decision: bool) -> None:
        """Add one prediction: the model's score and whether it counts as positive.

        The monitor passes ``score > model.threshold`` as ``decision`` (a fixed
        reference, so that an adaptive policy does not move the rate by itself).
        """
        self._scores.append(float(score))
        self._decisions.append(1 if decision else 0)
        self.n += 1

    def reset(self) -> None:
        """Forget both windows (e.g. on a model version change)."""
        self._scores.clear()
        self._decisions.clear()
        self._report = None
        self._computed_at = -1

    def report(self, refresh: bool = False) -> PredictionDriftReport:
        """The drift statistics, recomputed at most every ``every`` updates."""
        if refresh or self._report is None or stale(self.n, self._computed_at, self.every):
            self._report = self._compute()
            self._computed_at = self.n
        return self._report

    @property
    def psi(self) -> float | None:
        """PSI of the current scores against the reference's quantile bins."""
        return self.report().psi

    @property
    def ks(self) -> float | None:
        """KS statistic between the reference and current scores."""
        return self.report().ks

    @property
    def positive_rate(self) -> float | None:
        """Share of positives in the current window."""
        return self.report().positive_rate

    @property
    def reference_positive_rate(self) -> float | None:
        """Share of positives in the reference window."""
        return self.report().reference_positive_rate

    @property
    def positive_rate_ratio(self) -> float | None:
        """Current over reference positive rate (both floored at half a count)."""
        return self.report().positive_rate_ratio

    def _reference_stats(self) -> None:
        if self._ref_key != self._scores.reference_version:
            self._ref_sorted = np.sort(float_array(self._scores.reference))
            self._ref_edges = quantile_edges(self._ref_sorted.tolist(), self.n_bins)
            self._ref_bins = bin_counts(self._ref_sorted, self._ref_edges)
            self._ref_key = self._scores.reference_version

    def _compute(self) -> PredictionDriftReport:
        n_ref = len(self._decisions.reference)
        n_cur = len(self._decisions.current)
        pos_ref = sum(self._decisions.reference)
        pos_cur = sum(self._decisions.current)
        ref_rate = pos_ref / n_ref if n_ref else None
        cur_rate = pos_cur / n_cur if n_cur else None
        value_psi = value_ks = ratio = None
        if self._scores.ready(self.min_current):
            self._reference_stats()
            cur_sorted = np.sort(float_array(self._scores.current))
            value_psi = psi(self._ref_bins, bin_counts(cur_sorted, self._ref_edges))
            value_ks = ks_statistic(self._ref_sorted, cur_sorted, assume_sorted=True)
            floor = 0.5 / min(n_ref, n_cur)
            ratio = max(pos_cur / n_cur, floor) / max(pos_ref / n_ref, floor)
        return PredictionDriftReport(
            n_reference=n_ref,
            n_current=n_cur,
            psi=value_psi,
            ks=value_ks,
            positive_rate=cur_rate,
            reference_positive_rate=ref_rate,
            positive_rate_ratio=ratio,
        )
