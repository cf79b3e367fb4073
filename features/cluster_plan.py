"""What one batch does to the sharded interaction state: pure planning, no I/O.

:class:`features.cluster_store.ClusterStore` reads what a batch needs (the event
ids' hashes, the entities' hashes, the due ranges of the per-partition sorted
sets), and :class:`BatchPlan` runs the batch on those views in record order with
the semantics of :class:`features.memory_store.MemoryStore` (see
:mod:`features.store`): it gives the outcomes, the writes of each event id's hash
and of the sorted sets, and per entity the ordered *deltas* of the batch. A delta
carries its own idempotency guard, so applying an entity's deltas to any version of
its hash (:func:`run_deltas`) is what the check-and-set script commits, and what is
run again, from the fresh hash, when another worker changed the entity meanwhile.

Deltas:

* ``Observe``: one more event of ``partition`` at ``offset`` (and its label, when
  known at event time), guarded by the entity's watermark ``w<partition>``;
* ``Label``: a label's value added to the positives (and ``labelled`` to the labelled
  count), guarded by a token of the label in the entity's short list of the labels
  it took (``t``, the last :data:`TOKENS_KEPT`).

Examples
--------
>>> from streamlearn.features.interactions import InteractionConfig
>>> features = InteractionConfig(half_lives_s=(3600.0,))
>>> entity = Entity.empty(features)
>>> ops = [Observe(0, 7, 1000, None, None), Observe(0, 7, 1000, None, None)]
>>> after, pre = run_deltas(entity, ops, features)
>>> after.state.count, after.marks, len(pre)
(1, {0: 7}, 0)
>>> after, _ = run_deltas(after, [Label(1.0, 1.0, token("L", "e1"))] * 2, features)
>>> after.state.positives, after.state.labelled
(1.0, 1.0)
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from streamlearn.features.interactions import EntityState, InteractionConfig, observe, observe_label
from streamlearn.features.store import AppliedLabel

__all__ = [
    "TOKENS_KEPT",
    "Delta",
    "Entity",
    "Label",
    "Observe",
    "PendingIndex",
    "Snap",
    "label_text",
    "merged",
    "pack_state",
    "parse_label",
    "run_deltas",
    "token",
    "unpack_states",
]

#: Label tokens an entity keeps: a label is recognised as applied among its last ones.
TOKENS_KEPT = 64


def token(kind: str, event_id: str) -> bytes:
    """The 8-byte token of a label of ``kind`` (``L`` label, ``T`` late, ``I`` implicit)."""
    return hashlib.blake2b(f"{kind}{event_id}".encode(), digest_size=8).digest()


def pack_state(state: EntityState) -> bytes:
    """An entity state as little-endian doubles, the layout of ``RedisStore``'s ``v``.

    >>> len(pack_state(EntityState(decayed=[0.0, 0.0])))
    56
    """
    values = (state.count, state.positives, state.labelled, state.last_ms, state.decay_ref_ms)
    return struct.pack(f"<{5 + len(state.decayed)}d", *values, *state.decayed)


def unpack_states(packed: bytes, kinds: list[str], n_decays: int) -> list[tuple[str, EntityState]]:
    """States packed one after the other by :func:`pack_state`, with their kinds."""
    width = 5 + n_decays
    values = struct.unpack(f"<{width * len(kinds)}d", packed) if kinds else ()
    states = []
    for i, kind in enumerate(kinds):
        v = values[i * width : (i + 1) * width]
        states.append((kind, EntityState(int(v[0]), v[1], v[2], int(v[3]), int(v[4]), list(v[5:]))))
    return states


@dataclass(slots=True, frozen=True)
class Observe:
    """One more event; ``ref``: (event id, position) whose pre-event state this gives."""

    partition: int
    offset: int
    timestamp_ms: int
    label: float | None
    ref: tuple[str, int] | None


@dataclass(slots=True, frozen=True)
class Label:
    """A label applied to the entity once, recognised by its ``token``."""

    value: float
    labelled: float
    token: bytes


Delta = Observe | Label


@dataclass(slots=True)
class Entity:
    """One entity's hash: state ``v``, version ``n``, watermarks ``w<p>``, tokens ``t``."""

    version: bytes
    state: EntityState
    marks: dict[int, int]
    tokens: bytes

    @classmethod
    def empty(cls, features: InteractionConfig) -> Entity:
        return cls(b"", EntityState.empty(features), {}, b"")

    @classmethod
    def parse(cls, fields: Mapping[bytes, bytes], features: InteractionConfig) -> Entity:
        """From ``HGETALL`` (empty: a new entity)."""
        n = len(features.half_lives_s)
        value = fields.get(b"v")
        state = unpack_states(value, ["-"], n)[0][1] if value else EntityState.empty(features)
        marks = {int(k[1:]): int(v) for k, v in fields.items() if k[:1] == b"w"}
        return cls(fields.get(b"n", b""), state, marks, fields.get(b"t", b""))

    def fields(self, before: Entity) -> list[bytes | str]:
        """The field/value pairs that changed since ``before``, for the check-and-set."""
        out: list[bytes | str] = []
        if self.state != before.state:
            out += ["v", pack_state(self.state)]
        for partition, offset in self.marks.items():
            if before.marks.get(partition) != offset:
                out += [f"w{partition}", str(offset)]
        if self.tokens != before.tokens:
            out += ["t", self.tokens]
        return out


def run_deltas(
    entity: Entity, deltas: Iterable[Delta], features: InteractionConfig
) -> tuple[Entity, dict[tuple[str, int], EntityState]]:
    """The entity after its deltas, and the state each referenced event saw before its own."""
    state, marks, tokens = entity.state, dict(entity.marks), entity.tokens
    seen: dict[tuple[str, int], EntityState] = {}
    for delta in deltas:
        if isinstance(delta, Observe):
            if delta.ref is not None:
                seen[delta.ref] = state
            if delta.offset > marks.get(delta.partition, -1):
                state = observe(state, delta.timestamp_ms, features)
                if delta.label is not None:
                    state = observe_label(state, delta.label)
                marks[delta.partition] = delta.offset
        elif not _has_token(tokens, delta.token):
            state = replace(
                state,
                positives=state.positives + delta.value,
                labelled=state.labelled + delta.labelled,
                decayed=list(state.decayed),
            )
            tokens = (tokens + delta.token)[-8 * TOKENS_KEPT :]
    return Entity(entity.version, state, marks, tokens), seen


def _has_token(tokens: bytes, wanted: bytes) -> bool:
    return any(tokens[i : i + 8] == wanted for i in range(0, len(tokens), 8))


@dataclass(slots=True)
class Snap:
    """One event id's hash: its snapshot once the event came, its waiting label before."""

    source: str = ""
    payload: bytes = b""
    states: list[tuple[str, EntityState]] = field(default_factory=list)
    entities: list[tuple[str, str]] = field(default_factory=list)
    score: float | None = None
    label: AppliedLabel | None = None
    label_at: str = ""
    label_source: str = ""
    pending: AppliedLabel | None = None
    #: Its label's entity updates (``lp``) are not confirmed yet.
    open_label: bool = False


def label_text(label: AppliedLabel) -> str:
    """``value|weight|timestamp|source``, exact (``repr`` of the floats).

    >>> label_text(AppliedLabel(1.0, 0.5, "lb:0:3", 12))
    '1.0|0.5|12|lb:0:3'
    >>> parse_label(label_text(AppliedLabel(1.0, 0.5, "lb:0:3", 12)))
    AppliedLabel(value=1.0, weight=0.5, source='lb:0:3', timestamp_ms=12)
    """
    return f"{label.value!r}|{label.weight!r}|{label.timestamp_ms}|{label.source}"


def parse_label(text: bytes | str | None) -> AppliedLabel | None:
    if not text:
        return None
    if isinstance(text, bytes):
        text = text.decode()
    value, weight, timestamp, source = text.split("|", 3)
    return AppliedLabel(float(value), float(weight), source, int(timestamp))


def merged(*entries: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    """Entries of sorted sets (score, member) in their order, each once.

    >>> merged([(2, "b"), (1, "a")], [(1, "a"), (0, "z")])
    [(0, 'z'), (1, 'a'), (2, 'b')]
    """
    return sorted(set().union(*map(set, entries)))


class PendingIndex:
    """The sorted sets of waiting labels as the batch changes them: counts, adds, removals."""

    def __init__(self, total: int, oldest: list[tuple[int, str]]) -> None:
        self.total = total
        self.candidates = list(oldest)
        heapq.heapify(self.candidates)
        self.added: dict[str, tuple[int, int]] = {}
        self.removed: dict[str, int] = {}

    def add(self, event_id: str, timestamp_ms: int, partition: int) -> None:
        self.added[event_id] = (timestamp_ms, partition)
        self.removed.pop(event_id, None)
        heapq.heappush(self.candidates, (timestamp_ms, event_id))
        self.total += 1

    def remove(self, event_id: str, partition: int) -> None:
        self.removed[event_id] = partition
        self.added.pop(event_id, None)
        self.total -= 1

    def added_until(self, cutoff: int, partition: int | None = None) -> list[tuple[int, str]]:
        return [
            (ts, eid)
            for eid, (ts, p) in self.added.items()
            if ts <= cutoff and (partition is None or p == partition)
        ]
