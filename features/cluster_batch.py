"""One batch run on the views :class:`features.cluster_store.ClusterStore` read: pure.

:class:`BatchPlan` follows :class:`features.memory_store.MemoryStore` step by step
(the scores, then each operation in record order, then the pending labels' expiry
and the implicit labels' sweep), on the event ids' hashes (:class:`Snap`) and the
pending index (:class:`PendingIndex`) as the batch changes them, and collects per
entity the deltas of :mod:`features.cluster_plan`. :meth:`BatchPlan.settle` then
runs each entity's deltas on its hash and fills in the states the events saw.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streamlearn.features.cluster_plan import (
    Delta,
    Entity,
    Label,
    Observe,
    PendingIndex,
    Snap,
    label_text,
    merged,
    run_deltas,
    token,
)
from streamlearn.features.interactions import EntityState, InteractionConfig
from streamlearn.features.store import (
    AppliedLabel,
    EventOp,
    EventOutcome,
    ExpiredLabel,
    ExpiryCause,
    LabelOp,
    LabelOutcome,
    LabelStatus,
    StoreConfig,
    split_source,
)

__all__ = ["BatchPlan", "Views"]


@dataclass(slots=True)
class Views:
    """What the store read before the batch runs.

    ``snaps``: each event id's hash (absent ids: an empty :class:`Snap`);
    ``stale``: per partition, the waiting labels at or before its ``pending_ttl_s``
    cutoff; ``stale_all``: those at or before the ``max_wait`` cutoff; ``oldest``:
    the oldest waiting labels, ``total`` of them; ``due``: per partition, the first
    ``sweep_max`` implicit-label deadlines at or before its watermark.
    """

    snaps: dict[str, Snap] = field(default_factory=dict)
    stale: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    stale_all: list[tuple[int, str]] = field(default_factory=list)
    oldest: list[tuple[int, str]] = field(default_factory=list)
    total: int = 0
    due: dict[int, list[tuple[int, str]]] = field(default_factory=dict)


class BatchPlan:
    """Run one batch on :class:`Views`; see the module docstring."""

    def __init__(
        self,
        config: StoreConfig,
        features: InteractionConfig,
        views: Views,
        entity_key: str,
    ) -> None:
        self.config = config
        self.features = features
        self.snaps = views.snaps
        self.views = views
        self.pending = PendingIndex(views.total, views.oldest)
        self._entity_key = entity_key
        #: Per event id, the fields of its hash written (``None``: deleted).
        self.writes: dict[str, dict[str, bytes | str | None]] = {}
        self.created: set[str] = set()
        #: Event ids whose deltas were sent; their ``lp`` mark is cleared once written.
        self.opened: set[str] = set()
        self.deltas: dict[str, list[Delta]] = {}
        self.deadlines: dict[int, dict[str, int]] = {}
        self.swept: dict[int, list[str]] = {}
        self.evicted: list[ExpiredLabel] = []

    # ----------------------------------------------------------------- helpers

    def key(self, kind: str, entity: str) -> str:
        return f"{self._entity_key}{kind}:{entity}"

    def snap(self, event_id: str) -> Snap:
        snap = self.snaps.get(event_id)
        if snap is None:
            snap = self.snaps[event_id] = Snap()
        return snap

    def _write(self, event_id: str, **fields: bytes | str | None) -> None:
        self.writes.setdefault(event_id, {}).update(fields)

    def _delta(self, kind: str, entity: str, delta: Delta) -> None:
        self.deltas.setdefault(self.key(kind, entity), []).append(delta)

    def _label_all(
        self, snap: Snap, event_id: str, value: float, labelled: float, kind: str
    ) -> None:
        mark = token(kind, event_id)
        for entity_kind, entity in snap.entities:
            self._delta(entity_kind, entity, Label(value, labelled, mark))
        snap.open_label = True
        self.opened.add(event_id)
        self._write(event_id, lp="1")

    def _set_label(self, event_id: str, snap: Snap, label: AppliedLabel, at: str) -> None:
        snap.label, snap.label_at, snap.label_source = label, at, label.source
        self._write(event_id, lab=label.source, la=label_text(label), lat=at)

    # ------------------------------------------------------------------ the run

    def run(
        self,
        ops: Sequence[EventOp | LabelOp],
        scores: Mapping[str, float],
        watermarks: Mapping[int, int],
        clock_ms: int,
    ) -> tuple[list[EventOutcome | LabelOutcome], list[ExpiredLabel], list[LabelOutcome]]:
        for event_id, score in scores.items():
            snap = self.snaps.get(event_id)
            if snap is not None and snap.source:
                snap.score = score
                self._write(event_id, sc=repr(score))
        outcomes: list[EventOutcome | LabelOutcome] = []
        for op in ops:
            outcomes.append(self._event(op) if isinstance(op, EventOp) else self._label(op))
        expired, marks = self.evicted, sorted(watermarks.items())
        for partition, mark in marks:
            cutoff = mark - int(self.config.pending_ttl_s * 1000)
            entries = merged(self.views.stale.get(partition, []))
            entries = merged(entries, self.pending.added_until(cutoff, partition))
            expired += self._expire(entries, "ttl", partition)
        if clock_ms >= 0:
            cutoff = clock_ms - self.config.max_wait_ms
            entries = merged(self.views.stale_all, self.pending.added_until(cutoff))
            expired += self._expire(entries, "max_wait", None)
        implicit: list[LabelOutcome] = []
        if self.config.implicit_negative_after_s:
            for partition, mark in marks:
                implicit += self._sweep(partition, mark)
        return outcomes, expired, implicit

    def _event(self, op: EventOp) -> EventOutcome:
        snap = self.snap(op.event_id)
        if snap.source:
            if snap.source != op.source:
                return EventOutcome("duplicate")
            relearn = snap.label if snap.label_at == "event" else None
            if op.event_id not in self.opened:
                # A crash may have come between its hash and its entities: send them again
                # (each entity's watermark tells whether it took the event; nothing is
                # written when all did).
                value = relearn.value if relearn is not None else None
                delta = Observe(op.partition, op.offset, op.timestamp_ms, value, None)
                for kind, entity in snap.entities:
                    self._delta(kind, entity, delta)
                self.opened.add(op.event_id)
            return EventOutcome("replay", snap.states, relearn)
        snap.source, snap.payload, snap.entities = op.source, op.payload, list(op.entities)
        snap.states = [(kind, EntityState()) for kind, _ in op.entities]  # filled by settle
        self.created.add(op.event_id)
        self.opened.add(op.event_id)
        applied = None
        if op.label is not None:
            applied = AppliedLabel(op.label, op.weight, op.source, op.timestamp_ms)
        elif snap.pending is not None:
            applied = snap.pending
            self._unpend(op.event_id, snap)
        elif self.config.implicit_negative_after_s > 0:
            deadline = op.timestamp_ms + int(self.config.implicit_negative_after_s * 1000)
            self.deadlines.setdefault(op.partition, {})[op.event_id] = deadline
        value = applied.value if applied is not None else None
        for i, (kind, entity) in enumerate(op.entities):
            self._delta(
                kind,
                entity,
                Observe(op.partition, op.offset, op.timestamp_ms, value, (op.event_id, i)),
            )
        if applied is not None:
            self._set_label(op.event_id, snap, applied, "event")
        return EventOutcome("new", snap.states, applied)

    def _label(self, op: LabelOp) -> LabelOutcome:
        snap = self.snap(op.event_id)
        if not snap.source:
            waiting = snap.pending
            if waiting is not None and waiting.source != op.source:
                return LabelOutcome("duplicate", op.event_id)
            self._add_pending(op, snap)
            return LabelOutcome("pending", op.event_id)
        if snap.label_source == op.source:
            if snap.label_at == "event":
                return self._labelled("noop", op, snap)
            if snap.open_label and snap.label is not None:
                self._label_all(snap, op.event_id, snap.label.value, 1.0, "L")
            return self._labelled("relearn", op, snap)
        if snap.label_source == "implicit":
            if op.label > 0:
                self._label_all(snap, op.event_id, op.label, 0.0, "T")
            snap.label_source = "late:" + op.source
            self._write(op.event_id, lab=snap.label_source)
            return LabelOutcome("late", op.event_id)
        if snap.label_source:
            late = snap.label_source == "late:" + op.source
            if late and snap.open_label and op.label > 0:
                self._label_all(snap, op.event_id, op.label, 0.0, "T")
            return LabelOutcome("duplicate", op.event_id)
        label = AppliedLabel(op.label, op.weight, op.source, op.timestamp_ms)
        self._label_all(snap, op.event_id, op.label, 1.0, "L")
        self._set_label(op.event_id, snap, label, "label")
        return self._labelled("learn", op, snap)

    @staticmethod
    def _labelled(status: LabelStatus, op: LabelOp, snap: Snap) -> LabelOutcome:
        if op.held:
            return LabelOutcome(status, op.event_id)
        return LabelOutcome(status, op.event_id, snap.payload, snap.states, snap.score)

    # --------------------------------------------------------- pending labels

    def _add_pending(self, op: LabelOp, snap: Snap) -> None:
        known = snap.pending is not None
        snap.pending = AppliedLabel(op.label, op.weight, op.source, op.timestamp_ms)
        self._write(op.event_id, p=label_text(snap.pending))
        if not known:
            self.pending.add(op.event_id, op.timestamp_ms, split_source(op.source)[1])
        while self.pending.total > self.config.pending_max and self.pending.candidates:
            entry = heapq.heappop(self.pending.candidates)
            label = self._is_pending(entry, None)
            if label is not None:
                self._unpend(entry[1], self.snap(entry[1]))
                self.evicted.append(ExpiredLabel(entry[1], label, "overflow"))

    def _is_pending(self, entry: tuple[int, str], partition: int | None) -> AppliedLabel | None:
        label = self.snap(entry[1]).pending
        if label is None or label.timestamp_ms != entry[0]:
            return None
        if partition is not None and split_source(label.source)[1] != partition:
            return None
        return label

    def _unpend(self, event_id: str, snap: Snap) -> None:
        assert snap.pending is not None
        self.pending.remove(event_id, split_source(snap.pending.source)[1])
        snap.pending = None
        self._write(event_id, p=None)

    def _expire(
        self, entries: list[tuple[int, str]], cause: ExpiryCause, partition: int | None
    ) -> list[ExpiredLabel]:
        taken = []
        for entry in entries:
            label = self._is_pending(entry, partition)
            if label is not None:
                self._unpend(entry[1], self.snap(entry[1]))
                taken.append(ExpiredLabel(entry[1], label, cause))
        return taken

    # -------------------------------------------------------- implicit labels

    def _sweep(self, partition: int, watermark_ms: int) -> list[LabelOutcome]:
        added = [
            (d, eid) for eid, d in self.deadlines.get(partition, {}).items() if d <= watermark_ms
        ]
        due = merged(self.views.due.get(partition, []), added)[: self.config.sweep_max]
        swept = []
        for _, event_id in due:
            self.swept.setdefault(partition, []).append(event_id)
            snap = self.snaps.get(event_id)
            if snap is None or not snap.source:
                continue
            if snap.label_source:
                if snap.label_source == "implicit" and snap.open_label:
                    self._label_all(snap, event_id, 0.0, 1.0, "I")
                continue
            self._label_all(snap, event_id, 0.0, 1.0, "I")
            self._set_label(
                event_id, snap, AppliedLabel(0.0, 1.0, "implicit", watermark_ms), "implicit"
            )
            swept.append(LabelOutcome("implicit", event_id, snap.payload, snap.states, snap.score))
        return swept

    # ------------------------------------------------------------ the entities

    def settle(self, key: str, entity: Entity) -> Entity:
        """Run one entity's deltas on its hash and fill in the states its events saw."""
        after, seen = run_deltas(entity, self.deltas.get(key, []), self.features)
        for (event_id, position), state in seen.items():
            states = self.snaps[event_id].states
            states[position] = (states[position][0], state)
        return after
