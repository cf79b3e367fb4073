"""``streamlearn backtest`` with an experiment or the rollback rule: options and report."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.stream.synthetic import WorldConfig, generate_world

BROKEN = "broken=tests.unit.stream.factories:always_high"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("world") / "world.jsonl"
    records = generate_world(WorldConfig(events=3000, seed=5))
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def backtest(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["backtest", *args])
    return result.exit_code, " ".join(result.output.split())


def test_an_ab_backtest_reports_its_arms_decisions_and_plot(world, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "experiment:\n  min_labels_per_arm: 100\n  guardrails:\n    min_predictions: 100\n"
    )
    folder = tmp_path / "report"
    code, output = backtest(
        str(world), "--config", str(config), "--model", "control=logistic", "--model", BROKEN,
        "--experiment", "ab", "--share", "0.1", "--report", str(folder),
    )  # fmt: skip
    assert code == 0, output
    experiment = json.loads((folder / "summary.json").read_text())["experiment"]
    assert (experiment["mode"], experiment["primary"]) == ("ab", "log_loss")
    assert set(experiment["arms"]) == {"control", "broken"}
    assert [(d["action"], d["arm"]) for d in experiment["decisions"]] == [("revert", "broken")]
    report = (folder / "report.md").read_text()
    assert "## Experiment" in report and "(experiment.png)" in report
    assert (folder / "experiment.png").read_bytes().startswith(b"\x89PNG")
    lines = [
        orjson.loads(line) for line in (folder / "predictions.jsonl").read_bytes().splitlines()
    ]
    assert {line["arm"] for line in lines} == {"control", "broken"}


def test_a_rollback_backtest_reports_the_live_model_and_its_copy(world, tmp_path):
    folder = tmp_path / "report"
    code, output = backtest(
        str(world), "--model", "logistic", "--rollback-drop", "0.05", "--report", str(folder)
    )
    assert code == 0, output
    experiment = json.loads((folder / "summary.json").read_text())["experiment"]
    assert experiment["mode"] == "rollback" and experiment["drop"] == 0.05
    assert set(experiment["arms"]) == {"logistic", "last_known_good"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "logistic", "--experiment", "ab"], "an experiment needs two models or more"),
        (["--model", "logistic", "--primary", "brier"], "--primary is for --experiment"),
        (["--model", "a=logistic", "--model", "b=logistic", "--experiment", "ab", "--share", "0"],
         "--share must be between 0 and 1"),
        (["--model", "a=logistic", "--model", "b=logistic", "--experiment", "shadow",
          "--primary", "positive_rate"], "a shadow arm serves nothing"),
    ],
)  # fmt: skip
def test_a_bad_experiment_is_refused_with_what_to_fix(world, tmp_path, args, message):
    code, output = backtest(str(world), *args, "--report", str(tmp_path / "r"))
    assert code == 2 and message in output, output
    assert not (tmp_path / "r").exists()
