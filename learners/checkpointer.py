"""The two-phase checkpoint protocol of a worker: save, prepare, commit, confirm, prune.

:mod:`learners.checkpoint` keeps the record (prepared and confirmed
checkpoints of one worker); this module runs the protocol around it:

1. **save** the model snapshot in the registry (a new version; a model that is
   not finite is refused, and nothing else happens);
2. **prepare** the checkpoint: that version and the offsets it reflects;
3. **commit** the offsets (the caller's step: Kafka, in a transaction or plainly);
4. **confirm** the checkpoint (atomic);
5. **prune** the worker's older snapshots, keeping the newest ones.

With arms (an experiment's treatments, the rollback rule's last-known-good copy), step
1 saves each arm as its own registry version too, under a note of its own
(``NOTE arm NAME``), and step 2 records ``{arm: version}`` and the runs' state in the
same checkpoint. A version per arm rather than one snapshot of the whole set: each is
signed, checked finite and loadable alone (``model show``, ``model export``, a treatment
promoted with ``model promote N``), a new arm or a dropped one changes nothing of the
others, and each arm's snapshots are pruned by their own note, keeping as many as the
champion's. The one record still makes it atomic: a crash leaves every arm at the
same checkpoint.

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
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from streamlearn.learners.checkpoint import Checkpoint

__all__ = ["ArmSnapshots", "Checkpointer", "ModelState", "Retry", "direct"]

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


@dataclass(frozen=True)
class ArmSnapshots:
    """The arms saved beside the champion: each arm's model and state, and the runs' state."""

    models: Mapping[str, tuple[object, ModelState]] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)


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
        #: The arms' versions of the last checkpoint saved or prepared.
        self.arm_versions: dict[str, str] = {}

    def save(
        self,
        model: object,
        state: ModelState,
        offsets: dict[str, int],
        metrics: Mapping[str, float | None],
        generation: int,
        commit: Callable[[], None],
        arms: ArmSnapshots | None = None,
    ) -> Any:
        """Snapshot ``model`` (and ``arms``), commit ``offsets`` with ``commit()`` between
        the two phases.

        Returns the champion snapshot's info (its ``version``). Raises
        :class:`learners.registry.NonFiniteModelError` before anything is prepared
        when a model is not finite, and whatever ``commit`` raises (the
        checkpoint then stays prepared, and :meth:`recover` resolves it).
        """
        arms = arms or ArmSnapshots()
        info = self._save(model, state, offsets, metrics, self.note)
        version: str = info.version
        versions = {
            name: self._save(arm, arm_state, offsets, {}, self.arm_note(name)).version
            for name, (arm, arm_state) in arms.models.items()
        }
        checkpoint = Checkpoint(version, offsets, generation, versions, dict(arms.state))
        self.arm_versions = versions
        record, models = self.record, self.models
        self.redis(lambda: record.prepare(checkpoint))
        commit()
        self.redis(record.confirm)
        self.redis(lambda: models.prune(self.note, self.keep_versions, {version}))
        for name, kept in versions.items():
            note = self.arm_note(name)
            self.redis(lambda: models.prune(note, self.keep_versions, {kept}))  # noqa: B023
        return info

    def arm_note(self, arm: str) -> str:
        """The note of arm ``arm``'s snapshots."""
        return f"{self.note} arm {arm}"

    def _save(
        self,
        model: object,
        state: ModelState,
        offsets: dict[str, int],
        metrics: Mapping[str, float | None],
        note: str,
    ) -> Any:
        models = self.models
        return self.redis(
            lambda: models.save(
                model,
                name=state.name,
                parent=state.parent,
                events_scored=state.events_scored,
                labels_learned=state.labels_learned,
                offsets=offsets,
                metrics=metrics,
                note=note,
            )
        )

    def recover(
        self, committed: Callable[[list[str]], Mapping[str, int | None]]
    ) -> Checkpoint | None:
        """The checkpoint to resume from; ``committed`` gives Kafka's offsets of partitions."""
        record = self.record
        return self.redis(lambda: record.recover(committed))
