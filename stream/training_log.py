"""Reading the training log (the ``examples`` topic) back from Kafka over a time window.

The worker publishes each learned label with the features it was learned on
(:class:`~stream.outputs.Example`, in the same transaction as its predictions). This
module reads those records back for retraining (:mod:`learners.retrain`):

- :func:`decode_example` turns one record into an :class:`~stream.outputs.Example` and
  a :class:`~learners.retrain.LoggedExample`, or refuses it with a reason of
  :data:`features.schema.REASONS` (``not_utf8``, ``invalid_json``, ``not_an_object``,
  ``missing_field``, ``wrong_type``, ``not_finite``, ``invalid_value``);
- :func:`read_training_log` reads every partition of the topic outside any consumer
  group (nothing is committed), with ``read_committed``, up to the end offsets it found
  when it started. With a window start it seeks each partition with
  ``offsets_for_times`` to ``since_ms - slack_ms``: a record is published after its
  event happened, so no record of an event in the window is before that offset (the
  slack covers the clocks of producers and brokers). Bad records are counted by
  reason and skipped, the first of each reason kept as an example; never a crash.

Examples
--------
>>> raw = Example("e1", {"clicks": 2.0, "device": "ios"}, 1.0, 1.0, "labels", "labels:0:7",
...               1_000, 5_000, 0.25, "3").to_json()
>>> decode_example(raw)
LoggedExample(event_id='e1', x={'clicks': 2.0, 'device': 'ios'}, label=1.0, weight=1.0, \
event_ms=1000, label_ms=5000, score=0.25)
>>> decode_example(b'{"event_id": "e1"}')
Traceback (most recent call last):
...
streamlearn.features.schema.DecodeError: missing_field: label
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaPartition
from kafka.errors import KafkaError

from streamlearn.features.schema import DecodeError
from streamlearn.learners.retrain import LoggedExample
from streamlearn.stream.config import KafkaConfig
from streamlearn.stream.outputs import Example
from streamlearn.stream.topics import bootstrap_option

__all__ = [
    "DEFAULT_SLACK_MS",
    "LogRead",
    "TrainingLogError",
    "decode_example",
    "parse_example",
    "read_training_log",
]

log = logging.getLogger(__name__)

#: How far before the window's start the partitions are read from (ms): producers' and
#: brokers' clocks may be that much apart.
DEFAULT_SLACK_MS = 3_600_000


class TrainingLogError(RuntimeError):
    """The training log cannot be read: no such topic, or Kafka is away."""


def _number(doc: dict[str, Any], name: str, integer: bool = False) -> Any:
    if name not in doc:
        raise DecodeError("missing_field", name)
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError("wrong_type", f"{name}: expected a number, got {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise DecodeError("wrong_type", f"{name}: expected an integer, got {value!r}")
    if not math.isfinite(value):
        raise DecodeError("not_finite", f"{name}: {value!r}")
    return value


def _text(doc: dict[str, Any], name: str, default: str | None = None) -> str:
    value = doc.get(name, default)
    if value is None:
        raise DecodeError("missing_field", name)
    if not isinstance(value, str):
        raise DecodeError("wrong_type", f"{name}: expected a string, got {type(value).__name__}")
    return value


def _features(doc: dict[str, Any]) -> dict[str, Any]:
    if "features" not in doc:
        raise DecodeError("missing_field", "features")
    features = doc["features"]
    if not isinstance(features, dict):
        raise DecodeError(
            "wrong_type", f"features: expected an object, got {type(features).__name__}"
        )
    for name, value in features.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise DecodeError("not_finite", f"features.{name}: {value!r}")
        if value is not None and not isinstance(value, str | int | float):
            raise DecodeError(
                "wrong_type",
                f"features.{name}: expected a number, boolean or string,"
                f" got {type(value).__name__}",
            )
    return features


def parse_example(raw: bytes) -> Example:
    """The :class:`~stream.outputs.Example` a training-log record holds.

    >>> parse_example(b'{"event_id": "e", "label": 1, "weight": 2, "event_timestamp": 5,'
    ...               b' "label_timestamp": 9, "features": {"a": 1}}').weight
    2.0
    >>> parse_example(b'{"event_id": "e", "label": 1, "weight": -1, "event_timestamp": 5,'
    ...               b' "label_timestamp": 9, "features": {}}')
    Traceback (most recent call last):
    ...
    streamlearn.features.schema.DecodeError: invalid_value: weight: must be positive, got -1
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("not_utf8", "the record is not UTF-8") from None
        raise DecodeError("invalid_json", str(error)) from None
    if not isinstance(doc, dict):
        raise DecodeError("not_an_object", f"expected a JSON object, got {type(doc).__name__}")
    event_id = _text(doc, "event_id")
    if not event_id:
        raise DecodeError("invalid_value", "event_id: empty")
    label = float(_number(doc, "label"))
    if label not in (0.0, 1.0):
        raise DecodeError("invalid_value", f"label: must be 0 or 1, got {doc['label']!r}")
    weight = float(_number(doc, "weight"))
    if weight <= 0:
        raise DecodeError("invalid_value", f"weight: must be positive, got {doc['weight']!r}")
    event_ms = int(_number(doc, "event_timestamp", integer=True))
    label_ms = int(_number(doc, "label_timestamp", integer=True))
    score = doc.get("score")
    return Example(
        event_id=event_id,
        x=_features(doc),
        label=label,
        weight=weight,
        kind=_text(doc, "kind", "labels"),
        source=_text(doc, "source", ""),
        event_timestamp_ms=event_ms,
        label_timestamp_ms=label_ms,
        score=float(score)
        if isinstance(score, int | float) and not isinstance(score, bool)
        else None,
        model_version=_text(doc, "model_version", ""),
        arm=doc["arm"] if isinstance(doc.get("arm"), str) else None,
    )


def decode_example(raw: bytes) -> LoggedExample:
    """A training-log record as retraining takes it; raises :class:`DecodeError`."""
    example = parse_example(raw)
    return LoggedExample(
        example.event_id,
        example.x,
        example.label,
        example.weight,
        example.event_timestamp_ms,
        example.label_timestamp_ms,
        example.score,
    )


@dataclass
class LogRead:
    """What was read: the examples, and the records skipped by reason."""

    examples: list[LoggedExample] = field(default_factory=list)
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    #: The first skipped record of each reason: ``topic:partition:offset`` and why.
    first_skipped: dict[str, str] = field(default_factory=dict)
    #: Partitions read, and where each started.
    start_offsets: dict[int, int] = field(default_factory=dict)

    def add(self, raw: bytes | None, where: str) -> None:
        """Decode one record; a bad one is counted and skipped."""
        self.records += 1
        try:
            if raw is None:
                raise DecodeError("missing_field", "the record has no value")
            self.examples.append(decode_example(raw))
        except DecodeError as error:
            self.skipped[error.reason] += 1
            self.first_skipped.setdefault(error.reason, f"{where}: {error.detail}")


def read_training_log(
    kafka: KafkaConfig,
    topic: str | None = None,
    since_ms: int | None = None,
    *,
    slack_ms: int = DEFAULT_SLACK_MS,
    timeout_s: float = 60.0,
    bootstrap_timeout_ms: int | None = 10_000,
    consumer_factory: Callable[..., Any] = KafkaConsumer,
) -> LogRead:
    """Every committed record of the training log, from ``since_ms - slack_ms`` (or the
    beginning) to the end offsets when the call began.

    Raises
    ------
    TrainingLogError
        No training-log topic configured or found, Kafka unreachable, or the end not
        reached within ``timeout_s``.
    """
    name = topic or kafka.topics.examples
    if not name:
        raise TrainingLogError(
            "no training log: set kafka.topics.examples (the topic the workers publish"
            " learned examples to) or pass the topic"
        )
    try:
        consumer = consumer_factory(
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            allow_auto_create_topics=False,  # asking for a missing log must not create it
            client_id=f"{kafka.client_id}-training-log",
            **bootstrap_option(bootstrap_timeout_ms),
            **kafka.client_options(),
        )
    except KafkaError as error:
        raise TrainingLogError(f"cannot reach Kafka: {error}") from None
    try:
        return _read(consumer, name, since_ms, slack_ms, timeout_s)
    except KafkaError as error:
        raise TrainingLogError(f"reading {name!r} failed: {error}") from None
    finally:
        consumer.close()


def _read(
    consumer: Any, name: str, since_ms: int | None, slack_ms: int, timeout_s: float
) -> LogRead:
    partitions = consumer.partitions_for_topic(name)
    if not partitions:
        raise TrainingLogError(f"the training log topic {name!r} does not exist")
    tps = [KafkaPartition(name, p) for p in sorted(partitions)]
    consumer.assign(tps)
    ends = consumer.end_offsets(tps)
    starts = consumer.beginning_offsets(tps)
    if since_ms is not None:
        found = consumer.offsets_for_times({tp: max(0, since_ms - slack_ms) for tp in tps})
        for tp in tps:
            at = found.get(tp)
            starts[tp] = ends[tp] if at is None else max(starts[tp], at.offset)
    read = LogRead()
    for tp in tps:
        consumer.seek(tp, starts[tp])
        read.start_offsets[tp.partition] = starts[tp]
    left = {tp for tp in tps if starts[tp] < ends[tp]}
    deadline = time.monotonic() + timeout_s
    while left:
        if time.monotonic() > deadline:
            behind = {tp.partition: ends[tp] - consumer.position(tp) for tp in left}
            raise TrainingLogError(
                f"reading {name!r} did not reach its end in {timeout_s:g}s (left: {behind})"
            )
        for tp, records in consumer.poll(timeout_ms=500, max_records=5_000).items():
            for record in records:
                if record.offset < ends[tp]:
                    read.add(record.value, f"{name}:{tp.partition}:{record.offset}")
        # a transaction's marker takes an offset without a record: positions say where we are
        left = {tp for tp in left if consumer.position(tp) < ends[tp]}
    if read.skipped:
        log.warning("skipped %d bad records of %s: %s", sum(read.skipped.values()), name,
                    dict(read.skipped))  # fmt: skip
    return read
