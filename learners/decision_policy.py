"""Decision policies: from a score to a decision that serves the objective.

A score says how likely an event is positive; a decision (block the email, flag the
transaction) is what the system does with it. The threshold between them comes from
the objective, not from a constant:

- :class:`FixedThreshold`: ``score > threshold``, the configured ``model.threshold``.
- :class:`PrecisionAtLeast`: maximise recall subject to precision >= ``target``. The
  threshold is refitted online from the labelled events the processor sees (a bounded
  window of ``(score, label, weight)``) as the lowest one whose *lower confidence
  bound* on precision (Wilson, at ``confidence``) is at least the target, with at
  least ``min_positives`` decided events above it. Before ``min_labels`` labels, or
  when no threshold qualifies, the policy decides nothing positive (threshold 1.0):
  the safe fallback for a precision constraint is to block nothing.
- :class:`TopFraction`: a budget: the threshold is the ``1 - fraction`` quantile of
  the recent scores, so about ``fraction`` of the events are decided positive
  (nothing before ``min_labels`` scores).

Every policy reports, from its label window, the precision lower bound and the
recall at its current threshold (the gauges of the processor). The arithmetic is in
pure functions (:func:`wilson_lower_bound`, :func:`threshold_for_precision`).

Examples
--------
>>> policy = PrecisionAtLeast(target=0.9, min_labels=20, min_positives=5, update_every=10)
>>> policy.decide(0.99)  # no labels yet: nothing is decided positive
False
>>> for i in range(200):
...     score = i / 200
...     policy.observe_label(score, score > 0.5)
>>> round(policy.threshold, 3), policy.decide(0.8), policy.decide(0.3)
(0.485, True, False)
>>> round(policy.recall, 2), policy.precision_lower_bound > 0.9
(1.0, True)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DecisionConfig",
    "DecisionPolicy",
    "FixedThreshold",
    "LabelWindow",
    "PrecisionAtLeast",
    "TopFraction",
    "build_policy",
    "threshold_for_precision",
    "wilson_lower_bound",
]

#: The threshold that decides nothing positive (a score is at most 1).
NOTHING = 1.0

_Floats = npt.NDArray[np.float64]


def wilson_lower_bound(successes: float, n: float, z: float) -> float:
    """The Wilson score lower bound of a proportion (``n`` may be an effective size).

    Examples
    --------
    >>> round(wilson_lower_bound(199, 200, 1.645), 4)
    0.9779
    >>> wilson_lower_bound(0, 0, 1.645)
    0.0
    """
    if n <= 0:
        return 0.0
    p = successes / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0))
    return max(0.0, (centre - spread) / (1 + z2 / n))


def _wilson(p: _Floats, n: _Floats, z: float) -> _Floats:
    """:func:`wilson_lower_bound` of arrays (``n`` > 0)."""
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * np.sqrt(np.maximum(p * (1 - p) / n + z2 / (4 * n * n), 0.0))
    return np.maximum(0.0, (centre - spread) / (1 + z2 / n))


def threshold_for_precision(
    scores: _Floats,
    positive: npt.NDArray[np.bool_],
    weights: _Floats,
    target: float,
    z: float,
    min_positives: int,
    promise: float = math.inf,
) -> tuple[float, float, float]:
    """The lowest threshold whose precision lower bound is at least ``target``.

    Decided positive means ``score > threshold``. The bound is Wilson's on the
    weighted precision above the threshold, with Kish's effective sample size (so
    inverse-propensity weights widen it). With ``promise`` (a number of decided
    events), the bound is a prediction bound for the precision *realised* over the
    next ``promise`` decisions, not only for the expected precision: its sample size
    is ``1 / (1 / n + 1 / promise)``, which adds the realisation's noise to the
    estimate's. Returns ``(threshold, lower bound,
    recall)``; ``(1.0, 0.0, 0.0)`` when no threshold with at least ``min_positives``
    decided events above it qualifies.

    Examples
    --------
    >>> s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    >>> y = np.array([True, True, True, True, False, True])
    >>> t, bound, recall = threshold_for_precision(s, y, np.ones(6), 0.7, 1.0, 2)
    >>> t, round(recall, 2)
    (0.5, 0.8)
    >>> threshold_for_precision(s, y, np.ones(6), 0.999, 1.645, 2)
    (1.0, 0.0, 0.0)
    """
    if scores.size == 0:
        return NOTHING, 0.0, 0.0
    order = np.argsort(-scores, kind="stable")
    s, y, w = scores[order], positive[order], weights[order]
    tp = np.cumsum(np.where(y, w, 0.0))
    total = np.cumsum(w)
    squares = np.cumsum(w * w)
    # A cut after position i is a threshold only where the next score is lower.
    cuts = np.flatnonzero(np.append(s[1:] < s[:-1], True))
    count = cuts + 1
    cuts = cuts[count >= min_positives]
    if cuts.size == 0:
        return NOTHING, 0.0, 0.0
    n_eff = total[cuts] ** 2 / squares[cuts]
    n_eff = 1.0 / (1.0 / n_eff + 1.0 / promise)
    bounds = _wilson(tp[cuts] / total[cuts], n_eff, z)
    good = np.flatnonzero(bounds >= target)
    if good.size == 0:
        return NOTHING, 0.0, 0.0
    best = cuts[good[-1]]
    below = s[best + 1] if best + 1 < s.size else np.nextafter(s[best], -np.inf)
    threshold = float(below)
    all_positive = float(tp[-1])
    recall = float(tp[best]) / all_positive if all_positive > 0 else 0.0
    return threshold, float(bounds[good[-1]]), recall


class LabelWindow:
    """The last ``size`` labelled scores, with precision and recall at a threshold.

    >>> window = LabelWindow(4)
    >>> for s, y in [(0.9, True), (0.8, False), (0.3, True), (0.1, False), (0.7, True)]:
    ...     window.add(s, y, 1.0)
    >>> len(window), window.recall_at(0.5)
    (4, 0.5)
    """

    def __init__(self, size: int) -> None:
        # Ring buffers: slot ``_next`` is the oldest item once the window is full.
        self._s = np.zeros(size)
        self._y = np.zeros(size, dtype=bool)
        self._w = np.zeros(size)
        self._next = self._n = 0

    def add(self, score: float, positive: bool, weight: float) -> None:
        i = self._next
        self._s[i], self._y[i], self._w[i] = score, positive, weight
        self._next = (i + 1) % self._s.size
        self._n = min(self._n + 1, self._s.size)

    def __len__(self) -> int:
        return self._n

    def arrays(self) -> tuple[_Floats, npt.NDArray[np.bool_], _Floats]:
        """Scores, labels and weights of the window (in no particular order)."""
        n = self._n
        return self._s[:n], self._y[:n], self._w[:n]

    def precision_lower_bound_at(self, threshold: float, z: float) -> float:
        """Wilson's lower bound on the weighted precision of ``score > threshold``."""
        s, y, w = self.arrays()
        above = s > threshold
        total = float(w[above].sum())
        if total <= 0:
            return 0.0
        n_eff = total**2 / float((w[above] ** 2).sum())
        return wilson_lower_bound(float(w[above & y].sum()) / total * n_eff, n_eff, z)

    def recall_at(self, threshold: float) -> float:
        """The weighted share of the window's positives scored above ``threshold``."""
        s, y, w = self.arrays()
        positives = float(w[y].sum())
        return float(w[y & (s > threshold)].sum()) / positives if positives > 0 else 0.0


class DecisionPolicy:
    """A threshold and what it buys; subclasses say how the threshold moves.

    Parameters
    ----------
    threshold
        The starting threshold (decided positive when ``score > threshold``).
    window
        Labelled events kept for the threshold's statistics.
    confidence
        One-sided confidence of the precision lower bound.
    """

    name = "fixed"

    def __init__(self, threshold: float, window: int = 50_000, confidence: float = 0.99) -> None:
        self.threshold = threshold
        #: The threshold in force while too few labels back a new one: the starting one,
        #: or the one a restart restored (:meth:`restore`).
        self.fallback = threshold
        self.labels = LabelWindow(window)
        self.z = NormalDist().inv_cdf(confidence)
        self.precision_lower_bound = 0.0
        self.recall = 0.0
        self._since = 0

    def decide(self, score: float) -> bool:
        """The decision for a score; a policy that follows the scores sees it here."""
        return score > self.threshold

    def observe_label(self, score: float, positive: bool, weight: float = 1.0) -> None:
        """A labelled event: what the model scored it, its label, its weight."""
        self.labels.add(score, positive, weight)
        self._since += 1
        if self._since >= self._every():
            self._since = 0
            self.refit()

    def _every(self) -> int:
        return 100

    def refit(self) -> None:
        """Refresh the threshold (a fixed one stays) and its statistics."""
        self._statistics()

    def _statistics(self) -> None:
        self.precision_lower_bound = self.labels.precision_lower_bound_at(self.threshold, self.z)
        self.recall = self.labels.recall_at(self.threshold)

    def state(self) -> dict[str, Any]:
        """The threshold in force and what it buys, for a checkpoint (the labels behind
        it are not kept: a restart starts a new window)."""
        return {
            "policy": self.name,
            "threshold": self.threshold,
            "precision_lower_bound": self.precision_lower_bound,
            "recall": self.recall,
        }

    def restore(self, state: Mapping[str, Any] | None) -> None:
        """Take the threshold a checkpoint saved (of the same policy) as the one in force
        until enough new labels back another: a restarted worker decides as before, not
        from the safe fallback.

        >>> policy = PrecisionAtLeast(0.99, min_labels=100)
        >>> policy.restore({"policy": "precision_at_least", "threshold": 0.8,
        ...                 "precision_lower_bound": 0.993, "recall": 0.6})
        >>> policy.threshold, policy.decide(0.9), policy.decide(0.7)
        (0.8, True, False)
        >>> policy.refit()        # still too few labels: the restored threshold stays
        >>> policy.threshold
        0.8
        """
        if not state or state.get("policy") != self.name:
            return
        self.threshold = self.fallback = float(state["threshold"])
        self.precision_lower_bound = float(state["precision_lower_bound"])
        self.recall = float(state["recall"])


class FixedThreshold(DecisionPolicy):
    """``score > threshold``, whatever the labels say.

    >>> FixedThreshold(0.5).decide(0.7), FixedThreshold(0.5).decide(0.5)
    (True, False)
    """


class PrecisionAtLeast(DecisionPolicy):
    """The lowest threshold keeping a lower confidence bound on precision >= ``target``.

    The bound covers the precision realised over windows of ``promise`` decided
    events (see :func:`threshold_for_precision`, which does the arithmetic).
    """

    name = "precision_at_least"

    def __init__(
        self,
        target: float = 0.995,
        window: int = 50_000,
        confidence: float = 0.99,
        min_labels: int = 500,
        min_positives: int = 30,
        update_every: int = 1000,
        promise: float = 4000.0,
    ) -> None:
        super().__init__(NOTHING, window, confidence)
        self.target = target
        self.min_labels = min_labels
        self.min_positives = min_positives
        self.update_every = update_every
        self.promise = promise

    def _every(self) -> int:
        return self.update_every

    def refit(self) -> None:
        if len(self.labels) < self.min_labels:
            self.threshold = self.fallback
            if self.fallback == NOTHING:
                self.precision_lower_bound, self.recall = 0.0, 0.0
            return
        s, y, w = self.labels.arrays()
        self.threshold, self.precision_lower_bound, self.recall = threshold_for_precision(
            s, y, w, self.target, self.z, self.min_positives, self.promise
        )


class TopFraction(DecisionPolicy):
    """A budget: about ``fraction`` of the events decided positive.

    The threshold is the ``1 - fraction`` quantile of the last ``window`` scores,
    refreshed every ``update_every`` scores; nothing before ``min_labels`` scores.

    >>> policy = TopFraction(0.1, min_labels=100, update_every=50)
    >>> decided = [policy.decide(i % 100 / 100) for i in range(1000)]
    >>> round(sum(decided[500:]) / 500, 2)
    0.1
    """

    name = "top_fraction"

    def __init__(
        self,
        fraction: float,
        window: int = 50_000,
        confidence: float = 0.99,
        min_labels: int = 500,
        update_every: int = 100,
    ) -> None:
        super().__init__(NOTHING, window, confidence)
        self.fraction = fraction
        self.min_labels = min_labels
        self.update_every = update_every
        self._scores: deque[float] = deque(maxlen=window)
        self._seen = 0

    def decide(self, score: float) -> bool:
        self._scores.append(score)
        self._seen += 1
        if self._seen % self.update_every == 0 and len(self._scores) >= self.min_labels:
            recent = np.fromiter(self._scores, dtype=float)
            self.threshold = float(np.quantile(recent, 1.0 - self.fraction))
            self._statistics()
        return score > self.threshold

    def _every(self) -> int:
        return self.update_every


class DecisionConfig(BaseModel):
    """The ``decision`` section: how a score becomes a decision, and the holdout.

    >>> DecisionConfig().policy, DecisionConfig().precision_at_least
    ('precision_at_least', 0.995)
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    policy: Literal["fixed", "precision_at_least", "top_fraction"] = Field(
        default="precision_at_least",
        description=(
            "precision_at_least (the default objective): the lowest threshold whose precision"
            " lower bound is >= precision_at_least, nothing decided positive before min_labels"
            " labels or while no threshold qualifies; fixed: score > model.threshold;"
            " top_fraction: a budget."
        ),
    )
    precision_at_least: float = Field(default=0.995, gt=0.0, lt=1.0)
    confidence: float = Field(
        default=0.99, ge=0.5, lt=1.0, description="One-sided confidence of the precision bound."
    )
    min_labels: int = Field(
        default=500, ge=1, le=10_000_000, description="Labels before a threshold is fitted."
    )
    min_positives: int = Field(
        default=30, ge=1, le=10_000_000, description="Decided events a threshold needs above it."
    )
    window: int = Field(default=50_000, ge=10, le=10_000_000, description="Labels kept.")
    update_every: int = Field(
        default=1000, ge=1, le=1_000_000, description="Labels (or scores) between refits."
    )
    precision_window: int = Field(
        default=4000,
        ge=1,
        le=100_000_000,
        description="Decided events over which the realised precision is promised.",
    )
    top_fraction: float = Field(default=0.01, gt=0.0, le=1.0)
    holdout_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=0.5,
        description="Share of units whose events bypass the decision (0: no holdout).",
    )
    holdout_unit: str = Field(default="user_id", min_length=1)
    holdout_salt: str = Field(default="holdout", min_length=1)
    propensity_weighting: bool = Field(
        default=False, description="Learn each label with its weight / its event's propensity."
    )
    positive_weight: float = Field(
        default=1.0, gt=0.0, le=1000.0, description="Weight of a positive label when learned."
    )
    negative_weight: float = Field(
        default=1.0, gt=0.0, le=1000.0, description="Weight of a negative label when learned."
    )
    target_positive_share: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description=(
            "Learn as if this share of the labels were positive: classes weighted by"
            " target / observed share (0: off)."
        ),
    )
    balance_window: int = Field(
        default=10_000,
        ge=10,
        le=10_000_000,
        description="Recent labels over which the observed positive share is measured.",
    )
    hides: bool = Field(
        default=False,
        description=(
            "A positive decision hides the event from whoever would label it (a filter:"
            " blocked mail is never seen, so its silence says nothing); false: the decision"
            " only predicts (a predicted click is still shown) and every silence is learned."
        ),
    )
    implicit_negatives_of_blocked: bool = Field(
        default=False,
        description=(
            "With hides: learn the silence after a blocked event as a negative anyway (it"
            " feeds the loop: the model forgets what it blocks; python -m bench.feedback)."
            " Without hides nothing is blocked and every implicit negative is learned."
        ),
    )


def build_policy(config: DecisionConfig, threshold: float = 0.5) -> DecisionPolicy:
    """The policy of the ``decision`` section (``threshold``: ``model.threshold``).

    >>> build_policy(DecisionConfig(policy="top_fraction")).name
    'top_fraction'
    """
    if config.policy == "precision_at_least":
        return PrecisionAtLeast(
            config.precision_at_least,
            config.window,
            config.confidence,
            config.min_labels,
            config.min_positives,
            config.update_every,
            float(config.precision_window),
        )
    if config.policy == "top_fraction":
        return TopFraction(
            config.top_fraction,
            config.window,
            config.confidence,
            config.min_labels,
            config.update_every,
        )
    return FixedThreshold(threshold, config.window, config.confidence)
