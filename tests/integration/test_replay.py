"""Replay into the real Kafka: a worker's published scores equal the backtest's; pacing holds."""

from __future__ import annotations

import io
import time
from pathlib import Path

import orjson
import yaml
from typer.testing import CliRunner

from stream.backtest import backtest
from stream.cli import app
from stream.config import Settings
from stream.replay import replay
from stream.synthetic import WorldConfig, generate_world

from .pipeline import drain, run_workers, settings_for


def write_world(path: Path, config: WorldConfig) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in generate_world(config)))
    return path


def test_worker_scores_of_a_max_speed_replay_equal_the_backtest_exactly(
    tmp_path, kafka_bootstrap, redis_url, unique_prefix
):
    path = write_world(
        tmp_path / "world.jsonl", WorldConfig(events=1500, inline_labels=True, seed=11)
    )
    path.write_bytes(path.read_bytes() + b"{not json\n")  # sent anyway, dead-lettered
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=1)

    summary = replay(path, settings, speed=None)
    assert summary.sent[settings.kafka.topics.events] == 1501
    assert summary.sent[settings.kafka.topics.labels] == 0
    assert summary.unparseable == 1 and summary.skipped == 0

    (worker,) = run_workers(settings, 1)
    assert worker.summary.events == 1500
    assert worker.summary.labels_learned == 1500
    assert worker.summary.dead_letters == {"invalid_json": 1}

    published: dict[str, float] = {}
    for record in drain(kafka_bootstrap, settings.kafka.topics.predictions):
        prediction = orjson.loads(record.value)
        assert record.key.decode() == prediction["event_id"]
        assert (
            published.setdefault(prediction["event_id"], prediction["score"]) == prediction["score"]
        )

    buffer = io.BytesIO()
    result = backtest(path, Settings(), ["logistic"], predictions=buffer)
    expected = {
        p["event_id"]: p["score"] for p in map(orjson.loads, buffer.getvalue().splitlines())
    }
    assert result.events == 1500 and len(expected) == 1500
    assert published == expected  # bit for bit: same processor, same order, Redis == memory
    assert len(set(expected.values())) > 100  # the model did learn: scores are not all 0.5


def test_speed_60_replays_two_minutes_of_event_time_in_about_two_seconds(
    tmp_path, kafka_bootstrap, redis_url, unique_prefix
):
    start = 1_767_225_600_000
    lines = [
        orjson.dumps(
            {
                "event_id": f"e{n}",
                "timestamp": start + n * 5_000,
                "user_id": f"u{n % 3}",
                "item_id": "i",
            }
        )
        for n in range(25)  # 0 .. 120 s of event time
    ]
    path = tmp_path / "two-minutes.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=1)
    replay(path, settings, speed=None, until_ms=start)  # topics and connection warmed up: 0 sent

    sends: list[float] = []
    began = time.monotonic()
    summary = replay(path, settings, speed=60.0, on_send=lambda n: sends.append(time.monotonic()))
    elapsed = time.monotonic() - began

    assert summary.sent[settings.kafka.topics.events] == 25
    assert 1.5 <= elapsed <= 4.0, elapsed
    assert 1.9 <= summary.wall_seconds <= 3.0, summary.wall_seconds
    assert summary.achieved_speed is not None and 40 <= summary.achieved_speed <= 63
    gaps = [b - a for a, b in zip(sends, sends[1:], strict=False)]
    assert max(gaps) <= 0.25, gaps  # ~1/12 s each, not bunched up
    assert abs(sends[-1] - sends[1] - 23 / 12) <= 0.2  # after the first send's metadata fetch
    assert len(drain(kafka_bootstrap, settings.kafka.topics.events)) == 25


def test_cli_replay_merges_a_labels_file_filters_by_time_and_keys_by_event_id(
    tmp_path, kafka_bootstrap, redis_url, unique_prefix
):
    start = 1_767_225_600_000
    events = [
        {"event_id": f"e{n}", "timestamp": start + n * 1000, "user_id": "u", "item_id": "i"}
        for n in (3, 1, 2, 0, 4)
    ]
    path = tmp_path / "events.jsonl"
    lines = [orjson.dumps(e) for e in events]
    lines.insert(2, b"{broken")  # after e1: sent right after it, in the range
    path.write_bytes(b"\n".join(lines) + b"\n")
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(
        b"".join(
            orjson.dumps({"event_id": f"e{n}", "timestamp": start + n * 1000 + 500, "label": 1})
            + b"\n"
            for n in range(5)
        )
    )
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=2)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))

    result = CliRunner().invoke(
        app,
        [
            "replay",
            str(path),
            "--labels",
            str(labels),
            "--since",
            "2026-01-01T00:00:01Z",
            "--until",
            str(start + 4000),
            "--config",
            str(config),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "replay summary" in result.output and "achieved speed" in result.output
    rows = {line.strip("│ ").split("│")[0].strip(): line for line in result.output.splitlines()}
    assert rows["skipped (outside the time range)"].split("│")[-2].strip() == "4"
    assert rows["unparseable (sent, to be dead-lettered)"].split("│")[-2].strip() == "1"

    sent = drain(kafka_bootstrap, settings.kafka.topics.events)
    by_partition: dict[int, list[bytes]] = {}
    for record in sent:
        by_partition.setdefault(record.partition, []).append(record.value)
    values = [record.value for record in sent]
    assert sorted(values) == sorted(
        [orjson.dumps(e) for e in events if e["event_id"] in ("e1", "e2", "e3")] + [b"{broken"]
    )
    for record in sent:
        if record.value != b"{broken":
            assert record.key == orjson.loads(record.value)["event_id"].encode()
    keyed = drain(kafka_bootstrap, settings.kafka.topics.labels)
    assert sorted(r.key for r in keyed) == [b"e1", b"e2", b"e3"]
    event_partition = {r.key: r.partition for r in sent if r.key}
    assert all(event_partition[r.key] == r.partition for r in keyed)  # label beside its event
    for records in by_partition.values():  # event-time order within each partition
        times = [orjson.loads(v)["timestamp"] for v in records if v != b"{broken"]
        assert times == sorted(times)
