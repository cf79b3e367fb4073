"""Reference and current windows over a stream of values, for the drift trackers.

Two ways to choose the reference window (``mode``):

- ``"first_n"``: the first ``reference_size`` observations (after construction or
  a ``clear``, e.g. when the model version changes), then frozen; the current
  window holds the last ``window_size`` observations after them.
- ``"trailing"``: the ``reference_size`` observations just before the current
  window of the last ``window_size`` observations; both slide.

Examples
--------
>>> w = Windows(reference_size=2, window_size=2, mode="first_n")
>>> for x in range(5):
...     w.append(x)
>>> list(w.reference), list(w.current), w.ready(min_current=2)
([0, 1], [3, 4], True)
>>> w = Windows(reference_size=2, window_size=2, mode="trailing")
>>> for x in range(5):
...     w.append(x)
>>> list(w.reference), list(w.current)
([1, 2], [3, 4])
"""

from __future__ import annotations

from collections import deque
from functools import partial
from operator import is_not
from typing import Any, Literal

import numpy as np

from streamlearn.metrics.drift_statistics import FloatArray

__all__ = ["FeatureWindows", "Mode", "Ring", "Windows", "check_min_current", "stale"]

Mode = Literal["first_n", "trailing"]


class Windows:
    """A reference window and a current window over one stream of numbers."""

    def __init__(self, reference_size: int, window_size: int, mode: Mode) -> None:
        if reference_size < 1 or window_size < 1:
            raise ValueError("reference_size and window_size must be >= 1")
        if mode not in ("first_n", "trailing"):
            raise ValueError(f"mode must be 'first_n' or 'trailing', got {mode!r}")
        self.reference_size = reference_size
        self.window_size = window_size
        self.mode = mode
        self.reference: deque[float] = deque(maxlen=reference_size)
        self.current: deque[float] = deque(maxlen=window_size)
        #: Bumped whenever the reference changes (for caches keyed on it).
        self.reference_version = 0

    def append(self, x: float) -> None:
        """Add one value to the windows."""
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
        """Whether the reference is full and the current window holds ``min_current`` values."""
        return len(self.reference) == self.reference_size and len(self.current) >= min_current

    def clear(self) -> None:
        """Empty both windows."""
        self.reference.clear()
        self.current.clear()
        self.reference_version += 1


def check_min_current(reference_size: int, window_size: int, min_current: int | None) -> int:
    """The current-window size statistics wait for: ``min_current``, else ``window_size``.

    Examples
    --------
    >>> check_min_current(100, 50, None), check_min_current(100, 50, 10)
    (50, 10)
    """
    min_cur = window_size if min_current is None else min_current
    if not 1 <= min_cur <= window_size:
        raise ValueError(f"min_current must be in [1, window_size={window_size}], got {min_cur}")
    return min_cur


def stale(n: int, computed_at: int, every: int) -> bool:
    """Whether statistics computed at update ``computed_at`` are due again at update ``n``.

    They are recomputed at most every ``every`` updates (``computed_at`` -1: never).

    Examples
    --------
    >>> stale(10, 5, every=5), stale(10, 6, every=5), stale(5, 5, every=1)
    (True, False, False)
    """
    return n != computed_at and n - computed_at >= every


_NOT_NONE = partial(is_not, None)
_NUMBER_TYPES = frozenset({float, int, bool})
_STR_TYPE = frozenset({str})


class Ring:
    """A fixed-capacity ring of floats, extended a block at a time."""

    def __init__(self, capacity: int) -> None:
        self.buffer = np.empty(capacity)
        self.capacity = capacity
        self.head = 0  # the next slot written; the oldest value once full
        self.n = 0

    def extend(self, values: FloatArray) -> None:
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

    def ordered(self) -> FloatArray:
        """The values, oldest first (a copy when the ring has wrapped)."""
        if self.n < self.capacity:
            return self.buffer[: self.n]
        return np.concatenate((self.buffer[self.head :], self.buffer[: self.head]))

    def clear(self) -> None:
        self.head = self.n = 0


class FeatureWindows:
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
        self.reference_sorted: FloatArray = np.empty(0)
        self.reference_counts: dict[str, int] = {}
        self._count = 0  # values added since the last clear (capped at both windows)
        self._numbers: tuple[Ring, Ring] | Ring | None = None
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
            if isinstance(self._numbers, Ring):
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
                Ring(size) if trailing else (Ring(self.reference_size), Ring(self.window_size))
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
            if isinstance(self._numbers, Ring):
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
        if isinstance(self._numbers, Ring):
            self._numbers.clear()
        elif self._numbers is not None:
            self._numbers[0].clear()
            self._numbers[1].clear()
        if isinstance(self._categories, deque):
            self._categories.clear()
        elif self._categories is not None:
            self._categories[0].clear()
            self._categories[1].clear()
