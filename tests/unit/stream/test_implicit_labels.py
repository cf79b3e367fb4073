"""Implicit labels: no positive within the window of event time means a negative."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry

from features.interactions import InteractionConfig
from features.schema import Limits
from features.store import MemoryStore, StoreConfig
from features.vector import FeatureConfig
from learners.models import build_model
from metrics.instruments import WorkerMetrics
from stream.processor import ModelSlot, Processor, Record

T0 = 1_767_225_600_000
WINDOW_S = 600


def rig() -> tuple[Processor, CollectorRegistry]:
    registry = CollectorRegistry()
    store = MemoryStore(StoreConfig(implicit_negative_after_s=WINDOW_S), InteractionConfig())
    processor = Processor(
        [ModelSlot("logistic", build_model("logistic"))],
        store,
        FeatureConfig(),
        Limits(),
        threshold=0.5,
        metrics=WorkerMetrics(registry),
    )
    processor.assign([("events", 0)])
    return processor, registry


def event(n: int, t: int) -> Record:
    value = {"event_id": f"e{n}", "timestamp": t, "user_id": "u", "item_id": f"i{n % 3}"}
    return Record("events", orjson.dumps(value), "events", 0, n)


def label(n: int, t: int, offset: int) -> Record:
    value = {"event_id": f"e{n}", "timestamp": t, "label": True}
    return Record("labels", orjson.dumps(value), "labels", 0, offset)


def test_silence_within_the_window_is_learned_as_a_negative_and_late_positives_are_counted():
    processor, registry = rig()
    out = processor.process([event(0, T0), event(1, T0 + 1000), label(1, T0 + 60_000, 0)])
    assert out.labels_learned == 1, "the explicit positive, at once"

    out = processor.process([event(2, T0 + WINDOW_S * 1000 + 500)])
    assert out.labels_learned == 1, "e0 had no label within the window: an implicit negative"
    out = processor.process([label(0, T0 + WINDOW_S * 1000 + 600, 1)])
    assert out.labels_learned == 0, "e0's positive came too late: counted, not learned"

    def sample(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("streamlearn_labels_learned_total", {"source": "implicit"}) == 1.0
    assert sample("streamlearn_labels_learned_total", {"source": "labels"}) == 1.0
    assert sample("streamlearn_labels_skipped_total", {"reason": "late"}) == 1.0
    assert processor.slots[0].labels_learned == 2
    assert sample("streamlearn_label_delay_seconds_count", {}) == 2.0
    state = processor.store.entities["user:u"]
    assert (state.count, state.positives, state.labelled) == (3, 2.0, 2.0)
