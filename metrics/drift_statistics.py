"""Drift statistics: population stability, two-sample KS, categorical shift.

Pure functions of counts or plain sequences, shared by the prediction and
feature drift trackers (:mod:`metrics.prediction_drift`,
:mod:`metrics.feature_drift`).

Examples
--------
>>> round(psi([25, 25, 25, 25], [25, 25, 25, 25]), 6)
0.0
>>> ks_statistic([1, 2, 3, 4], [3, 4, 5, 6])
0.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "OTHER",
    "CategoricalShift",
    "bin_counts",
    "categorical_shift",
    "float_array",
    "ks_statistic",
    "psi",
    "quantile_edges",
    "sorted_quantile_edges",
]

#: Bucket for categories absent from the reference (or beyond its most frequent ones).
OTHER = "__other__"

#: A one-dimensional array of floats.
FloatArray = npt.NDArray[np.float64]


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
    counts: list[int] = np.bincount(bins, minlength=len(edges) + 1).tolist()
    return counts


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
    xs = float_array(a) if assume_sorted else np.sort(float_array(a))
    ys = float_array(b) if assume_sorted else np.sort(float_array(b))
    na, nb = len(xs), len(ys)
    if na == 0 or nb == 0:
        raise ValueError("both samples must be non-empty")
    steps = np.concatenate((xs, ys))
    below_a = np.searchsorted(xs, steps, side="right") / na
    below_b = np.searchsorted(ys, steps, side="right") / nb
    return float(np.max(np.abs(below_a - below_b)))


def float_array(values: Iterable[float]) -> FloatArray:
    """``values`` as a numpy array of floats (no copy when it already is one).

    Examples
    --------
    >>> float_array([1, 2]).tolist()
    [1.0, 2.0]
    """
    if isinstance(values, np.ndarray):
        return values.astype(float, copy=False)
    return np.fromiter(values, dtype=float)


def sorted_quantile_edges(ordered: FloatArray, n_bins: int) -> list[float]:
    """:func:`quantile_edges` of an already sorted array, computed by numpy.

    Examples
    --------
    >>> sorted_quantile_edges(np.arange(10.0), 5) == quantile_edges(range(10), 5)
    True
    >>> sorted_quantile_edges(np.array([0.0, 0.0, 0.0, 1.0]), 4)
    [0.0, 1.0]
    """
    n = len(ordered)
    if n == 0:
        return []
    index = np.minimum(n - 1, (np.arange(1, n_bins) * n) // n_bins)
    edges: list[float] = np.unique(ordered[index]).tolist()
    return edges


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
