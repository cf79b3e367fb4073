"""The cluster-robust variance of an arm's mean, and what it does to A/A decisions."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import rollout_units
from streamlearn.learners.experiment import Experiment, ExperimentConfig
from streamlearn.metrics.clustered import ClusteredMoments, bucket_of
from streamlearn.metrics.sequential import Moments


@given(st.lists(st.floats(0, 7, allow_nan=False), min_size=2, max_size=200))
def test_without_units_the_variance_is_the_per_label_one(values: list[float]) -> None:
    clustered, plain = ClusteredMoments(buckets=8), Moments()
    for x in values:
        clustered.update(x)
        plain.update(x)
    assert clustered.n == plain.n
    assert math.isclose(clustered.mean, plain.mean, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(
        clustered.variance_of_mean, plain.variance_of_mean, rel_tol=1e-6, abs_tol=1e-12
    )


def test_labels_of_the_same_users_widen_the_variance_by_their_correlation() -> None:
    rng = random.Random(3)
    rates = {f"u{i}": rng.choice([0.0, 0.0, 0.0, 0.5]) for i in range(300)}
    clustered, plain = ClusteredMoments(), Moments()
    for _ in range(30_000):
        user = rng.choice(list(rates))
        x = float(rng.random() < rates[user])
        clustered.update(x, user)
        plain.update(x)
    # 100 labels per user: the design effect of users this different is large
    assert clustered.variance_of_mean > 10 * plain.variance_of_mean


def test_independent_units_give_about_the_per_label_variance() -> None:
    rng = random.Random(4)
    clustered, plain = ClusteredMoments(), Moments()
    for n in range(20_000):
        x = float(rng.random() < 0.1)
        clustered.update(x, f"user-{n}")
        plain.update(x)
    assert 0.8 < clustered.variance_of_mean / plain.variance_of_mean < 1.25


def test_a_unit_keeps_its_bucket_and_the_state_round_trips() -> None:
    m = ClusteredMoments(buckets=16)
    for n in range(100):
        m.update(n % 3, f"u{n % 7}")
    m.update(1.0)
    assert bucket_of("u1", 16) == bucket_of("u1", 16)
    again = ClusteredMoments.from_dict(m.to_dict())
    assert (again.n, again.mean, again.variance_of_mean) == (m.n, m.mean, m.variance_of_mean)
    with pytest.raises(ValueError, match="at least 2"):
        ClusteredMoments(buckets=1)


def test_the_experiment_counts_units_so_heavy_users_make_no_winner() -> None:
    """An A/A test whose labels come from a few users of very different rates: with the
    unit the experiment keeps waiting, without it declares a winner."""
    config = ExperimentConfig(
        id="aa-users",
        arms={"control": 0.5, "treatment": 0.5},
        min_labels_per_arm=500,
        guardrails={"error_ratio": None, "latency_p99_ratio": None, "positive_rate_shift": None},
    )
    decisions = {}
    for by_unit in (True, False):
        rng = random.Random(11)
        users = {f"u{i}": (rng.random() < 0.5, rng.choice([0.01, 0.02, 0.3])) for i in range(40)}
        experiment = Experiment(config)
        for _look in range(40):
            for _ in range(500):
                user = rng.choice(list(users))
                treated, rate = users[user]
                arm = "treatment" if treated else "control"
                unit = user if by_unit else None
                experiment.observe_label(arm, rng.random() < rate, 0.5, unit=unit)
            if experiment.decide().action != "continue":
                break
        decisions[by_unit] = experiment.status
    assert decisions == {True: "running", False: decisions[False]}
    assert decisions[False] != "running"


def test_in_a_small_study_only_the_per_unit_test_keeps_its_level() -> None:
    decided = rollout_units.runs(seeds=40, users=1000, horizon=60_000, batch=2000)
    per_label = float(decided["per-label variance"].mean())
    per_unit = float(decided["per-unit variance"].mean())
    assert per_unit <= 0.1
    assert per_label >= 0.3
