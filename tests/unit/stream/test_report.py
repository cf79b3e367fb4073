"""The backtest report: summary.json, real PNG plots and a report.md that links them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings
from streamlearn.stream.report import PLOTS, percentiles, read_scores, report_markdown, write_report
from streamlearn.stream.synthetic import WorldConfig, generate_world

MODELS = ("logistic", "hoeffding_tree")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def world_file(path: Path, events: int = 2000) -> Path:
    records = generate_world(WorldConfig(events=events))
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Table]:
    folder = tmp_path_factory.mktemp("report")
    path = world_file(folder / "world.jsonl")
    with (folder / "predictions.jsonl").open("wb") as predictions:
        result = backtest(path, Settings(), MODELS, predictions=predictions)
    return folder, write_report(result, folder)


def check_summary(folder: Path) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["events"] == 2000
    assert summary["labels_learned"] > 0
    assert isinstance(summary["dead_letters"], dict)
    assert set(summary["models"]) == set(MODELS)
    for model in summary["models"].values():
        for key in ("log_loss", "accuracy", "roc_auc"):
            assert isinstance(model["metrics"][key], float)
        assert isinstance(model["drift"], list)
        assert isinstance(model["alerts"], list)
        assert all("alert" in a and "event_index" in a for a in model["alerts"])
    return summary


def check_plots(folder: Path) -> None:
    markdown = (folder / "report.md").read_text()
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert pngs == sorted(PLOTS)  # predictions.jsonl is there: the score plot too
    for name in pngs:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 1024, name
        assert re.search(rf"!\[[^\]]*\]\({re.escape(name)}\)", markdown), name


def test_summary_json_is_the_backtest_summary_with_every_required_key(report):
    folder, _ = report
    check_summary(folder)


def test_every_plot_is_a_real_png_linked_from_report_md(report):
    folder, _ = report
    check_plots(folder)


def test_report_md_lists_inputs_metrics_and_drift(report):
    folder, _ = report
    summary = json.loads((folder / "summary.json").read_text())
    markdown = (folder / "report.md").read_text()
    assert markdown.startswith("# Backtest report")
    assert "events scored: 2,000" in markdown
    assert f"labels learned: {summary['labels_learned']:,}" in markdown
    assert "events/s" in markdown
    for name, model in summary["models"].items():
        row = next(line for line in markdown.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"{model['metrics']['log_loss']:.4f}" in row
        assert f"{model['metrics']['roc_auc']:.4f}" in row
        assert f"### `{name}`: {len(model['alerts'])} drift detection(s)" in markdown
        for alert in model["alerts"][:50]:
            assert alert["alert"] in markdown


def test_the_returned_table_has_a_row_per_model(report):
    _, table = report
    assert table.row_count == len(MODELS)
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "logistic" in text and "hoeffding_tree" in text


def test_without_predictions_the_score_plot_is_left_out(tmp_path):
    path = world_file(tmp_path / "small.jsonl", events=300)
    result = backtest(path, Settings(), ["logistic"])
    folder = tmp_path / "report"
    write_report(result, folder)
    assert not (folder / "scores.png").exists()
    assert (folder / "quality.png").read_bytes().startswith(PNG_MAGIC)
    assert "no score distribution" in (folder / "report.md").read_text()


def test_percentiles_weigh_each_batch_by_its_records():
    batches = [(98, 0.098), (1, 0.01), (1, 0.1)]  # 1 ms per record, then 10 ms, then 100 ms
    assert percentiles(batches, (50, 98, 99, 100)) == {50: 0.001, 98: 0.001, 99: 0.01, 100: 0.1}
    assert all(v != v for v in percentiles([]).values())  # NaN without batches


def test_read_scores_groups_by_model_and_skips_bad_lines(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(
        b'{"event_id":"a","score":0.25,"model":"m1"}\n{oops\n'
        b'{"event_id":"a","score":0.5,"model":"m2"}\n{"event_id":"b"}\n'
    )
    assert read_scores(path) == {"m1": [0.25], "m2": [0.5]}
    assert read_scores(tmp_path / "missing.jsonl") == {}


def test_report_markdown_without_models_or_drift():
    summary = {
        "events": 0,
        "labels_learned": 0,
        "dead_letters": {"invalid_json": 3},
        "seconds": 0.0,
        "events_per_second": None,
        "models": {},
    }
    text = report_markdown(summary, [])
    assert "dead letters: 3 (invalid_json: 3)" in text


def test_cli_backtest_writes_the_report_and_prints_the_table(tmp_path):
    path = world_file(tmp_path / "world.jsonl")
    folder = tmp_path / "cli-report"
    args = ["backtest", str(path), "--model", "logistic", "--model", "hoeffding_tree"]
    result = CliRunner().invoke(app, [*args, "--report", str(folder)])
    assert result.exit_code == 0, result.output
    assert "hoeffding_tree" in result.output
    check_summary(folder)
    check_plots(folder)
