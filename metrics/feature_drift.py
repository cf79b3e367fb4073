"""Input drift of the features the model is given, bounded in features and memory.

Examples
--------
>>> fd = FeatureDrift(["x"], reference_size=10, window_size=10)
>>> for i in range(20):
...     fd.update({"x": float(i // 10)})
>>> fd.report()["x"]["ks"]
1.0
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamlearn.metrics.drift_statistics import (
    OTHER,
    bin_counts,
    categorical_shift,
    ks_statistic,
    psi,
    sorted_quantile_edges,
)
from streamlearn.metrics.drift_windows import FeatureWindows, Mode, check_min_current, stale

__all__ = ["FeatureDrift"]


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
        self.min_current = check_min_current(reference_size, window_size, min_current)
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
        self._state = {
            name: FeatureWindows(reference_size, window_size, mode) for name in features or ()
        }
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
                    states[name] = FeatureWindows(*self._sizes)
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
        if refresh or self._report is None or stale(self.n, self._computed_at, self.every):
            self._flush()
            self._report = {name: self._compute(state) for name, state in self._state.items()}
            self._computed_at = self.n
        return self._report

    def _compute(self, state: FeatureWindows) -> dict[str, Any]:
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
                state.edges = sorted_quantile_edges(state.reference_sorted, self.n_bins)
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
