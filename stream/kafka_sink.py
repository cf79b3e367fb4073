"""The kafka-python adapter's sink (:class:`KafkaSink`): predictions, dead letters, examples.

Part of the kafka-python adapter (:mod:`stream.kafka_io`, which exports it):
it implements :class:`stream.edge.Sink`, raises kafka-python's errors as
:class:`stream.edge.EdgeError` (:mod:`stream.kafka_errors`), and reaches into
kafka-python's producer only through :mod:`stream.kafka_shim`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka import KafkaProducer
from kafka import TopicPartition as KafkaPartition
from kafka.errors import KafkaError, KafkaTimeoutError, UnknownError
from kafka.structs import OffsetAndMetadata

from streamlearn.stream import kafka_shim
from streamlearn.stream.config import KafkaConfig
from streamlearn.stream.delivery import Deliveries, Output
from streamlearn.stream.edge import Headers, Source, TopicPartition, UndeliveredError
from streamlearn.stream.kafka_errors import as_edge_error, raising_edge_errors
from streamlearn.stream.topics import bootstrap_option

__all__ = ["KafkaSink", "kafka_offsets"]

log = logging.getLogger(__name__)


def kafka_offsets(offsets: Mapping[TopicPartition, int]) -> dict[KafkaPartition, Any]:
    """``offsets`` as kafka-python commits them."""
    return {
        KafkaPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "", -1)
        for tp, offset in offsets.items()
    }


def _timeout_error(message: str) -> Exception:
    """A sink's wait that did not end in time, as kafka-python's own timeout."""
    return as_edge_error(KafkaTimeoutError(message))


@raising_edge_errors
class KafkaSink:
    """Publishes predictions and dead letters, optionally in transactions.

    Every send is checked before the offsets of its inputs are committed: a
    record the broker refused or never acknowledged raises
    :class:`~stream.edge.UndeliveredError` at :meth:`commit` instead of being lost behind a
    committed offset. Every wait is bounded by ``kafka.max_block_ms``, and by
    :attr:`limit` of it: a worker asked to stop gives its last waits a grace period.
    """

    #: A batch's predictions go out together once it is scored: kafka-python's sender
    #: thread runs Python, and records trickling in while the batch is scored wake it
    #: to take the GIL from scoring (the transactional worker lost 13-27 % of its rate).
    send_as_scored = False

    def __init__(
        self,
        config: KafkaConfig,
        transactional_id: str | None = None,
        bootstrap_timeout_ms: int | None = None,
    ) -> None:
        self.config = config
        #: Caps each wait (seconds) of the sink: the identity unless the owner bounds them.
        self.limit: Callable[[float], float] = lambda timeout_s: timeout_s
        options: dict[str, Any] = {
            **bootstrap_option(bootstrap_timeout_ms),
            "client_id": config.client_id,
            "linger_ms": config.linger_ms,
            "batch_size": config.batch_size,
            "max_block_ms": config.max_block_ms,
            "acks": "all",
            **config.client_options(),
        }
        if transactional_id:
            options["transactional_id"] = transactional_id
            options["enable_idempotence"] = True
        self._options = options
        self.producer = KafkaProducer(**options)
        self.transactional = transactional_id is not None
        self.in_transaction = False
        self.deliveries = Deliveries(_timeout_error)
        if self.transactional:
            self.producer.init_transactions()

    def begin(self) -> None:
        """Open a transaction unless one is open (a transaction may span many batches)."""
        if self.transactional and not self.in_transaction:
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
        try:
            future = self.producer.send(topic, key=key, value=value, headers=headers)
        except KafkaError:
            if self.transactional:  # failed for a record refused before? that is the error
                self.flush()
            raise
        self._track(future, (topic, key, value, headers))

    def _track(self, future: Any, output: Output) -> None:
        """Count a send; its kafka-python future settles it."""
        self.deliveries.sent()
        future.add_callback(self.deliveries.delivered)
        future.add_errback(lambda error: self.deliveries.failed(as_edge_error(error), output))

    def send_alone(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers = None,
    ) -> None:
        """Send a record in a produce request of its own (one the broker refused before).

        The broker refuses a whole record batch larger than the topic takes; a
        record refused within one is tried again alone, so that only a record
        too large by itself is refused again. Its outcome is checked at the next
        :meth:`flush`, as any other send's.
        """
        timeout_s = self.config.max_block_ms / 1000
        self._flush_producer(timeout_s)
        self._renew_if_failed()
        self.send(topic, key, value, headers)
        self._flush_producer(timeout_s)
        self._renew_if_failed()  # settled: a refusal must not fail the next record's send

    def commit(
        self,
        offsets: Mapping[TopicPartition, int],
        source: Source,
    ) -> None:
        """Make the batch's outputs visible and its input offsets committed.

        In a transaction the offsets carry the consumer's group generation: the
        broker refuses them from a member the group has since moved on from.
        """
        self.flush()
        if self.transactional:
            self.begin()
            transactions = kafka_shim.transaction_manager(self.producer)
            if offsets:
                self._await(
                    transactions.send_offsets_to_transaction(
                        kafka_offsets(offsets), source.group_metadata()
                    ),
                    "adding the offsets to the transaction",
                )
            self._await(transactions.begin_commit(), "committing the transaction")
            self.in_transaction = False
        else:
            source.commit(offsets)

    def flush(self) -> None:
        """Send what is buffered and wait for the answer to every send since the last flush.

        Raises :class:`~stream.edge.UndeliveredError` if it refused or never acknowledged
        some of them.
        """
        deadline = time.monotonic() + self.limit(self.config.max_block_ms / 1000)
        self._flush_producer(deadline - time.monotonic())
        try:
            self.deliveries.check(max(0.0, deadline - time.monotonic()))
        except UndeliveredError:
            self._renew_if_failed()
            raise

    def _renew_if_failed(self) -> None:
        """Replace the producer if a refused record left it failing every later send.

        kafka-python's idempotent producer (its default) treats a record the broker
        refuses (too large) as fatal and fails every later send with that error;
        every send not yet answered is failed with it, so a new producer loses nothing. (A
        transactional producer only needs its transaction aborted.)
        """
        if self.transactional or not kafka_shim.has_fatal_error(self.producer):
            return
        log.info("the producer failed for good after a refused record: replacing it")
        self.producer.close(timeout=0)
        self.producer = KafkaProducer(**self._options)

    def _flush_producer(self, timeout_s: float) -> None:
        # kafka-python's flush raises UnknownError("Future not done") when the broker
        # finds a batch it waits on too large and the batch is split into new ones;
        # those are flushed in turn, down to single records the broker accepts or refuses.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.producer.flush(timeout=max(deadline - time.monotonic(), 0.001))
                return
            except UnknownError:
                if time.monotonic() >= deadline:
                    raise KafkaTimeoutError(f"batches still split after {timeout_s:g} s") from None

    def abort(self) -> None:
        """Forget the sends since the last commit; abort the open transaction, if any."""
        self.deliveries.reset()
        if self.transactional and self.in_transaction:
            self.in_transaction = False
            transactions = kafka_shim.transaction_manager(self.producer)
            self._await(transactions.begin_abort(), "aborting the transaction")

    def close(self) -> None:
        """Flush (within the sink's wait) and close the producer."""
        timeout_s = self.limit(self.config.max_block_ms / 1000)
        try:
            self._flush_producer(timeout_s)
            self.producer.close(timeout=timeout_s)
        except KafkaTimeoutError:
            log.warning("closed the producer with records unsent (a resumed worker redoes them)")

    def _await(self, result: Any, step: str) -> None:
        """Wait at most ``max_block_ms`` for a transactional step (kafka-python has no bound)."""
        kafka_shim.wake_sender(self.producer)
        timeout_ms = max(1, int(self.limit(self.config.max_block_ms / 1000) * 1000))
        if not result.wait(timeout_ms=timeout_ms):
            raise KafkaTimeoutError(f"{step} took longer than {timeout_ms} ms")
