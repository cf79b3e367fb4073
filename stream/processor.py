"""The batch processor: records in, predictions, dead letters and learning out.

It does not know where records come from (Kafka, a file, a test) nor where
its outputs go; the worker, the backtest and the tests all drive it with
:meth:`Processor.process`. Records are handled strictly in the order given:
each event is scored with the model as it is after everything before it, then
learned from if its label is already known (test-then-train), so the result
does not depend on how records are cut into batches.

The pieces it composes live beside it: its outputs (:mod:`stream.outputs`),
the model slots and the guard that undoes a label leaving a model non-finite
(:mod:`stream.model_guard`), the label learning path (:mod:`stream.learning`)
and the drift actions (:mod:`stream.drift_action`). The names callers use stay
importable from here.

Examples
--------
>>> from streamlearn.features.interactions import InteractionConfig
>>> from streamlearn.features.limits import Limits
>>> from streamlearn.features.memory_store import MemoryStore
>>> from streamlearn.features.store import StoreConfig
>>> from streamlearn.features.vector import FeatureConfig
>>> from streamlearn.learners.models import build_model
>>> store = MemoryStore(StoreConfig(), InteractionConfig())
>>> processor = Processor([ModelSlot("logistic", build_model("logistic"))], store,
...                       FeatureConfig(), Limits(), threshold=0.5)
>>> event = b'{"event_id": "e1", "timestamp": 1767225600000, "user_id": "u", "item_id": "i"}'
>>> label = b'{"event_id": "e1", "timestamp": 1767225660000, "label": true}'
>>> out = processor.process([Record("events", event, "events", 0, 0),
...                          Record("labels", label, "labels", 0, 0),
...                          Record("events", b"{oops", "events", 0, 1)])
>>> [(p.event_id, p.score) for p in out.predictions], out.labels_learned
([('e1', 0.5)], 1)
>>> [(d.reason, d.offset) for d in out.dead_letters]
[('invalid_json', 1)]
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from streamlearn.features.decode import decode_event, decode_label
from streamlearn.features.interactions import entity_ids
from streamlearn.features.limits import Limits
from streamlearn.features.schema import DecodeError, Event
from streamlearn.features.store import (
    BatchOutcome,
    EventOp,
    EventOutcome,
    InteractionStore,
    LabelOp,
)
from streamlearn.features.vector import (
    FeatureConfig,
    event_inputs,
    features_of,
    snapshot_payload,
)
from streamlearn.learners.holdout import Decided, Decider
from streamlearn.learners.models import score
from streamlearn.metrics.instruments import PROCESSOR_STAGES, WorkerMetrics
from streamlearn.metrics.slices import slice_values
from streamlearn.stream.edge import Record
from streamlearn.stream.experiment_run import ExperimentRun, RollbackRun, ServedArms
from streamlearn.stream.learning import LabelLearning, Scored
from streamlearn.stream.model_guard import ModelGuard, ModelSlot
from streamlearn.stream.outputs import (
    DEAD_LETTER_MIN_BYTES,
    BatchOutput,
    DeadLetter,
    Example,
    Prediction,
)
from streamlearn.stream.watermark import PartitionClock

__all__ = [
    "DEAD_LETTER_MIN_BYTES",
    "BatchOutput",
    "DeadLetter",
    "Example",
    "ModelSlot",
    "Prediction",
    "PreparedBatch",
    "Processor",
    "Record",
]

log = logging.getLogger(__name__)


@dataclass
class PreparedBatch:
    """A decoded batch waiting for its store call."""

    out: BatchOutput
    ops: list[EventOp | LabelOp]
    events: list[Event | None]
    valid: list[Record]
    scores: dict[str, float]
    watermarks: dict[int, int]
    #: What the batch's labels' events were scored with, taken from the recent events.
    held: dict[str, Scored] = field(default_factory=dict)
    #: The processor-wide watermark when the batch was decoded (-1: none yet).
    clock_ms: int = -1


class Processor(LabelLearning, ServedArms):
    """Decodes, builds features, scores and learns, one batch at a time.

    The first slot is the champion whose predictions are published; the
    others score and learn in the shadow (challengers, or a side-by-side
    comparison in a backtest). With ``keep_examples`` each batch's output
    carries its learned labels with the features the model saw (:class:`Example`).

    With an ``experiment`` (:class:`~stream.experiment_run.ExperimentRun`) the slots are
    its arms: each event is served by its arm's score and the other arms' go to the
    shadow predictions, each prediction marked with its arm; with a ``rollback``
    (:class:`~stream.experiment_run.RollbackRun`) its frozen copy scores in the shadow
    and never learns. Their decisions are taken after each batch (``out.decisions``).

    Event time is tracked per events partition by a :class:`~stream.watermark.PartitionClock`
    (``watermark_window``, ``watermark_quantile``: ``store.watermark_*`` in the
    settings), so a few events dated far ahead do not expire the labels that wait.

    The champion's decision comes from ``decider`` (:class:`~learners.holdout.Decider`:
    a decision policy and the unfiltered holdout; by default ``score > threshold``).
    """

    def __init__(
        self,
        slots: Sequence[ModelSlot],
        store: InteractionStore,
        features: FeatureConfig,
        limits: Limits,
        threshold: float,
        metrics: WorkerMetrics | None = None,
        recent_events: int = 10_000,
        keep_examples: bool = False,
        watermark_window: int = 32,
        watermark_quantile: float = 0.5,
        decider: Decider | None = None,
        experiment: ExperimentRun | None = None,
        rollback: RollbackRun | None = None,
    ) -> None:
        if not slots:
            raise ValueError("a processor needs at least one model")
        self.slots = list(slots)
        names = {slot.name for slot in self.slots}
        wanted = set(experiment.arms if experiment is not None else ())
        wanted |= {rollback.champion, rollback.reference} if rollback is not None else set()
        if not wanted <= names:
            raise ValueError(f"no model slot for {sorted(wanted - names)}: slots {sorted(names)}")
        self.experiment, self.rollback = experiment, rollback
        self.store = store
        self.features = features
        self.limits = limits
        self.threshold = threshold
        self.metrics = metrics
        #: Event time up to which every owned events partition is in (0: not yet).
        self.watermark_ms = 0
        self._clock = (watermark_window, watermark_quantile)
        PartitionClock(*self._clock)  # refuses a bad window or quantile now
        self._clocks: dict[tuple[str, int], PartitionClock] = {}
        self._deferred_scores: dict[str, float] = {}
        self._recent: OrderedDict[str, Scored] = OrderedDict()
        self._recent_max = recent_events
        self.keep_examples = keep_examples
        self.events_seen = 0
        #: Undoes a label that leaves a model non-finite (:class:`.model_guard.ModelGuard`).
        self._guard = ModelGuard()
        champion = self.slots[0].monitor
        #: The champion's monitor's slice keys: what each event's slice values are taken for.
        self._slice_keys = champion.config.slices if champion is not None else ()
        window = champion.config.quality_window if champion is not None else 1000
        self._set_up_decisions(decider or Decider.fixed(threshold), window, metrics)
        self._watch_arms(champion)  # each arm's quality and drift, as the champion's

    # ------------------------------------------------------------------ decode

    def _decode(
        self, records: Sequence[Record], out: BatchOutput, held: dict[str, Scored]
    ) -> tuple[list[EventOp | LabelOp], list[Event | None], list[Record]]:
        """The store operations of the valid records, with their events and records.

        A label whose event is among the recent ones takes that event's features
        and scores into ``held`` (so they outlive the recent events' bound until
        the batch is finished) and asks the store not to send them back.
        """
        ops: list[EventOp | LabelOp] = []
        events: list[Event | None] = []
        valid: list[Record] = []
        for record in records:
            try:
                if record.kind == "events":
                    event = decode_event(record.value, self.limits)
                    ops.append(
                        EventOp(
                            event.event_id,
                            record.source,
                            record.partition,
                            record.offset,
                            event.timestamp,
                            entity_ids(event.user_id, event.item_id, event.author_id),
                            snapshot_payload(event),
                            event.label,
                            1.0,
                        )
                    )
                    events.append(event)
                else:
                    label = decode_label(record.value, self.limits)
                    scored = self._recent.pop(label.event_id, None)
                    if scored is not None:
                        held[label.event_id] = scored
                    weight = label.weight
                    if weight > self.limits.max_label_weight:
                        weight = self.limits.max_label_weight
                        if self.metrics is not None:
                            self.metrics.label_weights_clipped.inc()
                    ops.append(
                        LabelOp(
                            label.event_id,
                            record.source,
                            label.value,
                            weight,
                            label.timestamp,
                            scored is not None,
                        )
                    )
                    events.append(None)
                valid.append(record)
            except DecodeError as error:
                self._dead_letter(out, error.reason, error.detail, record)
        return ops, events, valid

    def _dead_letter(self, out: BatchOutput, reason: str, detail: str, record: Record) -> None:
        out.dead_letters.append(
            DeadLetter(reason, detail, record.value, record.topic, record.partition, record.offset)
        )
        if self.metrics is not None:
            self.metrics.dead_letters.labels(reason=reason).inc()

    # ------------------------------------------------------------------ learn

    def _remember(self, event_id: str, scored: Scored) -> None:
        self._recent[event_id] = scored
        if len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def process(self, records: Sequence[Record]) -> BatchOutput:
        """Handle one batch; the caller publishes the outputs."""
        batch = self.prepare(records)
        return self.finish(batch, self.apply(batch))

    def prepare(self, records: Sequence[Record]) -> PreparedBatch:
        """Decode the batch and hand over the scores still to store (no I/O)."""
        out = BatchOutput()
        t0 = time.perf_counter()
        held: dict[str, Scored] = {}
        ops, events, valid = self._decode(records, out, held)
        self._advance_watermark(ops, valid)
        clock_ms = self.watermark_ms if self.watermark_ms > 0 else -1
        batch = PreparedBatch(
            out, ops, events, valid, self._deferred_scores, self._watermarks(), held, clock_ms
        )
        self._deferred_scores = {}
        out.stage_seconds = dict.fromkeys(PROCESSOR_STAGES, 0.0)
        out.stage_seconds["decode"] = time.perf_counter() - t0
        return batch

    def apply(self, batch: PreparedBatch) -> BatchOutcome:
        """The batch's one store call; it may run in another thread while the batch
        before it is finished: nothing it reads or writes is the model's."""
        t0 = time.perf_counter()
        result = self.store.apply(batch.ops, batch.scores, batch.watermarks, batch.clock_ms)
        batch.out.stage_seconds["redis"] = time.perf_counter() - t0
        return result

    def finish(
        self,
        batch: PreparedBatch,
        result: BatchOutcome,
        emit: Callable[[Prediction], None] | None = None,
    ) -> BatchOutput:
        """Score and learn, in record order, from the store's outcomes.

        ``emit`` is handed each champion prediction once its event is done (a
        prediction depends only on the records before it), so the first events
        of a large batch do not wait for its last one; the output has them too.
        """
        out, stages = batch.out, batch.out.stage_seconds
        self._guard.begin()
        rows = zip(batch.ops, batch.events, result.outcomes, batch.valid, strict=True)
        for op, event, outcome, record in rows:
            if isinstance(outcome, EventOutcome):
                assert event is not None
                self._event_outcome(event, outcome, record, out, stages, emit)
            else:
                self._label_outcome(op, outcome, out, batch.held, record)
        t3 = time.perf_counter()
        for implicit in result.implicit:
            self._implicit(implicit, out)
        for expired in result.expired:
            self._expired(expired, out)
        self._probe(out)
        stages["learn"] += time.perf_counter() - t3
        self._guard.end()
        self._decide_arms(out)
        self._observe(out, batch.events)
        return out

    def _event_outcome(
        self,
        event: Event,
        outcome: EventOutcome,
        record: Record,
        out: BatchOutput,
        stages: dict[str, float],
        emit: Callable[[Prediction], None] | None = None,
    ) -> None:
        """Score an event with every model, then learn its label if it is already known."""
        if outcome.status == "duplicate":
            detail = f"event_id {event.event_id!r} was seen before"
            self._dead_letter(out, "duplicate_event", detail, record)
            return
        clock = time.perf_counter
        a = clock()
        x = features_of(event, outcome.states, self.features)
        b = clock()
        arms = self.experiment is not None or self.rollback is not None
        if arms:
            scores, seconds = self._timed_scores(x)
            served = self._serving_arm(event)
            self._observe_arms(served, scores, seconds, event.timestamp)
        else:
            scores, served = [score(slot.model, x) for slot in self.slots], 0
        c = clock()
        self.events_seen += 1
        published = feature_drift = False
        slices = slice_values(self._slice_keys, event.context, event) if self._slice_keys else None
        for index, (slot, p) in enumerate(zip(self.slots, scores, strict=True)):
            slot.events_scored += 1
            if p is None or not math.isfinite(p):
                # Never published (it would be JSON null) nor fed to the monitors.
                scores[index] = None
                self._not_finite(event.event_id, slot, p, record, out, index == served)
                continue
            given = (
                self._decide(event, p)
                if index == served
                else Decided(p > self.threshold, False, 1.0)
            )
            decision = given.decision
            prediction = Prediction(
                event.event_id, slot.name, slot.version, p, decision, event.timestamp,
                record.timestamp_ms, given.holdout, given.propensity,
                arm=slot.name if arms else None,
            )  # fmt: skip
            (out.predictions if index == served else out.shadow_predictions).append(prediction)
            published = published or index == served
            if slot.monitor is not None:
                watched = (
                    x
                    if slot.monitor.config.feature_scope == "all"
                    else event_inputs(event, self.features)
                )
                drifted = slot.monitor.observe_prediction(
                    p, decision, watched, event.timestamp, slices
                )
                feature_drift = feature_drift or (drifted and index == 0)
        if feature_drift:
            self._on_drift(self.slots[0], event.timestamp, "feature")
        if scores[0] is not None:
            self._deferred_scores[event.event_id] = scores[0]
        arm = self.slots[served].name if arms else None
        unit = self.experiment.unit(event) if self.experiment is not None else None
        if outcome.label is None:
            self._remember(event.event_id, Scored(scores, x, event.timestamp, slices, arm, unit))
        else:
            inline = outcome.label.source == record.source
            kind = "inline" if inline else "labels"
            self._learn(
                event.event_id, x, outcome.label, scores, event.timestamp, kind, out,
                record if inline else None, slices, arm, unit,
            )  # fmt: skip
        stages["features"] += b - a
        stages["score"] += c - b
        stages["learn"] += clock() - c
        if emit is not None and published:
            emit(out.predictions[-1])

    def _not_finite(
        self,
        event_id: str,
        slot: ModelSlot,
        p: float | None,
        record: Record,
        out: BatchOutput,
        champion: bool,
    ) -> None:
        """A score that is not a number: counted; the champion's event goes to the dead letters."""
        if self.metrics is not None:
            self.metrics.scores_not_finite.inc()
        if champion:
            detail = (
                f"model {slot.name!r} v{slot.version} scored event {event_id!r} {p}: its features"
                " overflow the model's arithmetic; no prediction was published"
            )
            self._dead_letter(out, "not_finite", detail, record)
        else:
            log.warning("model %r scored event %r %s: not published", slot.name, event_id, p)

    def _observe(self, out: BatchOutput, events: Sequence[Event | None]) -> None:
        """Per-batch metrics and the monitors' gauges."""
        if self.metrics is not None:
            for stage, seconds in out.stage_seconds.items():
                self.metrics.stage_seconds.labels(stage=stage).observe(seconds)
            self.metrics.redis_round_trip.observe(out.stage_seconds["redis"])
            n_events = sum(1 for e in events if e is not None)
            self.metrics.events.inc(n_events)
            self.metrics.labels_received.inc(len(events) - n_events)
            self.metrics.last_event_timestamp.set(self.watermark_ms / 1000.0)
        for slot in self.slots:
            if slot.monitor is not None:
                slot.monitor.publish()
        self._publish_decisions()

    def _watermarks(self) -> dict[int, int]:
        """Per owned partition, its watermark: up to there its events are in.

        A label waiting in partition p can only be claimed by an event of
        partition p (both are keyed by event id), so p's own event time decides
        when it has waited long enough, whatever the other partitions do.
        """
        return {p: c.watermark_ms for (_, p), c in self._clocks.items() if c.watermark_ms >= 0}

    def _advance_watermark(self, ops: Sequence[EventOp | LabelOp], valid: Sequence[Record]) -> None:
        """Each event moves its partition's clock; ``watermark_ms`` is their minimum.

        A partition's watermark is a low quantile of its recent event times
        (:class:`~stream.watermark.PartitionClock`), never the time of one event
        alone, so neither it nor the minimum over the partitions jumps with an
        event dated far ahead. Both depend only on the events in their order.

        >>> from streamlearn.features.interactions import InteractionConfig
        >>> from streamlearn.features.memory_store import MemoryStore
        >>> from streamlearn.features.store import StoreConfig
        >>> from streamlearn.features.vector import FeatureConfig
        >>> from streamlearn.learners.models import build_model
        >>> store = MemoryStore(StoreConfig(), InteractionConfig())
        >>> processor = Processor([ModelSlot("m", build_model("logistic"))], store,
        ...                       FeatureConfig(), Limits(), 0.5, watermark_window=8)
        >>> def event(n, t):
        ...     value = b'{"event_id": "e%d", "timestamp": %d, "user_id": "u", "item_id": "i"}'
        ...     return Record("events", value % (n, t), "events", 0, n)
        >>> hour = 3_600_000
        >>> t0 = 1_767_225_600_000
        >>> _ = processor.process([event(n, t0 + n * 1000) for n in range(4)])
        >>> processor.watermark_ms - t0
        1000
        >>> _ = processor.process([event(4, t0 + 20 * hour), event(5, t0 + 5000)])
        >>> processor.watermark_ms - t0  # the median of 0, 1, 2, 3, 5 s and 20 h
        2000
        """
        for op, record in zip(ops, valid, strict=True):
            if isinstance(op, EventOp):
                key = (record.topic, record.partition)
                clock = self._clocks.get(key)
                if clock is None:
                    clock = self._clocks[key] = PartitionClock(*self._clock)
                clock.observe(op.timestamp_ms)
        if self._clocks:
            lowest = min(clock.watermark_ms for clock in self._clocks.values())
            self.watermark_ms = max(self.watermark_ms, lowest)

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """The event partitions this processor owns: the watermark waits for each of them.

        A partition it keeps keeps its clock; one it gets starts a new one.
        """
        owned = set(partitions)
        self._clocks = {key: self._clocks.get(key) or PartitionClock(*self._clock) for key in owned}

    def flush(self) -> None:
        """Store the scores still held back for the next batch's store call."""
        if self._deferred_scores:
            self.store.apply([], self._deferred_scores, {})
            self._deferred_scores = {}
