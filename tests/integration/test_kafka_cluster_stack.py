"""``streamlearn stack up --kafka-brokers 3``: three brokers, replicated topics, and
``stack down`` leaves no process and no port behind."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import psutil
import pytest
from kafka import KafkaAdminClient
from typer.testing import CliRunner

from streamlearn.cli.stack import stack_app
from streamlearn.stack import Stack, free_ports
from streamlearn.stack.services import port_open

pytestmark = pytest.mark.integration


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports() -> list[int]:
    """Free ports for every service, node 1's broker and controller with the two nodes'
    ports 100 and 200 above them free too."""
    while True:
        ports = free_ports(6, high=31000)
        if all(_free(p + step) for p in ports[:2] for step in (100, 200)):
            return ports


def test_stack_up_with_three_brokers_replicates_topics_and_down_leaves_nothing(
    tmp_path: Path,
) -> None:
    kafka, controller, redis_port, prometheus, alertmanager, alerts = _ports()
    root = tmp_path / "stack"
    args = ["--root", str(root), "--kafka-port", str(kafka), "--controller-port"]
    args += [str(controller), "--redis-port", str(redis_port), "--prometheus-port"]
    args += [str(prometheus), "--alertmanager-port", str(alertmanager), "--alerts-port"]
    args += [str(alerts), "--no-appendonly", "--kafka-brokers", "3", "--topics", "events:4"]
    runner = CliRunner()
    try:
        up = runner.invoke(stack_app, ["up", *args])
        assert up.exit_code == 0, up.output
        status = runner.invoke(stack_app, ["status", "--root", str(root)], terminal_width=200)
        assert status.exit_code == 0, status.output
        for node, port in ((1, kafka), (2, kafka + 100), (3, kafka + 200)):
            assert f"kafka-{node}" in status.output and str(port) in status.output
        pids = Stack.from_root(root).pids()
        assert {"kafka-1", "kafka-2", "kafka-3", "redis", "prometheus"} <= set(pids)
        saved = json.loads((root / "stack.json").read_text())
        assert saved["kafka_brokers"] == 3

        bootstrap = Stack.from_root(root).config.kafka_bootstrap
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            (topic,) = admin.describe_topics(["events"])
            assert {len(p["replica_nodes"]) for p in topic["partitions"]} == {3}
            assert len({p["leader_id"] for p in topic["partitions"]}) > 1  # leaders spread
        finally:
            admin.close()
    finally:
        down = runner.invoke(stack_app, ["down", "--root", str(root)])
    assert down.exit_code == 0, down.output
    assert not any(psutil.pid_exists(pid) for pid in pids.values())
    nodes = [kafka, controller, kafka + 100, controller + 100, kafka + 200, controller + 200]
    for port in [*nodes, redis_port, prometheus]:
        assert not port_open("127.0.0.1", port), f"port {port} still listens"
    assert not list((root / "run").glob("*.json"))
