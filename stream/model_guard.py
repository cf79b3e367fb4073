"""Model slots and the guard that keeps their models finite through a batch.

A :class:`ModelSlot` is a named model with its version, counters and monitor.
The :class:`ModelGuard` has every slot learn a label and undoes a label that
leaves a model with NaN or infinite numbers: each slot's model is pickled
before its first learn of the batch, and a bad learn rebuilds it from that
snapshot and the batch's labels learned since, so the label is as if it had
never come and the same records give the same model on a replay.

Examples
--------
>>> from streamlearn.features.store import AppliedLabel
>>> from streamlearn.learners.models import build_model, learn, score
>>> slot = ModelSlot("logistic", build_model("logistic"))
>>> guard = ModelGuard()
>>> guard.begin()
>>> good = Learned({"clicks": 1.0}, AppliedLabel(1.0, 1.0, "labels:0:1", 0), "e1", "labels", None)
>>> guard.learn_all([slot], good) is None, slot.labels_learned
(True, 1)
>>> bad = Learned({"clicks": 1e300}, AppliedLabel(0.0, 1.0, "labels:0:2", 0), "e2", "labels", None)
>>> guard.learn_all([slot], bad), slot.labels_learned
('logistic', 1)
>>> alone = build_model("logistic")  # a model that only ever saw the good label
>>> learn(alone, {"clicks": 1.0}, 1.0, 1.0)
>>> score(slot.model, {"clicks": 1.0}) == score(alone, {"clicks": 1.0})
True
"""

from __future__ import annotations

import math
import pickle  # noqa: S403 - the processor's own models, pickled and loaded in memory
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from river import base

from streamlearn.learners.models import FiniteCheck, learn, score
from streamlearn.metrics.monitor import Monitor
from streamlearn.metrics.scorecard import Scorecard
from streamlearn.stream.outputs import Example

if TYPE_CHECKING:
    from collections.abc import Sequence

    from streamlearn.features.store import AppliedLabel
    from streamlearn.stream.edge import Record

__all__ = ["Learned", "ModelGuard", "ModelSlot"]


@dataclass
class ModelSlot:
    """A named model with its version, counters and monitor."""

    name: str
    model: base.Classifier
    spec: str = ""
    version: str = "0"
    monitor: Monitor | None = None
    scorecard: Scorecard | None = None
    events_scored: int = 0
    labels_learned: int = 0

    def __post_init__(self) -> None:
        self.spec = self.spec or self.name


@dataclass(slots=True)
class _Undo:
    """A slot's model as it was before its first learn of the batch, to undo a bad learn.

    ``start``: how many of the batch's learned labels came before the snapshot.
    """

    model: base.Classifier
    snapshot: bytes
    start: int


@dataclass(slots=True)
class Learned:
    """A label the batch's models learned, kept until the batch is finished."""

    x: dict[str, Any]
    label: AppliedLabel
    event_id: str
    kind: str
    record: Record | None
    example: Example | None = None
    #: The slots that learned it (not every slot when an experiment arm learns its own).
    learners: frozenset[str] = frozenset()


class ModelGuard:
    """The batch's learned labels and each slot's model before them, to undo a bad learn.

    :meth:`begin` and :meth:`end` bracket a batch; in between :meth:`learn_all`
    has the slots learn each label, and :meth:`probe` checks at the batch's
    end the models whose parts the finiteness check cannot see into.
    """

    def __init__(self) -> None:
        #: Per slot name, the model before the batch's first learn (see :meth:`learn_all`).
        self.undo: dict[str, _Undo] = {}
        #: The batch's learned labels, in order.
        self.learned: list[Learned] = []
        #: Slots with parts the finiteness check cannot see into: probed at the batch's end.
        self._probe_due: set[str] = set()
        self._checks: dict[str, FiniteCheck] = {}

    def begin(self) -> None:
        """A new batch: nothing learned, nothing to undo."""
        self.undo, self.learned = {}, []

    def end(self) -> None:
        """The batch is finished: its snapshots and labels are let go."""
        self.undo, self.learned = {}, []

    def learn_all(self, slots: Sequence[ModelSlot], entry: Learned) -> str | None:
        """Every slot learns the label; None, or the name of a slot it left non-finite.

        Each slot's model is pickled before its first learn of the batch (one
        snapshot per slot and batch, not one per learn). After each learn a
        :class:`~learners.models.FiniteCheck` looks at the numbers of the
        model's parts it knows (linear weights, scaler statistics); when they
        are not all finite, every slot that learned the label is rebuilt from
        its snapshot and the batch's labels learned since, so the label is as
        if it had never come, and the same records give the same model on a
        replay. Parts it cannot see into (trees, forests) are probed once at
        the batch's end (:meth:`probe`).
        """
        x, value, weight = entry.x, entry.label.value, entry.label.weight
        done: list[ModelSlot] = []
        for slot in slots:
            undo = self.undo.get(slot.name)
            if undo is None or undo.model is not slot.model:
                snapshot = pickle.dumps(slot.model, protocol=pickle.HIGHEST_PROTOCOL)
                self.undo[slot.name] = _Undo(slot.model, snapshot, len(self.learned))
            learn(slot.model, x, value, weight)
            done.append(slot)
            check = self.check(slot.model, slot.name)
            if not check():
                for learned in done:
                    self.rebuild(learned, set())
                return slot.name
            if check.opaque:
                self._probe_due.add(slot.name)
        entry.learners = frozenset(slot.name for slot in slots)
        self.learned.append(entry)
        for slot in slots:
            slot.labels_learned += 1
        return None

    def check(self, model: base.Classifier, name: str) -> FiniteCheck:
        """The finiteness check of ``model``, built again when the slot's model changed."""
        check = self._checks.get(name)
        if check is None or check.model is not model:
            check = self._checks[name] = FiniteCheck(model)
        return check

    def rebuild(self, slot: ModelSlot, skip: set[int]) -> None:
        """The slot's model from its batch snapshot and the labels learned since, less ``skip``."""
        undo = self.undo[slot.name]
        model = pickle.loads(undo.snapshot)  # noqa: S301 - pickled above, by this process
        for index in range(undo.start, len(self.learned)):
            entry = self.learned[index]
            if index not in skip and slot.name in entry.learners:
                learn(model, entry.x, entry.label.value, entry.label.weight)
        slot.model = undo.model = model

    def probe(self, slots: Sequence[ModelSlot]) -> list[tuple[Learned, str]]:
        """At the batch's end, score the last learned example with each model that has
        opaque parts; a non-finite score finds the labels to blame, one learn at a time.

        The blamed labels are taken back from every model; they are returned in
        batch order, each with the name of the slot it broke, for the caller to
        take out of the batch's examples and count and to send to the dead letters.
        """
        probe_due, self._probe_due = self._probe_due, set()
        bad: set[int] = set()
        blamed: dict[int, str] = {}
        for slot in slots:
            undo = self.undo.get(slot.name)
            if slot.name not in probe_due or undo is None or undo.model is not slot.model:
                continue
            if undo.start >= len(self.learned):
                continue
            if math.isfinite(score(slot.model, self.learned[-1].x)):
                continue
            model = pickle.loads(undo.snapshot)  # noqa: S301 - pickled above, by this process
            for index in range(undo.start, len(self.learned)):
                entry = self.learned[index]
                if index in bad or slot.name not in entry.learners:
                    continue
                before = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
                learn(model, entry.x, entry.label.value, entry.label.weight)
                if not (FiniteCheck(model)() and math.isfinite(score(model, entry.x))):
                    model = pickle.loads(before)  # noqa: S301 - pickled just above
                    bad.add(index)
                    blamed[index] = slot.name
            slot.model = undo.model = model
        if not bad:
            return []
        for slot in slots:
            if slot.name in self.undo and self.undo[slot.name].model is slot.model:
                self.rebuild(slot, bad)
        return [(self.learned[index], blamed[index]) for index in sorted(bad)]
