"""Stable arm assignment: same unit, same arm, in every process; shares honoured."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from streamlearn.learners.assignment import Assignment, unit_fraction

ROOT = Path(__file__).resolve().parents[3]
UNITS = [f"user-{i}" for i in range(100_000)]


@pytest.mark.parametrize("shares", [{"a": 0.9, "b": 0.1}, {"a": 0.5, "b": 0.3, "c": 0.2}])
def test_shares_are_honoured_on_100k_units(shares: dict[str, float]) -> None:
    assign = Assignment("exp-shares", shares)
    counts = Counter(assign.arm_of(unit) for unit in UNITS)
    for arm, share in shares.items():
        # binomial standard deviation at 100k is at most 0.0016: 4 of them
        assert abs(counts[arm] / len(UNITS) - share) < 0.0064, (arm, counts)


def test_same_unit_same_arm_in_another_process_with_another_hash_seed() -> None:
    assign = Assignment("exp-stable", {"champion": 0.9, "challenger": 0.1})
    here = [assign.arm_of(unit) for unit in UNITS[:2000]]
    code = (
        "from learners.assignment import Assignment\n"
        "a = Assignment('exp-stable', {'champion': 0.9, 'challenger': 0.1})\n"
        "print(','.join(a.arm_of(f'user-{i}') for i in range(2000)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    out = subprocess.run(  # noqa: S603 - our own interpreter on our own code
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().split(",") == here


def test_a_pinned_value_guards_against_a_changed_hash() -> None:
    """Changing the hash would move every user to another arm mid-experiment."""
    assert unit_fraction("exp-1", "user-42") == 0.7057672295842532


def test_another_experiment_id_reshuffles_the_units() -> None:
    first = Assignment("exp-1", {"a": 0.5, "b": 0.5})
    second = Assignment("exp-2", {"a": 0.5, "b": 0.5})
    same = sum(first.arm_of(u) == second.arm_of(u) for u in UNITS[:20_000])
    assert 0.47 < same / 20_000 < 0.53  # independent: agree half the time


def test_a_treatment_grown_from_10_to_20_percent_keeps_its_first_units() -> None:
    small = Assignment("exp", {"treatment": 0.1, "control": 0.9})
    large = Assignment("exp", {"treatment": 0.2, "control": 0.8})
    assert all(
        large.arm_of(u) == "treatment" for u in UNITS[:20_000] if small.arm_of(u) == "treatment"
    )


def test_events_by_field_object_or_context() -> None:
    assign = Assignment("exp", {"a": 0.5, "b": 0.5})

    class Event:
        user_id = "user-7"
        context: dict[str, str] = {}

    assert assign.arm_for(Event()) == assign.arm_of("user-7")
    assert assign.arm_for({"user_id": "user-7"}) == assign.arm_of("user-7")
    assert Assignment("exp", {"a": 0.5, "b": 0.5}, "device").arm_for(
        {"user_id": "u", "context": {"device": "ios"}}
    ) == assign.arm_of("ios")


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({}, "at least one arm"),
        ({"a": 0.9}, "sum to 1"),
        ({"a": 1.2, "b": -0.2}, r"in \[0, 1\]"),
    ],
)
def test_bad_shares_are_refused(shares: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Assignment("exp", shares)
