"""Decoding the training log: each record the worker writes reads back; bad ones are counted."""

from __future__ import annotations

import orjson
import pytest

from streamlearn.features.schema import REASONS, DecodeError
from streamlearn.stream.outputs import Example
from streamlearn.stream.training_log import LogRead, decode_example, parse_example


def written(**changes: object) -> bytes:
    doc = orjson.loads(
        Example(
            "e1", {"n": 2.0, "d": "ios", "b": True}, 0.0, 2.5, "implicit", "implicit",
            1_000, 9_000, None, "4", decision=True, arm="b",
        ).to_json()
    )  # fmt: skip
    doc.update(changes)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def test_a_record_the_worker_writes_reads_back_as_it_was():
    example = parse_example(written())
    assert example.x == {"n": 2.0, "d": "ios", "b": True}
    assert (example.label, example.weight, example.kind, example.arm) == (0.0, 2.5, "implicit", "b")
    logged = decode_example(written())
    assert (logged.event_ms, logged.label_ms, logged.weight) == (1_000, 9_000, 2.5)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not_utf8"),
        (b'{"event_id": ', "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (written(label=...), "missing_field"),
        (written(features=...), "missing_field"),
        (written(label="yes"), "wrong_type"),
        (written(event_timestamp=1.5), "wrong_type"),
        (written(features=[1.0]), "wrong_type"),
        (written(features={"a": [1]}), "wrong_type"),
        (written(label=0.3), "invalid_value"),
        (written(weight=0), "invalid_value"),
        (written(event_id=""), "invalid_value"),
    ],
)
def test_a_bad_record_is_refused_with_a_reason(raw, reason):
    assert reason in REASONS
    with pytest.raises(DecodeError) as refused:
        decode_example(raw)
    assert refused.value.reason == reason


def test_bad_records_are_counted_and_skipped_never_a_crash():
    read = LogRead()
    for n, raw in enumerate([written(), b"{oops", written(weight=-1), None, written(), b"{"]):
        read.add(raw, f"examples:0:{n}")
    assert len(read.examples) == 2 and read.records == 6
    assert read.skipped == {"invalid_json": 2, "invalid_value": 1, "missing_field": 1}
    assert read.first_skipped["invalid_json"].startswith("examples:0:1: ")
