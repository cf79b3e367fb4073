"""``streamlearn backtest FILE --redis URL --redis-cluster``: the state shards over a real
3-master Redis Cluster (or sits in one Redis) and the scores are exactly the in-memory
store's, event for event; the backtest's keys are deleted from every node at the end."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml
from redis.cluster import RedisCluster
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.stream.synthetic import WorldConfig, generate_world

pytestmark = pytest.mark.integration


def scores(report: Path) -> list[tuple[str, float]]:
    rows = [orjson.loads(line) for line in (report / "predictions.jsonl").read_bytes().splitlines()]
    return [(row["event_id"], row["score"]) for row in rows]


@pytest.mark.parametrize("where", ["cluster", "redis"])
def test_backtest_on_the_cluster_store_gives_the_in_memory_scores(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_cluster_url" if where == "cluster" else "redis_url")
    world = WorldConfig(events=1500, users=40, items=60, authors=8, seed=3)
    path = tmp_path / "world.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in generate_world(world)))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"store": {"implicit_negative_after_s": 900}}))
    runner = CliRunner()
    base = ["backtest", str(path), "--config", str(config)]

    memory = runner.invoke(app, [*base, "--report", str(tmp_path / "memory")])
    assert memory.exit_code == 0, memory.output
    sharded = runner.invoke(
        app, [*base, "--redis", url, "--redis-cluster", "--report", str(tmp_path / "sharded")]
    )
    assert sharded.exit_code == 0, sharded.output

    expected, actual = scores(tmp_path / "memory"), scores(tmp_path / "sharded")
    assert len(expected) == 1500
    assert actual == expected
    timing = {"seconds", "events_per_second"}
    summaries = [
        {k: v for k, v in orjson.loads((tmp_path / run / "summary.json").read_bytes()).items()}
        for run in ("memory", "sharded")
    ]
    assert [{k: v for k, v in s.items() if k not in timing} for s in summaries] == [
        {k: v for k, v in summaries[0].items() if k not in timing}
    ] * 2
    assert "deleted the backtest's" in sharded.output
    if where == "cluster":
        client = RedisCluster.from_url(url)
        try:
            assert list(client.scan_iter(match="backtest-*")) == []
        finally:
            client.close()
