"""Drift statistics: population stability, two-sample KS, categorical shift, detectors.

The functions are pure and work on counts or plain sequences. The classes keep
bounded windows and compute their statistics only when asked (``report``), so
the per-event cost of ``update`` is a deque append.

Two ways to choose the reference window (``mode``):

- ``"first_n"``: the first ``reference_size`` observations (after construction or
  :meth:`reset`, e.g. when the model version changes), then frozen; the current
  window holds the last ``window_size`` observations after them.
- ``"trailing"``: the ``reference_size`` observations just before the current
  window of the last ``window_size`` observations; both slide.

Examples
--------
>>> round(psi([25, 25, 25, 25], [25, 25, 25, 25]), 6)
0.0
>>> ks_statistic([1, 2, 3, 4], [3, 4, 5, 6])
0.5
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from operator import is_not
from typing import Any, Literal

import numpy as np
from river import drift as river_drift

__all__ = [
    "BINARY_DETECTORS",
    "DETECTORS",
    "SIGNALS",
    "OTHER",
    "CategoricalShift",
    "ConceptDrift",
    "Detection",
    "FeatureDrift",
    "PredictionDrift",
    "PredictionDriftReport",
    "bin_counts",
    "categorical_shift",
    "concept_signal",
    "ks_statistic",
    "psi",
    "quantile_edges",
]

#: Bucket for categories absent from the reference (or beyond its most frequent ones).
OTHER = "__other__"

#: River detectors available to :class:`ConceptDrift`, by configuration name.
DETECTORS: dict[str, type] = {
    "adwin": river_drift.ADWIN,
    "page_hinkley": river_drift.PageHinkley,
    "hddm_a": river_drift.binary.HDDMA,
    "hddm_w": river_drift.binary.HDDMW,
    "ddm": river_drift.binary.DDM,
}

#: Detectors that take only 0/1 values: they watch the ``error`` signal alone.
BINARY_DETECTORS = frozenset({"hddm_a", "hddm_w", "ddm"})

#: What the concept drift detector is fed per learned label; see :func:`concept_signal`.
SIGNALS = ("error", "brier", "log_loss")


def concept_signal(signal: str, y_true: bool, score: float, threshold: float = 0.5) -> float:
    """The loss of one labelled prediction that a concept drift detector watches.

    ``error`` is the 0/1 error of the decision at ``threshold``, ``brier`` the
    squared error of the score (both in [0, 1], what ADWIN's bound assumes);
    ``log_loss`` is unbounded, so one confident mistake outweighs hundreds of
    labels and the detector's windows never separate cleanly.

    >>> concept_signal("error", True, 0.3), concept_signal("error", False, 0.3)
    (1.0, 0.0)
    >>> concept_signal("brier", True, 0.75)
    0.0625
    >>> round(concept_signal("log_loss", True, 0.5), 4)
    0.6931
    """
    if signal == "error":
        return float((score > threshold) != y_true)
    if signal == "brier":
        return (float(y_true) - score) ** 2
    if signal == "log_loss":
        p = min(max(score, 1e-15), 1 - 1e-15)
        return -math.log(p if y_true else 1 - p)
    raise ValueError(f"unknown signal {signal!r}; choose one of {', '.join(SIGNALS)}")


Mode = Literal["first_n", "trailing"]


def psi(
    reference_counts: Sequence[float], current_counts: Sequence[float], eps: float = 1e-4
) -> float:
    """Population stability index of two histograms over the same bins.

    ``sum((q - p) * ln(q / p))`` over bins, with ``p`` and ``q`` the reference and
    current proportions, each floored at ``eps`` so that empty bins stay finite.
    Common reading: below 0.1 stable, 0.1 to 0.25 moderate shift, above 0.25 major.

    Parameters
    ----------
    reference_counts
        Counts (or weights) per bin in the reference window.
    current_counts
        Counts per bin in the current window, aligned with ``reference_counts``.
    eps
        Floor applied to each proportion.

    Returns
    -------
    float
        The index, 0 for identical proportions, always >= 0.

    Examples
    --------
    >>> psi([50, 50], [50, 50])
    0.0
    >>> round(psi([90, 10], [50, 50]), 4)
    0.8789
    """
    if len(reference_counts) != len(current_counts):
        raise ValueError(
            f"bins differ: {len(reference_counts)} reference vs {len(current_counts)} current"
        )
    ref_total = float(sum(reference_counts))
    cur_total = float(sum(current_counts))
    if ref_total <= 0 or cur_total <= 0:
        raise ValueError("both histograms need a positive total count")
    total = 0.0
    for r, c in zip(reference_counts, current_counts, strict=True):
        p = max(r / ref_total, eps)
        q = max(c / cur_total, eps)
        total += (q - p) * math.log(q / p)
    return total


def quantile_edges(values: Iterable[float], n_bins: int = 10) -> list[float]:
    """Inner bin edges at the quantiles of ``values`` (the reference sample).

    Returns at most ``n_bins - 1`` increasing, distinct edges; repeated values
    (ties, discrete scores) merge bins rather than create empty ones. Use them
    with :func:`bin_counts`, which puts ``x`` in bin ``bisect_right(edges, x)``.

    Examples
    --------
    >>> quantile_edges(range(10), n_bins=5)
    [2, 4, 6, 8]
    >>> quantile_edges([0, 0, 0, 1], n_bins=4)
    [0, 1]
    >>> quantile_edges([], n_bins=4)
    []
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    ordered = sorted(values)
    n = len(ordered)
    edges: list[float] = []
    if n == 0:
        return edges
    for i in range(1, n_bins):
        edge = ordered[min(n - 1, (i * n) // n_bins)]
        if not edges or edge > edges[-1]:
            edges.append(edge)
    return edges


def bin_counts(values: Iterable[float], edges: Sequence[float]) -> list[int]:
    """Counts of ``values`` in the ``len(edges) + 1`` bins cut at ``edges``.

    Examples
    --------
    >>> bin_counts([0.1, 0.5, 0.5, 0.9, 2.0], [0.5, 1.0])
    [1, 3, 1]
    """
    array = values if isinstance(values, np.ndarray) else np.fromiter(values, dtype=float)
    bins = np.searchsorted(np.asarray(edges, dtype=float), array, side="right")
    return np.bincount(bins, minlength=len(edges) + 1).tolist()


def ks_statistic(a: Iterable[float], b: Iterable[float], *, assume_sorted: bool = False) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: sup |F_a(x) - F_b(x)|.

    Exact over the empirical distribution functions; tied values are stepped
    over together, so ties within or across samples are handled.

    Parameters
    ----------
    a, b
        The two samples (non-empty).
    assume_sorted
        Skip sorting when both are already sorted ascending.

    Examples
    --------
    >>> ks_statistic([1, 2, 3], [4, 5, 6])
    1.0
    >>> ks_statistic([1, 1, 2], [1, 2, 2])
    0.3333333333333333
    >>> ks_statistic([0.5, 0.5], [0.5])
    0.0
    """
    xs = _array(a) if assume_sorted else np.sort(_array(a))
    ys = _array(b) if assume_sorted else np.sort(_array(b))
    na, nb = len(xs), len(ys)
    if na == 0 or nb == 0:
        raise ValueError("both samples must be non-empty")
    steps = np.concatenate((xs, ys))
    below_a = np.searchsorted(xs, steps, side="right") / na
    below_b = np.searchsorted(ys, steps, side="right") / nb
    return float(np.max(np.abs(below_a - below_b)))


def _array(values: Iterable[float]) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.astype(float, copy=False)
    return np.fromiter(values, dtype=float)


@dataclass(frozen=True)
class CategoricalShift:
    """Shift between two categorical distributions.

    Attributes
    ----------
    psi
        PSI over the reference's categories plus an :data:`OTHER` bucket for the rest.
    tvd
        Total variation distance, ``0.5 * sum |p - q|`` over the union of categories.
    """

    psi: float
    tvd: float


def categorical_shift(
    ref_counts: Mapping[Any, float], cur_counts: Mapping[Any, float], eps: float = 1e-4
) -> CategoricalShift:
    """PSI and total variation distance between two category histograms.

    Categories of the current window that the reference never saw are pooled
    into one :data:`OTHER` bucket for the PSI (a reference key equal to
    :data:`OTHER` pools with them).

    Examples
    --------
    >>> categorical_shift({"a": 50, "b": 50}, {"b": 5, "a": 5})
    CategoricalShift(psi=0.0, tvd=0.0)
    >>> shift = categorical_shift({"a": 90, "b": 10}, {"a": 50, "c": 50})
    >>> round(shift.psi, 3), shift.tvd
    (5.183, 0.5)
    """
    ref_total = float(sum(ref_counts.values()))
    cur_total = float(sum(cur_counts.values()))
    if ref_total <= 0 or cur_total <= 0:
        raise ValueError("both histograms need a positive total count")
    tvd = 0.0
    for key in set(ref_counts) | set(cur_counts):
        tvd += abs(ref_counts.get(key, 0) / ref_total - cur_counts.get(key, 0) / cur_total)
    pooled: dict[Any, float] = dict.fromkeys(ref_counts, 0.0)
    pooled.setdefault(OTHER, 0.0)
    for key, count in cur_counts.items():
        pooled[key if key in ref_counts else OTHER] += count
    keys = list(pooled)
    ref = [float(ref_counts.get(k, 0)) for k in keys]
    cur = [pooled[k] for k in keys]
    return CategoricalShift(psi=psi(ref, cur, eps=eps), tvd=0.5 * tvd)


class _Windows:
    """A reference window and a current window over one stream of values."""

    def __init__(self, reference_size: int, window_size: int, mode: Mode) -> None:
        if reference_size < 1 or window_size < 1:
            raise ValueError("reference_size and window_size must be >= 1")
        if mode not in ("first_n", "trailing"):
            raise ValueError(f"mode must be 'first_n' or 'trailing', got {mode!r}")
        self.reference_size = reference_size
        self.window_size = window_size
        self.mode = mode
        self.reference: deque = deque(maxlen=reference_size)
        self.current: deque = deque(maxlen=window_size)
        #: Bumped whenever the reference changes (for caches keyed on it).
        self.reference_version = 0

    def append(self, x: Any) -> None:
        if self.mode == "first_n":
            if len(self.reference) < self.reference_size:
                self.reference.append(x)
                self.reference_version += 1
            else:
                self.current.append(x)
        else:
            if len(self.current) == self.window_size:
                self.reference.append(self.current[0])
                self.reference_version += 1
            self.current.append(x)

    def ready(self, min_current: int) -> bool:
        return len(self.reference) == self.reference_size and len(self.current) >= min_current

    def clear(self) -> None:
        self.reference.clear()
        self.current.clear()
        self.reference_version += 1


def _check_windows(reference_size: int, window_size: int, min_current: int | None) -> int:
    min_cur = window_size if min_current is None else min_current
    if not 1 <= min_cur <= window_size:
        raise ValueError(f"min_current must be in [1, window_size={window_size}], got {min_cur}")
    return min_cur


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
    """Drift of the score distribution and of the positive-decision rate.

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
        ``"first_n"`` or ``"trailing"`` (see the module docstring).
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
        self.min_current = _check_windows(reference_size, window_size, min_current)
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.mode = mode
        self.n_bins = n_bins
        self.every = every
        self._scores = _Windows(reference_size, window_size, mode)
        self._decisions = _Windows(reference_size, window_size, mode)
        self.n = 0
        self._computed_at = -1
        self._report: PredictionDriftReport | None = None
        self._ref_key = -1
        self._ref_sorted: np.ndarray = np.empty(0)
        self._ref_edges: list[float] = []
        self._ref_bins: list[int] = []

    def update(self, score: float, decision: bool) -> None:
        """Add one prediction: the model's score and the decision taken."""
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
        if (
            refresh
            or self._report is None
            or (self.n != self._computed_at and self.n - self._computed_at >= self.every)
        ):
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
        """Share of positive decisions in the current window."""
        return self.report().positive_rate

    @property
    def reference_positive_rate(self) -> float | None:
        """Share of positive decisions in the reference window."""
        return self.report().reference_positive_rate

    @property
    def positive_rate_ratio(self) -> float | None:
        """Current over reference positive rate (both floored at half a count)."""
        return self.report().positive_rate_ratio

    def _reference_stats(self) -> None:
        if self._ref_key != self._scores.reference_version:
            self._ref_sorted = np.sort(_array(self._scores.reference))
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
            cur_sorted = np.sort(_array(self._scores.current))
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


_NOT_NONE = partial(is_not, None)
_NUMBER_TYPES = frozenset({float, int, bool})
_STR_TYPE = frozenset({str})


class _Ring:
    """A fixed-capacity ring of floats, extended a block at a time."""

    def __init__(self, capacity: int) -> None:
        self.buffer = np.empty(capacity)
        self.capacity = capacity
        self.head = 0  # the next slot written; the oldest value once full
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        k, cap = len(values), self.capacity
        if k >= cap:
            self.buffer[:] = values[k - cap :]
            self.head, self.n = 0, cap
            return
        end = self.head + k
        if end <= cap:
            self.buffer[self.head : end] = values
        else:
            first = cap - self.head
            self.buffer[self.head :] = values[:first]
            self.buffer[: end - cap] = values[first:]
        self.head = end % cap
        self.n = min(cap, self.n + k)

    def ordered(self) -> np.ndarray:
        """The values, oldest first (a copy when the ring has wrapped)."""
        if self.n < self.capacity:
            return self.buffer[: self.n]
        return np.concatenate((self.buffer[self.head :], self.buffer[: self.head]))

    def clear(self) -> None:
        self.head = self.n = 0


class _Column:
    """One feature's reference and current windows, filled a block of observations at a time.

    Numeric values live in numpy rings, categories in deques: adding a block is
    a few C-level copies, whatever its length. ``"trailing"``: one ring of
    ``reference_size + window_size`` values, the newest ``window_size`` the
    current window; ``"first_n"``: the first ``reference_size`` values, then a
    ring of the last ``window_size``.
    """

    def __init__(self, reference_size: int, window_size: int, mode: Mode) -> None:
        self.kind: Literal["numeric", "categorical"] | None = None
        self.reference_size = reference_size
        self.window_size = window_size
        self.mode = mode
        self.skipped = 0
        #: Bumped whenever the reference changes (for the caches keyed on it).
        self.reference_version = 0
        self.reference_key = -1
        self.edges: list[float] = []
        self.reference_bins: list[int] = []
        self.reference_sorted: np.ndarray = np.empty(0)
        self.reference_counts: dict[str, int] = {}
        self._count = 0  # values added since the last clear (capped at both windows)
        self._numbers: tuple[_Ring, _Ring] | _Ring | None = None
        self._categories: tuple[list[str], deque[str]] | deque[str] | None = None

    def add(self, values: list[Any]) -> None:
        """Add a block of one feature's values (None: missing, ignored)."""
        present = list(filter(_NOT_NONE, values))
        if not present:
            return
        if self.kind is None:
            self.kind = "categorical" if isinstance(present[0], str) else "numeric"
            self._make()
        before = self._count
        if self.kind == "numeric":
            if _NUMBER_TYPES.issuperset(map(type, present)):
                numbers = present
            else:
                numbers = [v for v in present if isinstance(v, int | float)]
            self.skipped += len(present) - len(numbers)
            if not numbers:
                return
            block = np.array(numbers, dtype=float)
            if isinstance(self._numbers, _Ring):
                self._numbers.extend(block)
            else:
                assert self._numbers is not None
                reference, current = self._numbers
                room = self.reference_size - reference.n
                if room > 0:
                    reference.extend(block[:room])
                    block = block[room:]
                if len(block):
                    current.extend(block)
            added = len(numbers)
        else:
            texts = (
                present
                if _STR_TYPE.issuperset(map(type, present))
                else [v if isinstance(v, str) else str(v) for v in present]
            )
            added = len(texts)
            if isinstance(self._categories, deque):
                self._categories.extend(texts)
            else:
                assert self._categories is not None
                reference_list, current_deque = self._categories
                room = self.reference_size - len(reference_list)
                if room > 0:
                    reference_list.extend(texts[:room])
                    texts = texts[room:]
                current_deque.extend(texts)
        total = self.reference_size + self.window_size
        self._count = min(total, before + added)
        if self.mode == "trailing":
            if self._count > self.window_size:
                self.reference_version += 1
        elif before < self.reference_size:
            self.reference_version += 1

    def _make(self) -> None:
        trailing = self.mode == "trailing"
        size = self.reference_size + self.window_size
        if self.kind == "numeric":
            self._numbers = (
                _Ring(size) if trailing else (_Ring(self.reference_size), _Ring(self.window_size))
            )
        else:
            self._categories = (
                deque(maxlen=size) if trailing else ([], deque(maxlen=self.window_size))
            )

    @property
    def n_reference(self) -> int:
        if self.mode == "trailing":
            return max(0, self._count - self.window_size)
        return min(self._count, self.reference_size)

    @property
    def n_current(self) -> int:
        if self.mode == "trailing":
            return min(self._count, self.window_size)
        return min(max(0, self._count - self.reference_size), self.window_size)

    def ready(self, min_current: int) -> bool:
        return self.n_reference == self.reference_size and self.n_current >= min_current

    def split(self) -> tuple[Any, Any]:
        """The reference and current windows (numpy arrays, or lists of categories)."""
        if self.kind == "numeric":
            if isinstance(self._numbers, _Ring):
                values = self._numbers.ordered()
                cut = len(values) - self.n_current
                return values[:cut], values[cut:]
            assert self._numbers is not None
            return self._numbers[0].ordered(), self._numbers[1].ordered()
        if isinstance(self._categories, deque):
            texts = list(self._categories)
            cut = len(texts) - self.n_current
            return texts[:cut], texts[cut:]
        assert self._categories is not None
        return self._categories[0], list(self._categories[1])

    def clear(self) -> None:
        self._count = 0
        self.reference_version += 1
        if isinstance(self._numbers, _Ring):
            self._numbers.clear()
        elif self._numbers is not None:
            self._numbers[0].clear()
            self._numbers[1].clear()
        if isinstance(self._categories, deque):
            self._categories.clear()
        elif self._categories is not None:
            self._categories[0].clear()
            self._categories[1].clear()


class FeatureDrift:
    """Input drift of a configured list of features, or of every feature seen, bounded.

    A feature's kind is fixed by its first value: ``str`` is categorical (PSI
    over categories and total variation distance, see :func:`categorical_shift`),
    ``int``/``float``/``bool`` numeric (PSI on the reference's quantile bins,
    and the two-sample KS statistic). Missing (None) values are ignored; a
    string sent to a numeric feature is counted as ``skipped``. Categorical
    references keep their ``max_categories`` most frequent categories, the
    rest pool into :data:`OTHER`.

    With ``features=None`` every feature of the observations is monitored, the
    first ``max_features`` names seen; later new names are not kept (their
    number, up to 10,000, is :attr:`n_unmonitored`).

    :meth:`update` keeps a reference to the observation (which must not change
    afterwards); every ``flush_every`` observations, and before a report, the
    block is split into one column per feature and added to its windows, so
    the cost per observation does not grow with the number of features.

    Examples
    --------
    >>> fd = FeatureDrift(["amount", "country"], reference_size=50, window_size=50)
    >>> for i in range(50):
    ...     fd.update({"amount": float(i), "country": "fr" if i % 2 else "de"})
    >>> for i in range(50):
    ...     fd.update({"amount": float(i) + 100.0, "country": "fr" if i % 2 else "de"})
    >>> report = fd.report()
    >>> report["amount"]["kind"], report["amount"]["psi"] > 0.25, report["amount"]["ks"]
    ('numeric', True, 1.0)
    >>> report["country"]["kind"], report["country"]["psi"], report["country"]["tvd"]
    ('categorical', 0.0, 0.0)

    Every feature seen, at most ``max_features``:

    >>> fd = FeatureDrift(None, reference_size=10, window_size=10, max_features=2)
    >>> fd.update({"a": 1.0, "b": "x", "c": 3.0})
    >>> _ = fd.report()
    >>> fd.features, fd.n_unmonitored
    (('a', 'b'), 1)
    """

    def __init__(
        self,
        features: Sequence[str] | None,
        reference_size: int = 1000,
        window_size: int = 1000,
        mode: Mode = "first_n",
        n_bins: int = 10,
        max_categories: int = 50,
        every: int = 1,
        min_current: int | None = None,
        max_features: int = 32,
        flush_every: int = 256,
    ) -> None:
        if features is not None:
            names = tuple(features)
            if len(names) > max_features:
                raise ValueError(f"at most {max_features} features are monitored, got {len(names)}")
            if len(set(names)) != len(names):
                raise ValueError(f"feature names must be unique: {names}")
        if max_categories < 1:
            raise ValueError(f"max_categories must be >= 1, got {max_categories}")
        if max_features < 0:
            raise ValueError(f"max_features must be >= 0, got {max_features}")
        self.min_current = _check_windows(reference_size, window_size, min_current)
        self.auto = features is None
        self.max_features = max_features
        self.n_bins = n_bins
        self.max_categories = max_categories
        self.every = every
        self.n = 0
        self.flush_every = max(1, flush_every)
        self._refused: set[str] = set()
        self._pending: list[Mapping[str, Any]] = []
        self._sizes = (reference_size, window_size, mode)
        self._state = {name: _Column(reference_size, window_size, mode) for name in features or ()}
        self._computed_at = -1
        self._report: dict[str, dict[str, Any]] | None = None

    @property
    def features(self) -> tuple[str, ...]:
        """The monitored feature names (in auto mode, those seen so far)."""
        return tuple(self._state)

    @property
    def n_unmonitored(self) -> int:
        """Distinct feature names seen beyond ``max_features`` (counted up to 10,000)."""
        return len(self._refused)

    def update(self, features: Mapping[str, Any]) -> None:
        """Add one observation of the monitored features (others are ignored)."""
        self.n += 1
        self._pending.append(features)
        if len(self._pending) >= self.flush_every:
            self._flush()

    def _flush(self) -> None:
        rows, self._pending = self._pending, []
        if not rows:
            return
        states = self._state
        if self.auto:
            new = set().union(*rows).difference(states, self._refused)
            if new:
                self._admit(rows, new)
        for name, column in states.items():
            column.add([row.get(name) for row in rows])

    def _admit(self, rows: list[Mapping[str, Any]], new: set[str]) -> None:
        """Monitor the new names with a value, in the order first seen, up to ``max_features``."""
        states = self._state
        for row in rows:
            for name, value in row.items():
                if name not in new or value is None:
                    continue
                new.discard(name)
                if len(states) < self.max_features:
                    states[name] = _Column(*self._sizes)
                elif len(self._refused) < 10_000:
                    self._refused.add(name)
            if not new:
                return

    def reset(self) -> None:
        """Forget all windows (kinds and monitored names are kept)."""
        self._pending = []
        for column in self._state.values():
            column.clear()
        self._report = None
        self._computed_at = -1

    def report(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """Per feature: kind, window sizes, psi (ks for numeric, tvd for categorical), skipped."""
        if (
            refresh
            or self._report is None
            or (self.n != self._computed_at and self.n - self._computed_at >= self.every)
        ):
            self._flush()
            self._report = {name: self._compute(state) for name, state in self._state.items()}
            self._computed_at = self.n
        return self._report

    def _compute(self, state: _Column) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": state.kind,
            "n_reference": state.n_reference,
            "n_current": state.n_current,
            "psi": None,
            "skipped": state.skipped,
        }
        if state.kind == "categorical":
            out["tvd"] = None
        else:
            out["ks"] = None
        if not state.ready(self.min_current):
            return out
        reference, current = state.split()
        fresh = state.reference_key != state.reference_version
        if state.kind == "numeric":
            if fresh:
                state.reference_sorted = np.sort(reference)
                state.edges = _sorted_edges(state.reference_sorted, self.n_bins)
                state.reference_bins = bin_counts(state.reference_sorted, state.edges)
                state.reference_key = state.reference_version
            cur_sorted = np.sort(current)
            out["psi"] = psi(state.reference_bins, bin_counts(cur_sorted, state.edges))
            out["ks"] = ks_statistic(state.reference_sorted, cur_sorted, assume_sorted=True)
        else:
            if fresh:
                ref = Counter(reference)
                kept = dict(ref.most_common(self.max_categories))
                rest = sum(ref.values()) - sum(kept.values())
                if rest:
                    kept[OTHER] = kept.get(OTHER, 0) + rest
                state.reference_counts = kept
                state.reference_key = state.reference_version
            shift = categorical_shift(state.reference_counts, Counter(current))
            out["psi"] = shift.psi
            out["tvd"] = shift.tvd
        return out


def _sorted_edges(ordered: np.ndarray, n_bins: int) -> list[float]:
    """:func:`quantile_edges` of an already sorted array, computed by numpy.

    >>> _sorted_edges(np.arange(10.0), 5) == quantile_edges(range(10), 5)
    True
    >>> _sorted_edges(np.array([0.0, 0.0, 0.0, 1.0]), 4)
    [0.0, 1.0]
    """
    n = len(ordered)
    if n == 0:
        return []
    index = np.minimum(n - 1, (np.arange(1, n_bins) * n) // n_bins)
    return np.unique(ordered[index]).tolist()


@dataclass(frozen=True)
class Detection:
    """A concept drift detection: the label's index and its event time."""

    index: int
    event_time: float | None


class ConceptDrift:
    """A River drift detector fed the loss of each learned label.

    Parameters
    ----------
    detector
        ``"adwin"`` (:class:`river.drift.ADWIN`) or ``"page_hinkley"``
        (:class:`river.drift.PageHinkley`).
    params
        Keyword arguments of the detector.
    max_detections
        Detections kept in :attr:`detections` (the oldest are dropped);
        :attr:`n_detections` counts them all.
    warmup
        Losses after the start (or a :meth:`reset`) whose detections are not
        reported: a model that is still learning changes its loss by itself.
        The detector learns from them all the same.

    Examples
    --------
    >>> cd = ConceptDrift("adwin")
    >>> hits = [cd.update(0.1 if i < 1000 else 0.9, event_time=i) for i in range(1200)]
    >>> first = hits.index(True)
    >>> 1000 <= first < 1100
    True
    >>> cd.detections[0] == Detection(index=first, event_time=first)
    True

    A loss that falls (a model learning) is no drift, and warm-up is quiet:

    >>> cd = ConceptDrift("adwin", warmup=500)
    >>> any(cd.update(0.9 if i < 1000 else 0.1) for i in range(1200)), cd.n_improvements
    (False, 1)
    """

    def __init__(
        self,
        detector: str = "adwin",
        params: Mapping[str, Any] | None = None,
        max_detections: int = 1000,
        warmup: int = 0,
    ) -> None:
        if detector not in DETECTORS:
            raise ValueError(f"unknown detector {detector!r}; choose one of {sorted(DETECTORS)}")
        self.detector_name = detector
        self.params = dict(params or {})
        if detector == "page_hinkley":
            self.params.setdefault("mode", "up")
        try:
            self.detector = DETECTORS[detector](**self.params)
        except TypeError as exc:
            raise ValueError(f"bad parameters for {detector}: {exc}") from exc
        self.detections: deque[Detection] = deque(maxlen=max_detections)
        self.warmup = warmup
        self.n = 0
        self.n_detections = 0
        self.n_improvements = 0
        self._since_reset = 0

    def update(self, loss: float, event_time: float | None = None) -> bool:
        """Feed one loss; True when the detector signals that the loss went up.

        A change for the better (a model that is still learning, its loss
        falling) is no concept drift: it is counted in :attr:`n_improvements`.
        """
        index = self.n
        self.n += 1
        self._since_reset += 1
        before = getattr(self.detector, "estimation", None)
        self.detector.update(loss)
        if self.detector.drift_detected:
            after = getattr(self.detector, "estimation", None)
            # ADWIN keeps the recent sub-window after a cut: its mean above the whole
            # window's mean before the cut means the recent losses are the higher ones.
            if before is not None and after is not None and after <= before:
                self.n_improvements += 1
                return False
            if self._since_reset <= self.warmup:
                return False
            self.detections.append(Detection(index=index, event_time=event_time))
            self.n_detections += 1
            return True
        return False

    def reset(self) -> None:
        """Start the detector afresh, warm-up included (the index and the detections are kept)."""
        self.detector = DETECTORS[self.detector_name](**self.params)
        self._since_reset = 0
