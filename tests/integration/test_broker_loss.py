"""A broker lost mid-stream on a 3-node cluster: with transactions, nothing lost, nothing doubled.

The worker runs as ``streamlearn run`` against the ``kafka_cluster`` fixture's three
nodes (topics with 3 replicas and ``min.insync.replicas=2``). Once it has confirmed a
checkpoint, the node that coordinates its transactions (when it leads partitions of
its topics, as it almost always does; else the leader of the first events partition)
is killed with SIGKILL; the partitions elect new leaders, the transaction
coordinator moves, and the same worker run goes on to the end of the stream.
"""

from __future__ import annotations

import time

import pytest
import redis as redis_lib
from kafka import KafkaAdminClient

from streamlearn.learners.checkpoint import CheckpointStore
from streamlearn.stack.kafka_cluster import KafkaCluster, node_properties
from streamlearn.stream.harness import (
    labels_learned_by_last_checkpoint,
    lines_of,
    produce,
    recount,
    settings_for,
    stored_counters,
    worker_process,
    write_config,
)
from streamlearn.stream.synthetic import WorldConfig, generate_world

from .pipeline import assert_every_event_scored, exit_code

pytestmark = pytest.mark.integration

KEY = "broker-loss-test-signing-key-0123456789"
EVENTS = 4000


def java_hash(text: str) -> int:
    """``String.hashCode`` of the JVM, which places a key in Kafka's internal topics.

    >>> java_hash("a"), java_hash("worker")
    (97, -782085250)
    """
    h = 0
    for char in text:
        h = (31 * h + ord(char)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def coordinator(admin: KafkaAdminClient, topic: str, partitions: int, key: str) -> int:
    """The broker leading the partition of an internal topic where ``key`` lives."""
    wanted = (java_hash(key) & 0x7FFFFFFF) % partitions
    (described,) = admin.describe_topics([topic])
    (row,) = [p for p in described["partitions"] if p["partition_index"] == wanted]
    return int(row["leader_id"])


def leaders(admin: KafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """``topic:partition`` -> leading broker."""
    return {
        f"{t['name']}:{p['partition_index']}": int(p["leader_id"])
        for t in admin.describe_topics(topics)
        for p in t["partitions"]
    }


def test_a_broker_killed_mid_stream_loses_and_doubles_nothing(
    kafka_cluster: KafkaCluster, redis_url, redis_client, unique_prefix, tmp_path
):
    bootstrap = kafka_cluster.config.kafka_bootstrap
    records = list(generate_world(WorldConfig(events=EVENTS, seed=11)))
    settings = settings_for(
        bootstrap,
        redis_url,
        unique_prefix,
        partitions=3,
        kafka={
            "transactions": True,
            "max_poll_records": 50,
            "session_timeout_ms": 10000,
            "static_membership": True,
            # A transaction step stuck on the lost coordinator fails after 10 s (not the
            # default 30 s), and the worker resumes from its checkpoint.
            "max_block_ms": 10000,
        },
        checkpoint={"every_labels": 150, "every_seconds": 0.5},
    )
    produce(settings, lines_of(records))
    config = write_config(settings, tmp_path / "worker.yaml")
    log = tmp_path / "worker.log"
    group = settings.kafka.group_id
    client = redis_lib.Redis.from_url(redis_url)
    # Partitions led by the lost node give nothing until it is fenced and they have new
    # leaders (6-15 s here): the worker must not take that for the end of the stream.
    worker = worker_process(config, "--idle-timeout", "20", env={"STREAMLEARN_MODEL_KEY": KEY})
    try:
        deadline = time.monotonic() + 60
        store = CheckpointStore(client, unique_prefix, group, "worker-0")
        while store.recover(lambda names: {}) is None:
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.05)

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        props = node_properties(kafka_cluster.config, kafka_cluster.nodes[0])
        topics = settings.kafka.topics
        own = [topics.events, topics.labels, topics.predictions]
        try:
            transactions = coordinator(
                admin,
                "__transaction_state",
                int(props["transaction.state.log.num.partitions"]),
                f"{group}-worker-0",
            )
            led = leaders(admin, own)
        finally:
            admin.close()
        # The transaction coordinator, unless it leads none of the worker's partitions.
        victim = transactions if transactions in led.values() else led[f"{topics.events}:0"]
        kafka_cluster.kill(victim)
        killed_at = time.monotonic()

        assert exit_code(worker, log, timeout_s=150) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
    survived_s = time.monotonic() - killed_at
    print(f"node {victim} killed (transactions: node {transactions}; leaders {led})")
    assert_every_event_scored(bootstrap, settings, records, once=True)
    assert stored_counters(redis_client, unique_prefix) == recount(records)
    assert labels_learned_by_last_checkpoint(client, unique_prefix, group, KEY.encode()) == EVENTS
    print(f"the worker finished {survived_s:.1f} s after the kill")
