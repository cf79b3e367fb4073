"""Retraining from the training log: window, time split, training and held-out evaluation."""

from __future__ import annotations

import json
import random

import pytest

from streamlearn.learners.models import build_model, learn
from streamlearn.learners.retrain import (
    EmptyWindowError,
    LoggedExample,
    parse_duration,
    retrain,
    split_window,
)

HOUR_MS = 3_600_000


def synthetic_log(
    n: int = 4_000, seed: int = 1, span_ms: int = 48 * HOUR_MS
) -> list[LoggedExample]:
    """A log where ``signal`` decides the label most of the time; shuffled, as partitions mix."""
    rng = random.Random(seed)
    log = []
    for i in range(n):
        signal = rng.random()
        label = 1.0 if rng.random() < (0.9 if signal > 0.5 else 0.1) else 0.0
        x = {"signal": signal, "noise": rng.random(), "device": rng.choice(["ios", "web"])}
        t = i * span_ms // n
        log.append(LoggedExample(f"e{i}", x, label, 1.0, t, t + 60_000))
    rng.shuffle(log)
    return log


def test_a_model_that_uses_the_signal_beats_a_constant_model_on_the_later_slice():
    log = synthetic_log()
    model, result = retrain(
        log,
        since_s=parse_duration("30d"),
        spec="logistic",
        current=build_model("logistic"),  # has learned nothing: scores 0.5 everywhere
        current_version="1",
    )
    assert result.current is not None and result.better is True
    assert result.candidate.log_loss < result.current.log_loss - 0.1
    assert result.candidate.roc_auc is not None and result.candidate.roc_auc > 0.8
    assert result.current.roc_auc == 0.5
    assert result.window.trained + result.window.held_out == len(log)
    assert result.candidate.examples == result.window.held_out
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["current_version"] == "1" and doc["better"] is True


def test_the_split_is_by_event_time_not_by_position():
    log = synthetic_log(n=1_000)  # shuffled: the log's order is not time's
    train, test, window = split_window(log, since_s=parse_duration("30d"), holdout=0.25)
    assert max(e.event_ms for e in train) < window.cutoff_ms <= min(e.event_ms for e in test)
    first, last = min(e.event_ms for e in log), max(e.event_ms for e in log)
    assert window.cutoff_ms == first + round(0.75 * (last - first))
    assert [e.event_ms for e in train] == sorted(e.event_ms for e in train)
    positions = {e.event_id: i for i, e in enumerate(log)}
    assert max(positions[e.event_id] for e in test) > min(positions[e.event_id] for e in train)


def test_the_window_keeps_only_the_last_since_of_the_log():
    log = synthetic_log(n=480, span_ms=48 * HOUR_MS)  # one example every 6 minutes
    train, test, window = split_window(log, since_s=parse_duration("12h"))
    kept = train + test
    assert window.until_ms == max(e.event_ms for e in log)
    assert all(e.event_ms > window.until_ms - 12 * HOUR_MS for e in kept)
    assert window.outside == len(log) - len(kept) and len(kept) == 120


def test_an_explicit_end_moves_the_window():
    log = synthetic_log(n=480)
    _, test, window = split_window(log, since_s=parse_duration("1d"), until_ms=24 * HOUR_MS)
    assert window.until_ms == 24 * HOUR_MS
    assert max(e.event_ms for e in test) <= 24 * HOUR_MS


def test_an_empty_window_is_a_clear_error():
    with pytest.raises(EmptyWindowError, match="training log is empty"):
        retrain([], since_s=60.0)
    log = synthetic_log(n=10)
    with pytest.raises(EmptyWindowError, match="no example in the window"):
        retrain(log, since_s=60.0, until_ms=-HOUR_MS)
    one_time = [LoggedExample(f"e{i}", {}, 1.0, 1.0, 5) for i in range(3)]
    with pytest.raises(EmptyWindowError, match="too short to split"):
        retrain(one_time, since_s=60.0)


@pytest.mark.parametrize("bad", ["", "30", "d", "30 days", "-1d", "1y", "0s"])
def test_a_bad_duration_says_what_a_duration_is(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize("holdout", [0.0, 1.0, -0.1, 1.5])
def test_a_held_out_fraction_outside_zero_one_is_refused(holdout):
    with pytest.raises(ValueError, match="held-out fraction"):
        split_window(synthetic_log(n=10), since_s=3600.0, holdout=holdout)


def test_a_warm_start_learns_on_a_copy_and_leaves_the_given_model_alone():
    log = synthetic_log(n=2_000)
    base = build_model("logistic")
    for example in log[:200]:
        learn(base, example.x, example.label, example.weight)
    before = base.predict_proba_one({"signal": 0.9, "noise": 0.5, "device": "ios"})
    model, result = retrain(log, 30 * 86_400.0, warm_start=base, warm_start_version="4")
    assert model is not base and result.warm_start == "4"
    assert base.predict_proba_one({"signal": 0.9, "noise": 0.5, "device": "ios"}) == before
    assert result.registry_metrics()["trained_examples"] == result.window.trained
