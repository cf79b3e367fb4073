"""Worker checkpoints: which model version reflects which input offsets, kept in two phases.

A checkpoint ties a model snapshot (a registry version) to the Kafka offsets it
has learned up to. The worker's :class:`learners.checkpointer.Checkpointer`
saves the snapshot, first *prepares* the checkpoint (Redis), then commits the
offsets to Kafka (in a transaction, or plainly), then *confirms* it (one
atomic step) and prunes the snapshots it no longer needs. A crash
between the two leaves a prepared checkpoint whose fate the group's committed
offsets tell: if Kafka holds its offsets the commit happened and it is used,
otherwise the previous confirmed checkpoint is, with the offsets Kafka kept.
Either way the model and the offsets it resumes from agree.

With an experiment or the rollback rule, the checkpoint also holds every other arm's
version (``arms``: arm -> registry version) and their runs' state (``state``: JSON,
e.g. ``{"experiment": ..., "rollback": ...}``), so one prepare and one confirm cover
every arm: they are restored, and rewound, together. A record written without them
(an older worker's) loads with both empty.

Examples
--------
>>> prepared = Checkpoint("7", {"events:0": 120}, generation=2)
>>> previous = Checkpoint("6", {"events:0": 80}, generation=2)
>>> choose(prepared, previous, committed={"events:0": 120}).version
'7'
>>> choose(prepared, previous, committed={"events:0": 80}).version
'6'
>>> _load(b'{"version": "5", "offsets": {}, "generation": 0}').arms
{}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import orjson
import redis

__all__ = ["Checkpoint", "CheckpointStore", "choose"]


@dataclass(frozen=True)
class Checkpoint:
    """A model version and the next offset to read per ``topic:partition``; the other
    arms' versions and their runs' state."""

    version: str
    offsets: dict[str, int] = field(default_factory=dict)
    generation: int = 0
    arms: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


def choose(
    prepared: Checkpoint | None, confirmed: Checkpoint | None, committed: Mapping[str, int | None]
) -> Checkpoint | None:
    """The checkpoint that agrees with the offsets Kafka has committed."""
    if prepared is None:
        return confirmed
    if all(committed.get(tp) == offset for tp, offset in prepared.offsets.items()):
        return prepared
    return confirmed


def _dump(checkpoint: Checkpoint) -> bytes:
    """The record's JSON; without arms it is the same as an older worker's (which reads it).

    >>> _dump(Checkpoint("5", {"events:0": 3}))
    b'{"version":"5","offsets":{"events:0":3},"generation":0}'
    """
    doc = asdict(checkpoint)
    for name in ("arms", "state"):
        if not doc[name]:
            del doc[name]
    return orjson.dumps(doc)


def _load(raw: bytes | str | None) -> Checkpoint | None:
    return Checkpoint(**orjson.loads(raw)) if raw else None


#: Moves the prepared checkpoint to confirmed, in one step: a crash or another
#: client never sees it in both fields, or in neither.
_CONFIRM = """
local prepared = redis.call('HGET', KEYS[1], 'prepared')
if prepared then
  redis.call('HSET', KEYS[1], 'confirmed', prepared)
  redis.call('HDEL', KEYS[1], 'prepared')
  return 1
end
return 0
"""


class CheckpointStore:
    """The two-phase checkpoint record of one worker, in one Redis hash."""

    def __init__(self, client: redis.Redis, namespace: str, group: str, worker: str) -> None:
        self.client = client
        self.key = f"{namespace}:checkpoint:{group}:{worker}"
        self._confirm = client.register_script(_CONFIRM)

    def prepare(self, checkpoint: Checkpoint) -> None:
        """Record ``checkpoint`` as prepared: its offsets are about to be committed."""
        self.client.hset(self.key, "prepared", _dump(checkpoint))

    def confirm(self) -> bool:
        """The prepared checkpoint's offsets are committed: it becomes the confirmed one.

        Atomic (one Lua script on the record's one key): the prepared checkpoint
        replaces the confirmed one and leaves the prepared field in one step.
        Returns False when none was prepared (nothing changes).
        """
        return bool(self._confirm(keys=[self.key]))

    def recover(
        self, committed: Callable[[list[str]], Mapping[str, int | None]]
    ) -> Checkpoint | None:
        """The checkpoint to resume from; ``committed`` gives Kafka's offsets of partitions."""
        fields = cast("list[bytes | None]", self.client.hmget(self.key, "prepared", "confirmed"))
        prepared_raw, confirmed_raw = fields
        prepared, confirmed = _load(prepared_raw), _load(confirmed_raw)
        if prepared is None:
            return confirmed
        chosen = choose(prepared, confirmed, committed(list(prepared.offsets)))
        if chosen is prepared:
            self.confirm()
        else:
            self.client.hdel(self.key, "prepared")
        return chosen
