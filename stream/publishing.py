"""The worker's outputs: a batch's predictions, dead letters and examples, until delivered.

:class:`Outputs` publishes what the processor made of a batch through the
worker's :class:`~stream.edge.Sink`, and waits for the broker's answer before
offsets are committed (:meth:`Outputs.deliver`). An output the broker refuses
for itself (too large, invalid) is sent again alone, after a backoff, and
after ``kafka.max_delivery_attempts`` refusals it is dropped, logged and
counted: the worker never stalls on it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.stream.config import KafkaConfig
from streamlearn.stream.edge import Headers, Record, RefusedRecord, Sink, UndeliveredError
from streamlearn.stream.processor import DEAD_LETTER_MIN_BYTES, BatchOutput, Prediction
from streamlearn.stream.retrying import backoff_delays
from streamlearn.stream.waits import StopFlag

__all__ = [
    "CATCHING_UP_S",
    "Outputs",
    "PredictionSender",
    "dead_letter_bound",
    "key_text",
    "waited_s",
]

log = logging.getLogger(__name__)

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


def key_text(key: bytes | None) -> str:
    """A record key for a log line.

    >>> key_text(b"events:0:7"), key_text(None), key_text(b"\\xff")
    ("'events:0:7'", 'without a key', "b'\\\\xff'")
    """
    if key is None:
        return "without a key"
    try:
        return repr(key.decode())
    except UnicodeDecodeError:
        return repr(key)


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


class PredictionSender:
    """Publishes a batch's predictions, each as it is handed over, and times the sending."""

    def __init__(
        self,
        sink: Sink,
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


class Outputs:
    """Publishes a batch's outputs through a sink; sends refused ones again, or drops them.

    Refusals are remembered in memory, by (topic, key): a dead letter's key is
    its source record, a prediction's and an example's the event id; a
    restarted worker tries again, as many times.

    Parameters
    ----------
    kafka
        The Kafka settings: topics, ``dead_letter_max_bytes``, ``max_delivery_attempts``.
    metrics
        The worker's series (predictions, undelivered, dropped).
    stop
        A stop request ends the wait between attempts.
    """

    def __init__(self, kafka: KafkaConfig, metrics: WorkerMetrics, stop: StopFlag) -> None:
        self.kafka = kafka
        self.metrics = metrics
        self.stop = stop
        #: The dead letter topic's ``max.message.bytes`` (None: unknown).
        self.dead_letter_topic_max: int | None = None
        #: Refusals so far of each output the broker refused for itself, by (topic, key).
        self.refusals: OrderedDict[tuple[str, bytes | None], int] = OrderedDict()
        #: The outputs refused ``kafka.max_delivery_attempts`` times, with why: dropped when sent.
        self.undeliverable: dict[tuple[str, bytes | None], str] = {}
        #: Arms whose unserved predictions are published, marked ``shadow`` (shadow mode).
        self.shadow_arms: frozenset[str] = frozenset()

    def prediction_sender(self, sink: Sink, received_s: float) -> PredictionSender:
        """A sender of one batch's predictions (polled at ``received_s``)."""
        topic = self.kafka.topics.predictions
        send = lambda t, k, v: self.send(sink, t, k, v)  # noqa: E731 - bound to this sink
        return PredictionSender(sink, topic, self.metrics, received_s, send, self.refusals)

    def publish(
        self, sink: Sink, out: BatchOutput, send: Callable[[Prediction], None] | None
    ) -> None:
        """The batch's predictions through ``send`` (None: they went out as they were
        scored), the shadow arms' predictions (to the predictions topic, keyed by event id
        like the served one, marked ``shadow: true`` with their ``arm``), then its dead
        letters and its examples for the training log."""
        topics = self.kafka.topics
        if send is not None:
            for prediction in out.predictions:
                send(prediction)
        self.metrics.predictions.inc(len(out.predictions))
        if self.shadow_arms:
            for shadow in out.shadow_predictions:
                if shadow.arm in self.shadow_arms:
                    value = shadow.to_json(0.0, shadow=True)
                    self.send(sink, topics.predictions, shadow.event_id.encode(), value)
        configured = self.kafka.dead_letter_max_bytes
        for letter in out.dead_letters:
            key = letter.source.encode()
            reason = letter.reason[:128]
            bound = dead_letter_bound(configured, self.dead_letter_topic_max, key, reason)
            value = letter.to_json(bound)
            self.send(sink, topics.dead_letter, key, value, [("reason", reason.encode())])
        if topics.examples is not None:
            for example in out.examples:
                self.send(sink, topics.examples, example.event_id.encode(), example.to_json())

    def kind(self, topic: str) -> str:
        """The kind of output a topic takes: ``prediction``, ``dead_letter`` or ``example``."""
        topics = self.kafka.topics
        if topic == topics.dead_letter:
            return "dead_letter"
        return "example" if topic == topics.examples else "prediction"

    def refused(self, refused: RefusedRecord) -> int:
        """Count one more refusal of ``refused``; returns its refusals so far.

        At ``kafka.max_delivery_attempts`` the output becomes undeliverable: it is
        dropped instead of sent from then on (:meth:`dropped`).
        """
        output = (refused.topic, refused.key)
        count = self.refusals.pop(output, 0) + 1
        self.refusals[output] = count
        while len(self.refusals) > REFUSALS_REMEMBERED:
            forgotten, _ = self.refusals.popitem(last=False)
            self.undeliverable.pop(forgotten, None)
        limit = self.kafka.max_delivery_attempts
        log.warning(
            "the broker refused the %s %s for %s (%s): attempt %d of %d",
            self.kind(refused.topic),
            key_text(refused.key),
            refused.topic,
            refused.error,
            count,
            limit,
        )
        if count == limit:  # counted once, when decided; dropped whenever it comes again
            self.undeliverable[output] = refused.reason
            kind = self.kind(refused.topic)
            self.metrics.dropped.labels(output=kind, reason=refused.reason).inc()
            log.error(
                "dropping the %s %s for %s: refused (%s) %d times",
                kind,
                key_text(refused.key),
                refused.topic,
                refused.reason,
                count,
            )
        return count

    def send(
        self, sink: Sink, topic: str, key: bytes, value: bytes, headers: Headers = None
    ) -> None:
        """Send an output, unless it is undeliverable; alone if the broker refused it before."""
        if self.refusals:
            if self.dropped(topic, key):
                return
            if (topic, key) in self.refusals:
                sink.send_alone(topic, key, value, headers)
                return
        sink.send(topic, key, value, headers)

    def dropped(self, topic: str, key: bytes | None) -> bool:
        """True when the output (topic, key) is undeliverable: it is not sent again."""
        if (topic, key) not in self.undeliverable:
            return False
        log.info("not sending the undeliverable %s %s", self.kind(topic), key_text(key))
        return True

    def deliver(self, sink: Sink) -> None:
        """Wait for the broker's answer to every output since the last commit.

        Without transactions, outputs it refused for themselves (too large,
        invalid) are sent again in place, after a backoff, until it takes them
        or they reach ``kafka.max_delivery_attempts`` and are dropped: the
        outputs it took are not sent twice, and the worker goes on. Any other
        failure, or any in a transaction (the broker then aborts it), raises
        :class:`~stream.edge.UndeliveredError` for the worker's recovery.
        """
        delay = backoff_delays(0.5, 10.0)
        while True:
            try:
                sink.flush()
                return
            except UndeliveredError as error:
                if sink.transactional or not error.only_refused or self.stop.is_set():
                    raise
                self.metrics.undelivered.inc(error.count)
                again = []
                for refused in error.refused:
                    count = self.refused(refused)
                    if not self.dropped(refused.topic, refused.key):
                        again.append((refused, count))
                if not again:
                    return
                if self.stop.wait(delay(max(count for _, count in again) - 1)):
                    raise
                for refused, _ in again:  # alone: it may have been refused with its batch
                    sink.send_alone(refused.topic, refused.key, refused.value, refused.headers)
