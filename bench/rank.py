"""The cost of scoring a ranking request in-process: one ``predict_proba_one`` per
candidate against the batch scorer (``learners/batch.py``), no servers.

A ``logistic`` model learns a synthetic world through the worker's Processor (an
in-process store); feed requests of ``--candidates`` candidates are then scored with
the worker's features of entity states like those Redis holds, by
``score_events``'s old path (features, then ``learners.models.score`` per candidate)
and its new one (features, then ``learners.batch.score_many``), and by the model
part alone (features built beforehand). Each row is the CPU time of one request,
median over the requests of a round, best of ``--rounds`` rounds (the variants take
turns); the scores of both paths are checked equal.

Usage: ``.venv/bin/python -m bench.rank [--candidates 1000] [--requests 20]``;
writes ``reports/rank/rank.md`` and ``rank.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from bench.env import machine_info
from streamlearn.features.interactions import EntityState, InteractionConfig
from streamlearn.features.limits import Limits
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import StoreConfig
from streamlearn.features.vector import FeatureConfig, features_of
from streamlearn.learners.batch import batch_scorer, score_many
from streamlearn.learners.models import build_model, score
from streamlearn.stream.harness import learn_world
from streamlearn.stream.processor import ModelSlot, Processor
from streamlearn.stream.serve import kinds, parse_rank, score_events
from streamlearn.stream.synthetic import World, WorldConfig, feed_requests

__all__ = ["main"]

console = Console()


def _trained(world_config: WorldConfig) -> tuple[Any, World, int]:
    """A ``logistic`` model that learned the world through the Processor."""
    features = FeatureConfig()
    world = World.create(world_config)
    model = build_model("logistic")
    store = MemoryStore(StoreConfig(), features.interactions)
    processor = Processor([ModelSlot("champion", model)], store, features, Limits(), 0.5)
    last = learn_world(processor, world_config, world)
    return model, world, last


def _state(rng: random.Random, interactions: InteractionConfig, now_ms: int) -> EntityState:
    """An entity state like Redis holds: a third never seen, the rest with a history."""
    if rng.random() < 0.3:
        return EntityState.empty(interactions)
    count = rng.randrange(1, 200)
    return EntityState(
        count=count,
        positives=float(rng.randrange(count + 1)),
        labelled=float(count),
        last_ms=now_ms - rng.randrange(10**9),
        decay_ref_ms=now_ms - rng.randrange(10**9),
        decayed=[rng.random() * count for _ in interactions.half_lives_s],
    )


def _old_path(model: Any, events: Any, states: Any, config: FeatureConfig) -> list[float]:
    """``score_events`` as it was: features, then one ``predict_proba_one`` per event."""
    return [
        score(model, features_of(event, list(state), config))
        for event, state in zip(events, states, strict=True)
    ]


def _cpu_ms(calls: dict[str, Callable[[], object]], requests: int, rounds: int) -> dict:
    """Per call, the median CPU ms of its thread over ``requests`` calls, best of
    ``rounds`` rounds; the calls take turns, so a change of load touches them alike.

    CPU time, not wall time: the cores are shared with other work, whose
    scheduling would otherwise show in the figures.
    """
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(requests):
            for name, call in calls.items():
                start = time.thread_time()
                call()
                times[name].append((time.thread_time() - start) * 1000)
        for name, values in times.items():
            best[name] = min(best[name], statistics.median(values))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=1000, help="Candidates per request.")
    parser.add_argument("--requests", type=int, default=20, help="Requests per round.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds (the best is kept).")
    parser.add_argument("--events", type=int, default=20_000, help="Events the model learns.")
    parser.add_argument("--out", type=Path, default=Path("reports/rank"))
    args = parser.parse_args()
    load_start = [round(v, 2) for v in os.getloadavg()]
    config = FeatureConfig()
    world_config = WorldConfig(events=args.events, users=1000, items=3000, seed=42)
    console.print(f"training a logistic model on a synthetic world of {args.events} events ...")
    model, world, last_ms = _trained(world_config)
    rng = random.Random(7)
    feed = next(feed_requests(world, last_ms, 1, args.candidates))
    events = parse_rank(orjson.dumps(feed.body()), Limits(), args.candidates)
    states = [
        [(kind, _state(rng, config.interactions, feed.timestamp)) for kind in kinds(e)]
        for e in events
    ]
    xs = [features_of(e, list(s), config) for e, s in zip(events, states, strict=True)]
    old = _old_path(model, events, states, config)
    if score_events(model, events, states, config) != old or score_many(model, xs) != old:
        raise SystemExit("the batch scorer's scores differ from predict_proba_one's")
    n = len(events)
    timed = {
        "model: predict_proba_one per candidate": lambda: [score(model, x) for x in xs],
        "model: batch scorer (state read + scoring)": lambda: score_many(model, xs),
        "model: batch scorer, state read only": lambda: batch_scorer(model),
        "score_events before (features + predict_proba_one)": lambda: _old_path(
            model, events, states, config
        ),
        "score_events now (features + batch scorer)": lambda: score_events(
            model, events, states, config
        ),
        "features only (features_of)": lambda: [
            features_of(e, list(s), config) for e, s in zip(events, states, strict=True)
        ],
    }
    rows = {
        name: {"ms_per_request": ms, "us_per_candidate": ms * 1000 / n}
        for name, ms in _cpu_ms(timed, args.requests, args.rounds).items()
    }
    before = rows["model: predict_proba_one per candidate"]["ms_per_request"]
    for row in rows.values():
        row["ratio"] = before / row["ms_per_request"]
    results = {
        "machine": machine_info(None),
        "candidates": n,
        "features_per_candidate": statistics.mean(len(x) for x in xs),
        "requests": args.requests,
        "rounds": args.rounds,
        "load_start": load_start,
        "load_end": [round(v, 2) for v in os.getloadavg()],
        "rows": rows,
    }
    table = Table("in-process, one request", "CPU ms / request", "µs / candidate", "speed-up")
    for name, row in rows.items():
        table.add_row(
            name,
            f"{row['ms_per_request']:.2f}",
            f"{row['us_per_candidate']:.1f}",
            f"{row['ratio']:.1f}x",
        )
    console.print(table)
    console.print(
        f"{n} candidates, {results['features_per_candidate']:.0f} features each; load average"
        f" {results['load_start']} at the start, {results['load_end']} at the end"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rank.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    (args.out / "rank.md").write_text(_markdown(results), encoding="utf-8")
    console.print(f"written: {args.out / 'rank.md'}")


def _markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# Scoring a ranking request in-process (`python -m bench.rank`)",
        "",
        f"{machine['date']}, {machine['cpu']['model']}, {machine['cpu']['cores']} cores;"
        f" load average {results['load_start']} at the start, {results['load_end']} at the"
        f" end. One request of {results['candidates']} candidates"
        f" ({results['features_per_candidate']:.0f} features each): the CPU time of the"
        f" scoring thread, median of {results['requests']} calls, best of"
        f" {results['rounds']} rounds, the variants taking turns; speed-up against one"
        " `predict_proba_one` per candidate. Both paths give the same scores.",
        "",
        "| in-process, one request | CPU ms / request | µs / candidate | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for name, row in results["rows"].items():
        lines.append(
            f"| {name} | {row['ms_per_request']:.2f} | {row['us_per_candidate']:.1f}"
            f" | {row['ratio']:.1f}x |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
