"""The training log: every learned label with exactly the features the model saw."""

from __future__ import annotations

from typing import Any

import orjson

from streamlearn.features.interactions import InteractionConfig
from streamlearn.features.limits import Limits
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import StoreConfig
from streamlearn.features.vector import FeatureConfig
from streamlearn.stream.processor import ModelSlot, Processor, Record

T0 = 1_767_225_600_000
WINDOW_S = 600


class Recorder:
    """A classifier that remembers what it was asked to score and to learn."""

    def __init__(self) -> None:
        self.scored: list[dict] = []
        self.learned: list[tuple[dict, bool, float]] = []

    def predict_proba_one(self, x: dict) -> dict[bool, float]:
        self.scored.append(dict(x))
        return {True: 0.25, False: 0.75}

    def learn_one(self, x: dict, y: bool, w: float = 1.0) -> None:
        self.learned.append((dict(x), y, w))


def processor(keep_examples: bool = True) -> tuple[Processor, Recorder]:
    model = Recorder()
    slot = ModelSlot("champion", model)
    slot.version = "7"
    store = MemoryStore(StoreConfig(implicit_negative_after_s=WINDOW_S), InteractionConfig())
    # The newest event time is the watermark (quantile 1): the stream's last event alone
    # passes e2's window.
    proc = Processor(
        [slot],
        store,
        FeatureConfig(),
        Limits(),
        threshold=0.5,
        keep_examples=keep_examples,
        watermark_quantile=1.0,
    )
    proc.assign([("events", 0)])
    return proc, model


def record(kind: str, offset: int, **value: Any) -> Record:
    return Record(kind, orjson.dumps(value), kind, 0, offset)  # type: ignore[arg-type]


def stream() -> list[Record]:
    def event(n: int, t: int, **extra: Any) -> Record:
        return record("events", n, event_id=f"e{n}", timestamp=t, user_id="u", item_id=f"i{n}",
                      context={"device": "ios"}, **extra)  # fmt: skip

    return [
        event(0, T0),
        event(1, T0 + 1_000, label=True),  # inline
        record("labels", 0, event_id="e0", timestamp=T0 + 2_000, label=False, weight=2.0),
        event(2, T0 + 3_000),  # no label: an implicit negative once the window has passed
        event(3, T0 + (WINDOW_S + 10) * 1000),
    ]


def test_each_learned_label_gives_one_example_with_the_features_that_were_scored():
    proc, model = processor()
    out = proc.process(stream())

    by_event = {e.event_id: e for e in out.examples}
    assert len(out.examples) == out.labels_learned == len(model.learned) == 3
    for n in range(3):
        assert by_event[f"e{n}"].x == model.scored[n], "the features the event was scored with"
    assert [(e.event_id, e.kind) for e in out.examples] == [
        ("e1", "inline"),
        ("e0", "labels"),
        ("e2", "implicit"),
    ]
    assert (by_event["e0"].label, by_event["e0"].weight, by_event["e0"].source) == (
        0.0,
        2.0,
        "labels:0:0",
    )
    assert by_event["e1"].source == "events:0:1" and by_event["e1"].label == 1.0
    assert by_event["e2"].source == "implicit" and by_event["e2"].label == 0.0
    assert {(e.score, e.model_version) for e in out.examples} == {(0.25, "7")}
    assert [x for x, _, _ in model.learned] == [e.x for e in out.examples]


def test_an_example_serialises_its_features_label_and_provenance():
    proc, _ = processor()
    example = proc.process(stream()).examples[1]
    line = orjson.loads(example.to_json())
    assert line["event_id"] == "e0" and line["label"] == 0.0 and line["weight"] == 2.0
    assert line["event_timestamp"] == T0 and line["label_timestamp"] == T0 + 2_000
    assert line["features"] == example.x and line["features"]["ctx_device"] == "ios"


def test_no_examples_are_kept_unless_asked_for():
    proc, model = processor(keep_examples=False)
    out = proc.process(stream())
    assert out.labels_learned == len(model.learned) == 3
    assert out.examples == []
