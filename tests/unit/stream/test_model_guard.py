"""One event must never poison the model.

A feature of 1e300 turned the logistic model's weights into NaN for good, and
one label of weight 1e6 saturated every later score. These tests drive the
:class:`Processor` on a :class:`MemoryStore` and check that extreme values are
refused at the schema, heavy weights clipped, a learn that leaves a model
non-finite undone (and the label dead-lettered), and a non-finite score never
published.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from river import base

from streamlearn.features.interactions import InteractionConfig
from streamlearn.features.limits import Limits
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import StoreConfig
from streamlearn.features.vector import FeatureConfig
from streamlearn.learners.models import FiniteCheck, build_model, is_finite, learn
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.stream.processor import ModelSlot, Processor, Record

T0 = 1_767_225_600_000
#: Limits that let 1e300 through the schema, to reach the learn guard behind it.
OPEN = Limits(feature_bounds={"length": (-1e308, 1e308)})


class Rig:
    def __init__(self, limits: Limits | None = None, spec: str = "logistic") -> None:
        self.registry = CollectorRegistry()
        self.processor = Processor(
            [ModelSlot(spec, build_model(spec), spec)],
            MemoryStore(StoreConfig(), InteractionConfig()),
            FeatureConfig(),
            limits or Limits(),
            threshold=0.5,
            metrics=WorkerMetrics(self.registry),
            keep_examples=True,
        )
        self.offsets = {"events": 0, "labels": 0}

    @property
    def model(self) -> Any:
        return self.processor.slots[0].model

    def event(self, n: int, length: float = 1.0, label: bool | None = None) -> Record:
        body: dict[str, Any] = {
            "event_id": f"e{n}",
            "timestamp": T0 + n * 1000,
            "user_id": f"u{n % 3}",
            "item_id": f"i{n % 5}",
            "features": {"length": length},
        }
        if label is not None:
            body["label"] = label
        return self.raw("events", body)

    def label(self, n: int, value: float = 1.0, weight: float = 1.0) -> Record:
        body = {"event_id": f"e{n}", "timestamp": T0 + n * 1000 + 1, "label": value}
        return self.raw("labels", {**body, "weight": weight})

    def raw(self, kind: str, body: dict[str, Any]) -> Record:
        offset = self.offsets[kind]
        self.offsets[kind] += 1
        return Record(kind, orjson.dumps(body), kind, 0, offset)  # type: ignore[arg-type]

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0


def warm(rig: Rig, n: int = 20) -> list[Record]:
    return [rig.event(i, length=float(i % 7), label=i % 2 == 0) for i in range(n)]


def state(model: Any) -> dict[str, Any]:
    """Every number the logistic preset learns: weights, intercept, scaler statistics."""
    regression = model.steps["LogisticRegression"]
    scaler = model.steps["TransformerUnion"].transformers["Pipeline"].steps["StandardScaler"]
    return {
        "weights": dict(regression._weights),
        "intercept": regression.intercept,
        "counts": dict(scaler.counts),
        "means": dict(scaler.means),
        "vars": dict(scaler.vars),
    }


# ---------------------------------------------------------------- 1. bounded at the schema


def test_a_feature_of_1e300_is_a_dead_letter_and_later_scores_stay_numbers():
    rig = Rig()
    out = rig.processor.process([*warm(rig), rig.event(20, 1e300, label=True), *[
        rig.event(i, float(i % 7), label=i % 2 == 0) for i in range(21, 30)
    ]])  # fmt: skip

    (letter,) = out.dead_letters
    assert letter.reason == "invalid_value"
    assert letter.detail == "features.length: 1e+300 is outside [-1e+09, 1e+09]"
    assert (letter.topic, letter.offset) == ("events", 20)
    assert [p.event_id for p in out.predictions] == [f"e{i}" for i in range(30) if i != 20]
    assert all(math.isfinite(p.score) and 0.0 < p.score < 1.0 for p in out.predictions)
    assert is_finite(rig.model)
    assert rig.sample("streamlearn_dead_letters_total", {"reason": "invalid_value"}) == 1.0


# ---------------------------------------------------------------- 2. heavy weights clipped


def test_a_label_of_weight_1e6_is_clipped_and_does_not_saturate_the_model():
    rig = Rig()
    events = warm(rig, 40)
    heavy_event = rig.event(40, 3.0)
    heavy = rig.label(40, value=0.0, weight=1e6)
    later = [rig.event(i, float(i % 7)) for i in range(41, 60)]
    out = rig.processor.process([*events, heavy_event, heavy, *later])

    (example,) = [e for e in out.examples if e.event_id == "e40"]
    assert example.weight == 100.0, "clipped to Limits.max_label_weight"
    assert rig.sample("streamlearn_label_weights_clipped_total") == 1.0
    scores = [p.score for p in out.predictions if p.event_id in {f"e{i}" for i in range(41, 60)}]
    assert len(scores) == 19
    assert all(1e-6 < s < 1 - 1e-6 for s in scores), scores


def test_the_weight_bound_is_configurable_and_lighter_weights_are_untouched():
    rig = Rig(Limits(max_label_weight=5.0))
    out = rig.processor.process(
        [rig.event(0), rig.event(1), rig.label(0, weight=4.0), rig.label(1, weight=50.0)]
    )
    assert [(e.event_id, e.weight) for e in out.examples] == [("e0", 4.0), ("e1", 5.0)]
    assert rig.sample("streamlearn_label_weights_clipped_total") == 1.0


# ---------------------------------------------------------------- 3. a poisoning learn is undone


def poisoned_stream(rig: Rig) -> list[Record]:
    """Good labels, then a label on an event of length 1e300, then more good labels."""
    return [
        *warm(rig, 10),
        rig.event(10, 1e300),
        rig.event(11, 2.0, label=True),
        rig.label(10, value=1.0),
        *[rig.event(i, float(i % 7), label=i % 3 == 0) for i in range(12, 20)],
    ]


def test_a_label_that_makes_the_model_non_finite_is_undone_and_dead_lettered():
    rig = Rig(OPEN)
    records = poisoned_stream(rig)
    out = rig.processor.process(records)

    (letter,) = [d for d in out.dead_letters if d.reason == "poisoned_model"]
    label_record = records[12]
    assert (letter.topic, letter.offset, letter.value) == ("labels", 0, label_record.value)
    assert "'e10'" in letter.detail and "non-finite" in letter.detail
    assert is_finite(rig.model)
    assert all(math.isfinite(p.score) for p in out.predictions)
    assert "e10" not in {e.event_id for e in out.examples}
    assert out.labels_learned == len(out.examples) == 19
    assert rig.processor.slots[0].labels_learned == 19
    assert rig.sample("streamlearn_labels_skipped_total", {"reason": "poisoned_model"}) == 1.0
    assert rig.sample("streamlearn_dead_letters_total", {"reason": "poisoned_model"}) == 1.0


def test_the_guarded_model_equals_one_that_learned_every_other_label_in_order():
    rig = Rig(OPEN)
    out = rig.processor.process(poisoned_stream(rig))
    reference = build_model("logistic")
    for example in out.examples:
        learn(reference, example.x, example.label, example.weight)
    assert state(rig.model) == state(reference)
    assert "length" in state(rig.model)["means"]


def test_a_replay_of_the_same_records_gives_the_same_model_whatever_the_batches():
    one, two = Rig(OPEN), Rig(OPEN)
    records = poisoned_stream(one)
    one.processor.process(records)
    for start in range(0, len(records), 4):
        two.processor.process(records[start : start + 4])
    assert state(one.model) == state(two.model)
    assert is_finite(two.model)


def test_an_inline_label_that_poisons_dead_letters_its_event_record():
    rig = Rig(OPEN)
    records = warm(rig, 5)
    poison = rig.event(5, 1e300, label=True)
    out = rig.processor.process([*records, poison, rig.event(6, 1.0, label=False)])
    (letter,) = [d for d in out.dead_letters if d.reason == "poisoned_model"]
    assert (letter.topic, letter.offset, letter.value) == ("events", 5, poison.value)
    assert [p.event_id for p in out.predictions] == [f"e{i}" for i in range(7)]
    assert is_finite(rig.model)


class Fragile(base.Classifier):
    """A River classifier the finiteness check cannot see into: its sum overflows."""

    def __init__(self) -> None:
        self.total = 0.0

    def learn_one(self, x: dict, y: bool, w: float = 1.0) -> None:
        self.total += x.get("length", 0.0) * 1e10

    def predict_proba_one(self, x: dict) -> dict[bool, float]:
        p = 0.5 + 0.0 * self.total  # NaN once total is infinite
        return {True: p, False: 1 - p}


def fragile() -> base.Classifier:
    return Fragile()


def test_an_opaque_model_is_probed_at_the_batch_end_and_its_culprit_undone():
    spec = "tests.unit.stream.test_model_guard:fragile"
    assert FiniteCheck(build_model(spec)).opaque == ("Fragile",)
    rig = Rig(OPEN, spec=spec)
    out = rig.processor.process(
        [*warm(rig, 5), rig.event(5, 1e300, label=True), rig.event(6, 2.0, label=True)]
    )
    # e6 was scored by the poisoned model before the batch's end: not published.
    assert [(d.reason, d.offset) for d in out.dead_letters] == [
        ("not_finite", 6),
        ("poisoned_model", 5),
    ]
    assert math.isfinite(rig.model.total)
    assert rig.model.total == sum(float(i % 7) for i in range(5)) * 1e10 + 2.0 * 1e10
    assert out.labels_learned == len(out.examples) == 6
    assert all(math.isfinite(p.score) for p in out.predictions)


# ---------------------------------------------------------------- 4. never serve NaN


class NaNForLongEvents(base.Classifier):
    def learn_one(self, x: dict, y: bool, w: float = 1.0) -> None:
        pass

    def predict_proba_one(self, x: dict) -> dict[bool, float]:
        p = math.nan if x.get("length", 0.0) > 100 else 0.25
        return {True: p, False: 1 - p}


def nan_for_long_events() -> base.Classifier:
    return NaNForLongEvents()


def test_a_non_finite_score_is_never_published_and_its_event_is_a_dead_letter():
    rig = Rig(spec="tests.unit.stream.test_model_guard:nan_for_long_events")
    emitted = []
    batch = rig.processor.prepare([rig.event(0, 1.0), rig.event(1, 500.0), rig.event(2, 2.0)])
    out = rig.processor.finish(batch, rig.processor.apply(batch), emitted.append)

    assert [(p.event_id, p.score) for p in out.predictions] == [("e0", 0.25), ("e2", 0.25)]
    assert emitted == out.predictions
    assert b"null" not in b"".join(p.to_json(1.0) for p in out.predictions)
    (letter,) = out.dead_letters
    assert (letter.reason, letter.offset) == ("not_finite", 1)
    assert "scored event 'e1' nan" in letter.detail
    assert rig.sample("streamlearn_scores_not_finite_total") == 1.0


@pytest.mark.parametrize("spec", ["logistic", "hoeffding_tree"])
def test_the_check_finds_non_finite_numbers_in_the_presets(spec):
    model = build_model(spec)
    learn(model, {"a": 1.0, "b": "x"}, 1.0, 1.0)
    assert is_finite(model, {"a": 1.0, "b": "x"})
    if spec == "logistic":
        model.steps["LogisticRegression"]._weights["a"] = math.inf
        assert not FiniteCheck(model)()
        model.steps["LogisticRegression"]._weights["a"] = 0.0
        model.steps["LogisticRegression"].intercept = math.nan
        assert not is_finite(model)
