"""The two-phase checkpoint protocol of a worker: save, prepare, commit, confirm, prune.

:mod:`learners.checkpoint` keeps the record (prepared and confirmed
checkpoints of one worker); this module runs the protocol around it:

1. **save** the model snapshot in the registry (a new version; a model that is
   not finite is refused, and nothing else happens);
2. **prepare** the checkpoint: that version and the offsets it reflects;
3. **commit** the offsets (the caller's step: Kafka, in a transaction or plainly);
4. **confirm** the checkpoint (atomic);
5. **prune** the worker's older snapshots, keeping the newest ones.

A crash between 2 and 4 leaves a prepared checkpoint; :meth:`Checkpointer.recover`
resolves it against the offsets Kafka holds (:func:`learners.checkpoint.choose`).
Every Redis call goes through ``redis``, the caller's retry policy.

Examples
--------
>>> class Registry:  # the calls the checkpointer makes, in memory
...     def save(self, model, **meta):
...         print("save", meta["offsets"])
...         return type("Info", (), {"version": "8"})()
...     def prune(self, note, keep, protect):
...         print("prune", keep, sorted(protect))
>>> class Store:
...     def prepare(self, checkpoint):
...         print("prepare", checkpoint.version, checkpoint.offsets)
...     def confirm(self):
...         print("confirm")
...         return True
...     def recover(self, committed):
...         return None
>>> checkpointer = Checkpointer(Registry(), Store(), note="w-0", keep_versions=3)
>>> info = checkpointer.save(
...     object(), ModelState("m", "7", 10, 4), {"events:0": 12}, {}, generation=1,
...     commit=lambda: print("commit"))
save {'events:0': 12}
prepare 8 {'events:0': 12}
commit
confirm
prune 3 ['8']
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from streamlearn.learners.checkpoint import Checkpoint

__all__ = ["Checkpointer", "ModelState", "Retry", "direct"]

T = TypeVar("T")


class Retry(Protocol):
    """A retry policy for Redis calls: runs ``call`` and returns what it returns."""

    def __call__(self, call: Callable[[], T]) -> T: ...


def direct(call: Callable[[], T]) -> T:
    """No retry: ``call()`` once.

    >>> direct(lambda: 7)
    7
    """
    return call()


class _Registry(Protocol):
    """The registry calls of a checkpoint (:class:`learners.registry.ModelRegistry`)."""

    def save(
        self,
        model: object,
        *,
        name: str,
        parent: str | None,
        events_scored: int,
        labels_learned: int,
        offsets: Mapping[str, int],
        metrics: Mapping[str, float | None],
        note: str = "",
    ) -> Any: ...

    def prune(self, note: str, keep: int, protect: Collection[str] = ()) -> Any: ...


class _Record(Protocol):
    """The checkpoint record calls (:class:`learners.checkpoint.CheckpointStore`)."""

    def prepare(self, checkpoint: Checkpoint) -> None: ...

    def confirm(self) -> bool: ...

    def recover(
        self, committed: Callable[[list[str]], Mapping[str, int | None]]
    ) -> Checkpoint | None: ...


@dataclass(frozen=True)
class ModelState:
    """What a snapshot records of the model besides its weights."""

    name: str
    parent: str | None
    events_scored: int
    labels_learned: int


class Checkpointer:
    """Runs the two-phase checkpoint of one worker (see the module's docstring).

    Parameters
    ----------
    models
        The model registry (:class:`learners.registry.ModelRegistry`).
    record
        The worker's checkpoint record (:class:`learners.checkpoint.CheckpointStore`).
    note
        Marks the worker's snapshots in the registry: only those are pruned.
    keep_versions
        Snapshots of the worker kept by pruning.
    redis
        Runs each Redis call (a retry policy; :func:`direct` by default).
    """

    def __init__(
        self,
        models: _Registry,
        record: _Record,
        note: str,
        keep_versions: int,
        redis: Retry = direct,
    ) -> None:
        self.models = models
        self.record = record
        self.note = note
        self.keep_versions = keep_versions
        self.redis = redis

    def save(
        self,
        model: object,
        state: ModelState,
        offsets: dict[str, int],
        metrics: Mapping[str, float | None],
        generation: int,
        commit: Callable[[], None],
    ) -> Any:
        """Snapshot ``model``, commit ``offsets`` with ``commit()`` between the two phases.

        Returns the snapshot's info (its ``version``). Raises
        :class:`learners.registry.NonFiniteModelError` before anything is written
        when the model is not finite, and whatever ``commit`` raises (the
        checkpoint then stays prepared, and :meth:`recover` resolves it).
        """
        models, record = self.models, self.record
        info = self.redis(
            lambda: models.save(
                model,
                name=state.name,
                parent=state.parent,
                events_scored=state.events_scored,
                labels_learned=state.labels_learned,
                offsets=offsets,
                metrics=metrics,
                note=self.note,
            )
        )
        version: str = info.version
        self.redis(lambda: record.prepare(Checkpoint(version, offsets, generation)))
        commit()
        self.redis(record.confirm)
        self.redis(lambda: models.prune(self.note, self.keep_versions, {version}))
        return info

    def recover(
        self, committed: Callable[[list[str]], Mapping[str, int | None]]
    ) -> Checkpoint | None:
        """The checkpoint to resume from; ``committed`` gives Kafka's offsets of partitions."""
        record = self.record
        return self.redis(lambda: record.recover(committed))
