"""Kafka SASL (PLAIN and SCRAM-SHA-256) from the config, the password from the environment."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaError

from streamlearn.stack import Stack
from streamlearn.stream.config import load_settings
from streamlearn.stream.kafka_io import KafkaSink, KafkaSource
from streamlearn.stream.topics import ensure_topics

pytestmark = pytest.mark.integration

USER, PASSWORD = "alice", "alice-Secret-7"


@pytest.fixture(scope="module")
def sasl_stack(tmp_path_factory):
    from streamlearn.stack import fast_stack_config, free_ports

    (port,) = free_ports(1)
    config = fast_stack_config(tmp_path_factory.mktemp("sasl") / "stack").model_copy(
        update={"kafka_sasl_port": port, "kafka_sasl_users": ((USER, PASSWORD),)}
    )
    stack = Stack(config)
    stack.up(services=["kafka"])
    yield stack
    stack.down()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_worker_clients_authenticate_with_sasl_settings_and_an_environment_password(
    sasl_stack, mechanism, monkeypatch, unique_prefix
):
    monkeypatch.setenv(
        "STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{sasl_stack.config.kafka_sasl_port}"
    )
    monkeypatch.setenv("STREAMLEARN_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_MECHANISM", mechanism)
    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_USERNAME", USER)
    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("STREAMLEARN_KAFKA__GROUP_ID", f"{unique_prefix}-{mechanism}")
    monkeypatch.setenv("STREAMLEARN_KAFKA__TOPICS__EVENTS", f"{unique_prefix}-{mechanism}.events")
    kafka = load_settings().kafka
    ensure_topics(kafka, {kafka.topics.events: 1, kafka.topics.labels: 1})

    sink = KafkaSink(kafka)
    sink.send(kafka.topics.events, b"e1", b'{"event_id": "e1"}')
    sink.flush()
    sink.close()
    source = KafkaSource(kafka)
    records = []
    for _ in range(100):
        records += source.next_batch()
        if records:
            break
    source.close()

    assert [(r.kind, r.value) for r in records] == [("events", b'{"event_id": "e1"}')]
    assert PASSWORD not in repr(kafka)


def test_a_wrong_password_is_refused(sasl_stack, monkeypatch):
    monkeypatch.setenv(
        "STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{sasl_stack.config.kafka_sasl_port}"
    )
    monkeypatch.setenv("STREAMLEARN_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_USERNAME", USER)
    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_PASSWORD", "not-the-password")
    with pytest.raises(KafkaError):
        ensure_topics(load_settings().kafka, {"never": 1})
