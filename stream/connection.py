"""The worker's connection to Kafka: open its source and sink, retrying; close them.

:class:`Connection` builds the clients with the worker's factories (by default
those of :mod:`stream.kafka_clients`), tries again with a backoff while no
broker answers, saying since when Kafka has been out of reach, and stops
trying for good when the broker refuses the worker's credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.stream.edge import EdgeError, Sink, SinkFactory, Source, SourceFactory
from streamlearn.stream.retrying import backoff_delays
from streamlearn.stream.waits import LoggedErrors, Outage, StopFlag, Stopped, kafka_refusal

__all__ = ["Connection"]

log = logging.getLogger(__name__)


class Connection:
    """The source and the sink of one worker, open or not.

    Parameters
    ----------
    source_factory, sink_factory
        Build the clients (at each :meth:`open`).
    prepare_topics
        Called first at each :meth:`open`: creates the topics if so configured and
        returns the dead letter topic's ``max.message.bytes`` (None: unknown).
    bootstrap
        The brokers' address, for messages (``kafka.bootstrap_servers``).
    max_block_s
        The longest a client's close waits once a stop was requested.
    stop
        The worker's stop flag: a request ends every wait at once.
    metrics
        The worker's series (``dependency_up``, ``retries``).
    """

    def __init__(
        self,
        source_factory: SourceFactory,
        sink_factory: SinkFactory,
        prepare_topics: Callable[[], int | None],
        bootstrap: str,
        max_block_s: float,
        stop: StopFlag,
        metrics: WorkerMetrics,
    ) -> None:
        self.source_factory, self.sink_factory = source_factory, sink_factory
        self.prepare_topics = prepare_topics
        self.bootstrap = bootstrap
        self.max_block_s = max_block_s
        self.stop = stop
        self.metrics = metrics
        #: Names Kafka in log lines and in :class:`~stream.waits.Stopped`.
        self.what = f"Kafka at {bootstrap}"
        self.source: Source | None = None
        self.sink: Sink | None = None
        #: The dead letter topic's ``max.message.bytes`` as of the last :meth:`open`.
        self.dead_letter_topic_max: int | None = None

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """A wait for Kafka: a stop request ends it (see :meth:`StopFlag.waiting_for`)."""
        with self.stop.waiting_for(self.what):
            yield

    def open(self) -> None:
        """Open the clients, trying again while no broker answers.

        Each attempt waits up to :data:`stream.kafka_clients.CONNECT_ATTEMPT_MS`
        for a broker; while none answers a line says since when Kafka has been out
        of reach. A stop request ends the wait at once (:class:`~stream.waits.Stopped`);
        credentials or permissions the broker refuses end it for good
        (:class:`~stream.waits.Refused`).
        """
        outage = Outage(self.what)
        delay = backoff_delays(0.5, 5.0)
        attempt = 0
        while True:
            if self.stop.is_set():
                raise Stopped(self.what)
            logged = LoggedErrors()
            outage.begin()
            try:
                with self.waiting(), logged.watching():
                    self._open_clients()
            except EdgeError as exc:
                self.close(timeout_s=1.0)
                refusals = (kafka_refusal(e, self.bootstrap) for e in [exc, *logged.seen])
                refused = next((r for r in refusals if r is not None), None)
                if refused is not None:
                    raise refused from None
                self.metrics.dependency_up.labels(dependency="kafka").set(0)
                self.metrics.retries.labels(dependency="kafka").inc()
                line = outage.failed(logged.last or exc)
                if line is not None:
                    log.warning("%s (trying again)", line)
                if self.stop.wait(delay(attempt)):
                    raise Stopped(self.what) from None
                attempt += 1
                continue
            back = outage.recovered()
            if back is not None:
                log.info("%s", back)
            self.metrics.dependency_up.labels(dependency="kafka").set(1)
            return

    def _open_clients(self) -> None:
        self.dead_letter_topic_max = self.prepare_topics()
        self.source = self.source_factory()
        self.sink = self.sink_factory()
        self.sink.limit = self.stop.bound  # a stopping worker's last waits get a grace period

    def close(self, timeout_s: float | None = None) -> None:
        """Close the clients; ``timeout_s`` (or the stop grace period) bounds the wait."""
        if timeout_s is None and self.stop.is_set():
            timeout_s = self.stop.bound(self.max_block_s)
        sink, source, self.sink, self.source = self.sink, self.source, None, None
        try:
            if sink is not None:
                sink.close()
        except EdgeError as exc:
            log.warning("closing the Kafka producer failed: %s", exc)
        try:
            if source is not None:
                source.close(timeout_s)
        except EdgeError as exc:
            log.warning("closing the Kafka consumer failed: %s", exc)

    def reopen(self, connect: Callable[[], None], restore: Callable[[], None]) -> None:
        """After a failure: ``connect()`` and ``restore()`` until both succeed.

        ``connect`` waits for a broker (the worker's :meth:`open`); a failure of
        ``restore`` (reading the committed offsets) closes the clients and tries
        again after a backoff. A stop request or a refusal ends the attempts.
        """
        delay = backoff_delays(0.5, 10.0)
        attempt = 0
        while True:
            connect()  # waits for a broker; Stopped or Refused end the wait
            try:
                restore()
                return
            except EdgeError as exc:
                refused = kafka_refusal(exc, self.bootstrap)
                if refused is not None:
                    raise refused from None
                log.warning("kafka still unavailable (%s); retry in %.1fs", exc, delay(attempt))
                self.close(timeout_s=1.0)
                if self.stop.wait(delay(attempt)):
                    raise Stopped(self.what) from exc
                attempt += 1
