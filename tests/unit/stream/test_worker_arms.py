"""A worker running an experiment's arms and the rollback rule, on the in-memory edge.

Each event is served by its unit's arm and published once, marked with it; every arm
is checkpointed with the champion, restored after a restart and rewound after a
rebalance, so each label is learned once per arm; a checkpoint without arms still
restores. (The Kafka and Redis side is ``tests/integration/test_experiment_worker.py``.)
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
import pytest

from streamlearn.features.memory_store import MemoryStore
from streamlearn.learners.assignment import Assignment
from streamlearn.learners.checkpoint import Checkpoint, _dump, _load
from streamlearn.learners.checkpointer import ArmSnapshots, Checkpointer, ModelState
from streamlearn.learners.decision import Decision
from streamlearn.stream.config import Settings
from streamlearn.stream.edge import TopicPartition
from streamlearn.stream.worker import Worker
from streamlearn.stream.worker_arms import WorkerArms
from tests.memory_edge import (
    MemoryBroker,
    MemoryCheckpoints,
    MemoryRegistry,
    MemorySink,
    MemorySource,
)
from tests.unit.stream.test_worker_loop import drain, event_ids, run, world

ARMS = {"champion": 0.5, "challenger": 0.5}


def settings(**sections: Any) -> Settings:
    kafka = {"commit_interval_s": 3600, "max_poll_records": 40}
    experiment = {"arms": ARMS, "models": {"challenger": "hoeffding_tree"}}
    return Settings(
        kafka=kafka,
        checkpoint=sections.pop("checkpoint", {"every_labels": 10, "every_seconds": 3600}),
        experiment=sections.pop("experiment", experiment),
        **sections,
    )


def worker_of(
    config: Settings, broker: MemoryBroker, checkpoints: MemoryCheckpoints, models: MemoryRegistry
) -> Worker:
    """A worker on ``broker`` whose registry and checkpoints outlive it (a restart)."""
    return Worker(
        config,
        name="memory-0",
        source_factory=lambda: MemorySource(broker, config),
        sink_factory=lambda: MemorySink(broker, True),
        store_factory=lambda: MemoryStore(config.store, config.features.interactions),
        prepare_topics=lambda: None,
        model_services=lambda: (models, Checkpointer(models, checkpoints, "memory", 3)),
    )


def slots(worker: Worker) -> dict[str, Any]:
    return {slot.name: slot for slot in worker.processor.slots}


def test_an_ab_experiment_serves_each_units_arm_once_and_checkpoints_every_arm():
    config = settings()
    events, labels = world(120)
    broker = MemoryBroker()
    broker.append(config, events + labels)
    checkpoints, models = MemoryCheckpoints(broker), MemoryRegistry()
    worker = worker_of(config, broker, checkpoints, models)

    summary = run(worker, idle_timeout_s=0.2)

    predictions = [orjson.loads(v) for _, _, v, _ in broker.outputs("predictions")]
    assert sorted(p["event_id"] for p in predictions) == sorted(
        i.decode() for i in event_ids(events)
    )
    assignment = Assignment("experiment", ARMS, "user_id")
    users = {orjson.loads(e)["event_id"]: orjson.loads(e) for e in events}
    assert all(p["arm"] == assignment.arm_for(users[p["event_id"]]) for p in predictions)
    assert {p["arm"] for p in predictions} == set(ARMS)
    assert all(p["model"] == p["arm"] for p in predictions)
    checkpoint = checkpoints.confirmed
    assert checkpoint is not None and set(checkpoint.arms) == {"challenger"}
    assert checkpoint.state["experiment"]["config"]["arms"] == ARMS
    learned = {name: slot.labels_learned for name, slot in slots(worker).items()}
    assert learned == {"champion": summary.labels_learned, "challenger": summary.labels_learned}
    events_of = checkpoint.state["experiment"]["arms"]
    assert sum(arm["predictions"] for arm in events_of.values()) == len(events)

    restarted = worker_of(config, broker, checkpoints, models)
    restarted._connect()
    restarted._restore()
    again = slots(restarted)
    assert {name: slot.labels_learned for name, slot in again.items()} == learned
    assert type(again["challenger"].model) is type(slots(worker)["challenger"].model)
    assert restarted.processor.experiment is not None
    assert restarted.processor.experiment.experiment.to_dict()["arms"] == events_of
    restarted.close()


def test_a_rebalance_rewinds_every_arm_so_each_label_is_learned_once_per_arm():
    config = settings(
        rollback={"min_labels": 5}, checkpoint={"every_labels": 100_000, "every_seconds": 3600}
    )
    events, labels = world(90)
    broker = MemoryBroker()
    broker.append(config, events + labels)
    checkpoints, models = MemoryCheckpoints(broker), MemoryRegistry()
    worker = worker_of(config, broker, checkpoints, models)
    worker._connect()
    worker._restore()
    worker.run_once()
    worker.run_once()
    worker.checkpoint()  # a checkpoint with arms, then work left uncommitted
    for _ in range(3):
        worker.run_once()
    assert worker._uncommitted

    broker.sources[0].revoke([TopicPartition(config.kafka.topics.events, 0)])
    worker.run_once()
    assert worker.summary.rewinds == 1
    drain(worker)
    worker.checkpoint()

    learned = {name: slot.labels_learned for name, slot in slots(worker).items()}
    assert learned["champion"] == learned["challenger"] == len(labels)
    assert learned["last_known_good"] == 0  # the frozen copy never learns
    assert set(checkpoints.confirmed.arms) == {"challenger", "last_known_good"}
    assert "rollback" in checkpoints.confirmed.state
    worker.close()


def test_a_checkpoint_without_arms_still_restores_and_the_arms_start_as_configured():
    config = settings()
    broker = MemoryBroker()
    checkpoints, models = MemoryCheckpoints(broker), MemoryRegistry()
    champion = models.save(Settings().model.build(), labels_learned=7, events_scored=9)
    checkpoints.confirmed = Checkpoint(champion.version, {}, 0)  # written by an older worker
    worker = worker_of(config, broker, checkpoints, models)
    worker._connect()
    worker._restore()
    by_name = slots(worker)
    assert by_name["champion"].labels_learned == 7
    assert by_name["challenger"].labels_learned == 0 and by_name["challenger"].version == "0"
    experiment = worker.processor.experiment.experiment
    assert all(arm.predictions == 0 for arm in experiment.arms.values())
    worker.close()


def test_the_checkpoint_record_round_trips_arms_and_state():
    checkpoint = Checkpoint("9", {"events:0": 4}, 2, {"b": "10"}, {"experiment": {"x": [1, 2]}})
    assert _load(orjson.dumps(asdict(checkpoint))) == checkpoint
    assert _load(_dump(checkpoint)) == checkpoint
    old = Checkpoint("9", {"events:0": 4}, 2)  # what a worker without arms writes and reads
    assert orjson.loads(_dump(old)) == {"version": "9", "offsets": {"events:0": 4}, "generation": 2}


def test_the_checkpointer_saves_each_arm_as_a_version_under_its_own_note():
    broker = MemoryBroker()
    models, record = MemoryRegistry(), MemoryCheckpoints(broker)
    checkpointer = Checkpointer(models, record, "w", 3)
    arms = ArmSnapshots({"b": (object(), ModelState("b", "0", 5, 2))}, {"experiment": {}})
    info = checkpointer.save(
        object(), ModelState("a", "0", 5, 2), {"events:0": 3}, {}, 0, lambda: None, arms
    )
    assert record.confirmed == Checkpoint(info.version, {"events:0": 3}, 0, {"b": "2"}, arms.state)
    assert checkpointer.arm_versions == {"b": "2"} and checkpointer.arm_note("b") == "w arm b"


def test_a_version_arm_needs_the_registry():
    config = settings(
        experiment={"arms": ARMS, "models": {"challenger": "version:3"}},
    )
    from prometheus_client import CollectorRegistry

    from streamlearn.stream.model_guard import ModelSlot

    with pytest.raises(ValueError, match="needs the model registry"):
        WorkerArms(config, ModelSlot("m", config.model.build()), None, CollectorRegistry(), "w")


def test_decisions_are_counted_by_arm_and_action_and_audited():
    from prometheus_client import CollectorRegistry

    from streamlearn.stream.model_guard import ModelSlot

    config = settings()
    registry, audited = CollectorRegistry(), []
    arms = WorkerArms(config, ModelSlot("m", config.model.build()), MemoryRegistry(), registry, "w")
    arms.audit = audited.append
    arms.restore(None)
    arms.record([Decision("revert", "challenger", "worse", p_value=0.01)])
    sample = registry.get_sample_value
    labels = {"action": "revert", "arm": "challenger"}
    assert sample("streamlearn_experiment_decisions_total", labels) == 1
    assert audited[0]["action"] == "revert" and audited[0]["source"] == "experiment"
    assert audited[0]["versions"] == {"champion": "0", "challenger": "0"}
    assert audited[0]["experiment"] == "experiment" and audited[0]["p_value"] == 0.01


def test_shadow_mode_publishes_the_other_arms_marked():
    shadow = {"arms": ARMS, "mode": "shadow", "primary": "log_loss"}
    config = settings(experiment=shadow)
    events, labels = world(40)
    broker = MemoryBroker()
    broker.append(config, events + labels)
    worker = worker_of(config, broker, MemoryCheckpoints(broker), MemoryRegistry())
    run(worker, idle_timeout_s=0.2)
    records = [orjson.loads(v) for _, _, v, _ in broker.outputs("predictions")]
    served = [r for r in records if not r.get("shadow")]
    marked = [r for r in records if r.get("shadow")]
    assert len(served) == len(marked) == len(events)
    assert {r["arm"] for r in served} == {"champion"} and {r["arm"] for r in marked} == {
        "challenger"
    }


def test_a_rollback_is_announced_audited_and_its_state_restored_from_the_checkpoint():
    from prometheus_client import CollectorRegistry

    from streamlearn.stream.model_guard import ModelSlot

    config = settings(experiment=None, rollback={"min_labels": 5, "refresh_every": 7})
    models, audited, announced = MemoryRegistry(), [], []
    champion = ModelSlot("logistic", config.model.build())
    arms = WorkerArms(
        config, champion, models, CollectorRegistry(), "w", announce=lambda: announced.append(1)
    )
    arms.audit = audited.append
    arms.restore(None)
    guard = arms.rollback
    assert guard is not None and [s.name for s in arms.slots] == ["logistic", "last_known_good"]
    for i in range(40):
        guard.observe_scored({"logistic": 0.9, "last_known_good": 0.2}, 1_000 + i)
        guard.observe_label({"logistic": 0.9, "last_known_good": 0.2}, False)
    saved = arms.state()
    arms.record([Decision("rollback", "last_known_good", "worse", p_value=0.001)])
    assert announced == [1] and audited[0]["source"] == "rollback"

    again = WorkerArms(config, ModelSlot("logistic", config.model.build()), models,
                       CollectorRegistry(), "w")  # fmt: skip
    snapshot = Checkpoint("1", {}, 0, {}, saved)
    again.restore(snapshot)
    assert again.rollback is not None
    assert again.rollback.rule.to_dict() == guard.rule.to_dict()
    assert again.rollback.labels_since_refresh == guard.labels_since_refresh == 40
    assert again.rollback.stats["logistic"].labels == 40
    assert again.state() == saved


def test_an_adaptive_policys_threshold_is_checkpointed_and_a_restart_decides_with_it():
    from prometheus_client import CollectorRegistry

    from streamlearn.learners.checkpoint import Checkpoint
    from streamlearn.stream.config import Settings
    from streamlearn.stream.model_guard import ModelSlot
    from streamlearn.stream.worker_arms import WorkerArms

    def arms_of(config: Settings) -> WorkerArms:
        champion = ModelSlot(config.model.spec, config.model.build())
        return WorkerArms(config, champion, None, CollectorRegistry(), "w-0")

    config = Settings(decision={"policy": "precision_at_least", "precision_at_least": 0.99})
    before = arms_of(config)
    before.restore(None)
    policy = before.decider.policy
    policy.threshold, policy.precision_lower_bound, policy.recall = 0.83, 0.991, 0.4
    saved = Checkpoint("7", {"events:0": 10}, 0, {}, before.state())
    after = arms_of(config)
    assert after.decider.policy.threshold == 1.0  # nothing positive before its labels
    after.restore(saved)
    assert after.decider.policy.threshold == 0.83 and after.decider.decide(0.9, {}).decision
    fixed = arms_of(Settings(decision={"policy": "fixed"}))
    assert "decision" not in fixed.state()  # a fixed threshold has nothing to keep
