"""The multi-broker stack's pure parts: node ports, node properties, replication, status.

No process is started: the cluster itself is exercised by
``tests/integration/test_broker_loss.py``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from streamlearn.cli.stack import stack_app
from streamlearn.stack import Stack, StackConfig
from streamlearn.stack.kafka_cluster import (
    KafkaCluster,
    cluster_nodes,
    cluster_stack_config,
    node_properties,
)
from streamlearn.stream import kafka_sink, rdkafka_sink
from streamlearn.stream.config import WorkerConfig
from streamlearn.stream.topics import replication_for


def test_one_broker_stays_the_default(tmp_path: Path) -> None:
    config = StackConfig(root=tmp_path)
    assert config.kafka_brokers == 1
    assert config.kafka_bootstrap == "127.0.0.1:9092"
    assert [row.service for row in Stack(config).status()][:2] == ["kafka", "redis"]


def test_nodes_listen_on_distinct_ports_and_form_one_quorum(tmp_path: Path) -> None:
    config = cluster_stack_config(tmp_path, brokers=3)
    nodes = cluster_nodes(config)
    ports = [p for n in nodes for p in (n.port, n.controller_port)]
    assert len(set(ports)) == 6
    assert config.kafka_bootstrap == ",".join(f"127.0.0.1:{n.port}" for n in nodes)
    voters = {node_properties(config, n)["controller.quorum.voters"] for n in nodes}
    assert voters == {",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)}
    for node in nodes:
        props = node_properties(config, node)
        assert props["process.roles"] == "broker,controller"
        assert props["node.id"] == str(node.node_id)
        assert props["log.dirs"] == str(tmp_path / f"kafka-{node.node_id}" / "data")
        assert props["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
        )


@pytest.mark.parametrize(("brokers", "factor", "min_isr"), [(2, "2", "1"), (3, "3", "2")])
def test_internal_topics_are_replicated_to_the_cluster_size(
    tmp_path: Path, brokers: int, factor: str, min_isr: str
) -> None:
    config = StackConfig(root=tmp_path, kafka_brokers=brokers)
    props = node_properties(config, cluster_nodes(config)[0])
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "default.replication.factor",
    ):
        assert props[key] == factor, key
    assert props["transaction.state.log.min.isr"] == props["min.insync.replicas"] == min_isr


def test_topic_replication_follows_the_cluster_size() -> None:
    assert replication_for(0) == (1, {})
    assert replication_for(1) == (1, {})
    assert replication_for(2) == (2, {})
    assert replication_for(3) == (3, {"min.insync.replicas": "2"})
    assert replication_for(7) == (3, {"min.insync.replicas": "2"})


def test_implied_node_ports_step_by_a_hundred(tmp_path: Path) -> None:
    config = StackConfig(root=tmp_path, kafka_brokers=3, kafka_node_ports=((30001, 30002),))
    assert config.kafka_nodes == ((9092, 9093), (30001, 30002), (9292, 9293))
    with pytest.raises(ValidationError):
        StackConfig(root=tmp_path, kafka_brokers=0)


def test_status_shows_each_broker_and_down_stops_nothing_not_started(tmp_path: Path) -> None:
    config = StackConfig(root=tmp_path, kafka_brokers=3)
    rows = Stack(config).status()
    assert [r.service for r in rows][:4] == ["kafka-1", "kafka-2", "kafka-3", "redis"]
    assert [r.port for r in rows][:3] == [9092, 9192, 9292]
    assert {r.state for r in rows} == {"down"}
    assert Stack(config).down() == []
    assert [n.name for n in KafkaCluster(config).nodes] == ["kafka-1", "kafka-2", "kafka-3"]


def test_stack_up_takes_the_broker_count(tmp_path: Path) -> None:
    result = CliRunner().invoke(stack_app, ["up", "--help"])
    assert "--kafka-brokers" in result.output
    refused = CliRunner().invoke(stack_app, ["up", "--root", str(tmp_path), "--kafka-brokers", "0"])
    assert refused.exit_code != 0


def test_the_producers_wait_for_every_in_sync_replica() -> None:
    """``acks=all`` in both clients: with ``min.insync.replicas=2`` an acknowledged
    prediction is on two brokers at least."""
    assert '"acks": "all"' in inspect.getsource(kafka_sink.KafkaSink.__init__)
    assert '"acks": "all"' in inspect.getsource(rdkafka_sink.RdKafkaSink.__init__)


def test_worker_names_follow_the_host_only_when_asked() -> None:
    assert WorkerConfig().resolved_name(hostname="box") == "worker-0"
    assert WorkerConfig(name="{hostname}").resolved_name(hostname="c0ffee") == "c0ffee"
    with pytest.raises(ValidationError):
        WorkerConfig(name="two words")
