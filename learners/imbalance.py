"""Class imbalance: per-class weights for learning, fixed or toward a target positive share.

Spam, fraud and clicks are rare: a model learning every label with the same weight
sees mostly negatives. Two remedies, which multiply:

- fixed per-class weights (``decision.positive_weight``, ``decision.negative_weight``);
- a target positive share (``decision.target_positive_share``): positives are
  weighted by ``target / share`` and negatives by ``(1 - target) / (1 - share)``, where
  ``share`` is the positive share of the recent labels (a running mean over about
  ``decision.balance_window`` labels, from a uniform prior), so the model learns as if
  ``target`` of its labels were positive (:func:`balancing_weights`).

The weights multiply each label's own weight (and its inverse propensity) when the
models learn it; the decision policy's precision statistics do not use them. What is
in force is reported in the model's snapshot metadata (:meth:`ClassWeights.metadata`).

Examples
--------
>>> weights = ClassWeights(target_share=0.5, window=100)
>>> for i in range(1000):
...     _ = weights.weight(i % 10 == 0)  # 10 % positives
>>> info = weights.metadata()  # the positive share is about 10 %: positives count 5x
>>> round(info["class_weight_positive"]), round(info["class_weight_negative"], 1)
(5, 0.6)
>>> sorted(weights.metadata())
['class_weight_negative', 'class_weight_positive', 'positive_share', 'target_positive_share']
>>> ClassWeights().metadata()  # nothing configured: nothing to report
{}
"""

from __future__ import annotations

__all__ = ["ClassWeights", "balancing_weights"]

#: Bounds of a balancing weight, so a share near 0 or 1 cannot blow a label up.
MIN_WEIGHT, MAX_WEIGHT = 0.01, 100.0


def balancing_weights(share: float, target: float) -> tuple[float, float]:
    """The (positive, negative) weights that turn a positive ``share`` into ``target``.

    >>> balancing_weights(0.1, 0.5)
    (5.0, 0.5555555555555556)
    >>> balancing_weights(0.5, 0.5)
    (1.0, 1.0)
    """

    def bounded(w: float) -> float:
        return min(MAX_WEIGHT, max(MIN_WEIGHT, w))

    return bounded(target / share), bounded((1.0 - target) / (1.0 - share))


class ClassWeights:
    """The weight of a label by its class, for learning.

    Parameters
    ----------
    positive, negative
        Fixed weights of each class.
    target_share
        The positive share to learn as if it were the stream's (0: none).
    window
        About how many recent labels the observed share follows.
    """

    def __init__(
        self,
        positive: float = 1.0,
        negative: float = 1.0,
        target_share: float = 0.0,
        window: int = 10_000,
    ) -> None:
        if not 0.0 <= target_share < 1.0:
            raise ValueError(f"a target positive share must be in [0, 1), got {target_share}")
        self.positive, self.negative = positive, negative
        self.target_share = target_share
        self.window = window
        self.share = 0.5  # the uniform prior
        self._n = 0

    @property
    def active(self) -> bool:
        return self.target_share > 0.0 or self.positive != 1.0 or self.negative != 1.0

    def weight(self, positive: bool) -> float:
        """The multiplier of a label of this class; with a target, the label counts too."""
        if self.target_share <= 0.0:
            return self.positive if positive else self.negative
        self._n += 1
        rate = 1.0 / min(self._n + 2, self.window)
        self.share += rate * ((1.0 if positive else 0.0) - self.share)
        pos, neg = balancing_weights(self.share, self.target_share)
        return self.positive * pos if positive else self.negative * neg

    def metadata(self) -> dict[str, float]:
        """The weights in force, for the model's snapshot metadata ({} when none)."""
        if not self.active:
            return {}
        pos, neg = self.positive, self.negative
        info: dict[str, float] = {}
        if self.target_share > 0.0:
            balance = balancing_weights(self.share, self.target_share)
            pos, neg = pos * balance[0], neg * balance[1]
            info.update(target_positive_share=self.target_share, positive_share=self.share)
        info.update(class_weight_positive=pos, class_weight_negative=neg)
        return info
