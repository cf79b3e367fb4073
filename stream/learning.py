"""The label learning path: a label joined to what its event was scored with, learned.

A label comes inline in its event, from the ``labels`` topic (in either order
with its event: the store joins them), or as an implicit negative when its
event's window passes in silence. Each is learned by every model slot through
the :class:`~stream.model_guard.ModelGuard` (a label that leaves a model
non-finite is undone and dead-lettered as ``poisoned_model``), observed by the
monitors and scorecards, and kept as an :class:`~stream.outputs.Example` when
the training log is on. A label whose event never came leaves as an
``unknown_event`` dead letter.

:class:`LabelLearning` holds these steps as methods of the
:class:`~stream.processor.Processor`, which inherits them: they run per label
with the processor's state, and no call is added on the per-record path.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

from streamlearn.features.limits import Limits
from streamlearn.features.store import (
    AppliedLabel,
    EventOp,
    ExpiredLabel,
    LabelOp,
    LabelOutcome,
    split_source,
)
from streamlearn.features.vector import FeatureConfig, features_from_snapshot
from streamlearn.learners.calibration import PlattCalibrator
from streamlearn.learners.holdout import Decided, Decider
from streamlearn.learners.models import is_positive
from streamlearn.metrics.calibration import RollingCalibration
from streamlearn.metrics.decision_metrics import DecisionMetrics
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.metrics.quality import RollingQuality
from streamlearn.metrics.slices import slice_values
from streamlearn.stream.drift_action import on_drift
from streamlearn.stream.experiment_run import ExperimentRun, RollbackRun
from streamlearn.stream.model_guard import Learned, ModelGuard, ModelSlot
from streamlearn.stream.outputs import BatchOutput, DeadLetter, Example

if TYPE_CHECKING:
    from streamlearn.features.schema import Event
    from streamlearn.stream.edge import Record

__all__ = ["LabelLearning", "Scored"]

log = logging.getLogger(__name__)

#: Why a label left the pending set without its event, by :attr:`ExpiredLabel.cause`.
_EXPIRY_DETAIL = {
    "ttl": "no event with this event_id arrived within the pending window",
    "max_wait": "no event with this event_id arrived within the longest pending wait "
    "(store.pending_max_wait_s of event time)",
    "overflow": "evicted from the pending window: it was the oldest of more than "
    "store.pending_max labels waiting for their events",
}


@dataclass(slots=True, frozen=True)
class Scored:
    """What an event awaiting its label was scored with: the label often follows soon."""

    scores: Sequence[float | None]
    x: dict[str, Any]
    event_time_ms: int
    #: The event's slice values (``monitoring.slices``), None when unknown.
    slices: tuple[str | None, ...] | None = None
    #: The experiment arm that served the event (None: no experiment, or not known).
    arm: str | None = None
    #: The event's experiment unit (``experiment.unit_field``), None when not known.
    unit: str | None = None


class LabelLearning:
    """The steps of a label through the processor: join, learn, observe, or refuse.

    A mixin of :class:`~stream.processor.Processor`, which sets the attributes below.
    """

    slots: list[ModelSlot]
    features: FeatureConfig
    threshold: float
    metrics: WorkerMetrics | None
    keep_examples: bool
    watermark_ms: int
    _guard: ModelGuard
    _recent: OrderedDict[str, Scored]
    _recent_max: int
    _slice_keys: Sequence[str]
    limits: Limits
    decider: Decider
    holdout_quality: RollingQuality
    _served: OrderedDict[str, Decided]
    _decision_metrics: DecisionMetrics | None
    #: The champion's calibration over its recent labels, and after the calibrator (if any).
    calibration: RollingCalibration
    calibrator: PlattCalibrator | None
    calibrated: RollingCalibration

    def set_slots(self, slots: Sequence[ModelSlot]) -> None:
        """Score and learn with ``slots`` from now on (an experiment started or replaced).

        The scores kept for events awaiting their labels follow their arms by name: an
        arm gone drops its score, a new arm has none (it scored none of those events),
        and the champion keeps the first place whatever its name.
        """
        old = [slot.name for slot in self.slots]
        self.slots = list(slots)
        new = [slot.name for slot in self.slots]
        if new == old:
            return
        for event_id, scored in self._recent.items():
            by_name = dict(zip(old[1:], scored.scores[1:], strict=False))
            scores = [scored.scores[0], *(by_name.get(name) for name in new[1:])]
            self._recent[event_id] = replace(scored, scores=scores)

    def _set_up_decisions(
        self, decider: Decider, window: int, metrics: WorkerMetrics | None
    ) -> None:
        """The champion's decisions (policy and holdout, with what each event was given),
        online quality on the holdout's labels only (unbiased by the filter), calibration."""
        self.decider = decider
        self._served = OrderedDict()
        self.holdout_quality = RollingQuality(window, decider.threshold)
        held_out = decider.holdout.fraction > 0
        self._decision_metrics = DecisionMetrics.on(metrics.registry, held_out) if metrics else None
        self.calibration, self.calibrated = RollingCalibration(), RollingCalibration()
        self.calibrator = None  # a PlattCalibrator measured after the model (calibration.method)

    def _decide(self, event: Event, p: float) -> Decided:
        """The champion's decision for its score ``p`` of ``event``, kept for its label."""
        given = self.decider.decide(p, event)
        self._served[event.event_id] = given
        if len(self._served) > self._recent_max:
            self._served.popitem(last=False)
        return given

    def _publish_decisions(self) -> None:
        """The policy's threshold and what it buys, and the holdout's quality, as gauges."""
        if self._decision_metrics is None:
            return
        policy = self.decider.policy
        self.holdout_quality.threshold = policy.threshold
        report = self.holdout_quality.report()
        self._decision_metrics.publish(
            policy.threshold, policy.precision_lower_bound, policy.recall,
            report.precision, report.recall, report.roc_auc, self.calibration.ece(),
        )  # fmt: skip

    experiment: ExperimentRun | None
    rollback: RollbackRun | None

    def _learning_slots(self, arm: str | None) -> list[ModelSlot]:
        """The slots that learn a label of an event ``arm`` served: every slot but the
        rollback rule's frozen copy, and with ``experiment.learn: own_arm`` the other arms."""
        if self.experiment is None and self.rollback is None:
            return self.slots
        skip = self.rollback.frozen if self.rollback is not None else frozenset()
        if self.experiment is not None:
            skip = skip | self.experiment.not_learning(arm)
        return [slot for slot in self.slots if slot.name not in skip]

    def _credit(
        self, arm: str | None, scores: Sequence[float | None], y_true: bool, unit: str | None
    ) -> None:
        """The experiment and the rollback rule judge the arms' scores of a learned label."""
        named = {slot.name: p for slot, p in zip(self.slots, scores, strict=False)}
        if self.experiment is not None:
            self.experiment.observe_label(arm, named, y_true, unit)
        if self.rollback is not None:
            self.rollback.observe_label(named, y_true)

    def _learn(
        self,
        event_id: str,
        x: dict[str, Any],
        label: AppliedLabel,
        scores: Sequence[float | None],
        event_time_ms: int,
        kind: str,
        out: BatchOutput,
        record: Record | None = None,
        slices: tuple[str | None, ...] | None = None,
        arm: str | None = None,
        unit: str | None = None,
    ) -> None:
        """Every model learns the label; ``scores``: what each gave the event, when known.

        ``arm``: the experiment arm that served the event; it is credited with the
        label, and with ``experiment.learn: own_arm`` is the only arm to learn it.
        ``unit``: the event's experiment unit, whose labels the experiment counts together.

        The batch counts the label, and keeps it with ``x`` as an example when asked to.
        A label that would leave a model non-finite is not learned by any model
        and goes to the dead letters (``record``: the record that carried it).
        """
        served = self._served.pop(event_id, None)
        propensity = served.propensity if served is not None else 1.0
        # monitors judge the label with its weight by propensity, models learn it with its class's
        observed = self.decider.learning_weight(label.weight, propensity)
        if observed != label.weight:
            observed = min(observed, self.limits.max_label_weight)
        weight = self.decider.model_weight(label.weight, propensity, is_positive(label.value))
        if weight != label.weight:
            weight = min(weight, self.limits.max_label_weight)
            label = AppliedLabel(label.value, weight, label.source, label.timestamp_ms)
        entry = Learned(x, label, event_id, kind, record)
        poisoned = self._guard.learn_all(self._learning_slots(arm), entry)
        if poisoned is not None:
            self._refuse(entry, poisoned, out)
            return
        if self.keep_examples:
            # the champion's score and version, or those of the arm that served the event
            at = next((i for i, s in enumerate(self.slots) if s.name == arm), 0)
            entry.example = Example(
                event_id,
                x,
                label.value,
                label.weight,
                kind,
                label.source,
                event_time_ms,
                label.timestamp_ms,
                scores[at] if at < len(scores) else None,
                self.slots[at].version,
                served.decision if served is not None else None,
                served.holdout if served is not None else False,
                propensity,
                arm,
            )
            out.examples.append(entry.example)
        out.labels_learned += 1
        drifted = False
        y_true = is_positive(label.value)
        for index, slot in enumerate(self.slots):
            given = scores[index] if index < len(scores) else None
            if given is None:
                continue
            if slot.monitor is not None:
                slot.monitor.learning = self.decider.classes  # in the snapshot's metadata
                detected = slot.monitor.observe_label(
                    given, y_true, observed, event_time_ms, slices
                )
                drifted = drifted or (detected and index == 0)
            if slot.scorecard is not None:
                slot.scorecard.update(y_true, given)
        champion_score = scores[0] if scores else None
        if champion_score is not None:
            self.decider.policy.observe_label(
                champion_score, y_true, self.decider.learning_weight(1.0, propensity)
            )
            if served is not None and served.holdout:
                self.holdout_quality.update(y_true, champion_score, observed)
            self.calibration.update(y_true, champion_score)
            if self.calibrator is not None:
                self.calibrated.update(y_true, self.calibrator.learn(champion_score, y_true))
        if drifted:
            self._on_drift(self.slots[0], event_time_ms, "concept")
        if self.experiment is not None or self.rollback is not None:
            self._credit(arm, scores, y_true, unit)
        if self.metrics is not None:
            self.metrics.observe_label(kind, y_true, event_time_ms)

    def _probe(self, out: BatchOutput) -> None:
        """At the batch's end, the models with opaque parts are probed (:meth:`ModelGuard.probe`).

        The blamed labels are taken back: no model keeps them, they leave the
        batch's examples and count, and go to the dead letters.
        """
        for entry, slot_name in self._guard.probe(self.slots):
            if entry.example is not None:
                out.examples = [e for e in out.examples if e is not entry.example]
            out.labels_learned -= 1
            for slot in self.slots:
                slot.labels_learned -= slot.name in entry.learners
            self._refuse(entry, slot_name, out)

    def _refuse(self, entry: Learned, slot_name: str, out: BatchOutput) -> None:
        """A label no model learned because it left ``slot_name``'s model non-finite."""
        label, kind, event_id = entry.label, entry.kind, entry.event_id
        detail = (
            f"learning the {kind} label of event {event_id!r} (label {label.value:g}, weight "
            f"{label.weight:g}) left model {slot_name!r} with non-finite numbers; it was undone"
            " and no model learned this label"
        )
        log.warning("%s", detail)
        record = entry.record
        if record is None:
            body = {"event_id": event_id, "label": label.value, "weight": label.weight}
            body.update(kind=kind, timestamp=label.timestamp_ms)
            where = split_source(label.source) if label.source.count(":") >= 2 else (kind, -1, -1)
            value, (topic, partition, offset) = orjson.dumps(body), where
        else:
            value, topic, partition, offset = (
                record.value, record.topic, record.partition, record.offset
            )  # fmt: skip
        out.dead_letters.append(
            DeadLetter("poisoned_model", detail, value, topic, partition, offset)
        )
        if self.metrics is not None:
            self.metrics.dead_letters.labels(reason="poisoned_model").inc()
            self.metrics.labels_skipped.labels(reason="poisoned_model").inc()

    def _on_drift(self, champion: ModelSlot, event_time_ms: int, kind: str) -> None:
        """The configured action on a drift of the champion: :func:`.drift_action.on_drift`."""
        self.slots = on_drift(self.slots, champion, event_time_ms, kind, self.threshold)

    def _scored(self, outcome: LabelOutcome, held: dict[str, Scored]) -> Scored:
        """What an event was scored with, for its label (learned once: it is forgotten now).

        Recent events keep their features and every model's score (``held`` by the
        batch, or scored earlier in it); older ones (and all after a restart) are
        rebuilt from their snapshot, which gives the same features, with the
        champion's score as stored.
        """
        event_id = outcome.event_id
        scored = held.pop(event_id, None) or self._recent.pop(event_id, None)
        if scored is not None:
            return scored
        x = features_from_snapshot(outcome.payload, outcome.states, self.features)
        snap = orjson.loads(outcome.payload)
        # The snapshot keeps the context, not the ids: an event-field slice is unknown here.
        slices = slice_values(self._slice_keys, snap["ctx"]) if self._slice_keys else None
        return Scored([outcome.score], x, snap["ts"], slices)

    # ------------------------------------------------------------------ process

    def _implicit(self, implicit: LabelOutcome, out: BatchOutput) -> None:
        """An event whose label window passed in silence: learned as a negative.

        Not when the policy blocked the event and the decision section says its
        silence means nothing (``decision.implicit_negatives_of_blocked: false``).
        """
        scored = self._scored(implicit, {})
        if not self.decider.learns_implicit(self._served.get(implicit.event_id)):
            self._served.pop(implicit.event_id, None)
            return
        label = AppliedLabel(0.0, 1.0, "implicit", self.watermark_ms)
        self._learn(
            implicit.event_id, scored.x, label, scored.scores, scored.event_time_ms, "implicit",
            out, slices=scored.slices, arm=scored.arm, unit=scored.unit,
        )  # fmt: skip
        if self.metrics is not None:
            delay_ms = max(0, self.watermark_ms - scored.event_time_ms)
            self.metrics.label_delay.observe(delay_ms / 1000)

    def _expired(self, expired: ExpiredLabel, out: BatchOutput) -> None:
        """A label whose event never came: the label record goes to the dead letters."""
        label = expired.label
        record: dict[str, object] = {"event_id": expired.event_id}
        if label is not None:
            record.update(timestamp=label.timestamp_ms, label=label.value, weight=label.weight)
        topic, partition, offset = split_source(label.source if label else "labels:-1:-1")
        out.dead_letters.append(
            DeadLetter(
                "unknown_event",
                _EXPIRY_DETAIL[expired.cause],
                orjson.dumps(record),
                topic,
                partition,
                offset,
            )
        )
        if self.metrics is not None:
            self.metrics.dead_letters.labels(reason="unknown_event").inc()

    def _label_outcome(
        self,
        op: EventOp | LabelOp,
        outcome: LabelOutcome,
        out: BatchOutput,
        held: dict[str, Scored],
        record: Record | None = None,
    ) -> None:
        assert isinstance(op, LabelOp)
        if outcome.status in ("learn", "relearn"):
            scored = self._scored(outcome, held)
            label = AppliedLabel(op.label, op.weight, op.source, op.timestamp_ms)
            x, scores, event_time_ms = scored.x, scored.scores, scored.event_time_ms
            self._learn(
                outcome.event_id, x, label, scores, event_time_ms, "labels", out, record,
                scored.slices, scored.arm, scored.unit,
            )  # fmt: skip
            if self.metrics is not None:
                delay_ms = max(0, op.timestamp_ms - event_time_ms)
                self.metrics.label_delay.observe(delay_ms / 1000)
        elif outcome.status in ("duplicate", "late") and self.metrics is not None:
            self.metrics.labels_skipped.labels(reason=outcome.status).inc()
