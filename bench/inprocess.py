"""In-process scenarios: the ceiling, the backtest, the monitor's cost, Processor + Redis.

All of them read the same generated lines and use the ``logistic`` preset.

Examples
--------
>>> from streamlearn.stream.synthetic import WorldConfig, generate_world
>>> lines = [orjson.dumps(r) for r in generate_world(WorldConfig(events=300))]
>>> examples = collect_examples(lines, Settings())
>>> len(examples), sorted(examples[0][0])[:3], type(examples[0][1])
(300, ['author_d1d', 'author_d1h', 'author_d1w'], <class 'bool'>)
>>> ceiling(examples, repeats=1)["events"]
300
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import redis
from prometheus_client import CollectorRegistry

from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.redis_store import RedisStore
from streamlearn.features.store import InteractionStore
from streamlearn.learners.models import build_model, is_positive
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.metrics.monitor import Monitor, MonitoringMetrics
from streamlearn.stream.backtest import backtest, file_records
from streamlearn.stream.config import Settings
from streamlearn.stream.processor import ModelSlot, Processor, Record

__all__ = [
    "BATCH",
    "MODEL",
    "RecordingModel",
    "batches",
    "ceiling",
    "collect_examples",
    "monitoring_overhead",
    "processor_rate",
    "redis_main_thread_cpu_s",
    "run_backtest",
    "worker_like_processor",
]

#: The model every scenario uses.
MODEL = "logistic"
#: Records per batch of the in-process runs: the worker's ``max_poll_records``.
BATCH = 500


class RecordingModel:
    """Stands in for the model to collect the exact feature dicts it is asked to score."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        self.seen.append(x)
        return {}

    def learn_one(self, x: dict[str, Any], y: bool, w: float = 1.0) -> None:
        return None


def batches(lines: Sequence[bytes], size: int = BATCH) -> Iterator[list[Record]]:
    """The lines as the backtest reads them (events and label records), in batches."""
    records = list(file_records(lines))
    for start in range(0, len(records), size):
        yield records[start : start + size]


def collect_examples(lines: Sequence[bytes], settings: Settings) -> list[tuple[dict, bool]]:
    """(x, y) per event: x as the worker's feature code builds it, y its joined label."""
    labels: dict[str, bool] = {}
    for line in lines:
        obj = orjson.loads(line)
        if "label" in obj:
            labels[obj["event_id"]] = is_positive(float(obj["label"]))
    recorder = RecordingModel()
    processor = Processor(
        [ModelSlot(MODEL, recorder)],  # type: ignore[arg-type]
        MemoryStore(settings.store, settings.features.interactions),
        settings.features,
        settings.limits,
        settings.model.threshold,
    )
    examples: list[tuple[dict, bool]] = []
    for batch in batches(lines):
        recorder.seen.clear()
        out = processor.process(batch)
        for x, prediction in zip(recorder.seen, out.predictions, strict=True):
            examples.append((x, labels[prediction.event_id]))
    return examples


def ceiling(examples: Sequence[tuple[dict, bool]], repeats: int = 3) -> dict[str, Any]:
    """The bare River loop: ``predict_proba_one`` then ``learn_one`` per event; best of runs."""
    runs = []
    for _ in range(repeats):
        model = build_model(MODEL)
        predict, learn = model.predict_proba_one, model.learn_one
        t0 = time.perf_counter()
        for x, y in examples:
            predict(x)
            learn(x, y)
        runs.append(time.perf_counter() - t0)
    best = min(runs)
    return {
        "events": len(examples),
        "seconds": round(best, 4),
        "runs_s": [round(r, 4) for r in runs],
        "events_per_s": len(examples) / best,
    }


def run_backtest(path: Path) -> dict[str, Any]:
    """``stream.backtest.backtest(path, Settings(), ["logistic"])``, as the CLI runs it."""
    t0 = time.perf_counter()
    result = backtest(path, Settings(), [MODEL])
    wall = time.perf_counter() - t0
    return {
        "events": result.events,
        "labels_learned": result.labels_learned,
        "seconds": round(result.seconds, 3),
        "wall_s": round(wall, 3),
        "events_per_s": result.events / result.seconds,
    }


def worker_like_processor(
    settings: Settings, store: InteractionStore, monitor: bool = True
) -> Processor:
    """A Processor built as :class:`stream.worker.Worker` builds it (metrics, monitor)."""
    registry = CollectorRegistry()
    slot = ModelSlot(
        MODEL,
        build_model(MODEL),
        monitor=Monitor(settings.monitoring, MonitoringMetrics(registry), settings.model.threshold)
        if monitor
        else None,
    )
    return Processor(
        [slot],
        store,
        settings.features,
        settings.limits,
        settings.model.threshold,
        WorkerMetrics(registry),
    )


def processor_rate(processor: Processor, lines: Sequence[bytes]) -> dict[str, Any]:
    """Events/s of ``processor.process`` over the lines, with its stage seconds.

    ``unattributed`` is the process time no stage timer covers (labels learned
    from their snapshots, implicit labels, publishing the monitor).
    """
    stages: dict[str, float] = {}
    total = 0.0
    for batch in batches(lines):
        t0 = time.perf_counter()
        out = processor.process(batch)
        total += time.perf_counter() - t0
        for stage, seconds in out.stage_seconds.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    processor.flush()
    stages["unattributed"] = total - sum(stages.values())
    return {
        "events": processor.events_seen,
        "seconds": round(total, 3),
        "events_per_s": processor.events_seen / total,
        "stage_s": {k: round(v, 3) for k, v in stages.items()},
    }


def monitoring_overhead(
    lines: Sequence[bytes], settings: Settings, repeats: int = 2
) -> dict[str, Any]:
    """The same Processor + MemoryStore with and without the monitor, alternated; best of each."""
    best = {True: float("inf"), False: float("inf")}
    for _ in range(repeats):
        for on in (False, True):
            store = MemoryStore(settings.store, settings.features.interactions)
            run = processor_rate(worker_like_processor(settings, store, monitor=on), lines)
            best[on] = min(best[on], run["seconds"])
    events = sum(1 for line in lines if b'"user_id"' in line)
    return {
        "events": events,
        "off_s": round(best[False], 3),
        "on_s": round(best[True], 3),
        "off_events_per_s": events / best[False],
        "on_events_per_s": events / best[True],
        "overhead_pct": 100.0 * (best[True] / best[False] - 1.0),
        "per_event_us": 1e6 * (best[True] - best[False]) / events,
    }


def redis_main_thread_cpu_s(client: redis.Redis) -> float:
    """CPU seconds Redis's main thread has used: the thread every command and script runs on
    (the whole server's before Redis 6.2, which does not report its threads apart)."""
    info = client.info("cpu")
    user = info.get("used_cpu_user_main_thread", info["used_cpu_user"])
    system = info.get("used_cpu_sys_main_thread", info["used_cpu_sys"])
    return float(user) + float(system)


def redis_store(settings: Settings, url: str) -> RedisStore:
    client = redis.Redis.from_url(url, **settings.redis.client_options())
    return RedisStore(client, settings.store, settings.features.interactions)
