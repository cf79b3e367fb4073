"""Implicit labels and pending labels, driven by event-time watermarks.

No positive within the window of event time means a negative; a label ahead of its
event waits in a bounded pending set. Both are decided by watermarks that an event
dated far ahead cannot move, so such an event neither expires waiting labels nor
turns real positives into implicit negatives.
"""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry

from streamlearn.features.interactions import InteractionConfig
from streamlearn.features.limits import Limits
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import StoreConfig
from streamlearn.features.vector import FeatureConfig
from streamlearn.learners.models import build_model
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.stream.processor import ModelSlot, Processor, Record

T0 = 1_767_225_600_000
WINDOW_S = 600
HOUR = 3_600_000


def rig(
    config: StoreConfig | None = None, partitions: int = 1
) -> tuple[Processor, CollectorRegistry]:
    registry = CollectorRegistry()
    config = config or StoreConfig(implicit_negative_after_s=WINDOW_S)
    processor = Processor(
        [ModelSlot("logistic", build_model("logistic"))],
        MemoryStore(config, InteractionConfig()),
        FeatureConfig(),
        Limits(),
        threshold=0.5,
        metrics=WorkerMetrics(registry),
        watermark_window=config.watermark_window,
        watermark_quantile=config.watermark_quantile,
    )
    processor.assign([("events", p) for p in range(partitions)])
    return processor, registry


def event(n: int, t: int, partition: int = 0, name: str = "e") -> Record:
    value = {"event_id": f"{name}{n}", "timestamp": t, "user_id": "u", "item_id": f"i{n % 3}"}
    return Record("events", orjson.dumps(value), "events", partition, n)


def label(n: int, t: int, offset: int, partition: int = 0, name: str = "e") -> Record:
    value = {"event_id": f"{name}{n}", "timestamp": t, "label": True}
    return Record("labels", orjson.dumps(value), "labels", partition, offset)


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_silence_within_the_window_is_learned_as_a_negative_and_late_positives_are_counted():
    processor, registry = rig()
    out = processor.process([event(0, T0), event(1, T0 + 1000), label(1, T0 + 60_000, 0)])
    assert out.labels_learned == 1, "the explicit positive, at once"

    past = T0 + WINDOW_S * 1000
    out = processor.process([event(2, past + 500), event(3, past + 600), event(4, past + 700)])
    assert processor.watermark_ms == past + 500, "the median of the partition's event times"
    assert out.labels_learned == 1, "e0 had no label within the window: an implicit negative"
    out = processor.process([label(0, past + 800, 1)])
    assert out.labels_learned == 0, "e0's positive came too late: counted, not learned"

    assert sample(registry, "streamlearn_labels_learned_total", {"source": "implicit"}) == 1.0
    assert sample(registry, "streamlearn_labels_learned_total", {"source": "labels"}) == 1.0
    assert sample(registry, "streamlearn_labels_skipped_total", {"reason": "late"}) == 1.0
    assert processor.slots[0].labels_learned == 2
    assert sample(registry, "streamlearn_label_delay_seconds_count", {}) == 2.0
    state = processor.store.entities["user:u"]
    assert (state.count, state.positives, state.labelled) == (5, 2.0, 2.0)


def test_an_event_dated_hours_ahead_neither_expires_waiting_labels_nor_makes_negatives():
    config = StoreConfig(implicit_negative_after_s=WINDOW_S, pending_ttl_s=3600)
    processor, registry = rig(config)
    processor.process([event(n, T0 + n * 1000) for n in range(10)])
    before = processor.watermark_ms
    waiting = label(10, T0 + 10_000, 0)  # its event is on its way
    out = processor.process([waiting, event(99, T0 + 20 * HOUR, name="future")])
    assert out.dead_letters == [] and out.labels_learned == 0
    assert before <= processor.watermark_ms < T0 + 60_000, "the future event is an outlier"

    out = processor.process(
        [label(n, T0 + 30_000 + n, 1 + n) for n in range(10)] + [event(10, T0 + 11_000)]
    )
    assert out.dead_letters == [], "no label expired as unknown_event"
    assert out.labels_learned == 11, "every positive learned as one, the waiting one too"
    assert sample(registry, "streamlearn_labels_learned_total", {"source": "implicit"}) == 0.0
    assert sample(registry, "streamlearn_labels_skipped_total", {"reason": "late"}) == 0.0
    assert sample(registry, "streamlearn_dead_letters_total", {"reason": "unknown_event"}) == 0.0
    assert processor.store.entities["user:u"].positives == 11.0


def test_an_outlier_in_every_partition_does_not_move_the_processor_watermark():
    processor, _ = rig(StoreConfig(), partitions=2)
    records = [event(n, T0 + n * 1000, partition=n % 2) for n in range(8)]
    outliers = [event(50 + p, T0 + 20 * HOUR, partition=p, name="future") for p in (0, 1)]
    processor.process(records + outliers)
    assert T0 < processor.watermark_ms <= T0 + 8000
    assert all(mark <= T0 + 8000 for mark in processor._watermarks().values())


def test_the_pending_limit_holds_when_labels_come_without_any_event():
    processor, registry = rig(StoreConfig(pending_max=100))
    labels = [label(n, T0 + n, n, name="ghost") for n in range(3000)]
    letters = []
    for start in range(0, len(labels), 250):
        out = processor.process(labels[start : start + 250])
        letters += out.dead_letters
        assert processor.store.pending_count() <= 100
        assert processor.store.pending_entries() <= 4 * 100 + 2048, "its index is bounded too"
    assert processor.store.pending_count() == 100
    assert sorted(processor.store.pending) == sorted(f"ghost{n}" for n in range(2900, 3000))
    assert [d.offset for d in letters] == list(range(2900)), "the oldest leave first"
    assert {d.reason for d in letters} == {"unknown_event"}
    assert "pending_max" in letters[0].detail
    first = {"event_id": "ghost0", "timestamp": T0, "label": 1.0, "weight": 1.0}
    assert (orjson.loads(letters[0].value), letters[0].topic) == (first, "labels")
    assert sample(registry, "streamlearn_dead_letters_total", {"reason": "unknown_event"}) == 2900


def test_labels_of_a_partition_without_events_expire_on_the_processor_wide_watermark():
    config = StoreConfig(pending_ttl_s=60, pending_max_wait_s=600)
    processor, registry = rig(config, partitions=2)
    orphan = label(0, T0, 0, partition=2, name="ghost")  # labels:2, no events:2
    mine = label(1, T0, 0, partition=0, name="ghost")  # labels:0, expired by events:0
    processor.process([orphan, mine])

    def events(first: int, last_s: int) -> list[Record]:
        return [event(n, T0 + n * 10_000, partition=n % 2) for n in range(first, last_s // 10 + 1)]

    out = processor.process(events(0, 300))
    assert [orjson.loads(d.value)["event_id"] for d in out.dead_letters] == ["ghost1"]
    assert "ghost0" in processor.store.pending, "still within the longest wait"

    out = processor.process(events(31, 1400))
    (letter,) = out.dead_letters
    assert (letter.reason, letter.topic, letter.partition) == ("unknown_event", "labels", 2)
    assert orjson.loads(letter.value)["event_id"] == "ghost0"
    assert "pending_max_wait_s" in letter.detail
    assert processor.store.pending == {}
    assert sample(registry, "streamlearn_dead_letters_total", {"reason": "unknown_event"}) == 2
