"""The local stack: real Kafka, Redis, Prometheus and Alertmanager processes.

The first tests need no server: they check the generated configs. The others run
against the session stack of ``tests/conftest.py`` (or external servers).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

import psutil
import pytest
import redis
import yaml
from kafka import KafkaConsumer, KafkaProducer

from streamlearn.cli.stack import parse_topics
from streamlearn.stack import Stack, StackConfig
from streamlearn.stack.files import kafka_server_properties, prometheus_config, write_scrape_target
from streamlearn.stack.install import StackError

KEYS = [f"user-{i}" for i in range(6)]
PER_KEY = 10


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def produce_keyed(bootstrap: str, topic: str) -> dict[str, int]:
    """Send PER_KEY values per key in order; return the partition each key landed on."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    partitions: dict[str, set[int]] = defaultdict(set)
    futures = [
        (key, producer.send(topic, key=key.encode(), value=f"{key}:{i}".encode()))
        for i in range(PER_KEY)
        for key in KEYS
    ]
    producer.flush()
    for key, future in futures:
        partitions[key].add(future.get(timeout=30).partition)
    producer.close()
    assert all(len(p) == 1 for p in partitions.values()), "a key spread over partitions"
    return {key: p.pop() for key, p in partitions.items()}


def assert_per_key_order(pairs: list[tuple[str, str]]) -> None:
    by_key: dict[str, list[str]] = defaultdict(list)
    for key, value in pairs:
        by_key[key].append(value)
    assert sorted(by_key) == sorted(KEYS)
    for key in KEYS:
        assert by_key[key] == [f"{key}:{i}" for i in range(PER_KEY)]


# ---------------------------------------------------------------- generated configs


def test_prometheus_config_scrapes_file_sd_targets_loads_rules_and_alerts_when_asked(
    tmp_path: Path,
) -> None:
    config = StackConfig(
        root=tmp_path,
        scrape_interval="1s",
        evaluation_interval="2s",
        rules_dir=tmp_path / "rules",
        alertmanager_port=29999,
    )
    doc = yaml.safe_load(prometheus_config(config, alertmanager=True))
    assert doc["global"] == {"scrape_interval": "1s", "evaluation_interval": "2s"}
    assert doc["rule_files"] == [str(tmp_path / "rules" / "*.yml")]
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert jobs["streamlearn"]["file_sd_configs"][0]["files"] == [
        str(tmp_path / "prometheus" / "targets" / "*.json")
    ]
    targets = doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["127.0.0.1:29999"]
    assert "alerting" not in yaml.safe_load(prometheus_config(config, alertmanager=False))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_generated_prometheus_config(tmp_path: Path) -> None:
    config = StackConfig(root=tmp_path, rules_dir=tmp_path / "rules")
    path = tmp_path / "prometheus.yml"
    path.write_text(prometheus_config(config, alertmanager=True))
    result = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_server_properties_describe_one_combined_kraft_node(tmp_path: Path) -> None:
    config = StackConfig(root=tmp_path, kafka_port=21092, kafka_controller_port=21093)
    lines = kafka_server_properties(config).splitlines()
    props = dict(line.split("=", 1) for line in lines)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:21093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:21092,CONTROLLER://127.0.0.1:21093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:21092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["log.dirs"] == str(tmp_path / "kafka" / "data")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_scrape_target_files_are_file_sd_documents_and_bad_input_is_refused(
    tmp_path: Path,
) -> None:
    path = write_scrape_target(tmp_path, "worker-0", "127.0.0.1:8000", {"role": "worker"})
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:8000"], "labels": {"target": "worker-0", "role": "worker"}}
    ]
    with pytest.raises(ValueError, match="host:port"):
        write_scrape_target(tmp_path, "w", "http://127.0.0.1:8000/metrics")
    with pytest.raises(ValueError, match="target name"):
        write_scrape_target(tmp_path, "../escape", "127.0.0.1:8000")


def test_cli_topic_specs_parse_names_and_partition_counts() -> None:
    assert parse_topics(["events:6, labels:3", "dead-letter"]) == {
        "events": 6,
        "labels": 3,
        "dead-letter": 1,
    }


def test_down_leaves_alone_a_process_whose_pid_file_does_not_match(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        run = tmp_path / "run"
        run.mkdir()
        (run / "kafka.json").write_text(
            json.dumps(
                {
                    "pid": stranger.pid,
                    "create_time": psutil.Process(stranger.pid).create_time(),
                    "marker": "kafka.Kafka",
                    "ports": [1, 2],
                    "argv": ["java"],
                }
            )
        )
        stack = Stack(StackConfig(root=tmp_path))
        assert stack.down() == []
        assert stranger.poll() is None, "down() signalled a process it did not start"
        assert not (run / "kafka.json").exists()
    finally:
        stranger.kill()
        stranger.wait()


# -------------------------------------------------------------------------- Kafka


@pytest.mark.integration
def test_kafka_python_round_trip_keeps_per_key_partition_and_order(
    kafka_bootstrap: str, make_topics, unique_prefix: str
) -> None:
    (topic,) = make_topics(events=3)
    key_partition = produce_keyed(kafka_bootstrap, topic)
    assert len(set(key_partition.values())) > 1, "6 keys should use several of 3 partitions"

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{unique_prefix}-g",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records = []
    deadline = time.monotonic() + 30
    while len(records) < len(KEYS) * PER_KEY and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()

    assert len(records) == len(KEYS) * PER_KEY
    for record in records:
        assert record.partition == key_partition[record.key.decode()]
    offsets: dict[int, list[int]] = defaultdict(list)
    for record in records:
        offsets[record.partition].append(record.offset)
    assert all(o == sorted(o) for o in offsets.values())
    assert_per_key_order([(r.key.decode(), r.value.decode()) for r in records])


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")
def test_kcat_reads_back_what_kafka_python_wrote(kafka_bootstrap: str, make_topics) -> None:
    (topic,) = make_topics(events=3)
    produce_keyed(kafka_bootstrap, topic)
    result = subprocess.run(
        ["kcat", "-C", "-q", "-b", kafka_bootstrap, "-t", topic, "-e", "-f", "%k\t%s\n"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    pairs = [tuple(line.split("\t", 1)) for line in result.stdout.splitlines() if line]
    assert len(pairs) == len(KEYS) * PER_KEY
    assert_per_key_order(pairs)


@pytest.mark.integration
def test_confluent_kafka_reads_back_what_kafka_python_wrote(
    kafka_bootstrap: str, make_topics, unique_prefix: str
) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    (topic,) = make_topics(events=3)
    produce_keyed(kafka_bootstrap, topic)
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"{unique_prefix}-c",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    pairs = []
    deadline = time.monotonic() + 30
    while len(pairs) < len(KEYS) * PER_KEY and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        assert message.error() is None, message.error()
        pairs.append((message.key().decode(), message.value().decode()))
    consumer.close()
    assert len(pairs) == len(KEYS) * PER_KEY
    assert_per_key_order(pairs)


# -------------------------------------------------------------------------- Redis


@pytest.mark.integration
def test_redis_stores_and_returns_bytes_hashes_and_pipelined_counters(
    redis_client: redis.Redis, unique_prefix: str
) -> None:
    key = f"{unique_prefix}:blob"
    redis_client.set(key, b"\x00\xffpayload", ex=60)
    assert redis_client.get(key) == b"\x00\xffpayload"
    assert 0 < redis_client.ttl(key) <= 60

    counters = f"{unique_prefix}:counts"
    with redis_client.pipeline(transaction=True) as pipe:
        for _ in range(5):
            pipe.hincrby(counters, "clicks", 1)
        pipe.hincrbyfloat(counters, "score", 0.5)
        pipe.execute()
    assert redis_client.hgetall(counters) == {b"clicks": b"5", b"score": b"0.5"}


# ---------------------------------------------------------------------- Prometheus

PROBE = """
import sys, time
from prometheus_client import Counter, start_http_server
Counter("streamlearn_stack_probe", "Probe of the local stack.").inc(42)
server, _ = start_http_server(0, addr="127.0.0.1")
print(server.server_port, flush=True)
time.sleep(300)
"""


@pytest.mark.integration
def test_prometheus_scrapes_a_registered_process_of_ours(
    prometheus_url: str, scrape_target
) -> None:
    probe = subprocess.Popen([sys.executable, "-c", PROBE], stdout=subprocess.PIPE, text=True)
    try:
        port = int(probe.stdout.readline())
        name = scrape_target(f"127.0.0.1:{port}")
        query = urllib.parse.quote(f'streamlearn_stack_probe_total{{target="{name}"}}')
        value = None
        deadline = time.monotonic() + 30
        while value is None and time.monotonic() < deadline:
            result = get_json(f"{prometheus_url}/api/v1/query?query={query}")["data"]["result"]
            if result:
                value = float(result[0]["value"][1])
            else:
                time.sleep(0.5)
        assert value == 42.0
    finally:
        probe.kill()
        probe.wait()


@pytest.mark.integration
def test_prometheus_sends_alerts_to_the_running_alertmanager(
    prometheus_url: str, alertmanager_url: str
) -> None:
    assert get_json(f"{alertmanager_url}/api/v2/status")["cluster"]["status"] == "disabled"
    port = urllib.parse.urlsplit(alertmanager_url).port
    active: list[dict] = []
    deadline = time.monotonic() + 30
    while not active and time.monotonic() < deadline:
        active = get_json(f"{prometheus_url}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
        if not active:
            time.sleep(0.5)
    assert any(f":{port}/" in am["url"] for am in active), active


# --------------------------------------------------------------------- lifecycle


@pytest.mark.integration
def test_up_is_idempotent_and_down_leaves_no_process_or_port_behind(
    fresh_stack_config: StackConfig,
) -> None:
    stack = Stack(fresh_stack_config)
    try:
        stack.up(alertmanager=True)
        pids = stack.pids()
        assert sorted(pids) == ["alertmanager", "alerts", "kafka", "prometheus", "redis"]
        assert all(row.state == "up" for row in stack.status())

        stack.up(alertmanager=True)
        assert stack.pids() == pids
        assert Stack.from_root(fresh_stack_config.root).pids() == pids
    finally:
        stopped = stack.down()
    assert sorted(stopped) == ["alertmanager", "alerts", "kafka", "prometheus", "redis"]
    assert not any(psutil.pid_exists(pid) for pid in pids.values())
    config = fresh_stack_config
    ports = [
        config.kafka_port,
        config.kafka_controller_port,
        config.redis_port,
        config.prometheus_port,
        config.alertmanager_port,
        config.alerts_port,
    ]
    assert not any(port_open(port) for port in ports)
    assert all(row.state == "down" for row in stack.status())
    assert not list((config.root / "run").glob("*.json"))


@pytest.mark.integration
def test_a_failing_service_is_reported_with_its_command_and_log(
    fresh_stack_config: StackConfig, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.yml").write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: 'sum('\n"
    )
    config = fresh_stack_config.model_copy(update={"rules_dir": rules})
    stack = Stack(config)
    try:
        with pytest.raises(StackError) as failure:
            stack.up(services=["prometheus"])
    finally:
        stack.down()
    message = str(failure.value)
    assert message.startswith("prometheus exited before it was ready")
    assert "command: prometheus --config.file=" in message
    assert str(config.root / "prometheus" / "prometheus.log") in message
    assert "broken.yml" in message


@pytest.mark.integration
def test_a_port_taken_by_another_process_is_refused(fresh_stack_config: StackConfig) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", fresh_stack_config.redis_port))
        taken.listen()
        with pytest.raises(StackError, match="already in use"):
            Stack(fresh_stack_config).up(services=["redis"])
