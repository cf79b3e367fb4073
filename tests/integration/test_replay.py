"""Replay into the real Kafka: a worker's published scores equal the backtest's; pacing holds."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import orjson
import yaml
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings
from streamlearn.stream.harness import drain, run_workers, settings_for, write_config
from streamlearn.stream.replay import replay
from streamlearn.stream.synthetic import WorldConfig, generate_world


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


# ---------------------------------------------------------------------- messages and namespaces


def flat(output: str) -> str:
    return " ".join(output.split())


def test_produce_stopped_by_an_oversize_line_says_which_line_and_how_many_were_acknowledged(
    tmp_path, kafka_bootstrap, redis_url, unique_prefix
):
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=1)
    records = [
        orjson.dumps({"event_id": f"e{n}", "timestamp": 1_767_225_600_000, "user_id": "u"})
        for n in range(6)
    ]
    huge = orjson.dumps({"event_id": "big", "padding": "x" * 1_200_000})  # over max_request_size
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([*records[:4], b"", huge, *records[4:]]) + b"\n")
    config = write_config(settings, tmp_path / "config.yaml")

    result = CliRunner().invoke(app, ["produce", str(path), "--config", str(config)])

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    text = flat(result.output)
    assert f"line 6 of {path}" in text  # its line in the file, the blank line counted
    assert "4 records before it were sent and acknowledged" in text
    assert "tail -n +6" in text
    assert len(drain(kafka_bootstrap, settings.kafka.topics.events)) == 4


def test_replay_sends_refused_csv_rows_to_the_dead_letter_topic_with_their_content(
    tmp_path, kafka_bootstrap, redis_url, unique_prefix
):
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=1)
    start = 1_767_225_600_000
    path = tmp_path / "rows.csv"
    path.write_bytes(
        b"\xef\xbb\xbfevent_id,timestamp,user_id,item_id,x\n"
        + f"a,{start},u,i,1\nb,{start + 1},u,i,nan\nc,{start + 2},u,i,1,2\n".encode()
        + f"d,{start + 3},u,i,{2**70}\ne,{start + 4},u,i,2\n".encode()
    )
    config = write_config(settings, tmp_path / "config.yaml")

    result = CliRunner().invoke(app, ["replay", str(path), "--config", str(config)])

    assert result.exit_code == 0, result.output
    text = flat(result.output)
    for reason in ("not_finite", "invalid_value", "too_large"):
        assert f"rows refused: {reason} (sent to dead-letter) │ 1" in text
    events = drain(kafka_bootstrap, settings.kafka.topics.events)
    assert [orjson.loads(r.value)["event_id"] for r in events] == ["a", "e"]
    letters = drain(kafka_bootstrap, settings.kafka.topics.dead_letter)
    found = {dict(r.headers)["reason"].decode(): (r.key, orjson.loads(r.value)) for r in letters}
    assert set(found) == {"not_finite", "invalid_value", "too_large"}
    key, letter = found["not_finite"]
    assert key == b"rows.csv:0:3" and letter["offset"] == 3
    assert orjson.loads(letter["value"]) == {
        "event_id": "b",
        "timestamp": str(start + 1),
        "user_id": "u",
        "item_id": "i",
        "x": "nan",
    }


def test_replay_at_speed_60_after_a_timestamp_0_line_warns_and_shortens_the_gap(
    tmp_path, kafka_bootstrap, redis_url, unique_prefix
):
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=1)
    start = 1_767_225_600_000
    lines = [{"event_id": "zero", "timestamp": 0, "user_id": "u", "item_id": "i"}]
    lines += [
        {"event_id": f"e{n}", "timestamp": start + n * 6000, "user_id": "u", "item_id": "i"}
        for n in range(3)
    ]
    path = tmp_path / "gap.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    config = write_config(settings, tmp_path / "config.yaml")

    began = time.monotonic()
    result = CliRunner().invoke(
        app, ["replay", str(path), "--speed", "60", "--max-gap", "1", "--config", str(config)]
    )
    elapsed = time.monotonic() - began

    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "a gap of 56.0 years in event time" in text and "would wait 340.9 days at 60x" in text
    assert "shortened to 1 s (--max-gap)" in text
    assert text.count("a gap of") == 1  # said once
    assert elapsed < 30, elapsed  # 1 s for the gap and 0.2 s for the rest, plus Kafka
    assert len(drain(kafka_bootstrap, settings.kafka.topics.events)) == 4


def test_backtest_with_redis_keeps_its_own_prefix_and_leaves_the_live_state_alone(
    tmp_path, kafka_bootstrap, redis_url, unique_prefix, redis_client
):
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix)
    config = write_config(settings, tmp_path / "config.yaml")
    path = write_world(tmp_path / "world.jsonl", WorldConfig(events=300, inline_labels=True))
    runner = CliRunner()
    base = ["backtest", str(path), "--config", str(config), "--redis", redis_url]

    # The live workers' state: the same events, processed under store.key_prefix from
    # other records (one line more at the top: every source offset differs).
    shifted = tmp_path / "live.jsonl"
    shifted.write_bytes(b"{not an event\n" + path.read_bytes())
    live = backtest(shifted, settings, ["logistic"], redis_url=redis_url)
    assert live.events == 300 and live.dead_letters == {"invalid_json": 1}
    live_keys = sorted(redis_client.scan_iter(match=f"{unique_prefix}:*"))
    live_state = {key: redis_client.dump(key) for key in live_keys}
    assert live_keys

    for run in range(2):
        report = tmp_path / f"r{run}"
        result = runner.invoke(app, [*base, "--report", str(report)])
        assert result.exit_code == 0, result.output
        said = re.search(
            r"under key prefix '(backtest-[0-9TZ]+-[0-9a-f]{8})' \(deleted", flat(result.output)
        )
        assert said, result.output
        summary = orjson.loads((report / "summary.json").read_bytes())
        assert summary["events"] == 300 and summary["dead_letters"] == {}  # no duplicate_event
        assert list(redis_client.scan_iter(match=f"{said[1]}:*")) == []  # cleaned up
        assert "deleted the backtest's" in flat(result.output)

    assert sorted(redis_client.scan_iter(match=f"{unique_prefix}:*")) == live_keys
    assert {key: redis_client.dump(key) for key in live_keys} == live_state

    shared = runner.invoke(
        app, [*base, "--key-prefix", unique_prefix, "--report", str(tmp_path / "s")]
    )
    assert shared.exit_code == 0, shared.output
    assert "the live workers' store.key_prefix" in flat(shared.output)  # when asked for: warned

    kept = runner.invoke(app, [*base, "--keep-state", "--report", str(tmp_path / "k")])
    assert kept.exit_code == 0, kept.output
    prefix = re.search(r"key prefix '(backtest-[^']+)' \(kept\)", flat(kept.output))
    assert prefix and list(redis_client.scan_iter(match=f"{prefix[1]}:*"))
    for key in redis_client.scan_iter(match=f"{prefix[1]}:*"):
        redis_client.delete(key)
