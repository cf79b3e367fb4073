"""Hostile streams for the chaos suite: valid, hostile and extreme records mixed.

A stream is a list of :class:`Case`: one record each, with what must become of
it. ``scored`` records must get exactly one prediction, ``dead`` ones exactly one
dead letter, and ``either`` ones exactly one of the two (extreme values whose fate
depends on the configured limits, ids that may repeat an earlier one). Labels
(``label``) must never crash anything; the ones that cannot be valid are ``dead``.

Each kind is rendered from its own seed, so a list of ``(kind, seed)`` pairs is a
reproducible stream that hypothesis can shrink.

>>> stream = render([("event", 1), ("bad_json", 2), ("label", 3)], now_ms=T0 + 86_400_000)
>>> [(case.kind, case.topic, case.expect) for case in stream]
[('event', 'events', 'scored'), ('bad_json', 'events', 'dead'), ('label', 'labels', 'label')]
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
Expect = Literal["scored", "dead", "either", "label"]

EXTREME_NUMBERS: tuple[Any, ...] = (
    1e300,
    -1e300,
    1e-300,
    1e18,
    -1e12,
    2**63,
    -(2**70),
    1.7976931348623157e308,
)

#: Every kind a stream can hold, valid ones first.
KINDS: tuple[str, ...] = (
    "event",
    "event",
    "event",
    "event_inline_label",
    "event_unique_context",
    "event_extreme_value",
    "event_future",
    "event_duplicate",
    "label",
    "label",
    "label_extreme_weight",
    "label_unknown",
    "label_invalid",
    "event_ancient",
    "event_far_future",
    "bad_json",
    "not_utf8",
    "not_an_object",
    "huge",
    "deep",
    "nan",
    "wrong_type",
    "empty_key",
    "random_bytes",
)


@dataclass(frozen=True)
class Case:
    """One record of a hostile stream and what must become of it."""

    kind: str
    topic: Literal["events", "labels"]
    value: bytes
    expect: Expect
    event_id: str | None = None


def _event(event_id: str, ts: int, rng: random.Random, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "timestamp": ts,
        "user_id": f"u{rng.randrange(20)}",
        "item_id": f"i{rng.randrange(30)}",
        "author_id": f"a{rng.randrange(8)}",
        "context": {"device": rng.choice(["ios", "android", "web"])},
        "features": {"length": rng.randrange(50, 2000), "quality": round(rng.random(), 3)},
    }
    body.update(fields)
    return body


def render(pairs: Sequence[tuple[str, int]], now_ms: int) -> list[Case]:
    """The stream of ``(kind, seed)`` pairs; ``now_ms`` is the wall clock of the run."""
    cases: list[Case] = []
    seen_ids: list[str] = []
    for index, (kind, seed) in enumerate(pairs):
        rng = random.Random(seed * 7919 + index)
        ts = T0 + index * 60_000 + rng.randrange(60_000)
        event_id = f"c{index}-{seed % 100_000}"
        case = _render(kind, rng, event_id, ts, now_ms, seen_ids)
        if case.topic == "events" and case.event_id is not None:
            seen_ids.append(case.event_id)
        cases.append(case)
    return cases


def _dumps(body: dict[str, Any]) -> bytes:
    """JSON of ``body``; unlike orjson, integers beyond 64 bits are written as they are."""
    return json.dumps(body, separators=(",", ":")).encode()


def _render(
    kind: str, rng: random.Random, event_id: str, ts: int, now_ms: int, seen: list[str]
) -> Case:
    def event(expect: Expect, body: dict[str, Any]) -> Case:
        return Case(kind, "events", _dumps(body), expect, str(body["event_id"]))

    def label(expect: Expect, body: dict[str, Any]) -> Case:
        return Case(kind, "labels", _dumps(body), expect, str(body["event_id"]))

    def dead(value: bytes) -> Case:
        return Case(kind, "events", value, "dead")

    earlier = rng.choice(seen) if seen else event_id
    if kind == "event":
        return event("scored", _event(event_id, ts, rng))
    if kind == "event_inline_label":
        return event("scored", _event(event_id, ts, rng, label=rng.random() < 0.3))
    if kind == "event_unique_context":
        return event("scored", _event(event_id, ts, rng, context={"campaign": f"x{rng.random()}"}))
    if kind == "event_extreme_value":
        value = rng.choice(EXTREME_NUMBERS)
        body = _event(event_id, ts, rng, label=rng.random() < 0.5)
        body["features"]["length"] = value
        return event("either", body)
    if kind == "event_future":
        return event("scored", _event(event_id, now_ms + rng.randrange(HOUR, 20 * HOUR), rng))
    if kind == "event_duplicate":
        return event("either", _event(earlier, ts, rng, user_id="someone-else"))
    if kind == "label":
        body = {"event_id": earlier, "timestamp": ts + 1, "label": rng.random() < 0.3}
        return label("label", body)
    if kind == "label_extreme_weight":
        weight = rng.choice([1e6, 999_999.5, 1e-300, 5e-324])
        body = {"event_id": earlier, "timestamp": ts + 1, "label": 1, "weight": weight}
        return label("label", body)
    if kind == "label_unknown":
        return label("label", {"event_id": f"ghost-{event_id}", "timestamp": ts, "label": 1})
    if kind == "label_invalid":
        bad = rng.choice([{"weight": 0}, {"weight": -1.0}, {"label": 2}, {"label": "yes"}])
        return label("dead", {"event_id": earlier, "timestamp": ts, "label": 1, **bad})
    if kind == "event_ancient":
        return event("dead", _event(event_id, rng.choice([0, 1, 946_684_799_999]), rng))
    if kind == "event_far_future":
        return event("dead", _event(event_id, now_ms + 10 * 365 * 24 * HOUR, rng))
    if kind == "bad_json":
        return dead(_dumps(_event(event_id, ts, rng))[: rng.randrange(1, 40)])
    if kind == "not_utf8":
        return dead(b'{"event_id": "' + event_id.encode() + b'\xe9\xff", "user_id": "u"}')
    if kind == "not_an_object":
        return dead(rng.choice([b"[1, 2]", b"42", b'"text"', b"null", b"true"]))
    if kind == "huge":
        body = _event(event_id, ts, rng)
        body["features"]["blob"] = "x" * rng.randrange(70_000, 200_000)
        return dead(_dumps(body))
    if kind == "deep":
        depth = rng.randrange(1_100, 3_000)
        return dead(b"[" * depth + b"]" * depth)
    if kind == "nan":
        raw = _dumps(_event(event_id, ts, rng))[:-1]
        return dead(raw + rng.choice([b', "x": NaN}', b', "x": Infinity}', b', "x": 1e999}']))
    if kind == "wrong_type":
        field, value = rng.choice([("user_id", 7), ("context", [1]), ("label", "yes")])
        return event("dead", _event(event_id, ts, rng, **{field: value}))
    if kind == "empty_key":
        return event("dead", _event(event_id, ts, rng, item_id=""))
    if kind == "random_bytes":
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))).replace(b"\n", b" ")
        # a line of whitespace alone is a blank line of a file, which readers skip
        return dead(noise if noise.strip() else b"?" + noise)
    raise ValueError(f"unknown kind {kind!r}")


def random_stream(seed: int, size: int, now_ms: int) -> list[Case]:
    """A stream of ``size`` records drawn from every kind, reproducible from ``seed``."""
    rng = random.Random(seed)
    return render([(rng.choice(KINDS), rng.randrange(2**32)) for _ in range(size)], now_ms)


@dataclass(frozen=True)
class Outcome:
    """What a run made of a stream: predictions by event id, dead letters by record."""

    #: ``(event_id, score)`` of every champion prediction, in order.
    predictions: Sequence[tuple[str, float]]
    #: The index in the stream of every dead letter's source record.
    dead_letters: Sequence[int]
    #: The size in bytes of every dead letter as published.
    dead_letter_sizes: Sequence[int]


def _probability(score: object) -> bool:
    return isinstance(score, float | int) and math.isfinite(score) and 0 <= score <= 1


def check_invariants(cases: Sequence[Case], outcome: Outcome, max_dead_letter: int) -> None:
    """Every record's fate is the one the stream promises; raises AssertionError otherwise."""
    dead = Counter(outcome.dead_letters)
    events_twice = [i for i, n in dead.items() if n > 1 and cases[i].topic == "events"]
    assert not events_twice, f"event records dead-lettered twice: {events_twice[:5]}"
    scored = Counter(event_id for event_id, _ in outcome.predictions)
    twice = [event_id for event_id, n in scored.items() if n > 1]
    assert not twice, f"events predicted more than once: {twice[:5]}"
    bad_scores = [(e, s) for e, s in outcome.predictions if not _probability(s)]
    assert not bad_scores, f"scores that are not probabilities: {bad_scores[:5]}"
    undead = 0
    for index, case in enumerate(cases):
        where = f"{case.kind} (record {index}, {case.event_id})"
        if case.expect == "dead":
            assert index in dead, f"{where} was not dead-lettered"
        if case.expect == "scored":
            assert index not in dead, f"{where} was dead-lettered"
        if case.topic == "events" and index not in dead:
            undead += 1
            assert case.event_id in scored, f"{where}: neither a prediction nor a dead letter"
    assert undead == len(outcome.predictions), (
        f"{len(outcome.predictions)} predictions for {undead} events not dead-lettered"
    )
    too_big = [size for size in outcome.dead_letter_sizes if size > max_dead_letter]
    assert not too_big, f"dead letters over {max_dead_letter} bytes: {too_big[:5]}"


def lines(cases: Iterable[Case]) -> list[bytes]:
    """The records as lines of a JSON-lines file (no record holds a newline)."""
    return [case.value for case in cases]


def non_finite(obj: Any, path: str = "model", seen: set[int] | None = None) -> list[str]:
    """Paths of every non-finite float reachable from ``obj`` (dicts, sequences, attributes)."""
    seen = set() if seen is None else seen
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [path]
    if isinstance(obj, str | bytes | int | bool | type(None)) or id(obj) in seen:
        return []
    seen.add(id(obj))
    found: list[str] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += non_finite(value, f"{path}[{key!r}]", seen)
    elif isinstance(obj, list | tuple):
        for index, value in enumerate(obj):
            found += non_finite(value, f"{path}[{index}]", seen)
    elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in ("river", "metrics"):
        for key, value in vars(obj).items():
            found += non_finite(value, f"{path}.{key}", seen)
    elif hasattr(obj, "items") and type(obj).__module__.split(".")[0] == "river":
        for key, value in obj.items():
            found += non_finite(value, f"{path}[{key!r}]", seen)
    return found
