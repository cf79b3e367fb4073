"""The stream worker: poll a batch, process it, publish, commit. Nothing else.

The loop is thin on purpose: decoding, features, scoring and learning live in
:class:`stream.processor.Processor`; Kafka in :mod:`stream.kafka_io`; Redis in
:mod:`features.store`; metrics in :mod:`metrics`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from features.store import BatchOutcome, EventOp, LabelOp, RedisStore
from learners.models import build_model
from metrics.instruments import WorkerMetrics
from metrics.monitor import Monitor, MonitoringMetrics
from stream.config import Settings
from stream.kafka_io import KafkaSink, KafkaSource, ensure_topics, topic_plan
from stream.processor import BatchOutput, ModelSlot, Processor

__all__ = ["RetryingStore", "Worker", "WorkerSummary", "backoff_delays"]

log = logging.getLogger(__name__)


def backoff_delays(base_s: float = 0.1, cap_s: float = 5.0) -> Callable[[int], float]:
    """Exponential backoff: the delay before retry ``n`` (0-based), capped.

    >>> delay = backoff_delays(0.1, 1.0)
    >>> [delay(n) for n in range(6)]
    [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    """
    return lambda attempt: min(cap_s, base_s * 2**attempt)


class RetryingStore:
    """A store whose batch call waits and retries while Redis is unavailable.

    Retrying is safe: the Lua script is atomic, and a batch that was applied
    but whose reply was lost comes back as replays with the same states.
    """

    def __init__(
        self,
        store: RedisStore,
        metrics: WorkerMetrics | None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.should_stop = should_stop
        self.delay = backoff_delays()

    def apply(
        self, ops: Sequence[EventOp | LabelOp], scores: Mapping[str, float], watermark_ms: int
    ) -> BatchOutcome:
        attempt = 0
        while True:
            try:
                outcome = self.store.apply(ops, scores, watermark_ms)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                if self.metrics is not None:
                    self.metrics.dependency_up.labels(dependency="redis").set(0)
                    self.metrics.retries.labels(dependency="redis").inc()
                delay = self.delay(attempt)
                log.warning("redis unavailable (%s); retry %d in %.1fs", exc, attempt + 1, delay)
                if self.should_stop() and attempt > 20:
                    raise
                time.sleep(delay)
                attempt += 1
                continue
            if self.metrics is not None and attempt:
                self.metrics.dependency_up.labels(dependency="redis").set(1)
                log.info("redis is back after %d retries", attempt)
            return outcome


@dataclass
class WorkerSummary:
    records: int = 0
    events: int = 0
    predictions: int = 0
    labels_learned: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    seconds: float = 0.0

    def add(self, records: int, out: BatchOutput) -> None:
        self.records += records
        self.batches += 1
        self.predictions += len(out.predictions)
        self.labels_learned += out.labels_learned
        for letter in out.dead_letters:
            self.dead_letters[letter.reason] = self.dead_letters.get(letter.reason, 0) + 1


class Worker:
    """One member of the consumer group: scores events and learns labels.

    Parameters
    ----------
    settings
        The effective configuration.
    registry
        Where metrics are registered; a fresh one when None.
    name
        Distinguishes workers of one group (client id, transactional id).
    """

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        name: str = "worker-0",
    ) -> None:
        self.settings = settings
        self.name = name
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry)
        ProcessCollector(registry=self.registry)
        self._stop = threading.Event()
        self.redis = redis.Redis.from_url(settings.redis.url, **settings.redis.client_options())
        store = RedisStore(self.redis, settings.store, settings.features.interactions)
        monitor = Monitor(
            settings.monitoring, MonitoringMetrics(self.registry), settings.model.threshold
        )
        slot = ModelSlot(settings.model.spec, build_model(settings.model.spec), monitor=monitor)
        self.metrics.model_info.info({"name": slot.name, "version": slot.version})
        self.processor = Processor(
            [slot],
            RetryingStore(store, self.metrics, self._stop.is_set),
            settings.features,
            settings.limits,
            settings.model.threshold,
            self.metrics,
        )
        self.source: KafkaSource | None = None
        self.sink: KafkaSink | None = None
        self.summary = WorkerSummary()
        self._last_lag = 0.0
        self._assignment: set[tuple[str, int]] = set()
        self._http: Any = None

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return."""
        self._stop.set()

    def serve_metrics(self) -> int:
        """Start the /metrics endpoint; returns the port it listens on."""
        config = self.settings.metrics
        self._http, thread = start_http_server(config.port, config.host, registry=self.registry)
        port = self._http.server_address[1]
        log.info("metrics on http://%s:%d/metrics", config.host, port)
        return port

    def _connect(self) -> None:
        kafka = self.settings.kafka
        if kafka.topics.create:
            ensure_topics(kafka, topic_plan(kafka))
        self.source = KafkaSource(kafka, read_committed=True)
        transactional_id = f"{kafka.group_id}-{self.name}" if kafka.transactions else None
        self.sink = KafkaSink(
            kafka.model_copy(update={"client_id": f"{kafka.client_id}-{self.name}"}),
            transactional_id,
        )

    def _publish(self, out: BatchOutput, received_s: float) -> None:
        assert self.sink is not None
        topics = self.settings.kafka.topics
        now = time.time()
        for prediction in out.predictions:
            latency_s = now - received_s
            self.sink.send(
                topics.predictions,
                prediction.event_id.encode(),
                prediction.to_json(latency_s * 1000),
            )
            self.metrics.processing.observe(latency_s)
            if prediction.record_timestamp_ms is not None:
                self.metrics.event_to_prediction.observe(
                    max(0.0, now - prediction.record_timestamp_ms / 1000)
                )
        self.metrics.predictions.inc(len(out.predictions))
        for letter in out.dead_letters:
            self.sink.send(
                topics.dead_letter,
                f"{letter.topic}:{letter.partition}:{letter.offset}".encode(),
                letter.to_json(),
                [("reason", letter.reason.encode())],
            )

    def _update_lag(self) -> None:
        assert self.source is not None
        if time.monotonic() - self._last_lag < 5.0:
            return
        self._last_lag = time.monotonic()
        for tp, lag in self.source.lag().items():
            self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)

    def run_once(self) -> int:
        """Poll and handle one batch; returns the number of records."""
        assert self.source is not None and self.sink is not None
        t0 = time.perf_counter()
        records = self.source.next_batch()
        received_s = time.time()
        self.metrics.stage_seconds.labels(stage="poll").observe(time.perf_counter() - t0)
        self._update_lag()
        assignment = self.source.event_partitions()
        if assignment != self._assignment:
            self._assignment = assignment
            self.processor.assign(assignment)
        if not records:
            return 0
        self.metrics.batch_size.observe(len(records))
        for record in records:
            self.metrics.records.labels(kind=record.kind).inc()
        self.sink.begin()
        out = self.processor.process(records)
        t1 = time.perf_counter()
        self._publish(out, received_s)
        t2 = time.perf_counter()
        self.sink.commit(self.source.position(records), self.settings.kafka.group_id, self.source)
        t3 = time.perf_counter()
        self.metrics.stage_seconds.labels(stage="produce").observe(t2 - t1)
        self.metrics.stage_seconds.labels(stage="commit").observe(t3 - t2)
        self.metrics.batches.inc()
        self.summary.add(len(records), out)
        return len(records)

    def run(
        self, idle_timeout_s: float | None = None, max_records: int | None = None
    ) -> WorkerSummary:
        """Process until stopped (SIGTERM, SIGINT, :meth:`stop`), idle, or enough records."""
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.stop())
        self._connect()
        started = time.monotonic()
        last_record = started
        try:
            while not self._stop.is_set():
                n = self.run_once()
                now = time.monotonic()
                if n:
                    last_record = now
                elif idle_timeout_s is not None and now - last_record >= idle_timeout_s:
                    break
                if max_records is not None and self.summary.records >= max_records:
                    break
        finally:
            self.summary.seconds = time.monotonic() - started
            self.summary.events = self.processor.events_seen
            self.close()
        return self.summary

    def close(self) -> None:
        self.processor.flush()
        for slot in self.processor.slots:
            if slot.monitor is not None:
                slot.monitor.publish(refresh=True)
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        if self.source is not None:
            self.source.close()
            self.source = None
        if self._http is not None:
            self._http.shutdown()
            self._http = None
