"""Decisions in the processor and the backtest: policy, holdout, propensity, feedback loop."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from streamlearn.features.interactions import InteractionConfig
from streamlearn.features.limits import Limits
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import StoreConfig
from streamlearn.features.vector import FeatureConfig
from streamlearn.learners.decision_policy import DecisionConfig, FixedThreshold
from streamlearn.learners.holdout import Decider, Holdout, decider_of
from streamlearn.learners.models import build_model
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings
from streamlearn.stream.feedback import FeedbackLoop, feedback_batches
from streamlearn.stream.processor import ModelSlot, Processor, Record
from streamlearn.stream.synthetic import WorldConfig, generate_world

T0 = 1_767_225_600_000


def rig(decider: Decider, store: StoreConfig | None = None) -> tuple[Processor, CollectorRegistry]:
    registry = CollectorRegistry()
    processor = Processor(
        [ModelSlot("logistic", build_model("logistic"))],
        MemoryStore(store or StoreConfig(), InteractionConfig()),
        FeatureConfig(),
        Limits(),
        threshold=0.5,
        metrics=WorkerMetrics(registry),
        keep_examples=True,
        decider=decider,
    )
    return processor, registry


def event(n: int, user: str) -> Record:
    value = {"event_id": f"e{n}", "timestamp": T0 + n * 1000, "user_id": user, "item_id": "i"}
    return Record("events", orjson.dumps(value), "events", 0, n)


def label(n: int, value: bool, offset: int) -> Record:
    body = {"event_id": f"e{n}", "timestamp": T0 + n * 1000 + 500, "label": value}
    return Record("labels", orjson.dumps(body), "labels", 0, offset)


def test_predictions_and_examples_carry_decision_holdout_and_propensity():
    # threshold 0: every score is decided positive, so held-out users are served instead
    decider = Decider(FixedThreshold(0.0), Holdout(0.5, salt="t"), propensity_weighting=True)
    processor, registry = rig(decider)
    users = [f"u{i}" for i in range(40)]
    out = processor.process(
        [event(n, u) for n, u in enumerate(users)] + [label(n, True, n) for n in range(len(users))]
    )
    held = {p.event_id for p in out.predictions if p.holdout}
    assert 0 < len(held) < len(users)
    for p in out.predictions:
        doc = orjson.loads(p.to_json(1.0))
        assert doc["holdout"] is p.holdout and doc["propensity"] == p.propensity
        assert (p.decision, p.propensity) == ((False, 0.5) if p.holdout else (True, 0.5))
    for example in out.examples:
        doc = orjson.loads(example.to_json())
        assert doc["holdout"] is (example.event_id in held)
        assert doc["decision"] is (example.event_id not in held)
        assert doc["propensity"] == 0.5
        assert example.weight == 2.0  # learned weighted by 1 / propensity
    assert registry.get_sample_value("streamlearn_decision_threshold") == 0.0
    assert processor.holdout_quality.report().n == len(held)


def test_the_default_decider_is_the_fixed_threshold_without_holdout():
    processor, _ = rig(Decider.fixed(0.5))
    out = processor.process([event(0, "u"), label(0, True, 0)])
    (p,) = out.predictions
    assert (p.decision, p.holdout, p.propensity) == (p.score > 0.5, False, 1.0)
    assert out.examples[0].weight == 1.0


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_holdout_gauges_exist_only_with_a_holdout_and_no_decision_gauge_stays_nan(fraction):
    """Without a holdout its quality would stay NaN for good, which the non-finite series
    alert reports while predictions flow: the gauges are left out instead."""
    processor, registry = rig(Decider(FixedThreshold(0.5), Holdout(fraction, salt="t")))
    users = [f"u{i}" for i in range(40)]
    processor.process(
        [event(n, u) for n, u in enumerate(users)]
        + [label(n, n % 2 == 0, n) for n in range(len(users))]
    )
    names = ("streamlearn_holdout_precision", "streamlearn_holdout_recall")
    values = [registry.get_sample_value(name) for name in names]
    if fraction == 0.0:
        assert values == [None, None]
    else:
        assert all(v is not None for v in values)
    decision = ["streamlearn_decision_threshold", "streamlearn_calibration_ece"]
    assert all(math.isfinite(registry.get_sample_value(name)) for name in decision)


def test_implicit_negatives_of_blocked_events_can_be_left_unlearned():
    config = StoreConfig(implicit_negative_after_s=10)
    for learn_them, expected in ((True, 3), (False, 0)):
        decider = Decider(FixedThreshold(0.0), implicit_negatives_of_blocked=learn_them)
        processor, _ = rig(decider, config)
        out = processor.process([event(n, "u") for n in range(3)])
        out2 = processor.process([event(n, "u") for n in range(100, 130)])
        implicit = [e for e in out.examples + out2.examples if e.kind == "implicit"]
        assert len([e for e in implicit if e.event_id in {"e0", "e1", "e2"}]) == expected


def test_by_default_a_decision_hides_nothing_so_every_silence_is_learned():
    # A predicted click is still shown: its silence is a real negative. Only a decision
    # that hides the event (decision.hides, a filter) makes its silence no evidence.
    config = StoreConfig(implicit_negative_after_s=10)
    cases = (
        ({}, 3),
        ({"hides": True}, 0),
        ({"hides": True, "implicit_negatives_of_blocked": True}, 3),
    )
    for section, expected in cases:
        decider = decider_of(DecisionConfig(policy="fixed", **section), threshold=0.0)
        processor, _ = rig(decider, config)
        out = processor.process([event(n, "u") for n in range(3)])
        out2 = processor.process([event(n, "u") for n in range(100, 130)])
        decided = [p.decision for p in out.predictions]
        assert decided == [True, True, True]
        implicit = [e for e in out.examples + out2.examples if e.kind == "implicit"]
        assert len([e for e in implicit if e.event_id in {"e0", "e1", "e2"}]) == expected


def test_feedback_batches_withhold_the_labels_of_blocked_events():
    loop = FeedbackLoop()
    records = [event(0, "u"), event(1, "u"), label(0, True, 0), label(1, True, 1)]
    batches = feedback_batches(records, 100, loop)
    first = next(batches)
    assert [r.kind for r in first] == ["events", "events"]  # closed before its own label
    from streamlearn.stream.outputs import Prediction

    loop.observe([Prediction("e0", "m", "1", 0.9, True, 0, None)])
    loop.observe([Prediction("e1", "m", "1", 0.1, False, 0, None)])
    rest = [r for batch in batches for r in batch]
    assert [orjson.loads(r.value)["event_id"] for r in rest] == ["e1"]
    assert loop.dropped == 1 and loop.truth == {"e0": True, "e1": True}
    assert loop.summary(1)["recall"] == 0.5


def test_backtest_with_the_feedback_filter_reports_recall_on_the_truth(tmp_path: Path):
    path = tmp_path / "world.jsonl"
    world = generate_world(WorldConfig(events=3000, seed=3))
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in world))
    settings = Settings(decision={"policy": "top_fraction", "top_fraction": 0.2, "min_labels": 100})
    result = backtest(path, settings, feedback="filter")
    summary = result.summary()
    feedback = summary["feedback"]
    assert feedback["labels_dropped"] > 0 and feedback["positives"] > 0
    assert 0 < feedback["recall"] <= 1
    assert summary["decisions"]["policy"] == "top_fraction"
    unfiltered = backtest(path, settings, measure_recall=True).summary()
    assert unfiltered["feedback"]["labels_dropped"] == 0
    assert unfiltered["labels_learned"] > summary["labels_learned"]


def test_class_weights_weight_what_the_models_learn_not_what_the_policy_counts():
    from streamlearn.learners.imbalance import ClassWeights

    classes = ClassWeights(positive=4.0, negative=0.5)
    decider = Decider(FixedThreshold(0.5), classes=classes)
    processor, _ = rig(decider)
    users = [f"u{i}" for i in range(10)]
    out = processor.process(
        [event(n, u) for n, u in enumerate(users)]
        + [label(n, n % 2 == 0, n) for n in range(len(users))]
    )
    weights = {e.event_id: e.weight for e in out.examples}
    assert weights == {f"e{n}": 4.0 if n % 2 == 0 else 0.5 for n in range(len(users))}
    # the policy's statistics and the monitors see the labels unweighted by class
    assert sorted(set(processor.decider.policy.labels.arrays()[2])) == [1.0]


def test_a_target_positive_share_is_learned_and_reported_in_the_snapshot_metadata():
    from streamlearn.learners.registry import SnapshotInfo
    from streamlearn.metrics.monitor import Monitor
    from streamlearn.metrics.thresholds import MonitoringConfig

    settings = Settings(decision={"target_positive_share": 0.5, "balance_window": 100})
    decider = decider_of(settings.decision)
    processor = Processor(
        [ModelSlot("logistic", build_model("logistic"), monitor=Monitor(MonitoringConfig()))],
        MemoryStore(StoreConfig(), InteractionConfig()),
        FeatureConfig(),
        Limits(),
        threshold=0.5,
        keep_examples=True,
        decider=decider,
    )
    n = 400
    records = [event(i, f"u{i}") for i in range(n)] + [label(i, i % 10 == 0, i) for i in range(n)]
    out = processor.process(records)
    positive = [e.weight for e in out.examples if e.label == 1.0][-5:]
    negative = [e.weight for e in out.examples if e.label == 0.0][-5:]
    assert min(positive) > 3.0 and max(negative) < 0.7  # about 10 % positives learned as 50 %
    monitor = processor.slots[0].monitor
    assert monitor is not None
    quality = monitor.snapshot(refresh=True)["quality"]
    # the worker's checkpoint puts the monitor's quality figures in the snapshot metadata
    metrics = {k: v for k, v in quality.items() if isinstance(v, float | int | None)}
    info = SnapshotInfo(
        version="1", name="logistic", created_at="2026-01-02T03:04:05+00:00",
        events_scored=n, labels_learned=n, metrics=metrics,
    )  # fmt: skip
    assert info.metrics["target_positive_share"] == 0.5
    assert 0.05 < (info.metrics["positive_share"] or 0) < 0.2
    assert (info.metrics["class_weight_positive"] or 0) > 3.0


def test_the_feedback_filter_withholds_nothing_before_it_goes_live():
    from streamlearn.stream.outputs import Prediction

    loop = FeedbackLoop(after=1)
    loop.observe([Prediction(f"e{n}", "m", "1", 0.9, True, 0, None) for n in range(2)])
    assert (loop.admits("e0", True), loop.admits("e1", True)) == (True, False)
    assert loop.dropped == 1
