"""A cProfile of the worker's hot path: ``Processor.process`` with a ``RedisStore``.

The Processor is built as the worker builds it (worker metrics, monitor), over
the benchmark's events in batches of the worker's size, against the real
Redis; Kafka is left out (its cost shows in the worker scenarios).
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamlearn.stream.config import Settings

from .inprocess import (
    batches,
    processor_rate,
    redis_main_thread_cpu_s,
    redis_store,
    worker_like_processor,
)

__all__ = ["profile_hot_path", "top_functions"]

_ROOTS = sorted(
    {str(Path(__file__).resolve().parents[1]), sysconfig.get_paths()["purelib"], sys.prefix},
    key=len,
    reverse=True,
)


def _where(file: str, line: int, name: str) -> str:
    for root in _ROOTS:
        if file.startswith(root):
            file = file[len(root) :].lstrip("/")
            break
    return f"{name} ({file}:{line})" if line else name


def top_functions(stats: pstats.Stats, key: str, n: int = 25) -> list[dict[str, Any]]:
    """The ``n`` functions with the most ``key`` time (``"tottime"`` or ``"cumtime"``)."""
    rows = []
    for (file, line, name), (_cc, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": _where(file, line, name),
                "calls": calls,
                "tottime": tottime,
                "cumtime": cumtime,
            }
        )
    rows.sort(key=lambda r: r[key], reverse=True)
    return rows[:n]


def _render(title: str, rows: list[dict[str, Any]], total: float) -> list[str]:
    out = [title, "", f"{'calls':>10} {'tottime s':>10} {'cumtime s':>10} {'tot %':>6}  function"]
    for r in rows:
        share = 100.0 * r["tottime"] / total if total else 0.0
        out.append(
            f"{r['calls']:>10} {r['tottime']:>10.3f} {r['cumtime']:>10.3f} {share:>6.1f}  "
            f"{r['function']}"
        )
    return [*out, ""]


def profile_hot_path(
    lines: Sequence[bytes], settings: Settings, redis_url: str, out: Path, top: int = 25
) -> dict[str, Any]:
    """Profile the lines through a worker-like Processor; write ``out`` and return a summary.

    ``settings.store.key_prefix`` should be fresh: the Redis state starts empty.
    A first, unprofiled pass on another prefix gives the stage times without
    the profiler's overhead.
    """
    plain_settings = settings.model_copy(
        update={
            "store": settings.store.model_copy(
                update={"key_prefix": settings.store.key_prefix + "-plain"}
            )
        }
    )
    store = redis_store(plain_settings, redis_url)
    redis_before = redis_main_thread_cpu_s(store.client)
    plain = processor_rate(worker_like_processor(plain_settings, store), lines)
    redis_s = redis_main_thread_cpu_s(store.client) - redis_before
    plain["redis_cpu_us_per_event"] = round(1e6 * redis_s / max(1, plain["events"]), 1)
    processor = worker_like_processor(settings, redis_store(settings, redis_url))
    work = list(batches(lines))
    profiler = cProfile.Profile()
    profiler.enable()
    for batch in work:
        processor.process(batch)
    processor.flush()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    by_cum = top_functions(stats, "cumtime", top)
    by_tot = top_functions(stats, "tottime", top)
    header = [
        f"cProfile of Processor.process + RedisStore, {processor.events_seen:,} events "
        f"({sum(len(b) for b in work):,} records) in batches of {len(work[0]) if work else 0}",
        f"profiled total: {total:.2f} s (the profiler itself slows Python calls down)",
        f"without the profiler: {plain['seconds']:.2f} s, {plain['events_per_s']:,.0f} events/s",
        f"Redis's main thread meanwhile: {plain['redis_cpu_us_per_event']:.0f} µs CPU per event",
        "stage seconds without the profiler (Processor's own timers; 'unattributed' = the rest):",
        *(f"  {stage:<13} {sec:8.3f} s" for stage, sec in plain["stage_s"].items()),
        "",
    ]
    text = header
    text += _render(f"top {top} by cumulative time", by_cum, total)
    text += _render(f"top {top} by total (own) time", by_tot, total)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text), encoding="utf-8")
    return {
        "events": processor.events_seen,
        "profiled_s": round(total, 3),
        "unprofiled": plain,
        "top_tottime": [
            {**r, "tottime": round(r["tottime"], 4), "cumtime": round(r["cumtime"], 4)}
            for r in by_tot
        ],
        "top_cumtime": [
            {**r, "tottime": round(r["tottime"], 4), "cumtime": round(r["cumtime"], 4)}
            for r in by_cum
        ],
    }
