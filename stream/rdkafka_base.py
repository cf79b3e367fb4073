"""What both librdkafka clients share: their options, their errors as the edge's, offsets.

Part of the librdkafka adapter (:mod:`stream.rdkafka_io`, :mod:`stream.rdkafka_sink`).

Examples
--------
>>> from streamlearn.stream.config import KafkaConfig
>>> options = librdkafka_options(KafkaConfig(security_protocol="SASL_PLAINTEXT",
...     sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p"))
>>> sorted(options)
['bootstrap.servers', 'sasl.mechanism', 'sasl.password', 'sasl.username', 'security.protocol']
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as RdTopicPartition

from streamlearn.stream.config import KafkaConfig
from streamlearn.stream.edge import EdgeError, TopicPartition, named_text

__all__ = [
    "LibrdkafkaError",
    "librdkafka_options",
    "log_client_error",
    "raised_as_edge_errors",
    "rd_offsets",
]

log = logging.getLogger(__name__)

_SSL_FILES = {
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}


class LibrdkafkaError(EdgeError):
    """A librdkafka error, as the edge's: its text starts with the error's name.

    >>> from confluent_kafka import KafkaError as RdError
    >>> error = LibrdkafkaError(RdError(RdError._TIMED_OUT, "no reply"))
    >>> error.retriable, "no reply" in str(error), error.errno == RdError._TIMED_OUT
    (False, True, True)
    """

    __str__ = named_text

    def __init__(self, error: Any) -> None:
        #: ``errno``: a Kafka error code (as kafka-python's), or a negative local one.
        super().__init__(
            f"{error.name()}: {error.str()}",
            errno=int(error.code()),
            retriable=bool(error.retriable()),
        )


@contextmanager
def raised_as_edge_errors() -> Iterator[None]:
    try:
        yield
    except KafkaException as exc:
        raise LibrdkafkaError(exc.args[0]) from exc


def librdkafka_options(config: KafkaConfig) -> dict[str, Any]:
    """Connection and security options of every librdkafka client, from ``config``."""
    options: dict[str, Any] = {"bootstrap.servers": config.bootstrap_servers}
    if config.security_protocol != "PLAINTEXT":
        options["security.protocol"] = config.security_protocol
    if config.sasl_mechanism:
        options["sasl.mechanism"] = config.sasl_mechanism
        options["sasl.username"] = config.sasl_username
        options["sasl.password"] = (
            config.sasl_password.get_secret_value() if config.sasl_password else None
        )
    for name, option in _SSL_FILES.items():
        value = getattr(config, name)
        if value is not None:
            options[option] = str(value)
    return options


def rd_offsets(offsets: Mapping[TopicPartition, int]) -> list[RdTopicPartition]:
    """``offsets`` as librdkafka commits them."""
    return [RdTopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()]


def log_client_error(error: Any) -> None:
    """The clients' ``error_cb``: their errors outside any call, logged."""
    log.warning("kafka client: %s", error)
