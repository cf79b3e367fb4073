"""A worker with ``redis.cluster: true`` keeps its interaction state in
:class:`features.cluster_store.ClusterStore` and publishes exactly the in-memory
backtest's scores (here on a single Redis, where the same store runs unchanged)."""

from __future__ import annotations

import io
from pathlib import Path

import orjson

from streamlearn.features.cluster_store import ClusterStore
from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings
from streamlearn.stream.harness import drain, run_workers, settings_for
from streamlearn.stream.replay import replay
from streamlearn.stream.stores import open_store
from streamlearn.stream.synthetic import WorldConfig, generate_world


def test_a_worker_on_the_cluster_store_publishes_the_backtest_scores(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, unique_prefix: str
) -> None:
    world = WorldConfig(events=1200, users=50, items=80, seed=5)
    path = tmp_path / "world.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in generate_world(world)))
    settings = settings_for(
        kafka_bootstrap, redis_url, unique_prefix, partitions=1, redis={"cluster": True}
    )
    assert isinstance(open_store(settings), ClusterStore)

    replay(path, settings, speed=None)
    (worker,) = run_workers(settings, 1)
    assert worker.summary.events == 1200
    published = {
        prediction["event_id"]: prediction["score"]
        for prediction in (
            orjson.loads(record.value)
            for record in drain(kafka_bootstrap, settings.kafka.topics.predictions)
        )
    }

    buffer = io.BytesIO()
    backtest(path, Settings(), ["logistic"], predictions=buffer)
    expected = {
        p["event_id"]: p["score"] for p in map(orjson.loads, buffer.getvalue().splitlines())
    }
    assert len(expected) == 1200
    assert published == expected
    assert worker.summary.labels_learned > 100
