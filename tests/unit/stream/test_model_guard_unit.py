"""The model guard and the drift actions on their own, without a processor or a store.

:class:`ModelGuard` keeps every slot's model finite through a batch: a learn
the finiteness check sees as non-finite is undone at once, one it cannot see
(an opaque model) is found by the probe at the batch's end. :func:`on_drift`
resets the champion or gives it one challenger.
"""

from __future__ import annotations

import math
from typing import Any

from river import base

from streamlearn.features.store import AppliedLabel
from streamlearn.learners.models import build_model, learn, score
from streamlearn.metrics.monitor import Monitor
from streamlearn.metrics.thresholds import MonitoringConfig
from streamlearn.stream.drift_action import on_drift
from streamlearn.stream.model_guard import Learned, ModelGuard, ModelSlot


def entry(n: int, length: float, value: float = 1.0) -> Learned:
    label = AppliedLabel(value, 1.0, f"labels:0:{n}", 1000 * n)
    return Learned({"length": length}, label, f"e{n}", "labels", None)


class Opaque(base.Classifier):
    """A classifier the finiteness check cannot see into: its sum overflows."""

    def __init__(self) -> None:
        self.total = 0.0

    def learn_one(self, x: dict[str, Any], y: bool, w: float = 1.0) -> None:
        self.total += x.get("length", 0.0) * 1e10

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        p = 0.5 + 0.0 * self.total  # NaN once the total is infinite
        return {True: p, False: 1 - p}


def test_a_poisoning_label_is_undone_in_every_slot_and_the_others_are_kept():
    slots = [ModelSlot("a", build_model("logistic")), ModelSlot("b", build_model("logistic"))]
    guard = ModelGuard()
    guard.begin()
    assert guard.learn_all(slots, entry(1, 1.0)) is None
    assert guard.learn_all(slots, entry(2, 1e300, value=0.0)) == "a"
    assert guard.learn_all(slots, entry(3, 2.0, value=0.0)) is None
    reference = build_model("logistic")
    learn(reference, {"length": 1.0}, 1.0, 1.0)
    learn(reference, {"length": 2.0}, 0.0, 1.0)
    for slot in slots:
        assert slot.labels_learned == 2
        assert score(slot.model, {"length": 1.5}) == score(reference, {"length": 1.5})
    assert [e.event_id for e in guard.learned] == ["e1", "e3"]
    assert guard.probe(slots) == []
    guard.end()
    assert guard.learned == [] and guard.undo == {}


def test_the_probe_finds_the_label_that_broke_an_opaque_model():
    slot = ModelSlot("opaque", Opaque())
    guard = ModelGuard()
    guard.begin()
    for n, length in enumerate((1.0, 1e300, 3.0)):
        assert guard.learn_all([slot], entry(n, length)) is None  # not seen by the check
    assert not math.isfinite(score(slot.model, {"length": 1.0}))
    blamed = guard.probe([slot])
    assert [(e.event_id, name) for e, name in blamed] == [("e1", "opaque")]
    assert slot.model.total == 4.0 * 1e10
    assert guard.probe([slot]) == []  # probed once per batch


def test_a_new_batch_snapshots_the_model_again():
    slot = ModelSlot("m", build_model("logistic"))
    guard = ModelGuard()
    guard.begin()
    guard.learn_all([slot], entry(1, 1.0))
    guard.end()
    guard.begin()
    before = score(slot.model, {"length": 1.0})
    assert guard.learn_all([slot], entry(2, 1e300)) == "m"
    assert score(slot.model, {"length": 1.0}) == before  # back to the end of the last batch


def test_a_reset_keeps_the_slots_and_gives_the_champion_a_fresh_model():
    config = MonitoringConfig(concept_action="reset")
    champion = ModelSlot("m", build_model("logistic"), monitor=Monitor(config))
    learn(champion.model, {"length": 1.0}, 1.0, 1.0)
    old = champion.model
    slots = [champion]
    assert on_drift(slots, champion, 0, "concept", threshold=0.5) is slots
    assert champion.model is not old
    assert score(champion.model, {"length": 1.0}) == 0.5


def test_a_feature_drift_alert_changes_nothing_and_a_challenger_is_replaced_not_added():
    config = MonitoringConfig(concept_action="challenger", feature_action="alert")
    champion = ModelSlot("m", build_model("logistic"), monitor=Monitor(config))
    slots = [champion]
    assert on_drift(slots, champion, 0, "feature", threshold=0.5) is slots
    first = on_drift(slots, champion, 0, "concept", threshold=0.5)
    second = on_drift(first, champion, 1, "concept", threshold=0.5)
    assert [s.name for s in second] == ["m", "m/challenger"]
    assert second[1] is not first[1] and second[1].spec == champion.spec
