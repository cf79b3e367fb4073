"""Concept drift: a River drift detector fed the loss of each learned label.

Examples
--------
>>> cd = ConceptDrift("page_hinkley")
>>> cd.detector_name, cd.params
('page_hinkley', {'mode': 'up'})
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from river import drift as river_drift

__all__ = [
    "BINARY_DETECTORS",
    "DETECTORS",
    "SIGNALS",
    "ConceptDrift",
    "Detection",
    "concept_signal",
]

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
