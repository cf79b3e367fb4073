"""The processor's arms: which slot serves an event, what predictions and examples carry."""

from __future__ import annotations

import orjson
import pytest

from streamlearn.features.interactions import InteractionConfig
from streamlearn.features.limits import Limits
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import StoreConfig
from streamlearn.features.vector import FeatureConfig
from streamlearn.learners.experiment import ExperimentConfig
from streamlearn.learners.models import build_model, score
from streamlearn.learners.rollback import RollbackConfig
from streamlearn.stream.experiment_run import ExperimentRun, RollbackRun
from streamlearn.stream.processor import ModelSlot, Processor, Record

from .factories import Constant

T0 = 1_767_225_600_000


def processor(slots, **runs) -> Processor:
    store = MemoryStore(StoreConfig(), InteractionConfig())
    return Processor(slots, store, FeatureConfig(), Limits(), 0.5, keep_examples=True, **runs)


def event(n: int, user: str, label: bool | None = None) -> Record:
    body = {"event_id": f"e{n}", "timestamp": T0 + n * 1000, "user_id": user, "item_id": "i"}
    if label is not None:
        body["label"] = label
    return Record("events", orjson.dumps(body), "events", 0, n)


def label(n: int, value: bool, offset: int) -> Record:
    body = {"event_id": f"e{n}", "timestamp": T0 + n * 1000 + 500, "label": value}
    return Record("labels", orjson.dumps(body), "labels", 0, offset)


def two_arms(mode: str = "ab", learn: str = "all") -> tuple[Processor, ExperimentRun]:
    config = ExperimentConfig(id="exp", mode=mode, arms={"a": 0.5, "b": 0.5}, primary="log_loss")
    run = ExperimentRun(config, learn=learn)  # type: ignore[arg-type]
    slots = [ModelSlot("a", Constant(0.2), version="1"), ModelSlot("b", Constant(0.7), version="4")]
    return processor(slots, experiment=run), run


def test_ab_serves_each_event_its_units_arm_and_keeps_the_others_in_the_shadow():
    proc, run = two_arms()
    users = [f"u{i}" for i in range(40)]
    out = proc.process([event(n, user) for n, user in enumerate(users)])
    assert [p.arm for p in out.predictions] == [
        run.assignment.arm_for({"user_id": u}) for u in users
    ]
    assert {p.arm for p in out.predictions} == {"a", "b"}
    assert all(p.arm != s.arm for p, s in zip(out.predictions, out.shadow_predictions, strict=True))
    for p in out.predictions:
        doc = orjson.loads(p.to_json(1.0))
        assert (doc["arm"], doc["model_version"], doc["score"]) == (
            p.arm, {"a": "1", "b": "4"}[p.arm], {"a": 0.2, "b": 0.7}[p.arm],
        )  # fmt: skip


def test_shadow_mode_serves_the_control_and_every_arm_is_judged():
    config = ExperimentConfig(id="exp", mode="shadow", arms={"a": 0.5, "b": 0.5}, primary="brier")
    run = ExperimentRun(config)
    proc = processor([ModelSlot("a", Constant(0.2)), ModelSlot("b", Constant(0.7))], experiment=run)
    out = proc.process([event(n, f"u{n}", label=n % 2 == 0) for n in range(10)])
    assert {p.arm for p in out.predictions} == {"a"} and {
        p.arm for p in out.shadow_predictions
    } == {"b"}
    counts = {arm: stats.counts() for arm, stats in run.experiment.arms.items()}
    assert counts["a"] == counts["b"] == {"predictions": 10, "labels": 10, "errors": 0}


def test_a_label_credits_the_arm_that_served_its_event_and_the_example_says_which():
    proc, run = two_arms(learn="own_arm")
    arm = run.serving({"user_id": "u1"})
    out = proc.process([event(0, "u1")])
    assert out.predictions[0].arm == arm
    out = proc.process([label(0, True, 0)])
    [example] = out.examples
    assert example.arm == arm and orjson.loads(example.to_json())["arm"] == arm
    assert example.score == {"a": 0.2, "b": 0.7}[arm]
    assert {s.name: s.labels_learned for s in proc.slots} == {"a": arm == "a", "b": arm == "b"}
    assert run.experiment.arms[arm].primary.n == 1


def test_a_revert_sends_the_treatments_units_to_the_control():
    proc, run = two_arms()
    run.experiment.revert("b")
    out = proc.process([event(n, f"u{n}") for n in range(30)])
    assert {p.arm for p in out.predictions} == {"a"}
    assert {p.arm for p in out.shadow_predictions} == {"b"}


def test_without_an_experiment_predictions_have_no_arm():
    out = processor([ModelSlot("m", build_model("logistic"))]).process([event(0, "u")])
    assert out.predictions[0].arm is None and "arm" not in orjson.loads(
        out.predictions[0].to_json(1)
    )


def test_arms_must_be_model_slots():
    run = ExperimentRun(ExperimentConfig(id="e", arms={"a": 0.5, "zz": 0.5}))
    with pytest.raises(ValueError, match="no model slot for"):
        processor([ModelSlot("a", Constant(0.2))], experiment=run)


def test_a_rollback_puts_the_frozen_copy_back_in_place_of_the_live_model():
    # version 7 has learned labels: a known-good version (a copy that never learned is not)
    live = ModelSlot("live", build_model("logistic"), version="7", labels_learned=1000)
    guard = RollbackRun(RollbackConfig(min_labels=50, min_labels_after_rollback=50), "live")
    copy = guard.reference_slot(live)
    proc = processor([live, copy], rollback=guard)
    x = {"quality_hint": 1.0}
    before = score(copy.model, x)
    # the live model learns labels that make it worse than the copy, which never learns
    records = [event(n, f"u{n % 7}", label=n % 10 == 0) for n in range(300)]
    decided = []
    for start in range(0, 300, 50):
        out = proc.process(records[start : start + 50])
        decided += out.decisions
        if decided:
            break  # the live model is the copy again, before it learns more
        if start == 0:
            proc.slots[0].model = Constant(0.99)  # broken from here on
    assert [d.action for d in decided] == ["rollback"]
    assert copy.labels_learned == 0 and score(copy.model, x) == before
    assert proc.slots[0].model is not copy.model
    assert score(proc.slots[0].model, x) == pytest.approx(before)
    assert proc.slots[0].version == "7"


def test_an_undone_label_leaves_each_arm_with_only_its_own_labels():
    """own_arm: a label that poisons arm a is undone by rebuilding a from its batch
    snapshot and the labels *a* learned since, never b's."""
    config = ExperimentConfig(id="exp", arms={"a": 0.5, "b": 0.5}, primary="log_loss")
    run = ExperimentRun(config, learn="own_arm")
    slots = [ModelSlot("a", build_model("logistic")), ModelSlot("b", build_model("logistic"))]
    store = MemoryStore(StoreConfig(), InteractionConfig())
    limits = Limits(feature_bounds={"length": (-1e308, 1e308)})
    proc = Processor(slots, store, FeatureConfig(mode="raw"), limits, 0.5, experiment=run)
    users = {run.serving({"user_id": f"u{i}"}): f"u{i}" for i in range(20)}

    def record(n: int, arm: str, length: float, value: bool) -> Record:
        body = {
            "event_id": f"e{n}", "timestamp": T0 + n * 1000, "user_id": users[arm],
            "item_id": "i", "features": {"length": length}, "label": value,
        }  # fmt: skip
        return Record("events", orjson.dumps(body), "events", 0, n)

    batch = [record(0, "a", 1.0, True), record(1, "b", 3.0, False), record(2, "a", 1e300, True)]
    out = proc.process(batch)
    assert [d.reason for d in out.dead_letters] == ["poisoned_model"]
    alone = build_model("logistic")  # what a learned: its first label only
    alone.learn_one({"length": 1.0}, True)
    x = {"length": 2.0}
    assert score(proc.slots[0].model, x) == score(alone, x)
    assert {s.name: s.labels_learned for s in proc.slots} == {"a": 1, "b": 1}


def test_labels_are_counted_by_the_unit_of_their_event_joined_later_or_inline():
    proc, run = two_arms()
    proc.process([event(0, "u1"), event(1, "u1", label=True)])
    proc.process([label(0, False, 0)])
    arm = run.serving({"user_id": "u1"})
    primary = run.experiment.arms[arm].primary
    assert primary.n == 2 and primary.singles.n == 0
    assert sorted(c for c in primary.counts if c) == [2]  # both in the bucket of u1
