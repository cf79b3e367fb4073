"""Worker memory over a long stream: RSS of a worker-like Processor with the real Redis.

Runs in its own process (``python -m bench.memory``) so that nothing else the
benchmark holds counts. The synthetic world is generated on the fly and fed
to the Processor in batches of the worker's size, without Kafka; the
Processor is built as the worker builds it (RedisStore, monitor, metrics).
RSS is sampled at the start, every 1% of the events, after the warm-up (10%)
and at the end, with the number of memory blocks Python has allocated
(``sys.getallocatedblocks``): RSS growing while the blocks stay flat points at
the allocator (fragmentation), blocks growing at objects kept alive.

Usage: ``python -m bench.memory --redis-url URL --prefix P --events N --out result.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis

from streamlearn.stream.backtest import file_records
from streamlearn.stream.config import Settings
from streamlearn.stream.processor import Record
from streamlearn.stream.runtime import tune_interpreter
from streamlearn.stream.synthetic import WorldConfig, generate_world

from .inprocess import BATCH, redis_store, worker_like_processor

__all__ = ["MODE", "growth_pct", "main", "measure_memory"]

#: What the memory scenario runs, as the table says it.
MODE = "in-process Processor + RedisStore, no Kafka"
WARM_UP = 0.10


def growth_pct(warm_mb: float, end_mb: float) -> float:
    """RSS growth from the end of the warm-up to the end, in percent.

    >>> growth_pct(200.0, 210.0)
    5.0
    """
    return 100.0 * (end_mb - warm_mb) / warm_mb


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    it = iter(records)
    while batch := list(itertools.islice(it, size)):
        yield batch


def measure_memory(events: int, redis_url: str, prefix: str, seed: int = 42) -> dict[str, Any]:
    settings = Settings(redis={"url": redis_url}, store={"key_prefix": prefix})
    processor = worker_like_processor(settings, redis_store(settings, redis_url))
    me = psutil.Process()
    lines = (orjson.dumps(r) for r in generate_world(WorldConfig(events=events, seed=seed)))
    rss = {"start": me.memory_info().rss / 2**20}
    blocks = {"start": sys.getallocatedblocks()}
    samples: list[tuple[int, float, int]] = [(0, rss["start"], blocks["start"])]
    step = max(1, events // 100)
    next_sample = step
    processing = 0.0
    started = time.perf_counter()
    for batch in _chunks(file_records(lines), BATCH):
        t0 = time.perf_counter()
        processor.process(batch)
        processing += time.perf_counter() - t0
        seen = processor.events_seen
        if seen >= next_sample:
            mb = me.memory_info().rss / 2**20
            samples.append((seen, round(mb, 1), sys.getallocatedblocks()))
            if "warm" not in rss and seen >= WARM_UP * events:
                rss["warm"] = mb
                blocks["warm"] = sys.getallocatedblocks()
            next_sample = (seen // step + 1) * step
    processor.flush()
    rss["end"] = me.memory_info().rss / 2**20
    blocks["end"] = sys.getallocatedblocks()
    rss.setdefault("warm", rss["end"])
    blocks.setdefault("warm", blocks["end"])
    client = redis.Redis.from_url(redis_url)
    used = client.info("memory")["used_memory"] / 2**20
    client.close()
    return {
        "events": processor.events_seen,
        "mode": MODE,
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "growth_pct": growth_pct(rss["warm"], rss["end"]),
        "python_blocks": blocks,
        "python_blocks_growth_pct": growth_pct(blocks["warm"], blocks["end"]),
        "samples": samples,
        "processing_s": round(processing, 2),
        "wall_s": round(time.perf_counter() - started, 2),
        "events_per_s": processor.events_seen / processing if processing else None,
        "redis_used_memory_mb": round(used, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    tune_interpreter()
    result = measure_memory(args.events, args.redis_url, args.prefix)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
