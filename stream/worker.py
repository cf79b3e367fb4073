"""The stream worker: poll a batch, process it, publish, checkpoint. Nothing else.

The loop is thin on purpose: decoding, features, scoring and learning live in
:class:`stream.processor.Processor`; Kafka in :mod:`stream.kafka_io`; Redis in
:mod:`features.store`; model versions in :mod:`learners.registry` and
:mod:`learners.checkpoint`; metrics in :mod:`metrics`.

Offsets are committed to Kafka only with a checkpoint, the model snapshot
that has learned everything before them. After a crash the worker resumes
from its last checkpoint: the records after it are processed again, Redis
recognises them (same source record) and hands back the state they saw, and
the model, rewound to the checkpoint, learns their labels once more.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from streamlearn.features.redis_store import RedisStore
from streamlearn.features.store import BatchOutcome, EventOp, LabelOp
from streamlearn.learners.checkpoint import Checkpoint, CheckpointStore
from streamlearn.learners.registry import ModelRegistry, NonFiniteModelError
from streamlearn.metrics.instruments import COMMIT_STAGE, POLL_STAGE, PRODUCE_STAGE, WorkerMetrics
from streamlearn.metrics.monitor import Monitor, MonitoringMetrics
from streamlearn.stream.config import Settings, mask_url
from streamlearn.stream.kafka_io import (
    KafkaSink,
    KafkaSource,
    RefusedRecord,
    UndeliveredError,
    ensure_topics,
    max_message_bytes,
    topic_plan,
)
from streamlearn.stream.processor import (
    DEAD_LETTER_MIN_BYTES,
    BatchOutput,
    ModelSlot,
    Prediction,
    PreparedBatch,
    Processor,
    Record,
)
from streamlearn.stream.rdkafka_io import RdKafkaSink, RdKafkaSource
from streamlearn.stream.runtime import tune_interpreter
from streamlearn.stream.waits import (
    LoggedErrors,
    Outage,
    Refused,
    StopFlag,
    Stopped,
    kafka_refusal,
    redis_refusal,
)

__all__ = [
    "RetryingStore",
    "Worker",
    "WorkerSummary",
    "backoff_delays",
    "dead_letter_bound",
    "retrying",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
#: The longest a Kafka client's construction waits for a first broker: while Kafka is
#: out of reach the worker says so (and since when) once per attempt, and tries again.
CONNECT_ATTEMPT_MS = 5_000


def backoff_delays(base_s: float = 0.1, cap_s: float = 5.0) -> Callable[[int], float]:
    """Exponential backoff: the delay before retry ``n`` (0-based), capped.

    >>> delay = backoff_delays(0.1, 1.0)
    >>> [delay(n) for n in range(6)]
    [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    """
    return lambda attempt: min(cap_s, base_s * 2**attempt)


def retrying(
    call: Callable[[], T],
    dependency: str,
    errors: tuple[type[BaseException], ...],
    metrics: WorkerMetrics | None,
    give_up: Callable[[], bool] = lambda: False,
    *,
    stop: StopFlag | None = None,
    what: str | None = None,
    refusal: Callable[[BaseException], Refused | None] | None = None,
) -> T:
    """``call()``, retried with backoff while it raises one of ``errors``.

    ``give_up`` is asked after each failure; when it says yes the error is raised.
    A ``stop`` request ends the wait between attempts at once, and a failure once
    it is set: :class:`~stream.waits.Stopped`. An error that ``refusal`` turns
    into a :class:`~stream.waits.Refused` (wrong credentials) is raised at once,
    never retried. While ``call`` fails, a line says since when ``what`` (the
    dependency and its address) has been out of reach, at most every 5 s.

    >>> from streamlearn.stream.waits import StopFlag
    >>> flag, calls = StopFlag(), []
    >>> def down():
    ...     calls.append(1)
    ...     if len(calls) == 2:
    ...         flag.set()
    ...     raise ConnectionError("refused")
    >>> try:
    ...     retrying(down, "redis", (ConnectionError,), None, stop=flag, what="Redis at r:1")
    ... except Stopped as stopped:
    ...     print(stopped, len(calls))
    stopped while waiting for Redis at r:1 2
    """
    delay = backoff_delays()
    attempt = 0
    outage = Outage(what or dependency)
    while True:
        try:
            result = call()
        except Exception as exc:
            refused = refusal(exc) if refusal is not None else None
            if refused is not None:
                raise refused from None
            if not isinstance(exc, errors):
                raise
            if metrics is not None:
                metrics.dependency_up.labels(dependency=dependency).set(0)
                metrics.retries.labels(dependency=dependency).inc()
            if give_up():
                raise
            if stop is not None and stop.is_set():
                raise Stopped(outage.what) from exc
            line = outage.failed(exc)
            if line is not None:
                log.warning("%s (retry %d in %.1f s)", line, attempt + 1, delay(attempt))
            if stop is None:
                time.sleep(delay(attempt))
            elif stop.wait(delay(attempt)):
                raise Stopped(outage.what) from exc
            attempt += 1
            continue
        if attempt:
            if metrics is not None:
                metrics.dependency_up.labels(dependency=dependency).set(1)
            log.info("%s", outage.recovered())
        return result


#: A batch whose oldest record had waited longer than this when polled is a backlog being
#: caught up: its predictions go out together, in fewer, fuller produce requests (sent as
#: they were scored, they took one request per linger and doubled the broker's CPU).
CATCHING_UP_S = 1.0


def waited_s(records: Sequence[Record], polled_s: float) -> float:
    """How long the oldest of ``records`` (by Kafka timestamp) had waited at ``polled_s``.

    >>> waited_s([Record("events", b"", "t", 0, 0, 1_000), Record("labels", b"", "t", 0, 1, None),
    ...           Record("events", b"", "t", 0, 2, 3_000)], polled_s=4.5)
    3.5
    >>> waited_s([Record("events", b"", "t", 0, 0, None)], polled_s=4.5)
    0.0
    """
    stamps = [record.timestamp_ms for record in records if record.timestamp_ms is not None]
    return polled_s - min(stamps) / 1000 if stamps else 0.0


def _key_text(key: bytes | None) -> str:
    """A record key for a log line.

    >>> _key_text(b"events:0:7"), _key_text(None), _key_text(b"\\xff")
    ("'events:0:7'", 'without a key', "b'\\\\xff'")
    """
    if key is None:
        return "without a key"
    try:
        return repr(key.decode())
    except UnicodeDecodeError:
        return repr(key)


def _partition_list(partitions: set[tuple[str, int]]) -> str:
    """Partitions for a log line, sorted.

    >>> _partition_list({("events", 1), ("events", 0)})
    'events:0, events:1'
    >>> _partition_list(set())
    'none'
    """
    return ", ".join(f"{topic}:{p}" for topic, p in sorted(partitions)) or "none"


#: Bytes a record takes in its topic besides its value, key and headers: the record
#: batch's header (61) and the record's own varints, with room to spare.
RECORD_OVERHEAD = 128
#: Outputs whose refusals are remembered at most (the oldest are forgotten first).
REFUSALS_REMEMBERED = 10_000


def dead_letter_bound(configured: int, topic_max: int | None, key: bytes, reason: str) -> int:
    """The largest dead letter value its topic accepts, with its key and reason header.

    ``topic_max`` is the topic's ``max.message.bytes`` (None: unknown); the bound
    is never under :data:`stream.processor.DEAD_LETTER_MIN_BYTES`, so a topic
    smaller than that refuses the dead letter, which is then dropped after its
    attempts.

    >>> dead_letter_bound(262_144, None, b"events:0:7", "invalid_json")
    262144
    >>> dead_letter_bound(262_144, 2_000, b"events:0:7", "invalid_json")
    1844
    >>> dead_letter_bound(262_144, 600, b"events:0:7", "invalid_json")
    1024
    """
    if topic_max is None:
        return configured
    room = topic_max - RECORD_OVERHEAD - len(key) - len("reason") - len(reason.encode())
    return max(DEAD_LETTER_MIN_BYTES, min(configured, room))


class RetryingStore:
    """A store whose batch call waits and retries while Redis is unavailable.

    Retrying is safe: the Lua script is atomic, and a batch that was applied
    but whose reply was lost comes back as replays with the same states. A
    ``stop`` request ends the wait; refused credentials end it at once (see
    :func:`retrying`); ``give_up`` says when to raise the error instead of waiting.
    """

    def __init__(
        self,
        store: RedisStore,
        metrics: WorkerMetrics | None,
        stop: StopFlag | None = None,
        url: str | None = None,
        give_up: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.stop = stop
        self.url = url
        self.give_up = give_up

    def _refusal(self, error: BaseException) -> Refused | None:
        return redis_refusal(error, self.url or "(the configured URL)")

    def apply(
        self,
        ops: Sequence[EventOp | LabelOp],
        scores: Mapping[str, float],
        watermarks: Mapping[int, int],
        clock_ms: int = -1,
    ) -> BatchOutcome:
        return retrying(
            lambda: self.store.apply(ops, scores, watermarks, clock_ms),
            "redis",
            REDIS_ERRORS,
            self.metrics,
            self.give_up,
            stop=self.stop,
            what=f"Redis at {mask_url(self.url)}" if self.url else "redis",
            refusal=self._refusal,
        )

    def pending_count(self) -> int:
        return self.store.pending_count()


class _PredictionSender:
    """Publishes a batch's predictions, each as it is handed over, and times the sending."""

    def __init__(
        self,
        sink: KafkaSink | RdKafkaSink,
        topic: str,
        metrics: WorkerMetrics,
        received_s: float,
        send_output: Callable[[str, bytes, bytes], None],
        refusals: Mapping[tuple[str, bytes | None], int],
    ) -> None:
        self.sink, self.topic, self.metrics = sink, topic, metrics
        self.received_s = received_s
        self.seconds = 0.0
        self.send_output, self.refusals = send_output, refusals

    def __call__(self, prediction: Prediction) -> None:
        t0 = time.perf_counter()
        now = time.time()
        latency_s = now - self.received_s
        value = prediction.to_json(latency_s * 1000)
        key = prediction.event_id.encode()
        if self.refusals:  # some output was refused: this one may be it
            self.send_output(self.topic, key, value)
        else:
            self.sink.send(self.topic, key, value)
        self.metrics.processing.observe(latency_s)
        if prediction.record_timestamp_ms is not None:
            delay = max(0.0, now - prediction.record_timestamp_ms / 1000)
            self.metrics.event_to_prediction.observe(delay)
        self.seconds += time.perf_counter() - t0


@dataclass
class _InFlight:
    """A batch sent to Redis and not yet scored."""

    batch: PreparedBatch
    future: Future[BatchOutcome]
    records: list[Record]
    received_s: float


class _IdleClock:
    """When a worker asked to stop once idle has waited long enough.

    Idle time runs from the last record or the last change of the assignment.
    Before the first assignment the worker waits for the group join, up to
    twice the session timeout more (a dead member must time out first).

    >>> clock = _IdleClock(3.0, session_timeout_s=6.0, started=0.0)
    >>> clock.expired(10.0, 0, set()), clock.expired(16.0, 0, set())
    (False, True)
    >>> clock, owned = _IdleClock(3.0, 6.0, 0.0), {("events", 0)}
    >>> clock.expired(1.0, 0, owned), clock.expired(3.5, 0, owned), clock.expired(4.1, 0, owned)
    (False, False, True)
    >>> clock.expired(4.2, 0, set()), clock.expired(7.3, 0, set())
    (False, True)
    """

    def __init__(self, timeout_s: float | None, session_timeout_s: float, started: float) -> None:
        self.timeout_s = timeout_s
        self.join_s = (timeout_s or 0.0) + 2 * session_timeout_s
        self.started = started
        self.last = started
        self.assignment: set[tuple[str, int]] = set()
        self.joined = False

    def rejoin(self, now: float) -> None:
        """Wait for a new group join from ``now`` (after reconnecting to Kafka).

        >>> clock = _IdleClock(3.0, session_timeout_s=6.0, started=0.0)
        >>> clock.expired(1.0, 5, {("events", 0)}), clock.expired(40.0, 0, {("events", 0)})
        (False, True)
        >>> clock.rejoin(40.0)
        >>> clock.expired(41.0, 0, {("events", 0)}), clock.expired(48.0, 0, set())
        (False, False)
        """
        self.started = self.last = now
        self.assignment = set()
        self.joined = False

    def expired(self, now: float, records: int, assignment: set[tuple[str, int]]) -> bool:
        if records or assignment != self.assignment:
            self.last, self.assignment = now, set(assignment)
            self.joined = self.joined or bool(assignment)
        if self.timeout_s is None:
            return False
        if not self.joined:
            return now - self.started >= self.join_s
        return now - self.last >= self.timeout_s


@dataclass
class WorkerSummary:
    records: int = 0
    events: int = 0
    predictions: int = 0
    labels_learned: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    checkpoints: int = 0
    recoveries: int = 0
    rewinds: int = 0
    seconds: float = 0.0
    busy_seconds: float = 0.0

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
        Distinguishes workers of one group (client id, transactional id, checkpoint).
    signing_key
        Signs and verifies model snapshots; without it there are no checkpoints,
        offsets are committed every ``kafka.commit_interval_s`` and a restart may
        learn some labels twice (at-least-once learning).
    """

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        name: str = "worker-0",
        signing_key: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry)
        ProcessCollector(registry=self.registry)
        self._stop = StopFlag()
        self._closing = False
        self._kafka_at = f"Kafka at {settings.kafka.bootstrap_servers}"
        self.redis = redis.Redis.from_url(settings.redis.url, **settings.redis.client_options())
        namespace = settings.store.key_prefix
        self.models = ModelRegistry(self.redis, namespace, signing_key) if signing_key else None
        self.checkpoints = (
            CheckpointStore(self.redis, namespace, settings.kafka.group_id, name)
            if self.models is not None and settings.checkpoint.enabled
            else None
        )
        store = RedisStore(self.redis, settings.store, settings.features.interactions)
        monitor = Monitor(
            settings.monitoring, MonitoringMetrics(self.registry), settings.model.threshold
        )
        self.slot = ModelSlot(settings.model.spec, settings.model.build(), monitor=monitor)
        self.processor = Processor(
            [self.slot],
            RetryingStore(
                store, self.metrics, self._stop, settings.redis.url, lambda: self._closing
            ),
            settings.features,
            settings.limits,
            settings.model.threshold,
            self.metrics,
            keep_examples=settings.kafka.topics.examples is not None,
            watermark_window=settings.store.watermark_window,
            watermark_quantile=settings.store.watermark_quantile,
        )
        self.source: KafkaSource | RdKafkaSource | None = None
        self.sink: KafkaSink | RdKafkaSink | None = None
        self.summary = WorkerSummary()
        self._generation = 0
        self._uncommitted: dict[TopicPartition, int] = {}
        self._labels_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._last_registry_poll = 0.0
        self._last_lag = 0.0
        self._assignment: set[tuple[str, int]] = set()
        self._revocations = 0
        self._inflight: _InFlight | None = None
        #: Refusals so far of each output the broker refused for itself, by (topic, key).
        self._refusals: OrderedDict[tuple[str, bytes | None], int] = OrderedDict()
        #: The outputs refused ``kafka.max_delivery_attempts`` times, with why: dropped when sent.
        self._undeliverable: dict[tuple[str, bytes | None], str] = {}
        self._dead_letter_topic_max: int | None = None
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-store")
        self._http: Any = None
        self._announce()

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Ask the loop to finish its current batch, checkpoint and return."""
        self._stop.set()

    def serve_metrics(self) -> int:
        """Start the /metrics endpoint; returns the port it listens on."""
        config = self.settings.metrics
        self._http, _ = start_http_server(config.port, config.host, registry=self.registry)
        port = self._http.server_address[1]
        log.info("metrics on http://%s:%d/metrics", config.host, port)
        return port

    def _announce(self) -> None:
        self.metrics.model_info.info({"name": self.slot.name, "version": self.slot.version})

    def _connect(self) -> None:
        """Open the Kafka clients, trying again while no broker answers.

        Each attempt waits up to :data:`CONNECT_ATTEMPT_MS` for a broker; while
        none answers a line says since when Kafka has been out of reach. A stop
        request ends the wait at once (:class:`~stream.waits.Stopped`); credentials
        or permissions the broker refuses end it for good (:class:`~stream.waits.Refused`).
        """
        kafka = self.settings.kafka
        outage = Outage(self._kafka_at)
        delay = backoff_delays(0.5, 5.0)
        attempt = 0
        while True:
            if self._stop.is_set():
                raise Stopped(self._kafka_at)
            logged = LoggedErrors()
            outage.begin()
            try:
                with self._stop.waiting_for(self._kafka_at), logged.watching():
                    self._open_clients()
            except KafkaError as exc:
                self._disconnect(timeout_s=1.0)
                refusals = (kafka_refusal(e, kafka.bootstrap_servers) for e in [exc, *logged.seen])
                refused = next((r for r in refusals if r is not None), None)
                if refused is not None:
                    raise refused from None
                self.metrics.dependency_up.labels(dependency="kafka").set(0)
                self.metrics.retries.labels(dependency="kafka").inc()
                line = outage.failed(logged.last or exc)
                if line is not None:
                    log.warning("%s (trying again)", line)
                if self._stop.wait(delay(attempt)):
                    raise Stopped(self._kafka_at) from None
                attempt += 1
                continue
            back = outage.recovered()
            if back is not None:
                log.info("%s", back)
            self.metrics.dependency_up.labels(dependency="kafka").set(1)
            return

    def _open_clients(self) -> None:
        kafka = self.settings.kafka
        if kafka.topics.create:
            ensure_topics(kafka, topic_plan(kafka), CONNECT_ATTEMPT_MS)
        self._dead_letter_topic_max = max_message_bytes(
            kafka, kafka.topics.dead_letter, CONNECT_ATTEMPT_MS
        )
        source: type[KafkaSource | RdKafkaSource] = KafkaSource
        sink: type[KafkaSink | RdKafkaSink] = KafkaSink
        if kafka.client == "librdkafka":
            source, sink = RdKafkaSource, RdKafkaSink
        self.source = source(
            kafka,
            read_committed=True,
            instance_id=self.name,
            bootstrap_timeout_ms=CONNECT_ATTEMPT_MS,
        )
        transactional_id = f"{kafka.group_id}-{self.name}" if kafka.transactions else None
        client = kafka.model_copy(update={"client_id": f"{kafka.client_id}-{self.name}"})
        self.sink = sink(client, transactional_id, bootstrap_timeout_ms=CONNECT_ATTEMPT_MS)
        self.sink.limit = self._stop.bound  # a stopping worker's last waits get a grace period

    def _disconnect(self, timeout_s: float | None = None) -> None:
        """Close the Kafka clients; ``timeout_s`` (or the stop grace period) bounds the wait."""
        if timeout_s is None and self._stop.is_set():
            timeout_s = self._stop.bound(self.settings.kafka.max_block_ms / 1000)
        sink, source, self.sink, self.source = self.sink, self.source, None, None
        try:
            if sink is not None:
                sink.close()
        except KafkaError as exc:
            log.warning("closing the Kafka producer failed: %s", exc)
        try:
            if source is not None:
                source.close(timeout_s)
        except KafkaError as exc:
            log.warning("closing the Kafka consumer failed: %s", exc)

    # ------------------------------------------------------------------ models

    def _redis(self, call: Callable[[], T]) -> T:
        """``call()``, waiting for Redis and retrying while it is unavailable.

        Every Redis call of the worker goes through here (the store's through
        :class:`RetryingStore`): Redis being away pauses the worker, never ends it;
        a stop request ends the wait, refused credentials end the worker.
        """
        return retrying(
            call,
            "redis",
            REDIS_ERRORS,
            self.metrics,
            lambda: self._closing,
            stop=self._stop,
            what=f"Redis at {mask_url(self.settings.redis.url)}",
            refusal=lambda error: redis_refusal(error, self.settings.redis.url),
        )

    def _use(self, version: str, reason: str) -> None:
        models = self.models
        assert models is not None
        model, info = self._redis(lambda: models.load(version))
        self.slot.model = model
        self.slot.version = info.version
        self.slot.labels_learned = info.labels_learned
        self.slot.events_scored = info.events_scored
        self._announce()
        log.info("serving model v%s (%s)", info.version, reason)

    def _restore(self) -> None:
        """Resume from the checkpoint that agrees with Kafka, or a newer promoted model.

        Offsets read since the last commit are forgotten either way: the
        records behind them are read again from the committed offsets.
        """
        self._uncommitted.clear()
        self._labels_since_checkpoint = 0
        if self.models is None:
            return
        assert self.source is not None
        checkpoint: Checkpoint | None = None
        if self.checkpoints is not None:
            store, source = self.checkpoints, self.source

            def committed(names: list[str]) -> dict[str, int | None]:
                with self._stop.waiting_for(self._kafka_at):
                    return source.committed(names)

            checkpoint = self._redis(lambda: store.recover(committed))
        current, generation = self._redis(self.models.current_state)
        if current is not None and generation > (checkpoint.generation if checkpoint else 0):
            self._use(current, f"promoted, generation {generation}")
        elif checkpoint is not None:
            self._use(checkpoint.version, "checkpoint")
        else:
            self.slot.model = self.settings.model.build()
            self.slot.version, self.slot.labels_learned, self.slot.events_scored = "0", 0, 0
            self._announce()
        self._generation = generation

    def _watch_registry(self) -> None:
        """Swap in a model promoted or rolled back since we last looked."""
        if self.models is None:
            return
        now = time.monotonic()
        if now - self._last_registry_poll < self.settings.checkpoint.registry_poll_seconds:
            return
        self._last_registry_poll = now
        current, generation = self._redis(self.models.current_state)
        if generation != self._generation and current is not None:
            self._generation = generation
            self._use(current, f"promoted, generation {generation}")
            if self.slot.monitor is not None:
                self.slot.monitor.reset_reference()

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint_due(self) -> bool:
        config = self.settings.checkpoint
        if self.checkpoints is None:
            interval = self.settings.kafka.commit_interval_s
            return time.monotonic() - self._last_checkpoint >= interval
        return (
            self._labels_since_checkpoint >= config.every_labels
            or time.monotonic() - self._last_checkpoint >= config.every_seconds
        )

    def checkpoint(self) -> None:
        """Snapshot the model, then commit the offsets it reflects (two phases)."""
        assert self.source is not None and self.sink is not None
        self._deliver()
        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in self._uncommitted.items()}
        if self.checkpoints is None or self.models is None:
            with self._stop.waiting_for(self._kafka_at):
                self.sink.commit(offsets, self.source)
            self._uncommitted.clear()
            self._last_checkpoint = time.monotonic()
            return
        if not offsets:
            self._last_checkpoint = time.monotonic()
            return
        self.processor.flush()
        names = {f"{tp.topic}:{tp.partition}": o for tp, o in self._uncommitted.items()}
        monitor = self.slot.monitor
        quality = monitor.snapshot()["quality"] if monitor is not None else {}
        models, checkpoints = self.models, self.checkpoints
        note = f"checkpoint of {self.name} in {self.settings.kafka.group_id}"
        try:
            info = self._redis(
                lambda: models.save(
                    self.slot.model,
                    name=self.slot.name,
                    parent=self.slot.version,
                    events_scored=self.slot.events_scored,
                    labels_learned=self.slot.labels_learned,
                    offsets=names,
                    metrics={k: v for k, v in quality.items() if isinstance(v, float | int | None)},
                    note=note,
                )
            )
        except NonFiniteModelError as error:
            # Its offsets stay uncommitted: a restart resumes from the last finite model.
            log.error("checkpoint skipped, offsets not committed: %s", error)
            self.metrics.checkpoints_refused.inc()
            self._labels_since_checkpoint = 0
            self._last_checkpoint = time.monotonic()
            return
        self._redis(lambda: checkpoints.prepare(Checkpoint(info.version, names, self._generation)))
        with self._stop.waiting_for(self._kafka_at):
            self.sink.commit(offsets, self.source)
        self._redis(checkpoints.confirm)
        self._redis(
            lambda: models.prune(note, self.settings.checkpoint.keep_versions, {info.version})
        )
        self.slot.version = info.version
        self._announce()
        self._uncommitted.clear()
        self._labels_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self.metrics.checkpoints.inc()
        self.summary.checkpoints += 1

    # ------------------------------------------------------------------ batches

    def _publish(self, out: BatchOutput, send: Callable[[Prediction], None] | None) -> None:
        """The batch's predictions through ``send`` (None: they went out as they were
        scored), then its dead letters and its examples for the training log."""
        assert self.sink is not None
        topics = self.settings.kafka.topics
        if send is not None:
            for prediction in out.predictions:
                send(prediction)
        self.metrics.predictions.inc(len(out.predictions))
        configured = self.settings.kafka.dead_letter_max_bytes
        for letter in out.dead_letters:
            key = letter.source.encode()
            reason = letter.reason[:128]
            bound = dead_letter_bound(configured, self._dead_letter_topic_max, key, reason)
            value = letter.to_json(bound)
            self._send_output(topics.dead_letter, key, value, [("reason", reason.encode())])
        if topics.examples is not None:
            for example in out.examples:
                self._send_output(topics.examples, example.event_id.encode(), example.to_json())

    # ------------------------------------------------------------------ refused outputs

    def _output_kind(self, topic: str) -> str:
        topics = self.settings.kafka.topics
        if topic == topics.dead_letter:
            return "dead_letter"
        return "example" if topic == topics.examples else "prediction"

    def _refused(self, refused: RefusedRecord) -> int:
        """Count one more refusal of ``refused``; returns its refusals so far.

        At ``kafka.max_delivery_attempts`` the output becomes undeliverable: it is
        dropped instead of sent from then on (:meth:`_dropped`). Refusals are
        remembered in memory, by (topic, key): a dead letter's key is its source
        record, a prediction's and an example's the event id; a restarted worker
        tries again, as many times.
        """
        output = (refused.topic, refused.key)
        count = self._refusals.pop(output, 0) + 1
        self._refusals[output] = count
        while len(self._refusals) > REFUSALS_REMEMBERED:
            forgotten, _ = self._refusals.popitem(last=False)
            self._undeliverable.pop(forgotten, None)
        limit = self.settings.kafka.max_delivery_attempts
        log.warning(
            "the broker refused the %s %s for %s (%s): attempt %d of %d",
            self._output_kind(refused.topic),
            _key_text(refused.key),
            refused.topic,
            refused.error,
            count,
            limit,
        )
        if count == limit:  # counted once, when decided; dropped whenever it comes again
            self._undeliverable[output] = refused.reason
            kind = self._output_kind(refused.topic)
            self.metrics.dropped.labels(output=kind, reason=refused.reason).inc()
            log.error(
                "dropping the %s %s for %s: refused (%s) %d times",
                kind,
                _key_text(refused.key),
                refused.topic,
                refused.reason,
                count,
            )
        return count

    def _send_output(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Send an output, unless it is undeliverable; alone if the broker refused it before."""
        assert self.sink is not None
        if self._refusals:
            if self._dropped(topic, key):
                return
            if (topic, key) in self._refusals:
                self.sink.send_alone(topic, key, value, headers)
                return
        self.sink.send(topic, key, value, headers)

    def _dropped(self, topic: str, key: bytes | None) -> bool:
        """True when the output (topic, key) is undeliverable: it is not sent again."""
        if (topic, key) not in self._undeliverable:
            return False
        log.info("not sending the undeliverable %s %s", self._output_kind(topic), _key_text(key))
        return True

    def _deliver(self) -> None:
        """Wait for the broker's answer to every output since the last commit.

        Without transactions, outputs it refused for themselves (too large,
        invalid) are sent again in place, after a backoff, until it takes them
        or they reach ``kafka.max_delivery_attempts`` and are dropped: the
        outputs it took are not sent twice, and the worker goes on. Any other
        failure, or any in a transaction (the broker then aborts it), raises
        :class:`UndeliveredError` for :meth:`_recover`.
        """
        assert self.sink is not None
        delay = backoff_delays(0.5, 10.0)
        while True:
            try:
                self.sink.flush()
                return
            except UndeliveredError as error:
                if self.sink.transactional or not error.only_refused or self._stop.is_set():
                    raise
                self.metrics.undelivered.inc(error.count)
                again = []
                for refused in error.refused:
                    count = self._refused(refused)
                    if not self._dropped(refused.topic, refused.key):
                        again.append((refused, count))
                if not again:
                    return
                if self._stop.wait(delay(max(count for _, count in again) - 1)):
                    raise
                for refused, _ in again:  # alone: it may have been refused with its batch
                    self.sink.send_alone(refused.topic, refused.key, refused.value, refused.headers)

    def _update_lag(self) -> None:
        assert self.source is not None
        if time.monotonic() - self._last_lag < 5.0:
            return
        self._last_lag = time.monotonic()
        with self._stop.waiting_for(self._kafka_at):
            lags = self.source.lag()
        for tp, lag in lags.items():
            self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
        store = self.processor.store
        self.metrics.pending_labels.set(self._redis(store.pending_count))

    def run_once(self) -> int:
        """Poll one batch and send it to Redis, then finish the batch before it.

        One batch is in flight: while Redis runs the batch's script (in the store
        thread), this thread scores and learns the previous one. The order of
        every effect is the one of :meth:`Processor.process`, so the results are
        the same; only the waiting overlaps. Returns the number of records polled.
        """
        assert self.source is not None and self.sink is not None
        self._watch_registry()
        t0 = time.perf_counter()
        records = self.source.next_batch(0 if self._inflight else None)
        received_s = time.time()
        self.metrics.stage_seconds.labels(stage=POLL_STAGE).observe(time.perf_counter() - t0)
        if self.source.revocations != self._revocations:
            self._revocations = self.source.revocations
            if records or self._uncommitted or self._inflight or self.sink.in_transaction:
                self._rewind()
                records = []
        self._update_lag()
        assignment = self.source.event_partitions()
        if assignment != self._assignment:
            self._assignment = assignment
            self.processor.assign(assignment)
            log.info("event partitions: %s", _partition_list(assignment))
        incoming = None
        if records:
            self.metrics.batch_size.observe(len(records))
            labels = sum(1 for record in records if record.kind == "labels")
            self.metrics.records.labels(kind="labels").inc(labels)
            self.metrics.records.labels(kind="events").inc(len(records) - labels)
            batch = self.processor.prepare(records)
            future = self._store_thread.submit(self.processor.apply, batch)
            incoming = _InFlight(batch, future, records, received_s)
        self._finish_inflight()
        self._inflight = incoming
        if self._uncommitted and self._checkpoint_due():
            t2 = time.perf_counter()
            self.checkpoint()
            self.metrics.stage_seconds.labels(stage=COMMIT_STAGE).observe(time.perf_counter() - t2)
        return len(records)

    def _finish_inflight(self) -> None:
        """Score, learn and publish the batch in flight, and count its offsets as done."""
        flight, self._inflight = self._inflight, None
        if flight is None:
            return
        assert self.source is not None
        assert self.sink is not None
        self.sink.begin()
        topic = self.settings.kafka.topics.predictions
        send = _PredictionSender(
            self.sink, topic, self.metrics, flight.received_s, self._send_output, self._refusals
        )
        live = waited_s(flight.records, flight.received_s) <= CATCHING_UP_S
        emit = send if self.sink.send_as_scored and live else None
        t0 = time.perf_counter()
        out = self.processor.finish(flight.batch, flight.future.result(), emit)
        t1 = time.perf_counter()
        sent_s = send.seconds  # sending the predictions that went out as they were scored
        self._publish(out, None if emit else send)
        produce_s = sent_s + time.perf_counter() - t1
        self.metrics.stage_seconds.labels(stage=PRODUCE_STAGE).observe(produce_s)
        for tp, offset in self.source.position(flight.records).items():
            self._uncommitted[tp] = max(self._uncommitted.get(tp, 0), offset.offset)
        self._labels_since_checkpoint += out.labels_learned
        self.metrics.batches.inc()
        self.summary.add(len(flight.records), out)
        self.summary.busy_seconds += (t1 - t0 - sent_s) + out.stage_seconds["decode"]

    def _drop_inflight(self) -> None:
        """Forget the batch in flight (its effects in Redis are recognised on replay)."""
        flight, self._inflight = self._inflight, None
        if flight is not None:
            try:
                flight.future.result(timeout=60)
            except Exception as exc:  # noqa: BLE001 - it is dropped whatever happened
                log.warning("dropped an in-flight batch: %s", exc)

    def _rewind(self) -> None:
        """After a rebalance took partitions: undo all work since the last commit.

        The partitions' next owners read them from the committed offsets, so
        this worker's uncommitted outputs and learned labels would be doubled
        (and its late commit would move their offsets). It aborts the open
        transaction, drops the batch in flight and the records just polled,
        rewinds the model to its checkpoint and reads the partitions it still
        owns again from their committed offsets. Unlike :meth:`_recover` it
        keeps its clients: reconnecting would rebalance the group once more.
        """
        assert self.source is not None and self.sink is not None
        self._drop_inflight()
        self.sink.abort()
        self._restore()
        starts = self.source.rewind()
        self.metrics.rewinds.inc()
        self.summary.rewinds += 1
        log.warning(
            "partitions were revoked with work uncommitted: it is undone, reading again from %s",
            ", ".join(f"{t}:{p}@{o}" for (t, p), o in sorted(starts.items())) or "nothing",
        )

    def _read_to_end(self) -> bool:
        """True when the assigned partitions hold nothing more (False while Kafka is away)."""
        assert self.source is not None
        try:
            with self._stop.waiting_for(self._kafka_at):
                return self.source.caught_up()
        except KafkaError as exc:
            log.info("idle, but the end of the partitions is unknown: %s", exc)
            return False

    def _recover(self, error: Exception) -> None:
        """After a Kafka failure: drop the clients, reconnect, resume from the checkpoint."""
        log.warning("kafka failed (%s): resuming from the last checkpoint", error)
        refusals = 0
        if isinstance(error, UndeliveredError):
            self.metrics.undelivered.inc(error.count)
            refusals = max((self._refused(refused) for refused in error.refused), default=0)
        self._drop_inflight()
        self.metrics.dependency_up.labels(dependency="kafka").set(0)
        self.metrics.retries.labels(dependency="kafka").inc()
        self.summary.recoveries += 1
        if self.sink is not None:
            try:
                self.sink.abort()
            except KafkaError as exc:
                log.warning("abort failed: %s", exc)
        self._disconnect(timeout_s=1.0)
        delay = backoff_delays(0.5, 10.0)
        if refusals:  # the same records come again: not in a tight loop
            self._stop.wait(delay(refusals - 1))
        attempt = 0
        while True:
            self._connect()  # waits for a broker; Stopped or Refused end the wait
            try:
                self._restore()
                return
            except KafkaError as exc:
                refused = kafka_refusal(exc, self.settings.kafka.bootstrap_servers)
                if refused is not None:
                    raise refused from None
                log.warning("kafka still unavailable (%s); retry in %.1fs", exc, delay(attempt))
                self._disconnect(timeout_s=1.0)
                if self._stop.wait(delay(attempt)):
                    raise Stopped(self._kafka_at) from exc
                attempt += 1

    def run(
        self, idle_timeout_s: float | None = None, max_records: int | None = None
    ) -> WorkerSummary:
        """Process until stopped (SIGTERM, SIGINT, :meth:`stop`), idle, or enough records.

        Idle time counts from the last record or the last change of the assigned
        partitions, so a slow group join or a rebalance does not look like the end
        of the stream (see :class:`_IdleClock`); and an idle worker stops only
        once its partitions are read to their end, so a broker that is away
        does not look like one either.

        A stop request ends every wait for Kafka or Redis at once: the work since
        the last checkpoint is then left for the next run (offsets are committed
        only with a checkpoint), the log says what it waited for, and ``run``
        returns. Kafka or Redis refusing the worker's credentials or permissions
        raises :class:`~stream.waits.Refused`, whose message says what to fix.
        """
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._stop.on_signal)
            tune_interpreter()
        started = time.monotonic()
        try:
            self._connect()
            self._restore()
            started = time.monotonic()
            session_s = self.settings.kafka.session_timeout_ms / 1000
            idle = _IdleClock(idle_timeout_s, session_s, started)
            while not self._stop.is_set():
                try:
                    n = self.run_once()
                except KafkaError as error:
                    refused = kafka_refusal(error, self.settings.kafka.bootstrap_servers)
                    if refused is not None:
                        raise refused from None
                    self._recover(error)
                    idle.rejoin(time.monotonic())
                    continue
                if idle.expired(time.monotonic(), n, self._assignment) and self._read_to_end():
                    break
                if max_records is not None and self.summary.records >= max_records:
                    break
            try:
                if self.source is not None:
                    self._finish_inflight()
                if self.source is not None and self._uncommitted:
                    self.checkpoint()
            except KafkaError as error:
                if not self._stop.is_set():
                    raise
                raise Stopped(self._kafka_at) from error
        except Stopped as stopped:
            log.warning(
                "%s: exiting without a last checkpoint (the next run redoes the work since the"
                " last one)",
                stopped,
            )
        finally:
            self.summary.seconds = time.monotonic() - started
            self.summary.events = self.processor.events_seen
            self.close()
        return self.summary

    def close(self) -> None:
        """Drop the batch in flight, store the last scores if Redis answers, close the clients.

        Nothing here waits for a dependency that is away: a Redis call fails at once.
        """
        self._closing = True
        try:
            self._drop_inflight()
            try:
                self.processor.flush()
            except (*REDIS_ERRORS, Stopped, Refused) as exc:
                log.warning("could not store the last scores: %s", exc)
        finally:
            self._closing = False
        if self.slot.monitor is not None:
            self.slot.monitor.publish(refresh=True)
        self._disconnect()

    def stop_metrics(self) -> None:
        """Stop the /metrics endpoint (it outlives :meth:`run` so a last scrape sees the end)."""
        if self._http is not None:
            self._http.shutdown()
            self._http = None
