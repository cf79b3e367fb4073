"""The rollback rule judges the recent past, never takes a poisoned copy, and never
rolls back to a copy that has learned nothing."""

from __future__ import annotations

import numpy as np

from streamlearn.learners.rollback import RollbackConfig, RollbackRule
from streamlearn.metrics.restarting import RestartingDrop
from streamlearn.metrics.sequential import PairedRelativeDrop
from streamlearn.stream.experiment_run import RollbackRun
from streamlearn.stream.model_guard import ModelSlot
from tests.unit.stream.factories import Constant


def _losses(rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
    return rng.gamma(2.0, mean / 2.0, n)


def test_a_good_stretch_does_not_dilute_the_drop_that_follows() -> None:
    """6,000 labels on which the candidate is 40 % better (it learned flipped labels),
    then 1,500 on which it is 30 % worse: the cumulative test sees nothing, the
    restarting one sees the drop."""
    rng = np.random.default_rng(3)
    cumulative = PairedRelativeDrop(drop=0.05, tau=0.025)
    recent = RestartingDrop(drop=0.05, min_n=500)
    for n, factor in ((6000, 0.6), (1500, 1.3)):
        for _ in range(n // 100):
            ref = _losses(rng, 100, 0.5)
            live = ref * factor * rng.uniform(0.9, 1.1, 100)
            for a, b in zip(live, ref, strict=True):
                cumulative.update(float(a), float(b), look=False)
                recent.update(float(a), float(b))
            cumulative.look()
            state = recent.look()
            if state == "detected":
                break
    assert not cumulative.detected
    assert state == "detected" and recent.restarts >= 59


def test_no_false_alarm_on_equal_models_over_a_long_stream() -> None:
    """Equal losses for 100,000 pairs, looked at every 100: no alarm (its average run
    length at the null's boundary is at least min_n / alpha = 10,000 pairs; equal models
    are well inside the null)."""
    rng = np.random.default_rng(8)
    detector = RestartingDrop(drop=0.05, min_n=500)
    for _ in range(1000):
        ref = _losses(rng, 100, 0.5)
        for a, b in zip(_losses(rng, 100, 0.5), ref, strict=True):
            detector.update(float(a), float(b))
        assert detector.look() != "detected"


def _run(min_labels: int = 100, refresh_every: int = 500) -> tuple[RollbackRun, list[ModelSlot]]:
    config = RollbackConfig(min_labels=min_labels, min_labels_after_rollback=min_labels)
    guard = RollbackRun(config, "live", refresh_every)
    live = ModelSlot("live", Constant(0.2))
    return guard, [live, guard.reference_slot(live)]


def _batch(guard: RollbackRun, slots: list[ModelSlot], n: int, rate: float, flip: bool = False):
    live, ref = slots
    p_live, p_ref = live.model.predict_proba_one({})[True], ref.model.predict_proba_one({})[True]
    decision = None
    for i in range(n):
        y = (i % round(1 / rate)) == 0
        guard.observe_label({"live": p_live, "last_known_good": p_ref}, y != flip)
        live.labels_learned += 1
    decision = guard.after_batch(slots, live.labels_learned)
    return decision


def test_a_copy_that_never_learned_is_no_known_good_version() -> None:
    """A fresh model broken from its first label: its copy follows it, nothing is
    decided until the copy has learned min_labels labels."""
    guard, slots = _run(min_labels=300)
    slots[0].model = Constant(0.95)
    decisions = [_batch(guard, slots, 50, 0.2) for _ in range(6)]
    assert decisions == [None] * 6
    assert slots[1].model.predict_proba_one({})[True] == 0.95  # the copy is the live model
    assert guard.rule.reference_labels == 300 and guard.refreshes == [300]


def test_flipped_labels_never_reach_the_copy() -> None:
    """While the labels' positive rate jumps (flipped), every candidate is dropped: the
    copy stays the version from before the stretch, whatever the live model does; a
    rate that stays elsewhere for 5 × refresh_every labels is the world's new one."""
    guard, slots = _run(min_labels=100, refresh_every=500)
    for _ in range(20):  # 2,000 steady labels: the copy is refreshed with candidates
        _batch(guard, slots, 100, 0.2)
    refreshed = list(guard.refreshes)
    assert len(refreshed) >= 3
    good = slots[1].model
    slots[0].model = Constant(0.8)  # it learns the flipped labels
    for _ in range(24):
        assert _batch(guard, slots, 100, 0.2, flip=True) is None  # better on them
        assert slots[1].model is good
    assert guard.refreshes == refreshed and guard.candidates == []
    for _ in range(12):
        _batch(guard, slots, 100, 0.2, flip=True)
    assert guard.candidates and len(guard.refreshes) > len(refreshed)


def test_the_rule_state_keeps_the_span_and_the_labels_history() -> None:
    rule = RollbackRule(RollbackConfig(min_labels=100))
    for i in range(250):
        rule.observe_label(i % 5 == 0, 0.3, 0.2)
    rule.decide()
    again = RollbackRule.from_dict(rule.to_dict())
    assert again.to_dict() == rule.to_dict()
    assert again.observed == 250 and not again.refresh_allowed
