"""The interaction store's contract: one batch of events and labels in, their outcomes out.

Two stores share one contract, :class:`InteractionStore`'s :meth:`apply`:

* :class:`features.redis_store.RedisStore` sends the whole batch to Redis in one
  Lua script call (one round trip, atomic, so several workers touching the same
  item stay exact);
* :class:`features.memory_store.MemoryStore` does the same in process, for
  backtests and unit tests;
* :class:`features.cluster_store.ClusterStore` (``redis.cluster: true``) shards the
  state over a Redis Cluster, and runs on a single Redis too.

The rules a store keeps to shard (the cluster store's docstring has its key layout):
every script declares its keys and every atomic unit lives in one hash slot (one key,
or keys sharing a hash tag); a batch is split by node and pipelined, never one round
trip per event; what spans entities (a label updates the positives of up to five) is
idempotent per entity, guarded by the entity's own watermark or record of the labels
it took, so a crash between two entities' updates loses and doubles nothing.

This module holds what they share: their configuration (:class:`StoreConfig`),
the operations of a batch (:class:`EventOp`, :class:`LabelOp`) and their
outcomes (:class:`BatchOutcome` and its parts).

Per event, in record order: if the event id already has a snapshot from the
same source record it is a *replay* (the stored pre-event state is returned, so
a re-processed event gets the features it had); from another record it is a
*duplicate*. Otherwise the entities' state is read, then updated (guarded by a
per-entity, per-partition offset watermark), and a snapshot of the event and
the state it saw is kept for the label join. Labels update positive counters
at label time, once per event id; a label ahead of its event waits in a
bounded pending set.

In Redis an entity is a hash of its state, ``v`` (packed doubles: see
:func:`features.redis_store.decode_state`, or ``RedisStore.state`` for one
entity), and one watermark ``w<partition>`` per partition that touched it.

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
>>> from streamlearn.features.interactions import InteractionConfig
>>> from streamlearn.features.memory_store import MemoryStore
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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamlearn.features.interactions import EntityState

__all__ = [
    "AppliedLabel",
    "BatchOutcome",
    "EventOp",
    "EventOutcome",
    "EventStatus",
    "ExpiredLabel",
    "ExpiryCause",
    "InteractionStore",
    "LabelOp",
    "LabelOutcome",
    "LabelStatus",
    "StoreConfig",
    "split_source",
]


class StoreConfig(BaseModel):
    """Retention of entity state, snapshots and pending labels, implicit labelling,
    and the event-time watermark that drives their expiry.

    A label ahead of its event waits in the pending set until one of these
    comes first: its event claims it; its partition's watermark passes its
    time by ``pending_ttl_s``; the processor-wide watermark passes it by
    ``pending_max_wait_s`` (the bound for labels whose partition number has no
    events partition, or whose events partition is owned elsewhere and lags);
    ``pending_max`` labels are waiting and it is the oldest. Every one that
    leaves without its event is a dead letter (``unknown_event``).

    >>> config = StoreConfig(pending_ttl_s=7200, pending_max_wait_s=3600)
    >>> config.max_wait_ms  # never shorter than the partition's own window
    7200000
    """

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
        description="Event time a label waits for its event, by its partition's watermark.",
    )
    pending_max_wait_s: float = Field(
        default=86_400.0,
        gt=0,
        le=31_536_000,
        description="Longest event time a label waits, on the processor's watermark.",
    )
    watermark_window: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description="A partition's latest event times its watermark is taken from.",
    )
    watermark_quantile: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="The quantile of them that is the watermark (1: the newest, no outlier guard).",
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

    @property
    def max_wait_ms(self) -> int:
        """How long a label waits at most, in event time: ``pending_max_wait_s``, or
        ``pending_ttl_s`` when that is longer."""
        return int(max(self.pending_max_wait_s, self.pending_ttl_s) * 1000)


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


#: What became of an event: counted (``new``), a re-processed record (``replay``), or an
#: event id already seen from another record (``duplicate``).
EventStatus = Literal["new", "replay", "duplicate"]


@dataclass(slots=True)
class EventOutcome:
    status: EventStatus
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


ExpiryCause = Literal["ttl", "max_wait", "overflow"]


@dataclass(slots=True, frozen=True)
class ExpiredLabel:
    """A label whose event never came: its partition's pending window passed
    (``ttl``), its longest wait passed (``max_wait``), or it was the oldest of
    more than ``pending_max`` waiting labels (``overflow``)."""

    event_id: str
    label: AppliedLabel | None
    cause: ExpiryCause = "ttl"


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
        clock_ms: int = -1,
    ) -> BatchOutcome:
        """Apply the batch; ``watermarks``: event time reached per owned partition;
        ``clock_ms``: the caller's watermark over all its partitions (-1: none yet)."""
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
