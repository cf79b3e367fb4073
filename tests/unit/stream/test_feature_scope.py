"""Which model inputs the feature-drift windows watch by default: what producers send."""

from __future__ import annotations

import orjson
import pytest

from streamlearn.features.memory_store import MemoryStore
from streamlearn.learners.models import build_model
from streamlearn.metrics.monitor import Monitor
from streamlearn.stream.config import Settings
from streamlearn.stream.processor import ModelSlot, Processor, Record
from streamlearn.stream.synthetic import WorldConfig, generate_world


def watched_features(scope: str) -> set[str]:
    settings = Settings(monitoring={"feature_scope": scope, "drift_warmup_labels": 0})
    monitor = Monitor(settings.monitoring, threshold=settings.model.threshold)
    processor = Processor(
        [ModelSlot("logistic", build_model("logistic"), monitor=monitor)],
        MemoryStore(settings.store, settings.features.interactions),
        settings.features,
        settings.limits,
        settings.model.threshold,
    )
    lines = [orjson.dumps(r) for r in generate_world(WorldConfig(events=300, seed=4))]
    records = [
        Record("events" if b'"user_id"' in line else "labels", line, "t", 0, n)
        for n, line in enumerate(lines)
    ]
    processor.process(records)
    return set(monitor.snapshot(refresh=True)["features"])


def test_by_default_only_the_events_own_features_and_context_are_watched():
    watched = watched_features("inputs")
    assert watched, "no feature is watched"
    assert all(not name.startswith(("user_", "item_", "author_", "hour_")) for name in watched)
    assert any(name.startswith("ctx_") for name in watched)


@pytest.mark.parametrize("derived", ["hour_sin", "user_n"])
def test_scope_all_watches_the_derived_inputs_too(derived):
    assert derived in watched_features("all")
