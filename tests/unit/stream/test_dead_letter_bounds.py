"""A dead letter always fits the bound it is given, whatever its record and reason.

The dead letter carries its record JSON-escaped, up to six times the record's
size (control characters); a broker refuses it when it exceeds the dead-letter
topic's ``max.message.bytes``. :meth:`DeadLetter.to_json` cuts the record to the
bound and keeps what identifies the whole of it: size, SHA-256 digest, source.
"""

from __future__ import annotations

import hashlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlearn.stream.processor import DEAD_LETTER_MIN_BYTES, DeadLetter

BOUNDS = st.integers(min_value=DEAD_LETTER_MIN_BYTES, max_value=64 * 1024)
#: Records from a few bytes to several times the largest bound; text or not, escapes or not.
RECORDS = st.one_of(
    st.binary(max_size=4096),
    st.text(max_size=2048).map(str.encode),
    st.builds(
        lambda c, n: c * n,
        st.sampled_from([b"x", b'"', b"\n", b"\x01", "é".encode(), b"\xff"]),
        st.integers(0, 200_000),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    value=RECORDS,
    reason=st.text(max_size=500),
    detail=st.text(max_size=2000),
    topic=st.text(min_size=1, max_size=249),
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(-1, 2**63 - 1),
    max_bytes=BOUNDS,
)
def test_a_dead_letter_never_exceeds_its_bound_and_identifies_the_whole_record(
    value, reason, detail, topic, partition, offset, max_bytes
):
    letter = DeadLetter(reason, detail, value, topic, partition, offset)

    encoded = letter.to_json(max_bytes)

    assert len(encoded) <= max_bytes
    doc = orjson.loads(encoded)
    assert doc["size"] == len(value)
    assert doc["sha256"] == hashlib.sha256(value).hexdigest()
    assert (doc["partition"], doc["offset"]) == (partition, offset)
    if "value" in doc:
        kept = doc["value"].encode()
    else:
        kept = bytes.fromhex(doc["value_hex"])
    assert value.startswith(kept)
    assert doc["truncated"] == (kept != value)


def test_a_record_that_fits_is_kept_whole_with_its_reason_and_source():
    record = b'{"event_id": "e1", "timestamp": "soon"}'
    doc = orjson.loads(DeadLetter("wrong_type", "timestamp", record, "events", 3, 42).to_json())
    assert doc == {
        "reason": "wrong_type",
        "detail": "timestamp",
        "topic": "events",
        "partition": 3,
        "offset": 42,
        "size": len(record),
        "sha256": hashlib.sha256(record).hexdigest(),
        "truncated": False,
        "value": record.decode(),
    }


def test_a_record_of_quotes_twice_the_bound_is_truncated_to_the_bound():
    """The reported case: a record escaped to twice its size no longer fits its topic."""
    record = b'{"blob": "' + b'\\"' * 150_000 + b'"}'
    encoded = DeadLetter("too_large", "over 65536 bytes", record, "events", 0, 9).to_json(
        256 * 1024
    )
    assert 250 * 1024 < len(encoded) <= 256 * 1024
    assert orjson.loads(encoded)["truncated"] is True


def test_a_bound_too_small_for_the_fields_is_refused():
    with pytest.raises(ValueError, match="at least 1024"):
        DeadLetter("invalid_json", "", b"{", "events", 0, 0).to_json(DEAD_LETTER_MIN_BYTES - 1)
