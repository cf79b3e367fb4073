"""The chaos suite in process: random mixtures of valid, hostile and extreme records
through the backtest (the worker's Processor on the in-memory store).

Invariants, for every generated stream: every valid event gets exactly one
prediction with a finite score in [0, 1]; every invalid record exactly one dead
letter, within the dead-letter size bound; no record gets both or neither; the
model and every monitor statistic stay finite; the pending labels stay within
their bound.
"""

from __future__ import annotations

import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings
from tests.chaos import (
    KINDS,
    Case,
    Outcome,
    check_invariants,
    lines,
    non_finite,
    random_stream,
    render,
)

#: Generated cases: the hypothesis examples below plus the fixed seeds.
EXAMPLES = 60
SEEDS = range(5)
STREAM_SIZE = 400


def test_non_finite_finds_a_nan_weight_of_a_river_model():
    from streamlearn.learners.models import build_model

    model = build_model("logistic")
    model.learn_one({"x": 1.0}, True)
    assert non_finite(model) == []
    model["LogisticRegression"]._weights["x"] = float("nan")
    assert non_finite(model) == ["model.steps['LogisticRegression']._weights['x']"]


def run_backtest(cases: list[Case], config: Settings) -> tuple[Outcome, Any]:
    """The backtest over ``cases``; dead letters are mapped back to their line."""
    with TemporaryDirectory() as folder:
        path = Path(folder) / "chaos.jsonl"
        path.write_bytes(b"\n".join(lines(cases)) + b"\n")
        predictions_file = Path(folder) / "predictions.jsonl"
        letters_file = Path(folder) / "dead.jsonl"
        with predictions_file.open("wb") as predictions, letters_file.open("wb") as letters:
            result = backtest(
                path, config, predictions=predictions, dead_letters=letters, batch_size=37
            )
        scored = [orjson.loads(line) for line in predictions_file.read_bytes().splitlines()]
        letters_raw = letters_file.read_bytes().splitlines()
    dead = [orjson.loads(raw)["offset"] for raw in letters_raw]
    outcome = Outcome(
        [(p["event_id"], p["score"]) for p in scored],
        dead,
        [len(raw) for raw in letters_raw],
    )
    return outcome, result


def check_run(cases: list[Case]) -> None:
    config = Settings(store={"pending_max": 50})
    outcome, result = run_backtest(cases, config)
    check_invariants(cases, outcome, max_dead_letter=config.kafka.dead_letter_max_bytes)
    slot = result.slots[0]
    assert non_finite(slot.model) == [], "the model holds non-finite numbers"
    assert slot.monitor is not None
    snapshot = slot.monitor.snapshot(refresh=True)
    assert non_finite(snapshot, "monitor") == [], "a monitor statistic is not finite"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 2**32 - 1)), max_size=80))
def test_random_mixtures_of_hostile_records_keep_every_invariant(pairs):
    check_run(render(pairs, now_ms=time.time_ns() // 1_000_000))


def test_long_hostile_streams_keep_every_invariant():
    now_ms = time.time_ns() // 1_000_000
    for seed in SEEDS:
        check_run(random_stream(seed, STREAM_SIZE, now_ms))
