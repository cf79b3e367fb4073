"""The unfiltered holdout: a stable share of traffic that bypasses the decision.

A filter that hides what it blocks starves its own training data: blocked events
get no labels, so the model forgets what it caught (the feedback loop). A small,
random, stable share of the units (users by default) is served whatever the
decision says; their labels are an unbiased sample of the whole traffic.

Each event gets its *propensity*: the probability of the treatment it got. An event
the policy would allow is served with probability 1. One it would block is served
(held out) with probability ``fraction``, and blocked with ``1 - fraction``. A label
weighted by ``1 / propensity`` then stands for the events like it that were not
labelled, so learning from the served events is not biased by the filter.

The unit's place comes from :func:`learners.assignment.unit_fraction` (a keyed
BLAKE2b hash: the same unit is held out in every worker, after restarts and in the
backtest).

Examples
--------
>>> from streamlearn.learners.decision_policy import FixedThreshold
>>> decider = Decider(FixedThreshold(0.5), Holdout(0.5, salt="demo"))
>>> decider.decide(0.2, {"user_id": "u3"})
Decided(decision=False, holdout=False, propensity=1.0)
>>> for given in sorted({decider.decide(0.9, {"user_id": f"u{i}"}) for i in range(20)}):
...     print(given)
Decided(decision=False, holdout=True, propensity=0.5)
Decided(decision=True, holdout=False, propensity=0.5)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from streamlearn.learners.assignment import unit_fraction, unit_of
from streamlearn.learners.decision_policy import (
    DecisionConfig,
    DecisionPolicy,
    FixedThreshold,
    build_policy,
)
from streamlearn.learners.imbalance import ClassWeights

__all__ = ["Decided", "Decider", "Holdout", "decider_of"]


class Decided(NamedTuple):
    """What was done with an event: its decision, whether it was held out, the propensity."""

    decision: bool
    holdout: bool
    propensity: float


class Holdout:
    """A stable ``fraction`` of units (``unit`` field of the event, else of its context).

    An event without the unit falls back on its ``event_id``.

    >>> holdout = Holdout(0.02)
    >>> share = sum(holdout.contains({"user_id": f"u{i}"}) for i in range(20_000)) / 20_000
    >>> round(share, 2)
    0.02
    >>> Holdout(0.0).contains({"user_id": "u1"})
    False
    """

    def __init__(self, fraction: float = 0.0, unit: str = "user_id", salt: str = "holdout") -> None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"a holdout fraction must be in [0, 1), got {fraction}")
        self.fraction = fraction
        self.unit = unit
        self.salt = salt

    def contains(self, event: Mapping[str, Any] | object) -> bool:
        if self.fraction <= 0.0:
            return False
        unit = unit_of(event, self.unit)
        if unit is None or unit == "":
            unit = unit_of(event, "event_id")
        return unit_fraction(self.salt, str(unit)) < self.fraction


class Decider:
    """A decision policy and the holdout that bypasses it, for the champion's scores.

    Parameters
    ----------
    policy
        How a score becomes a decision (:mod:`learners.decision_policy`).
    holdout
        The units served whatever the decision (default: none).
    propensity_weighting
        Whether labels are learned with their weight divided by their propensity.
    implicit_negatives_of_blocked
        Whether the silence after a blocked event is learned as a negative.
    hides
        Whether a positive decision blocks the event (hides it from whoever would
        label it); when it does not, every silence is learned. The ``decision``
        section's default is false (:func:`decider_of`).
    classes
        The per-class weights of learning (:mod:`learners.imbalance`; default: none).
    """

    def __init__(
        self,
        policy: DecisionPolicy,
        holdout: Holdout | None = None,
        propensity_weighting: bool = False,
        implicit_negatives_of_blocked: bool = True,
        classes: ClassWeights | None = None,
        hides: bool = True,
    ) -> None:
        self.policy = policy
        self.hides = hides
        self.holdout = holdout or Holdout(0.0)
        self.propensity_weighting = propensity_weighting
        self.implicit_negatives_of_blocked = implicit_negatives_of_blocked
        self.classes = classes or ClassWeights()

    @classmethod
    def fixed(cls, threshold: float) -> Decider:
        """``score > threshold``, no holdout: what a processor does unless told otherwise."""
        return cls(FixedThreshold(threshold))

    @property
    def threshold(self) -> float:
        return self.policy.threshold

    def decide(self, score: float, event: Mapping[str, Any] | object) -> Decided:
        """The decision for the champion's score of ``event``.

        Every event of a held-out unit is marked ``holdout`` (its labels measure the
        unfiltered traffic); one the policy would block is served instead.
        """
        blocked = self.policy.decide(score)
        fraction = self.holdout.fraction
        held = fraction > 0.0 and self.holdout.contains(event)
        if not blocked:
            return Decided(False, held, 1.0)
        if held:
            return Decided(False, True, fraction)
        return Decided(True, False, 1.0 - fraction)

    def learns_implicit(self, given: Decided | None) -> bool:
        """Whether the implicit negative of an event given ``given`` is learned.

        >>> Decider(FixedThreshold(0.5), implicit_negatives_of_blocked=False).learns_implicit(
        ...     Decided(True, False, 1.0))
        False
        >>> Decider(FixedThreshold(0.5), implicit_negatives_of_blocked=False, hides=False
        ...         ).learns_implicit(Decided(True, False, 1.0))  # a prediction hides nothing
        True
        """
        blocked = self.hides and given is not None and given.decision
        return self.implicit_negatives_of_blocked or not blocked

    def learning_weight(self, weight: float, propensity: float) -> float:
        """The weight a label is learned with: divided by its propensity when configured."""
        if self.propensity_weighting and propensity > 0.0:
            return weight / propensity
        return weight

    def model_weight(self, weight: float, propensity: float, positive: bool) -> float:
        """The weight the models learn a label with: :meth:`learning_weight` times its
        class's weight (the policy's statistics use :meth:`learning_weight` alone).

        >>> Decider(FixedThreshold(0.5), classes=ClassWeights(positive=3.0)).model_weight(
        ...     2.0, 1.0, True)
        6.0
        """
        return self.learning_weight(weight, propensity) * self.classes.weight(positive)


def decider_of(config: DecisionConfig, threshold: float = 0.5) -> Decider:
    """The decider of the ``decision`` section (``threshold``: ``model.threshold``).

    >>> decider_of(DecisionConfig(holdout_fraction=0.02)).holdout.fraction
    0.02
    """
    holdout = Holdout(config.holdout_fraction, config.holdout_unit, config.holdout_salt)
    return Decider(
        build_policy(config, threshold),
        holdout,
        config.propensity_weighting,
        config.implicit_negatives_of_blocked,
        ClassWeights(
            config.positive_weight,
            config.negative_weight,
            config.target_positive_share,
            config.balance_window,
        ),
        config.hides,
    )
