"""A synthetic world of users, items and authors, for demos, tests and benchmarks.

Users have latent tastes and a personal click propensity, items a latent
profile, a popularity and a quality, authors a quality; users are more active
at some hours, and a user who clicked an author before tends to click it again.
The producer's own features (a noisy quality signal, a length) carry little of
this: what the user did with this item and author, and what others did with
it, carries the rest, so interaction features really matter.

Each event is followed by its label after a delay: a click arrives after a
short random delay, a non-click as a negative label once the click window has
passed (or not at all, with ``explicit_negatives=False``, for implicit labels).

Drift can be injected at known event indices (0-based, in event order), for
testing the monitor: from ``feature_shift_at`` the producer feature
``quality_hint`` shifts (its mean by ``shift_mean``, its noise times
``shift_scale``), a data drift of an input the models weigh little; from
``broken_at`` the producer's pipeline is broken and its features are constants
(``quality_hint`` a sentinel, ``length`` 0): an online model then scores
nearly every event positive until the labels of the broken events come back
(one click window) and it learns the constant. Neither changes the world:
users click as before, and every random draw is the same, so the stream
differs from the undrifted one only in those features from those indices on.

A group can be given to the users (``group_share > 0``): a share of them
belong to group ``b``, the rest to ``a``, and their events carry it as the
context field ``group``; ``group_effect`` is added to the click logit of
group ``b``'s events, so a model that learns it scores that slice higher (a
fairness gap to find with ``monitoring.slices: [context.group]``). Groups are
drawn from their own random stream, so the rest of the world stays the same.

Examples
--------
>>> records = list(generate_world(WorldConfig(events=50, seed=7)))
>>> events = [r for r in records if "user_id" in r]
>>> labels = [r for r in records if "user_id" not in r]
>>> len(events), len(labels), records == sorted(records, key=lambda r: r["timestamp"])
(50, 50, True)
>>> broken = generate_world(WorldConfig(events=50, seed=7, broken_at=40))
>>> [e["features"] for e in broken if "user_id" in e][40]
{'quality_hint': 100.0, 'length': 0}
>>> grouped = generate_world(WorldConfig(events=50, seed=7, group_share=0.5))
>>> sorted({e["context"]["group"] for e in grouped if "user_id" in e})
['a', 'b']
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FeedRequest", "World", "WorldConfig", "feed_requests", "generate_world"]


class WorldConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    events: int = Field(default=10_000, ge=1)
    users: int = Field(default=300, ge=1)
    items: int = Field(default=500, ge=1)
    authors: int = Field(default=60, ge=1)
    seed: int = 42
    start_ms: int = Field(default=1_767_225_600_000, description="2026-01-01T00:00:00Z")
    events_per_second: float = Field(default=0.25, gt=0, description="Mean rate in event time.")
    mean_click_delay_s: float = Field(default=60.0, gt=0)
    click_window_s: float = Field(default=600.0, gt=0)
    explicit_negatives: bool = True
    inline_labels: bool = Field(default=False, description="Put the label in the event itself.")
    dimensions: int = Field(default=4, ge=1, le=32)
    feature_shift_at: int | None = Field(
        default=None,
        ge=0,
        description="From this event index on, `quality_hint` drifts (data drift).",
    )
    shift_mean: float = Field(default=3.0, description="Added to `quality_hint` when shifted.")
    shift_scale: float = Field(
        default=1.5, gt=0, description="Multiplies the noise of `quality_hint` when shifted."
    )
    broken_at: int | None = Field(
        default=None,
        ge=0,
        description="From this event index on, the producer's features are constants.",
    )
    broken_hint: float = Field(
        default=100.0, description="The constant `quality_hint` of a broken pipeline."
    )
    group_share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of users in group `b` (0: no `group` context field).",
    )
    group_effect: float = Field(
        default=0.0,
        ge=-10.0,
        le=10.0,
        description="Added to the click logit of group `b`'s events.",
    )


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


@dataclass
class World:
    """The hidden truth of the synthetic world."""

    config: WorldConfig
    rng: random.Random
    user_taste: list[list[float]] = field(default_factory=list)
    user_bias: list[float] = field(default_factory=list)
    user_peak_hour: list[int] = field(default_factory=list)
    user_device: list[str] = field(default_factory=list)
    user_country: list[str] = field(default_factory=list)
    user_group: list[str] = field(default_factory=list)
    item_profile: list[list[float]] = field(default_factory=list)
    item_quality: list[float] = field(default_factory=list)
    item_author: list[int] = field(default_factory=list)
    item_weight: list[float] = field(default_factory=list)
    author_quality: list[float] = field(default_factory=list)
    clicked_authors: set[tuple[int, int]] = field(default_factory=set)

    @classmethod
    def create(cls, config: WorldConfig) -> World:
        rng = random.Random(config.seed)
        d = config.dimensions
        world = cls(config, rng)

        def vector() -> list[float]:
            return [rng.gauss(0.0, 1.0) / math.sqrt(d) for _ in range(d)]

        for _ in range(config.users):
            world.user_taste.append(vector())
            world.user_bias.append(rng.gauss(-0.3, 0.8))
            world.user_peak_hour.append(rng.randrange(24))
            world.user_device.append(rng.choice(["ios", "android", "web"]))
            world.user_country.append(rng.choice(["fr", "de", "us", "br", "in"]))
        groups = random.Random(f"{config.seed}-group")
        world.user_group = [
            "b" if groups.random() < config.group_share else "a" for _ in range(config.users)
        ]
        world.author_quality = [rng.gauss(0.0, 0.7) for _ in range(config.authors)]
        for rank in range(config.items):
            world.item_profile.append(vector())
            world.item_quality.append(rng.gauss(0.0, 0.8))
            world.item_author.append(rng.randrange(config.authors))
            world.item_weight.append(1.0 / (rank + 1) ** 0.8)
        return world

    def click_probability(self, user: int, item: int, hour: float, device: str) -> float:
        author = self.item_author[item]
        affinity = sum(
            u * v for u, v in zip(self.user_taste[user], self.item_profile[item], strict=True)
        )
        hours_away = min(
            abs(hour - self.user_peak_hour[user]), 24 - abs(hour - self.user_peak_hour[user])
        )
        z = (
            -2.2
            + 1.5 * affinity
            + self.user_bias[user]
            + self.item_quality[item]
            + self.author_quality[author]
            + 0.6 * math.cos(math.pi * hours_away / 12.0)
            + (0.3 if device == "ios" else 0.0)
            + (1.2 if (user, author) in self.clicked_authors else 0.0)
            + (self.config.group_effect if self.user_group[user] == "b" else 0.0)
        )
        return _sigmoid(z)


def generate_world(config: WorldConfig, world: World | None = None) -> Iterator[dict[str, Any]]:
    """Events and labels of the world as JSON-ready dicts, in event-time order.

    ``world``: the world to run (default: a new one of ``config``); after the stream it
    holds what happened (who clicked which author), e.g. for :func:`feed_requests`.
    """
    world = world if world is not None else World.create(config)
    rng = world.rng
    items = list(range(config.items))
    pending: list[tuple[int, int, dict[str, Any]]] = []  # (timestamp, sequence, label)
    sequence = 0
    t = float(config.start_ms)
    for n in range(config.events):
        t += rng.expovariate(config.events_per_second) * 1000.0
        timestamp = int(t)
        while pending and pending[0][0] <= timestamp:
            yield pending.pop(0)[2]
        user = rng.randrange(config.users)
        item = rng.choices(items, weights=world.item_weight)[0]
        author = world.item_author[item]
        device = (
            world.user_device[user] if rng.random() < 0.9 else rng.choice(["ios", "android", "web"])
        )
        hour = (timestamp % 86_400_000) / 3_600_000
        clicked = rng.random() < world.click_probability(user, item, hour, device)
        if clicked:
            world.clicked_authors.add((user, author))
        event: dict[str, Any] = {
            "event_id": f"ev-{config.seed}-{n}",
            "timestamp": timestamp,
            "user_id": f"u{user}",
            "item_id": f"i{item}",
            "author_id": f"a{author}",
            "context": _context(config, world, user, device),
            "features": _producer_features(config, n, world.item_quality[item], rng),
        }
        if config.inline_labels:
            event["label"] = clicked
            yield event
            continue
        yield event
        if clicked:
            delay_ms = int(rng.expovariate(1.0 / config.mean_click_delay_s) * 1000.0)
            delay_ms = min(delay_ms, int(config.click_window_s * 1000) - 1)
        elif config.explicit_negatives:
            delay_ms = int(config.click_window_s * 1000)
        else:
            continue
        label = {"event_id": event["event_id"], "timestamp": timestamp + delay_ms, "label": clicked}
        sequence += 1
        _insert(pending, (timestamp + delay_ms, sequence, label))
    for _, _, label in pending:
        yield label


def _context(config: WorldConfig, world: World, user: int, device: str) -> dict[str, str]:
    context = {"device": device, "country": world.user_country[user]}
    if config.group_share > 0:
        context["group"] = world.user_group[user]
    return context


@dataclass(frozen=True)
class FeedRequest:
    """A feed to rank: a user at a moment, the candidate items, and the ones clicked."""

    request_id: str
    user_id: str
    timestamp: int
    context: dict[str, Any]
    candidates: list[dict[str, Any]]
    clicked: frozenset[str]

    def body(self) -> dict[str, Any]:
        """The ``POST /rank`` request for this feed."""
        return {
            "request_id": self.request_id,
            "user_id": self.user_id,
            "timestamp": self.timestamp,
            "context": self.context,
            "candidates": self.candidates,
        }


def feed_requests(
    world: World, start_ms: int, count: int, candidates: int, spacing_s: float = 60.0
) -> Iterator[FeedRequest]:
    """Feed requests after ``start_ms``: a user, ``candidates`` distinct items drawn by
    popularity (as a candidate generator would), and the items the user clicks, each
    with the world's click probability at that moment.

    >>> world = World.create(WorldConfig(items=50, seed=3))
    >>> feed = next(feed_requests(world, 1_767_225_600_000, 1, 20))
    >>> len(feed.candidates), len({c["item_id"] for c in feed.candidates})
    (20, 20)
    >>> feed.clicked <= {c["item_id"] for c in feed.candidates}
    True
    """
    config, rng = world.config, world.rng
    items = list(range(config.items))
    size = min(candidates, config.items)
    t = float(start_ms)
    for n in range(count):
        t += rng.expovariate(1.0 / spacing_s) * 1000.0
        timestamp = int(t)
        user = rng.randrange(config.users)
        device = world.user_device[user]
        hour = (timestamp % 86_400_000) / 3_600_000
        chosen: list[int] = [] if 2 * size <= config.items else rng.sample(items, size)
        seen: set[int] = set(chosen)
        while len(chosen) < size:
            item = rng.choices(items, weights=world.item_weight)[0]
            if item not in seen:
                seen.add(item)
                chosen.append(item)
        clicked = frozenset(
            f"i{item}"
            for item in chosen
            if rng.random() < world.click_probability(user, item, hour, device)
        )
        yield FeedRequest(
            f"feed-{config.seed}-{n}",
            f"u{user}",
            timestamp,
            _context(config, world, user, device),
            [
                {
                    "item_id": f"i{item}",
                    "author_id": f"a{world.item_author[item]}",
                    "features": _producer_features(config, 0, world.item_quality[item], rng),
                }
                for item in chosen
            ],
            clicked,
        )


def _producer_features(
    config: WorldConfig, n: int, quality: float, rng: random.Random
) -> dict[str, Any]:
    """The producer's features of event ``n``, drifted or broken as configured.

    The random draws are the same whatever the drift settings.
    """
    noise = rng.gauss(0.0, 2.0)
    length = rng.randrange(20, 2000)
    if config.broken_at is not None and n >= config.broken_at:
        return {"quality_hint": config.broken_hint, "length": 0}
    if config.feature_shift_at is not None and n >= config.feature_shift_at:
        return {
            "quality_hint": round(quality + config.shift_mean + config.shift_scale * noise, 4),
            "length": length,
        }
    return {"quality_hint": round(quality + noise, 4), "length": length}


def _insert(
    pending: list[tuple[int, int, dict[str, Any]]], entry: tuple[int, int, dict[str, Any]]
) -> None:
    index = len(pending)
    while index > 0 and pending[index - 1][:2] > entry[:2]:
        index -= 1
    pending.insert(index, entry)
