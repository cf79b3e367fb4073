"""The worker's label metrics: positive labels beside learned ones (the click-through
rate), and the event time of the newest explicitly labelled event (label freshness)."""

from __future__ import annotations

import orjson

from streamlearn.features.store import StoreConfig
from streamlearn.stream.processor import Record

from .test_implicit_labels import T0, WINDOW_S, event, label, rig, sample


def negative(n: int, t: int, offset: int) -> Record:
    value = {"event_id": f"e{n}", "timestamp": t, "label": False}
    return Record("labels", orjson.dumps(value), "labels", 0, offset)


def test_positive_labels_are_counted_beside_learned_ones_by_source() -> None:
    processor, registry = rig()
    events = [event(n, T0 + n * 1000) for n in range(4)]
    processor.process(
        [*events, label(0, T0 + 9000, 0), label(1, T0 + 9000, 1), negative(2, T0 + 9000, 2)]
    )
    past = T0 + WINDOW_S * 1000 + 10_000
    processor.process([event(n, past + n, name="late") for n in range(9)])  # e3: implicit
    learned = {s: sample(registry, "streamlearn_labels_learned_total", {"source": s})
               for s in ("labels", "implicit", "inline")}  # fmt: skip
    positive = {s: sample(registry, "streamlearn_labels_positive_total", {"source": s})
                for s in ("labels", "implicit", "inline")}  # fmt: skip
    assert learned == {"labels": 3.0, "implicit": 1.0, "inline": 0.0}
    assert positive == {"labels": 2.0, "implicit": 0.0, "inline": 0.0}
    # the recording rule's ratio: 2 positives in 4 learned labels
    assert sum(positive.values()) / sum(learned.values()) == 0.5


def test_label_freshness_follows_explicit_labels_only() -> None:
    processor, registry = rig(StoreConfig(implicit_negative_after_s=WINDOW_S))
    gauge = "streamlearn_last_label_event_timestamp_seconds"
    processor.process([event(n, T0 + n * 1000) for n in range(3)])
    assert sample(registry, gauge, {}) == 0.0, "no label learned yet"
    processor.process([label(1, T0 + 5000, 0)])
    assert sample(registry, gauge, {}) == (T0 + 1000) / 1000
    processor.process([label(0, T0 + 6000, 1)])  # an older event's label: never moves back
    assert sample(registry, gauge, {}) == (T0 + 1000) / 1000
    # events go on, labels stop: implicit negatives are learned, freshness stays put
    past = T0 + 3 * WINDOW_S * 1000
    processor.process([event(n, past + n, name="next") for n in range(9)])
    assert sample(registry, "streamlearn_labels_learned_total", {"source": "implicit"}) == 1.0
    assert sample(registry, gauge, {}) == (T0 + 1000) / 1000
    lag = sample(registry, "streamlearn_last_event_timestamp_seconds", {}) - (T0 + 1000) / 1000
    assert lag > 2 * WINDOW_S
