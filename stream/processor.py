"""The batch processor: records in, predictions, dead letters and learning out.

It does not know where records come from (Kafka, a file, a test) nor where
its outputs go; the worker, the backtest and the tests all drive it with
:meth:`Processor.process`. Records are handled strictly in the order given:
each event is scored with the model as it is after everything before it, then
learned from if its label is already known (test-then-train), so the result
does not depend on how records are cut into batches.

Examples
--------
>>> from features.interactions import InteractionConfig
>>> from features.schema import Limits
>>> from features.store import MemoryStore, StoreConfig
>>> from features.vector import FeatureConfig
>>> from learners.models import build_model
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

import hashlib
import logging
import math
import pickle  # noqa: S403 - the processor's own model, pickled and loaded in memory
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import orjson
from river import base

from features.interactions import entity_ids
from features.schema import DecodeError, Event, Limits, decode_event, decode_label
from features.store import (
    AppliedLabel,
    BatchOutcome,
    EventOp,
    EventOutcome,
    ExpiredLabel,
    InteractionStore,
    LabelOp,
    LabelOutcome,
    split_source,
)
from features.vector import (
    FeatureConfig,
    event_inputs,
    features_from_snapshot,
    features_of,
    snapshot_payload,
)
from learners.models import FiniteCheck, is_positive, learn, score
from metrics.instruments import PROCESSOR_STAGES, WorkerMetrics
from metrics.monitor import Monitor
from metrics.scorecard import Scorecard
from metrics.slices import slice_values
from stream.edge import Record
from stream.watermark import PartitionClock

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


@dataclass(slots=True, frozen=True)
class Prediction:
    event_id: str
    model: str
    model_version: str
    score: float
    decision: bool
    event_timestamp_ms: int
    record_timestamp_ms: int | None

    def to_json(self, latency_ms: float) -> bytes:
        return orjson.dumps(
            {
                "event_id": self.event_id,
                "score": self.score,
                "decision": self.decision,
                "model": self.model,
                "model_version": self.model_version,
                "event_timestamp": self.event_timestamp_ms,
                "latency_ms": round(latency_ms, 3),
            }
        )


#: Largest escaped size of a dead letter's reason, detail and topic name: with the other
#: fields, a dead letter without its record takes under :data:`DEAD_LETTER_MIN_BYTES`.
_REASON_BYTES, _DETAIL_BYTES, _TOPIC_BYTES = 128, 256, 256
#: The smallest bound :meth:`DeadLetter.to_json` accepts: room for every field but the record.
DEAD_LETTER_MIN_BYTES = 1024


def _clip(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose JSON string (quotes included) takes ``max_bytes``.

    >>> _clip("abcdef", 5), _clip('a"b"c', 6), _clip("", 2)
    ('abc', 'a"b', '')
    """
    if len(orjson.dumps(text)) <= max_bytes:
        return text
    low, high = 0, len(text)  # the longest fitting prefix has a length in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        if len(orjson.dumps(text[:middle])) <= max_bytes:
            low = middle
        else:
            high = middle
    return text[:low]


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """A record that could not be processed, with why and where it came from.

    Its JSON carries the record (as text, or as hex when it is not UTF-8), its
    size and SHA-256 digest, and is cut to a bound so that the dead-letter
    topic always accepts it: a record too large to fit is truncated (and says
    so), its digest still that of the whole record.

    >>> letter = DeadLetter("invalid_json", "unexpected end", b'{"a": ' + b'"x' * 4000,
    ...                     "events", 2, 17)
    >>> doc = orjson.loads(letter.to_json(max_bytes=1024))
    >>> len(letter.to_json(max_bytes=1024)) <= 1024, doc["truncated"], doc["size"], doc["offset"]
    (True, True, 8006, 17)
    >>> doc["sha256"] == hashlib.sha256(letter.value).hexdigest()
    True
    >>> orjson.loads(DeadLetter("not_utf8", "", b"caf\\xe9", "events", 0, 1).to_json())["value_hex"]
    '636166e9'
    """

    reason: str
    detail: str
    value: bytes
    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> str:
        """The record's ``topic:partition:offset``: the dead letter's key."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    def to_json(self, max_bytes: int = 256 * 1024) -> bytes:
        """The dead letter as JSON of at most ``max_bytes`` (at least ``DEAD_LETTER_MIN_BYTES``)."""
        if max_bytes < DEAD_LETTER_MIN_BYTES:
            raise ValueError(f"max_bytes must be at least {DEAD_LETTER_MIN_BYTES}, not {max_bytes}")
        value = self.value
        doc: dict[str, object] = {
            "reason": _clip(self.reason, _REASON_BYTES),
            "detail": _clip(self.detail, _DETAIL_BYTES),
            "topic": _clip(self.topic, _TOPIC_BYTES),
            "partition": self.partition,
            "offset": self.offset,
            "size": len(value),
            "sha256": hashlib.sha256(value).hexdigest(),
            "truncated": False,
        }
        try:
            text: str | None = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        field_name = "value" if text is not None else "value_hex"
        whole = text if text is not None else value.hex()
        encoded = orjson.dumps({**doc, field_name: whole})
        if len(encoded) <= max_bytes:
            return encoded
        doc["truncated"] = True
        # what the record may take: the bound less the rest, its key, colon and comma
        room = max_bytes - len(orjson.dumps(doc)) - len(field_name) - 4
        if text is None:
            part = value[: max(0, room - 2) // 2].hex()
        else:
            # a prefix of the bytes, cut at a character boundary; then of its escaped form
            prefix = value[: max(0, room)].decode("utf-8", "ignore")
            part = _clip(prefix, room)
        doc[field_name] = part
        return orjson.dumps(doc)


@dataclass(slots=True, frozen=True)
class Example:
    """One learned label with the features the model saw: a line of the training log.

    >>> Example("e1", {"user_seen": 1.0, "ctx_device": "ios"}, 1.0, 1.0, "labels",
    ...         "labels:0:7", 1000, 5000, 0.25, "3").to_json()[:60]
    b'{"event_id":"e1","label":1.0,"weight":1.0,"kind":"labels","s'
    """

    event_id: str
    x: dict
    label: float
    weight: float
    #: How the label came: ``inline`` (in the event), ``labels`` (the labels topic), ``implicit``.
    kind: str
    #: The label's record (``topic:partition:offset``), or ``implicit``.
    source: str
    event_timestamp_ms: int
    label_timestamp_ms: int
    #: What the champion scored the event (None: its score was not stored).
    score: float | None
    model_version: str

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "event_id": self.event_id,
                "label": self.label,
                "weight": self.weight,
                "kind": self.kind,
                "source": self.source,
                "event_timestamp": self.event_timestamp_ms,
                "label_timestamp": self.label_timestamp_ms,
                "score": self.score,
                "model_version": self.model_version,
                "features": self.x,
            }
        )


@dataclass
class ModelSlot:
    """A named model with its version, counters and monitor."""

    name: str
    model: base.Classifier
    spec: str = ""
    version: str = "0"
    monitor: Monitor | None = None
    scorecard: Scorecard | None = None
    events_scored: int = 0
    labels_learned: int = 0

    def __post_init__(self) -> None:
        self.spec = self.spec or self.name


#: Why a label left the pending set without its event, by :attr:`ExpiredLabel.cause`.
_EXPIRY_DETAIL = {
    "ttl": "no event with this event_id arrived within the pending window",
    "max_wait": "no event with this event_id arrived within the longest pending wait "
    "(store.pending_max_wait_s of event time)",
    "overflow": "evicted from the pending window: it was the oldest of more than "
    "store.pending_max labels waiting for their events",
}


@dataclass(slots=True)
class _Undo:
    """A slot's model as it was before its first learn of the batch, to undo a bad learn.

    ``start``: how many of the batch's learned labels came before the snapshot.
    """

    model: base.Classifier
    snapshot: bytes
    start: int


@dataclass(slots=True)
class _Learned:
    """A label the batch's models learned, kept until the batch is finished."""

    x: dict
    label: AppliedLabel
    event_id: str
    kind: str
    record: Record | None
    example: Example | None = None


@dataclass(slots=True, frozen=True)
class _Scored:
    """What an event awaiting its label was scored with: the label often follows soon."""

    scores: Sequence[float | None]
    x: dict
    event_time_ms: int
    #: The event's slice values (``monitoring.slices``), None when unknown.
    slices: tuple[str | None, ...] | None = None


@dataclass
class BatchOutput:
    predictions: list[Prediction] = field(default_factory=list)
    shadow_predictions: list[Prediction] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: The learned labels with their features, when the processor keeps them.
    examples: list[Example] = field(default_factory=list)
    labels_learned: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)


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
    held: dict[str, _Scored] = field(default_factory=dict)
    #: The processor-wide watermark when the batch was decoded (-1: none yet).
    clock_ms: int = -1


class Processor:
    """Decodes, builds features, scores and learns, one batch at a time.

    The first slot is the champion whose predictions are published; the
    others score and learn in the shadow (challengers, or a side-by-side
    comparison in a backtest). With ``keep_examples`` each batch's output
    carries its learned labels with the features the model saw (:class:`Example`).

    Event time is tracked per events partition by a :class:`~stream.watermark.PartitionClock`
    (``watermark_window``, ``watermark_quantile``: ``store.watermark_*`` in the
    settings), so a few events dated far ahead do not expire the labels that wait.
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
    ) -> None:
        if not slots:
            raise ValueError("a processor needs at least one model")
        self.slots = list(slots)
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
        self._recent: OrderedDict[str, _Scored] = OrderedDict()
        self._recent_max = recent_events
        self.keep_examples = keep_examples
        self.events_seen = 0
        #: Per slot name, the model before the batch's first learn (see :meth:`_learn_all`).
        self._undo: dict[str, _Undo] = {}
        #: The batch's learned labels, in order.
        self._learned: list[_Learned] = []
        #: Slots with parts the finiteness check cannot see into: probed at the batch's end.
        self._probe_due: set[str] = set()
        self._checks: dict[str, FiniteCheck] = {}
        champion = self.slots[0].monitor
        #: The champion's monitor's slice keys: what each event's slice values are taken for.
        self._slice_keys = champion.config.slices if champion is not None else ()

    # ------------------------------------------------------------------ decode

    def _decode(
        self, records: Sequence[Record], out: BatchOutput, held: dict[str, _Scored]
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

    def _learn(
        self,
        event_id: str,
        x: dict,
        label: AppliedLabel,
        scores: Sequence[float | None],
        event_time_ms: int,
        kind: str,
        out: BatchOutput,
        record: Record | None = None,
        slices: tuple[str | None, ...] | None = None,
    ) -> None:
        """Every model learns the label; ``scores``: what each gave the event, when known.

        The batch counts the label, and keeps it with ``x`` as an example when asked to.
        A label that would leave a model non-finite is not learned by any model
        and goes to the dead letters (``record``: the record that carried it).
        """
        entry = _Learned(x, label, event_id, kind, record)
        poisoned = self._learn_all(entry)
        if poisoned is not None:
            self._refuse(entry, poisoned, out)
            return
        if self.keep_examples:
            champion = self.slots[0]
            entry.example = Example(
                event_id,
                x,
                label.value,
                label.weight,
                kind,
                label.source,
                event_time_ms,
                label.timestamp_ms,
                scores[0] if scores else None,
                champion.version,
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
                detected = slot.monitor.observe_label(
                    given, y_true, label.weight, event_time_ms, slices
                )
                drifted = drifted or (detected and index == 0)
            if slot.scorecard is not None:
                slot.scorecard.update(y_true, given)
        if drifted:
            self._on_drift(self.slots[0], event_time_ms, "concept")
        if self.metrics is not None:
            self.metrics.observe_label(kind, y_true, event_time_ms)

    def _learn_all(self, entry: _Learned) -> str | None:
        """Every slot learns the label; None, or the name of a slot it left non-finite.

        Each slot's model is pickled before its first learn of the batch (one
        snapshot per slot and batch, not one per learn). After each learn a
        :class:`~learners.models.FiniteCheck` looks at the numbers of the
        model's parts it knows (linear weights, scaler statistics); when they
        are not all finite, every slot that learned the label is rebuilt from
        its snapshot and the batch's labels learned since, so the label is as
        if it had never come, and the same records give the same model on a
        replay. Parts it cannot see into (trees, forests) are probed once at
        the batch's end (:meth:`_probe`).
        """
        x, value, weight = entry.x, entry.label.value, entry.label.weight
        done: list[ModelSlot] = []
        for slot in self.slots:
            undo = self._undo.get(slot.name)
            if undo is None or undo.model is not slot.model:
                snapshot = pickle.dumps(slot.model, protocol=pickle.HIGHEST_PROTOCOL)
                self._undo[slot.name] = _Undo(slot.model, snapshot, len(self._learned))
            learn(slot.model, x, value, weight)
            done.append(slot)
            check = self._check(slot.model, slot.name)
            if not check():
                for learned in done:
                    self._rebuild(learned, set())
                return slot.name
            if check.opaque:
                self._probe_due.add(slot.name)
        self._learned.append(entry)
        for slot in self.slots:
            slot.labels_learned += 1
        return None

    def _check(self, model: base.Classifier, name: str) -> FiniteCheck:
        """The finiteness check of ``model``, built again when the slot's model changed."""
        check = self._checks.get(name)
        if check is None or check.model is not model:
            check = self._checks[name] = FiniteCheck(model)
        return check

    def _rebuild(self, slot: ModelSlot, skip: set[int]) -> None:
        """The slot's model from its batch snapshot and the labels learned since, less ``skip``."""
        undo = self._undo[slot.name]
        model = pickle.loads(undo.snapshot)  # noqa: S301 - pickled above, by this process
        for index in range(undo.start, len(self._learned)):
            if index not in skip:
                entry = self._learned[index]
                learn(model, entry.x, entry.label.value, entry.label.weight)
        slot.model = undo.model = model

    def _probe(self, out: BatchOutput) -> None:
        """At the batch's end, score the last learned example with each model that has
        opaque parts; a non-finite score finds the labels to blame, one learn at a time.

        The blamed labels are taken back: no model keeps them, they leave the
        batch's examples and count, and go to the dead letters.
        """
        probe_due, self._probe_due = self._probe_due, set()
        bad: set[int] = set()
        blamed: dict[int, str] = {}
        for slot in self.slots:
            undo = self._undo.get(slot.name)
            if slot.name not in probe_due or undo is None or undo.model is not slot.model:
                continue
            if undo.start >= len(self._learned):
                continue
            if math.isfinite(score(slot.model, self._learned[-1].x)):
                continue
            model = pickle.loads(undo.snapshot)  # noqa: S301 - pickled above, by this process
            for index in range(undo.start, len(self._learned)):
                if index in bad:
                    continue
                entry = self._learned[index]
                before = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
                learn(model, entry.x, entry.label.value, entry.label.weight)
                if not (FiniteCheck(model)() and math.isfinite(score(model, entry.x))):
                    model = pickle.loads(before)  # noqa: S301 - pickled just above
                    bad.add(index)
                    blamed[index] = slot.name
            slot.model = undo.model = model
        if not bad:
            return
        for slot in self.slots:
            if slot.name in self._undo and self._undo[slot.name].model is slot.model:
                self._rebuild(slot, bad)
        for index in sorted(bad):
            entry = self._learned[index]
            if entry.example is not None:
                out.examples = [e for e in out.examples if e is not entry.example]
            out.labels_learned -= 1
            for slot in self.slots:
                slot.labels_learned -= 1
            self._refuse(entry, blamed[index], out)

    def _refuse(self, entry: _Learned, slot_name: str, out: BatchOutput) -> None:
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
            record = Record("labels", orjson.dumps(body), *where)
        self._dead_letter(out, "poisoned_model", detail, record)
        if self.metrics is not None:
            self.metrics.labels_skipped.labels(reason="poisoned_model").inc()

    def _on_drift(self, champion: ModelSlot, event_time_ms: int, kind: str) -> None:
        """The configured action on a drift of the champion: reset, or a challenger.

        ``kind``: ``concept`` (``monitoring.concept_action``: none, reset or
        challenger) or ``feature`` (``monitoring.feature_action``: alert or challenger).
        """
        assert champion.monitor is not None
        config = champion.monitor.config
        action = config.concept_action if kind == "concept" else config.feature_action
        if action == "reset":
            log.warning(
                "concept drift at event time %d: %s starts afresh", event_time_ms, champion.name
            )
            champion.model = champion.model.clone()
            champion.monitor.reset_reference()
        elif action == "challenger":
            name = champion.name + "/challenger"
            self.slots = [slot for slot in self.slots if slot.name != name]
            log.warning("%s drift at event time %d: %s starts learning", kind, event_time_ms, name)
            monitor = Monitor(champion.monitor.config, threshold=self.threshold)
            scorecard = Scorecard(self.threshold) if champion.scorecard is not None else None
            self.slots.append(
                ModelSlot(
                    name,
                    champion.model.clone(),
                    champion.spec,
                    monitor=monitor,
                    scorecard=scorecard,
                )
            )

    def _remember(self, event_id: str, scored: _Scored) -> None:
        self._recent[event_id] = scored
        if len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def _scored(self, outcome: LabelOutcome, held: dict[str, _Scored]) -> _Scored:
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
        return _Scored([outcome.score], x, snap["ts"], slices)

    # ------------------------------------------------------------------ process

    def process(self, records: Sequence[Record]) -> BatchOutput:
        """Handle one batch; the caller publishes the outputs."""
        batch = self.prepare(records)
        return self.finish(batch, self.apply(batch))

    def prepare(self, records: Sequence[Record]) -> PreparedBatch:
        """Decode the batch and hand over the scores still to store (no I/O)."""
        out = BatchOutput()
        t0 = time.perf_counter()
        held: dict[str, _Scored] = {}
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
        self._undo, self._learned = {}, []
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
        self._undo, self._learned = {}, []
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
        scores: list[float | None] = [score(slot.model, x) for slot in self.slots]
        c = clock()
        self.events_seen += 1
        published = feature_drift = False
        slices = slice_values(self._slice_keys, event.context, event) if self._slice_keys else None
        for index, (slot, p) in enumerate(zip(self.slots, scores, strict=True)):
            slot.events_scored += 1
            if p is None or not math.isfinite(p):
                # Never published (it would be JSON null) nor fed to the monitors.
                scores[index] = None
                self._not_finite(event.event_id, slot, p, record, out, index == 0)
                continue
            decision = p > self.threshold
            prediction = Prediction(
                event.event_id, slot.name, slot.version, p, decision, event.timestamp,
                record.timestamp_ms,
            )  # fmt: skip
            (out.predictions if index == 0 else out.shadow_predictions).append(prediction)
            published = published or index == 0
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
        if outcome.label is None:
            self._remember(event.event_id, _Scored(scores, x, event.timestamp, slices))
        else:
            inline = outcome.label.source == record.source
            kind = "inline" if inline else "labels"
            self._learn(
                event.event_id, x, outcome.label, scores, event.timestamp, kind, out,
                record if inline else None, slices,
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

    def _implicit(self, implicit: LabelOutcome, out: BatchOutput) -> None:
        """An event whose label window passed in silence: learned as a negative."""
        scored = self._scored(implicit, {})
        label = AppliedLabel(0.0, 1.0, "implicit", self.watermark_ms)
        self._learn(
            implicit.event_id, scored.x, label, scored.scores, scored.event_time_ms, "implicit",
            out, slices=scored.slices,
        )  # fmt: skip
        if self.metrics is not None:
            delay_ms = max(0, self.watermark_ms - scored.event_time_ms)
            self.metrics.label_delay.observe(delay_ms / 1000)

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

        >>> from features.interactions import InteractionConfig
        >>> from features.store import MemoryStore, StoreConfig
        >>> from features.vector import FeatureConfig
        >>> from learners.models import build_model
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

    def flush(self) -> None:
        """Store the scores still held back for the next batch's store call."""
        if self._deferred_scores:
            self.store.apply([], self._deferred_scores, {})
            self._deferred_scores = {}

    def _label_outcome(
        self,
        op: EventOp | LabelOp,
        outcome: LabelOutcome,
        out: BatchOutput,
        held: dict[str, _Scored],
        record: Record | None = None,
    ) -> None:
        assert isinstance(op, LabelOp)
        if outcome.status in ("learn", "relearn"):
            scored = self._scored(outcome, held)
            label = AppliedLabel(op.label, op.weight, op.source, op.timestamp_ms)
            x, scores, event_time_ms = scored.x, scored.scores, scored.event_time_ms
            self._learn(
                outcome.event_id, x, label, scores, event_time_ms, "labels", out, record,
                scored.slices,
            )  # fmt: skip
            if self.metrics is not None:
                delay_ms = max(0, op.timestamp_ms - event_time_ms)
                self.metrics.label_delay.observe(delay_ms / 1000)
        elif outcome.status in ("duplicate", "late") and self.metrics is not None:
            self.metrics.labels_skipped.labels(reason=outcome.status).inc()
