"""Shared fixtures: the real local stack (Kafka, Redis, Prometheus, Alertmanager) for tests.

The stack starts lazily, once per session, the first time a test asks for one of its
fixtures, through the same :class:`stack.Stack` the README uses: random free
ports, a root under pytest's temp folder, Redis without persistence, Prometheus
scraping and evaluating every second, Alertmanager receiving its alerts. Unit-only
runs never start a server.

Servers given by environment variables are used instead of starting ours:

- ``STREAMLEARN_TEST_KAFKA``: bootstrap servers (``host:port``)
- ``STREAMLEARN_TEST_REDIS``: Redis URL (``redis://host:port/0``)
- ``STREAMLEARN_TEST_PROMETHEUS``: Prometheus base URL (``http://host:port``); the
  ``file_sd`` folder it watches may be given by ``STREAMLEARN_TEST_PROMETHEUS_TARGETS``
  for :func:`scrape_target`
- ``STREAMLEARN_TEST_ALERTMANAGER``: Alertmanager base URL
- ``STREAMLEARN_TEST_REDIS_CLUSTER``: a Redis Cluster node's URL, for the opt-in
  ``redis_cluster_url`` fixture (else a local cluster of 3 masters and 3 replicas
  starts the first time a test asks for it)

``kafka_cluster`` is opt-in: a separate cluster of three Kafka nodes (replicated
topics, a quorum that survives a node's loss), started the first time a test asks
for it and stopped at the session's end; the single-broker stack is not touched.

Tests using any server fixture are marked ``integration`` automatically, so
``pytest -m "not integration"`` runs without servers.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from streamlearn.stack import Stack, StackConfig, fast_stack_config
from streamlearn.stack.files import write_scrape_target
from streamlearn.stack.kafka_cluster import KafkaCluster, cluster_stack_config
from streamlearn.stream.config import KafkaConfig

ENV = {
    "kafka": "STREAMLEARN_TEST_KAFKA",
    "redis": "STREAMLEARN_TEST_REDIS",
    "prometheus": "STREAMLEARN_TEST_PROMETHEUS",
    "alertmanager": "STREAMLEARN_TEST_ALERTMANAGER",
}
TARGETS_ENV = "STREAMLEARN_TEST_PROMETHEUS_TARGETS"
SERVER_FIXTURES = frozenset(
    {
        "stack",
        "kafka_bootstrap",
        "redis_url",
        "prometheus_url",
        "alertmanager_url",
        "make_topics",
        "redis_client",
        "scrape_target",
        "alert_log",
        "kafka_cluster",
        "redis_cluster_url",
    }
)
CLUSTER_ENV = "STREAMLEARN_TEST_REDIS_CLUSTER"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a server fixture as ``integration``."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack | None]:
    """The session's local :class:`~stack.Stack`; None when every server is external."""
    needed = [name for name, var in ENV.items() if not os.environ.get(var)]
    if not needed:
        yield None
        return
    local = Stack(fast_stack_config(tmp_path_factory.mktemp("stack")))
    try:
        local.up(services=needed)  # type: ignore[arg-type]
        yield local
    finally:
        local.down()


@pytest.fixture(scope="session")
def kafka_cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack of the opt-in 3-node Kafka cluster: started on first use, stopped at the end."""
    config = cluster_stack_config(tmp_path_factory.mktemp("kafka-cluster"), brokers=3)
    local = Stack(config)
    try:
        local.up(services=["kafka"])
        yield local
    finally:
        local.down()


@pytest.fixture
def kafka_cluster(kafka_cluster_stack: Stack) -> KafkaCluster:
    """A separate 3-node Kafka cluster (:mod:`stack.kafka_cluster`), every node up: a
    node an earlier test killed is started again. ``kafka_cluster.config.kafka_bootstrap``
    lists every broker."""
    kafka_cluster_stack.up(services=["kafka"])
    return KafkaCluster(kafka_cluster_stack.config)


def _address(stack: Stack | None, service: str) -> str:
    external = os.environ.get(ENV[service])
    if external:
        return external
    assert stack is not None, f"{service}: neither {ENV[service]} nor a local stack"
    config = stack.config
    return {
        "kafka": config.kafka_bootstrap,
        "redis": config.redis_url,
        "prometheus": config.prometheus_url,
        "alertmanager": config.alertmanager_url,
    }[service]


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: Stack | None) -> str:
    """Bootstrap servers of the test Kafka broker."""
    return _address(stack, "kafka")


@pytest.fixture(scope="session")
def redis_url(stack: Stack | None) -> str:
    """URL of the test Redis (database 0)."""
    return _address(stack, "redis")


@pytest.fixture(scope="session")
def prometheus_url(stack: Stack | None) -> str:
    """Base URL of the test Prometheus (HTTP API under ``/api/v1``)."""
    return _address(stack, "prometheus")


@pytest.fixture(scope="session")
def alertmanager_url(stack: Stack | None) -> str:
    """Base URL of the test Alertmanager (the local test Prometheus sends alerts there)."""
    return _address(stack, "alertmanager")


@pytest.fixture(scope="session")
def alert_log(stack: Stack | None, alertmanager_url: str) -> Path:
    """The log of the stack's alert receiver, which the session Alertmanager notifies."""
    if os.environ.get(ENV["alertmanager"]) or stack is None:
        pytest.skip(f"external Alertmanager ({ENV['alertmanager']}): its receiver is not ours")
    return stack.config.alerts_log


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a node of the test Redis Cluster (3 masters, 3 replicas, private ports).

    Opt-in: started the first time a test asks for it, stopped at the session's end.
    """
    external = os.environ.get(CLUSTER_ENV)
    if external:
        yield external
        return
    from streamlearn.stack.config import private_stack_config
    from streamlearn.stack.redis_cluster import RedisClusterNodes

    root = tmp_path_factory.mktemp("redis-cluster")
    nodes = RedisClusterNodes(private_stack_config(root, redis_cluster=3))
    try:
        nodes.up()
        yield nodes.url
    finally:
        nodes.down()


@pytest.fixture
def unique_prefix() -> str:
    """A fresh prefix such as ``t1a2b3c4d`` for topic names, group ids and Redis keys."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_topics(kafka_bootstrap: str, unique_prefix: str) -> Iterator[Callable[..., list[str]]]:
    """Create topics ``<prefix>.<name>`` with given partition counts; deleted after the test.

    Usage: ``events, labels = make_topics(events=3, labels=1)``.
    """
    created: list[str] = []

    def make(**partitions: int) -> list[str]:
        from streamlearn.stream.topics import ensure_topics

        names = {f"{unique_prefix}.{name}": count for name, count in partitions.items()}
        created.extend(ensure_topics(KafkaConfig(bootstrap_servers=kafka_bootstrap), names))
        return list(names)

    yield make
    if created:
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        with contextlib.suppress(KafkaError):
            admin.delete_topics(created)
        admin.close()


@pytest.fixture
def redis_client(redis_url: str, unique_prefix: str) -> Iterator[redis.Redis]:
    """A ``redis.Redis`` returning bytes; keys starting with ``unique_prefix`` are removed after."""
    client = redis.Redis.from_url(redis_url, decode_responses=False)
    yield client
    keys = list(client.scan_iter(match=f"{unique_prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def scrape_target(stack: Stack | None, unique_prefix: str) -> Iterator[Callable[..., str]]:
    """Register ``host:port`` with Prometheus (``file_sd``); returns the ``target`` label value.

    Usage: ``name = scrape_target("127.0.0.1:8000")``; the target is removed after the test.
    """
    if os.environ.get(ENV["prometheus"]):
        if not os.environ.get(TARGETS_ENV):
            pytest.skip(f"external Prometheus: set {TARGETS_ENV} to its file_sd folder")
        folder = Path(os.environ[TARGETS_ENV])
    else:
        assert stack is not None
        folder = stack.config.targets_dir
    written: list[Path] = []

    def register(address: str, name: str | None = None) -> str:
        target = name or f"{unique_prefix}-{re.sub(r'[^A-Za-z0-9_.-]', '_', address)}"
        written.append(write_scrape_target(folder, target, address))
        return target

    yield register
    for path in written:
        path.unlink(missing_ok=True)


@pytest.fixture
def fresh_stack_config(tmp_path: Path) -> StackConfig:
    """A test StackConfig on its own root and free ports (nothing started)."""
    return fast_stack_config(tmp_path / "stack")
