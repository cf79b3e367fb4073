"""An experiment and the rollback rule run by the processor: arms served, labels credited.

The decisions themselves are pure logic in :mod:`learners.experiment` and
:mod:`learners.rollback`; this module feeds them from a batch's events and labels and
applies what they decide, with no I/O:

- :class:`ExperimentRun`: which arm serves an event (``ab``: the stable assignment of
  its unit, :class:`learners.assignment.Assignment`; ``shadow``: the control), which
  arms learn a label (every arm, or with ``learn="own_arm"`` only the arm that served
  its event), what each arm measured, and the decision after each batch. A ``revert``
  sends every later event of the reverted arm's units to the control (the treatment
  keeps scoring in shadow), a ``promote`` serves the winner to everyone, a ``stop``
  (the maximum duration) goes back to the control.
- :class:`RollbackRun` (:mod:`stream.rollback_run`, re-exported here): the live model
  against a frozen last-known-good copy that scores in shadow and never learns a label.

The served arm of an event is kept with what it was scored with (the processor's
recent events, :class:`stream.learning.Scored`), not recomputed from the snapshot: the
assignment is a pure function of the unit, but the served arm also depends on the
decisions taken since (a revert, a promotion), and the snapshot keeps the event's
context, not its ids. A label whose event was rebuilt from its snapshot (an event
older than the recent ones, or after a restart) credits no arm and is learned by every
arm: the other arms' scores of that event are not known either.

Examples
--------
>>> from streamlearn.learners.experiment import ExperimentConfig
>>> run = ExperimentRun(ExperimentConfig(id="e", arms={"a": 0.5, "b": 0.5}))
>>> arm = run.serving({"user_id": "u1"})
>>> arm in ("a", "b"), run.serving({"user_id": "u1"}) == arm
(True, True)
>>> run.not_learning(arm)
frozenset()
>>> ExperimentRun(run.experiment.config, learn="own_arm").not_learning("b")
frozenset({'a'})
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from streamlearn.features.schema import Event
from streamlearn.learners.assignment import Assignment, unit_of
from streamlearn.learners.decision import Decision, finite_or_none
from streamlearn.learners.experiment import Experiment, ExperimentConfig
from streamlearn.learners.models import score
from streamlearn.metrics.arm_monitoring import ArmMonitors, guardrail_limits, guardrail_values
from streamlearn.metrics.monitor import Monitor
from streamlearn.stream.model_guard import ModelSlot
from streamlearn.stream.outputs import BatchOutput
from streamlearn.stream.rollback_run import RollbackRun, follow_inputs

__all__ = ["ExperimentRun", "Learn", "RollbackRun", "ServedArms", "follow_inputs", "primary_of"]

log = logging.getLogger(__name__)

Learn = Literal["all", "own_arm"]
_ENDED_TO_CONTROL = ("reverted", "stopped")


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


class ExperimentRun:
    """One experiment fed by the processor; see the module docstring.

    Parameters
    ----------
    config
        The experiment; its arms are the names of the processor's model slots.
    learn
        ``all``: every arm learns every label; ``own_arm``: an arm learns only the
        labels of the events it served.
    wall_clock
        Whether the arms' scoring latencies are measured (the latency guardrails);
        without, every latency counts as 0 and the run depends only on its records
        (a backtest).
    """

    def __init__(
        self, config: ExperimentConfig, learn: Learn = "all", wall_clock: bool = True
    ) -> None:
        self.experiment = Experiment(config)
        self.learn: Learn = learn
        self.wall_clock = wall_clock
        self.assignment = Assignment(config.id, config.arms, config.unit_field)
        self.last_event_ms: int | None = None
        #: Whether :meth:`after_batch` decides; False when the group decides
        #: (:mod:`stream.experiment_sync`) and this run follows.
        self.decides = True
        #: Each arm's quality and prediction drift, fed what the arm is credited with
        #: (set by the processor from the champion's monitoring settings).
        self.monitors: ArmMonitors | None = None

    @property
    def arms(self) -> list[str]:
        return list(self.experiment.config.arms)

    @property
    def running(self) -> bool:
        return self.experiment.status in ("running", "ready_to_promote")

    def serving(self, event: Mapping[str, Any] | object) -> str:
        """The arm whose score is served for ``event``, given the decisions so far."""
        experiment, config = self.experiment, self.experiment.config
        if experiment.status == "promoted" and experiment.winner is not None:
            return experiment.winner
        if config.mode == "shadow" or experiment.status in _ENDED_TO_CONTROL:
            return config.control
        arm = self.assignment.arm_for(event)
        return config.control if arm in experiment.reverted else arm

    def not_learning(self, arm: str | None) -> frozenset[str]:
        """The arms that do not learn a label of an event ``arm`` served: none, or with
        ``own_arm`` every other arm (slots that are no arm learn every label)."""
        if self.learn == "all" or arm is None:
            return frozenset()
        return frozenset(self.arms) - {arm}

    def observe_scored(
        self,
        served: str,
        scores: Mapping[str, float | None],
        latency_s: Mapping[str, float],
        event_ms: int,
    ) -> None:
        """An event scored: the served arm's prediction (every arm's, in shadow mode)."""
        self.last_event_ms = (
            event_ms if self.last_event_ms is None else max(self.last_event_ms, event_ms)
        )
        shadow = self.experiment.config.mode == "shadow"
        if self.monitors is not None:  # monitored after the experiment's end too
            for arm in self.arms if shadow else (served,):
                p = scores.get(arm)
                if p is not None and math.isfinite(p):
                    self.monitors.observe_prediction(arm, p, event_ms)
        if not self.running:
            return
        for arm in self.arms if shadow else (served,):
            if arm in scores:
                p = scores[arm]
                ok = _finite(p)
                latency = latency_s.get(arm, 0.0) if self.wall_clock else 0.0
                self.experiment.observe_prediction(arm, latency, ok, p if ok else None)

    def unit(self, event: Mapping[str, Any] | object) -> str | None:
        """The event's unit (``unit_field``): its labels are counted together."""
        unit = unit_of(event, self.experiment.config.unit_field)
        return None if unit is None else str(unit)

    def observe_label(
        self,
        arm: str | None,
        scores: Mapping[str, float | None],
        y_true: bool,
        unit: str | None = None,
    ) -> None:
        """A label credited to the arm that served its event (every scoring arm in shadow
        mode); ``arm`` None (not known) credits nothing. ``unit``: the event's unit."""
        if arm is None:
            return
        shadow = self.experiment.config.mode == "shadow"
        for name in self.arms if shadow else (arm,):
            p = scores.get(name)
            if p is not None and math.isfinite(p):
                if self.monitors is not None:
                    self.monitors.observe_label(name, p, y_true, self.last_event_ms)
                if self.running:
                    self.experiment.observe_label(name, y_true, p, unit)

    def after_batch(self, event_index: int) -> Decision | None:
        """Look once more; the decision when it is a new one (not ``continue``)."""
        if not self.running or not self.decides:
            return None
        before = len(self.experiment.decisions)
        at = None if self.last_event_ms is None else self.last_event_ms / 1000.0
        decision = self.experiment.decide(at=at, event_index=event_index)
        return decision if len(self.experiment.decisions) > before else None

    def primary(self) -> dict[str, float | None]:
        """Each arm's primary metric so far (None before its first label)."""
        return {
            name: finite_or_none(stats.primary.mean) if stats.primary.n else None
            for name, stats in self.experiment.arms.items()
        }

    def summary(self) -> dict[str, Any]:
        """``summary.json``'s ``experiment``: :meth:`learners.experiment.Experiment.summary`,
        with each arm's ``guardrails`` values (:func:`metrics.arm_monitoring.guardrail_values`)
        and ``monitor`` report when monitored, and the ``guardrail_limits`` in force."""
        summary = {**self.experiment.summary(), "learn": self.learn}
        guardrails = guardrail_values(self.experiment)
        monitored = self.monitors.report() if self.monitors is not None else {}
        for arm, stats in summary["arms"].items():
            stats["guardrails"] = guardrails[arm]
            if arm in monitored:
                stats["monitor"] = monitored[arm]
        summary["guardrail_limits"] = guardrail_limits(self.experiment.config.guardrails)
        return summary


class ServedArms:
    """The processor's steps for its arms: the served slot, timed scores, the looks.

    A mixin of :class:`~stream.processor.Processor`, which sets the attributes below.
    """

    slots: list[ModelSlot]
    events_seen: int
    experiment: ExperimentRun | None
    rollback: RollbackRun | None

    def _watch_arms(self, monitor: Monitor | None) -> None:
        """Give the runs' arms their monitors, of the champion's ``monitor`` settings."""
        for run in (self.experiment, self.rollback):
            if monitor is not None and run is not None and run.monitors is None:
                arms = run.arms if isinstance(run, ExperimentRun) else run.stats
                run.monitors = ArmMonitors(monitor.config, monitor.threshold, arms)

    def _serving_arm(self, event: Event) -> int:
        """The index of the slot whose score is served for ``event`` (0: the champion)."""
        if self.experiment is None:
            return 0
        arm = self.experiment.serving(event)
        return next((i for i, slot in enumerate(self.slots) if slot.name == arm), 0)

    def _timed_scores(self, x: dict[str, Any]) -> tuple[list[float | None], list[float]]:
        """Every slot's score of ``x`` and the seconds each took (an arm's latency)."""
        scores: list[float | None] = []
        seconds: list[float] = []
        following = self.rollback.reference if self.rollback is not None else None
        for slot in self.slots:
            t0 = time.perf_counter()
            if slot.name == following:  # the frozen copy's scaling follows the inputs
                follow_inputs(slot.model, x)
            scores.append(score(slot.model, x))
            seconds.append(time.perf_counter() - t0)
        return scores, seconds

    def _observe_arms(
        self, served: int, scores: Sequence[float | None], seconds: Sequence[float], at: int
    ) -> None:
        named = {slot.name: p for slot, p in zip(self.slots, scores, strict=True)}
        if self.experiment is not None:
            latency = {slot.name: s for slot, s in zip(self.slots, seconds, strict=True)}
            self.experiment.observe_scored(self.slots[served].name, named, latency, at)
        if self.rollback is not None:
            self.rollback.observe_scored(named, at)

    def _decide_arms(self, out: BatchOutput) -> None:
        """The experiment's and the rollback rule's look after the batch."""
        for run in (self.experiment, self.rollback):
            if run is None:
                continue
            if isinstance(run, ExperimentRun):
                decision = run.after_batch(self.events_seen)
            else:
                decision = run.after_batch(self.slots, self.events_seen)
            if decision is not None:
                log.info("%s %s: %s", decision.action, decision.arm, decision.reason)
                out.decisions.append(decision)


def primary_of(run: ExperimentRun | RollbackRun) -> dict[str, float | None]:
    """Each arm's primary metric so far, for the report's timeline."""
    return run.primary()
