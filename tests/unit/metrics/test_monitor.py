"""The Monitor: gauges, edge-triggered drift events, references, snapshots."""

from __future__ import annotations

import math
import random

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from streamlearn.metrics.monitor import Monitor, MonitoringMetrics
from streamlearn.metrics.monitoring_metrics import MONITOR_METRICS
from streamlearn.metrics.thresholds import AlertThresholds, MonitoringConfig


def _config(**overrides: object) -> MonitoringConfig:
    base: dict[str, object] = {
        "reference_mode": "first_n",
        "reference_size": 1000,
        "window_size": 1000,
        "evaluate_every": 25,
        "quality_window": 200,
        "features": ("amount", "country"),
        "drift_warmup_labels": 0,
    }
    base.update(overrides)
    return MonitoringConfig(**base)  # type: ignore[arg-type]


def _event(rng: random.Random, rate: float, shifted: bool = False) -> tuple[float, bool, dict]:
    positive = rng.random() < rate
    score = min(1.0, max(0.0, rng.gauss(0.8 if positive else 0.2, 0.1)))
    features = {
        "amount": rng.expovariate(0.2 if shifted else 1.0),
        "country": rng.choice(["fr", "de"] if not shifted else ["fr", "us"]),
        "ignored": "x",
    }
    return score, positive, features


def _run(monitor: Monitor, n: int, rng: random.Random, start: int = 0, **kw: object) -> None:
    for i in range(start, start + n):
        score, positive, features = _event(rng, **kw)  # type: ignore[arg-type]
        monitor.observe_prediction(score, score >= 0.5, features, event_time_ms=1000 * i)
        monitor.observe_label(score, positive, event_time_ms=1000 * i)


def test_gauges_start_at_nan_and_thresholds_are_exported() -> None:
    registry = CollectorRegistry()
    Monitor(_config(), MonitoringMetrics(registry))
    assert math.isnan(registry.get_sample_value("streamlearn_prediction_positive_rate_ratio"))
    assert math.isnan(registry.get_sample_value("streamlearn_feature_psi", {"feature": "amount"}))
    t = AlertThresholds()
    for name, value in t.levels().items():
        assert registry.get_sample_value("streamlearn_alert_threshold", {"name": name}) == value
    assert registry.get_sample_value("streamlearn_concept_drift_detections_total") == 0.0


def test_every_exported_name_is_registered() -> None:
    registry = CollectorRegistry()
    Monitor(_config(), MonitoringMetrics(registry))
    names = {s.name for metric in registry.collect() for s in metric.samples}
    assert set(MONITOR_METRICS) <= names


def test_publish_sets_the_gauges() -> None:
    registry = CollectorRegistry()
    monitor = Monitor(_config(), MonitoringMetrics(registry))
    _run(monitor, 2000, random.Random(0), rate=0.1)
    monitor.publish(refresh=True)

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        v = registry.get_sample_value(name, labels or {})
        assert v is not None and not math.isnan(v), name
        return v

    snap = monitor.snapshot()
    assert value("streamlearn_prediction_psi") == pytest.approx(snap["prediction"]["psi"])
    assert value("streamlearn_prediction_ks") == pytest.approx(snap["prediction"]["ks"])
    assert value("streamlearn_prediction_positive_rate", {"window": "current"}) == pytest.approx(
        snap["prediction"]["positive_rate"]
    )
    assert value("streamlearn_prediction_positive_rate", {"window": "reference"}) == pytest.approx(
        snap["prediction"]["reference_positive_rate"]
    )
    assert 1 / 3 < value("streamlearn_prediction_positive_rate_ratio") < 3
    assert value("streamlearn_feature_psi", {"feature": "amount"}) < 0.25
    assert value("streamlearn_feature_psi", {"feature": "country"}) < 0.25
    assert registry.get_sample_value("streamlearn_feature_psi", {"feature": "ignored"}) is None
    assert value("streamlearn_online_roc_auc") > 0.95
    assert value("streamlearn_online_roc_auc") == pytest.approx(snap["quality"]["roc_auc"])
    assert value("streamlearn_reference_roc_auc") > 0.95
    assert value("streamlearn_online_log_loss") == pytest.approx(snap["quality"]["log_loss"])
    for name in ("accuracy", "precision", "recall", "recall_at_precision"):
        assert 0 <= value(f"streamlearn_online_{name}") <= 1
    assert snap["drift_events"] == []


def test_stationary_stream_records_no_drift_events() -> None:
    monitor = Monitor(_config())
    _run(monitor, 20_000, random.Random(1), rate=0.05)
    assert [e for e in monitor.drift_events if e["kind"] != "concept"] == []
    assert monitor.concept.n_detections <= 1


def test_positive_rate_jump_is_an_edge_triggered_drift_event() -> None:
    registry = CollectorRegistry()
    monitor = Monitor(_config(), MonitoringMetrics(registry))
    rng = random.Random(2)
    jump = 3000
    _run(monitor, jump, rng, rate=0.05)
    assert list(monitor.drift_events) == []
    _run(monitor, 2000, rng, start=jump, rate=0.8)
    events = [e for e in monitor.drift_events if e["kind"] == "prediction"]
    by_name = {e["name"]: e for e in events}
    assert set(by_name) == {"psi", "ks", "positive_rate_ratio"}
    assert len(events) == 3  # once each while the condition holds
    ratio = by_name["positive_rate_ratio"]
    assert jump < ratio["event_index"] <= jump + 200
    assert ratio["timestamp"] == 1000 * (ratio["event_index"] - 1)
    assert ratio["value"] > 3
    monitor.publish()
    assert registry.get_sample_value("streamlearn_drift_events_total", {"kind": "prediction"}) == 3
    assert registry.get_sample_value("streamlearn_prediction_positive_rate_ratio") > 10


def test_feature_shift_is_a_feature_drift_event() -> None:
    monitor = Monitor(_config())
    rng = random.Random(3)
    _run(monitor, 3000, rng, rate=0.05)
    _run(monitor, 1000, rng, start=3000, rate=0.05, shifted=True)
    names = {e["name"] for e in monitor.drift_events if e["kind"] == "feature"}
    assert names == {"amount", "country"}


def test_concept_drift_is_reported_and_counted() -> None:
    registry = CollectorRegistry()
    monitor = Monitor(_config(), MonitoringMetrics(registry))
    rng = random.Random(4)
    change = 3000
    detected_at = []
    for i in range(change + 1000):
        y = rng.random() < 0.5
        score = min(0.99, max(0.01, rng.gauss(0.75 if y else 0.25, 0.1)))
        if i >= change:
            score = 1 - score
        monitor.observe_prediction(score, score >= 0.5, {}, event_time_ms=i)
        if monitor.observe_label(score, y, event_time_ms=i):
            detected_at.append(i)
    assert detected_at and detected_at[0] >= change - 50
    assert any(change <= i < change + 300 for i in detected_at)
    concept = [e for e in monitor.drift_events if e["kind"] == "concept"]
    assert [e["event_index"] for e in concept] == detected_at
    assert concept[0]["name"] == "adwin"
    monitor.publish()
    total = registry.get_sample_value("streamlearn_concept_drift_detections_total")
    assert total == len(detected_at)
    monitor.publish()  # publishing again does not count twice
    assert registry.get_sample_value("streamlearn_concept_drift_detections_total") == total


def test_auc_drop_shows_against_the_reference_auc() -> None:
    monitor = Monitor(_config())
    rng = random.Random(5)
    for i in range(2000):
        y = rng.random() < 0.5
        good = i < 1000
        score = rng.gauss(0.7 if y else 0.3, 0.1) if good else rng.random()
        monitor.observe_label(min(1.0, max(0.0, score)), y)
    snap = monitor.snapshot(refresh=True)
    assert snap["reference_roc_auc"] > 0.95
    assert snap["quality"]["roc_auc"] < snap["reference_roc_auc"] - 0.05


def test_trailing_reference_auc_is_the_window_before_the_current_one() -> None:
    monitor = Monitor(_config(reference_mode="trailing", quality_window=50, evaluate_every=10))
    for i in range(150):
        # labels 50..99 perfectly ranked, 100..149 inverted
        y = i % 2 == 0
        score = 0.9 if y else 0.1
        if i >= 100:
            score = 1 - score
        monitor.observe_label(score, y)
    snap = monitor.snapshot(refresh=True)
    assert snap["reference_roc_auc"] == 1.0
    assert snap["quality"]["roc_auc"] == 0.0


def test_reset_reference_starts_new_windows() -> None:
    registry = CollectorRegistry()
    monitor = Monitor(_config(), MonitoringMetrics(registry))
    rng = random.Random(6)
    _run(monitor, 2000, rng, rate=0.05)
    monitor.publish(refresh=True)
    assert not math.isnan(registry.get_sample_value("streamlearn_prediction_psi"))
    monitor.reset_reference()
    monitor.publish()
    assert math.isnan(registry.get_sample_value("streamlearn_prediction_psi"))
    assert math.isnan(registry.get_sample_value("streamlearn_reference_roc_auc"))
    _run(monitor, 2000, rng, start=2000, rate=0.8)  # new model, new normal
    assert [e for e in monitor.drift_events if e["kind"] == "prediction"] == []
    assert monitor.snapshot(refresh=True)["prediction"]["reference_positive_rate"] > 0.6


def test_drift_events_do_not_depend_on_publish_calls() -> None:
    def run(publish_every: int | None) -> list[dict]:
        monitor = Monitor(_config(), MonitoringMetrics(CollectorRegistry()))
        rng = random.Random(7)
        for i in range(5000):
            score, positive, features = _event(rng, 0.05 if i < 3000 else 0.6, i >= 3500)
            monitor.observe_prediction(score, score >= 0.5, features, i)
            monitor.observe_label(score, positive, event_time_ms=i)
            if publish_every and i % publish_every == 0:
                monitor.publish()
        return list(monitor.drift_events)

    assert run(None) == run(7) == run(113)
    assert run(None)


def test_snapshot_is_plain_data() -> None:
    monitor = Monitor(_config())
    _run(monitor, 2000, random.Random(8), rate=0.1)
    snap = monitor.snapshot(refresh=True)
    assert snap["n_predictions"] == snap["n_labels"] == 2000
    assert snap["last_event_time_ms"] == 1_999_000
    assert set(snap["features"]) == {"amount", "country"}
    assert snap["features"]["country"]["kind"] == "categorical"
    assert snap["concept"]["detector"] == "adwin"
    assert set(snap["quality"]) >= {"roc_auc", "log_loss", "recall_at_precision"}


def test_memory_stays_bounded() -> None:
    monitor = Monitor(_config(max_drift_events=5, max_detections=5))
    rng = random.Random(9)
    for block in range(10):
        _run(monitor, 2000, rng, start=block * 2000, rate=0.05 if block % 2 else 0.8)
    assert len(monitor.drift_events) <= 5
    assert len(monitor.concept.detections) <= 5
    snap = monitor.snapshot()
    assert snap["prediction"]["n_current"] == 1000
    assert snap["prediction"]["n_reference"] == 1000
    assert snap["quality"]["n"] == 200


def test_monitoring_config_validates() -> None:
    with pytest.raises(ValidationError):
        MonitoringConfig(features=tuple(f"f{i}" for i in range(33)))
    with pytest.raises(ValidationError, match="unique"):
        MonitoringConfig(features=("a", "a"))
    with pytest.raises(ValidationError, match="concept_params"):
        MonitoringConfig(concept_params={"nope": 1})
    with pytest.raises(ValidationError):
        MonitoringConfig(concept_action="retrain")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        MonitoringConfig(unknown=1)  # type: ignore[call-arg]
    config = MonitoringConfig()
    with pytest.raises(ValidationError):
        config.window_size = 5  # type: ignore[misc]


def test_monitoring_config_from_nested_data() -> None:
    config = MonitoringConfig.model_validate(
        {
            "reference_mode": "trailing",
            "features": ["amount"],
            "concept_detector": "page_hinkley",
            "concept_params": {"threshold": 30, "mode": "up"},
            "thresholds": {"psi_critical": 0.3, "latency_for": "2m"},
        }
    )
    assert config.features == ("amount",)
    assert config.thresholds.psi_critical == 0.3
    assert config.thresholds.psi_warning == 0.1
    assert Monitor(config).concept.detector_name == "page_hinkley"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"psi_warning": 0.3, "psi_critical": 0.2},
        {"positive_rate_ratio_high": 0.5},
        {"positive_rate_ratio_low": 1.5},
        {"latency_for": "5 minutes"},
        {"ks_critical": 2.0},
    ],
)
def test_alert_thresholds_validate(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        AlertThresholds(**kwargs)


def _moving_policy_run(monitor: Monitor, n: int, rng: random.Random, shift_at: int) -> list[bool]:
    """A stream scored by a model and decided by a precision policy whose threshold moves."""
    from streamlearn.learners.decision_policy import PrecisionAtLeast

    policy = PrecisionAtLeast(0.95, min_labels=200, min_positives=10, update_every=100)
    decisions = []
    for i in range(n):
        positive = rng.random() < 0.2
        centre = 0.7 if positive else 0.3
        if i >= shift_at:
            centre += 0.25  # the model's scores move up: a real shift
        score = min(1.0, max(0.0, rng.gauss(centre, 0.12)))
        decision = policy.decide(score)
        decisions.append(decision)
        monitor.observe_prediction(score, decision, None, 1000 * i, ("all",))
        policy.observe_label(score, positive)
        monitor.observe_label(score, positive, event_time_ms=1000 * i)
    return decisions


def test_a_policy_whose_threshold_moves_raises_no_prediction_drift_on_a_stationary_stream() -> None:
    # The policy decides nothing before min_labels, then starts deciding: the decision
    # rate jumps from 0 by design, while the scores stay as they were.
    monitor = Monitor(_config(features=(), slices=("context.segment",)))
    decisions = _moving_policy_run(monitor, 8000, random.Random(5), shift_at=10**9)
    assert not any(decisions[:200]) and sum(decisions[1000:]) > 500
    assert [e for e in monitor.drift_events if e["kind"] == "prediction"] == []
    # What is about decisions still sees the real decisions.
    assert monitor.slices is not None
    [report] = monitor.slices.report()
    assert report.decision_rate == pytest.approx(sum(decisions[-5000:]) / 5000, abs=1e-9)


def test_a_real_shift_in_scores_still_raises_prediction_drift_whatever_the_policy() -> None:
    monitor = Monitor(_config(features=()))
    _moving_policy_run(monitor, 6000, random.Random(6), shift_at=4000)
    names = {e["name"] for e in monitor.drift_events if e["kind"] == "prediction"}
    assert names == {"psi", "ks", "positive_rate_ratio"}
    assert min(e["event_index"] for e in monitor.drift_events) > 4000
