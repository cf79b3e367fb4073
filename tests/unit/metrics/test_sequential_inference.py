"""Always-valid inference: the formulas, the state, and a small A/A study that can fail."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlearn.metrics.sequential import (
    AlwaysValid,
    Moments,
    PairedRelativeDrop,
    SequentialDifference,
    confidence_radius,
    msprt_log_ratio,
    msprt_p_value,
    naive_z_p_value,
)

values = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=0, max_size=40)


@given(values, values)
def test_moments_match_numpy_and_merge_in_any_split(left: list[float], right: list[float]) -> None:
    whole = Moments()
    for x in left + right:
        whole.update(x)
    a, b = Moments(), Moments()
    for x in left:
        a.update(x)
    for x in right:
        b.update(x)
    a.merge(b)
    assert a.n == whole.n == len(left) + len(right)
    if whole.n:
        assert a.mean == pytest.approx(np.mean(left + right), abs=1e-6)
        assert whole.mean == pytest.approx(np.mean(left + right), abs=1e-6)
    if whole.n > 1:
        expected = float(np.var(left + right, ddof=1))
        assert whole.variance == pytest.approx(expected, rel=1e-6, abs=1e-6)
        assert a.variance == pytest.approx(expected, rel=1e-6, abs=1e-6)
    sums = Moments.of_sums(len(left), math.fsum(left), math.fsum(x * x for x in left))
    if left:
        assert sums.mean == pytest.approx(np.mean(left), abs=1e-6)


def test_the_radius_is_where_the_p_value_crosses_alpha() -> None:
    for variance, tau in ((1e-4, 0.01), (2.5e-6, 0.005), (0.3, 1.0)):
        radius = confidence_radius(variance, tau, 0.05)
        assert msprt_p_value(radius, variance, tau) == pytest.approx(0.05, rel=1e-9)
        assert msprt_p_value(0.99 * radius, variance, tau) > 0.05
    assert msprt_log_ratio(1.0, 0.0, 0.1) == 0.0
    assert msprt_p_value(1.0, -1.0, 0.1) == 1.0


def test_array_and_scalar_forms_agree() -> None:
    estimates = np.array([0.0, 0.01, -0.03])
    variances = np.array([1e-4, 2e-5, 3e-4])
    taus = np.array([0.01, 0.02, 0.005])
    p = msprt_p_value(estimates, variances, taus)
    r = confidence_radius(variances, taus, 0.05)
    z = naive_z_p_value(estimates, variances)
    for i in range(3):
        assert p[i] == pytest.approx(
            msprt_p_value(float(estimates[i]), float(variances[i]), float(taus[i]))
        )
        assert r[i] == pytest.approx(confidence_radius(float(variances[i]), float(taus[i]), 0.05))
        assert z[i] == pytest.approx(naive_z_p_value(float(estimates[i]), float(variances[i])))


def test_running_p_value_and_interval_never_give_back_evidence() -> None:
    rng = random.Random(3)
    evidence = AlwaysValid(tau=0.05)
    last_p, last = 1.0, (-math.inf, math.inf)
    for _ in range(300):
        evidence.update(rng.gauss(0.02, 0.02), rng.uniform(1e-5, 1e-3))
        assert evidence.p_value <= last_p
        assert evidence.lower >= last[0] and evidence.upper <= last[1]
        last_p, last = evidence.p_value, evidence.interval
    evidence.update(math.nan, 1e-4)  # ignored
    evidence.update(0.1, 0.0)
    assert evidence.p_value == last_p


@pytest.mark.parametrize(("tau", "alpha"), [(0.0, 0.05), (0.1, 0.0), (0.1, 1.0)])
def test_bad_parameters_are_refused(tau: float, alpha: float) -> None:
    with pytest.raises(ValueError, match="tau|alpha"):
        AlwaysValid(tau, alpha)


def test_state_round_trips() -> None:
    test = SequentialDifference(tau=0.01, ratio=0.95)
    drop = PairedRelativeDrop(drop=0.05, tau=0.01, higher_is_better=True)
    for i in range(500):
        test.update_control(float(i % 7 == 0))
        test.update_treatment(float(i % 5 == 0))
        drop.update(float(i % 3 == 0), float(i % 2 == 0))
    again = SequentialDifference.from_dict(test.to_dict())
    assert again.to_dict() == test.to_dict()
    assert (again.p_value, again.interval, again.counts) == (
        test.p_value,
        test.interval,
        test.counts,
    )
    assert PairedRelativeDrop.from_dict(drop.to_dict()).to_dict() == drop.to_dict()


def test_a_higher_is_better_drop_is_one_sided() -> None:
    worse = PairedRelativeDrop(drop=0.05, tau=0.02, higher_is_better=True)
    better = PairedRelativeDrop(drop=0.05, tau=0.02, higher_is_better=True)
    for i in range(4000):
        reference = float(i % 4 == 0)  # 25 %
        worse.update(float(i % 5 == 0), reference)  # 20 %: 20 % lower
        better.update(float(i % 3 == 0), reference)  # 33 %: higher
    assert worse.detected and worse.relative_change == pytest.approx(-0.2)
    assert not better.detected


def _study(seeds: int, effect: float, looks: int, batch: int) -> tuple[list[int], list[int]]:
    """Per seed, the label count of the first decision (-1: none) of the sequential test
    and of a naive z-test repeated at every look, on the same draws: 50/50 split, base
    rate 10 %, a look after every ``batch`` labels."""
    sequential, naive = [], []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        test = SequentialDifference(tau=0.01, alpha=0.05)
        first_seq = first_naive = -1
        for look in range(1, looks + 1):
            n_t = int(rng.binomial(batch, 0.5))
            hits_c = int(rng.binomial(batch - n_t, 0.10))
            hits_t = int(rng.binomial(n_t, 0.10 * (1 + effect)))
            test.update_many(
                Moments.of_sums(batch - n_t, hits_c, hits_c), Moments.of_sums(n_t, hits_t, hits_t)
            )
            if first_seq < 0 and test.significant:
                first_seq = look * batch
            if first_naive < 0 and naive_z_p_value(test.estimate, test.variance) <= 0.05:
                first_naive = look * batch
        sequential.append(first_seq)
        naive.append(first_naive)
    return sequential, naive


def test_small_aa_study_sequential_holds_its_level_where_the_naive_test_does_not() -> None:
    """60 A/A runs looked at 200 times: the always-valid test decides falsely in at most
    5 of them (its level is 5 %, 3 expected at most), the repeated z-test in far more."""
    sequential, naive = _study(seeds=60, effect=0.0, looks=200, batch=500)
    false_sequential = sum(x >= 0 for x in sequential)
    false_naive = sum(x >= 0 for x in naive)
    assert false_sequential <= 5, false_sequential
    assert false_naive >= 12, false_naive
    assert false_naive > 3 * max(1, false_sequential)


def test_small_study_a_20_percent_effect_is_found_within_100k_labels() -> None:
    sequential, _ = _study(seeds=20, effect=0.2, looks=200, batch=500)
    found = sorted(x for x in sequential if x >= 0)
    assert len(found) >= 19, sequential
    assert found[len(found) // 2] <= 25_000, found
