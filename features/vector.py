"""The feature vector a model sees, assembled from an event and the state it met.

This is the one place that decides what goes into ``x``: the producer's own
``features``, the context features and the interaction features. The same
function runs at scoring time and at label time (from the snapshot), so a
label trains on exactly what the model saw.

Examples
--------
>>> from streamlearn.features.schema import Event
>>> event = Event(event_id="e", timestamp=0, user_id="u", item_id="i",
...               context={"device": "ios"}, features={"len": 3.0})
>>> config = FeatureConfig()
>>> payload = snapshot_payload(event)
>>> from streamlearn.features.interactions import EntityState
>>> kinds = orjson.loads(payload)["kinds"]
>>> states = [(kind, EntityState.empty(config.interactions)) for kind in kinds]
>>> x = features_from_snapshot(payload, states, config)
>>> x == features_of(event, states, config)
True
>>> x["len"], x["ctx_device"], x["user_seen"]
(3.0, 'ios', 0.0)
>>> features_of(event, states, FeatureConfig(mode="raw"))
{'len': 3.0}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from streamlearn.features.context import context_features
from streamlearn.features.interactions import (
    EntityState,
    InteractionConfig,
    entity_ids,
    interaction_features,
)
from streamlearn.features.schema import Event

__all__ = [
    "FeatureConfig",
    "event_inputs",
    "features_from_snapshot",
    "features_of",
    "snapshot_payload",
]


class FeatureConfig(BaseModel):
    """What the model sees."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    mode: Literal["default", "raw"] = Field(
        default="default",
        description="raw: only the event's `features`; default: plus context and interactions.",
    )
    interactions: InteractionConfig = Field(default_factory=InteractionConfig)


def _assemble(
    timestamp_ms: int,
    context: Mapping[str, Any],
    producer: Mapping[str, Any],
    states: list[tuple[str, EntityState]],
    config: FeatureConfig,
) -> dict[str, Any]:
    x = dict(producer)
    if config.mode == "raw":
        return x
    x.update(context_features(timestamp_ms, context))
    x.update(interaction_features(states, timestamp_ms, config.interactions))
    return x


def features_of(
    event: Event, states: list[tuple[str, EntityState]], config: FeatureConfig
) -> dict[str, Any]:
    """The model's input for ``event``, given the state its entities had before it."""
    return _assemble(event.timestamp, event.context, event.features, states, config)


def event_inputs(event: Event, config: FeatureConfig) -> dict[str, Any]:
    """The model inputs that come from the event itself: its ``features`` and, unless the
    features are raw, its ``context`` (named ``ctx_*``, as in :func:`features_of`).

    What producers send, without the derived inputs (time of day, interaction counters)
    whose drift is by construction.

    >>> event = Event(event_id="e", timestamp=0, user_id="u", item_id="i",
    ...               context={"device": "ios"}, features={"length": 3})
    >>> event_inputs(event, FeatureConfig())
    {'length': 3, 'ctx_device': 'ios'}
    >>> event_inputs(event, FeatureConfig(mode="raw"))
    {'length': 3}
    """
    if config.mode == "raw" or not event.context:
        return event.features
    inputs = dict(event.features)
    for key, value in event.context.items():
        inputs["ctx_" + key] = value
    return inputs


def snapshot_payload(event: Event) -> bytes:
    """What is kept of an event until its label arrives: enough to rebuild its features."""
    kinds = [kind for kind, _ in entity_ids(event.user_id, event.item_id, event.author_id)]
    return orjson.dumps(
        {"ts": event.timestamp, "ctx": event.context, "f": event.features, "kinds": kinds}
    )


def features_from_snapshot(
    payload: bytes, states: list[tuple[str, EntityState]], config: FeatureConfig
) -> dict[str, Any]:
    """The model's input rebuilt from a snapshot: identical to what was scored."""
    snap = orjson.loads(payload)
    return _assemble(snap["ts"], snap["ctx"], snap["f"], states, config)
