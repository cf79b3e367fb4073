"""What a batch gives out: predictions, dead letters, examples for the training log.

The :class:`~stream.processor.Processor` fills a :class:`BatchOutput` per
batch; the worker publishes it (``predictions``, ``dead-letter``,
``examples``), the backtest keeps it. Each output knows its JSON form, and a
dead letter's is bounded so that the dead-letter topic always takes it.

Examples
--------
>>> Prediction("e1", "logistic", "3", 0.75, True, 1000, None).to_json(1.5)[:40]
b'{"event_id":"e1","score":0.75,"decision"'
>>> BatchOutput().labels_learned
0
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamlearn.learners.decision import Decision

__all__ = [
    "DEAD_LETTER_MIN_BYTES",
    "BatchOutput",
    "DeadLetter",
    "Example",
    "Prediction",
]


@dataclass(slots=True, frozen=True)
class Prediction:
    event_id: str
    model: str
    model_version: str
    score: float
    decision: bool
    event_timestamp_ms: int
    record_timestamp_ms: int | None
    #: Served whatever the decision: its unit is in the unfiltered holdout.
    holdout: bool = False
    #: The probability of the treatment the event got (allowed, held out or blocked).
    propensity: float = 1.0
    #: The experiment arm that scored it (None: no experiment running).
    arm: str | None = None

    def to_json(self, latency_ms: float, shadow: bool = False) -> bytes:
        """The predictions topic's record; ``arm`` is there when an experiment runs, and
        ``shadow: true`` on an arm's prediction that was not served (shadow mode).

        >>> p = Prediction("e1", "b", "2", 0.5, False, 1000, None, arm="b")
        >>> doc = orjson.loads(p.to_json(1.0))
        >>> doc["arm"], doc["holdout"], doc["propensity"]
        ('b', False, 1.0)
        """
        doc: dict[str, Any] = {
            "event_id": self.event_id,
            "score": self.score,
            "decision": self.decision,
            "holdout": self.holdout,
            "propensity": self.propensity,
            "model": self.model,
            "model_version": self.model_version,
            "event_timestamp": self.event_timestamp_ms,
            "latency_ms": round(latency_ms, 3),
        }
        if self.arm is not None:
            doc["arm"] = self.arm
        if shadow:
            doc["shadow"] = True
        return orjson.dumps(doc)


#: Largest escaped size of a dead letter's reason, detail and topic name: with the other
#: fields, a dead letter without its record takes under :data:`DEAD_LETTER_MIN_BYTES`.
_REASON_BYTES, _DETAIL_BYTES, _TOPIC_BYTES = 128, 256, 256
#: The smallest bound :meth:`DeadLetter.to_json` accepts: room for every field but the record.
DEAD_LETTER_MIN_BYTES = 1024


def _clip(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose JSON string (quotes included) takes ``max_bytes``.

    >>> _clip("abcdef", 5), _clip('a"b"c', 6), _clip("", 2)
    ('abc', 'a"b', '')
    """
    if len(orjson.dumps(text)) <= max_bytes:
        return text
    low, high = 0, len(text)  # the longest fitting prefix has a length in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        if len(orjson.dumps(text[:middle])) <= max_bytes:
            low = middle
        else:
            high = middle
    return text[:low]


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """A record that could not be processed, with why and where it came from.

    Its JSON carries the record (as text, or as hex when it is not UTF-8), its
    size and SHA-256 digest, and is cut to a bound so that the dead-letter
    topic always accepts it: a record too large to fit is truncated (and says
    so), its digest still that of the whole record.

    >>> letter = DeadLetter("invalid_json", "unexpected end", b'{"a": ' + b'"x' * 4000,
    ...                     "events", 2, 17)
    >>> doc = orjson.loads(letter.to_json(max_bytes=1024))
    >>> len(letter.to_json(max_bytes=1024)) <= 1024, doc["truncated"], doc["size"], doc["offset"]
    (True, True, 8006, 17)
    >>> doc["sha256"] == hashlib.sha256(letter.value).hexdigest()
    True
    >>> orjson.loads(DeadLetter("not_utf8", "", b"caf\\xe9", "events", 0, 1).to_json())["value_hex"]
    '636166e9'
    """

    reason: str
    detail: str
    value: bytes
    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> str:
        """The record's ``topic:partition:offset``: the dead letter's key."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    def to_json(self, max_bytes: int = 256 * 1024) -> bytes:
        """The dead letter as JSON of at most ``max_bytes`` (at least ``DEAD_LETTER_MIN_BYTES``)."""
        if max_bytes < DEAD_LETTER_MIN_BYTES:
            raise ValueError(f"max_bytes must be at least {DEAD_LETTER_MIN_BYTES}, not {max_bytes}")
        value = self.value
        doc: dict[str, object] = {
            "reason": _clip(self.reason, _REASON_BYTES),
            "detail": _clip(self.detail, _DETAIL_BYTES),
            "topic": _clip(self.topic, _TOPIC_BYTES),
            "partition": self.partition,
            "offset": self.offset,
            "size": len(value),
            "sha256": hashlib.sha256(value).hexdigest(),
            "truncated": False,
        }
        try:
            text: str | None = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        field_name = "value" if text is not None else "value_hex"
        whole = text if text is not None else value.hex()
        encoded = orjson.dumps({**doc, field_name: whole})
        if len(encoded) <= max_bytes:
            return encoded
        doc["truncated"] = True
        # what the record may take: the bound less the rest, its key, colon and comma
        room = max_bytes - len(orjson.dumps(doc)) - len(field_name) - 4
        if text is None:
            part = value[: max(0, room - 2) // 2].hex()
        else:
            # a prefix of the bytes, cut at a character boundary; then of its escaped form
            prefix = value[: max(0, room)].decode("utf-8", "ignore")
            part = _clip(prefix, room)
        if part == whole:  # it fits only because "true" is one byte shorter than "false"
            part = whole[:-2] if text is None else whole[:-1]
        doc[field_name] = part
        return orjson.dumps(doc)


@dataclass(slots=True, frozen=True)
class Example:
    """One learned label with the features the model saw: a line of the training log.

    >>> Example("e1", {"user_seen": 1.0, "ctx_device": "ios"}, 1.0, 1.0, "labels",
    ...         "labels:0:7", 1000, 5000, 0.25, "3").to_json()[:60]
    b'{"event_id":"e1","label":1.0,"weight":1.0,"kind":"labels","s'
    """

    event_id: str
    x: dict[str, Any]
    label: float
    weight: float
    #: How the label came: ``inline`` (in the event), ``labels`` (the labels topic), ``implicit``.
    kind: str
    #: The label's record (``topic:partition:offset``), or ``implicit``.
    source: str
    event_timestamp_ms: int
    label_timestamp_ms: int
    #: What the champion scored the event (None: its score was not stored).
    score: float | None
    model_version: str
    #: The champion's decision for the event (None: no longer known, e.g. after a restart).
    decision: bool | None = None
    #: Whether the event's unit is in the unfiltered holdout, and its propensity.
    holdout: bool = False
    propensity: float = 1.0
    #: The experiment arm that served the event (None: no experiment, or not known).
    arm: str | None = None

    def to_json(self) -> bytes:
        arm = {} if self.arm is None else {"arm": self.arm}
        return orjson.dumps(
            {
                "event_id": self.event_id,
                "label": self.label,
                "weight": self.weight,
                "kind": self.kind,
                "source": self.source,
                "event_timestamp": self.event_timestamp_ms,
                "label_timestamp": self.label_timestamp_ms,
                "score": self.score,
                "model_version": self.model_version,
                "decision": self.decision,
                "holdout": self.holdout,
                "propensity": self.propensity,
                **arm,
                "features": self.x,
            }
        )


@dataclass
class BatchOutput:
    predictions: list[Prediction] = field(default_factory=list)
    shadow_predictions: list[Prediction] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: The learned labels with their features, when the processor keeps them.
    examples: list[Example] = field(default_factory=list)
    labels_learned: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: The experiment's and the rollback rule's decisions taken after the batch.
    decisions: list[Decision] = field(default_factory=list)
