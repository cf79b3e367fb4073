"""Slice statistics, their bounded cardinality, and the fairness ratios."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from streamlearn.metrics.monitor import Monitor, MonitoringMetrics
from streamlearn.metrics.monitoring_metrics import LABELLED_METRICS
from streamlearn.metrics.quality import roc_auc
from streamlearn.metrics.slices import OTHER_SLICE, SliceMonitor, slice_value, slice_values
from streamlearn.metrics.thresholds import MonitoringConfig


def _stream(n: int, seed: int = 0) -> list[tuple[str, float, bool, bool, float]]:
    """(slice value, score, decision, label, weight) with three slices scored differently."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        value = rng.choice(["a", "a", "b", "c"])
        score = min(0.99, max(0.01, rng.gauss({"a": 0.3, "b": 0.5, "c": 0.6}[value], 0.15)))
        rows.append((value, score, score > 0.5, rng.random() < score, rng.choice([1.0, 2.0])))
    return rows


def test_slice_statistics_equal_a_direct_computation() -> None:
    rows = _stream(3000)
    monitor = SliceMonitor(("context.k",), window=2000, top_k=5, min_count=10, min_decisions=1)
    for value, score, decision, label, weight in rows:
        monitor.observe_prediction((value,), score, decision)
        monitor.observe_label((value,), label, score, weight)
    window = rows[-2000:]
    reports = {r.slice: r for r in monitor.report()}
    assert sorted(reports) == ["a", "b", "c"]
    for name, r in reports.items():
        inside = [row for row in window if row[0] == name]
        rest = [row for row in window if row[0] != name]
        y = [row[3] for row in inside]
        s = [row[1] for row in inside]
        w = [row[4] for row in inside]
        mean = np.mean(s)
        rate = np.mean([row[2] for row in inside])
        assert r.n_predictions == r.n_labels == len(inside)
        assert r.mean_score == pytest.approx(mean)
        assert r.decision_rate == pytest.approx(rate)
        assert r.positive_label_rate == pytest.approx(np.dot(w, y) / sum(w))
        assert r.roc_auc == pytest.approx(roc_auc(y, s, w))
        losses = [-math.log(p) if t else -math.log(1 - p) for t, p in zip(y, s, strict=True)]
        assert r.log_loss == pytest.approx(np.dot(w, losses) / sum(w))
        assert r.score_ratio == pytest.approx(mean / np.mean([row[1] for row in rest]))
        assert r.decision_rate_ratio == pytest.approx(rate / np.mean([row[2] for row in rest]))


def test_a_key_reports_its_top_k_values_and_pools_the_rest_into_other() -> None:
    monitor = SliceMonitor(("author_id",), window=5000, top_k=3, min_count=1)
    rng = random.Random(1)
    for i in range(5000):
        # Three heavy authors, then 1000 distinct ones seen a few times each.
        value = ("h1", "h2", "h3")[i % 3] if i % 2 else f"rare-{rng.randrange(1000)}"
        monitor.observe_prediction((value,), 0.5, False)
    reports = monitor.report()
    assert {r.slice for r in reports[:3]} == {"h1", "h2", "h3"}
    assert len(reports) == 4 and reports[-1].slice == OTHER_SLICE
    assert sum(r.n_predictions for r in reports) == 5000
    assert reports[-1].n_predictions == 2500


def test_events_without_a_value_are_in_no_slice_of_that_key() -> None:
    monitor = SliceMonitor(("context.a", "context.b"), window=100, min_count=1)
    for i in range(100):
        monitor.observe_prediction(("x", None if i % 2 else "y"), 0.5, False)
        monitor.observe_label(("x", None), True, 0.5)
    by = {(r.slice_key, r.slice): r for r in monitor.report()}
    assert by["context.a", "x"].n_predictions == 100
    assert by["context.b", "y"].n_predictions == 50
    assert by["context.b", "y"].n_labels == 0
    assert by["context.b", "y"].score_ratio is None  # no rest with a value


def test_decision_rate_ratio_waits_for_enough_decisions() -> None:
    monitor = SliceMonitor(("context.g",), window=4000, top_k=2, min_count=100, min_decisions=50)
    for i in range(4000):
        # One positive decision in 100: 20 expected in the smaller slice, under 50.
        group = "b" if i % 2 else "a"
        monitor.observe_prediction((group,), 0.2, i % 100 == 1)
    by = {r.slice: r for r in monitor.report()}
    assert by["b"].decision_rate_ratio is None and by["a"].decision_rate_ratio is None
    assert by["b"].score_ratio == pytest.approx(1.0)


def test_slice_values_come_from_the_context_or_the_event() -> None:
    class Event:
        author_id = "a7"
        user_id = "u1"

    assert slice_values(("context.country", "author_id"), {"country": "fr"}, Event()) == (
        "fr",
        "a7",
    )
    assert slice_value("context.n", {"n": 3}) == "3"
    assert slice_value("context.long", {"long": "x" * 500}) == "x" * 64
    with pytest.raises(ValueError, match="unknown slice key"):
        slice_value("session", {})


def test_slice_keys_are_checked_by_the_config() -> None:
    assert MonitoringConfig(slices=("context.country", "author_id")).slices == (
        "context.country",
        "author_id",
    )
    with pytest.raises(ValidationError):
        MonitoringConfig(slices=("country",))
    with pytest.raises(ValidationError):
        MonitoringConfig(slices=("author_id", "author_id"))


def _slice_series(registry: CollectorRegistry, name: str) -> set[tuple[str, str]]:
    return {
        (s.labels["slice_key"], s.labels["slice"])
        for metric in registry.collect()
        for s in metric.samples
        if s.name == name
    }


def test_slice_gauges_follow_the_top_k_and_drop_the_values_that_leave_it() -> None:
    config = MonitoringConfig(
        slices=("context.country",),
        slice_top_k=2,
        slice_window=200,
        slice_min_count=10,
        evaluate_every=50,
        detail_evaluate_every=50,
        drift_warmup_labels=0,
        max_monitored_features=0,
    )
    registry = CollectorRegistry()
    monitor = Monitor(config, MonitoringMetrics(registry))
    for phase, countries in enumerate((("fr", "de", "us"), ("br", "in", "jp"))):
        for i in range(400):
            # Half the events from the first country, a quarter from each of the others.
            country = countries[0] if i % 2 else countries[1 + i % 4 // 2]
            score = 0.8 if country in ("fr", "br") else 0.4
            monitor.observe_prediction(score, score > 0.5, {}, 1000 * (phase * 400 + i), (country,))
        monitor.publish()
        for name in ("streamlearn_slice_mean_score", "streamlearn_slice_score_ratio"):
            series = _slice_series(registry, name)
            # The top 2 of this phase (its first country and one of the tied others) and other.
            assert len(series) == config.slice_top_k + 1
            assert {v for _, v in series} <= {*countries, OTHER_SLICE}
            assert {("context.country", countries[0]), ("context.country", OTHER_SLICE)} <= series
    assert registry.get_sample_value(
        "streamlearn_slice_score_ratio", {"slice_key": "context.country", "slice": "br"}
    ) == pytest.approx(0.8 / 0.4)
    assert (
        registry.get_sample_value(
            "streamlearn_slice_mean_score", {"slice_key": "context.country", "slice": "fr"}
        )
        is None
    )
    events = [e for e in monitor.drift_events if e["kind"] == "fairness"]
    assert any(e["name"] == "context.country=br:score_ratio" for e in events)


def test_labelled_metrics_appear_once_the_monitor_has_their_data() -> None:
    config = MonitoringConfig(
        slices=("context.g",),
        reference_size=20,
        window_size=20,
        slice_window=100,
        slice_min_count=5,
        evaluate_every=10,
        detail_evaluate_every=10,
        drift_warmup_labels=0,
    )
    registry = CollectorRegistry()
    monitor = Monitor(config, MonitoringMetrics(registry))
    for i in range(100):
        g = "a" if i % 2 else "b"
        monitor.observe_prediction(0.4, False, {"x": float(i)}, i, (g,))
        monitor.observe_label(0.4, i % 3 == 0, 1.0, i, (g,))
    monitor.publish()
    names = {s.name for metric in registry.collect() for s in metric.samples}
    assert set(LABELLED_METRICS) <= names
