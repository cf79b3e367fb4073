"""The worker's pipelining: one batch in Redis while the one before it is scored.

:func:`start` sends a batch's store call (interaction features, snapshots,
label joins) to the store thread; :func:`finish` scores, learns and publishes
it once the call is back; :func:`drop` forgets it (its effects in Redis are
recognised when its records come again). The order of every effect is the
one of :meth:`stream.processor.Processor.process`, so the results are the
same; only the waiting overlaps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from streamlearn.features.store import BatchOutcome
from streamlearn.metrics.instruments import PRODUCE_STAGE, WorkerMetrics
from streamlearn.stream.edge import Record, Sink
from streamlearn.stream.processor import BatchOutput, Prediction, PreparedBatch, Processor
from streamlearn.stream.publishing import CATCHING_UP_S, Outputs, waited_s

__all__ = ["Finished", "InFlight", "drop", "finish", "start"]

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    """A batch sent to Redis and not yet scored."""

    batch: PreparedBatch
    future: Future[BatchOutcome]
    records: list[Record]
    received_s: float


@dataclass(frozen=True)
class Finished:
    """What became of a batch: the processor's output and the seconds spent on it."""

    out: BatchOutput
    busy_s: float


def start(
    processor: Processor,
    thread: ThreadPoolExecutor,
    records: list[Record],
    received_s: float,
    metrics: WorkerMetrics,
) -> InFlight:
    """Count ``records``, prepare them and send their store call to ``thread``."""
    metrics.batch_size.observe(len(records))
    labels = sum(1 for record in records if record.kind == "labels")
    metrics.records.labels(kind="labels").inc(labels)
    metrics.records.labels(kind="events").inc(len(records) - labels)
    batch = processor.prepare(records)
    return InFlight(batch, thread.submit(processor.apply, batch), records, received_s)


def finish(
    flight: InFlight,
    processor: Processor,
    outputs: Outputs,
    sink: Sink,
    metrics: WorkerMetrics,
    publish: Callable[[BatchOutput, Callable[[Prediction], None] | None], None],
) -> Finished:
    """Score, learn and publish ``flight`` once its store call is back.

    ``publish`` sends the batch's outputs (:meth:`stream.outputs.Outputs.publish`
    with the sink). A live batch's predictions go out as they are scored when the sink says so
    (:attr:`stream.edge.Sink.send_as_scored`); a backlog's go out together.
    """
    sink.begin()
    send = outputs.prediction_sender(sink, flight.received_s)
    live = waited_s(flight.records, flight.received_s) <= CATCHING_UP_S
    emit = send if sink.send_as_scored and live else None
    t0 = time.perf_counter()
    out = processor.finish(flight.batch, flight.future.result(), emit)
    t1 = time.perf_counter()
    sent_s = send.seconds  # sending the predictions that went out as they were scored
    publish(out, None if emit else send)
    produce_s = sent_s + time.perf_counter() - t1
    metrics.stage_seconds.labels(stage=PRODUCE_STAGE).observe(produce_s)
    return Finished(out, (t1 - t0 - sent_s) + out.stage_seconds["decode"])


def drop(flight: InFlight | None) -> None:
    """Forget ``flight``, once its store call has ended (whatever happened to it)."""
    if flight is not None:
        try:
            flight.future.result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - it is dropped whatever happened
            log.warning("dropped an in-flight batch: %s", exc)
