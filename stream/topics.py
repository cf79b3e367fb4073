"""Topics: which ones streamlearn uses, creating them, and what they take (kafka-python admin).

Examples
--------
>>> from streamlearn.stream.config import KafkaConfig
>>> sorted(topic_plan(KafkaConfig()).items())
[('dead-letter', 4), ('events', 4), ('labels', 4), ('predictions', 4)]
>>> replication_for(1), replication_for(3)
((1, {}), (3, {'min.insync.replicas': '2'}))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from streamlearn.stream.config import KafkaConfig

__all__ = [
    "bootstrap_option",
    "ensure_topics",
    "max_message_bytes",
    "replication_for",
    "topic_plan",
]

#: The replication factor of streamlearn's topics on a cluster large enough for it.
MAX_REPLICATION = 3

log = logging.getLogger(__name__)


def topic_plan(config: KafkaConfig) -> dict[str, int]:
    """Every topic streamlearn uses, with the partitions it is created with."""
    t = config.topics
    names = (t.events, t.labels, t.predictions, t.dead_letter, t.examples)
    return {name: t.partitions for name in names if name is not None}


def replication_for(brokers: int) -> tuple[int, dict[str, str]]:
    """The replication factor and topic configs of a new topic on ``brokers`` brokers.

    Three replicas with ``min.insync.replicas=2`` once the cluster has three brokers or
    more (a write acknowledged by ``acks=all`` survives the loss of any one broker, and
    writes go on while one is down); otherwise one replica per broker and the broker's
    ``min.insync.replicas``. The internal topics of the local stack's brokers follow the
    same rule (:mod:`stack.kafka_cluster`).

    Examples
    --------
    >>> [replication_for(n)[0] for n in (1, 2, 3, 5)]
    [1, 2, 3, 3]
    >>> replication_for(2)
    (2, {})
    """
    factor = max(1, min(MAX_REPLICATION, brokers))
    return factor, ({"min.insync.replicas": str(factor - 1)} if factor >= 3 else {})


def ensure_topics(
    config: KafkaConfig,
    topics: Mapping[str, int],
    bootstrap_timeout_ms: int | None = None,
    *,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the missing topics and wait until every partition has a leader.

    The replication factor follows the cluster's size (:func:`replication_for`: one
    replica on a single broker, three with ``min.insync.replicas=2`` from three brokers).

    The one topic creator: the worker, ``produce``, ``replay``, the demo, ``stack up
    --topic`` and the tests all call it. Existing topics are left as they are (their
    partition count is not changed), and so is one another client creates meanwhile.

    Parameters
    ----------
    config
        The Kafka settings: bootstrap servers, security options and client id.
    topics
        Partition count per topic name.
    bootstrap_timeout_ms
        Bounds the wait for a first broker, as for :class:`KafkaSource` and
        :class:`KafkaSink` (the worker's connection attempts); by default ``timeout_s``.
    timeout_s
        Seconds to wait for the broker, for the creation and for the leaders.

    Returns
    -------
    list of str
        The names created, in the given order.

    Raises
    ------
    KafkaError
        The broker refused a creation (the error of its code), could not be reached,
        or a partition had no leader within ``timeout_s`` (``KafkaTimeoutError``).
    """
    names = list(topics)
    if not names:
        return []
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        client_id=config.client_id + "-admin",
        request_timeout_ms=timeout_ms,
        **bootstrap_option(timeout_ms if bootstrap_timeout_ms is None else bootstrap_timeout_ms),
        **config.client_options(),
    )
    try:
        existing = set(admin.list_topics())
        missing = [name for name in topics if name not in existing]
        created: set[str] = set()
        if missing:
            brokers = len(admin.describe_cluster().get("brokers") or ()) or 1
            factor, configs = replication_for(brokers)
            new = {
                name: {
                    "num_partitions": int(topics[name]),
                    "replication_factor": factor,
                    **({"configs": configs} if configs else {}),
                }
                for name in missing
            }
            result = admin.create_topics(new, timeout_ms=timeout_ms, raise_errors=False)
            for topic in result["topics"]:
                code = topic["error_code"]
                if not code:
                    created.add(topic["name"])
                elif for_code(code) is not TopicAlreadyExistsError:
                    error, why = for_code(code), topic.get("error_message")
                    detail = f"{error.__name__}: {why}" if why else error.__name__
                    raise error(f"creating topic {topic['name']!r} failed: {detail}")
        admin.wait_for_topics(names, timeout_ms=timeout_ms)
    finally:
        admin.close()
    return [name for name in names if name in created]


def bootstrap_option(timeout_ms: int | None) -> dict[str, Any]:
    """The option that bounds a kafka-python client's wait for its first broker, when given."""
    return {} if timeout_ms is None else {"bootstrap_timeout_ms": timeout_ms}


def max_message_bytes(
    config: KafkaConfig, topic: str, bootstrap_timeout_ms: int | None = None
) -> int | None:
    """The ``max.message.bytes`` of ``topic`` (its own, or the broker's default).

    None when the broker does not say (the topic is missing, or describing its
    configuration is not allowed): the caller keeps its own limit.
    """
    admin = KafkaAdminClient(
        client_id=config.client_id + "-admin",
        **config.client_options(),
        **bootstrap_option(bootstrap_timeout_ms),
    )
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})
        described = admin.describe_configs([resource], config_filter="all")
    except KafkaError as exc:
        log.warning("the max.message.bytes of %s is unknown: %s", topic, exc)
        return None
    finally:
        admin.close()
    return _config_value(described, topic, "max.message.bytes")


def _config_value(described: Any, topic: str, name: str) -> int | None:
    """``name`` of ``topic`` in what kafka-python's ``describe_configs`` returned.

    >>> _config_value({"topic": {"t": {"max.message.bytes": {"value": "2000"}}}},
    ...               "t", "max.message.bytes")
    2000
    >>> _config_value({"topic": {}}, "t", "max.message.bytes") is None
    True
    """
    try:
        entries = described["topic"][topic]
        entry = entries[name]
        return int(entry["value"] if isinstance(entry, dict) else entry)
    except (KeyError, TypeError, ValueError):
        return None
