"""Rolling online quality against brute-force and River reference computations."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from river import metrics as river_metrics

from streamlearn.metrics.quality import (
    RollingQuality,
    binary_log_loss,
    recall_at_precision,
    roc_auc,
)

examples = st.lists(
    st.tuples(
        st.booleans(),
        st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.6, 0.9, 1.0]),
        st.sampled_from([0.5, 1.0, 2.0]),
    ),
    min_size=1,
    max_size=40,
)


def _auc_pairs(ys: list[bool], ss: list[float], ws: list[float]) -> float | None:
    num = den = 0.0
    for yi, si, wi in zip(ys, ss, ws, strict=True):
        if not yi:
            continue
        for yj, sj, wj in zip(ys, ss, ws, strict=True):
            if yj:
                continue
            den += wi * wj
            num += wi * wj * (1.0 if si > sj else 0.5 if si == sj else 0.0)
    return num / den if den else None


def _recall_at_precision_brute(
    ys: list[bool], ss: list[float], ws: list[float], target: float
) -> float | None:
    positives = sum(w for y, w in zip(ys, ws, strict=True) if y)
    if positives == 0:
        return None
    best = 0.0
    for t in set(ss):
        tp = sum(w for y, s, w in zip(ys, ss, ws, strict=True) if y and s >= t)
        fp = sum(w for y, s, w in zip(ys, ss, ws, strict=True) if not y and s >= t)
        if tp > 0 and tp / (tp + fp) >= target - 1e-12:
            best = max(best, tp / positives)
    return best


@given(examples)
def test_roc_auc_equals_the_pairwise_definition(items: list[tuple[bool, float, float]]) -> None:
    ys, ss, ws = (list(x) for x in zip(*items, strict=True))
    expected = _auc_pairs(ys, ss, ws)
    got = roc_auc(ys, ss, ws)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_roc_auc_is_close_to_rivers_many_threshold_estimate() -> None:
    rng = random.Random(0)
    river_auc = river_metrics.ROCAUC(n_thresholds=1000)
    ys, ss = [], []
    for _ in range(3000):
        y = rng.random() < 0.3
        s = min(1.0, max(0.0, rng.gauss(0.65 if y else 0.4, 0.15)))
        river_auc.update(y, {True: s, False: 1 - s})
        ys.append(y)
        ss.append(s)
    assert roc_auc(ys, ss) == pytest.approx(river_auc.get(), abs=0.005)


@given(examples, st.sampled_from([0.5, 0.75, 0.9, 0.995, 1.0]))
def test_recall_at_precision_equals_brute_force(
    items: list[tuple[bool, float, float]], target: float
) -> None:
    ys, ss, ws = (list(x) for x in zip(*items, strict=True))
    recall, threshold = recall_at_precision(ys, ss, target, ws)
    expected = _recall_at_precision_brute(ys, ss, ws, target)
    if expected is None:
        assert (recall, threshold) == (None, None)
    else:
        assert recall == pytest.approx(expected)
    if recall:
        tp = sum(w for y, s, w in zip(ys, ss, ws, strict=True) if y and s >= threshold)
        fp = sum(w for y, s, w in zip(ys, ss, ws, strict=True) if not y and s >= threshold)
        assert tp / (tp + fp) >= target - 1e-9


def test_recall_at_precision_hand_example() -> None:
    # Sorted by score: + + - + + - -.  Thresholds and (precision, recall):
    # 0.95 (1, 1/4)  0.9 (1, 2/4)  0.8 (2/3, 2/4)  0.7 (3/4, 3/4)  0.6 (4/5, 1)  ...
    ys = [True, True, False, True, True, False, False]
    ss = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    assert recall_at_precision(ys, ss, 0.995) == (0.5, 0.9)
    assert recall_at_precision(ys, ss, 0.75) == (1.0, 0.6)
    assert recall_at_precision(ys, ss, 0.8) == (1.0, 0.6)
    assert recall_at_precision(ys, ss, 0.81) == (0.5, 0.9)
    assert recall_at_precision([False] * 3, [0.1, 0.2, 0.3], 0.9) == (None, None)


def test_log_loss_matches_river() -> None:
    rng = random.Random(1)
    river_loss = river_metrics.LogLoss()
    q = RollingQuality(window=10_000)
    for _ in range(500):
        y = rng.random() < 0.4
        p = rng.random()
        river_loss.update(y, {True: p, False: 1 - p})
        q.update(y, p)
    assert q.report().log_loss == pytest.approx(river_loss.get(), rel=1e-6)


def test_binary_log_loss_is_clipped() -> None:
    assert binary_log_loss(True, 1.0) == pytest.approx(-math.log(1 - 1e-7))
    assert math.isfinite(binary_log_loss(False, 1.0))


def test_rolling_quality_keeps_only_the_window() -> None:
    q = RollingQuality(window=100, threshold=0.5)
    for _ in range(1000):  # a terrible history
        q.update(True, 0.1)
        q.update(False, 0.9)
    for i in range(100):  # a perfect window
        q.update(i % 2 == 0, 0.9 if i % 2 == 0 else 0.1)
    r = q.report()
    assert r.n == 100
    assert r.roc_auc == 1.0
    assert (r.accuracy, r.precision, r.recall) == (1.0, 1.0, 1.0)
    assert r.recall_at_precision == 1.0 and r.threshold_at_precision == 0.9


def test_rolling_quality_metrics_at_the_threshold_with_weights() -> None:
    q = RollingQuality(window=10, threshold=0.5)
    q.update(True, 0.7, weight=3.0)  # tp 3
    q.update(False, 0.6)  # fp 1
    q.update(True, 0.2)  # fn 1
    q.update(False, 0.1, weight=5.0)  # tn 5
    r = q.report()
    assert r.accuracy == pytest.approx(8 / 10)
    assert r.precision == pytest.approx(3 / 4)
    assert r.recall == pytest.approx(3 / 4)
    assert r.roc_auc == pytest.approx(
        _auc_pairs([True, False, True, False], [0.7, 0.6, 0.2, 0.1], [3.0, 1.0, 1.0, 5.0])
    )


def test_rolling_quality_undefined_metrics_are_none() -> None:
    q = RollingQuality(window=10)
    assert q.report().roc_auc is None and q.report().n == 0
    q.update(False, 0.1)
    r = q.report()
    assert r.roc_auc is None and r.precision is None and r.recall is None
    assert r.recall_at_precision is None and r.accuracy == 1.0


def test_rolling_quality_exposes_the_evicted_item() -> None:
    q = RollingQuality(window=2)
    q.update(True, 0.1)
    assert not q.full
    q.update(False, 0.2)
    assert q.full and q.oldest == (True, 0.1, 1.0)


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"precision_target": 0.0}])
def test_rolling_quality_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RollingQuality(**kwargs)
