"""Interaction state stores: one batch of events and labels in, their outcomes out.

Two stores share one contract, :meth:`apply`:

* :class:`RedisStore` sends the whole batch to Redis in one Lua script call
  (one round trip, atomic, so several workers touching the same item stay exact);
* :class:`MemoryStore` does the same in process, for backtests and unit tests.

Per event, in record order: if the event id already has a snapshot from the
same source record it is a *replay* (the stored pre-event state is returned, so
a re-processed event gets the features it had); from another record it is a
*duplicate*. Otherwise the entities' state is read, then updated (guarded by a
per-entity, per-partition offset watermark), and a snapshot of the event and
the state it saw is kept for the label join. Labels update positive counters
at label time, once per event id; a label ahead of its event waits in a
bounded pending set.

In Redis an entity is a hash of its state, ``v`` (packed doubles: see
:func:`decode_state`, or :meth:`RedisStore.state` for one entity), and one
watermark ``w<partition>`` per partition that touched it.

Entity state lives ``store.state_ttl_s`` after its last update (0: forever), so
the state kept is bounded by the entities active within that time. Redis
expires keys on its own clock: every update of an entity (an event counted, a
label) sets the key's TTL again, in the same script call. The in-process store
runs in *event time* instead, as backtests do: an entity not updated for the
TTL of event time (the latest event, label or watermark time the store has
seen) is gone, with its watermarks. Both agree on any stream that spans less
than the TTL, and a stream processed live meets both clocks at the same pace.
Every other key the script writes expires too (snapshots, after
``store.snapshot_ttl_s``) or is one of a fixed set of keys per partition: the
pending labels (at most ``store.pending_max``) and the implicit-label deadlines
(the events of the last ``store.implicit_negative_after_s`` of event time).

Examples
--------
>>> from features.interactions import InteractionConfig
>>> store = MemoryStore(StoreConfig(), InteractionConfig(half_lives_s=(3600.0,)))
>>> ops = [
...     EventOp("e1", "events:0:0", 0, 0, 1000, [("user", "u"), ("item", "i")], b"{}", None, 1.0),
...     LabelOp("e1", "labels:0:0", 1.0, 1.0, 2000),
...     EventOp("e2", "events:0:1", 0, 1, 3000, [("user", "u"), ("item", "j")], b"{}", None, 1.0),
... ]
>>> first, label, second = store.apply(ops, {}, {0: 3000}).outcomes
>>> first.status, first.states[0][1].count, label.status, second.states[0][1].positives
('new', 0, 'learn', 1.0)
>>> store.apply(ops[:1], {}, {0: 3000}).outcomes[0].status
'replay'
"""

from __future__ import annotations

import heapq
import struct
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Literal, Protocol

import orjson
import redis
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.interactions import EntityState, InteractionConfig, observe, observe_label

__all__ = [
    "AppliedLabel",
    "BatchOutcome",
    "EventOp",
    "EventOutcome",
    "ExpiredLabel",
    "InteractionStore",
    "LabelOp",
    "LabelOutcome",
    "MemoryStore",
    "RedisStore",
    "StoreConfig",
    "decode_state",
    "split_source",
]


class StoreConfig(BaseModel):
    """Retention of entity state, snapshots and pending labels, and implicit labelling."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    key_prefix: str = Field(
        default="sl",
        min_length=1,
        max_length=64,
        pattern=r"^[^\s{}]+$",
        description="Prefix of every Redis key: no whitespace, no hash-tag braces.",
    )
    snapshot_ttl_s: float = Field(
        default=172_800.0,
        gt=0,
        le=31_536_000,
        description="How long a scored event waits for its label (at most 365 days).",
    )
    max_snapshots: int = Field(
        default=2_000_000,
        gt=0,
        le=1_000_000_000,
        description="Snapshots kept by the in-process store.",
    )
    pending_max: int = Field(
        default=100_000, gt=0, le=100_000_000, description="Most labels waiting for their event."
    )
    pending_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        le=31_536_000,
        description="Event time a label waits for its event.",
    )
    implicit_negative_after_s: float = Field(
        default=0.0,
        ge=0,
        le=31_536_000,
        description="Learn an event as negative when no label came this long after it (0: off);"
        " below snapshot_ttl_s, since the event's snapshot must outlive the wait.",
    )
    sweep_max: int = Field(
        default=10_000, gt=0, le=1_000_000, description="Most implicit labels per batch."
    )
    state_ttl_s: float = Field(
        default=2_592_000.0,
        ge=0,
        le=315_360_000,
        description=(
            "How long an entity's state lives after its last update (0: forever, at most"
            " 10 years); event time in the in-process store, the Redis clock in Redis."
        ),
    )

    @model_validator(mode="after")
    def _state_outlives_snapshots(self) -> StoreConfig:
        if 0 < self.state_ttl_s < self.snapshot_ttl_s:
            raise ValueError(
                f"state_ttl_s ({self.state_ttl_s:g}) must be 0 (never expire) or at least "
                f"snapshot_ttl_s ({self.snapshot_ttl_s:g}), so that a label finds the state "
                "its event counted"
            )
        return self

    @model_validator(mode="after")
    def _implicit_within_snapshot_ttl(self) -> StoreConfig:
        if self.implicit_negative_after_s >= self.snapshot_ttl_s:
            raise ValueError(
                f"implicit_negative_after_s ({self.implicit_negative_after_s:g}) must be below"
                f" snapshot_ttl_s ({self.snapshot_ttl_s:g}): the event's snapshot would expire"
                " before its implicit label is due"
            )
        return self


@dataclass(slots=True, frozen=True)
class EventOp:
    """An event to score: read its entities' state, then count it."""

    event_id: str
    source: str
    partition: int
    offset: int
    timestamp_ms: int
    entities: list[tuple[str, str]]
    payload: bytes
    label: float | None
    weight: float


@dataclass(slots=True, frozen=True)
class LabelOp:
    """A label for an event, from the labels topic.

    ``held``: the caller still holds what the event was scored with, so a
    learned label comes back without the event's payload and states.
    """

    event_id: str
    source: str
    label: float
    weight: float
    timestamp_ms: int
    held: bool = False


@dataclass(slots=True, frozen=True)
class AppliedLabel:
    """A label that became known, with where it came from."""

    value: float
    weight: float
    source: str
    timestamp_ms: int


@dataclass(slots=True)
class EventOutcome:
    status: Literal["new", "replay", "duplicate"]
    states: list[tuple[str, EntityState]] = field(default_factory=list)
    label: AppliedLabel | None = None


LabelStatus = Literal["learn", "relearn", "pending", "duplicate", "late", "noop", "implicit"]


@dataclass(slots=True)
class LabelOutcome:
    status: LabelStatus
    event_id: str = ""
    payload: bytes = b""
    states: list[tuple[str, EntityState]] = field(default_factory=list)
    score: float | None = None


@dataclass(slots=True, frozen=True)
class ExpiredLabel:
    """A label whose event never came within the pending window."""

    event_id: str
    label: AppliedLabel | None


@dataclass(slots=True)
class BatchOutcome:
    outcomes: list[EventOutcome | LabelOutcome]
    expired: list[ExpiredLabel]
    implicit: list[LabelOutcome]


class InteractionStore(Protocol):
    def apply(
        self,
        ops: Sequence[EventOp | LabelOp],
        scores: Mapping[str, float],
        watermarks: Mapping[int, int],
    ) -> BatchOutcome:
        """Apply the batch; ``watermarks``: event time reached per owned partition."""
        ...

    def pending_count(self) -> int:
        """Labels waiting for their event."""
        ...


def split_source(source: str) -> tuple[str, int, int]:
    """The topic, partition and offset of a ``topic:partition:offset`` source.

    >>> split_source("app.labels:3:1200")
    ('app.labels', 3, 1200)
    """
    topic, partition, offset = source.rsplit(":", 2)
    return topic, int(partition), int(offset)


def _kinds_of(payload: bytes) -> list[str]:
    return orjson.loads(payload)["kinds"] if payload else []


# ---------------------------------------------------------------------------- memory


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

    >>> from features.interactions import InteractionConfig
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
            self.pending[op.event_id] = AppliedLabel(
                op.label, op.weight, op.source, op.timestamp_ms
            )
            return LabelOutcome("pending", op.event_id)
        if snap.label_source == op.source:
            status = "noop" if snap.label_at == "event" else "relearn"
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

    def _expire_pending(self, partition: int, watermark_ms: int) -> list[ExpiredLabel]:
        cutoff = watermark_ms - int(self.config.pending_ttl_s * 1000)
        mine = [
            (event_id, label)
            for event_id, label in self.pending.items()
            if split_source(label.source)[1] == partition
        ]
        by_age = sorted(mine, key=lambda item: (item[1].timestamp_ms, item[0]))
        stale = [event_id for event_id, label in by_age if label.timestamp_ms <= cutoff]
        overflow = len(by_age) - len(stale) - self.config.pending_max
        if overflow > 0:
            stale += [event_id for event_id, _ in by_age[len(stale) : len(stale) + overflow]]
        return [ExpiredLabel(event_id, self.pending.pop(event_id)) for event_id in stale]

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
        marks = sorted(watermarks.items())
        for _, mark in marks:
            self._tick(mark)
        expired = [label for p, mark in marks for label in self._expire_pending(p, mark)]
        implicit = []
        if self.config.implicit_negative_after_s:
            implicit = [label for p, mark in marks for label in self._sweep_implicit(p, mark)]
        self._evict_expired()
        return BatchOutcome(outcomes, expired, implicit)


# ---------------------------------------------------------------------------- redis

_SCRIPT = resources.files("features").joinpath("apply_batch.lua").read_text(encoding="utf-8")


def _parse_states(
    kinds: Sequence[str], packed: bytes, n_decays: int
) -> list[tuple[str, EntityState]]:
    """States as the script sends them: each entity's stored ``v``, concatenated."""
    if not packed:
        return []
    width = 5 + n_decays
    values = struct.unpack(f"<{width * len(kinds)}d", packed)
    return [(kind, _state(values[i * width : (i + 1) * width])) for i, kind in enumerate(kinds)]


def _state(v: Sequence[float]) -> EntityState:
    return EntityState(int(v[0]), v[1], v[2], int(v[3]), int(v[4]), list(v[5:]))


def decode_state(value: bytes | None, n_decays: int) -> EntityState:
    """An entity hash's ``v`` field: little-endian doubles ``count, positives, labelled,
    last_ms, decay_ref_ms`` and one decayed count per half-life (absent: a new entity).

    >>> state = decode_state(struct.pack("<6d", 2, 1, 1, 5000, 5000, 1.5), 1)
    >>> state.count, state.positives, state.labelled, state.last_ms, state.decayed
    (2, 1.0, 1.0, 5000, [1.5])
    >>> decode_state(None, 1).last_ms
    -1
    """
    if value is None:
        return EntityState(decayed=[0.0] * n_decays)
    return _state(struct.unpack(f"<{5 + n_decays}d", value))


def _parse_label(text: str) -> AppliedLabel | None:
    if not text:
        return None
    value, weight, rest = text.split("|", 2)
    source, timestamp = rest.rsplit("|", 2)[:2]
    return AppliedLabel(float(value), float(weight), source, int(timestamp))


def _parse_pending(text: str) -> AppliedLabel | None:
    if not text:
        return None
    value, weight, rest = text.split("|", 2)
    source, timestamp = rest.rsplit("|", 1)
    return AppliedLabel(float(value), float(weight), source, int(timestamp))


def _score(text: bytes | str) -> float | None:
    return float(text) if text else None


class RedisStore:
    """The Redis store: one atomic Lua script call per batch.

    ``kinds_of`` maps a snapshot's payload to the entity kinds it was stored
    with; the worker's payloads carry them under ``"kinds"``.
    """

    def __init__(
        self, client: redis.Redis, config: StoreConfig, features: InteractionConfig
    ) -> None:
        self.client = client
        self.config = config
        self.features = features
        self._script = client.register_script(_SCRIPT)
        self._params = {
            "half_lives_ms": list(features.half_lives_ms),
            "snapshot_ttl_ms": int(config.snapshot_ttl_s * 1000),
            "pending_max": config.pending_max,
            "pending_ttl_ms": int(config.pending_ttl_s * 1000),
            "implicit_ms": int(config.implicit_negative_after_s * 1000),
            "sweep_max": config.sweep_max,
            "state_ttl_ms": int(config.state_ttl_s * 1000),
        }

    def pending_count(self) -> int:
        return int(self.client.hlen(f"{self.config.key_prefix}:pl"))

    def key(self, kind: str, entity: str) -> str:
        return f"{self.config.key_prefix}:e:{kind}:{entity}"

    def state(self, kind: str, entity: str) -> EntityState:
        """What Redis holds for one entity (for inspection; the script reads it itself)."""
        value = self.client.hget(self.key(kind, entity), "v")
        return decode_state(value, len(self.features.half_lives_s))  # type: ignore[arg-type]

    def apply(
        self,
        ops: Sequence[EventOp | LabelOp],
        scores: Mapping[str, float],
        watermarks: Mapping[int, int],
    ) -> BatchOutcome:
        encoded = []
        for op in ops:
            if isinstance(op, EventOp):
                keys = [self.key(kind, entity) for kind, entity in op.entities]
                encoded.append(
                    [
                        "E",
                        op.event_id,
                        op.source,
                        op.partition,
                        op.offset,
                        op.timestamp_ms,
                        keys,
                        op.payload.decode(),
                        op.label,
                        op.weight,
                    ]
                )
            else:
                encoded.append(
                    ["L", op.event_id, op.source, op.label, op.weight, op.timestamp_ms, op.held]
                )
        params = orjson.dumps({**self._params, "watermarks": sorted(watermarks.items())})
        replies = self._script(
            args=[
                self.config.key_prefix,
                orjson.dumps(encoded),
                orjson.dumps({k: repr(v) for k, v in scores.items()}) if scores else b"{}",
                params,
            ]
        )
        n_decays = len(self.features.half_lives_s)
        outcomes: list[EventOutcome | LabelOutcome] = []
        for op, reply in zip(ops, replies, strict=False):
            status = reply[0].decode()
            if isinstance(op, EventOp):
                kinds = [kind for kind, _ in op.entities]
                outcomes.append(
                    EventOutcome(
                        status,  # type: ignore[arg-type]
                        _parse_states(kinds, reply[1], n_decays),
                        _parse_label(reply[2].decode()),
                    )
                )
            else:
                payload = reply[1]
                outcomes.append(
                    LabelOutcome(
                        status,  # type: ignore[arg-type]
                        op.event_id,
                        payload,
                        _parse_states(_kinds_of(payload), reply[2], n_decays),
                        _score(reply[3]),
                    )
                )
        expired, implicit = [], []
        for reply in replies[len(ops) :]:
            event_id = reply[1].decode()
            if reply[0] == b"X":
                expired.append(ExpiredLabel(event_id, _parse_pending(reply[2].decode())))
            else:
                payload = reply[2]
                implicit.append(
                    LabelOutcome(
                        "implicit",
                        event_id,
                        payload,
                        _parse_states(_kinds_of(payload), reply[3], n_decays),
                        _score(reply[4]),
                    )
                )
        return BatchOutcome(outcomes, expired, implicit)
