"""Always-valid inference: tests that may be looked at after every label.

A fixed-sample test checked again and again declares false winners far more often than
its level says: at p < 0.05 checked after every batch, an A/A experiment ends with a
"significant" difference in a third or more of its runs. The mixture sequential
probability ratio test (mSPRT) of Johari, Pekelis and Walsh ("Always valid inference:
continuous monitoring of A/B tests", 2017/2022) gives p-values and confidence intervals
that stay valid however often, and for however long, they are looked at:
P(p_n <= alpha for some n) <= alpha under the null.

With a normal mixture ``N(null, tau**2)`` over the effect and an estimate ``estimate``
of it whose variance is ``variance`` (asymptotically normal, as every mean here is),
the mixture likelihood ratio is

    Lambda = sqrt(V / (V + tau**2)) * exp(tau**2 (estimate - null)**2 / (2 V (V + tau**2)))

the always-valid p-value is the running minimum of ``1 / Lambda``, and the confidence
sequence is the running intersection of the sets of nulls that ``Lambda`` does not
reject at ``alpha``. ``tau`` is the scale of the effects worth finding (a few percent of
the metric's mean); any fixed ``tau`` keeps the guarantee, a good one shortens the wait.

The pure functions take floats or numpy arrays (many simulated experiments at once);
:class:`Moments` accumulates a stream's mean and variance (mergeable, serialisable);
:class:`AlwaysValid` keeps the running p-value and interval; the two tests built on them
are :class:`SequentialDifference` (two independent samples: the positive-label rate or
a per-label loss of two arms) and :class:`PairedRelativeDrop` (the same labels scored by
two models: is the candidate more than ``drop`` worse than its reference?).

Examples
--------
>>> test = SequentialDifference(tau=0.05, alpha=0.05)
>>> for i in range(4000):
...     test.update_control(float(i % 10 == 0))     # 10 % positive
...     test.update_treatment(float(i % 5 == 0))    # 20 % positive
>>> round(test.estimate, 3), test.significant
(0.1, True)
>>> test.p_value < 1e-6
True
>>> lo, hi = test.interval
>>> lo < 0.1 < hi
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

__all__ = [
    "AlwaysValid",
    "Moments",
    "PairedRelativeDrop",
    "SequentialDifference",
    "confidence_radius",
    "msprt_log_ratio",
    "msprt_p_value",
    "naive_z_p_value",
]

FloatOrArray = TypeVar("FloatOrArray", float, npt.NDArray[np.float64])
#: The mixture's standard deviation: one, or one per element of the estimates.
Tau = float | npt.NDArray[np.float64]


def _like_input(out: Any) -> Any:
    """A float for a scalar result, the array otherwise (numpy gives 0-d arrays)."""
    return float(out) if np.ndim(out) == 0 else out


def msprt_log_ratio(
    estimate: FloatOrArray, variance: FloatOrArray, tau: Tau, null: float = 0.0
) -> FloatOrArray:
    """Log of the normal-mixture likelihood ratio for ``estimate`` against ``null``.

    ``variance`` is the variance of the estimate (not of one observation); a variance of
    zero or less (no spread seen yet) gives no evidence (0).

    Examples
    --------
    >>> round(msprt_log_ratio(0.0, 1e-4, tau=0.01), 4)    # no effect: evidence against it
    -0.3466
    >>> round(msprt_log_ratio(0.05, 1e-4, tau=0.01), 2)   # five standard errors
    5.9
    >>> msprt_log_ratio(np.array([0.0, 0.05]), np.array([1e-4, 0.0]), tau=0.01).tolist()
    [-0.34657359027997264, 0.0]
    """
    v = np.maximum(np.asarray(variance, dtype=float), 0.0)
    t2 = tau * tau
    with np.errstate(divide="ignore", invalid="ignore"):
        total = v + t2
        out = 0.5 * np.log(v / total) + t2 * (np.asarray(estimate) - null) ** 2 / (2 * v * total)
    out = np.where(v > 0, out, 0.0)
    return cast(FloatOrArray, _like_input(out))


def msprt_p_value(
    estimate: FloatOrArray, variance: FloatOrArray, tau: Tau, null: float = 0.0
) -> FloatOrArray:
    """The mSPRT p-value at one look: ``min(1, 1 / Lambda)``.

    Valid under continuous monitoring only as a running minimum (:class:`AlwaysValid`).

    Examples
    --------
    >>> msprt_p_value(0.0, 1e-4, tau=0.01)
    1.0
    >>> round(msprt_p_value(0.05, 1e-4, tau=0.01), 4)   # a fixed-sample z-test: 6e-7
    0.0027
    """
    log_ratio = msprt_log_ratio(estimate, variance, tau, null)
    out = np.minimum(1.0, np.exp(-np.asarray(log_ratio)))
    return cast(FloatOrArray, _like_input(out))


def confidence_radius(variance: FloatOrArray, tau: Tau, alpha: float) -> FloatOrArray:
    """Half width of the mSPRT confidence set at one look: the nulls within it of the
    estimate are those the test does not reject at ``alpha``; infinite at zero variance.

    Examples
    --------
    >>> round(confidence_radius(1e-4, tau=0.01, alpha=0.05), 4)
    0.0366
    >>> round(1.96 * 1e-2, 4)    # the fixed-sample radius it replaces
    0.0196
    >>> confidence_radius(0.0, tau=0.01, alpha=0.05)
    inf
    """
    v = np.maximum(np.asarray(variance, dtype=float), 0.0)
    t2 = tau * tau
    with np.errstate(divide="ignore", invalid="ignore"):
        total = v + t2
        squared = 2 * v * total / t2 * (math.log(1 / alpha) + 0.5 * np.log(total / v))
        out = np.where(v > 0, np.sqrt(squared), np.inf)
    return cast(FloatOrArray, _like_input(out))


def naive_z_p_value(estimate: FloatOrArray, variance: FloatOrArray) -> FloatOrArray:
    """The fixed-sample two-sided z-test p-value: right once, wrong when repeated.

    Examples
    --------
    >>> round(naive_z_p_value(1.96, 1.0), 3)
    0.05
    >>> naive_z_p_value(np.array([0.0, 1.0]), np.array([1.0, 0.0])).tolist()
    [1.0, 1.0]
    """
    v = np.asarray(variance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(np.asarray(estimate)) / np.sqrt(v)
    erfc = np.vectorize(math.erfc, otypes=[float])
    out = np.where(v > 0, erfc(np.where(v > 0, z, 0.0) / math.sqrt(2)), 1.0)
    return cast(FloatOrArray, _like_input(out))


@dataclass
class Moments:
    """Count, mean and sum of squared deviations of a stream (Welford), mergeable.

    Examples
    --------
    >>> m = Moments()
    >>> for x in (1.0, 2.0, 3.0, 4.0):
    ...     m.update(x)
    >>> m.n, m.mean, round(m.variance, 4)
    (4, 2.5, 1.6667)
    >>> other = Moments.of_sums(2, 10.0, 50.0)     # 5 and 5
    >>> m.merge(other)
    >>> m.n, round(m.mean, 4), round(m.variance, 4)
    (6, 3.3333, 2.6667)
    >>> Moments.from_dict(m.to_dict()) == m
    True
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, x: float) -> None:
        """Add one observation."""
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    @classmethod
    def of_sums(cls, n: int, total: float, total_squares: float) -> Moments:
        """The moments of ``n`` observations given their sum and sum of squares."""
        if n <= 0:
            return cls()
        mean = total / n
        return cls(n, mean, max(0.0, total_squares - n * mean * mean))

    def merge(self, other: Moments) -> None:
        """Add another stream's observations (Chan et al.'s parallel update)."""
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.mean += delta * other.n / n
        self.n = n

    @property
    def variance(self) -> float:
        """The sample variance of one observation (NaN under two observations)."""
        return self.m2 / (self.n - 1) if self.n > 1 else math.nan

    @property
    def variance_of_mean(self) -> float:
        """The variance of the mean (NaN under two observations)."""
        return self.variance / self.n if self.n > 1 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Moments:
        return cls(int(data["n"]), float(data["mean"]), float(data["m2"]))


@dataclass
class AlwaysValid:
    """The running always-valid p-value and confidence interval of one effect.

    Feed it the current estimate and its variance at every look (:meth:`update`); it
    keeps the minimum p-value and the intersection of the intervals seen, which is what
    makes both valid under continuous monitoring.

    Examples
    --------
    >>> av = AlwaysValid(tau=0.01, alpha=0.05)
    >>> av.update(0.05, 1e-4)
    >>> round(av.p_value, 4), av.rejected
    (0.0027, True)
    >>> av.update(0.0, 1e-4)         # a later look cannot undo the evidence
    >>> round(av.p_value, 4)
    0.0027
    >>> [round(x, 4) for x in av.interval]
    [0.0134, 0.0366]
    """

    tau: float
    alpha: float = 0.05
    p_value: float = 1.0
    lower: float = -math.inf
    upper: float = math.inf
    looks: int = 0

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def update(self, estimate: float, variance: float, null: float = 0.0) -> None:
        """One look at the effect: ``estimate`` with the variance of the estimate."""
        if not (math.isfinite(estimate) and math.isfinite(variance)) or variance <= 0:
            return
        self.looks += 1
        self.p_value = min(self.p_value, msprt_p_value(estimate, variance, self.tau, null))
        radius = confidence_radius(variance, self.tau, self.alpha)
        self.lower = max(self.lower, estimate - radius)
        self.upper = min(self.upper, estimate + radius)

    @property
    def interval(self) -> tuple[float, float]:
        return self.lower, self.upper

    @property
    def rejected(self) -> bool:
        """Whether the null has been rejected at ``alpha`` (and stays rejected)."""
        return self.p_value <= self.alpha

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlwaysValid:
        return cls(
            tau=float(data["tau"]),
            alpha=float(data["alpha"]),
            p_value=float(data["p_value"]),
            lower=float(data["lower"]),
            upper=float(data["upper"]),
            looks=int(data["looks"]),
        )


class SequentialDifference:
    """Always-valid test of ``mean(treatment) - ratio * mean(control)`` on two
    independent samples.

    With 0/1 observations it compares positive-label rates (click-through); with a
    bounded per-label loss (clipped log loss, Brier) it compares mean losses. ``ratio``
    other than 1 tests a relative difference: ``ratio=0.95`` asks whether the treatment
    is below 95 % of the control. The variance is the plug-in one,
    ``var_t / n_t + ratio**2 var_c / n_c``.

    Parameters
    ----------
    tau
        The mixture's standard deviation, on the scale of the difference.
    alpha
        The level.
    ratio
        The multiplier of the control's mean.

    Examples
    --------
    >>> test = SequentialDifference(tau=0.02, alpha=0.05)
    >>> for i in range(2000):
    ...     test.update_control(float(i % 10 == 0))
    ...     test.update_treatment(float(i % 10 == 1))
    >>> abs(test.estimate) < 1e-9, test.significant, test.p_value
    (True, False, 1.0)
    >>> test.counts
    (2000, 2000)
    >>> SequentialDifference.from_dict(test.to_dict()).to_dict() == test.to_dict()
    True
    """

    def __init__(self, tau: float, alpha: float = 0.05, ratio: float = 1.0) -> None:
        self.control = Moments()
        self.treatment = Moments()
        self.ratio = ratio
        self.evidence = AlwaysValid(tau, alpha)

    def update_control(self, x: float) -> None:
        self.control.update(x)
        self.look()

    def update_treatment(self, x: float) -> None:
        self.treatment.update(x)
        self.look()

    def update_many(self, control: Moments, treatment: Moments) -> None:
        """Add a batch of each sample, then look once."""
        self.control.merge(control)
        self.treatment.merge(treatment)
        self.look()

    @property
    def estimate(self) -> float:
        return self.treatment.mean - self.ratio * self.control.mean

    @property
    def variance(self) -> float:
        """The variance of :attr:`estimate` (NaN until each sample has two values)."""
        return self.treatment.variance_of_mean + self.ratio**2 * self.control.variance_of_mean

    def look(self) -> None:
        """Update the running p-value and interval with the current estimate."""
        self.evidence.update(self.estimate, self.variance)

    @property
    def p_value(self) -> float:
        return self.evidence.p_value

    @property
    def interval(self) -> tuple[float, float]:
        return self.evidence.interval

    @property
    def significant(self) -> bool:
        return self.evidence.rejected

    @property
    def counts(self) -> tuple[int, int]:
        """Observations of the control and of the treatment."""
        return self.control.n, self.treatment.n

    def to_dict(self) -> dict[str, Any]:
        return {
            "control": self.control.to_dict(),
            "treatment": self.treatment.to_dict(),
            "ratio": self.ratio,
            "evidence": self.evidence.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequentialDifference:
        evidence = AlwaysValid.from_dict(data["evidence"])
        test = cls(evidence.tau, evidence.alpha, float(data["ratio"]))
        test.control = Moments.from_dict(data["control"])
        test.treatment = Moments.from_dict(data["treatment"])
        test.evidence = evidence
        return test


class PairedRelativeDrop:
    """Always-valid one-sided test: is the candidate more than ``drop`` (relative)
    worse than its reference, on the same labels?

    Each label gives a pair (the candidate's value, the reference's value) of a per-label
    metric: a loss when ``higher_is_better`` is false (worse: the candidate's mean loss
    above ``(1 + drop)`` times the reference's), a score such as a hit when it is true
    (worse: below ``(1 - drop)`` times). The test runs on the paired differences
    ``d = candidate - (1 + drop) * reference`` (sign turned so that positive is worse),
    whose variance is much smaller than two independent samples' would be; the drop is
    declared when the always-valid p-value is at most ``alpha`` and the estimate is on
    the worse side (a two-sided mSPRT used one-sided: conservative).

    Examples
    --------
    >>> test = PairedRelativeDrop(drop=0.05, tau=0.02)
    >>> for i in range(3000):
    ...     reference = 0.20 + 0.1 * (i % 7) / 7
    ...     test.update(reference * 1.3, reference)    # 30 % worse on every label
    >>> test.detected, round(test.relative_change, 3)
    (True, 0.3)
    >>> fine = PairedRelativeDrop(drop=0.05, tau=0.02)
    >>> for i in range(3000):
    ...     fine.update(0.2 + 0.01 * (i % 3), 0.2 + 0.01 * ((i + 1) % 3))
    >>> fine.detected
    False
    """

    def __init__(
        self,
        drop: float = 0.05,
        tau: float = 0.01,
        alpha: float = 0.05,
        higher_is_better: bool = False,
    ) -> None:
        if not 0 <= drop < 1:
            raise ValueError(f"drop must be in [0, 1), got {drop}")
        self.drop = drop
        self.higher_is_better = higher_is_better
        self.differences = Moments()
        self.candidate = Moments()
        self.reference = Moments()
        self.evidence = AlwaysValid(tau, alpha)

    def _difference(self, candidate: float, reference: float) -> float:
        if self.higher_is_better:
            return (1 - self.drop) * reference - candidate
        return candidate - (1 + self.drop) * reference

    def update(self, candidate: float, reference: float, look: bool = True) -> None:
        """One label's pair; ``look=False`` defers the look (see :meth:`look`)."""
        self.candidate.update(candidate)
        self.reference.update(reference)
        self.differences.update(self._difference(candidate, reference))
        if look:
            self.look()

    def look(self) -> None:
        self.evidence.update(self.differences.mean, self.differences.variance_of_mean)

    @property
    def n(self) -> int:
        return self.differences.n

    @property
    def relative_change(self) -> float:
        """The candidate's mean over the reference's, minus one (NaN without labels)."""
        if self.reference.n == 0 or self.reference.mean == 0:
            return math.nan
        return self.candidate.mean / self.reference.mean - 1

    @property
    def p_value(self) -> float:
        return self.evidence.p_value

    @property
    def interval(self) -> tuple[float, float]:
        """The confidence interval of the paired difference (positive: worse)."""
        return self.evidence.interval

    @property
    def detected(self) -> bool:
        """Significantly more than ``drop`` worse: the interval lies above zero."""
        return self.evidence.rejected and self.evidence.lower > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "drop": self.drop,
            "higher_is_better": self.higher_is_better,
            "differences": self.differences.to_dict(),
            "candidate": self.candidate.to_dict(),
            "reference": self.reference.to_dict(),
            "evidence": self.evidence.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairedRelativeDrop:
        evidence = AlwaysValid.from_dict(data["evidence"])
        test = cls(
            float(data["drop"]), evidence.tau, evidence.alpha, bool(data["higher_is_better"])
        )
        test.differences = Moments.from_dict(data["differences"])
        test.candidate = Moments.from_dict(data["candidate"])
        test.reference = Moments.from_dict(data["reference"])
        test.evidence = evidence
        return test
