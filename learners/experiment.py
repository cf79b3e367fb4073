"""An experiment's arms, what they measured, and its decisions, as pure logic.

The worker (or the backtest) tells an :class:`Experiment` what each arm did:
:meth:`Experiment.observe_prediction` per scored event (its latency, whether scoring
went wrong, its score) and :meth:`Experiment.observe_label` per label of an event the
arm served (in ``ab`` mode) or scored (in ``shadow`` mode); then asks
:meth:`Experiment.decide` after each batch. The answer is a :class:`Decision` with its
evidence:

- ``revert`` (an arm): a guardrail breached, or the treatment is significantly worse on
  the primary metric; at once;
- ``promote`` (an arm): significantly better, every guardrail holding, and the minimum
  sample reached; ``ready_to_promote`` instead when promotion is manual (then
  :meth:`Experiment.promote` ends it);
- ``stop``: the maximum duration passed without a decision;
- ``continue``.

The primary metric is ``positive_rate`` (the positive-label rate of served events: the
click-through rate; ``ab`` only, a shadow arm serves nothing), ``log_loss`` (clipped) or
``brier``. ROC AUC has no per-label form that a sequential test of means applies to, so
it is not offered as a primary metric. Each treatment is compared with the control (the
first arm) by an always-valid mSPRT (:mod:`metrics.sequential`) at ``alpha`` divided by
the number of treatments, so the experiment can be looked at after every batch. The
variance of an arm's mean counts units, not labels (:class:`metrics.clustered.
ClusteredMoments`): the labels of one user are correlated, and a per-label variance
would declare winners that are a few heavy users (``python -m bench.rollout_units``).

Guardrails are limits checked once both arms have ``min_predictions`` predictions: an
arm's p99 scoring latency (absolute, and as a ratio to the control's), its error ratio
(errors over predictions), and the shift of its predicted-positive rate (scores at or
above ``threshold``) relative to the control's.

Examples
--------
>>> config = ExperimentConfig(
...     id="exp-7", arms={"champion": 0.5, "challenger": 0.5}, primary="positive_rate",
...     min_labels_per_arm=500, guardrails={"min_predictions": 500},
... )
>>> experiment = Experiment(config, started_at=0.0)
>>> for i in range(20_000):
...     arm = "champion" if i % 2 else "challenger"
...     experiment.observe_prediction(arm, latency_s=0.002, score=0.1)
...     rate = 0.05 if arm == "champion" else 0.08
...     experiment.observe_label(arm, y_true=(i // 2) % 100 < 100 * rate, y_pred=0.1)
>>> decision = experiment.decide(at=3600.0, event_index=20_000)
>>> decision.action, decision.arm, decision.p_value < 0.05
('promote', 'challenger', True)
>>> decision.counts["challenger"]
{'predictions': 10000, 'labels': 10000, 'errors': 0}
>>> Experiment.from_dict(experiment.to_dict()).to_dict() == experiment.to_dict()
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamlearn.learners.arm_stats import ArmStats, Primary, higher_is_better, label_value
from streamlearn.learners.decision import Action, Decision, finite_or_none
from streamlearn.metrics.sequential import AlwaysValid

__all__ = [
    "RATE_FLOOR",
    "Experiment",
    "ExperimentConfig",
    "GuardrailConfig",
    "positive_rate_shift",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


#: Positives' worth below which a predicted-positive rate is not compared relatively:
#: one positive more or less in the control would breach every treatment that has none.
RATE_FLOOR = 10


def positive_rate_shift(rate: float, control_rate: float, control_predictions: int) -> float:
    """The relative shift of a treatment's predicted-positive ``rate`` from the control's,
    the control's rate taken as at least :data:`RATE_FLOOR` over its predictions.

    >>> positive_rate_shift(0.2, 0.1, 1000)
    1.0
    >>> positive_rate_shift(0.0, 0.001, 1000)  # one positive: judged against ten
    0.1
    """
    return abs(rate - control_rate) / max(control_rate, RATE_FLOOR / max(1, control_predictions))


class GuardrailConfig(BaseModel):
    """Limits that revert a treatment at once when breached (``None``: not checked)."""

    model_config = _FROZEN

    latency_p99_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="Most p99 scoring latency of an arm, in seconds.",
    )
    latency_p99_ratio: float | None = Field(
        default=1.5,
        gt=1,
        le=1000,
        description="Most p99 scoring latency of a treatment over the control's.",
    )
    error_ratio: float | None = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Most share of an arm's events that failed (scoring error, dead letter).",
    )
    positive_rate_shift: float | None = Field(
        default=0.5,
        gt=0,
        le=1000,
        description="Most relative shift of a treatment's predicted-positive rate from the"
        " control's (0.5: between half and one and a half times).",
    )
    threshold: float = Field(
        default=0.5, gt=0, lt=1, description="A score at or above is positive."
    )
    min_predictions: int = Field(
        default=1000,
        gt=0,
        le=1_000_000_000,
        description="Predictions per arm before any guardrail is judged.",
    )


class ExperimentConfig(BaseModel):
    """One experiment: its arms (the first is the control), mode, metric and limits."""

    model_config = _FROZEN

    id: str = Field(min_length=1, description="Salts the assignment; names the experiment.")
    mode: Literal["shadow", "ab"] = "ab"
    arms: dict[str, float] = Field(
        default_factory=lambda: {"champion": 0.9, "challenger": 0.1},
        description="Arm -> share of the units; the first arm is the control.",
    )
    unit_field: str = "user_id"
    primary: Primary = "positive_rate"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    min_labels_per_arm: int = Field(default=1000, gt=1, le=1_000_000_000)
    max_duration_s: float | None = Field(
        default=14 * 86_400.0,
        gt=0,
        le=366 * 86_400.0,
        description="Event time after which the experiment stops.",
    )
    promotion: Literal["auto", "manual"] = "auto"
    mixture_sd: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="The mSPRT mixture's standard deviation, in the metric's units; by"
        " default ``expected_relative_effect`` times the control's mean at the first look.",
    )
    expected_relative_effect: float = Field(default=0.1, gt=0, le=100)
    log_loss_eps: float = Field(default=1e-3, gt=0, lt=0.5)
    guardrails: GuardrailConfig = Field(default_factory=GuardrailConfig)

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if len(self.arms) < 2:
            raise ValueError(f"an experiment needs a control and a treatment, got {self.arms}")
        if self.mode == "ab":
            total = math.fsum(self.arms.values())
            if not math.isclose(total, 1.0, abs_tol=1e-9) or min(self.arms.values()) <= 0:
                raise ValueError(f"ab arm shares must be > 0 and sum to 1, got {self.arms}")
        elif self.primary == "positive_rate":
            raise ValueError(
                "a shadow arm serves nothing, so it has no positive-label rate: use"
                " primary 'log_loss' or 'brier' in shadow mode"
            )
        return self

    @property
    def control(self) -> str:
        return next(iter(self.arms))

    @property
    def treatments(self) -> list[str]:
        return list(self.arms)[1:]


Status = Literal["running", "ready_to_promote", "promoted", "reverted", "stopped"]
_TERMINAL = ("promoted", "reverted", "stopped")


class Experiment:
    """The state of one experiment and its decisions; see the module docstring.

    Parameters
    ----------
    config
        The experiment.
    started_at
        Its start, in event-time seconds; by default the first ``at`` given to
        :meth:`decide`.
    """

    def __init__(self, config: ExperimentConfig, started_at: float | None = None) -> None:
        self.config = config
        self.started_at = started_at
        self.arms: dict[str, ArmStats] = {arm: ArmStats() for arm in config.arms}
        self.evidence: dict[str, AlwaysValid] = {}
        self.reverted: list[str] = []
        self.status: Status = "running"
        self.winner: str | None = None
        self.decisions: list[Decision] = []

    # -- what the arms did ------------------------------------------------------------

    def _arm(self, arm: str) -> ArmStats:
        try:
            return self.arms[arm]
        except KeyError:
            raise KeyError(f"unknown arm {arm!r}: the arms are {list(self.arms)}") from None

    def observe_prediction(
        self, arm: str, latency_s: float, ok: bool = True, score: float | None = None
    ) -> None:
        """One event scored (``ok``) or failed (a scoring error, a dead letter) by ``arm``."""
        stats = self._arm(arm)
        stats.predictions += 1
        stats.latency.update(latency_s)
        if not ok:
            stats.errors += 1
        elif score is not None and score >= self.config.guardrails.threshold:
            stats.predicted_positive += 1

    def observe_label(self, arm: str, y_true: bool, y_pred: float, unit: str | None = None) -> None:
        """The label of an event ``arm`` served (``ab``) or scored (``shadow``); ``unit``:
        the event's unit (its labels are correlated), None when not known."""
        value = label_value(self.config.primary, y_true, y_pred, self.config.log_loss_eps)
        self._arm(arm).primary.update(value, unit)

    # -- decisions ----------------------------------------------------------------------

    @property
    def active_treatments(self) -> list[str]:
        return [arm for arm in self.config.treatments if arm not in self.reverted]

    def _evidence_of(self, arm: str) -> AlwaysValid | None:
        """The arm's running test, created at its first look with a frozen ``tau``."""
        if arm in self.evidence:
            return self.evidence[arm]
        tau = self.config.mixture_sd
        if tau is None:
            tau = self.config.expected_relative_effect * abs(
                self.arms[self.config.control].primary.mean
            )
        if not tau > 0:
            return None  # a control mean of 0 so far: no scale yet
        alpha = self.config.alpha / len(self.config.treatments)
        self.evidence[arm] = AlwaysValid(tau, alpha)
        return self.evidence[arm]

    def _guardrail_breach(self, arm: str) -> tuple[str, dict[str, dict[str, float]]] | None:
        limits = self.config.guardrails
        control, treatment = self.arms[self.config.control], self.arms[arm]
        if min(control.predictions, treatment.predictions) < limits.min_predictions:
            return None
        p99_t, p99_c = treatment.latency.quantile(0.99), control.latency.quantile(0.99)
        error_ratio = treatment.errors / treatment.predictions
        ok_t = max(1, treatment.predictions - treatment.errors)
        ok_c = max(1, control.predictions - control.errors)
        rate_t, rate_c = treatment.predicted_positive / ok_t, control.predicted_positive / ok_c
        seen = {
            "latency_p99_s": {"value": p99_t, "control": p99_c},
            "error_ratio": {"value": error_ratio, "control": control.errors / control.predictions},
            "predicted_positive_rate": {"value": rate_t, "control": rate_c},
        }
        if limits.latency_p99_s is not None and p99_t > limits.latency_p99_s:
            return f"guardrail latency_p99_s: {p99_t:.4g} s > {limits.latency_p99_s:g} s", seen
        if limits.latency_p99_ratio is not None and p99_t > limits.latency_p99_ratio * p99_c:
            return (
                f"guardrail latency_p99_ratio: {p99_t:.4g} s > {limits.latency_p99_ratio:g}"
                f" x the control's {p99_c:.4g} s",
                seen,
            )
        if limits.error_ratio is not None and error_ratio > limits.error_ratio:
            return f"guardrail error_ratio: {error_ratio:.4g} > {limits.error_ratio:g}", seen
        shift = limits.positive_rate_shift
        if shift is not None and positive_rate_shift(rate_t, rate_c, ok_c) > shift:
            return (
                f"guardrail positive_rate_shift: predicted-positive rate {rate_t:.4g} against"
                f" the control's {rate_c:.4g}, a shift over {shift:g}",
                seen,
            )
        return None

    def _decision(self, action: Action, arm: str | None, reason: str, **evidence: Any) -> Decision:
        return Decision(
            action,
            arm,
            reason,
            primary={name: stats.primary.mean for name, stats in self.arms.items()},
            counts={name: stats.counts() for name, stats in self.arms.items()},
            **evidence,
        )

    def _record(self, decision: Decision) -> Decision:
        self.decisions.append(decision)
        if decision.action == "revert" and decision.arm is not None:
            self.reverted.append(decision.arm)
            if not self.active_treatments:
                self.status = "reverted"
        elif decision.action == "promote":
            self.status, self.winner = "promoted", decision.arm
        elif decision.action == "ready_to_promote":
            self.status, self.winner = "ready_to_promote", decision.arm
        elif decision.action == "stop":
            self.status = "stopped"
        return decision

    def decide(self, at: float | None = None, event_index: int | None = None) -> Decision:
        """Look at every arm once more and decide; ``at`` is the event time in seconds.

        Non-``continue`` decisions are recorded in :attr:`decisions`; after the
        experiment ended, the decision that ended it is returned again.
        """
        if self.status in _TERMINAL:
            return self.decisions[-1]
        if self.started_at is None:
            self.started_at = at
        when = {"timestamp": at, "event_index": event_index}
        for arm in self.active_treatments:
            breach = self._guardrail_breach(arm)
            if breach is not None:
                reason, seen = breach
                return self._record(self._decision("revert", arm, reason, guardrails=seen, **when))
        control = self.arms[self.config.control].primary
        better: list[tuple[float, str, dict[str, Any]]] = []
        for arm in self.active_treatments:
            treatment = self.arms[arm].primary
            if min(control.n, treatment.n) < self.config.min_labels_per_arm:
                continue
            evidence = self._evidence_of(arm)
            if evidence is None:
                continue
            estimate = treatment.mean - control.mean
            evidence.update(estimate, treatment.variance_of_mean + control.variance_of_mean)
            if not evidence.rejected:
                continue
            lower, upper = evidence.interval
            improves = lower > 0 if higher_is_better(self.config.primary) else upper < 0
            worsens = upper < 0 if higher_is_better(self.config.primary) else lower > 0
            stats = {"p_value": evidence.p_value, "estimate": estimate, "interval": (lower, upper)}
            if worsens:
                reason = f"{self.config.primary} significantly worse than {self.config.control}"
                return self._record(self._decision("revert", arm, reason, **stats, **when))
            if improves:
                better.append((abs(estimate), arm, stats))
        if better and self.status != "ready_to_promote":
            _, arm, stats = max(better)
            action: Action = "promote" if self.config.promotion == "auto" else "ready_to_promote"
            reason = (
                f"{self.config.primary} significantly better than {self.config.control},"
                " guardrails holding"
            )
            return self._record(self._decision(action, arm, reason, **stats, **when))
        limit = self.config.max_duration_s
        if (
            limit is not None
            and at is not None
            and self.started_at is not None
            and at - self.started_at >= limit
        ):
            reason = f"maximum duration of {limit:g} s reached without a decision"
            return self._record(self._decision("stop", None, reason, **when))
        return self._decision("continue", None, self._waiting_for(), **when)

    def _waiting_for(self) -> str:
        if self.status == "ready_to_promote":
            return f"{self.winner} ready to promote: waiting for a manual promotion"
        least = min(self.arms[a].primary.n for a in [self.config.control, *self.active_treatments])
        if least < self.config.min_labels_per_arm:
            return f"{least} labels in the smallest arm, {self.config.min_labels_per_arm} needed"
        return "no significant difference yet"

    def promote(
        self, arm: str, at: float | None = None, reason: str = "promoted by hand"
    ) -> Decision:
        """End the experiment with ``arm`` promoted (the manual promotion)."""
        self._arm(arm)
        self._still_running()
        evidence = self.evidence.get(arm)
        stats: dict[str, Any] = {}
        if evidence is not None:
            stats = {"p_value": evidence.p_value, "interval": evidence.interval}
        return self._record(self._decision("promote", arm, reason, timestamp=at, **stats))

    def revert(
        self, arm: str, at: float | None = None, reason: str = "reverted by hand"
    ) -> Decision:
        """Send ``arm``'s traffic back to the control (the manual revert)."""
        self._arm(arm)
        self._still_running()
        if arm not in self.active_treatments:
            raise ValueError(f"{arm!r} is not a running treatment: {self.active_treatments}")
        return self._record(self._decision("revert", arm, reason, timestamp=at))

    def stop(self, at: float | None = None, reason: str = "stopped by hand") -> Decision:
        """End the experiment without a winner: every unit back to the control."""
        self._still_running()
        return self._record(self._decision("stop", None, reason, timestamp=at))

    def _still_running(self) -> None:
        if self.status in _TERMINAL:
            last = self.decisions[-1].reason
            raise ValueError(f"experiment {self.config.id} has ended ({self.status}): {last}")

    # -- reports and state ------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Per arm events, labels, primary metric and the interval of its difference with
        the control (the backtest's ``summary.json`` shape), and the decisions."""
        arms: dict[str, Any] = {}
        for name, stats in self.arms.items():
            evidence = self.evidence.get(name)
            arms[name] = {
                "events": stats.predictions,
                "labels": stats.primary.n,
                "primary": finite_or_none(stats.primary.mean) if stats.primary.n else None,
                "ci": None
                if evidence is None
                else [finite_or_none(evidence.lower), finite_or_none(evidence.upper)],
                "p_value": None if evidence is None else evidence.p_value,
            }
        return {
            "id": self.config.id,
            "mode": self.config.mode,
            "primary": self.config.primary,
            "status": self.status,
            "arms": arms,
            "decisions": [d.to_dict() for d in self.decisions],
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart (JSON-compatible)."""
        return {
            "config": self.config.model_dump(mode="json"),
            "started_at": self.started_at,
            "arms": {name: stats.to_dict() for name, stats in self.arms.items()},
            "evidence": {name: ev.to_dict() for name, ev in self.evidence.items()},
            "reverted": list(self.reverted),
            "status": self.status,
            "winner": self.winner,
            "decisions": [d.to_dict() for d in self.decisions],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Experiment:
        experiment = cls(ExperimentConfig.model_validate(data["config"]), data["started_at"])
        experiment.arms = {name: ArmStats.from_dict(s) for name, s in data["arms"].items()}
        experiment.evidence = {
            name: AlwaysValid.from_dict(ev) for name, ev in data["evidence"].items()
        }
        experiment.reverted = list(data["reverted"])
        experiment.status = data["status"]
        experiment.winner = data["winner"]
        experiment.decisions = [Decision.from_dict(d) for d in data["decisions"]]
        return experiment
