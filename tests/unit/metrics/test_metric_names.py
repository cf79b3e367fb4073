"""The metric names the alerts and the dashboard query are the worker's series, defined once."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from streamlearn.metrics import instruments
from streamlearn.metrics.alerts import alert_rules
from streamlearn.metrics.dashboard import dashboard_queries
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.metrics.thresholds import AlertThresholds

NAMES = {
    name: value
    for name, value in vars(instruments).items()
    if name.isupper() and isinstance(value, str) and value.startswith("streamlearn_")
}


def exposed() -> set[str]:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.model_info.info({"name": "m", "version": "1"})
    metrics.consumer_lag.labels(topic="events", partition="0").set(0)
    for kind in ("events", "labels"):
        metrics.records.labels(kind=kind)
    for family in ("labels_learned", "labels_skipped", "dead_letters"):
        getattr(metrics, family).labels("x")
    metrics.dropped.labels(output="prediction", reason="too_large")
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_every_name_constant_is_a_series_the_worker_exposes():
    series = exposed()
    assert len(NAMES) >= 20
    for constant, name in NAMES.items():
        assert name in series or f"{name}_bucket" in series, f"{constant} = {name!r}"


def test_every_worker_series_has_its_constant():
    samples = {name for name in exposed() if not name.endswith("_created")}
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in samples}
    assert families - set(NAMES.values()) == set()


def test_the_dashboard_and_the_alerts_query_the_constants():
    queries = " ".join(dashboard_queries())
    rules = " ".join(rule.expr for rule in alert_rules(AlertThresholds()))
    for name in ("EVENTS", "PREDICTIONS", "MODEL_INFO", "STAGE_DURATION", "PENDING_LABELS"):
        assert NAMES[name] in queries
    for name in ("DEAD_LETTERS", "RECORDS_CONSUMED", "CONSUMER_LAG", "EVENT_TO_PREDICTION"):
        assert NAMES[name] in rules


def test_the_processor_times_the_stages_the_stage_label_names():
    from streamlearn.features.interactions import InteractionConfig
    from streamlearn.features.limits import Limits
    from streamlearn.features.memory_store import MemoryStore
    from streamlearn.features.store import StoreConfig
    from streamlearn.features.vector import FeatureConfig
    from streamlearn.learners.models import build_model
    from streamlearn.stream.processor import ModelSlot, Processor, Record

    store = MemoryStore(StoreConfig(), InteractionConfig())
    processor = Processor(
        [ModelSlot("logistic", build_model("logistic"))], store, FeatureConfig(), Limits(), 0.5
    )
    event = b'{"event_id": "e1", "timestamp": 1767225600000, "user_id": "u", "item_id": "i"}'
    out = processor.process([Record("events", event, "events", 0, 0)])
    assert tuple(out.stage_seconds) == instruments.PROCESSOR_STAGES
    assert instruments.STAGES == ("poll", *instruments.PROCESSOR_STAGES, "produce", "commit")
