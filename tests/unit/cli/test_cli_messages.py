"""CLI messages without servers: a bad file, a taken metrics port, an interrupted backtest."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

import streamlearn.stream.backtest
from streamlearn.cli.app import app
from streamlearn.stream.synthetic import WorldConfig, generate_world

ROOT = Path(__file__).resolve().parents[3]


def flat(output: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(output.split())


def world_file(tmp_path: Path, events: int = 200) -> Path:
    path = tmp_path / "world.jsonl"
    records = generate_world(WorldConfig(events=events, seed=5))
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def test_run_with_a_taken_metrics_port_says_which_and_how_to_change_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    env["PYTHONPATH"] = str(ROOT)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"metrics": {"host": "127.0.0.1", "port": port}}))
        result = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "streamlearn.cli", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    text = flat(result.stdout + result.stderr)
    assert f"127.0.0.1:{port}" in text and "in use" in text
    assert "metrics.port" in text and "STREAMLEARN_METRICS__PORT" in text and "0 disables" in text


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("dup.csv", b"event_id,timestamp,event_id\n1,2,3\n", "'event_id' more than once"),
        ("bad.parquet", b"not parquet", "not a readable Parquet file"),
    ],
)
def test_backtest_of_a_file_it_cannot_read_exits_1_with_what_to_fix(
    tmp_path, name, content, expected
):
    path = tmp_path / name
    path.write_bytes(content)
    result = CliRunner().invoke(app, ["backtest", str(path), "--report", str(tmp_path / "r")])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert expected in flat(result.output)
    assert not (tmp_path / "r").exists()  # no half report either


def test_an_interrupted_backtest_leaves_the_previous_report_whole(tmp_path, monkeypatch):
    path = world_file(tmp_path)
    report = tmp_path / "report"
    runner = CliRunner()
    first = runner.invoke(app, ["backtest", str(path), "--report", str(report)])
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    assert {"summary.json", "predictions.jsonl", "report.md"} <= before.keys()

    real = stream.backtest.backtest

    def interrupt(_records: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C once the first batch's predictions are written

    def interrupted(*args, **kwargs):
        return real(*args, **{**kwargs, "on_batch": interrupt, "batch_size": 50})

    monkeypatch.setattr(stream.backtest, "backtest", interrupted)
    command = ["backtest", str(path), "--report", str(report), "--model", "hoeffding_tree"]
    second = runner.invoke(app, command)
    assert second.exit_code != 0  # click turns the interrupt into exit 130

    assert {p.name: p.read_bytes() for p in report.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "world.jsonl"]


def test_a_finished_backtest_replaces_the_previous_report_entirely(tmp_path):
    path = world_file(tmp_path)
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.json").write_text('{"stale": true}')
    (report / "old-model.png").write_bytes(b"stale plot")
    result = CliRunner().invoke(app, ["backtest", str(path), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "stale" not in (report / "summary.json").read_text()
    assert not (report / "old-model.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "world.jsonl"]


def test_backtest_with_a_redis_out_of_reach_exits_1_and_keeps_the_previous_report(tmp_path):
    path = world_file(tmp_path, events=20)
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.json").write_text('{"previous": true}')
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    command = ["backtest", str(path), "--redis", f"redis://127.0.0.1:{port}/0"]
    result = CliRunner().invoke(app, [*command, "--report", str(report)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"Redis at redis://127.0.0.1:{port}/0" in flat(result.output)
    assert (report / "summary.json").read_text() == '{"previous": true}'
