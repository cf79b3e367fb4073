"""Decision policies: the precision constraint holds per window, budgets and holdouts."""

from __future__ import annotations

import numpy as np
import pytest

from streamlearn.learners.decision_policy import (
    DecisionConfig,
    FixedThreshold,
    PrecisionAtLeast,
    TopFraction,
    build_policy,
    threshold_for_precision,
    wilson_lower_bound,
)
from streamlearn.learners.holdout import Decider, Holdout


def _stream(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """20 % positives; positives' scores Beta(8, 2), negatives' Beta(2, 8)."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.2
    return np.where(y, rng.beta(8, 2, n), rng.beta(2, 8, n)), y


def _run(policy: PrecisionAtLeast, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    decided = np.zeros(s.size, dtype=bool)
    for i in range(s.size):
        decided[i] = policy.decide(float(s[i]))
        policy.observe_label(float(s[i]), bool(y[i]))
    return decided


@pytest.mark.parametrize("seed", range(12))
def test_precision_at_least_holds_in_every_window_after_warm_up(seed):
    s, y = _stream(seed, 60_000)
    policy = PrecisionAtLeast(0.995)  # windows of 10,000 events decide about 1,500
    decided = _run(policy, s, y)
    warm_up, window = 5_000, 10_000
    precisions = []
    for start in range(warm_up, s.size - window + 1, window):  # whole windows
        d, t = decided[start : start + window], y[start : start + window]
        assert d.sum() > 0, "the policy decides something after warm-up"
        precisions.append((d & t).sum() / d.sum())
    assert min(precisions) >= 0.995, precisions
    # It buys real recall: most of what the best fixed threshold in hindsight gets.
    recall = (decided[warm_up:] & y[warm_up:]).sum() / y[warm_up:].sum()
    order = np.argsort(-s)
    tp = np.cumsum(y[order])
    best = tp[np.flatnonzero(tp / np.arange(1, s.size + 1) >= 0.995)[-1]] / y.sum()
    assert recall >= 0.6 * best, (recall, best)


def test_before_enough_labels_nothing_is_decided_positive():
    policy = PrecisionAtLeast(0.9, min_labels=100, update_every=10)
    for _ in range(50):
        policy.observe_label(0.99, True)
        assert not policy.decide(0.999)
    assert policy.threshold == 1.0


def test_no_qualifying_threshold_falls_back_to_nothing():
    s = np.linspace(0, 1, 1000)
    y = np.arange(1000) % 2 == 0  # precision 0.5 everywhere
    assert threshold_for_precision(s, y, np.ones(1000), 0.9, 2.33, 10)[0] == 1.0


def test_inverse_propensity_weights_widen_the_bound():
    s = np.linspace(1, 0.5, 400)
    y = np.ones(400, dtype=bool)
    y[::50] = False
    unweighted = threshold_for_precision(s, y, np.ones(400), 0.9, 1.645, 10)[1]
    w = np.where(np.arange(400) % 2 == 0, 50.0, 1.0)
    weighted = threshold_for_precision(s, y, w, 0.9, 1.645, 10)[1]
    assert weighted < unweighted


def test_wilson_lower_bound_is_below_the_estimate_and_grows_with_n():
    assert wilson_lower_bound(99, 100, 1.96) < 0.99
    assert wilson_lower_bound(990, 1000, 1.96) > wilson_lower_bound(99, 100, 1.96)


def test_top_fraction_decides_about_its_budget():
    rng = np.random.default_rng(0)
    policy = TopFraction(0.05, min_labels=500, update_every=100)
    decided = [policy.decide(float(x)) for x in rng.random(20_000)]
    assert abs(np.mean(decided[2000:]) - 0.05) < 0.01


def test_fixed_reports_what_its_threshold_buys():
    policy = FixedThreshold(0.5)
    for i in range(1000):
        policy.observe_label(i / 1000, i >= 500)
    assert policy.recall == pytest.approx(1.0, abs=0.01)
    assert policy.precision_lower_bound > 0.98
    assert policy.decide(0.6) and not policy.decide(0.5)


def test_build_policy_follows_the_config():
    assert build_policy(DecisionConfig(policy="fixed"), 0.3).threshold == 0.3
    assert build_policy(DecisionConfig(policy="precision_at_least")).name == "precision_at_least"


def test_the_default_objective_is_precision_at_least_with_its_safe_fallback():
    policy = build_policy(DecisionConfig(), 0.3)
    assert isinstance(policy, PrecisionAtLeast)
    assert (policy.target, policy.min_labels) == (0.995, 500)
    # Before min_labels labels nothing is decided positive, whatever model.threshold says.
    for _ in range(499):
        policy.observe_label(0.99, True)
    policy.refit()
    assert policy.threshold == 1.0 and not policy.decide(0.999)


def test_the_holdout_bypasses_the_decision_with_its_propensity():
    decider = Decider(FixedThreshold(0.5), Holdout(0.02), propensity_weighting=True)
    given = [decider.decide(0.9, {"user_id": f"u{i}"}) for i in range(10_000)]
    held = [g for g in given if g.holdout]
    assert 0.01 < len(held) / len(given) < 0.03
    assert all(not g.decision and g.propensity == 0.02 for g in held)
    assert all(g.decision and g.propensity == 0.98 for g in given if not g.holdout)
    assert decider.learning_weight(1.0, 0.02) == pytest.approx(50.0)
    # the same units every time (a stable hash), and off by default
    assert given == [decider.decide(0.9, {"user_id": f"u{i}"}) for i in range(10_000)]
    assert not Decider(FixedThreshold(0.5)).decide(0.9, {"user_id": "u1"}).holdout
