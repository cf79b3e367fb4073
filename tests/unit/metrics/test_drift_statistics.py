"""Drift statistics: PSI, KS, categorical shift and the windowed detectors."""

from __future__ import annotations

import math
import random
from bisect import bisect_right

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlearn.metrics.concept_drift import ConceptDrift
from streamlearn.metrics.drift_statistics import (
    OTHER,
    bin_counts,
    categorical_shift,
    ks_statistic,
    psi,
    quantile_edges,
)
from streamlearn.metrics.feature_drift import FeatureDrift
from streamlearn.metrics.prediction_drift import PredictionDrift

# ------------------------------------------------------------------------- psi


def test_psi_of_identical_distributions_is_zero() -> None:
    rng = random.Random(0)
    ref = [rng.gauss(0, 1) for _ in range(5000)]
    cur = [rng.gauss(0, 1) for _ in range(5000)]
    edges = quantile_edges(ref, 10)
    assert psi(bin_counts(ref, edges), bin_counts(ref, edges)) == 0.0
    assert psi(bin_counts(ref, edges), bin_counts(cur, edges)) < 0.02


def test_psi_of_a_shifted_distribution_is_major() -> None:
    rng = random.Random(1)
    ref = [rng.gauss(0, 1) for _ in range(5000)]
    cur = [rng.gauss(1, 1) for _ in range(5000)]
    edges = quantile_edges(ref, 10)
    assert psi(bin_counts(ref, edges), bin_counts(cur, edges)) > 0.25


def test_psi_matches_its_formula() -> None:
    ref, cur = [10, 30, 60], [20, 30, 50]
    p = [0.1, 0.3, 0.6]
    q = [0.2, 0.3, 0.5]
    expected = sum((b - a) * math.log(b / a) for a, b in zip(p, q, strict=True))
    assert psi(ref, cur) == pytest.approx(expected)


def test_psi_floors_empty_bins() -> None:
    assert math.isfinite(psi([10, 0], [5, 5]))
    assert psi([10, 0], [5, 5]) == psi([10, 0], [5, 5], eps=1e-4)


@pytest.mark.parametrize(("ref", "cur"), [([1, 2], [1, 2, 3]), ([0, 0], [1, 1]), ([1], [0])])
def test_psi_rejects_bad_histograms(ref: list[int], cur: list[int]) -> None:
    with pytest.raises(ValueError):
        psi(ref, cur)


@given(
    st.lists(st.integers(0, 100), min_size=2, max_size=12).flatmap(
        lambda r: st.tuples(
            st.just(r), st.lists(st.integers(0, 100), min_size=len(r), max_size=len(r))
        )
    )
)
def test_psi_is_non_negative_and_symmetric(pair: tuple[list[int], list[int]]) -> None:
    ref, cur = pair
    if sum(ref) == 0 or sum(cur) == 0:
        return
    assert psi(ref, cur) >= -1e-12
    assert psi(ref, cur) == pytest.approx(psi(cur, ref))


def test_quantile_edges_split_the_reference_evenly() -> None:
    values = list(range(1000))
    edges = quantile_edges(values, 10)
    assert len(edges) == 9
    assert bin_counts(values, edges) == [100] * 10


def test_quantile_edges_merge_ties() -> None:
    edges = quantile_edges([0.0] * 90 + [1.0] * 10, 10)
    assert edges == [0.0, 1.0]
    assert bin_counts([0.0] * 90 + [1.0] * 10, edges) == [0, 90, 10]


# -------------------------------------------------------------------------- ks


def test_ks_equals_a_hand_computation() -> None:
    # F_a steps at 1, 2, 3, 4 by 1/4; F_b at 2, 2, 5 by 1/3.
    # x=1: 1/4 - 0 = .25; x=2: 2/4 - 2/3 = -1/6; x=3: 3/4 - 2/3; x=4: 1 - 2/3 = 1/3; x=5: 0.
    assert ks_statistic([4, 1, 3, 2], [2, 5, 2]) == pytest.approx(1 / 3)


def _ks_brute(a: list[float], b: list[float]) -> float:
    return max(
        abs(sum(v <= x for v in a) / len(a) - sum(v <= x for v in b) / len(b)) for x in a + b
    )


@given(
    st.lists(st.integers(0, 8), min_size=1, max_size=30),
    st.lists(st.integers(0, 8), min_size=1, max_size=30),
)
def test_ks_matches_brute_force_with_ties(a: list[int], b: list[int]) -> None:
    assert ks_statistic(a, b) == pytest.approx(_ks_brute(a, b))


def test_ks_rejects_empty_samples() -> None:
    with pytest.raises(ValueError):
        ks_statistic([], [1.0])


# ----------------------------------------------------------------- categorical


def test_categorical_shift_of_same_proportions_is_zero() -> None:
    shift = categorical_shift({"fr": 30, "de": 70}, {"de": 7, "fr": 3})
    assert shift.psi == pytest.approx(0.0)
    assert shift.tvd == pytest.approx(0.0)


def test_categorical_shift_pools_unseen_categories() -> None:
    shift = categorical_shift({"fr": 50, "de": 50}, {"fr": 50, "it": 25, "es": 25})
    # bins fr, de, other: p = (.5, .5, eps), q = (.5, eps, .5)
    eps = 1e-4
    expected = (eps - 0.5) * math.log(eps / 0.5) + (0.5 - eps) * math.log(0.5 / eps)
    assert shift.psi == pytest.approx(expected)
    assert shift.tvd == pytest.approx(0.5)
    assert shift.psi > 0.25


def test_categorical_shift_other_key_in_reference_pools_with_unseen() -> None:
    shift = categorical_shift({"fr": 50, OTHER: 50}, {"fr": 50, "it": 50})
    assert shift.psi == pytest.approx(0.0)
    assert shift.tvd == pytest.approx(0.5)  # exact categories differ


# ------------------------------------------------------------ prediction drift


def _stream(n: int, rate: float, rng: random.Random) -> list[tuple[float, bool]]:
    out = []
    for _ in range(n):
        positive = rng.random() < rate
        score = min(1.0, max(0.0, rng.gauss(0.8 if positive else 0.2, 0.1)))
        out.append((score, score >= 0.5))
    return out


def test_prediction_drift_on_a_stationary_stream_never_crosses() -> None:
    rng = random.Random(2)
    drift = PredictionDrift(reference_size=1000, window_size=500)
    worst_psi = worst_ks = 0.0
    ratios = []
    for i, (score, decision) in enumerate(_stream(20_000, 0.05, rng)):
        drift.update(score, decision)
        if i % 50 == 0 and drift.psi is not None:
            report = drift.report()
            worst_psi = max(worst_psi, report.psi)
            worst_ks = max(worst_ks, report.ks)
            ratios.append(report.positive_rate_ratio)
    assert ratios
    assert worst_psi < 0.1
    assert worst_ks < 0.2
    assert all(1 / 3 <= r <= 3 for r in ratios)


def test_positive_rate_jump_crosses_right_after_it_and_not_before() -> None:
    rng = random.Random(3)
    jump = 5000
    events = _stream(jump, 0.05, rng) + _stream(2000, 0.80, rng)
    drift = PredictionDrift(reference_size=1000, window_size=500)
    first_cross = None
    for i, (score, decision) in enumerate(events):
        drift.update(score, decision)
        ratio = drift.positive_rate_ratio
        if ratio is not None and ratio > 3.0 and first_cross is None:
            first_cross = i
    assert first_cross is not None
    assert jump <= first_cross < jump + 100
    report = drift.report()
    assert report.positive_rate == pytest.approx(0.8, abs=0.06)
    assert report.reference_positive_rate == pytest.approx(0.05, abs=0.02)
    assert report.positive_rate_ratio > 10
    assert report.psi > 0.25 and report.ks > 0.2


def test_prediction_drift_needs_full_windows() -> None:
    drift = PredictionDrift(reference_size=10, window_size=5)
    for _ in range(14):
        drift.update(0.1, False)
    report = drift.report()
    assert (report.n_reference, report.n_current) == (10, 4)
    assert report.psi is None and report.positive_rate_ratio is None
    assert report.positive_rate == 0.0
    drift.update(0.1, False)
    assert drift.report().psi == pytest.approx(0.0)
    assert drift.positive_rate_ratio == 1.0  # no positives on either side


def test_first_n_reference_is_frozen_until_reset() -> None:
    drift = PredictionDrift(reference_size=10, window_size=10)
    for _ in range(10):
        drift.update(0.1, False)
    for _ in range(100):
        drift.update(0.9, True)
    assert drift.reference_positive_rate == 0.0
    drift.reset()
    for _ in range(20):
        drift.update(0.9, True)
    assert drift.reference_positive_rate == 1.0
    assert drift.psi == pytest.approx(0.0)


def test_trailing_reference_is_the_window_before_the_current_one() -> None:
    drift = PredictionDrift(reference_size=4, window_size=2, mode="trailing")
    for i in range(10):
        drift.update(i / 10, i % 2 == 0)
    report = drift.report()
    # current = items 8, 9; reference = items 4..7
    assert (report.n_reference, report.n_current) == (4, 2)
    assert report.positive_rate == 0.5
    assert report.reference_positive_rate == 0.5
    assert report.ks == 1.0  # every current score is above every reference score


def test_trailing_mode_adapts_to_a_permanent_shift() -> None:
    rng = random.Random(4)
    drift = PredictionDrift(reference_size=500, window_size=500, mode="trailing")
    for score, decision in _stream(3000, 0.05, rng) + _stream(3000, 0.5, rng):
        drift.update(score, decision)
    assert 1 / 3 <= drift.positive_rate_ratio <= 3


def test_report_is_recomputed_only_every_k_updates() -> None:
    drift = PredictionDrift(reference_size=10, window_size=10, every=5)
    for _ in range(20):
        drift.update(0.1, False)
    first = drift.report()
    for _ in range(4):
        drift.update(0.9, True)
    assert drift.report() is first
    assert drift.report(refresh=True).positive_rate == 0.4
    for _ in range(4):
        drift.update(0.9, True)
    assert drift.report().positive_rate == 0.4
    drift.update(0.9, True)
    assert drift.report().positive_rate == 0.9


def test_prediction_drift_memory_is_bounded() -> None:
    drift = PredictionDrift(reference_size=50, window_size=20, mode="trailing")
    for i in range(10_000):
        drift.update(i % 7 / 7, i % 3 == 0)
    report = drift.report()
    assert (report.n_reference, report.n_current) == (50, 20)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reference_size": 0},
        {"window_size": 0},
        {"mode": "sliding"},
        {"every": 0},
        {"window_size": 10, "min_current": 11},
    ],
)
def test_prediction_drift_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PredictionDrift(**kwargs)


# --------------------------------------------------------------- feature drift


def _batch_psi(reference: list[float], current: list[float], n_bins: int) -> float:
    edges = quantile_edges(reference, n_bins)
    return psi(bin_counts(reference, edges), bin_counts(current, edges))


@pytest.mark.parametrize("mode", ["first_n", "trailing"])
def test_feature_psi_equals_a_batch_computation(mode: str) -> None:
    rng = random.Random(5)
    fd = FeatureDrift(["x"], reference_size=200, window_size=100, mode=mode)  # type: ignore[arg-type]
    values = [rng.gauss(0, 1) for _ in range(700)] + [rng.gauss(2, 1) for _ in range(130)]
    for v in values:
        fd.update({"x": v})
    if mode == "first_n":
        reference, current = values[:200], values[-100:]
    else:
        reference, current = values[-300:-100], values[-100:]
    assert fd.report()["x"]["psi"] == pytest.approx(_batch_psi(reference, current, 10))


def test_feature_drift_incremental_bins_survive_reset() -> None:
    fd = FeatureDrift(["x"], reference_size=20, window_size=10)
    for i in range(50):
        fd.update({"x": float(i)})
    fd.reset()
    values = [float(i % 5) for i in range(30)]
    for v in values:
        fd.update({"x": v})
    assert fd.report()["x"]["psi"] == pytest.approx(_batch_psi(values[:20], values[-10:], 10))


def test_feature_drift_detects_numeric_and_categorical_shift() -> None:
    rng = random.Random(6)
    fd = FeatureDrift(["amount", "device"], reference_size=1000, window_size=500)
    for _ in range(1500):
        fd.update({"amount": rng.expovariate(1.0), "device": rng.choice(["ios", "android"])})
    stable = fd.report()
    assert stable["amount"]["psi"] < 0.1
    assert stable["device"]["psi"] < 0.1
    for _ in range(500):
        fd.update({"amount": rng.expovariate(0.2), "device": rng.choice(["web", "android"])})
    shifted = fd.report()
    assert shifted["amount"]["psi"] > 0.25
    assert shifted["device"]["kind"] == "categorical"
    assert shifted["device"]["psi"] > 0.25
    assert shifted["device"]["tvd"] == pytest.approx(0.5, abs=0.06)


def test_feature_drift_ignores_missing_and_unlisted_and_counts_bad_types() -> None:
    fd = FeatureDrift(["x"], reference_size=10, window_size=10)
    fd.update({"y": 1.0})
    fd.update({"x": None})
    fd.update({"x": 1.0})
    fd.update({"x": "oops"})
    report = fd.report()["x"]
    assert report["n_reference"] == 1
    assert report["skipped"] == 1


def test_feature_drift_pools_rare_categories() -> None:
    fd = FeatureDrift(["c"], reference_size=100, window_size=100, max_categories=2)
    for i in range(100):
        fd.update({"c": "a" if i < 50 else "b" if i < 80 else f"rare{i}"})
    for i in range(100):
        fd.update({"c": "a" if i < 50 else "b" if i < 80 else f"new{i}"})
    assert fd.report()["c"]["psi"] == pytest.approx(0.0)


def test_feature_drift_bounds_the_feature_list() -> None:
    with pytest.raises(ValueError, match="at most 32"):
        FeatureDrift([f"f{i}" for i in range(33)])
    with pytest.raises(ValueError, match="unique"):
        FeatureDrift(["a", "a"])


# --------------------------------------------------------------- concept drift


def _losses(n_before: int, n_after: int, seed: int) -> list[float]:
    """Log losses of a fixed model whose concept flips after ``n_before`` labels."""
    rng = random.Random(seed)
    out = []
    for i in range(n_before + n_after):
        y = rng.random() < 0.5
        p = min(0.99, max(0.01, rng.gauss(0.75, 0.1)))
        proba = p if y else 1 - p
        if i >= n_before:
            proba = 1 - proba
        out.append(-math.log(proba) if y else -math.log(1 - proba))
    return out


@pytest.mark.parametrize(
    ("detector", "params"),
    [("adwin", {}), ("page_hinkley", {"mode": "up", "threshold": 20.0})],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_concept_drift_detects_an_abrupt_shift_after_it(
    detector: str, params: dict, seed: int
) -> None:
    change = 3000
    cd = ConceptDrift(detector, params)
    hits = [i for i, loss in enumerate(_losses(change, 1000, seed)) if cd.update(loss, i * 1000)]
    assert hits, "no detection"
    assert all(h >= change - 50 for h in hits), hits
    first = next(h for h in hits if h >= change)
    assert first < change + 300
    assert cd.detections[0].event_time == hits[0] * 1000
    assert cd.n_detections == len(hits)


def test_concept_drift_on_a_stationary_stream_is_quiet() -> None:
    cd = ConceptDrift("adwin")
    hits = sum(cd.update(loss) for loss in _losses(10_000, 0, seed=7))
    assert hits <= 1


def test_concept_drift_keeps_a_bounded_list() -> None:
    cd = ConceptDrift("page_hinkley", {"min_instances": 1, "threshold": 0.5}, max_detections=3)
    for i in range(400):
        cd.update(float(i % 40 == 39) * 100.0)
    assert cd.n_detections > 3
    assert len(cd.detections) == 3


def test_concept_drift_rejects_unknown_detectors_and_params() -> None:
    with pytest.raises(ValueError, match="unknown detector"):
        ConceptDrift("kswin")
    with pytest.raises(ValueError, match="bad parameters"):
        ConceptDrift("adwin", {"nope": 1})


def test_bin_counts_puts_edges_in_the_upper_bin() -> None:
    edges = [1.0, 2.0]
    assert bin_counts([1.0, 2.0, 0.5], edges) == [1, 1, 1]
    assert [bisect_right(edges, x) for x in (0.0, 1.0, 1.5, 2.0, 3.0)] == [0, 1, 1, 2, 2]
