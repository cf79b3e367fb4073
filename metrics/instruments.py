"""Prometheus instruments of the stream worker: throughput, latency, errors.

Every metric is created once, here, on a registry given by the caller, so tests
build a fresh :class:`prometheus_client.CollectorRegistry` and read values back
with ``get_sample_value``. Label values come from small fixed sets (stage,
reason, topic kind, partition number); never an id.

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> m = WorkerMetrics(registry)
>>> m.events.inc(3)
>>> registry.get_sample_value("streamlearn_events_total")
3.0
>>> m.dead_letters.labels(reason="invalid_json").inc()
>>> registry.get_sample_value("streamlearn_dead_letters_total", {"reason": "invalid_json"})
1.0
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

__all__ = [
    "BATCHES",
    "BATCH_RECORDS",
    "CHECKPOINTS",
    "CHECKPOINTS_REFUSED",
    "COMMIT_STAGE",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DEPENDENCY_RETRIES",
    "DEPENDENCY_UP",
    "DROPPED_OUTPUTS",
    "EVENTS",
    "EVENT_TO_PREDICTION",
    "JOB",
    "LABELS_LEARNED",
    "LABELS_RECEIVED",
    "LABELS_SKIPPED",
    "LABEL_DELAY",
    "LABEL_SOURCES",
    "LABEL_WEIGHTS_CLIPPED",
    "LABELS_POSITIVE",
    "LAST_EVENT_TIMESTAMP",
    "LAST_LABEL_EVENT_TIMESTAMP",
    "LATENCY_BUCKETS",
    "MODEL_INFO",
    "PENDING_LABELS",
    "POLL_STAGE",
    "PREDICTIONS",
    "PROCESSING",
    "PROCESSOR_STAGES",
    "PRODUCE_STAGE",
    "REBALANCE_REWINDS",
    "RECORDS_CONSUMED",
    "REDIS_ROUND_TRIP",
    "SCORES_NOT_FINITE",
    "STAGES",
    "STAGE_DURATION",
    "UNDELIVERED",
    "WorkerMetrics",
    "counter",
    "gauge",
    "histogram",
]

#: Prometheus scrape job of the workers: the ``job`` label of their series.
JOB = "streamlearn"

#: The names of the worker's series as Prometheus exposes them (a counter's with
#: ``_total``, an info's with ``_info``; a histogram's series add ``_bucket``,
#: ``_sum`` and ``_count``): the alert rules and the dashboard query these.
EVENTS = "streamlearn_events_total"
PREDICTIONS = "streamlearn_predictions_total"
LABELS_RECEIVED = "streamlearn_labels_received_total"
LABELS_LEARNED = "streamlearn_labels_learned_total"
LABELS_POSITIVE = "streamlearn_labels_positive_total"
LABELS_SKIPPED = "streamlearn_labels_skipped_total"
LABEL_WEIGHTS_CLIPPED = "streamlearn_label_weights_clipped_total"
SCORES_NOT_FINITE = "streamlearn_scores_not_finite_total"
CHECKPOINTS_REFUSED = "streamlearn_checkpoints_refused_total"
DEAD_LETTERS = "streamlearn_dead_letters_total"
RECORDS_CONSUMED = "streamlearn_records_consumed_total"
BATCHES = "streamlearn_batches_total"
STAGE_DURATION = "streamlearn_stage_duration_seconds"
EVENT_TO_PREDICTION = "streamlearn_event_to_prediction_seconds"
PROCESSING = "streamlearn_processing_seconds"
REDIS_ROUND_TRIP = "streamlearn_redis_round_trip_seconds"
BATCH_RECORDS = "streamlearn_batch_records"
CONSUMER_LAG = "streamlearn_consumer_lag_records"
LABEL_DELAY = "streamlearn_label_delay_seconds"
PENDING_LABELS = "streamlearn_pending_labels"
DEPENDENCY_RETRIES = "streamlearn_dependency_retries_total"
UNDELIVERED = "streamlearn_undelivered_records_total"
DROPPED_OUTPUTS = "streamlearn_dropped_outputs_total"
REBALANCE_REWINDS = "streamlearn_rebalance_rewinds_total"
DEPENDENCY_UP = "streamlearn_dependency_up"
MODEL_INFO = "streamlearn_model_info"
LAST_EVENT_TIMESTAMP = "streamlearn_last_event_timestamp_seconds"
LAST_LABEL_EVENT_TIMESTAMP = "streamlearn_last_label_event_timestamp_seconds"
CHECKPOINTS = "streamlearn_checkpoints_total"

#: Seconds; resolves single milliseconds up to 100 ms, then coarser up to 10 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: The stages :class:`stream.processor.Processor` times in a batch, in processing order
#: (the keys of ``BatchOutput.stage_seconds``).
PROCESSOR_STAGES: tuple[str, ...] = ("decode", "redis", "features", "score", "learn")
#: The stages :class:`stream.worker.Worker` times around the processor's: reading a
#: batch, sending its outputs, committing its offsets.
POLL_STAGE = "poll"
PRODUCE_STAGE = "produce"
COMMIT_STAGE = "commit"
#: The stages of a batch, in processing order; the only values of the ``stage`` label.
STAGES: tuple[str, ...] = (POLL_STAGE, *PROCESSOR_STAGES, PRODUCE_STAGE, COMMIT_STAGE)

#: How a learned label arrived; the only values of the ``source`` label.
LABEL_SOURCES: tuple[str, ...] = ("inline", "labels", "implicit")


def counter(
    registry: CollectorRegistry, name: str, doc: str, labels: Sequence[str] = ()
) -> Counter:
    """A counter exposed as ``name`` (which ends in ``_total``), registered on ``registry``.

    >>> registry = CollectorRegistry()
    >>> counter(registry, "streamlearn_things_total", "Things.").inc()
    >>> registry.get_sample_value("streamlearn_things_total")
    1.0
    """
    return Counter(name.removesuffix("_total"), doc, labels, registry=registry)


def gauge(registry: CollectorRegistry, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    """A gauge exposed as ``name``, registered on ``registry``."""
    return Gauge(name, doc, labels, registry=registry)


def histogram(
    registry: CollectorRegistry,
    name: str,
    doc: str,
    labels: Sequence[str] = (),
    buckets: Sequence[float] = LATENCY_BUCKETS,
) -> Histogram:
    """A histogram exposed as ``name``, of :data:`LATENCY_BUCKETS` unless ``buckets`` are given."""
    return Histogram(name, doc, labels, buckets=buckets, registry=registry)


class WorkerMetrics:
    """The worker's own metrics, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = counter(registry, EVENTS, "Valid events decoded from the events topic.")
        self.predictions = counter(registry, PREDICTIONS, "Predictions published.")
        self.labels_received = counter(
            registry,
            LABELS_RECEIVED,
            "Label records decoded from the labels topic or carried inline by an event.",
        )
        self.labels_learned = counter(
            registry,
            LABELS_LEARNED,
            "Labels the model learned from, by how the label arrived.",
            ("source",),
        )
        self.labels_positive = counter(
            registry,
            LABELS_POSITIVE,
            "Learned labels that were positive (a click), by how the label arrived;"
            " over streamlearn_labels_learned_total it is the click-through rate.",
            ("source",),
        )
        self.last_label_event_timestamp = gauge(
            registry,
            LAST_LABEL_EVENT_TIMESTAMP,
            "Event time of the newest event that learned an explicit label (inline or from"
            " the labels topic; implicit negatives excluded): label freshness.",
        )
        self.labels_skipped = counter(
            registry, LABELS_SKIPPED, "Labels that were not learned, by reason.", ("reason",)
        )
        self.label_weights_clipped = counter(
            registry,
            LABEL_WEIGHTS_CLIPPED,
            "Label weights above limits.max_label_weight, clipped to it before learning.",
        )
        self.scores_not_finite = counter(
            registry,
            SCORES_NOT_FINITE,
            "Scores that were NaN or infinite, never published; the champion's event goes"
            " to the dead letters (not_finite).",
        )
        self.checkpoints_refused = counter(
            registry,
            CHECKPOINTS_REFUSED,
            "Checkpoints not written because the model had non-finite numbers; the offsets"
            " stay uncommitted.",
        )
        self.dead_letters = counter(
            registry, DEAD_LETTERS, "Records sent to the dead-letter topic, by reason.", ("reason",)
        )
        self.records = counter(
            registry,
            RECORDS_CONSUMED,
            "Records polled from Kafka, by topic kind (events or labels).",
            ("kind",),
        )
        self.batches = counter(registry, BATCHES, "Batches processed.")
        self.stage_seconds = histogram(
            registry,
            STAGE_DURATION,
            "Time spent per batch in each stage of the worker.",
            ("stage",),
        )
        self.event_to_prediction = histogram(
            registry,
            EVENT_TO_PREDICTION,
            "From the Kafka record's timestamp to the prediction being handed to the producer.",
        )
        self.processing = histogram(
            registry,
            PROCESSING,
            "From the batch's poll returning to the prediction being handed to the producer.",
        )
        self.redis_round_trip = histogram(
            registry,
            REDIS_ROUND_TRIP,
            "Duration of one Redis round trip (a pipeline or script call).",
        )
        self.batch_size = histogram(
            registry,
            BATCH_RECORDS,
            "Records per polled batch.",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000),
        )
        self.consumer_lag = gauge(
            registry,
            CONSUMER_LAG,
            "Records between the consumer's position and the end of the partition.",
            ("topic", "partition"),
        )
        self.label_delay = histogram(
            registry,
            LABEL_DELAY,
            "Event time from an event to its learned label.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 10800, 43200, 86400, 604800),
        )
        self.pending_labels = gauge(registry, PENDING_LABELS, "Labels waiting for their event.")
        self.retries = counter(
            registry,
            DEPENDENCY_RETRIES,
            "Retries after a dependency failed, by dependency (kafka or redis).",
            ("dependency",),
        )
        self.undelivered = counter(
            registry,
            UNDELIVERED,
            "Predictions and dead letters the broker did not acknowledge; the worker"
            " resumes from its last commit and sends them again.",
        )
        self.dropped = counter(
            registry,
            DROPPED_OUTPUTS,
            "Outputs the broker refused for themselves (reason: too_large, invalid_record)"
            " kafka.max_delivery_attempts times, dropped so that the worker goes on, by"
            " output (prediction, dead_letter, example).",
            ("output", "reason"),
        )
        self.rewinds = counter(
            registry,
            REBALANCE_REWINDS,
            "Rebalances that took partitions while work was uncommitted: the worker undid"
            " it and read its partitions again from the committed offsets.",
        )
        self.dependency_up = gauge(
            registry,
            DEPENDENCY_UP,
            "1 when the last call to the dependency succeeded, else 0.",
            ("dependency",),
        )
        self.model_info = Info(
            MODEL_INFO.removesuffix("_info"),
            "The model version being served.",
            registry=registry,
        )
        self.last_event_timestamp = gauge(
            registry,
            LAST_EVENT_TIMESTAMP,
            "Event time of the newest event processed (the worker's event-time watermark).",
        )
        self.checkpoints = counter(
            registry,
            CHECKPOINTS,
            "Checkpoints written (model snapshot plus the offsets it reflects).",
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        for source in LABEL_SOURCES:
            self.labels_learned.labels(source=source)
            self.labels_positive.labels(source=source)
        for dependency in ("kafka", "redis"):
            self.retries.labels(dependency=dependency)
            self.dependency_up.labels(dependency=dependency).set(1)
        self._newest_label_event_s = 0.0

    def observe_label(self, source: str, positive: bool, event_time_ms: int) -> None:
        """Count one learned label, and move the label-freshness gauge for an explicit one.

        Parameters
        ----------
        source
            How the label arrived (one of :data:`LABEL_SOURCES`).
        positive
            Whether the label is positive (a click).
        event_time_ms
            Event time of the event the label belongs to; the gauge never moves back.

        Examples
        --------
        >>> from prometheus_client import CollectorRegistry
        >>> registry = CollectorRegistry()
        >>> m = WorkerMetrics(registry)
        >>> m.observe_label("labels", True, 1_767_000_000_000)
        >>> m.observe_label("implicit", False, 1_767_000_900_000)
        >>> m.observe_label("inline", False, 1_766_000_000_000)
        >>> registry.get_sample_value("streamlearn_labels_positive_total", {"source": "labels"})
        1.0
        >>> registry.get_sample_value("streamlearn_labels_learned_total", {"source": "implicit"})
        1.0
        >>> registry.get_sample_value("streamlearn_last_label_event_timestamp_seconds")
        1767000000.0
        """
        self.labels_learned.labels(source=source).inc()
        if positive:
            self.labels_positive.labels(source=source).inc()
        if source != "implicit" and event_time_ms / 1000.0 > self._newest_label_event_s:
            self._newest_label_event_s = event_time_ms / 1000.0
            self.last_label_event_timestamp.set(self._newest_label_event_s)
