"""Replay a large file into Kafka at full speed, score it, and compare with a backtest.

    .venv/bin/python -m bench.replay_check --events 100000

The worker (one partition, so its order is the file's) must publish, for every event,
exactly the score the in-process backtest of the same file gives. Prints a table with
the count of equal scores and both runs' events/s; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import orjson
from rich.table import Table

from streamlearn.stack import Stack, fast_stack_config
from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings
from streamlearn.stream.harness import drain, run_workers, settings_for
from streamlearn.stream.replay import replay
from streamlearn.stream.synthetic import WorldConfig, generate_world
from streamlearn.stream.ui import console


def check(events: int, folder: Path) -> tuple[Table, bool]:
    path = folder / "world.jsonl"
    with path.open("wb") as handle:
        for record in generate_world(WorldConfig(events=events, seed=5, inline_labels=True)):
            handle.write(orjson.dumps(record) + b"\n")
    buffer = io.BytesIO()
    started = time.perf_counter()
    result = backtest(path, Settings(), ["logistic"], predictions=buffer)
    backtest_s = time.perf_counter() - started
    expected = {}
    for line in buffer.getvalue().splitlines():
        row = orjson.loads(line)
        expected[row["event_id"]] = row["score"]

    stack = Stack(fast_stack_config(folder / "stack"))
    stack.up(services=["kafka", "redis"])
    try:
        cfg = stack.config
        settings = settings_for(cfg.kafka_bootstrap, cfg.redis_url, "replay", partitions=1)
        started = time.perf_counter()
        sent = replay(path, settings)
        replay_s = time.perf_counter() - started
        (worker,) = run_workers(settings, 1, idle_timeout_s=5)
        published = {
            r.key.decode(): orjson.loads(r.value)["score"]
            for r in drain(cfg.kafka_bootstrap, settings.kafka.topics.predictions)
        }
    finally:
        stack.down()
    equal = sum(1 for key, score in expected.items() if published.get(key) == score)
    table = Table(title=f"replay --speed max of {events:,} events, worker vs backtest")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [
        ("events in the file", f"{events:,}"),
        ("records replayed", f"{sum(sent.sent.values()):,}"),
        ("replay seconds", f"{replay_s:.1f}"),
        ("backtest events/s", f"{result.events / backtest_s:,.0f}"),
        ("worker events/s (busy)", f"{worker.summary.events / worker.summary.busy_seconds:,.0f}"),
        ("predictions published", f"{len(published):,}"),
        ("scores equal to the backtest's", f"{equal:,}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table, equal == len(expected) == len(published)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="streamlearn-replay-") as folder:
        table, ok = check(args.events, Path(folder))
    console.print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
