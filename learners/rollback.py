"""The rollback rule: the live model against its own last-known-good version.

A model that learns on every label can degrade by itself (poisoned or shifted labels, a
broken feature). A frozen copy of its last good version scores the same events in
shadow; both are judged on the same labels, and when the live model's per-label loss is
more than ``drop`` (5 % by default, the design guide's rule) worse than the copy's, with
always-valid significance (:class:`metrics.sequential.PairedRelativeDrop`), the rule
answers ``rollback`` and the caller restores that version.

Comparing on the same labels is what keeps a genuine concept change from causing a
rollback: the frozen copy meets the new concept too, and a learning model that adapts
is better than it there, not worse.

The comparison judges the recent past (:class:`metrics.restarting.RestartingDrop`, a
CUSUM-style e-detector): at every look where the live model is at least as good as the
copy, the comparison starts again. A model fed flipped labels learns them and looks
better than the copy while they last; that credit no longer dilutes the drop that shows
once the labels are right again. The guarantee under continuous monitoring of a stream
that never ends is an average run length: at least ``min_labels / alpha`` labels between
false rollbacks at the null's boundary (a healthy model, well inside it, far more).

No rollback loop: after a rollback the restored version must itself collect
``min_labels_after_rollback`` labels before another rollback can be decided
(hysteresis), and the comparison starts again. :meth:`RollbackRule.refresh` (the copy
replaced by a newer good version) also starts it again. A copy may be refreshed only
when :attr:`RollbackRule.refresh_allowed`: the live model is at least as good at this
look, and the current *span* (the labels since the candidate for the next copy was
taken, :meth:`RollbackRule.new_span`) was clean: no look of it found the live model
worse than the copy over a whole minimum sample. The caller refreshes the copy with that
candidate, a snapshot taken a span earlier, never with the live model as it is now: a
model poisoned in the span is followed, once the labels are right again, by the live
model doing worse, which spoils the span before its candidate can become the copy.

The primary metric is a per-label loss (``log_loss`` or ``brier``): the copy serves
nothing, so a positive-label rate of served events does not exist for it.

Examples
--------
>>> rule = RollbackRule(RollbackConfig(min_labels=500, min_labels_after_rollback=1000))
>>> for i in range(2000):
...     y = i % 4 == 0
...     rule.observe_label(y, champion_score=0.5, reference_score=0.3 if y else 0.2)
>>> decision = rule.decide(at=7200.0, event_index=2000)
>>> decision.action, decision.p_value < 0.05, decision.counts["champion"]["labels"]
('rollback', True, 2000)
>>> rule.decide().reason     # the restored version must prove itself first
'0 labels since the rollback, 1000 needed before another'
>>> RollbackRule.from_dict(rule.to_dict()).to_dict() == rule.to_dict()
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamlearn.learners.arm_stats import label_value
from streamlearn.learners.decision import Action, Decision
from streamlearn.metrics.restarting import RestartingDrop
from streamlearn.metrics.sequential import PairedRelativeDrop

__all__ = ["RollbackConfig", "RollbackRule"]


class RollbackConfig(BaseModel):
    """When the live model goes back to its last-known-good version."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    metric: Literal["log_loss", "brier"] = "log_loss"
    drop: float = Field(
        default=0.05, ge=0, lt=1, description="Relative degradation that triggers a rollback."
    )
    alpha: float = Field(default=0.05, gt=0, lt=1)
    min_labels: int = Field(default=1000, gt=1, description="Labels before any decision.")
    min_labels_after_rollback: int = Field(
        default=5000, ge=0, description="Labels the restored version collects first."
    )
    mixture_sd: float | None = Field(
        default=None,
        gt=0,
        description="The mSPRT mixture's standard deviation on the paired difference; by"
        " default ``drop`` times the copy's mean loss at the first look.",
    )
    log_loss_eps: float = Field(default=1e-3, gt=0, lt=0.5)


class RollbackRule:
    """The comparison of the live model (``champion``) with its last-known-good copy.

    Parameters
    ----------
    config
        The rule's thresholds.
    """

    def __init__(self, config: RollbackConfig | None = None) -> None:
        self.config = config or RollbackConfig()
        self.detector = self._new_detector()
        self.labels_since_rollback: int | None = None
        self.rollbacks = 0
        self.decisions: list[Decision] = []
        #: Whether the live model was at least as good as the copy at the last look.
        self.at_least_as_good = False
        #: Whether no look since :meth:`new_span` found the live model worse over a
        #: whole minimum sample.
        self.span_clean = True
        #: Labels the copy had learned when it was taken (None: not known).
        self.reference_labels: int | None = None
        #: Labels observed since the rule started.
        self.observed = 0
        #: Labels and positives since the last look, and their decayed history.
        self.block = [0, 0]
        self.label_history = [0.0, 0.0]
        #: Labels the history remembers (its decay); the caller sets it.
        self.label_window = 5000
        #: Whether the labels of the last look were like the history's, and the labels
        #: since they were last.
        self.labels_stable = True
        self.unsteady = 0

    def observe_label(self, y_true: bool, champion_score: float, reference_score: float) -> None:
        """One label, with the live model's and the copy's scores of its event."""
        metric, eps = self.config.metric, self.config.log_loss_eps
        pair = (
            label_value(metric, y_true, champion_score, eps),
            label_value(metric, y_true, reference_score, eps),
        )
        if self.labels_since_rollback is not None:
            self.labels_since_rollback += 1
        self.observed += 1
        self.block[0] += 1
        self.block[1] += y_true
        self.detector.update(*pair)

    def _judge_labels(self) -> None:
        """Whether the labels since the last look have the positive rate of the steady
        ones before: a broken label pipeline (flipped, all negative) moves it at once,
        and no copy is refreshed while it does. Only a steady block joins the history,
        unless the rate stayed elsewhere for ``label_window`` labels: then the new rate
        is taken as the world's and the history starts from it."""
        n, k = self.block
        if n == 0:
            return
        self.block = [0, 0]
        seen, positives = self.label_history
        if seen >= 100:
            p0 = min(max(positives / seen, 1e-3), 1 - 1e-3)
            se = math.sqrt(p0 * (1 - p0) * (1 / n + 1 / seen))
            self.labels_stable = abs(k / n - p0) <= 4 * se + 0.5 * min(p0, 1 - p0)
        if not self.labels_stable:
            self.span_clean = False
            self.unsteady += n
            if self.unsteady < self.label_window:
                return
            seen, positives, self.labels_stable = 0.0, 0.0, True
        self.unsteady = 0
        decay = math.exp(-n / self.label_window)
        self.label_history = [seen * decay + n, positives * decay + k]

    def _new_detector(self) -> RestartingDrop:
        config = self.config
        return RestartingDrop(config.drop, config.alpha, config.min_labels, config.mixture_sd)

    @property
    def test(self) -> PairedRelativeDrop:
        """The current comparison: the labels since the live model was last fine."""
        return self.detector.segment

    @property
    def labels(self) -> int:
        """Labels in the current comparison."""
        return self.detector.n

    @property
    def refresh_allowed(self) -> bool:
        """Whether the span's candidate may become the new last-known-good copy: the live
        model at least as good as the copy at this look, and the span clean."""
        return self.at_least_as_good and self.span_clean and self.labels_stable

    def new_span(self) -> None:
        """A new candidate for the copy was taken: judge the span from here."""
        self.span_clean = True

    def decide(self, at: float | None = None, event_index: int | None = None) -> Decision:
        """``rollback`` (recorded in :attr:`decisions`; the comparison then starts again
        and the hysteresis begins) or ``continue``."""
        self._judge_labels()
        since = self.labels_since_rollback
        if since is not None and since < self.config.min_labels_after_rollback:
            reason = (
                f"{since} labels since the rollback,"
                f" {self.config.min_labels_after_rollback} needed before another"
            )
            return Decision("continue", reason=reason, timestamp=at, event_index=event_index)
        test = self.test
        looked = self.detector.look()
        self.at_least_as_good = looked == "restart"
        if looked == "worse":
            self.span_clean = False
        if looked == "restart":
            reason = (
                f"{self.config.metric} {test.relative_change:+.2%} against the last-known-good"
                f" version over {test.n} labels: at least as good, the comparison starts again"
            )
            return Decision("continue", reason=reason, timestamp=at, event_index=event_index)
        if test.n < self.config.min_labels:
            reason = f"{test.n} labels, {self.config.min_labels} needed"
            return Decision("continue", reason=reason, timestamp=at, event_index=event_index)
        worse = looked == "detected"
        if worse:
            action: Action = "rollback"
            verdict = f"significantly worse than the {self.config.drop:.0%} limit"
        else:
            action, verdict = "continue", f"no significant drop over {self.config.drop:.0%}"
        decision = Decision(
            action,
            "last_known_good" if worse else None,
            f"{self.config.metric} {test.relative_change:+.2%} against the last-known-good"
            f" version; {verdict}",
            p_value=test.p_value,
            estimate=test.differences.mean,
            interval=test.interval,
            primary={"champion": test.candidate.mean, "last_known_good": test.reference.mean},
            counts={"champion": {"labels": test.n}, "last_known_good": {"labels": test.n}},
            timestamp=at,
            event_index=event_index,
        )
        if not worse:
            return decision
        self.decisions.append(decision)
        self.rollbacks += 1
        self.labels_since_rollback = 0
        self._reset()
        return decision

    def _reset(self) -> None:
        self.detector.reset(self.config.mixture_sd)
        self.at_least_as_good = False

    def refresh(self, reference_labels: int | None = None) -> None:
        """The copy was replaced by a newer good version (which had learned
        ``reference_labels`` labels): compare from scratch."""
        self._reset()
        self.reference_labels = reference_labels

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "detector": self.detector.to_dict(),
            "labels_since_rollback": self.labels_since_rollback,
            "rollbacks": self.rollbacks,
            "decisions": [d.to_dict() for d in self.decisions],
            "at_least_as_good": self.at_least_as_good,
            "span_clean": self.span_clean,
            "reference_labels": self.reference_labels,
            "observed": self.observed,
            "block": list(self.block),
            "label_history": list(self.label_history),
            "label_window": self.label_window,
            "labels_stable": self.labels_stable,
            "unsteady": self.unsteady,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RollbackRule:
        rule = cls(RollbackConfig.model_validate(data["config"]))
        rule.detector = RestartingDrop.from_dict(data["detector"])
        rule.labels_since_rollback = data["labels_since_rollback"]
        rule.rollbacks = int(data["rollbacks"])
        rule.decisions = [Decision.from_dict(d) for d in data["decisions"]]
        rule.at_least_as_good = bool(data["at_least_as_good"])
        rule.span_clean = bool(data["span_clean"])
        rule.reference_labels = data["reference_labels"]
        rule.observed = int(data["observed"])
        rule.block = [int(x) for x in data["block"]]
        rule.label_history = [float(x) for x in data["label_history"]]
        rule.label_window = int(data["label_window"])
        rule.labels_stable = bool(data["labels_stable"])
        rule.unsteady = int(data["unsteady"])
        return rule
