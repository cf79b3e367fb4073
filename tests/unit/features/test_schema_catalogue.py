"""The bad-input catalogue: every class of bad record, its reason and its message.

Each test feeds one kind of bad record to :func:`decode_event` or
:func:`decode_label` and checks the exact ``reason`` (the metric label and the
dead-letter field) and that ``detail`` names what is wrong. Time checks use a
fixed ``now_ms`` so that nothing depends on the wall clock.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streamlearn.features.decode import decode_event, decode_label
from streamlearn.features.limits import Limits
from streamlearn.features.schema import REASONS, DecodeError, Event, Label

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
LIMITS = Limits()
STRICT = Limits(unknown_fields="reject")


def event(**changes: Any) -> dict[str, Any]:
    """A valid event, with fields replaced (a value of ``...`` drops the field)."""
    record: dict[str, Any] = {
        "event_id": "e1",
        "timestamp": NOW_MS,
        "user_id": "u1",
        "item_id": "i1",
        "author_id": "a1",
        "context": {"device": "ios", "position": 3},
        "features": {"price": 9.5, "brand": "acme", "promo": True},
    }
    record.update(changes)
    return {key: value for key, value in record.items() if value is not ...}


def label(**changes: Any) -> dict[str, Any]:
    """A valid label, with fields replaced (a value of ``...`` drops the field)."""
    record: dict[str, Any] = {"event_id": "e1", "timestamp": NOW_MS + 60_000, "label": 1}
    record.update(changes)
    return {key: value for key, value in record.items() if value is not ...}


def refused(raw: bytes, limits: Limits = LIMITS, *, as_label: bool = False) -> DecodeError:
    decode = decode_label if as_label else decode_event
    with pytest.raises(DecodeError) as caught:
        decode(raw, limits, now_ms=NOW_MS)
    error = caught.value
    assert error.reason in REASONS
    assert str(error) == f"{error.reason}: {error.detail}"
    return error


def test_the_valid_templates_decode():
    assert isinstance(decode_event(orjson.dumps(event()), LIMITS, now_ms=NOW_MS), Event)
    assert isinstance(decode_label(orjson.dumps(label()), LIMITS, now_ms=NOW_MS), Label)


# ---------------------------------------------------------------- invalid JSON


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"event_id": "e1", "timestamp": ', "unexpected end of data"),
        (b'{"event_id": "e1",}', "line 1"),
        (b"{'event_id': 'e1'}", "line 1 column 2"),
        (orjson.dumps(event()) + b" trailing", "unexpected content after document"),
        (b"", "empty"),
        (b"   ", "empty"),
        (b'{"event_id": "e1", "timestamp": ' + b'"NaN', "unexpected end of data"),
        (b'{"user_id": "\\ud800"}', "surrogate"),
    ],
    ids=[
        "truncated",
        "trailing-comma",
        "single-quotes",
        "trailing-text",
        "empty",
        "blank",
        "unterminated-string-NaN",
        "lone-surrogate",
    ],
)
def test_invalid_json(raw, says):
    error = refused(raw)
    assert error.reason == "invalid_json"
    assert says in error.detail


def test_invalid_json_label():
    error = refused(b'{"event_id": "e1", "label": tru}', as_label=True)
    assert error.reason == "invalid_json"
    assert "line 1" in error.detail


# ---------------------------------------------------------------- not UTF-8


@pytest.mark.parametrize(
    ("raw", "at"),
    [
        (b"\xff\xfe not text", 0),
        (b'{"event_id": "caf\xe9", "user_id": "u"}', 17),
        ('{"event_id": "e1"}'.encode("utf-16"), 0),
        (b'{"event_id": "\xc3"}', 14),
    ],
    ids=["garbage", "latin-1", "utf-16", "truncated-sequence"],
)
def test_not_utf8(raw, at):
    error = refused(raw)
    assert error.reason == "not_utf8"
    assert error.detail == f"the record is not UTF-8 text: invalid byte at {at}"


def test_not_utf8_label():
    assert refused(b'{"event_id": "\x80"}', as_label=True).reason == "not_utf8"


# ---------------------------------------------------------------- not an object


@pytest.mark.parametrize(
    ("raw", "got"),
    [
        (b'[{"event_id": "e1"}]', "an array"),
        (b"42", "a number"),
        (b"3.5", "a number"),
        (b"null", "null"),
        (b"true", "a boolean"),
        (b'"e1"', "the string 'e1'"),
    ],
)
def test_not_an_object(raw, got):
    for as_label in (False, True):
        error = refused(raw, as_label=as_label)
        assert error.reason == "not_an_object"
        assert error.detail == f"expected a JSON object, got {got}"


# ---------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("record", "says"),
    [
        (event(user_id=7), "user_id: Input should be a valid string, got a number"),
        (event(item_id=["i1"]), "item_id: Input should be a valid string, got an array"),
        (event(event_id=None), "event_id: Input should be a valid string, got null"),
        (event(author_id={"id": "a"}), "author_id: Input should be a valid string, got an object"),
        (event(context=[1, 2]), "context: Input should be a valid dictionary, got an array"),
        (event(context="ios"), "context: Input should be a valid dictionary, got the string"),
        (
            event(features={"price": {"amount": 3}}),
            "features.price: expected a number, a string or a boolean, got an object",
        ),
        (
            event(features={"tags": ["a", "b"]}),
            "features.tags: expected a number, a string or a boolean, got an array",
        ),
        (
            event(context={"device": None}),
            "context.device: expected a number or a string of at most 256 characters, got null",
        ),
        (event(label="yes"), "label: Input should be a valid number, got the string 'yes'"),
        (event(label="1"), "label: Input should be a valid number, got the string '1'"),
        (event(timestamp="yesterday"), "timestamp: timestamp 'yesterday' is not ISO-8601"),
        (event(timestamp=True), "timestamp: a timestamp is epoch milliseconds or ISO-8601"),
        (event(timestamp=None), "timestamp: a timestamp is epoch milliseconds or an ISO-8601"),
        (event(timestamp=[NOW_MS]), "timestamp: a timestamp is epoch milliseconds or an ISO-8601"),
    ],
    ids=[
        "user_id-number",
        "item_id-array",
        "event_id-null",
        "author_id-object",
        "context-list",
        "context-string",
        "features-nested-object",
        "features-array",
        "context-value-null",
        "label-string",
        "label-numeric-string",
        "timestamp-word",
        "timestamp-bool",
        "timestamp-null",
        "timestamp-array",
    ],
)
def test_wrong_type_event(record, says):
    error = refused(orjson.dumps(record))
    assert error.reason == "wrong_type"
    assert error.detail.startswith(says)


@pytest.mark.parametrize(
    ("record", "says"),
    [
        (label(label="yes"), "label: Input should be a valid number, got the string 'yes'"),
        (label(label=None), "label: Input should be a valid number, got null"),
        (label(event_id=12), "event_id: Input should be a valid string, got a number"),
        (label(weight="2"), "weight: Input should be a valid number, got the string '2'"),
        (label(weight=True), "weight: Input should be a valid number, got a boolean"),
    ],
    ids=["label-string", "label-null", "event_id-number", "weight-string", "weight-bool"],
)
def test_wrong_type_label(record, says):
    error = refused(orjson.dumps(record), as_label=True)
    assert error.reason == "wrong_type"
    assert error.detail == says


def test_booleans_are_labels_but_not_weights():
    assert decode_label(orjson.dumps(label(label=False)), LIMITS, NOW_MS).value == 0.0
    assert decode_event(orjson.dumps(event(label=True)), LIMITS, NOW_MS).label == 1.0


# ------------------------------------------------- ISO timestamps without a zone


def test_iso_timestamp_without_zone_is_a_wrong_type_that_says_to_add_a_zone():
    """Refused, not guessed: a zoneless time means different instants in different places."""
    error = refused(orjson.dumps(event(timestamp="2026-01-01T00:00:00")))
    assert error.reason == "wrong_type"
    assert error.detail == (
        "timestamp: timestamp '2026-01-01T00:00:00' has no time zone;"
        " add Z or an offset such as +02:00"
    )
    error = refused(orjson.dumps(label(timestamp="2026-01-01")), as_label=True)
    assert error.reason == "wrong_type"
    assert "has no time zone" in error.detail


@pytest.mark.parametrize("stamp", ["2026-01-01T00:00:00Z", "2026-01-01T02:00:00+02:00"])
def test_iso_timestamps_with_a_zone_are_epoch_milliseconds(stamp):
    assert decode_event(orjson.dumps(event(timestamp=stamp)), LIMITS, NOW_MS).timestamp == NOW_MS


# ---------------------------------------------------------------- missing fields


@pytest.mark.parametrize("field", ["event_id", "timestamp", "user_id", "item_id"])
def test_missing_field_event(field):
    error = refused(orjson.dumps(event(**{field: ...})))
    assert error.reason == "missing_field"
    assert error.detail == f"{field}: Field required"


@pytest.mark.parametrize("field", ["event_id", "timestamp", "label"])
def test_missing_field_label(field):
    error = refused(orjson.dumps(label(**{field: ...})), as_label=True)
    assert error.reason == "missing_field"
    assert error.detail == f"{field}: Field required"


def test_optional_fields_may_be_absent():
    bare = event(author_id=..., context=..., features=...)
    decoded = decode_event(orjson.dumps(bare), LIMITS, NOW_MS)
    assert (decoded.author_id, decoded.context, decoded.features, decoded.label) == (
        None,
        {},
        {},
        None,
    )
    assert decode_label(orjson.dumps(label(weight=...)), LIMITS, NOW_MS).weight == 1.0


# ---------------------------------------------------------------- unknown fields


def test_unknown_field_rejected_by_policy_reject():
    error = refused(orjson.dumps(event(colour="red", size=3)), STRICT)
    assert error.reason == "unknown_field"
    assert error.detail.startswith("unknown fields 'colour', 'size'; known: author_id, context")


def test_unknown_field_on_a_label_rejected_by_policy_reject():
    error = refused(orjson.dumps(label(source="app")), STRICT, as_label=True)
    assert error.reason == "unknown_field"
    assert error.detail == "unknown fields 'source'; known: event_id, label, timestamp, weight"


def test_many_unknown_fields_are_summarised():
    extra = {f"x{n:02}": n for n in range(8)}
    error = refused(orjson.dumps(event(**extra)), STRICT)
    assert "'x00', 'x01', 'x02', 'x03', 'x04' and 3 more" in error.detail


def test_unknown_fields_accepted_and_dropped_by_policy_ignore():
    decoded = decode_event(orjson.dumps(event(colour="red")), LIMITS, NOW_MS)
    assert decoded.event_id == "e1" and not hasattr(decoded, "colour")
    assert decode_label(orjson.dumps(label(source="app")), LIMITS, NOW_MS).value == 1.0


# ---------------------------------------------------------------- too large


def test_too_large_payload():
    raw = orjson.dumps(event(features={"blob": "x" * 70_000}))
    error = refused(raw)
    assert error.reason == "too_large"
    assert error.detail == f"{len(raw)} bytes, the limit is 65536"
    small = Limits(max_bytes=100)
    raw = orjson.dumps(label(event_id="e" * 100))
    error = refused(raw, small, as_label=True)
    assert (error.reason, error.detail) == ("too_large", f"{len(raw)} bytes, the limit is 100")


def test_payload_at_the_limit_is_accepted():
    raw = orjson.dumps(event())
    assert decode_event(raw, Limits(max_bytes=len(raw)), NOW_MS).event_id == "e1"
    assert refused(raw, Limits(max_bytes=len(raw) - 1)).reason == "too_large"


def test_too_many_context_entries():
    error = refused(orjson.dumps(event(context={f"k{n}": n for n in range(33)})))
    assert error.reason == "too_large"
    assert error.detail == "context has 33 entries, the limit is 32"
    assert decode_event(
        orjson.dumps(event(context={f"k{n}": n for n in range(32)})), LIMITS, NOW_MS
    )


def test_too_many_features():
    error = refused(orjson.dumps(event(features={f"f{n}": n for n in range(257)})))
    assert error.reason == "too_large"
    assert error.detail == "features has 257 entries, the limit is 256"


@pytest.mark.parametrize(
    ("record", "says"),
    [
        (event(user_id="u" * 257), "user_id: String should have at most 256 characters, got 257"),
        (event(event_id="e" * 300), "event_id: String should have at most 256 characters, got 300"),
        (
            event(context={"device": "d" * 300}),
            "context.device: a string of 300 characters, the limit is 256",
        ),
        (
            event(features={"k" * 300: 1}),
            f"features.{'k' * 37}....[key]: String should have at most 256 characters, got 300",
        ),
    ],
    ids=["user_id", "event_id", "context-value", "feature-name"],
)
def test_string_over_its_max_length(record, says):
    error = refused(orjson.dumps(record))
    assert error.reason == "too_large"
    assert error.detail == says


def test_nesting_deeper_than_the_parser_allows_is_too_large():
    raw = b'{"event_id": "e1", "features": {"x": ' + b"[" * 2000 + b"]" * 2000 + b"}}"
    error = refused(raw)
    assert error.reason == "too_large"
    assert error.detail.startswith("JSON nested deeper than 1024 levels at line 1")


# ---------------------------------------------------------------- NaN and infinity


@pytest.mark.parametrize(
    ("literal", "says"),
    [
        (b"NaN", "NaN at line 1"),
        (b"Infinity", "Infinity at line 1"),
        (b"-Infinity", "-Infinity at line 1"),
        (b"nan", "nan at line 1"),
        (b"inf", "inf at line 1"),
        (b"1e999", "a number too large for a double (it would be infinity) at line 1"),
        (b"-1e999", "a number too large for a double (it would be infinity) at line 1"),
        (b"1" + b"0" * 400, "a number too large for a double (it would be infinity) at line 1"),
    ],
)
def test_not_finite_in_an_event(literal, says):
    """orjson refuses these literals as JSON; the reason says why instead of 'invalid JSON'."""
    for field in (b'"features": {"price": %s}', b'"label": %s', b'"timestamp": %s'):
        raw = b'{"event_id": "e1", "user_id": "u", "item_id": "i", ' + field % literal + b"}"
        error = refused(raw)
        assert error.reason == "not_finite"
        assert error.detail.startswith(says)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"1e999"])
def test_not_finite_in_a_label(literal):
    for field in (b'"label": %s', b'"weight": %s'):
        raw = b'{"event_id": "e1", "timestamp": 1767225600000, ' + field % literal + b"}"
        assert refused(raw, as_label=True).reason == "not_finite"


def test_nan_spelled_as_a_string_is_text_not_a_number():
    decoded = decode_event(orjson.dumps(event(features={"x": "NaN"})), LIMITS, NOW_MS)
    assert decoded.features["x"] == "NaN"
    assert refused(orjson.dumps(label(label="NaN")), as_label=True).reason == "wrong_type"


def test_nan_inside_a_string_of_broken_json_is_invalid_json():
    assert refused(b'{"event_id": "NaN", "timestamp": ').reason == "invalid_json"


# ---------------------------------------------------------------- timestamps out of range


@pytest.mark.parametrize(
    "timestamp",
    [
        NOW_MS + 86_400_001,
        NOW_MS + 365 * 86_400_000,
        "2100-01-01T00:00:00Z",
        b"100000000000000000000000",
        2**63,
    ],
    ids=["just-past-skew", "next-year", "iso-2100", "1e23", "2^63"],
)
def test_far_future_timestamp(timestamp):
    if isinstance(timestamp, bytes):  # beyond 64 bits: orjson reads it as a float
        raw = orjson.dumps(event(timestamp=0)).replace(
            b'"timestamp":0', b'"timestamp":' + timestamp
        )
    else:
        raw = orjson.dumps(event(timestamp=timestamp))
    error = refused(raw)
    assert error.reason == "timestamp_out_of_range"
    assert error.detail.startswith("timestamp ") and " 0 " not in error.detail
    assert error.detail.endswith(f"is outside [946684800000, {NOW_MS + 86_400_000}]")


@pytest.mark.parametrize(
    "timestamp", [0, -5, 946_684_799_999, "1999-12-31T23:59:59Z", 1_767_225_600], ids=str
)
def test_timestamp_before_the_minimum(timestamp):
    """Including seconds mistaken for milliseconds (1 767 225 600 is January 1970)."""
    error = refused(orjson.dumps(event(timestamp=timestamp)))
    assert error.reason == "timestamp_out_of_range"
    assert "is outside [946684800000," in error.detail


def test_timestamp_bounds_are_inclusive_and_follow_now_ms():
    earliest, latest = 946_684_800_000, NOW_MS + 86_400_000
    for stamp in (earliest, latest):
        assert decode_event(orjson.dumps(event(timestamp=stamp)), LIMITS, NOW_MS).timestamp == stamp
    later_now = NOW_MS + 2 * 86_400_000
    assert decode_event(orjson.dumps(event(timestamp=latest + 1)), LIMITS, later_now)
    tight = Limits(max_future_ms=0, min_timestamp_ms=NOW_MS)
    assert refused(orjson.dumps(event(timestamp=NOW_MS + 1)), tight).detail == (
        f"timestamp {NOW_MS + 1} is outside [{NOW_MS}, {NOW_MS}]"
    )


def test_label_timestamp_out_of_range():
    error = refused(orjson.dumps(label(timestamp=NOW_MS + 2 * 86_400_000)), as_label=True)
    assert error.reason == "timestamp_out_of_range"
    assert refused(orjson.dumps(label(timestamp=5)), as_label=True).reason == (
        "timestamp_out_of_range"
    )


# ---------------------------------------------------------------- empty keys


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id", "author_id"])
def test_empty_key_event(field):
    error = refused(orjson.dumps(event(**{field: ""})))
    assert error.reason == "empty_key"
    assert error.detail == f"{field}: String should have at least 1 character"


def test_empty_key_label():
    error = refused(orjson.dumps(label(event_id="")), as_label=True)
    assert error.reason == "empty_key"
    assert error.detail == "event_id: String should have at least 1 character"


# ---------------------------------------------------------------- invalid values


@pytest.mark.parametrize(
    ("weight", "says"),
    [
        (0, "weight: Input should be greater than 0"),
        (0.0, "weight: Input should be greater than 0"),
        (-1.5, "weight: Input should be greater than 0"),
        (2e6, "weight: Input should be less than or equal to 1000000"),
    ],
)
def test_label_weight_not_positive_or_huge(weight, says):
    error = refused(orjson.dumps(label(weight=weight)), as_label=True)
    assert error.reason == "invalid_value"
    assert error.detail == says


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (-1, "label: Input should be greater than or equal to 0"),
        (2, "label: Input should be less than or equal to 1"),
        (1e29, "label: Input should be less than or equal to 1"),
    ],
)
def test_label_outside_zero_one(value, says):
    """A label adds to positive counters: a label of 2 or 1e29 would corrupt every rate."""
    assert refused(orjson.dumps(label(label=value)), as_label=True).detail == says
    error = refused(orjson.dumps(event(label=value)))
    assert error.reason == "invalid_value"
    assert error.detail == says


def test_fractional_labels_and_weights_are_accepted():
    decoded = decode_label(orjson.dumps(label(label=0.25, weight=1e-3)), LIMITS, NOW_MS)
    assert (decoded.value, decoded.weight) == (0.25, 1e-3)


# ---------------------------------------------------------------- the catalogue is complete


def test_every_decode_reason_has_a_test_here():
    """The reasons decode can give are the whole set less the processor's four."""
    processor_reasons = {"duplicate_event", "unknown_event", "duplicate_label", "poisoned_model"}
    tested = {
        "too_large",
        "not_utf8",
        "invalid_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "unknown_field",
        "empty_key",
        "not_finite",
        "timestamp_out_of_range",
        "invalid_value",
    }
    assert tested | processor_reasons == set(REASONS)
