"""A paired relative-drop test that judges the recent past: restarted while all is well.

:class:`metrics.sequential.PairedRelativeDrop` compares a candidate with its reference
on every label since it started. Watching a model that never stops learning, that is
the wrong question: a model fed corrupted labels for a while learns them, looks much
better than a frozen reference *on them*, and that credit dilutes the drop that follows
once the labels are right again; the cumulative test may never see it.

:class:`RestartingDrop` is a CUSUM-style e-detector built from the same mSPRT: at every
look where the candidate is at least as good as its reference on the labels of the
current comparison (the *segment*), the segment is dropped and a new one starts with
the next label. A degradation is therefore judged from the last time the candidate was
fine, not from the beginning. The mixture's scale ``tau`` is fixed once (``drop`` times
the reference's mean at the first look, unless given) and kept across restarts.

What remains of the guarantee: a segment is an mSPRT looked at as often as one likes
and possibly abandoned at a look, so under the null (on every label the candidate is
at most ``drop`` worse than the reference, pairs independent) each segment ends in a
false alarm with probability at most ``alpha``. A segment can only alarm once it holds
``min_n`` pairs, so the segments that could alarm are at least ``min_n`` pairs long and
the average run length to a false alarm is at least ``min_n / alpha`` pairs (20,000 for
``min_n`` 1,000 at 5 %). Under continuous monitoring of a never-ending stream that is
the honest form of the guarantee: a false alarm rate, not a probability of ever
alarming. It is a worst case at the null's boundary; a healthy candidate, well inside
the null, alarms far more rarely.

Examples
--------
>>> detector = RestartingDrop(drop=0.05, min_n=200)
>>> looks = []
>>> for i in range(3000):        # the candidate far better for a long while ...
...     detector.update(0.10 + 0.01 * (i % 3), 0.30)
...     if i % 100 == 99:
...         looks.append(detector.look())
>>> set(looks), detector.restarts, detector.n
({'restart'}, 30, 0)
>>> for i in range(400):         # ... then 20 % worse: judged on the recent labels only
...     detector.update(0.36 + 0.01 * (i % 3), 0.30)
...     if i % 100 == 99:
...         looks.append(detector.look())
>>> looks[-4:], detector.n, round(detector.segment.relative_change, 2)
(['waiting', 'detected', 'detected', 'detected'], 400, 0.23)
>>> RestartingDrop.from_dict(detector.to_dict()).to_dict() == detector.to_dict()
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from streamlearn.metrics.sequential import AlwaysValid, PairedRelativeDrop

__all__ = ["Look", "RestartingDrop"]

#: What a look found: ``empty`` (no pair yet), ``restart`` (the candidate at least as
#: good: the segment starts again), ``waiting`` (worse, under ``min_n`` pairs),
#: ``worse`` (worse over at least ``min_n`` pairs, not significantly beyond ``drop``),
#: ``detected`` (significantly more than ``drop`` worse).
Look = Literal["empty", "restart", "waiting", "worse", "detected"]


class RestartingDrop:
    """Always-valid detection of a relative drop since the candidate was last fine.

    Parameters
    ----------
    drop
        The relative degradation to detect (5 %: the candidate's mean loss above 1.05
        times the reference's).
    alpha
        Each segment's false-alarm level.
    min_n
        Pairs a segment holds before it may alarm.
    tau
        The mixture's standard deviation on the paired difference; by default ``drop``
        times the reference's mean at the first look.
    higher_is_better
        A score (a hit) rather than a loss.
    """

    def __init__(
        self,
        drop: float = 0.05,
        alpha: float = 0.05,
        min_n: int = 1000,
        tau: float | None = None,
        higher_is_better: bool = False,
    ) -> None:
        if min_n < 2:
            raise ValueError(f"min_n must be at least 2, got {min_n}")
        self.drop, self.alpha, self.min_n = drop, alpha, min_n
        self.higher_is_better = higher_is_better
        self.tau = tau
        self.restarts = 0
        self.segment = self._segment()

    def _segment(self) -> PairedRelativeDrop:
        return PairedRelativeDrop(self.drop, self.tau or 1.0, self.alpha, self.higher_is_better)

    @property
    def n(self) -> int:
        """Pairs in the current segment."""
        return self.segment.n

    @property
    def at_least_as_good(self) -> bool:
        """Whether the candidate's mean is at least as good as the reference's on the
        segment (False on an empty one)."""
        change = self.segment.relative_change
        if self.segment.n == 0 or change != change:  # NaN: a reference mean of 0
            return False
        return change >= 0 if self.higher_is_better else change <= 0

    def update(self, candidate: float, reference: float) -> None:
        """One label's pair; the evidence is only looked at by :meth:`look`."""
        self.segment.update(candidate, reference, look=False)

    def look(self) -> Look:
        """Look at the segment: alarm, restart it, or let it grow."""
        segment = self.segment
        if segment.n == 0:
            return "empty"
        if segment.n >= self.min_n:
            if self.tau is None:
                tau = self.drop * abs(segment.reference.mean)
                self.tau = tau if tau > 0 else 1e-3
                segment.evidence = AlwaysValid(self.tau, self.alpha)
            segment.look()
            if segment.detected:
                return "detected"
        if self.at_least_as_good:
            self.restart()
            return "restart"
        return "worse" if segment.n >= self.min_n else "waiting"

    def restart(self) -> None:
        """Drop the segment; the next pair starts a new one (``tau`` kept)."""
        self.restarts += 1
        self.segment = self._segment()

    def reset(self, tau: float | None = None) -> None:
        """A new reference: start from scratch, ``tau`` fixed again at the first look."""
        self.tau = tau
        self.segment = self._segment()

    def to_dict(self) -> dict[str, Any]:
        return {
            "drop": self.drop,
            "alpha": self.alpha,
            "min_n": self.min_n,
            "tau": self.tau,
            "higher_is_better": self.higher_is_better,
            "restarts": self.restarts,
            "segment": self.segment.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RestartingDrop:
        tau = data["tau"]
        detector = cls(
            float(data["drop"]),
            float(data["alpha"]),
            int(data["min_n"]),
            None if tau is None else float(tau),
            bool(data["higher_is_better"]),
        )
        detector.restarts = int(data["restarts"])
        detector.segment = PairedRelativeDrop.from_dict(data["segment"])
        return detector
