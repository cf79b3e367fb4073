"""The stream worker: poll a batch, process it, publish, checkpoint. Nothing else.

Decoding, features, scoring and learning live in :class:`stream.processor.Processor`;
the Kafka edge behind :class:`stream.edge.Source` and :class:`stream.edge.Sink` (built
by :mod:`stream.kafka_clients` unless given); delivery in :class:`stream.publishing.Outputs`;
the served model in :class:`stream.lifecycle.ModelLifecycle`; the two-phase checkpoint in
:class:`learners.checkpointer.Checkpointer`.

Offsets are committed only with a checkpoint, the model snapshot that has learned
everything before them. After a crash the worker resumes from it: Redis recognises
the records processed again (same source record) and hands back the state they
saw, and the model, rewound to the checkpoint, learns their labels once more.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import redis
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from streamlearn.features.store import InteractionStore
from streamlearn.learners.registry import NonFiniteModelError
from streamlearn.metrics.instruments import COMMIT_STAGE, POLL_STAGE, WorkerMetrics
from streamlearn.metrics.monitor import Monitor, MonitoringMetrics
from streamlearn.stream import inflight, kafka_clients, lifecycle
from streamlearn.stream.config import Settings
from streamlearn.stream.connection import Connection
from streamlearn.stream.edge import (
    EdgeError,
    Offsets,
    Sink,
    SinkFactory,
    Source,
    SourceFactory,
    UndeliveredError,
)
from streamlearn.stream.lifecycle import ModelLifecycle, ModelServices
from streamlearn.stream.processor import BatchOutput, ModelSlot, Prediction, Processor
from streamlearn.stream.publishing import Outputs
from streamlearn.stream.retrying import REDIS_ERRORS, RedisWaits, RetryingStore, backoff_delays
from streamlearn.stream.runtime import tune_interpreter
from streamlearn.stream.stores import open_store
from streamlearn.stream.waits import Refused, StopFlag, Stopped, kafka_refusal
from streamlearn.stream.worker_arms import WorkerArms
from streamlearn.stream.worker_state import (
    CheckpointClock,
    IdleClock,
    WorkerSummary,
    partition_list,
    report_lag,
    slot_state,
)

__all__ = ["Worker", "WorkerSummary"]

log = logging.getLogger(__name__)


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
    source_factory, sink_factory
        Build the source and the sink, at start and after each reconnection;
        by default those of the configured Kafka client (:mod:`stream.kafka_clients`).
    store_factory
        Builds the interaction store; by default :func:`open_store`'s on ``redis.url``.
    prepare_topics
        Creates the topics if so configured, before the clients open; returns the dead
        letter topic's ``max.message.bytes`` (None: unknown).
    model_services
        Builds the model registry and the checkpointer (by default on Redis).
    """

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        name: str = "worker-0",
        signing_key: bytes | None = None,
        *,
        source_factory: SourceFactory | None = None,
        sink_factory: SinkFactory | None = None,
        store_factory: Callable[[], InteractionStore] | None = None,
        prepare_topics: Callable[[], int | None] | None = None,
        model_services: ModelServices | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry)
        ProcessCollector(registry=self.registry)
        self._stop = StopFlag()
        self._closing = False
        kafka = settings.kafka
        self.connection = Connection(
            source_factory or partial(kafka_clients.open_source, kafka, name),
            sink_factory or partial(kafka_clients.open_sink, kafka, name),
            prepare_topics or partial(kafka_clients.prepare_topics, kafka),
            kafka.bootstrap_servers,
            kafka.max_block_ms / 1000,
            self._stop,
            self.metrics,
        )
        self._kafka_at = self.connection.what
        self.redis = redis.Redis.from_url(settings.redis.url, **settings.redis.client_options())
        self._redis = RedisWaits(settings.redis.url, self.metrics, self._stop, self._is_closing)
        self.models, self.checkpointer = (
            model_services()
            if model_services is not None
            else lifecycle.model_services(self.redis, settings, name, signing_key, self._redis)
        )
        store = store_factory() if store_factory is not None else open_store(settings, self.redis)
        monitor = Monitor(
            settings.monitoring, MonitoringMetrics(self.registry), settings.model.threshold
        )
        self.slot = ModelSlot(settings.model.spec, settings.model.build(), monitor=monitor)
        self.lifecycle = ModelLifecycle(
            self.slot, self.models, settings.model.build, self.metrics,
            settings.checkpoint.registry_poll_seconds, self._redis,
        )  # fmt: skip
        self.arms = WorkerArms(
            settings, self.slot, self.models, self.registry, name, self._redis,
            self.lifecycle.announce, None if model_services else self.redis,
        )  # fmt: skip
        self.processor = Processor(
            self.arms.slots,
            RetryingStore(store, self.metrics, self._stop, settings.redis.url, self._is_closing),
            settings.features,
            settings.limits,
            settings.model.threshold,
            self.metrics,
            keep_examples=kafka.topics.examples is not None,
            watermark_window=settings.store.watermark_window,
            watermark_quantile=settings.store.watermark_quantile,
            decider=self.arms.decider,
            experiment=self.arms.experiment,
            rollback=self.arms.rollback,
        )
        self.outputs = Outputs(kafka, self.metrics, self._stop)
        self.arms.attach(self.processor, self.outputs)
        self.summary = WorkerSummary()
        self._uncommitted: Offsets = {}
        every_labels = settings.checkpoint.every_labels if self.checkpointer else None
        every_s = (
            settings.checkpoint.every_seconds if self.checkpointer else kafka.commit_interval_s
        )
        self._due = CheckpointClock(every_labels, every_s)
        self._last_lag = 0.0
        self._assignment: set[tuple[str, int]] = set()
        self._revocations = 0
        self._inflight: inflight.InFlight | None = None
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-store")
        self._http: Any = None
        self.lifecycle.announce()

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Ask the loop to finish its current batch, checkpoint and return."""
        self._stop.set()

    def serve_metrics(self) -> int:
        """Start the /metrics endpoint; returns the port it listens on."""
        config = self.settings.metrics
        self._http, _ = start_http_server(config.port, config.host, registry=self.registry)
        port: int = self._http.server_address[1]
        log.info("metrics on http://%s:%d/metrics", config.host, port)
        return port

    @property
    def source(self) -> Source | None:
        """The worker's source while connected."""
        return self.connection.source

    @property
    def sink(self) -> Sink | None:
        """The worker's sink while connected."""
        return self.connection.sink

    def _connect(self) -> None:
        """Open the Kafka clients, retrying while no broker answers (:meth:`Connection.open`)."""
        self.connection.open()
        self.outputs.dead_letter_topic_max = self.connection.dead_letter_topic_max

    def _disconnect(self, timeout_s: float | None = None) -> None:
        """Close the Kafka clients; ``timeout_s`` (or the stop grace period) bounds the wait."""
        self.connection.close(timeout_s)

    def _is_closing(self) -> bool:
        return self._closing

    def _restore(self) -> None:
        """Resume from the checkpoint that agrees with Kafka, or a newer promoted model.

        Offsets read since the last commit are forgotten either way: the
        records behind them are read again from the committed offsets.
        """
        self._uncommitted.clear()
        self._due.labels = 0
        if self.models is None:  # learning is at-least-once: the arms are not rewound
            self.arms.restore(None, rewind=False)
            return
        checkpointer = self.checkpointer
        checkpoint = checkpointer.recover(self._committed) if checkpointer is not None else None
        self.lifecycle.restore(checkpoint)
        self.arms.restore(checkpoint)

    def _committed(self, names: list[str]) -> dict[str, int | None]:
        """The group's committed offsets of ``topic:partition`` names."""
        assert self.source is not None
        with self.connection.waiting():
            return self.source.committed(names)

    def _commit(self, offsets: Offsets) -> None:
        """Commit ``offsets`` with the outputs sent since the last commit."""
        assert self.source is not None and self.sink is not None
        with self._stop.waiting_for(self._kafka_at):
            self.sink.commit(offsets, self.source)

    def checkpoint(self) -> None:
        """Snapshot the model, then commit the offsets it reflects (two phases)."""
        assert self.source is not None and self.sink is not None
        self.outputs.deliver(self.sink)
        offsets = dict(self._uncommitted)
        if self.checkpointer is None:
            self._commit(offsets)
            self._uncommitted.clear()
            self._due.touch()
            return
        if not offsets:
            self._due.touch()
            return
        self.processor.flush()
        names = {f"{tp.topic}:{tp.partition}": o for tp, o in offsets.items()}
        state, metrics = slot_state(self.slot)
        try:
            info = self.checkpointer.save(
                self.slot.model,
                state,
                names,
                metrics,
                self.lifecycle.generation,
                lambda: self._commit(offsets),
                self.arms.snapshots(),
            )
        except NonFiniteModelError as error:
            # Its offsets stay uncommitted: a restart resumes from the last finite model.
            log.error("checkpoint skipped, offsets not committed: %s", error)
            self.metrics.checkpoints_refused.inc()
            self._due.reset()
            return
        self.lifecycle.checkpointed(info.version)
        self.arms.checkpointed(self.checkpointer.arm_versions)
        self._uncommitted.clear()
        self._due.reset()
        self.metrics.checkpoints.inc()
        self.summary.checkpoints += 1

    # ------------------------------------------------------------------ batches

    def _update_lag(self) -> None:
        assert self.source is not None
        if time.monotonic() - self._last_lag < 5.0:
            return
        self._last_lag = time.monotonic()
        with self._stop.waiting_for(self._kafka_at):
            lags = self.source.lag()
        report_lag(self.metrics, lags, self._redis(self.processor.store.pending_count))

    def run_once(self) -> int:
        """Poll one batch and send it to Redis, then finish the batch before it.

        While Redis runs this batch's script (in the store thread), this thread scores
        and learns the one before: every effect in :meth:`Processor.process`'s order,
        only the waiting overlaps. Returns the number of records polled.
        """
        assert self.source is not None and self.sink is not None
        self.lifecycle.watch()
        self.arms.watch()
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
            log.info("event partitions: %s", partition_list(assignment))
        incoming = None
        if records:
            thread, metrics = self._store_thread, self.metrics
            incoming = inflight.start(self.processor, thread, records, received_s, metrics)
        self._finish_inflight()
        self._inflight = incoming
        if self._uncommitted and self._due.due():
            t2 = time.perf_counter()
            self.checkpoint()
            self.metrics.stage_seconds.labels(stage=COMMIT_STAGE).observe(time.perf_counter() - t2)
        return len(records)

    def _finish_inflight(self) -> None:
        """Score, learn and publish the batch in flight, and count its offsets as done."""
        flight, self._inflight = self._inflight, None
        if flight is None:
            return
        assert self.source is not None and self.sink is not None
        done = inflight.finish(
            flight, self.processor, self.outputs, self.sink, self.metrics, self._publish
        )
        out = done.out
        for tp, offset in self.source.position(flight.records).items():
            self._uncommitted[tp] = max(self._uncommitted.get(tp, 0), offset)
        self._due.learned(out.labels_learned)
        self.arms.record(out.decisions)
        self.metrics.batches.inc()
        self.summary.add(len(flight.records), out)
        self.summary.busy_seconds += done.busy_s

    def _publish(self, out: BatchOutput, send: Callable[[Prediction], None] | None) -> None:
        """The batch's outputs through the sink (:meth:`Outputs.publish`)."""
        assert self.sink is not None
        self.outputs.publish(self.sink, out, send)

    def _drop_inflight(self) -> None:
        """Forget the batch in flight (its effects in Redis are recognised on replay)."""
        flight, self._inflight = self._inflight, None
        inflight.drop(flight)

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
        except EdgeError as exc:
            log.info("idle, but the end of the partitions is unknown: %s", exc)
            return False

    def _recover(self, error: Exception) -> None:
        """After a Kafka failure: drop the clients, reconnect, resume from the checkpoint."""
        log.warning("kafka failed (%s): resuming from the last checkpoint", error)
        refusals = 0
        if isinstance(error, UndeliveredError):
            self.metrics.undelivered.inc(error.count)
            refusals = max((self.outputs.refused(refused) for refused in error.refused), default=0)
        self._drop_inflight()
        self.metrics.dependency_up.labels(dependency="kafka").set(0)
        self.metrics.retries.labels(dependency="kafka").inc()
        self.summary.recoveries += 1
        if self.sink is not None:
            try:
                self.sink.abort()
            except EdgeError as exc:
                log.warning("abort failed: %s", exc)
        self._disconnect(timeout_s=1.0)
        if refusals:  # the same records come again: not in a tight loop
            self._stop.wait(backoff_delays(0.5, 10.0)(refusals - 1))
        self.connection.reopen(self._connect, self._restore)

    def _last_checkpoint(self) -> bool:
        if self.source is not None:
            self._finish_inflight()
            if self._uncommitted:
                self.checkpoint()
        return True

    def run(
        self, idle_timeout_s: float | None = None, max_records: int | None = None
    ) -> WorkerSummary:
        """Process until stopped (SIGTERM, SIGINT, :meth:`stop`), idle, or enough records.

        Idle time counts from the last record or assignment change (a slow join is no
        end of stream: :class:`~stream.worker_state.IdleClock`), and an idle worker
        stops only once its partitions are read to their end (nor is a broker away).

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
            idle = IdleClock(idle_timeout_s, session_s, started)
            done, most = False, max_records if max_records is not None else math.inf
            while not done and not self._stop.is_set():  # a refused last checkpoint is redone
                try:
                    n = self.run_once()
                    end = idle.expired(time.monotonic(), n, self._assignment)
                    if (end and self._read_to_end()) or self.summary.records >= most:
                        done = self._last_checkpoint()
                except EdgeError as error:
                    refused = kafka_refusal(error, self.settings.kafka.bootstrap_servers)
                    if refused is not None:
                        raise refused from None
                    self._recover(error)
                    idle.rejoin(time.monotonic())
            if not done:
                try:
                    self._last_checkpoint()
                except EdgeError as error:
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
