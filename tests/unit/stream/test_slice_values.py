"""The processor hands each event's slice values to the monitor, with its score and its label."""

from __future__ import annotations

import orjson
import pytest

from streamlearn.features.interactions import InteractionConfig
from streamlearn.features.limits import Limits
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import StoreConfig
from streamlearn.features.vector import FeatureConfig
from streamlearn.learners.models import build_model
from streamlearn.metrics.monitor import Monitor
from streamlearn.metrics.thresholds import MonitoringConfig
from streamlearn.stream.processor import ModelSlot, Processor, Record

T0 = 1_767_225_600_000


def _processor(recent_events: int) -> Processor:
    config = MonitoringConfig(
        slices=("context.group", "author_id"),
        slice_min_count=1,
        drift_warmup_labels=0,
        evaluate_every=10,
        detail_evaluate_every=10,
    )
    slot = ModelSlot("logistic", build_model("logistic"), monitor=Monitor(config))
    processor = Processor(
        [slot],
        MemoryStore(StoreConfig(), InteractionConfig()),
        FeatureConfig(),
        Limits(),
        threshold=0.5,
        recent_events=recent_events,
    )
    processor.assign([("events", 0)])
    return processor


def _event(n: int) -> Record:
    value = {
        "event_id": f"e{n}",
        "timestamp": T0 + 1000 * n,
        "user_id": f"u{n % 5}",
        "item_id": f"i{n % 7}",
        "author_id": "a1" if n % 2 else "a2",
        "context": {"group": "b" if n % 4 == 0 else "a"},
    }
    return Record("events", orjson.dumps(value), "events", 0, n)


def _label(n: int, offset: int) -> Record:
    value = {"event_id": f"e{n}", "timestamp": T0 + 1000 * n + 500, "label": n % 3 == 0}
    return Record("labels", orjson.dumps(value), "labels", 0, offset)


@pytest.mark.parametrize("recent_events", [10_000, 1])
def test_labels_reach_the_slices_of_their_events(recent_events: int) -> None:
    processor = _processor(recent_events)
    # Every event, then every label: with one recent event kept, labels meet snapshots.
    records = [_event(n) for n in range(200)] + [_label(n, n) for n in range(200)]
    for start in range(0, len(records), 50):
        processor.process(records[start : start + 50])
    monitor = processor.slots[0].monitor
    assert monitor is not None
    by = {(r["slice_key"], r["slice"]): r for r in monitor.snapshot(refresh=True)["slices"]}
    assert by["context.group", "b"]["n_predictions"] == 50
    assert by["context.group", "b"]["n_labels"] == 50
    assert by["context.group", "a"]["n_labels"] == 150
    assert by["author_id", "a1"]["n_predictions"] == 100
    # A label whose event was scored a while ago is rebuilt from its snapshot, which keeps
    # the context but not the ids: it counts in the context slices only.
    expected = 100 if recent_events > 1 else 1  # e199, the one recent event
    assert by["author_id", "a1"]["n_labels"] == expected
