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

No rollback loop: after a rollback the restored version must itself collect
``min_labels_after_rollback`` labels before another rollback can be decided
(hysteresis), and the comparison starts again. :meth:`RollbackRule.refresh` (the copy
replaced by a newer good version, at a checkpoint) also starts the comparison again; a
checkpoint should refresh the copy only when :attr:`RollbackRule.refresh_allowed`, so a
model that degrades slowly never becomes its own reference.

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

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamlearn.learners.arm_stats import label_value
from streamlearn.learners.decision import Action, Decision
from streamlearn.metrics.sequential import AlwaysValid, PairedRelativeDrop

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
        self.test = self._new_test()
        self.scaled = False
        self.labels_since_rollback: int | None = None
        self.rollbacks = 0
        self.decisions: list[Decision] = []

    def observe_label(self, y_true: bool, champion_score: float, reference_score: float) -> None:
        """One label, with the live model's and the copy's scores of its event."""
        metric, eps = self.config.metric, self.config.log_loss_eps
        pair = (
            label_value(metric, y_true, champion_score, eps),
            label_value(metric, y_true, reference_score, eps),
        )
        if self.labels_since_rollback is not None:
            self.labels_since_rollback += 1
        self.test.update(*pair, look=False)

    def _new_test(self) -> PairedRelativeDrop:
        tau = self.config.mixture_sd or 1.0  # replaced at the first look unless configured
        return PairedRelativeDrop(self.config.drop, tau, self.config.alpha)

    def _scale(self) -> None:
        """Fix the mixture's scale at the first look, before any evidence is kept."""
        if self.config.mixture_sd is None:
            tau = self.config.drop * abs(self.test.reference.mean)
            self.test.evidence = AlwaysValid(tau if tau > 0 else 1e-3, self.config.alpha)
        self.scaled = True

    @property
    def labels(self) -> int:
        """Labels in the current comparison."""
        return self.test.n

    @property
    def refresh_allowed(self) -> bool:
        """Whether the live model may become the new last-known-good copy: a full
        comparison in which it is at least as good as the copy."""
        return self.test.n >= self.config.min_labels and self.test.relative_change <= 0

    def decide(self, at: float | None = None, event_index: int | None = None) -> Decision:
        """``rollback`` (recorded in :attr:`decisions`; the comparison then starts again
        and the hysteresis begins) or ``continue``."""
        since = self.labels_since_rollback
        if since is not None and since < self.config.min_labels_after_rollback:
            reason = (
                f"{since} labels since the rollback,"
                f" {self.config.min_labels_after_rollback} needed before another"
            )
            return Decision("continue", reason=reason, timestamp=at, event_index=event_index)
        test = self.test
        if test.n < self.config.min_labels:
            reason = f"{self.labels} labels, {self.config.min_labels} needed"
            return Decision("continue", reason=reason, timestamp=at, event_index=event_index)
        if not self.scaled:
            self._scale()
        test.look()
        worse = test.detected
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
        self.test = self._new_test()
        self.scaled = False

    def refresh(self) -> None:
        """The copy was replaced by a newer good version: compare from scratch."""
        self._reset()

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "test": self.test.to_dict(),
            "scaled": self.scaled,
            "labels_since_rollback": self.labels_since_rollback,
            "rollbacks": self.rollbacks,
            "decisions": [d.to_dict() for d in self.decisions],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RollbackRule:
        rule = cls(RollbackConfig.model_validate(data["config"]))
        rule.test = PairedRelativeDrop.from_dict(data["test"])
        rule.scaled = bool(data["scaled"])
        rule.labels_since_rollback = data["labels_since_rollback"]
        rule.rollbacks = int(data["rollbacks"])
        rule.decisions = [Decision.from_dict(d) for d in data["decisions"]]
        return rule
