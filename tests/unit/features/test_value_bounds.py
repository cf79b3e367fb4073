"""Numbers in ``features`` and ``context`` are bounded at the schema.

A finite but huge value (``1e300``) decodes as JSON, yet overflows the model's
arithmetic on its first learn; the schema refuses it as ``invalid_value`` with
the feature's name and the bound it broke.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from streamlearn.features.decode import decode_event
from streamlearn.features.limits import Limits
from streamlearn.features.schema import DecodeError

NOW_MS = 1_767_225_600_000


def raw_event(**changes: Any) -> bytes:
    record: dict[str, Any] = {
        "event_id": "e1",
        "timestamp": NOW_MS,
        "user_id": "u1",
        "item_id": "i1",
        **changes,
    }
    return orjson.dumps(record)


def refused(raw: bytes, limits: Limits) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode_event(raw, limits, now_ms=NOW_MS)
    return caught.value


@pytest.mark.parametrize(
    ("section", "value", "says"),
    [
        ("features", 1e300, "features.length: 1e+300 is outside [-1e+09, 1e+09]"),
        ("features", -1e300, "features.length: -1e+300 is outside [-1e+09, 1e+09]"),
        ("features", 10**12, "features.length: 1e+12 is outside [-1e+09, 1e+09]"),
        ("context", 1e300, "context.length: 1e+300 is outside [-1e+09, 1e+09]"),
    ],
)
def test_a_number_beyond_the_default_bound_is_an_invalid_value(section, value, says):
    error = refused(raw_event(**{section: {"length": value}}), Limits())
    assert (error.reason, error.detail) == ("invalid_value", says)


def test_numbers_at_the_default_bound_are_accepted():
    event = decode_event(
        raw_event(features={"a": 1e9, "b": -1e9, "c": "text", "d": True}), Limits(), NOW_MS
    )
    assert event.features == {"a": 1e9, "b": -1e9, "c": "text", "d": True}


def test_a_per_feature_bound_replaces_the_default_for_that_name_only():
    limits = Limits(feature_bounds={"length": (0, 1e6)})
    error = refused(raw_event(features={"length": 2e6}), limits)
    assert error.reason == "invalid_value"
    assert error.detail == "features.length: 2e+06 is outside [0, 1e+06] (feature_bounds)"
    assert refused(raw_event(features={"length": -0.5}), limits).reason == "invalid_value"
    ok = decode_event(raw_event(features={"length": 1e6, "other": 5e8}), limits, NOW_MS)
    assert ok.features == {"length": 1e6, "other": 5e8}


def test_a_per_feature_bound_may_be_wider_than_the_default():
    limits = Limits(feature_bounds={"bytes": (0, 1e12)})
    assert decode_event(raw_event(features={"bytes": 5e11}), limits, NOW_MS).features == {
        "bytes": 5e11
    }


def test_the_default_bound_is_configurable():
    limits = Limits(max_abs_value=10)
    assert refused(raw_event(features={"x": 10.5}), limits).detail == (
        "features.x: 10.5 is outside [-10, 10]"
    )


@pytest.mark.parametrize(
    "bounds", [{"x": (1.0, 0.0)}, {"x": (0.0, float("inf"))}, {"x": (float("nan"), 1.0)}]
)
def test_a_bound_must_be_finite_and_ordered(bounds):
    with pytest.raises(ValidationError, match="feature_bounds"):
        Limits(feature_bounds=bounds)


def test_limits_read_bounds_from_lists_as_yaml_gives_them():
    assert Limits.model_validate({"feature_bounds": {"length": [0, 1e6]}}).feature_bounds == {
        "length": (0.0, 1e6)
    }
