"""The bad-input catalogue end to end, on the real Kafka and Redis.

One batch mixes a record of every bad class with valid events and labels; one
worker processes it. Every bad record ends in the dead-letter topic once, with
its reason and its source offset; every valid event is scored once; the
worker's metrics count each reason once.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from streamlearn.stream.harness import drain, produce, run_workers, settings_for
from streamlearn.stream.produce import route

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000


def event(event_id: str, ts: int, **fields: object) -> bytes:
    body = {"event_id": event_id, "timestamp": ts, "user_id": "u", "item_id": "i", **fields}
    return orjson.dumps(body)


def label(event_id: str, ts: int, **fields: object) -> bytes:
    return orjson.dumps({"event_id": event_id, "timestamp": ts, "label": 1, **fields})


#: One record per reason; the events topic gets all but the last two.
BAD: list[tuple[str, bytes]] = [
    ("invalid_json", b'{"event_id": "bad-json", "timestamp": '),
    ("not_utf8", b'{"event_id": "caf\xe9", "user_id": "u", "item_id": "i"}'),
    ("not_an_object", b'[{"event_id": "bad-array"}]'),
    ("wrong_type", event("bad-type", T0, user_id=7)),
    ("missing_field", orjson.dumps({"event_id": "bad-missing", "timestamp": T0, "item_id": "i"})),
    ("unknown_field", event("bad-unknown", T0, colour="red")),
    ("too_large", event("bad-large", T0, features={"blob": "x" * 70_000})),
    ("not_finite", event("bad-nan", T0)[:-1] + b', "features": {"f": NaN}}'),
    ("timestamp_out_of_range", event("bad-future", T0 + 10 * 365 * 86_400_000)),
    ("empty_key", event("", T0)),
    ("duplicate_event", event("ok-3", T0 + 30 * MINUTE, user_id="someone-else")),
    ("invalid_value", label("ok-1", T0 + MINUTE, weight=0)),
    ("unknown_event", label("ghost", T0)),
]


def test_every_bad_input_is_dead_lettered_once_and_every_valid_event_is_scored(
    kafka_bootstrap, redis_url, unique_prefix
):
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=1,
        limits={"unknown_fields": "reject"},
        store={"pending_ttl_s": 60.0},
    )
    valid = [event(f"ok-{n}", T0 + n * MINUTE) for n in range(12)]
    lines: list[bytes] = []
    for n, (_, raw) in enumerate(BAD):
        lines += [valid[n], raw] if n < len(valid) else [raw]
    lines += [label("ok-1", T0 + 2 * MINUTE), label("ok-1", T0 + 3 * MINUTE)]  # a duplicate
    lines.append(event("ok-late", T0 + 20 * MINUTE))  # moves event time past the ghost's window
    valid_ids = {orjson.loads(v)["event_id"] for v in valid} | {"ok-late"}

    offsets: Counter[str] = Counter()
    source: dict[bytes, tuple[str, int]] = {}
    for line in lines:
        kind = route(line)
        source[line] = (kind, offsets[kind])
        offsets[kind] += 1
    assert [source[raw][0] for _, raw in BAD] == ["events"] * 11 + ["labels"] * 2
    assert produce(settings, lines) == offsets

    (worker,) = run_workers(settings, 1)

    predictions = Counter(
        r.key.decode() for r in drain(kafka_bootstrap, settings.kafka.topics.predictions)
    )
    assert set(predictions) == valid_ids
    assert set(predictions.values()) == {1}

    letters = [
        orjson.loads(r.value) for r in drain(kafka_bootstrap, settings.kafka.topics.dead_letter)
    ]
    topics = {"events": settings.kafka.topics.events, "labels": settings.kafka.topics.labels}
    got = sorted((d["reason"], d["topic"], d["partition"], d["offset"]) for d in letters)
    expected = sorted((reason, topics[source[raw][0]], 0, source[raw][1]) for reason, raw in BAD)
    assert got == expected
    for letter in letters:
        assert letter["detail"], letter
        if letter["reason"] == "unknown_event":
            assert orjson.loads(letter["value"])["event_id"] == "ghost"
        elif letter["reason"] == "not_utf8":
            assert bytes.fromhex(letter["value_hex"]) == dict(BAD)["not_utf8"]
        else:
            assert letter["value"].encode() == dict(BAD)[letter["reason"]]

    for reason, _ in BAD:
        counted = worker.registry.get_sample_value(
            "streamlearn_dead_letters_total", {"reason": reason}
        )
        assert counted == 1.0, reason
    skipped = worker.registry.get_sample_value(
        "streamlearn_labels_skipped_total", {"reason": "duplicate"}
    )
    assert skipped == 1.0
    assert worker.processor.slots[0].labels_learned == 1
    assert worker.summary.dead_letters == {reason: 1 for reason, _ in BAD}
