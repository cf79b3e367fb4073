"""One experiment decision for a group of workers, on the in-memory edge.

Workers share the experiment through a :class:`stream.experiment_sync.Board`; here an
in-memory one with the same compare-and-set as the Redis script. (Two worker processes
on the real stack: ``tests/integration/test_experiment_group.py``.)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from streamlearn.learners.experiment import Experiment, ExperimentConfig
from streamlearn.learners.experiment_group import fingerprint, merge_arms, snapshot
from streamlearn.stream.experiment_run import ExperimentRun
from streamlearn.stream.experiment_sync import ExperimentSync, GroupView, apply_command
from streamlearn.stream.worker import Worker
from tests.memory_edge import MemoryBroker, MemoryCheckpoints, MemoryRegistry
from tests.unit.stream.test_worker_arms import settings, worker_of
from tests.unit.stream.test_worker_loop import drain, world


class MemoryBoard:
    """A group's experiment in memory: the decision state with its ``seq``, the snapshots,
    and the audit log (newest last)."""

    def __init__(self) -> None:
        self.seq = 0
        self.state: dict[str, Any] | None = None
        self.parts: dict[str, dict[str, Any]] = {}
        self.audit: list[dict[str, Any]] = []

    def read(self) -> GroupView:
        state = copy.deepcopy(self.state)
        return self.seq, state, copy.deepcopy(self.parts)

    def publish(self, worker: str, part: Mapping[str, Any]) -> None:
        self.parts[worker] = orjson.loads(orjson.dumps(dict(part)))

    def record(self, seq: int, state: Mapping[str, Any], entry: Mapping[str, Any] | None) -> bool:
        if seq != self.seq:
            return False
        self.seq, self.state = seq + 1, orjson.loads(orjson.dumps(dict(state)))
        if entry is not None:
            self.audit.append(dict(entry))
        return True


class StaleBoard(MemoryBoard):
    """Reads what ``board`` held when it was made: a worker that looked at the same time."""

    def __init__(self, board: MemoryBoard) -> None:
        super().__init__()
        self.board, self.view = board, board.read()

    def read(self) -> GroupView:
        view, self.view = self.view, self.board.read()
        return view

    def publish(self, worker: str, part: Mapping[str, Any]) -> None:
        self.board.publish(worker, part)

    def record(self, seq: int, state: Mapping[str, Any], entry: Mapping[str, Any] | None) -> bool:
        return self.board.record(seq, state, entry)


BROKEN = {
    "arms": {"champion": 0.5, "challenger": 0.5},
    "models": {"challenger": "tests.unit.stream.factories:always_high"},
    # Only the broken arm (0.99 for every event) predicts positives at 0.95.
    "guardrails": {"min_predictions": 30, "latency_p99_ratio": None, "threshold": 0.95},
    "min_labels_per_arm": 1_000_000,
}


def grouped(worker: Worker, board: MemoryBoard) -> ExperimentSync:
    """Make ``worker`` share its experiment through ``board`` (as it does through Redis)."""
    run = worker.arms.experiment
    assert run is not None
    worker.arms.sync = ExperimentSync(board, run, worker.name, 0.0, worker.arms.versions)
    return worker.arms.sync


def broken_run(config: ExperimentConfig, predictions: int) -> ExperimentRun:
    """A run whose treatment predicted positive for every event and the control never."""
    run = ExperimentRun(config)
    for i in range(predictions):
        run.observe_scored("champion", {"champion": 0.1}, {}, 1_000 * i)
        run.observe_scored("challenger", {"challenger": 0.99}, {}, 1_000 * i)
    return run


def test_merged_statistics_are_those_of_one_worker_that_saw_every_label():
    config = ExperimentConfig(id="m", arms={"a": 0.5, "b": 0.5})
    whole, one, two = Experiment(config), Experiment(config), Experiment(config)
    for i in range(600):
        arm, y, unit = ("a", "b")[i % 2], i % 7 == 0, f"u{i % 37}" if i % 5 else None
        whole.observe_prediction(arm, 0.001 * (i % 13))
        whole.observe_label(arm, y, 0.3, unit)
        part = one if i < 250 else two
        part.observe_prediction(arm, 0.001 * (i % 13))
        part.observe_label(arm, y, 0.3, unit)
    merged = merge_arms(config, [snapshot(one), snapshot(two)])
    for arm, stats in whole.arms.items():
        got = merged[arm]
        assert got.counts() == stats.counts()
        assert got.latency.counts == stats.latency.counts
        assert got.primary.counts == stats.primary.counts
        assert math.isclose(got.primary.mean, stats.primary.mean)
        assert math.isclose(got.primary.variance_of_mean, stats.primary.variance_of_mean)
    other = ExperimentConfig(id="other", arms={"a": 0.5, "b": 0.5})
    assert merge_arms(other, [snapshot(one)])["a"].predictions == 0  # another experiment
    assert fingerprint(config) != fingerprint(other)


def test_workers_that_look_together_record_one_decision_and_both_follow_it():
    config = ExperimentConfig(
        id="g", arms=BROKEN["arms"], guardrails=BROKEN["guardrails"], min_labels_per_arm=10**6
    )
    board = MemoryBoard()
    first, second = broken_run(config, 20), broken_run(config, 20)
    a, b = ExperimentSync(board, first, "a", 0.0), ExperimentSync(board, second, "b", 0.0)
    a.publish()
    assert a.look() == []  # 20 predictions per arm: the guardrails wait for 30
    b.publish()
    b.board = StaleBoard(board)  # b reads the state before a records its decision
    [decision] = a.look()  # 40 per arm merged: a records the revert
    assert decision.action == "revert" and decision.arm == "challenger"
    assert b.look() == []  # it decided on the state before: its write is refused
    assert [d.action for d in b.look()] == ["revert"]  # and it follows the recorded one
    assert [e["worker"] for e in board.audit] == ["a"] and board.audit[0]["scope"] == "group"
    for run in (first, second):
        assert run.experiment.status == "reverted" and run.experiment.reverted == ["challenger"]
        assert run.serving({"user_id": "anyone"}) == "champion"
        assert run.experiment.arms["champion"].predictions == 20  # its own statistics
        assert not run.decides and run.after_batch(1) is None


def test_a_command_is_recorded_once_and_followed_and_an_ended_experiment_refuses_more():
    config = ExperimentConfig(id="c", arms={"control": 0.4, "t1": 0.3, "t2": 0.3})
    board, run = MemoryBoard(), ExperimentRun(config)
    sync = ExperimentSync(board, run, "w", 0.0)
    sync.publish()
    with pytest.raises(ValueError, match="unknown arm"):
        apply_command(board, config, "revert", "nope")
    with pytest.raises(ValueError, match="is the control"):
        apply_command(board, config, "revert", "control")
    assert apply_command(board, config, "revert", "t1").arm == "t1"
    assert [d.arm for d in sync.look()] == ["t1"] and run.experiment.status == "running"
    assert apply_command(board, config, "promote", "t2", who="ops").action == "promote"
    assert [d.action for d in sync.look()] == ["promote"]
    assert run.serving({"user_id": "u1"}) == "t2" and run.experiment.winner == "t2"
    with pytest.raises(ValueError, match="has ended"):
        apply_command(board, config, "stop", None)
    assert [(e["action"], e["worker"]) for e in board.audit] == [
        ("revert", "cli"),
        ("promote", "ops"),
    ]


def test_a_stop_sends_every_unit_back_to_the_control():
    config = ExperimentConfig(id="s", arms={"control": 0.5, "t": 0.5})
    board, run = MemoryBoard(), ExperimentRun(config)
    sync = ExperimentSync(board, run, "w", 0.0)
    assert apply_command(board, config, "stop", None).action == "stop"
    sync.look()
    assert run.experiment.status == "stopped"
    assert {run.serving({"user_id": f"u{i}"}) for i in range(20)} == {"control"}


def test_two_workers_on_their_own_partitions_decide_once_and_serve_the_control_after():
    config = settings(experiment=BROKEN)
    board = MemoryBoard()
    workers, brokers, records = [], [], []
    for seed in (3, 4):
        events, labels = world(120, seed=seed)
        broker = MemoryBroker()
        broker.append(config, events + labels)
        checkpoints = MemoryCheckpoints(broker)
        worker = worker_of(config, broker, checkpoints, MemoryRegistry())
        worker.name = f"memory-{seed}"
        records.append(checkpoints)
        grouped(worker, board)
        worker._connect()
        worker._restore()
        workers.append(worker)
        brokers.append(broker)

    def drain_both() -> None:
        for _ in range(100):
            moved = sum(worker.run_once() for worker in workers)
            if not moved and all(worker._inflight is None for worker in workers):
                break
        for worker in workers:
            worker.checkpoint()

    drain_both()  # the memory edge reads every event before the labels: a decision after
    assert [(e["action"], e["arm"]) for e in board.audit] == [("revert", "challenger")]
    decided = [w.arms.experiment.experiment.decisions for w in workers if w.arms.experiment]
    assert decided[0] == decided[1] and len(decided[0]) == 1
    served = [len(broker.outputs("predictions")) for broker in brokers]
    for seed, broker in zip((13, 14), brokers, strict=True):
        events, labels = world(30, seed=seed)
        broker.append(config, events + labels)
    drain_both()
    for before, broker in zip(served, brokers, strict=True):  # the control serves everyone
        arms = [orjson.loads(v)["arm"] for _, _, v, _ in broker.outputs("predictions")]
        assert "challenger" in arms[:before] and set(arms[before:]) == {"champion"}
        assert len(arms) == before + 30
    for worker, record in zip(workers, records, strict=True):
        assert record.confirmed is not None
        state = record.confirmed.state["experiment"]
        assert state["status"] == "reverted"
        assert board.parts[worker.name]["arms"] == state["arms"]  # published as checkpointed
        worker.close()


def test_a_restarted_worker_publishes_its_checkpoint_so_nothing_is_counted_twice():
    config = settings(checkpoint={"every_labels": 100_000, "every_seconds": 3600})
    events, labels = world(120)
    broker = MemoryBroker()
    broker.append(config, events + labels)
    checkpoints, models, board = MemoryCheckpoints(broker), MemoryRegistry(), MemoryBoard()
    worker = worker_of(config, broker, checkpoints, models)
    grouped(worker, board)
    worker._connect()
    worker._restore()
    for _ in range(3):
        worker.run_once()
    worker.checkpoint()
    committed = copy.deepcopy(board.parts["memory-0"])
    for _ in range(2):
        worker.run_once()  # learned, never committed: a kill -9 now
    assert worker._uncommitted and board.parts["memory-0"] == committed

    restarted = worker_of(config, broker, checkpoints, models)
    grouped(restarted, board)
    restarted._connect()
    restarted._restore()
    assert board.parts["memory-0"] == committed
    drain(restarted)
    restarted.checkpoint()
    predictions = sum(arm["predictions"] for arm in board.parts["memory-0"]["arms"].values())
    assert predictions == len(events)  # each event counted once across the restart
    restarted.close()
