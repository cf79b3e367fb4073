"""Thresholds of a streamlearn config reach the generated rules, their promtool tests and the
dashboard, and ``streamlearn metrics check --rules`` names deployed rules that disagree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streamlearn.cli.metrics import main
from streamlearn.metrics.alert_files import RULE_TESTS_PATH, RULES_PATH, rules_yaml
from streamlearn.metrics.artifacts import check_rules
from streamlearn.metrics.dashboard import DASHBOARD_PATH
from streamlearn.metrics.thresholds import AlertThresholds

REPO = Path(__file__).resolve().parents[3]
PROMTOOL = shutil.which("promtool")

CONFIG = """\
monitoring:
  thresholds:
    psi_critical: 0.37
    consumer_lag_records: 54321
    label_lag_seconds: 1800
    latency_for: 7m
"""


def _rules(root: Path) -> dict[tuple[str, str], dict]:
    doc = yaml.safe_load((root / RULES_PATH).read_text())
    return {
        (r.get("alert") or r["record"], r.get("labels", {}).get("severity", "")): r
        for g in doc["groups"]
        for r in g["rules"]
    }


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("STREAMLEARN_CONFIG", raising=False)
    path = tmp_path / "streamlearn.yaml"
    path.write_text(CONFIG)
    return path


def test_generate_with_a_config_writes_its_thresholds_into_rules_and_dashboard(
    config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert main(["generate", "--config", str(config), "--out", str(out)]) == 0
    rules = _rules(out)
    assert rules["StreamlearnPredictionDriftPSI", "critical"]["expr"].endswith("> 0.37")
    assert rules["StreamlearnFeatureDriftPSI", "warning"]["expr"].endswith("> 0.37")
    assert rules["StreamlearnConsumerLagHigh", "warning"]["expr"].endswith("> 54321")
    assert "> 1800.0" in rules["StreamlearnLabelsStale", "warning"]["expr"]
    assert rules["StreamlearnLatencyP99High", "critical"]["for"] == "7m"
    # untouched thresholds keep their defaults
    assert rules["StreamlearnPredictionDriftPSI", "warning"]["expr"].endswith("> 0.1")
    dashboard = json.loads((out / DASHBOARD_PATH).read_text())
    steps = [
        step.get("value")
        for panel in dashboard["panels"]
        for step in panel.get("fieldConfig", {})
        .get("defaults", {})
        .get("thresholds", {})
        .get("steps", [])
    ]
    assert 0.37 in steps and 54321 in steps and 1800 in steps
    # without --config: the committed defaults
    assert main(["check"]) == 0
    assert main(["check", "--config", str(config)]) == 1


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_passes_the_tests_generated_from_a_config(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["generate", "--config", str(config), "--out", str(out)]) == 0
    for args in (
        ["check", "rules", str(out / RULES_PATH)],
        ["test", "rules", str(out / RULE_TESTS_PATH)],
    ):
        result = subprocess.run(  # noqa: S603
            [PROMTOOL, *args], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_check_rules_passes_when_the_deployed_rules_match_the_config(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    main(["generate", "--config", str(config), "--out", str(out)])
    rules_dir = (out / RULES_PATH).parent
    capsys.readouterr()
    assert main(["check", "--config", str(config), "--rules", str(rules_dir)]) == 0
    assert "agree" in capsys.readouterr().out


def test_check_rules_fails_naming_the_rule_and_threshold_that_differ(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules_dir = tmp_path / "deployed"
    rules_dir.mkdir()
    # the committed rules (default thresholds) are deployed; the config says otherwise
    shutil.copy(REPO / RULES_PATH, rules_dir / "streamlearn-alerts.yml")
    assert main(["check", "--config", str(config), "--rules", str(rules_dir)]) == 1
    err = capsys.readouterr().err
    assert (
        "StreamlearnPredictionDriftPSI (critical): expr has 0.25 where the configuration has"
        " 0.37 (psi_critical)" in err
    )
    assert (
        "StreamlearnConsumerLagHigh (warning): expr has 10000 where the configuration has 54321"
        in err
    )
    assert (
        "StreamlearnLatencyP99High (critical): for has 5m where the configuration has 7m"
        " (latency_for)" in err
    )
    assert "StreamlearnWorkerDown" not in err  # unchanged rules are not named


def test_check_rules_names_missing_and_foreign_rules_and_ignores_others(tmp_path: Path) -> None:
    t = AlertThresholds()
    doc = yaml.safe_load(rules_yaml(t))
    removed = doc["groups"][0]["rules"].pop(0)
    doc["groups"][0]["rules"].append({"alert": "StreamlearnOld", "expr": "vector(1)"})
    doc["groups"].append({"name": "site", "rules": [{"alert": "DiskFull", "expr": "vector(1)"}]})
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc))
    name = f"{removed['alert']} ({removed['labels']['severity']})"
    assert sorted(check_rules(t, tmp_path)) == sorted(
        [
            "StreamlearnOld: deployed but not generated from the configuration",
            f"{name}: missing from the deployed rules",
        ]
    )


def test_check_rules_refuses_a_folder_without_rules_and_a_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--rules", str(tmp_path)]) == 2
    assert "no rule files" in capsys.readouterr().err
    (tmp_path / "broken.yml").write_text("groups: {not: a list}\n")
    assert main(["check", "--rules", str(tmp_path)]) == 2
    assert "not a Prometheus rule file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitoring:\n  thresholds:\n    psi_critical: -1\n")
    assert main(["generate", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "psi_critical" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_module_entry_point_checks_deployed_rules_against_a_config(
    config: Path, tmp_path: Path
) -> None:
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "streamlearn.cli", "metrics", "check", "--config", str(config), "--rules",
         str(REPO / RULES_PATH).rsplit("/", 1)[0]],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "psi_critical" in result.stderr


def test_stack_up_with_a_config_writes_its_rules_and_refuses_a_bad_one(
    config: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from streamlearn.cli.app import app
    from streamlearn.cli.stack import CONFIG_RULES_FILE, write_config_rules

    rules_dir = tmp_path / "rules"
    assert write_config_rules(rules_dir, config)
    assert (
        check_rules(
            AlertThresholds(
                psi_critical=0.37,
                consumer_lag_records=54321,
                label_lag_seconds=1800,
                latency_for="7m",
            ),
            rules_dir,
        )
        == []
    )
    assert not write_config_rules(rules_dir, config)
    assert [p.name for p in rules_dir.iterdir()] == [CONFIG_RULES_FILE]
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitoring:\n  thresholds:\n    psi_warning: 0.5\n")  # above psi_critical
    result = CliRunner().invoke(
        app, ["stack", "up", "--root", str(tmp_path / "stack"), "--config", str(bad)]
    )
    assert result.exit_code == 1
    assert "stack up failed" in result.output and "psi_warning" in result.output
    assert not (tmp_path / "stack" / "run").exists(), "nothing was started"
