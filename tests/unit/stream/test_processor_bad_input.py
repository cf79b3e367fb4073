"""Bad input at the processor: duplicates, replays, labels for unknown events, mixed batches.

Every test runs :class:`Processor` on a :class:`MemoryStore` (no server) with
its own Prometheus registry, and checks both the outcome (prediction or dead
letter, with its reason and source) and the counters a dashboard would read.
"""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from streamlearn.features.interactions import InteractionConfig
from streamlearn.features.limits import Limits
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import StoreConfig
from streamlearn.features.vector import FeatureConfig
from streamlearn.learners.models import build_model
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.stream.processor import ModelSlot, Processor, Record

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, in the past of any clock running these tests
HOUR = 3_600_000


class Rig:
    """A processor on a memory store, with helpers to make records and read counters."""

    def __init__(
        self,
        store: StoreConfig | None = None,
        limits: Limits | None = None,
        watermark_quantile: float = 0.5,
    ) -> None:
        self.registry = CollectorRegistry()
        self.store = MemoryStore(store or StoreConfig(), InteractionConfig())
        self.processor = Processor(
            [ModelSlot("logistic", build_model("logistic"))],
            self.store,
            FeatureConfig(),
            limits or Limits(),
            threshold=0.5,
            metrics=WorkerMetrics(self.registry),
            watermark_quantile=watermark_quantile,
        )
        self.offsets = {"events": 0, "labels": 0}

    def event(self, event_id: str, ts: int = T0, **fields: Any) -> Record:
        body = {"event_id": event_id, "timestamp": ts, "user_id": "u", "item_id": "i", **fields}
        return self.raw("events", orjson.dumps(body))

    def label(self, event_id: str, ts: int = T0, value: float = 1.0, **fields: Any) -> Record:
        body = {"event_id": event_id, "timestamp": ts, "label": value, **fields}
        return self.raw("labels", orjson.dumps(body))

    def raw(self, kind: str, value: bytes) -> Record:
        offset = self.offsets[kind]
        self.offsets[kind] += 1
        return Record(kind, value, kind, 0, offset)  # type: ignore[arg-type]

    def dead(self, reason: str) -> float:
        value = self.registry.get_sample_value("streamlearn_dead_letters_total", {"reason": reason})
        return value or 0.0

    def skipped(self, reason: str) -> float:
        value = self.registry.get_sample_value(
            "streamlearn_labels_skipped_total", {"reason": reason}
        )
        return value or 0.0

    def count(self, entity: str) -> int:
        state = self.store.entities.get(entity)
        return state.count if state is not None else 0


# ---------------------------------------------------------------- duplicates and replays


def test_duplicate_event_id_from_another_record_is_a_dead_letter_and_counted():
    rig = Rig()
    first, again = rig.event("e1"), rig.event("e1", T0 + 1000, user_id="v")
    out = rig.processor.process([first, rig.event("e2"), again, rig.event("e3")])

    assert [p.event_id for p in out.predictions] == ["e1", "e2", "e3"]
    (letter,) = out.dead_letters
    assert (letter.reason, letter.topic, letter.partition, letter.offset) == (
        "duplicate_event",
        "events",
        0,
        again.offset,
    )
    assert "'e1'" in letter.detail and "seen before" in letter.detail
    assert letter.value == again.value
    assert rig.dead("duplicate_event") == 1.0
    assert rig.count("user:v") == 0, "the duplicate did not count its user"
    assert rig.count("user:u") == 3


def test_duplicate_event_id_in_a_later_batch_is_a_dead_letter_too():
    rig = Rig()
    rig.processor.process([rig.event("e1")])
    out = rig.processor.process([rig.event("e1", T0 + 5000)])
    assert out.predictions == []
    assert [d.reason for d in out.dead_letters] == ["duplicate_event"]
    assert rig.dead("duplicate_event") == 1.0
    assert rig.count("user:u") == 1


def test_the_same_record_again_is_a_replay_scored_again_without_counting_twice():
    rig = Rig()
    record = rig.event("e1", author_id="a")
    first = rig.processor.process([record])
    before = dict(rig.store.entities)

    replay = rig.processor.process([record])

    assert [(p.event_id, p.score) for p in replay.predictions] == [
        (p.event_id, p.score) for p in first.predictions
    ]
    assert replay.dead_letters == []
    assert rig.dead("duplicate_event") == 0.0
    assert rig.store.entities == before
    assert {key: state.count for key, state in rig.store.entities.items()} == {
        "user:u": 1,
        "item:i": 1,
        "author:a": 1,
        "user_item:1:u|i": 1,
        "user_author:1:u|a": 1,
    }


def test_a_replay_after_later_events_counts_nothing_and_still_scores():
    rig = Rig()
    record = rig.event("e1")
    rig.processor.process([record, rig.event("e2", T0 + 1000)])
    out = rig.processor.process([record, rig.event("e3", T0 + 2000)])
    assert [p.event_id for p in out.predictions] == ["e1", "e3"]
    assert out.dead_letters == []
    assert rig.count("user:u") == 3, "e1, e2 and e3 once each"


# ---------------------------------------------------------------- labels for unknown events


def test_a_label_for_an_unknown_event_waits_then_its_event_claims_it():
    rig = Rig()
    out = rig.processor.process([rig.label("e1", T0)])
    assert (out.dead_letters, out.labels_learned) == ([], 0)
    out = rig.processor.process([rig.event("e1", T0 - 1000)])
    assert out.labels_learned == 1
    assert rig.dead("unknown_event") == 0.0
    assert rig.store.pending == {}


def test_a_label_whose_event_never_comes_is_a_dead_letter_after_the_pending_window():
    # The newest event time is the watermark (quantile 1), so single events move it.
    rig = Rig(StoreConfig(pending_ttl_s=3600), watermark_quantile=1.0)
    orphan = rig.label("ghost", T0, value=1.0, weight=2.5)
    out = rig.processor.process([orphan, rig.event("e1", T0)])
    assert out.dead_letters == [] and "ghost" in rig.store.pending

    out = rig.processor.process([rig.event("e2", T0 + HOUR - 1)])
    assert out.dead_letters == [], "still inside the window (event time)"

    out = rig.processor.process([rig.event("e3", T0 + HOUR)])
    (letter,) = out.dead_letters
    assert letter.reason == "unknown_event"
    assert (letter.topic, letter.partition, letter.offset) == ("labels", 0, orphan.offset)
    assert "pending window" in letter.detail
    assert orjson.loads(letter.value)["event_id"] == "ghost"
    assert [p.event_id for p in out.predictions] == ["e3"]
    assert rig.dead("unknown_event") == 1.0
    assert rig.store.pending == {}

    late = rig.processor.process([rig.event("ghost", T0 + HOUR + 1)])
    assert late.labels_learned == 0, "an expired label is not learned later"


def test_an_unknown_event_dead_letter_keeps_the_whole_label_record():
    rig = Rig(StoreConfig(pending_ttl_s=60), watermark_quantile=1.0)
    orphan = rig.label("ghost", T0, value=1.0, weight=2.5)
    rig.processor.process([orphan])
    out = rig.processor.process([rig.event("e1", T0 + HOUR)])
    (letter,) = out.dead_letters
    assert orjson.loads(letter.value) == orjson.loads(orphan.value)


def test_pending_labels_over_pending_max_are_dead_letters_oldest_first():
    rig = Rig(StoreConfig(pending_max=2, pending_ttl_s=86_400))
    labels = [rig.label(f"ghost{n}", T0 + n * 1000) for n in range(3)]
    out = rig.processor.process([labels[1], labels[0], rig.event("e1"), labels[2]])

    assert [p.event_id for p in out.predictions] == ["e1"]
    (letter,) = out.dead_letters
    assert (letter.reason, letter.offset) == ("unknown_event", labels[0].offset)
    assert orjson.loads(letter.value)["event_id"] == "ghost0"
    assert sorted(rig.store.pending) == ["ghost1", "ghost2"]
    assert rig.dead("unknown_event") == 1.0

    out = rig.processor.process([rig.label("ghost3", T0 + 3000)])
    assert [orjson.loads(d.value)["event_id"] for d in out.dead_letters] == ["ghost1"]
    assert rig.dead("unknown_event") == 2.0


# ---------------------------------------------------------------- duplicate labels


def test_a_duplicate_label_is_learned_once_and_counted_as_skipped():
    rig = Rig()
    out = rig.processor.process(
        [rig.event("e1"), rig.label("e1", T0 + 1000), rig.label("e1", T0 + 2000, value=0.0)]
    )
    assert out.labels_learned == 1
    assert rig.processor.slots[0].labels_learned == 1
    assert rig.skipped("duplicate") == 1.0
    learned = rig.registry.get_sample_value(
        "streamlearn_labels_learned_total", {"source": "labels"}
    )
    assert learned == 1.0
    assert out.dead_letters == []
    assert rig.store.entities["user:u"].labelled == 1.0
    assert rig.store.entities["user:u"].positives == 1.0, "the first label counts, not the second"


def test_a_duplicate_label_while_both_wait_for_their_event_is_learned_once():
    rig = Rig()
    out = rig.processor.process([rig.label("e1", T0), rig.label("e1", T0 + 1)])
    assert out.labels_learned == 0 and rig.skipped("duplicate") == 1.0
    out = rig.processor.process([rig.event("e1", T0 - 5000)])
    assert out.labels_learned == 1
    assert rig.processor.slots[0].labels_learned == 1
    assert rig.dead("unknown_event") == 0.0


def test_a_label_after_an_inline_label_is_a_duplicate():
    rig = Rig()
    out = rig.processor.process([rig.event("e1", label=True), rig.label("e1", T0 + 1000)])
    assert out.labels_learned == 1
    assert rig.skipped("duplicate") == 1.0


# ---------------------------------------------------------------- the batch goes on


BAD_EVENTS: list[tuple[bytes, str]] = [
    (b'{"event_id": "x", "timestamp": ', "invalid_json"),
    (b"\xff\xfe not text", "not_utf8"),
    (b"[1, 2, 3]", "not_an_object"),
    (b'{"event_id": "x", "timestamp": 1767225600000, "user_id": 7, "item_id": "i"}', "wrong_type"),
    (b'{"event_id": "x", "timestamp": 1767225600000, "item_id": "i"}', "missing_field"),
    (
        b'{"event_id": "x", "timestamp": 1767225600000, "user_id": "u", "item_id": "i",'
        b' "colour": "red"}',
        "unknown_field",
    ),
    (
        b'{"event_id": "x", "timestamp": 1767225600000, "user_id": "u", "item_id": "i",'
        b' "features": {"blob": "' + b"x" * 70_000 + b'"}}',
        "too_large",
    ),
    (
        b'{"event_id": "x", "timestamp": 1767225600000, "user_id": "u", "item_id": "i",'
        b' "features": {"f": NaN}}',
        "not_finite",
    ),
    (
        b'{"event_id": "x", "timestamp": 99999999999999, "user_id": "u", "item_id": "i"}',
        "timestamp_out_of_range",
    ),
    (
        b'{"event_id": "x", "timestamp": 5, "user_id": "u", "item_id": "i"}',
        "timestamp_out_of_range",
    ),
    (
        b'{"event_id": "x", "timestamp": "2026-01-01T00:00:00", "user_id": "u", "item_id": "i"}',
        "wrong_type",
    ),
    (b'{"event_id": "", "timestamp": 1767225600000, "user_id": "u", "item_id": "i"}', "empty_key"),
    (
        b'{"event_id": "x", "timestamp": 1767225600000, "user_id": "u", "item_id": "i",'
        b' "label": 7}',
        "invalid_value",
    ),
]


def test_every_valid_record_of_a_batch_is_scored_around_every_bad_one():
    rig = Rig(limits=Limits(unknown_fields="reject"))
    records: list[Record] = []
    expected: list[tuple[str, int, str]] = []
    valid: list[str] = []
    for n, (raw, reason) in enumerate(BAD_EVENTS):
        records.append(rig.event(f"ok{n}", T0 + n))
        valid.append(f"ok{n}")
        bad = rig.raw("events", raw)
        records.append(bad)
        expected.append(("events", bad.offset, reason))
    records.append(rig.event("ok0", T0 + 100))
    expected.append(("events", records[-1].offset, "duplicate_event"))
    records.append(rig.label("e-none", T0, weight=0))
    expected.append(("labels", records[-1].offset, "invalid_value"))
    records.append(rig.event("last", T0 + 200))
    valid.append("last")

    out = rig.processor.process(records)

    assert [p.event_id for p in out.predictions] == valid
    # decode failures are found first, conflicts with the store after: compare by source
    assert sorted((d.topic, d.offset, d.reason) for d in out.dead_letters) == sorted(expected)
    assert all(d.value == records_by_offset(records, d) for d in out.dead_letters)
    for reason in {reason for _, _, reason in expected}:
        assert rig.dead(reason) == sum(1 for *_, r in expected if r == reason), reason
    assert rig.registry.get_sample_value("streamlearn_events_total") == len(valid) + 1


def records_by_offset(records: list[Record], letter: Any) -> bytes:
    (record,) = [r for r in records if (r.topic, r.offset) == (letter.topic, letter.offset)]
    return record.value


def test_a_batch_of_only_bad_records_is_only_dead_letters():
    rig = Rig()
    out = rig.processor.process([rig.raw("events", raw) for raw, _ in BAD_EVENTS[:5]])
    assert out.predictions == []
    assert [d.reason for d in out.dead_letters] == [reason for _, reason in BAD_EVENTS[:5]]
    assert rig.count("user:u") == 0


# ---------------------------------------------------------------- ids that touch key syntax


def test_pairs_whose_ids_contain_the_separator_have_separate_state():
    rig = Rig()
    out = rig.processor.process(
        [
            rig.event("e1", user_id="a|b", item_id="c"),
            rig.event("e2", T0 + 1000, user_id="a", item_id="b|c"),
        ]
    )
    assert len(out.predictions) == 2
    pair_keys = [key for key in rig.store.entities if key.startswith("user_item:")]
    assert len(pair_keys) == 2
