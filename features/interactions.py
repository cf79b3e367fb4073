"""User-item interaction features: the one definition of their state and math.

State is kept per *entity*: a user, an item, an author, a user x item pair or a
user x author pair. Each entity holds a count of events, a count and sum of
labels, the time of its last event and exponentially decayed counts, one per
half-life, all in event time. The functions here are pure; the stores of
:mod:`features.memory_store` and :mod:`features.redis_store` apply them (the
Redis store does the same arithmetic in a Lua script, checked against these
functions by the tests).

Decayed counts are order independent: an event older than the reference time
is added with its decayed weight instead of decaying the whole sum forward, so
two workers that see the same events in different orders reach the same sums.

Examples
--------
>>> config = InteractionConfig(half_lives_s=(3600.0,))
>>> state = EntityState.empty(config)
>>> state = observe(state, 0, config)
>>> state = observe(state, 3_600_000, config)
>>> state.count, state.decayed
(2, [1.5])
>>> x = entity_features("item", state, 7_200_000, config)
>>> x["item_n"] == math.log1p(2), math.expm1(x["item_d1h"]), x["item_seen"]
(True, 0.75, 1.0)
>>> state = observe_label(state, 1.0)
>>> round(entity_features("item", state, 7_200_000, config)["item_rate"], 4)
0.1364
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ENTITY_KINDS",
    "EntityState",
    "InteractionConfig",
    "entity_features",
    "entity_ids",
    "interaction_features",
    "observe",
    "observe_label",
]

#: The kinds of entity that keep interaction state, in a fixed order.
ENTITY_KINDS: tuple[str, ...] = ("user", "item", "author", "user_item", "user_author")


class InteractionConfig(BaseModel):
    """How interaction features are computed."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    half_lives_s: tuple[Annotated[float, Field(gt=0.0, le=315_360_000.0)], ...] = Field(
        default=(3600.0, 86400.0, 604800.0),
        min_length=1,
        max_length=6,
        description="Half-lives of the decayed counts, in seconds of event time (at most ten"
        " years), each giving its feature a distinct name.",
    )
    prior_rate: float = Field(default=0.05, ge=0.0, le=1.0, description="Prior positive rate.")
    prior_strength: float = Field(
        default=10.0, gt=0.0, le=1_000_000.0, description="Pseudo-labels the prior rate is worth."
    )

    @model_validator(mode="after")
    def _distinct_half_lives(self) -> InteractionConfig:
        names = [_duration_name(h) for h in self.half_lives_s]
        if len(set(names)) != len(names):
            raise ValueError(
                f"half_lives_s must be distinct: {list(self.half_lives_s)} name the features"
                f" {names}"
            )
        return self

    @cached_property
    def half_lives_ms(self) -> tuple[float, ...]:
        return tuple(h * 1000.0 for h in self.half_lives_s)

    @cached_property
    def prior_positives(self) -> float:
        """The pseudo-positives of the prior: ``prior_rate * prior_strength``."""
        return self.prior_rate * self.prior_strength

    @cached_property
    def decay_names(self) -> tuple[str, ...]:
        return tuple(_duration_name(h) for h in self.half_lives_s)

    @cached_property
    def _names(self) -> dict[str, tuple[str, ...]]:
        return {}

    def feature_names(self, kind: str) -> tuple[str, ...]:
        """The names of one entity kind's features, in :func:`entity_features` order."""
        names = self._names.get(kind)
        if names is None:
            decays = tuple(f"{kind}_d{name}" for name in self.decay_names)
            names = (kind + "_n", kind + "_pos", kind + "_rate", *decays)
            names += (kind + "_since", kind + "_seen")
            self._names[kind] = names
        return names


def _duration_name(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(slots=True)
class EntityState:
    """Interaction state of one entity."""

    count: int = 0
    positives: float = 0.0
    labelled: float = 0.0
    last_ms: int = -1
    decay_ref_ms: int = 0
    decayed: list[float] = field(default_factory=list)

    @classmethod
    def empty(cls, config: InteractionConfig) -> EntityState:
        return cls(decayed=[0.0] * len(config.half_lives_s))


def entity_ids(user_id: str, item_id: str, author_id: str | None) -> list[tuple[str, str]]:
    """The (kind, id) pairs an event touches, in :data:`ENTITY_KINDS` order.

    A pair's id starts with the length of the user id, so no two pairs share one
    whatever characters the ids hold.

    >>> entity_ids("u1", "i9", None)
    [('user', 'u1'), ('item', 'i9'), ('user_item', '2:u1|i9')]
    """
    pairs = [("user", user_id), ("item", item_id)]
    if author_id is not None:
        pairs.append(("author", author_id))
    pairs.append(("user_item", f"{len(user_id)}:{user_id}|{item_id}"))
    if author_id is not None:
        pairs.append(("user_author", f"{len(user_id)}:{user_id}|{author_id}"))
    return pairs


def observe(state: EntityState, timestamp_ms: int, config: InteractionConfig) -> EntityState:
    """The state after one more event at ``timestamp_ms``.

    An event at or after the reference time decays the sums forward to it and
    adds one; an older event adds its own decayed weight.
    """
    decayed = list(state.decayed)
    ref = state.decay_ref_ms
    if timestamp_ms >= ref:
        for k, half_life in enumerate(config.half_lives_ms):
            decayed[k] = decayed[k] * 2.0 ** (-(timestamp_ms - ref) / half_life) + 1.0
        ref = timestamp_ms
    else:
        for k, half_life in enumerate(config.half_lives_ms):
            decayed[k] = decayed[k] + 2.0 ** (-(ref - timestamp_ms) / half_life)
    return EntityState(
        count=state.count + 1,
        positives=state.positives,
        labelled=state.labelled,
        last_ms=max(state.last_ms, timestamp_ms),
        decay_ref_ms=ref,
        decayed=decayed,
    )


def observe_label(state: EntityState, label: float) -> EntityState:
    """The state after one more label of value ``label`` (1.0 positive, 0.0 negative)."""
    return EntityState(
        count=state.count,
        positives=state.positives + label,
        labelled=state.labelled + 1.0,
        last_ms=state.last_ms,
        decay_ref_ms=state.decay_ref_ms,
        decayed=list(state.decayed),
    )


def entity_features(
    kind: str, state: EntityState, timestamp_ms: int, config: InteractionConfig
) -> dict[str, float]:
    """Features of one entity as seen at ``timestamp_ms``, before the event's own update.

    Counts are ``log1p``-scaled; the rate is the positive rate smoothed towards
    the prior; ``since`` is ``log1p`` of the seconds since the last event (0 when
    never seen, with ``seen`` telling the two apart).
    """
    return dict(zip(config.feature_names(kind), _values(state, timestamp_ms, config), strict=True))


def _values(state: EntityState, timestamp_ms: int, config: InteractionConfig) -> list[float]:
    log1p = math.log1p
    elapsed_ms = timestamp_ms - state.decay_ref_ms
    if elapsed_ms < 0:
        elapsed_ms = 0
    positives = state.positives
    values = [
        log1p(state.count),
        log1p(positives if positives > 0.0 else 0.0),
        (positives + config.prior_positives) / (state.labelled + config.prior_strength),
    ]
    values += [
        log1p(value * 2.0 ** (-elapsed_ms / half_life))
        for half_life, value in zip(config.half_lives_ms, state.decayed, strict=True)
    ]
    if state.count > 0:
        since_ms = timestamp_ms - state.last_ms
        values.append(log1p((since_ms if since_ms > 0 else 0) / 1000.0))
        values.append(1.0)
    else:
        values.append(0.0)
        values.append(0.0)
    return values


def interaction_features(
    states: list[tuple[str, EntityState]], timestamp_ms: int, config: InteractionConfig
) -> dict[str, float]:
    """Features of all the entities an event touches, as one flat mapping."""
    features: dict[str, float] = {}
    for kind, state in states:
        names = config.feature_names(kind)
        features.update(zip(names, _values(state, timestamp_ms, config), strict=True))
    return features
