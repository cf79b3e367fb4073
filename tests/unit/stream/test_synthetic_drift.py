"""Drift injection in the synthetic world: off by default, exact in index, nothing else moves."""

from __future__ import annotations

import hashlib
import statistics
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from streamlearn.stream.synthetic import World, WorldConfig, generate_world

#: SHA-256 of the JSON lines of worlds generated before drift injection existed.
#: Other tests compare counts against these streams: they must not change.
GOLDEN = {
    (2000, 7, False, True): "88a1ac548ec102faa984b3af2fe27bca1d0436f7a71d1c3dff2fa9c2f95e729a",
    (500, 3, True, True): "6e4081fe04d4cbcfb10035d69f6f99a298855cbb7d69cf2213e232390fbde124",
    (500, 5, False, False): "31b678f0357aece44056eb6397e0bbdbd280eddd06b4c9f2c49575e12d95d505",
}


def digest(config: WorldConfig) -> str:
    return hashlib.sha256(
        b"".join(orjson.dumps(r) + b"\n" for r in generate_world(config))
    ).hexdigest()


def events_of(config: WorldConfig) -> list[dict[str, Any]]:
    return [r for r in generate_world(config) if "user_id" in r]


def without_features(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "features"}


@pytest.mark.parametrize(("events", "seed", "inline", "negatives"), list(GOLDEN))
def test_default_world_is_unchanged(events: int, seed: int, inline: bool, negatives: bool) -> None:
    config = WorldConfig(
        events=events, seed=seed, inline_labels=inline, explicit_negatives=negatives
    )
    assert digest(config) == GOLDEN[(events, seed, inline, negatives)]
    explicit_off = config.model_copy(update={"feature_shift_at": None, "broken_at": None})
    assert digest(explicit_off) == digest(config)


def test_drift_past_the_end_changes_nothing() -> None:
    config = WorldConfig(events=2000, seed=7, feature_shift_at=2000, broken_at=5000)
    assert digest(config) == GOLDEN[(2000, 7, False, True)]


def test_feature_shift_starts_exactly_at_its_index() -> None:
    at = 700
    base_config = WorldConfig(events=2000, seed=11)
    config = base_config.model_copy(update={"feature_shift_at": at})
    base, shifted = events_of(base_config), events_of(config)
    assert len(base) == len(shifted) == 2000
    assert shifted[:at] == base[:at]
    assert [without_features(e) for e in shifted] == [without_features(e) for e in base]
    assert [e["features"]["length"] for e in shifted] == [e["features"]["length"] for e in base]
    assert all(
        s["features"]["quality_hint"] != b["features"]["quality_hint"]
        for s, b in zip(shifted[at:], base[at:], strict=True)
    )
    # The same noise draw, scaled and moved: hint = quality + mean + scale * noise.
    quality = World.create(config).item_quality
    for s, b in zip(shifted[at:], base[at:], strict=True):
        q = quality[int(s["item_id"][1:])]
        noise = b["features"]["quality_hint"] - q
        expected = q + config.shift_mean + config.shift_scale * noise
        assert s["features"]["quality_hint"] == pytest.approx(expected, abs=1e-3)
    before = [e["features"]["quality_hint"] for e in base[at:]]
    after = [e["features"]["quality_hint"] for e in shifted[at:]]
    assert statistics.fmean(after) - statistics.fmean(before) == pytest.approx(3.0, abs=0.1)
    assert 1.3 < statistics.pstdev(after) / statistics.pstdev(before) < 1.6


def test_broken_pipeline_makes_the_features_constant_from_its_index() -> None:
    at = 1234
    base_config = WorldConfig(events=2000, seed=11)
    config = base_config.model_copy(update={"broken_at": at})
    base, broken = events_of(base_config), events_of(config)
    assert broken[:at] == base[:at]
    assert [without_features(e) for e in broken] == [without_features(e) for e in base]
    assert all(
        e["features"] == {"quality_hint": config.broken_hint, "length": 0} for e in broken[at:]
    )
    assert len({e["features"]["quality_hint"] for e in broken[at - 1 :]}) > 1


def test_shift_then_broken_pipeline_leaves_the_labels_alone() -> None:
    config = WorldConfig(events=1500, seed=5, feature_shift_at=500, broken_at=1000)
    base = list(generate_world(WorldConfig(events=1500, seed=5)))
    drifted = list(generate_world(config))
    assert [without_features(r) for r in drifted] == [without_features(r) for r in base]
    events = [r for r in drifted if "user_id" in r]
    base_events = [r for r in base if "user_id" in r]
    assert events[:500] == base_events[:500]
    assert all(
        e["features"]["length"] == b["features"]["length"]
        for e, b in zip(events[500:1000], base_events[500:1000], strict=True)
    )
    assert all(
        e["features"] == {"quality_hint": config.broken_hint, "length": 0} for e in events[1000:]
    )


def test_drift_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        WorldConfig(feature_shift_at=-1)
    with pytest.raises(ValidationError):
        WorldConfig(broken_at=-5)
    with pytest.raises(ValidationError):
        WorldConfig(shift_scale=0)
