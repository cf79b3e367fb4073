"""Predictions are handed over as their events are scored, not at the end of the batch."""

from __future__ import annotations

import orjson

from streamlearn.features.interactions import InteractionConfig
from streamlearn.features.limits import Limits
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import StoreConfig
from streamlearn.features.vector import FeatureConfig
from streamlearn.learners.models import build_model
from streamlearn.stream.processor import ModelSlot, Prediction, Processor, Record

T0 = 1_767_225_600_000


def processor() -> Processor:
    slots = [
        ModelSlot("champion", build_model("logistic")),
        ModelSlot("shadow", build_model("logistic")),
    ]
    store = MemoryStore(StoreConfig(), InteractionConfig())
    return Processor(slots, store, FeatureConfig(), Limits(), threshold=0.5)


def records() -> list[Record]:
    out = []
    for n in range(6):
        event = {"event_id": f"e{n}", "timestamp": T0 + n, "user_id": "u", "item_id": f"i{n % 2}"}
        out.append(Record("events", orjson.dumps(event), "events", 0, n))
        label = {"event_id": f"e{n}", "timestamp": T0 + n, "label": n % 2 == 0}
        out.append(Record("labels", orjson.dumps(label), "labels", 0, n))
    out.insert(3, Record("events", b"{not json", "events", 0, 99))
    return out


def test_each_champion_prediction_is_emitted_before_the_next_record_is_handled():
    proc = processor()
    emitted: list[tuple[Prediction, int, int]] = []
    batch = proc.prepare(records())

    def emit(prediction: Prediction) -> None:
        emitted.append((prediction, proc.events_seen, proc.slots[0].labels_learned))

    out = proc.finish(batch, proc.apply(batch), emit)
    assert [p for p, _, _ in emitted] == out.predictions
    assert {p.model for p in out.predictions} == {"champion"}
    assert [p.event_id for p in out.predictions] == [f"e{n}" for n in range(6)]
    # Emitted while its own event was the last one scored and before its label was learned.
    assert [(seen, learned) for _, seen, learned in emitted] == [(n + 1, n) for n in range(6)]
    assert out.labels_learned == 6
    assert [d.reason for d in out.dead_letters] == ["invalid_json"]


def test_the_emitted_predictions_are_those_of_a_batch_processed_without_emission():
    emitted: list[Prediction] = []
    with_emit = processor()
    batch = with_emit.prepare(records())
    out = with_emit.finish(batch, with_emit.apply(batch), emitted.append)
    plain = processor().process(records())
    assert emitted == out.predictions == plain.predictions
    assert out.shadow_predictions == plain.shadow_predictions
