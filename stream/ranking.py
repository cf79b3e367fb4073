"""Ranking offline: NDCG@k, MRR and hit rate@k of the model against popularity and random.

The synthetic world streams its events and clicks through the worker's own
:class:`~stream.processor.Processor` (in process, an in-memory store), so the model and
the interaction state are the ones a worker would have; then feed requests come (a
user, candidates drawn by popularity, the items the user clicks, from the world's
hidden click probabilities) and each is ranked three ways, without learning from them:

* ``model``: the API's ranking (:func:`stream.serve.score_events` on the state read
  for the request, the worker's features);
* ``popularity``: by the item's count of events in the stream;
* ``random``: a seeded shuffle.

Relevance is binary (clicked or not); a feed without any click has no ideal ranking
and is left out of the means (counted). The metrics are pure functions:

>>> ndcg_at_k(["a", "b", "c"], {"b"}, 10) == 1 / math.log2(3)
True
>>> mrr(["a", "b", "c"], {"c"}), hit_rate_at_k(["a", "b", "c"], {"c"}, 2)
(0.3333333333333333, 0.0)
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from streamlearn.features.interactions import EntityState
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.schema import Event
from streamlearn.stream.config import Settings
from streamlearn.stream.processor import ModelSlot, Processor, Record
from streamlearn.stream.serve import kinds, rank_order, score_events
from streamlearn.stream.synthetic import (
    FeedRequest,
    World,
    WorldConfig,
    feed_requests,
    generate_world,
)

__all__ = [
    "RANKERS",
    "RankEvalResult",
    "dcg",
    "hit_rate_at_k",
    "mrr",
    "ndcg_at_k",
    "rank_eval",
    "report_markdown",
]

RANKERS: tuple[str, ...] = ("model", "popularity", "random")


def dcg(gains: Sequence[float], k: int) -> float:
    """Discounted cumulative gain of the first ``k`` gains: ``sum(g_i / log2(i + 1))``, i from 1.

    >>> dcg([1, 0, 1], 10) == 1 + 1 / 2
    True
    """
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))


def ndcg_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int = 10) -> float:
    """NDCG@k of a ranking with binary relevance (0 when nothing is relevant).

    >>> ndcg_at_k(["x", "y"], set(), 10)
    0.0
    >>> ndcg_at_k(["x", "y"], {"x"}, 10)
    1.0
    """
    relevant = set(relevant)
    ideal = dcg([1.0] * min(len(relevant), k), k)
    if ideal == 0.0:
        return 0.0
    return dcg([1.0 if item in relevant else 0.0 for item in ranked], k) / ideal


def mrr(ranked: Sequence[str], relevant: Iterable[str]) -> float:
    """Reciprocal rank of the first relevant item (0 when none is ranked)."""
    relevant = set(relevant)
    for position, item in enumerate(ranked, start=1):
        if item in relevant:
            return 1.0 / position
    return 0.0


def hit_rate_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int = 10) -> float:
    """1.0 when a relevant item is in the first ``k``, else 0.0."""
    relevant = set(relevant)
    return 1.0 if any(item in relevant for item in ranked[:k]) else 0.0


@dataclass
class RankEvalResult:
    """Mean metrics per ranker over the feeds with at least one click."""

    config: dict[str, Any]
    feeds: int = 0
    feeds_with_clicks: int = 0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "feeds": self.feeds,
            "feeds_with_clicks": self.feeds_with_clicks,
            "metrics": self.metrics,
            "model_beats_popularity": self.metrics["model"]["ndcg@10"]
            > self.metrics["popularity"]["ndcg@10"],
        }


def _train(settings: Settings, world_config: WorldConfig) -> tuple[Processor, World, int]:
    """The world's stream through a Processor; returns it, the world after, the last time."""
    world = World.create(world_config)
    model = settings.model.build()
    store = MemoryStore(settings.store, settings.features.interactions)
    processor = Processor(
        [ModelSlot(settings.model.spec, model, settings.model.spec)],
        store,
        settings.features,
        settings.limits,
        settings.model.threshold,
    )
    batch: list[Record] = []
    last = world_config.start_ms
    offsets = {"events": 0, "labels": 0}
    for record in generate_world(world_config, world):
        kind: Literal["events", "labels"] = "events" if "user_id" in record else "labels"
        last = max(last, int(record["timestamp"]))
        batch.append(Record(kind, orjson.dumps(record), kind, 0, offsets[kind], last))
        offsets[kind] += 1
        if len(batch) >= 500:
            processor.process(batch)
            batch = []
    if batch:
        processor.process(batch)
    return processor, world, last


def _states(store: MemoryStore, event: Event) -> list[tuple[str, EntityState]]:
    """The state the store holds for an event's entities, read without counting it."""
    from streamlearn.features.interactions import entity_ids

    empty = EntityState.empty(store.features)
    return [
        (kind, store.entities.get(f"{kind}:{entity}", empty))
        for kind, entity in entity_ids(event.user_id, event.item_id, event.author_id)
    ]


def _events(feed: FeedRequest) -> list[Event]:
    return [
        Event(
            event_id=feed.request_id,
            timestamp=feed.timestamp,
            user_id=feed.user_id,
            item_id=c["item_id"],
            author_id=c["author_id"],
            context=feed.context,
            features=c["features"],
        )
        for c in feed.candidates
    ]


def rank_eval(
    settings: Settings,
    world_config: WorldConfig,
    requests: int = 500,
    candidates: int = 100,
    k: int = 10,
) -> RankEvalResult:
    """Train on the world's stream, then rank ``requests`` feeds three ways."""
    processor, world, last_ms = _train(settings, world_config)
    store = processor.store
    assert isinstance(store, MemoryStore)
    model = processor.slots[0].model
    shuffle = random.Random(world_config.seed + 1)
    sums = {name: {"ndcg@10": 0.0, "mrr": 0.0, "hit_rate@10": 0.0} for name in RANKERS}
    result = RankEvalResult(
        {
            "model": settings.model.spec,
            "features": settings.features.mode,
            "events": world_config.events,
            "users": world_config.users,
            "items": world_config.items,
            "seed": world_config.seed,
            "requests": requests,
            "candidates": candidates,
            "k": k,
        }
    )
    for feed in feed_requests(world, last_ms, requests, candidates):
        result.feeds += 1
        if not feed.clicked:
            continue
        result.feeds_with_clicks += 1
        events = _events(feed)
        states = [_states(store, event) for event in events]
        assert all(len(s) == len(kinds(e)) for s, e in zip(states, events, strict=True))
        scores = score_events(model, events, states, settings.features)
        popularity = [float(dict(s)["item"].count) for s in states]
        ids = [event.item_id for event in events]
        order = list(ids)
        shuffle.shuffle(order)
        rankings = {
            "model": [ids[i] for i in rank_order(scores)],
            "popularity": [ids[i] for i in rank_order(popularity)],
            "random": order,
        }
        for name, ranked in rankings.items():
            sums[name]["ndcg@10"] += ndcg_at_k(ranked, feed.clicked, k)
            sums[name]["mrr"] += mrr(ranked, feed.clicked)
            sums[name]["hit_rate@10"] += hit_rate_at_k(ranked, feed.clicked, k)
    n = max(1, result.feeds_with_clicks)
    result.metrics = {
        name: {metric: value / n for metric, value in values.items()}
        for name, values in sums.items()
    }
    return result


def report_markdown(summary: dict[str, Any]) -> str:
    """The ranking report: configuration and one row per ranker."""
    config = summary["config"]
    lines = [
        "# Ranking evaluation",
        "",
        f"Model `{config['model']}` (features `{config['features']}`) trained on"
        f" {config['events']:,} synthetic events ({config['users']} users, {config['items']}"
        f" items, seed {config['seed']}), then {summary['feeds']} feed requests of"
        f" {config['candidates']} candidates; {summary['feeds_with_clicks']} with at least one"
        " click are scored (binary relevance: clicked).",
        "",
        "| ranker | NDCG@10 | MRR | hit rate@10 |",
        "|---|---:|---:|---:|",
    ]
    for name, values in summary["metrics"].items():
        lines.append(
            f"| {name} | {values['ndcg@10']:.4f} | {values['mrr']:.4f}"
            f" | {values['hit_rate@10']:.4f} |"
        )
    verdict = "beats" if summary["model_beats_popularity"] else "does NOT beat"
    lines += ["", f"The model {verdict} popularity on NDCG@10.", ""]
    return "\n".join(lines)


def write_report(result: RankEvalResult, folder: Path) -> dict[str, Any]:
    """``summary.json`` and ``report.md`` in ``folder``, written whole or not at all."""
    from streamlearn.stream.report import staged_folder

    summary = result.summary()
    with staged_folder(folder) as staging:
        (staging / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        (staging / "report.md").write_text(report_markdown(summary), encoding="utf-8")
    return summary
