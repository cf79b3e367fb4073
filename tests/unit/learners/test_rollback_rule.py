"""The rollback rule: a degraded live model goes back, a healthy or adapting one does not,
no rollback loop, and a refreshed copy starts the comparison again."""

from __future__ import annotations

import json

import numpy as np

from streamlearn.learners.rollback import RollbackConfig, RollbackRule

CONFIG = RollbackConfig(min_labels=1000, min_labels_after_rollback=3000)


def _scores(rng: np.random.Generator, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels at about 5 % positive, and a model's scores with ``noise`` on the true logit."""
    logit = np.log(0.05 / 0.95) + rng.normal(0.0, 1.0, n)
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return y, logit


def _feed(rule: RollbackRule, rng: np.random.Generator, n: int, live: float, copy: float) -> None:
    y, logit = _scores(rng, n, 0.0)
    live_scores = 1 / (1 + np.exp(-(logit + rng.normal(0.0, live, n))))
    copy_scores = 1 / (1 + np.exp(-(logit + rng.normal(0.0, copy, n))))
    for yi, li, ci in zip(y, live_scores, copy_scores, strict=True):
        rule.observe_label(bool(yi), float(li), float(ci))


def _first_rollback(rule: RollbackRule, seed: int, live: float, copy: float, batches: int) -> int:
    rng = np.random.default_rng(seed)
    for batch in range(1, batches + 1):
        _feed(rule, rng, 500, live, copy)
        if rule.decide(at=float(batch), event_index=batch * 500).action == "rollback":
            return batch * 500
    return -1


def test_a_poisoned_model_is_rolled_back_a_healthy_one_is_not() -> None:
    """30 seeds each: a live model 10 % worse in log loss (noise 0.98 against 0.5 on the
    logit) is rolled back in every one within 20,000 labels, half of them within 8,000;
    an equally good one (same noise) in at most 3 (α = 5 %)."""
    poisoned = [_first_rollback(RollbackRule(CONFIG), s, 0.98, 0.5, 40) for s in range(30)]
    healthy = [_first_rollback(RollbackRule(CONFIG), s, 0.5, 0.5, 40) for s in range(30)]
    assert all(x > 0 for x in poisoned), poisoned
    assert sorted(poisoned)[15] <= 8000, poisoned
    assert sum(x > 0 for x in healthy) <= 3, healthy


def test_a_model_better_than_its_copy_after_a_concept_change_stays() -> None:
    """The frozen copy meets the new concept too: the learning model, better there, stays."""
    rule = RollbackRule(CONFIG)
    assert _first_rollback(rule, 7, live=0.3, copy=2.0, batches=40) == -1
    assert rule.refresh_allowed


def test_the_decision_carries_its_evidence() -> None:
    rule = RollbackRule(CONFIG)
    at = _first_rollback(rule, 3, 2.0, 0.5, 40)
    assert at > 0
    decision = rule.decisions[-1]
    record = json.loads(json.dumps(decision.to_dict()))
    assert record["action"] == "rollback" and record["arm"] == "last_known_good"
    assert record["p_value"] <= 0.05 and record["interval"][0] > 0
    assert record["primary"]["champion"] > 1.05 * record["primary"]["last_known_good"]
    assert record["counts"]["champion"]["labels"] == at
    assert record["event_index"] == at and "significantly worse" in record["reason"]


def test_hysteresis_the_restored_version_is_judged_before_another_rollback() -> None:
    rule = RollbackRule(CONFIG)
    rng = np.random.default_rng(11)
    assert _first_rollback(rule, 11, 2.0, 0.5, 40) > 0
    # the restored version still looks bad at once (say its copy is far better): no
    # rollback before it has collected its minimum sample
    decisions = []
    for _ in range(5):
        _feed(rule, rng, 500, 2.0, 0.5)
        decisions.append(rule.decide().action)
    assert decisions == ["continue"] * 5
    assert rule.labels_since_rollback == 2500
    _feed(rule, rng, 500, 2.0, 0.5)
    assert rule.decide().action == "rollback"
    assert rule.rollbacks == 2


def test_a_refresh_starts_the_comparison_again() -> None:
    rule = RollbackRule(CONFIG)
    rng = np.random.default_rng(5)
    _feed(rule, rng, 900, 2.0, 0.5)
    assert rule.labels == 900
    rule.refresh()
    assert rule.labels == 0 and not rule.refresh_allowed
    _feed(rule, rng, 500, 2.0, 0.5)
    assert rule.decide().reason == "500 labels, 1000 needed"


def test_a_worse_live_model_may_not_refresh_its_copy() -> None:
    rule = RollbackRule(RollbackConfig(min_labels=1000, drop=0.5))
    _feed(rule, np.random.default_rng(2), 2000, 0.8, 0.5)
    assert rule.decide().action == "continue"  # worse, but within the 50 % limit
    assert not rule.refresh_allowed


def test_the_state_round_trips_and_decides_the_same() -> None:
    rule = RollbackRule(CONFIG)
    rng = np.random.default_rng(9)
    _feed(rule, rng, 1200, 0.9, 0.5)
    rule.decide()
    again = RollbackRule.from_dict(json.loads(json.dumps(rule.to_dict())))
    assert again.to_dict() == rule.to_dict()
    for seed in range(10):
        for target in (rule, again):
            _feed(target, np.random.default_rng(100 + seed), 500, 1.2, 0.5)
        assert again.decide() == rule.decide()
    assert again.to_dict() == rule.to_dict()


def test_brier_as_the_metric() -> None:
    rule = RollbackRule(RollbackConfig(metric="brier", min_labels=1000))
    assert _first_rollback(rule, 1, 2.5, 0.3, 40) > 0
