"""The librdkafka adapter's sink (:class:`RdKafkaSink`): predictions, dead letters, examples.

Part of the librdkafka adapter (:mod:`stream.rdkafka_io`, which exports it): it
implements :class:`stream.edge.Sink` and raises librdkafka's errors as
:class:`~stream.rdkafka_base.LibrdkafkaError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from confluent_kafka import KafkaException, Producer

from streamlearn.stream.config import KafkaConfig
from streamlearn.stream.delivery import Deliveries, refusal_reason
from streamlearn.stream.edge import Headers, Source, TopicPartition
from streamlearn.stream.rdkafka_base import (
    LibrdkafkaError,
    librdkafka_options,
    log_client_error,
    raised_as_edge_errors,
    rd_offsets,
)

__all__ = ["RdKafkaSink"]

log = logging.getLogger(__name__)


class RdKafkaSink:
    """Publishes predictions and dead letters, optionally in transactions.

    A :class:`stream.edge.Sink`; a transactional sink commits offsets with
    the group metadata of an :class:`RdKafkaSource`.
    """

    #: Each prediction of a live batch goes out as soon as it is scored: ``produce`` only
    #: queues it for librdkafka's own threads, so the first events of a burst do not wait
    #: for its last one.
    send_as_scored = True

    def __init__(
        self,
        config: KafkaConfig,
        transactional_id: str | None = None,
        bootstrap_timeout_ms: int | None = None,  # librdkafka connects in its own threads
    ) -> None:
        self.config = config
        #: Caps each wait (seconds) of the sink, as :attr:`stream.edge.Sink.limit`.
        self.limit: Callable[[float], float] = lambda timeout_s: timeout_s
        self.deliveries = Deliveries()
        options: dict[str, Any] = {
            **librdkafka_options(config),
            "client.id": config.client_id,
            "linger.ms": config.linger_ms,
            "batch.size": config.batch_size,
            "acks": "all",
            "partitioner": "murmur2_random",  # as kafka-python and the Java client
            "error_cb": log_client_error,
        }
        if transactional_id:
            options["transactional.id"] = transactional_id
            options["enable.idempotence"] = True
        self.transactional = transactional_id is not None
        self.in_transaction = False
        with raised_as_edge_errors():
            self.producer = Producer(options)
            if self.transactional:
                self.producer.init_transactions(self._timeout_s)

    @property
    def _timeout_s(self) -> float:
        return self.limit(self.config.max_block_ms / 1000)

    def _settle(self, error: Any, message: Any) -> None:
        if error is None:
            self.deliveries.delivered()
        else:
            output = (message.topic(), message.key(), message.value(), message.headers())
            self.deliveries.failed(LibrdkafkaError(error), output)

    def begin(self) -> None:
        """Open a transaction unless one is open (a transaction may span many batches)."""
        if self.transactional and not self.in_transaction:
            with raised_as_edge_errors():
                self.producer.begin_transaction()
            self.in_transaction = True

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers = None,
    ) -> None:
        """Queue one record; its outcome is checked at the next :meth:`flush`."""
        rd_headers = cast("list[tuple[str, str | bytes | None]] | None", headers)
        with raised_as_edge_errors():
            while True:
                try:
                    self.producer.produce(
                        topic, value, key, headers=rd_headers, on_delivery=self._settle
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self.producer.poll(0.05)
                except KafkaException as exc:
                    if refusal_reason(LibrdkafkaError(exc.args[0])) is None:
                        if self.transactional:  # failed for a record refused before?
                            self.flush()
                        raise
                    # over the producer's message.max.bytes: refused before it left, and
                    # reported at the next check as kafka-python reports its own
                    self.deliveries.sent()
                    self.deliveries.failed(
                        LibrdkafkaError(exc.args[0]), (topic, key, value, headers)
                    )
                    return
        self.deliveries.sent()

    def send_alone(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers = None,
    ) -> None:
        """Send a record in a produce request of its own (one the broker refused before).

        librdkafka does not split a record batch the broker finds larger than
        the topic takes: every record of it is refused. One refused so is tried
        again alone; its outcome is checked at the next :meth:`flush`.
        """
        with raised_as_edge_errors():
            self.producer.flush(self._timeout_s)
        self.send(topic, key, value, headers)
        with raised_as_edge_errors():
            self.producer.flush(self._timeout_s)

    def flush(self) -> None:
        """Send what is queued and wait for the answer to every send since the last flush.

        Raises :class:`stream.edge.UndeliveredError` if the broker refused or
        never acknowledged some of them.
        """
        with raised_as_edge_errors():
            self.producer.flush(self._timeout_s)
        self.deliveries.check(timeout_s=0.0)

    def commit(
        self,
        offsets: Mapping[TopicPartition, int],
        source: Source,
    ) -> None:
        """Make the batch's outputs visible and its input offsets committed."""
        self.flush()
        if self.transactional:
            self.begin()
            with raised_as_edge_errors():
                if offsets:
                    self.producer.send_offsets_to_transaction(
                        rd_offsets(offsets),
                        source.group_metadata(),
                        self._timeout_s,
                    )
                self.producer.commit_transaction(self._timeout_s)
            self.in_transaction = False
        else:
            source.commit(offsets)

    def abort(self) -> None:
        self.deliveries.reset()
        if self.transactional and self.in_transaction:
            self.in_transaction = False
            with raised_as_edge_errors():
                self.producer.abort_transaction(self._timeout_s)

    def close(self) -> None:
        with raised_as_edge_errors():
            unsent = self.producer.flush(self._timeout_s)
        if unsent:
            log.warning("closed the producer with records unsent (a resumed worker redoes them)")
