"""``python -m bench.rollback`` in small: the rule rolls a poisoned model back after its
stretch (weight 10 or plain flipped labels) and helps it, and leaves a clean stream and a
genuine concept change alone."""

from __future__ import annotations

from bench import rollback
from streamlearn.learners.rollback import RollbackConfig

CONFIG = RollbackConfig(min_labels=500, min_labels_after_rollback=500)


def test_a_poisoned_model_is_rolled_back_a_clean_or_changed_one_is_not() -> None:
    poisoned, flipped, clean, changed = (
        rollback.run_one(scenario, 7, 10_000, CONFIG, 1000)
        for scenario in (
            rollback.Scenario("flip w10 x300", 300, 10.0),
            rollback.Scenario("flip w1 x1500", 1500),
            rollback.Scenario("clean"),
            rollback.Scenario("concept change", None),
        )
    )
    assert poisoned.right and not poisoned.false, poisoned
    assert poisoned.delay_labels is not None and poisoned.delay_labels < 2000, poisoned
    assert poisoned.log_loss_live < poisoned.log_loss_plain, poisoned
    # the copy's scaling follows the inputs, so it is still better than a model that
    # learned 1,500 flipped labels once they are over
    assert flipped.right and not flipped.false, flipped
    assert flipped.delay_labels is not None and flipped.delay_labels < 2000, flipped
    assert flipped.log_loss_live < flipped.log_loss_plain, flipped
    assert clean.rollbacks == [] and clean.log_loss_live == clean.log_loss_plain
    assert changed.rollbacks == [] and not changed.false
    rows = rollback._summary([poisoned, flipped, clean, changed])
    assert [r["right"] for r in rows] == [1, 1, 0, 0]
    assert [r["false"] for r in rows] == [0, 0, 0, 0]
    text = rollback._markdown(rows, {"seeds": 1, "events": 10_000, "min_labels": 500,
                                     "refresh_every": 1000, "drop": 0.05})  # fmt: skip
    assert "| flip w10 x300 | 1 | 1 | 1 | 0 |" in text
