"""Feature drift with no configured list: every input monitored, bounded, top K exported."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry

from streamlearn.metrics.drift_statistics import ks_statistic
from streamlearn.metrics.feature_drift import FeatureDrift
from streamlearn.metrics.monitor import Monitor, MonitoringMetrics
from streamlearn.metrics.thresholds import MonitoringConfig


def _config(**kw: object) -> MonitoringConfig:
    base: dict[str, object] = {
        "reference_size": 200,
        "window_size": 100,
        "evaluate_every": 50,
        "detail_evaluate_every": 50,
        "drift_warmup_labels": 0,
    }
    return MonitoringConfig(**{**base, **kw})  # type: ignore[arg-type]


def _x(rng: random.Random, shifted: bool) -> dict[str, object]:
    return {
        "length": rng.gauss(5.0 if shifted else 0.0, 1.0),
        "steady": rng.gauss(0.0, 1.0),
        "ctx_device": rng.choice(["ios", "web"] if shifted else ["ios", "android"]),
    }


def test_every_input_feature_is_monitored_without_a_list() -> None:
    registry = CollectorRegistry()
    config = _config(reference_size=1000, window_size=500, evaluate_every=250)
    monitor = Monitor(config, MonitoringMetrics(registry))
    rng = random.Random(0)
    for i in range(2500):
        monitor.observe_prediction(0.3, False, _x(rng, i >= 2000), i)
    monitor.publish()
    assert set(monitor.features.features) == {"length", "steady", "ctx_device"}
    drifted = {e["name"] for e in monitor.drift_events if e["kind"] == "feature"}
    assert drifted == {"length", "ctx_device"}
    psi = registry.get_sample_value("streamlearn_feature_psi", {"feature": "length"})
    assert psi > 1.0
    assert registry.get_sample_value("streamlearn_feature_ks", {"feature": "length"}) > 0.9
    assert registry.get_sample_value("streamlearn_feature_ks", {"feature": "steady"}) < 0.3
    assert registry.get_sample_value("streamlearn_feature_ks", {"feature": "ctx_device"}) is None
    assert registry.get_sample_value("streamlearn_features_monitored") == 3
    assert registry.get_sample_value("streamlearn_features_drifted") == 2
    assert registry.get_sample_value("streamlearn_feature_psi_max") >= psi


def test_feature_drift_can_be_turned_off() -> None:
    monitor = Monitor(_config(max_monitored_features=0))
    rng = random.Random(0)
    for i in range(600):
        monitor.observe_prediction(0.3, False, _x(rng, i >= 400), i)
    assert monitor.features.features == ()
    assert monitor.snapshot(refresh=True)["features"] == {}


def test_a_thousand_distinct_features_keep_the_series_bounded() -> None:
    config = _config(reference_size=20, window_size=10, max_monitored_features=64, feature_top_k=10)
    registry = CollectorRegistry()
    monitor = Monitor(config, MonitoringMetrics(registry))
    rng = random.Random(1)
    for i in range(600):
        # 1,000 feature names, each event carrying 100 of them, shifting after 400 events.
        names = rng.sample(range(1000), 100)
        x = {f"f{n}": rng.gauss(3.0 if i >= 400 and n % 2 else 0.0, 1.0) for n in names}
        monitor.observe_prediction(0.5, False, x, i)
        if i % 37 == 0:
            monitor.publish()
    monitor.publish()

    def labels(name: str) -> set[str]:
        return {
            s.labels["feature"]
            for metric in registry.collect()
            for s in metric.samples
            if s.name == name
        }

    assert len(monitor.features.features) == 64
    assert monitor.features.n_unmonitored == 1000 - 64
    assert 0 < len(labels("streamlearn_feature_psi")) <= 10
    assert labels("streamlearn_feature_ks") == labels("streamlearn_feature_psi")
    assert labels("streamlearn_feature_psi") <= set(monitor.features.features)
    assert registry.get_sample_value("streamlearn_features_monitored") == 64
    summary = monitor.feature_summary()
    exported = monitor.exported_features()
    lowest_exported = min(r["psi"] for r in exported.values())
    others = [
        r["psi"]
        for name, r in monitor.snapshot()["features"].items()
        if name not in exported and r["psi"] is not None
    ]
    assert all(psi <= lowest_exported for psi in others), "the exported ones are the top K"
    assert summary["psi_max"] == max(r["psi"] for r in exported.values())


def test_numeric_features_get_the_ks_statistic_of_their_windows() -> None:
    rng = random.Random(4)
    values = [rng.gauss(0, 1) for _ in range(300)] + [rng.gauss(0.5, 1) for _ in range(100)]
    drift = FeatureDrift(None, reference_size=200, window_size=100, mode="trailing")
    for v in values:
        drift.update({"x": v})
    report = drift.report()["x"]
    assert report["ks"] == pytest.approx(ks_statistic(values[-300:-100], values[-100:]))


def test_blocks_give_the_same_windows_as_one_observation_at_a_time() -> None:
    rng = random.Random(2)
    rows = [{"a": rng.random(), "b": rng.choice("xyz")} for _ in range(1000)]
    one = FeatureDrift(None, reference_size=300, window_size=200, mode="first_n", flush_every=1)
    block = FeatureDrift(None, reference_size=300, window_size=200, mode="first_n")
    for row in rows:
        one.update(row)
        block.update(row)
    assert one.report() == block.report()
