"""The worker's loop on an in-memory edge and store: no Kafka, no Redis.

Batching, publishing and committing, checkpoint decisions, the rewind after a
rebalance and the recovery after an undelivered record, each decided by
:class:`stream.worker.Worker` itself (``tests/memory_edge.py`` is the edge).
"""

from __future__ import annotations

import threading

import pytest

from streamlearn.stream.config import Settings
from streamlearn.stream.edge import EdgeTimeoutError, TopicPartition
from streamlearn.stream.harness import lines_of
from streamlearn.stream.synthetic import WorldConfig, generate_world
from streamlearn.stream.worker import Worker, WorkerSummary
from tests.memory_edge import MemoryBroker, MemoryCheckpoints, memory_worker


def settings(**kafka: object) -> Settings:
    options: dict[str, object] = {"commit_interval_s": 3600, "max_poll_records": 40, **kafka}
    return Settings(kafka=options, checkpoint={"every_labels": 10, "every_seconds": 3600})


def world(events: int, seed: int = 3) -> tuple[list[bytes], list[bytes]]:
    """The events and the labels of a synthetic world, as JSON lines."""
    lines = lines_of(generate_world(WorldConfig(events=events, seed=seed)))
    labels = [line for line in lines if b'"label"' in line and b'"user_id"' not in line]
    return [line for line in lines if line not in labels], labels


def event_ids(lines: list[bytes]) -> list[bytes]:
    return [line.split(b'"event_id":"', 1)[1].split(b'"', 1)[0] for line in lines]


def run(worker: Worker, **options: float) -> WorkerSummary:
    """``worker.run`` in a thread of its own (it installs no signal handler there)."""
    summaries: list[WorkerSummary] = []
    thread = threading.Thread(target=lambda: summaries.append(worker.run(**options)))
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the worker did not stop"
    assert summaries, "the worker failed"
    return summaries[0]


def drain(worker: Worker) -> None:
    """Run the loop until every record polled is finished."""
    for _ in range(1000):
        if worker.run_once() == 0 and worker._inflight is None:
            return
    raise AssertionError("the worker never caught up")


def test_each_event_is_published_once_and_offsets_are_committed_after_the_flush():
    config = settings()
    events, labels = world(120)
    broker = MemoryBroker()
    broker.append(config, events + labels)
    worker = memory_worker(config, broker)

    summary = run(worker, idle_timeout_s=0.2)

    predictions = broker.outputs(config.kafka.topics.predictions)
    assert sorted(key for _, key, _, _ in predictions) == sorted(event_ids(events))
    assert summary.predictions == len(events) and summary.labels_learned == len(labels)
    assert broker.committed == broker.ends()  # every record read is committed
    commits = [n for n, (step, _) in enumerate(broker.journal) if step == "commit"]
    assert commits and all(broker.journal[n - 1][0] == "flush" for n in commits)
    assert all(not sink.pending for sink in broker.sinks)  # nothing sent after the flush


def test_a_checkpoint_is_due_after_every_labels_and_not_before():
    config = settings()  # checkpoint.every_labels: 10
    events, labels = world(40)
    broker = MemoryBroker()
    checkpoints = MemoryCheckpoints(broker)
    broker.append(config, events)
    worker = memory_worker(config, broker, checkpoints=checkpoints)
    worker._connect()
    worker._restore()
    drain(worker)
    assert worker.summary.labels_learned == 0
    assert ("prepare", "1") not in broker.journal and broker.committed == {}

    broker.append(config, labels[:9])
    drain(worker)
    assert worker.summary.labels_learned == 9
    assert checkpoints.confirmed is None and broker.committed == {}

    broker.append(config, labels[9:10])
    drain(worker)
    steps = [step for step, _ in broker.journal if step in ("prepare", "commit", "confirm")]
    assert steps == ["prepare", "commit", "confirm"]  # two phases around the commit
    assert checkpoints.confirmed is not None and checkpoints.confirmed.version == "1"
    assert broker.committed == {tp: end for tp, end in broker.ends().items() if end}
    assert worker.summary.checkpoints == 1
    worker.close()


def test_a_revocation_with_uncommitted_work_aborts_it_and_reads_again_from_the_commit():
    config = settings(max_poll_records=30)
    events, labels = world(90)
    broker = MemoryBroker()
    broker.append(config, events + labels)
    worker = memory_worker(config, broker, transactional=True)
    worker._connect()
    worker._restore()
    for _ in range(3):
        worker.run_once()  # work done, none committed
    assert worker._uncommitted and worker.sink is not None and worker.sink.in_transaction

    source = broker.sources[0]
    source.revoke([TopicPartition(config.kafka.topics.events, 0)])
    worker.run_once()

    steps = [step for step, _ in broker.journal]
    assert steps[-2:] == ["abort", "rewind"] and broker.journal[-2][1] > 0
    assert broker.committed == {} and broker.visible == []  # nothing from before
    assert set(source.positions.values()) == {0}
    assert worker.summary.rewinds == 1
    assert worker.registry.get_sample_value("streamlearn_rebalance_rewinds_total") == 1

    drain(worker)
    worker.checkpoint()
    predictions = broker.outputs(config.kafka.topics.predictions)
    assert sorted(key for _, key, _, _ in predictions) == sorted(event_ids(events))
    assert broker.committed == broker.ends()
    worker.close()


def test_a_refused_output_is_retried_alone_then_dropped_and_the_worker_goes_on():
    config = settings(max_delivery_attempts=3)
    events, labels = world(60)
    broker = MemoryBroker()
    broker.append(config, events + labels)
    topic = config.kafka.topics.predictions
    refused = event_ids(events)[7]
    broker.refuse.add((topic, refused))
    worker = memory_worker(config, broker)

    run(worker, idle_timeout_s=0.2)

    predictions = [key for _, key, _, _ in broker.outputs(topic)]
    assert sorted(predictions) == sorted(set(event_ids(events)) - {refused})
    alone = [key for sink in broker.sinks for _, key, _, _ in sink.alone]
    assert alone == [refused, refused]  # attempts 2 and 3, each in a request of its own
    sample = worker.registry.get_sample_value
    assert sample("streamlearn_undelivered_records_total") == 3
    labels_of = {"output": "prediction", "reason": "too_large"}
    assert sample("streamlearn_dropped_outputs_total", labels_of) == 1
    assert broker.committed == broker.ends()


def test_an_undelivered_batch_makes_the_worker_resume_from_its_last_commit():
    config = settings(commit_interval_s=0.0)
    events, labels = world(60)
    broker = MemoryBroker()
    broker.append(config, events + labels)
    broker.fail_next_flush = EdgeTimeoutError("expired")
    worker = memory_worker(config, broker)

    summary = run(worker, idle_timeout_s=0.2)

    assert summary.recoveries == 1
    assert worker.registry.get_sample_value("streamlearn_undelivered_records_total") >= 1
    assert len(broker.sources) == 2 and broker.sources[0].closed  # reconnected
    assert broker.sinks[0].closed
    predictions = {key for _, key, _, _ in broker.outputs(config.kafka.topics.predictions)}
    assert predictions == set(event_ids(events))  # at least once, none lost
    assert broker.committed == broker.ends()


@pytest.mark.parametrize("transactional", [False, True])
def test_the_memory_edge_satisfies_the_protocols(transactional):
    from streamlearn.stream.edge import Sink, Source
    from tests.memory_edge import MemorySink, MemorySource

    broker = MemoryBroker()
    source: Source = MemorySource(broker, settings())
    sink: Sink = MemorySink(broker, transactional)
    assert source.caught_up() and sink.transactional is transactional
