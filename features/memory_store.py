"""The in-process interaction store: :class:`MemoryStore`, for backtests and unit tests.

It keeps the contract of :mod:`features.store` as :class:`features.redis_store.RedisStore`
does in Redis, bounded by count (snapshots) and by event time (entity state,
``store.state_ttl_s``): see :mod:`features.store` for the semantics both share.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from streamlearn.features.interactions import EntityState, InteractionConfig, observe, observe_label
from streamlearn.features.store import (
    AppliedLabel,
    BatchOutcome,
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

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Snapshot:
    source: str
    payload: bytes
    states: list[tuple[str, EntityState]]
    keys: list[str]
    score: float | None = None
    label: AppliedLabel | None = None
    label_at: str = ""
    label_source: str = ""


class MemoryStore:
    """The in-process store: same semantics as :class:`RedisStore`, bounded by count
    (snapshots) and by event time (entity state, ``state_ttl_s``).

    >>> from streamlearn.features.interactions import InteractionConfig
    >>> config = StoreConfig(snapshot_ttl_s=60, state_ttl_s=60)
    >>> store = MemoryStore(config, InteractionConfig(half_lives_s=(3600.0,)))
    >>> def event(i, ts):
    ...     return EventOp(f"e{i}", f"ev:0:{i}", 0, i, ts, [("user", "u")], b"{}", None, 1.0)
    >>> _ = store.apply([event(0, 0), event(1, 59_000)], {}, {})
    >>> store.apply([event(2, 118_000)], {}, {}).outcomes[0].states[0][1].count
    2
    >>> store.apply([event(3, 180_000)], {}, {}).outcomes[0].states[0][1].count
    0
    """

    def __init__(self, config: StoreConfig, features: InteractionConfig) -> None:
        self.config = config
        self.features = features
        self.entities: dict[str, EntityState] = {}
        self.watermarks: dict[str, dict[int, int]] = {}
        self.snapshots: OrderedDict[str, _Snapshot] = OrderedDict()
        self.pending: dict[str, AppliedLabel] = {}
        # The pending labels by (timestamp, event_id), all of them and per label
        # partition: heaps whose entries of labels no longer pending are skipped.
        self._pending_all: list[tuple[int, str]] = []
        self._pending_by_partition: dict[int, list[tuple[int, str]]] = {}
        self._evicted: list[ExpiredLabel] = []
        self.deadlines: dict[int, list[tuple[int, str]]] = {}
        #: Event time of each entity's last update, least recently updated first.
        self.updated: OrderedDict[str, int] = OrderedDict()
        #: The latest event time seen: the clock entity state expires by.
        self.clock_ms = -(2**63)
        self._state_ttl_ms = int(config.state_ttl_s * 1000)

    def _tick(self, timestamp_ms: int) -> None:
        if timestamp_ms > self.clock_ms:
            self.clock_ms = timestamp_ms

    def _expired(self, key: str) -> bool:
        updated = self.updated.get(key)
        return (
            self._state_ttl_ms > 0
            and updated is not None
            and updated + self._state_ttl_ms <= self.clock_ms
        )

    def _forget(self, key: str) -> None:
        self.entities.pop(key, None)
        self.watermarks.pop(key, None)
        self.updated.pop(key, None)

    def _set(self, key: str, state: EntityState, timestamp_ms: int) -> None:
        """Store an entity's new state and restart its lifetime (Redis: PEXPIRE)."""
        self.entities[key] = state
        updated = self.updated.pop(key, timestamp_ms)
        self.updated[key] = max(updated, timestamp_ms)

    def _evict_expired(self) -> None:
        """Drop the entities not updated for the state TTL; the rest expire when read."""
        if self._state_ttl_ms <= 0:
            return
        cutoff = self.clock_ms - self._state_ttl_ms
        while self.updated:
            key, updated = next(iter(self.updated.items()))
            if updated > cutoff:
                break
            self._forget(key)

    def _state(self, key: str) -> EntityState:
        if self._expired(key):
            self._forget(key)
        state = self.entities.get(key)
        return state if state is not None else EntityState.empty(self.features)

    def _apply_label(self, snap: _Snapshot, label: AppliedLabel, at: str) -> None:
        for key in snap.keys:
            self._set(key, observe_label(self._state(key), label.value), label.timestamp_ms)
        snap.label, snap.label_at, snap.label_source = label, at, label.source

    def _event(self, op: EventOp) -> EventOutcome:
        snap = self.snapshots.get(op.event_id)
        if snap is not None:
            if snap.source != op.source:
                return EventOutcome("duplicate")
            relearn = snap.label if snap.label_at == "event" else None
            return EventOutcome("replay", snap.states, relearn)
        keys = [f"{kind}:{entity}" for kind, entity in op.entities]
        states = []
        for (kind, _), key in zip(op.entities, keys, strict=True):
            state = self._state(key)
            states.append((kind, state))
            marks = self.watermarks.setdefault(key, {})
            if op.offset > marks.get(op.partition, -1):
                self._set(key, observe(state, op.timestamp_ms, self.features), op.timestamp_ms)
                marks[op.partition] = op.offset
        snap = _Snapshot(op.source, op.payload, states, keys)
        self.snapshots[op.event_id] = snap
        if len(self.snapshots) > self.config.max_snapshots:
            self.snapshots.popitem(last=False)
        applied = None
        if op.label is not None:
            applied = AppliedLabel(op.label, op.weight, op.source, op.timestamp_ms)
        elif op.event_id in self.pending:
            applied = self.pending.pop(op.event_id)
        elif self.config.implicit_negative_after_s > 0:
            deadline = op.timestamp_ms + int(self.config.implicit_negative_after_s * 1000)
            heapq.heappush(self.deadlines.setdefault(op.partition, []), (deadline, op.event_id))
        if applied is not None:
            self._apply_label(snap, applied, "event")
        return EventOutcome("new", states, applied)

    def _label(self, op: LabelOp) -> LabelOutcome:
        snap = self.snapshots.get(op.event_id)
        if snap is None:
            waiting = self.pending.get(op.event_id)
            if waiting is not None and waiting.source != op.source:
                return LabelOutcome("duplicate", op.event_id)
            self._add_pending(op)
            return LabelOutcome("pending", op.event_id)
        if snap.label_source == op.source:
            status: LabelStatus = "noop" if snap.label_at == "event" else "relearn"
            return self._labelled(status, op, snap)
        if snap.label_source == "implicit":
            if op.label > 0:
                for key in snap.keys:
                    state = self._state(key)
                    self._set(
                        key, replace(state, positives=state.positives + op.label), op.timestamp_ms
                    )
            snap.label_source = "late:" + op.source
            return LabelOutcome("late", op.event_id)
        if snap.label_source:
            return LabelOutcome("duplicate", op.event_id)
        self._apply_label(
            snap, AppliedLabel(op.label, op.weight, op.source, op.timestamp_ms), "label"
        )
        return self._labelled("learn", op, snap)

    @staticmethod
    def _labelled(status: LabelStatus, op: LabelOp, snap: _Snapshot) -> LabelOutcome:
        if op.held:
            return LabelOutcome(status, op.event_id)
        return LabelOutcome(status, op.event_id, snap.payload, snap.states, snap.score)

    def _add_pending(self, op: LabelOp) -> None:
        """A label waits for its event; past ``pending_max`` the oldest waiting one leaves."""
        known = op.event_id in self.pending
        self.pending[op.event_id] = AppliedLabel(op.label, op.weight, op.source, op.timestamp_ms)
        if not known:
            entry = (op.timestamp_ms, op.event_id)
            heapq.heappush(self._pending_all, entry)
            partition = split_source(op.source)[1]
            heapq.heappush(self._pending_by_partition.setdefault(partition, []), entry)
        while len(self.pending) > self.config.pending_max:
            self._evicted += self._pop_pending(self._pending_all, None, "overflow", 1)

    def _is_pending(self, entry: tuple[int, str], partition: int | None = None) -> bool:
        """Whether a heap entry is a waiting label (of ``partition``, when given)."""
        label = self.pending.get(entry[1])
        if label is None or label.timestamp_ms != entry[0]:
            return False
        return partition is None or split_source(label.source)[1] == partition

    def _pop_pending(
        self,
        heap: list[tuple[int, str]],
        cutoff: int | None,
        cause: ExpiryCause,
        most: int = -1,
        partition: int | None = None,
    ) -> list[ExpiredLabel]:
        """The waiting labels of ``heap``, oldest first, up to ``cutoff`` (None: any), at
        most ``most`` (-1: all), taken out of the pending set."""
        taken: list[ExpiredLabel] = []
        while heap and len(taken) != most and (cutoff is None or heap[0][0] <= cutoff):
            entry = heapq.heappop(heap)
            if self._is_pending(entry, partition):
                taken.append(ExpiredLabel(entry[1], self.pending.pop(entry[1]), cause))
        return taken

    def pending_entries(self) -> int:
        """Entries in the pending labels' heaps: at most ``4 * pending + 2048`` after a batch."""
        by_partition = sum(len(heap) for heap in self._pending_by_partition.values())
        return len(self._pending_all) + by_partition

    def _compact_pending(self) -> None:
        """Drop the heaps' entries of labels that left, once they outnumber the rest."""
        if self.pending_entries() <= 4 * len(self.pending) + 2048:
            return
        self._pending_all = [entry for entry in self._pending_all if self._is_pending(entry)]
        heapq.heapify(self._pending_all)
        for partition, heap in list(self._pending_by_partition.items()):
            live = [entry for entry in heap if self._is_pending(entry, partition)]
            heapq.heapify(live)
            if live:
                self._pending_by_partition[partition] = live
            else:
                del self._pending_by_partition[partition]

    def _expire_pending(self, partition: int, watermark_ms: int) -> list[ExpiredLabel]:
        cutoff = watermark_ms - int(self.config.pending_ttl_s * 1000)
        heap = self._pending_by_partition.get(partition, [])
        return self._pop_pending(heap, cutoff, "ttl", partition=partition)

    def _sweep_implicit(self, partition: int, watermark_ms: int) -> list[LabelOutcome]:
        swept = []
        deadlines = self.deadlines.get(partition, [])
        for _ in range(self.config.sweep_max):
            if not deadlines or deadlines[0][0] > watermark_ms:
                break
            _, event_id = heapq.heappop(deadlines)
            snap = self.snapshots.get(event_id)
            if snap is None or snap.label_source:
                continue
            self._apply_label(snap, AppliedLabel(0.0, 1.0, "implicit", watermark_ms), "implicit")
            swept.append(LabelOutcome("implicit", event_id, snap.payload, snap.states, snap.score))
        return swept

    def pending_count(self) -> int:
        return len(self.pending)

    def apply(
        self,
        ops: Sequence[EventOp | LabelOp],
        scores: Mapping[str, float],
        watermarks: Mapping[int, int],
        clock_ms: int = -1,
    ) -> BatchOutcome:
        for event_id, score in scores.items():
            snap = self.snapshots.get(event_id)
            if snap is not None:
                snap.score = score
        outcomes: list[EventOutcome | LabelOutcome] = []
        for op in ops:
            self._tick(op.timestamp_ms)
            if isinstance(op, EventOp):
                outcomes.append(self._event(op))
            else:
                outcomes.append(self._label(op))
        expired, self._evicted = self._evicted, []
        marks = sorted(watermarks.items())
        for _, mark in marks:
            self._tick(mark)
        expired += [label for p, mark in marks for label in self._expire_pending(p, mark)]
        if clock_ms >= 0:
            cutoff = clock_ms - self.config.max_wait_ms
            expired += self._pop_pending(self._pending_all, cutoff, "max_wait")
        self._compact_pending()
        implicit = []
        if self.config.implicit_negative_after_s:
            implicit = [label for p, mark in marks for label in self._sweep_implicit(p, mark)]
        self._evict_expired()
        return BatchOutcome(outcomes, expired, implicit)
