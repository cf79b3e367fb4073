"""Workers against a real stack, for the integration tests, the benchmarks and the soak.

Settings in a namespace of their own (topics, group and Redis keys carry one
prefix), producing lines as the ``produce`` command does, reading a topic back,
workers in threads or in processes (killed at random moments), and the counters
Redis holds beside the ones recounted from the source records.

Examples
--------
>>> settings = settings_for("127.0.0.1:9092", "redis://127.0.0.1:6379/0", "t1", partitions=2)
>>> settings.kafka.topics.events, settings.kafka.group_id, settings.store.key_prefix
('t1.events', 't1-group', 't1')
>>> recount([{"event_id": "e", "user_id": "u", "item_id": "i"},
...          {"event_id": "e", "timestamp": 1, "label": 1}])["user:u"]
(1, 1.0, 1.0)
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, cast

import orjson
import redis
import yaml

from streamlearn.features.interactions import InteractionConfig, entity_ids
from streamlearn.features.redis_store import decode_state
from streamlearn.features.schema import is_event_record
from streamlearn.learners.checkpoint import CheckpointStore
from streamlearn.learners.registry import ModelRegistry
from streamlearn.stream.config import Settings
from streamlearn.stream.edge import Record
from streamlearn.stream.processor import Processor
from streamlearn.stream.produce import committed_records, produce_lines
from streamlearn.stream.synthetic import World, WorldConfig, generate_world
from streamlearn.stream.worker import Worker, WorkerSummary

__all__ = [
    "learn_world",
    "drain",
    "kill_randomly",
    "labels_learned_by_last_checkpoint",
    "lines_of",
    "produce",
    "recount",
    "run_workers",
    "settings_for",
    "stored_counters",
    "wait_for_partitions",
    "worker_process",
    "write_config",
]


def settings_for(
    bootstrap: str, redis_url: str, prefix: str, partitions: int = 4, **overrides: Any
) -> Settings:
    """Settings whose topics, group and Redis keys all carry ``prefix``."""
    sections: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": f"{prefix}-group",
            "topics": {
                "events": f"{prefix}.events",
                "labels": f"{prefix}.labels",
                "predictions": f"{prefix}.predictions",
                "dead_letter": f"{prefix}.dead-letter",
                "partitions": partitions,
            },
            "max_poll_records": 500,
        },
        "redis": {"url": redis_url},
        "store": {"key_prefix": prefix},
        "metrics": {"port": 0},
    }
    for section, values in overrides.items():
        sections[section] = {**sections.get(section, {}), **values}
    return Settings(**sections)


def learn_world(
    processor: Processor, world_config: WorldConfig, world: World, batch_size: int = 500
) -> int:
    """Process the synthetic world's events and labels in batches of ``batch_size``, as a
    worker reading one partition of each topic would; returns the last record's time."""
    batch: list[Record] = []
    offsets, last = {"events": 0, "labels": 0}, world_config.start_ms
    for record in generate_world(world_config, world):
        kind: Literal["events", "labels"] = "events" if "user_id" in record else "labels"
        last = max(last, record["timestamp"])
        batch.append(Record(kind, orjson.dumps(record), kind, 0, offsets[kind], last))
        offsets[kind] += 1
        if len(batch) == batch_size:
            processor.process(batch)
            batch = []
    processor.process(batch)
    return last


def produce(settings: Settings, lines: Iterable[bytes]) -> Counter[str]:
    """Send lines as the ``produce`` command does; returns counts per topic kind."""
    return +Counter(produce_lines(settings.kafka, lines))


def lines_of(records: Iterable[dict[str, Any]]) -> list[bytes]:
    """Records as JSON lines."""
    return [orjson.dumps(r) for r in records]


def drain(bootstrap: str, topic: str, idle_ms: int = 3000) -> list[Any]:
    """Every committed record of ``topic``, read from the beginning."""
    return list(committed_records(bootstrap, topic, idle_ms))


def write_config(settings: Settings, path: Path) -> Path:
    """The settings as a YAML config file for a worker process; secrets are left out (a
    worker takes them from its environment only)."""
    secrets = {"kafka": {"sasl_password"}, "redis": {"password"}}
    data = settings.model_dump(mode="json", exclude=secrets)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_workers(
    settings: Settings,
    count: int,
    idle_timeout_s: float = 4.0,
    when_assigned: Callable[[], Any] | None = None,
) -> list[Worker]:
    """Run ``count`` workers of one group in threads until the topics are idle.

    ``when_assigned`` runs once every worker owns event partitions of its own
    (e.g. producing the records, so that none of them is read before the group
    has all its members).
    """
    workers = [Worker(settings, name=f"worker-{n}") for n in range(count)]
    summaries: list[WorkerSummary] = []
    threads = [
        threading.Thread(target=lambda w=w: summaries.append(w.run(idle_timeout_s=idle_timeout_s)))
        for w in workers
    ]
    for thread in threads:
        thread.start()
    if when_assigned is not None:
        deadline = time.monotonic() + 120
        while not _split(workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _split(workers), "the workers did not share the partitions within 120 s"
        when_assigned()
    for thread in threads:
        thread.join(timeout=600)
    assert len(summaries) == count, "a worker did not finish"
    return workers


def _split(workers: list[Worker]) -> bool:
    """Every worker owns event partitions, and no two own the same one."""
    owned = [set(worker._assignment) for worker in workers]
    return all(owned) and sum(map(len, owned)) == len(set().union(*owned))


def recount(records: Iterable[dict[str, Any]]) -> dict[str, tuple[int, float, float]]:
    """(events, positives, labels) per entity key, counted from the source records."""
    records = list(records)
    events = {r["event_id"]: r for r in records if is_event_record(r)}
    counts: dict[str, list[float]] = {}
    for event in events.values():
        for kind, entity in entity_ids(event["user_id"], event["item_id"], event.get("author_id")):
            counts.setdefault(f"{kind}:{entity}", [0, 0.0, 0.0])[0] += 1
    for record in records:
        if is_event_record(record) or record["event_id"] not in events:
            continue
        event = events[record["event_id"]]
        for kind, entity in entity_ids(event["user_id"], event["item_id"], event.get("author_id")):
            entry = counts[f"{kind}:{entity}"]
            entry[1] += float(record["label"])
            entry[2] += 1.0
    return {key: (int(v[0]), v[1], v[2]) for key, v in counts.items()}


def stored_counters(client: redis.Redis, prefix: str) -> dict[str, tuple[int, float, float]]:
    """(events, positives, labels) per entity key, as Redis holds them."""
    out = {}
    head = f"{prefix}:e:"
    for key in client.scan_iter(match=head + "*", count=5000):
        # a client without decode_responses: redis-py types the reply as bytes | str | None
        raw = cast(bytes | None, client.hget(key, "v"))
        state = decode_state(raw, len(InteractionConfig().half_lives_s))
        out[key.decode()[len(head) :]] = (state.count, state.positives, state.labelled)
    return out


def worker_process(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``streamlearn run`` in its own process, logging to a file beside the config."""
    log = config.with_suffix(".log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "streamlearn.cli", "run", "--config", str(config), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def wait_for_partitions(
    process: subprocess.Popen[bytes], log: Path, start: int, timeout_s: float = 120.0
) -> None:
    """Wait until the worker logs event partitions after byte ``start`` of its log, or exits."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        with log.open("rb") as lines:
            lines.seek(start)
            if re.search(rb"event partitions: (?!none)", lines.read()):
                return
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"no partitions after {timeout_s:.0f} s; the log ends:\n{tail}")
        time.sleep(0.05)


def kill_randomly(
    config: Path,
    trials: int,
    rng: random.Random,
    env: dict[str, str],
    alive_s: tuple[float, float],
    on_trial: Callable[[int, bool], None] | None = None,
) -> int:
    """Start a worker ``trials`` times and SIGKILL it at a random moment; returns the kills.

    The moment is ``alive_s`` after the worker got its partitions, not after
    its start: the interpreter's imports alone take seconds on a slow machine,
    and a worker killed before it read anything tests nothing.
    """
    kills = 0
    log = config.with_suffix(".log")
    for trial in range(trials):
        start = log.stat().st_size if log.exists() else 0
        process = worker_process(config, "--idle-timeout", "3", env=env)
        wait_for_partitions(process, log, start)
        time.sleep(rng.uniform(*alive_s))
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
        if on_trial is not None:
            on_trial(trial, killed)
    return kills


def labels_learned_by_last_checkpoint(
    client: redis.Redis, prefix: str, group: str, key: bytes, worker: str = "worker-0"
) -> int:
    """The learned-label count of the model a worker's confirmed checkpoint points at."""
    checkpoint = CheckpointStore(client, prefix, group, worker).recover(lambda names: {})
    assert checkpoint is not None, f"{worker} left a confirmed checkpoint"
    return ModelRegistry(client, prefix, key).load(checkpoint.version)[1].labels_learned
