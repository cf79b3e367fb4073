"""Property tests: no input makes decoding or processing fail in an unplanned way.

Random bytes and near-valid JSON (a valid event or label with keys dropped,
values replaced by JSON values of other types, huge strings, deep nesting,
unicode including lone surrogates, huge integers, NaN and infinity) go to
:func:`decode_event`, :func:`decode_label` and :meth:`Processor.process`.
Decoding either returns a model or raises :class:`DecodeError` with a reason
in :data:`REASONS`; processing never raises and gives every event record
exactly one outcome, a prediction or a dead letter.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from streamlearn.features.decode import decode_event, decode_label
from streamlearn.features.interactions import InteractionConfig
from streamlearn.features.limits import Limits
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.schema import REASONS, DecodeError, Event, Label
from streamlearn.features.store import StoreConfig
from streamlearn.features.vector import FeatureConfig
from streamlearn.learners.models import build_model
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.stream.processor import ModelSlot, Processor, Record

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
EXAMPLES = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BASE_EVENT: dict[str, Any] = {
    "event_id": "e1",
    "timestamp": NOW_MS,
    "user_id": "u1",
    "item_id": "i1",
    "author_id": "a1",
    "context": {"device": "ios", "position": 3},
    "features": {"price": 9.5, "brand": "acme", "promo": True},
    "label": True,
}
BASE_LABEL: dict[str, Any] = {
    "event_id": "e1",
    "timestamp": NOW_MS + 1000,
    "label": 1,
    "weight": 1.0,
}
LIMITS = st.sampled_from(
    [
        Limits(),
        Limits(unknown_fields="reject"),
        Limits(max_bytes=512, max_context=2, max_features=2, max_future_ms=0),
    ]
)


class Deep:
    """Placeholder for a value nested ``depth`` levels deep, written out after encoding."""

    def __init__(self, depth: int, kind: str) -> None:
        self.depth, self.kind = depth, kind


_DEEP = re.compile(rb'"@@deep-(\d+)-(list|dict)@@"')


def _expand(match: re.Match[bytes]) -> bytes:
    depth = int(match.group(1))
    if match.group(2) == b"list":
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def encode(value: Any, ascii_only: bool) -> bytes:
    """JSON as a careless producer writes it: NaN, huge ints and lone surrogates included."""
    text = json.dumps(
        value,
        allow_nan=True,
        ensure_ascii=ascii_only,
        default=lambda deep: f"@@deep-{deep.depth}-{deep.kind}@@",
    )
    return _DEEP.sub(_expand, text.encode("utf-8", "surrogatepass"))


unicode_text = st.text(
    alphabet=st.characters(exclude_categories=()),  # surrogates too
    max_size=30,
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.sampled_from([0, -0.0, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 1e308, 5e-324, NOW_MS]),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    unicode_text,
    st.integers(min_value=0, max_value=80_000).map(lambda n: "x" * n),
    st.builds(Deep, st.integers(min_value=1, max_value=3000), st.sampled_from(["list", "dict"])),
    st.sampled_from(["", " ", "2026-01-01T00:00:00", "2026-01-01T00:00:00Z", "NaN", "1"]),
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(unicode_text, inner, max_size=4),
    max_leaves=10,
)


@st.composite
def near_valid(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """``base`` with a few keys dropped, replaced or added, encoded one way or another."""
    record = dict(base)
    keys = sorted(base)
    for key in draw(st.sets(st.sampled_from(keys), max_size=3)):
        del record[key]
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        key = draw(st.sampled_from([*keys, "extra"]) | unicode_text)
        record[key] = draw(json_values)
    for name in ("context", "features"):
        if isinstance(record.get(name), dict) and draw(st.booleans()):
            entries = draw(st.dictionaries(unicode_text, json_values, max_size=40))
            record[name] = {**record[name], **entries}
    raw = encode(record, ascii_only=draw(st.booleans()))
    damage = draw(st.sampled_from(["none", "none", "truncate", "byte", "wrap"]))
    if damage == "truncate" and raw:
        raw = raw[: draw(st.integers(min_value=0, max_value=len(raw) - 1))]
    elif damage == "byte" and raw:
        at = draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(min_value=0, max_value=255))]) + raw[at + 1 :]
    elif damage == "wrap":
        raw = b"[" + raw + b"]"
    return raw


ids = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)
finite = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
small_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)


@st.composite
def odd_but_valid(draw: st.DrawFn) -> bytes:
    """A valid event with unusual content: unicode ids, extreme numbers, odd names."""
    record: dict[str, Any] = {
        "event_id": draw(ids),
        "timestamp": draw(st.integers(min_value=NOW_MS - 10**11, max_value=NOW_MS)),
        "user_id": draw(ids),
        "item_id": draw(ids),
        "context": draw(st.dictionaries(small_text, finite | small_text, max_size=5)),
        "features": draw(
            st.dictionaries(
                small_text | st.sampled_from(["user_n", "item_rate", "hour_sin"]),
                finite | small_text | st.booleans(),
                max_size=6,
            )
        ),
    }
    if draw(st.booleans()):
        record["author_id"] = draw(ids)
    if draw(st.booleans()):
        record["label"] = draw(st.booleans() | st.floats(min_value=0.0, max_value=1.0))
    return orjson.dumps(record)


any_record = st.one_of(
    st.binary(max_size=300),
    near_valid(BASE_EVENT),
    near_valid(BASE_LABEL),
    odd_but_valid(),
)


def check_decodes_or_refuses(raw: bytes, limits: Limits) -> None:
    for decode, model in ((decode_event, Event), (decode_label, Label)):
        try:
            decoded = decode(raw, limits, now_ms=NOW_MS)
        except DecodeError as error:
            assert error.reason in REASONS, error.reason
            assert error.detail and len(error.detail) <= 400, error.detail
            event(f"{decode.__name__}: {error.reason}")
        else:
            event(f"{decode.__name__}: decoded")
            assert isinstance(decoded, model)
            again = decode(orjson.dumps(decoded.model_dump()), limits, now_ms=NOW_MS)
            assert again == decoded, "a decoded record survives a round trip"


def test_the_bases_are_valid():
    assert decode_event(orjson.dumps(BASE_EVENT), Limits(), now_ms=NOW_MS).label == 1.0
    assert decode_label(orjson.dumps(BASE_LABEL), Limits(), now_ms=NOW_MS).weight == 1.0


@EXAMPLES
@given(raw=st.binary(max_size=2000), limits=LIMITS)
def test_random_bytes_decode_or_are_refused_with_a_known_reason(raw, limits):
    check_decodes_or_refuses(raw, limits)


@EXAMPLES
@given(raw=near_valid(BASE_EVENT), limits=LIMITS)
def test_near_valid_events_decode_or_are_refused_with_a_known_reason(raw, limits):
    check_decodes_or_refuses(raw, limits)


@EXAMPLES
@given(raw=near_valid(BASE_LABEL), limits=LIMITS)
def test_near_valid_labels_decode_or_are_refused_with_a_known_reason(raw, limits):
    check_decodes_or_refuses(raw, limits)


def processor() -> tuple[Processor, CollectorRegistry]:
    registry = CollectorRegistry()
    store = MemoryStore(StoreConfig(pending_max=5, pending_ttl_s=60), InteractionConfig())
    slots = [ModelSlot("logistic", build_model("logistic"))]
    limits = Limits()
    return Processor(slots, store, FeatureConfig(), limits, 0.5, WorkerMetrics(registry)), registry


@EXAMPLES
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from(["events", "labels"]), any_record), max_size=8),
        min_size=1,
        max_size=3,
    )
)
def test_the_processor_never_raises_and_every_event_record_has_one_outcome(batches):
    proc, registry = processor()
    offsets = {"events": 0, "labels": 0}
    letters = 0
    for batch in batches:
        records = []
        for kind, raw in batch:
            records.append(Record(kind, raw, kind, 0, offsets[kind]))
            offsets[kind] += 1
        out = proc.process(records)

        events = [r for r in records if r.kind == "events"]
        event_letters = [d for d in out.dead_letters if d.topic == "events"]
        assert len(out.predictions) + len(event_letters) == len(events)
        assert {d.offset for d in event_letters} <= {r.offset for r in events}
        assert all(d.reason in REASONS for d in out.dead_letters)
        assert all(0.0 <= p.score <= 1.0 for p in out.predictions)
        letters += len(out.dead_letters)
        event(f"predictions: {min(len(out.predictions), 3)}+")
    counted = sum(
        registry.get_sample_value("streamlearn_dead_letters_total", {"reason": reason}) or 0.0
        for reason in REASONS
    )
    assert counted == letters


@EXAMPLES
@given(batch=st.lists(near_valid(BASE_EVENT) | odd_but_valid(), min_size=1, max_size=10))
def test_valid_events_among_bad_ones_are_all_scored(batch):
    """Each event record that decodes is predicted (ids made unique), the others dead-lettered."""
    proc, registry = processor()
    records, decodable = [], 0
    for offset, raw in enumerate(batch):
        try:
            decoded = decode_event(raw, Limits())
        except DecodeError:
            pass
        else:  # a unique id, so that no valid event is a duplicate of another
            unique = {**decoded.model_dump(), "event_id": f"{offset}#{decoded.event_id}"[:256]}
            raw = orjson.dumps(unique)
            decodable += 1
        records.append(Record("events", raw, "events", 0, offset))
    out = proc.process(records)
    event(f"decodable: {min(decodable, 5)}+")
    assert len(out.predictions) == decodable
    assert len(out.dead_letters) == len(records) - decodable
    counted = sum(
        registry.get_sample_value("streamlearn_dead_letters_total", {"reason": reason}) or 0.0
        for reason in REASONS
    )
    assert counted == len(out.dead_letters)
