"""An experiment started for the group while the workers run (``experiment start``).

The definition is checked as the configuration file's; a worker without an experiment
follows the group's record at a checkpoint boundary (the arms join from the last
checkpoint), checkpoints them like configured arms, and a restart restores them from
its checkpoint and the record though its configuration has no experiment. (The Kafka
and Redis side is ``tests/integration/test_experiment_start.py``.)
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from streamlearn.stream.config import Settings
from streamlearn.stream.config.experiment import (
    ExperimentSettings,
    checked_experiment,
    definition_of,
    parse_arm,
)
from streamlearn.stream.experiment_record import Record, in_force
from tests.memory_edge import MemoryBroker, MemoryCheckpoints, MemoryRegistry
from tests.unit.stream.test_worker_arms import slots, worker_of
from tests.unit.stream.test_worker_loop import drain, event_ids, run, world

STARTED = ExperimentSettings(
    id="started-1", arms={"logistic": 0.5, "tree": 0.5}, models={"tree": "hoeffding_tree"}
)


class Records:
    """The group's record, in memory (``RecordStore`` on Redis in the worker)."""

    def __init__(self) -> None:
        self.record: Record | None = None

    def read(self) -> Record | None:
        return self.record

    def start(self, settings: ExperimentSettings) -> None:
        seq = self.record.seq + 1 if self.record is not None else 1
        self.record = Record(seq, settings, "2026-01-01T00:00:00Z", "cli")


def plain() -> Settings:
    kafka = {"commit_interval_s": 3600, "max_poll_records": 40}
    checkpoint = {"every_labels": 10, "every_seconds": 3600, "registry_poll_seconds": 0.001}
    return Settings(kafka=kafka, checkpoint=checkpoint)


def following(
    config: Settings, broker: MemoryBroker, checkpoints: Any, models: Any, records: Records
) -> Any:
    worker = worker_of(config, broker, checkpoints, models)
    worker.arms.records = records
    return worker


def test_the_command_lines_definition_is_checked_as_the_configuration_files():
    definition = definition_of(["a=hoeffding_tree", "b=version:4"], [0.1], mode="ab", id=None)
    assert definition == {
        "mode": "ab",
        "arms": {"champion": 0.8, "a": 0.1, "b": 0.1},
        "models": {"a": "hoeffding_tree", "b": "version:4"},
    }
    assert checked_experiment(definition).source_of("b") == ("version", "4")
    assert definition_of(["a=logistic", "b=arf"], [0.2, 0.3])["arms"]["champion"] == 0.5
    with pytest.raises(ValueError, match="one share for every arm or one per arm"):
        definition_of(["a=logistic", "b=arf"], [0.2, 0.3, 0.1])
    with pytest.raises(ValueError, match="not the control's 'champion'"):
        definition_of(["champion=logistic"], [0.1])
    with pytest.raises(ValueError, match="at least one treatment"):
        definition_of([], [0.1])
    with pytest.raises(ValueError, match="expected NAME=SPEC"):
        parse_arm("=logistic")
    with pytest.raises(ValueError, match="experiment model of arm 'a' is 'nonsense'"):
        checked_experiment(definition_of(["a=nonsense"], [0.1]))
    with pytest.raises(ValueError, match=r"^the experiment definition: mode: Input should be"):
        checked_experiment(definition_of(["a=logistic"], [0.1], mode="canary"))


def test_the_record_round_trips_and_wins_over_the_configuration():
    record = Record(2, STARTED, "2026-01-01T00:00:00Z", "cli")
    assert Record.from_json(2, record.to_json()) == record
    configured = ExperimentSettings(id="configured", arms={"a": 0.5, "b": 0.5})
    assert in_force(record, configured) == STARTED
    assert in_force(None, configured) == configured


def test_a_running_worker_follows_a_started_experiment_and_a_restart_restores_it():
    config = plain()
    events, labels = world(200)
    broker = MemoryBroker()
    broker.append(config, events[:100] + labels[: len(labels) // 2])
    checkpoints, models, records = MemoryCheckpoints(broker), MemoryRegistry(), Records()
    worker = following(config, broker, checkpoints, models, records)
    worker._connect()
    worker._restore()
    drain(worker)
    worker.checkpoint()  # a boundary: nothing learned since
    assert list(slots(worker)) == ["logistic"] and worker.processor.experiment is None
    before = len(broker.outputs("predictions"))

    records.start(STARTED)
    time.sleep(0.01)  # the worker's next look at the record (registry_poll_seconds)
    broker.append(config, events[100:150])
    drain(worker)  # the arms join at the first look on the boundary
    assert list(slots(worker)) == ["logistic", "tree"]
    assert worker.processor.experiment is not None
    assert worker.outputs.shadow_arms == frozenset()
    predictions = [orjson.loads(v) for _, _, v, _ in broker.outputs("predictions")][before:]
    assert {p["arm"] for p in predictions} <= {"logistic", "tree"}
    assert all(p["arm"] is not None for p in predictions[-20:])
    worker.checkpoint()
    learned = slots(worker)["tree"].labels_learned
    assert learned > 0
    worker.close()

    # a restart (its configuration has no experiment): the record and the checkpoint
    again = following(config, broker, checkpoints, models, records)
    again._connect()
    again._restore()
    assert list(slots(again)) == ["logistic", "tree"]
    assert slots(again)["tree"].labels_learned == learned
    saved = again.arms.state()["experiment"]
    assert saved["config"]["id"] == "started-1"
    broker.append(config, events[150:] + labels[len(labels) // 2 :])
    drain(again)
    again.close()
    published = [orjson.loads(v)["event_id"] for _, _, v, _ in broker.outputs("predictions")]
    assert sorted(published) == sorted(i.decode() for i in event_ids(events))


def test_an_experiment_started_before_the_worker_starts_is_in_force_at_once():
    config = plain()
    events, labels = world(80)
    broker = MemoryBroker()
    broker.append(config, events + labels)
    records = Records()
    records.start(STARTED)
    worker = following(config, broker, MemoryCheckpoints(broker), MemoryRegistry(), records)
    run(worker, idle_timeout_s=0.2)
    predictions = [orjson.loads(v) for _, _, v, _ in broker.outputs("predictions")]
    assert {p["arm"] for p in predictions} == {"logistic", "tree"}
    assert slots(worker)["tree"].labels_learned == slots(worker)["logistic"].labels_learned > 0


def test_a_new_start_after_a_stop_replaces_the_arms_at_the_next_boundary():
    config = plain()
    events, labels = world(120)
    broker = MemoryBroker()
    broker.append(config, events[:60])
    records = Records()
    records.start(STARTED)
    worker = following(config, broker, MemoryCheckpoints(broker), MemoryRegistry(), records)
    worker._connect()
    worker._restore()
    drain(worker)
    worker.checkpoint()
    assert list(slots(worker)) == ["logistic", "tree"]
    replacing = ExperimentSettings(
        id="started-2", arms={"live": 0.8, "forest": 0.2}, models={"forest": "arf"}
    )
    records.start(replacing)
    time.sleep(0.01)
    broker.append(config, events[60:] + labels)
    drain(worker)
    assert list(slots(worker)) == ["live", "forest"]
    assert worker.processor.experiment.experiment.config.id == "started-2"
    worker.checkpoint()
    assert slots(worker)["forest"].labels_learned > 0
    predictions = [orjson.loads(v) for _, _, v, _ in broker.outputs("predictions")]
    assert {p["arm"] for p in predictions[-20:]} <= {"live", "forest"}
    worker.close()


@pytest.mark.parametrize("mode", ["shadow", "ab"])
def test_labels_of_events_the_replaced_arms_served_are_credited_to_no_new_arm(mode):
    """After a stop and a new start, a label of an event an arm gone served (or scored,
    in shadow) neither stops the worker nor counts for an arm of the new experiment."""
    config = plain()
    events, labels = world(120)
    broker = MemoryBroker()
    broker.append(config, events)
    records = Records()
    records.start(STARTED)
    worker = following(config, broker, MemoryCheckpoints(broker), MemoryRegistry(), records)
    worker._connect()
    worker._restore()
    drain(worker)
    worker.checkpoint()
    served = {p["arm"] for p in (orjson.loads(v) for _, _, v, _ in broker.outputs("predictions"))}
    assert served == {"logistic", "tree"}
    records.start(
        ExperimentSettings(
            id="started-2",
            mode=mode,
            primary="log_loss",
            arms={"live": 0.8, "forest": 0.2},
            models={"forest": "arf"},
        )
    )
    time.sleep(0.01)
    drain(worker)
    assert list(slots(worker)) == ["live", "forest"]
    broker.append(config, labels)
    drain(worker)
    worker.checkpoint()
    experiment = worker.processor.experiment.experiment
    assert experiment.arms["forest"].primary.n == 0, "forest scored none of these events"
    assert experiment.arms["live"].primary.n == (120 if mode == "shadow" else 0)
    worker.close()
