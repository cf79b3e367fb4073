"""The Redis interaction store: :class:`RedisStore`, one atomic Lua script call per batch.

The script is ``features/apply_batch.lua``; it keeps the contract of
:mod:`features.store` (see there for the semantics) in one round trip, atomically,
so several workers touching the same item stay exact. An entity is a hash of its
state, ``v`` (packed doubles, :func:`decode_state`), and one watermark
``w<partition>`` per partition that touched it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from importlib import resources

import orjson
import redis

from streamlearn.features.forget import Forgotten, forget
from streamlearn.features.interactions import EntityState, InteractionConfig
from streamlearn.features.store import (
    AppliedLabel,
    BatchOutcome,
    EventOp,
    EventOutcome,
    ExpiredLabel,
    ExpiryCause,
    LabelOp,
    LabelOutcome,
    StoreConfig,
)

__all__ = ["RedisStore", "decode_state"]


_SCRIPT = resources.files(__package__).joinpath("apply_batch.lua").read_text(encoding="utf-8")


def _kinds_of(payload: bytes) -> list[str]:
    return orjson.loads(payload)["kinds"] if payload else []


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
            "max_wait_ms": config.max_wait_ms,
            "implicit_ms": int(config.implicit_negative_after_s * 1000),
            "sweep_max": config.sweep_max,
            "state_ttl_ms": int(config.state_ttl_s * 1000),
        }

    def pending_count(self) -> int:
        return int(self.client.hlen(f"{self.config.key_prefix}:pl"))

    def key(self, kind: str, entity: str) -> str:
        return f"{self.config.key_prefix}:e:{kind}:{entity}"

    def forget(self, kind: str, entity: str) -> Forgotten:
        """Delete ``entity``'s state, its pairs' and the snapshots that touched them
        (:func:`features.forget.forget`)."""
        prefix = self.config.key_prefix
        head = len(prefix) + 3  # "<prefix>:e:"

        def entities_of(raw: bytes) -> list[tuple[str, str]]:
            keys: list[str] = orjson.loads(raw)
            return [(key[head:].partition(":")[0], key[head:].partition(":")[2]) for key in keys]

        return forget(self.client, f"{prefix}:e", f"{prefix}:s", kind, entity, entities_of)

    def state(self, kind: str, entity: str) -> EntityState:
        """What Redis holds for one entity (for inspection; the script reads it itself)."""
        value = self.client.hget(self.key(kind, entity), "v")
        if isinstance(value, str):
            raise TypeError("the store needs a Redis client returning bytes (decode_responses off)")
        return decode_state(value, len(self.features.half_lives_s))

    def apply(
        self,
        ops: Sequence[EventOp | LabelOp],
        scores: Mapping[str, float],
        watermarks: Mapping[int, int],
        clock_ms: int = -1,
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
        params = orjson.dumps(
            {**self._params, "watermarks": sorted(watermarks.items()), "clock": clock_ms}
        )
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
                        status,
                        _parse_states(kinds, reply[1], n_decays),
                        _parse_label(reply[2].decode()),
                    )
                )
            else:
                payload = reply[1]
                outcomes.append(
                    LabelOutcome(
                        status,
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
                cause: ExpiryCause = reply[3].decode()
                expired.append(ExpiredLabel(event_id, _parse_pending(reply[2].decode()), cause))
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
