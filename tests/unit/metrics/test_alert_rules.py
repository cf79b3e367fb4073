"""Generated alert rules: structure, promtool validity, promtool unit tests, Alertmanager."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamlearn.metrics.alert_files import (
    ALERTMANAGER_PATH,
    DEFAULT_WEBHOOK_URL,
    RULE_TESTS_PATH,
    RULES_PATH,
    alertmanager_config,
    rule_tests_yaml,
    rules_yaml,
)
from streamlearn.metrics.alerts import alert_names, alert_rules, recording_rules
from streamlearn.metrics.decision_metrics import DecisionMetrics
from streamlearn.metrics.experiment_metrics import ExperimentMetrics
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.metrics.monitor import Monitor, MonitoringMetrics
from streamlearn.metrics.thresholds import AlertThresholds, MonitoringConfig, duration_seconds

REPO = Path(__file__).resolve().parents[3]
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")

REQUIRED = {
    "StreamlearnPredictionDriftPSI",
    "StreamlearnPredictionKS",
    "StreamlearnPositiveRateShift",
    "StreamlearnFeatureDriftPSI",
    "StreamlearnConceptDrift",
    "StreamlearnOnlineAUCDrop",
    "StreamlearnLatencyP99High",
    "StreamlearnConsumerLagHigh",
    "StreamlearnDeadLetterRatioHigh",
    "StreamlearnWorkerDown",
    "StreamlearnDependencyDown",
    "StreamlearnPredictionsUndelivered",
    "StreamlearnSeriesNotFinite",
    "StreamlearnModelNotFinite",
}

OTHER_THRESHOLDS = AlertThresholds(
    psi_warning=0.05,
    psi_critical=0.4,
    ks_critical=0.3,
    positive_rate_ratio_high=2.0,
    positive_rate_ratio_low=0.5,
    p99_latency_seconds=0.02,
    auc_drop=0.1,
    auc_min=0.7,
    consumer_lag_records=500,
    dead_letter_ratio=0.05,
    concept_drift_window="5m",
    prediction_drift_for="3m",
    positive_rate_for="1m",
    feature_drift_for="30m",
    quality_for="0m",
    latency_for="90s",
    consumer_lag_for="1m",
    dead_letter_for="2m",
    worker_down_for="30s",
    dependency_down_for="2m",
    undelivered_for="0m",
)


def known_series() -> set[str]:
    """Every series name the worker exports, plus Prometheus' own."""
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    DecisionMetrics.on(registry)  # the processor's decision, holdout and calibration gauges
    ExperimentMetrics(registry)  # the arms' series and decisions of an experiment, a rollback
    Monitor(MonitoringConfig(features=("amount",)), MonitoringMetrics(registry))
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "info": ("_info",),
        "gauge": ("",),
    }
    names = {
        metric.name + suffix for metric in registry.collect() for suffix in suffixes[metric.type]
    }
    return names | {"up", "ALERTS"}


def referenced_series(expr: str) -> set[str]:
    return set(re.findall(r"\b(streamlearn_[a-z0-9_]+|up|ALERTS)\b", expr))


def test_every_required_alert_exists_with_severity_and_annotations() -> None:
    assert REQUIRED <= set(alert_names())
    for rule in alert_rules(AlertThresholds()):
        entry = rule.to_rule()
        assert entry["labels"]["severity"] in {"warning", "critical"}
        assert entry["annotations"]["summary"] and entry["annotations"]["description"]
        assert rule.scenarios, f"{rule.alert} has no test scenario"
        duration_seconds(entry["for"])


def test_psi_alert_has_both_severities() -> None:
    severities = {
        r.severity
        for r in alert_rules(AlertThresholds())
        if r.alert == "StreamlearnPredictionDriftPSI"
    }
    assert severities == {"warning", "critical"}


def test_rules_reference_only_exported_series() -> None:
    known = known_series()
    for rule in alert_rules(AlertThresholds()):
        assert referenced_series(rule.expr) <= known, rule.expr


def test_rules_carry_the_thresholds() -> None:
    t = OTHER_THRESHOLDS
    by = {(r.alert, r.severity): r for r in alert_rules(t)}
    assert by["StreamlearnPredictionDriftPSI", "warning"].expr.endswith("> 0.05")
    assert by["StreamlearnPredictionDriftPSI", "critical"].expr.endswith("> 0.4")
    assert "> 2.0" in by["StreamlearnPositiveRateShift", "critical"].expr
    assert "< 0.5" in by["StreamlearnPositiveRateShift", "critical"].expr
    assert by["StreamlearnLatencyP99High", "critical"].expr == (
        "histogram_quantile(0.99, sum by (le) "
        "(rate(streamlearn_event_to_prediction_seconds_bucket[1m]))) > 0.02"
    )
    assert by["StreamlearnLatencyP99High", "critical"].for_ == "90s"
    assert "[5m]" in by["StreamlearnConceptDrift", "warning"].expr
    assert by["StreamlearnOnlineAUCDrop", "critical"].expr == (
        "streamlearn_online_roc_auc < streamlearn_reference_roc_auc - 0.1"
    )
    doc = yaml.safe_load(rules_yaml(t))
    assert {g["name"] for g in doc["groups"]} == {
        "streamlearn-model",
        "streamlearn-serving",
        "streamlearn-labels",
    }


def _write(root: Path, t: AlertThresholds) -> tuple[Path, Path]:
    rules = root / RULES_PATH
    tests = root / RULE_TESTS_PATH
    rules.parent.mkdir(parents=True)
    tests.parent.mkdir(parents=True)
    rules.write_text(rules_yaml(t))
    tests.write_text(rule_tests_yaml(t))
    return rules, tests


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


@needs_promtool
def test_committed_rules_pass_promtool_check() -> None:
    result = _run(PROMTOOL, "check", "rules", REPO / RULES_PATH)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_committed_rule_tests_prove_every_alert_fires_and_resolves() -> None:
    tests = sorted((REPO / "deploy/prometheus/tests").glob("*.yml"))
    assert tests
    result = _run(PROMTOOL, "test", "rules", *tests, cwd=REPO)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr
    doc = yaml.safe_load((REPO / RULE_TESTS_PATH).read_text())
    tested = set()
    recorded = set()
    for group in doc["tests"]:
        if "promql_expr_test" in group:
            recorded.update(c["expr"] for c in group["promql_expr_test"])
            continue
        checks = group["alert_rule_test"]
        assert checks[0]["exp_alerts"] == [], group["name"]  # quiet before
        assert any(c["exp_alerts"] for c in checks), group["name"]  # fires
        assert checks[-1]["exp_alerts"] == [], group["name"]  # resolves
        tested.add(checks[0]["alertname"])
    assert tested == set(alert_names())
    assert recorded == {r["record"] for r in recording_rules()}


@needs_promtool
def test_rules_and_tests_hold_for_other_thresholds(tmp_path: Path) -> None:
    rules, tests = _write(tmp_path, OTHER_THRESHOLDS)
    result = _run(PROMTOOL, "check", "rules", rules)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run(PROMTOOL, "test", "rules", tests)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_rule_tests_fail_when_a_rule_drifts_from_its_threshold(tmp_path: Path) -> None:
    rules, tests = _write(tmp_path, AlertThresholds())
    rules.write_text(rules_yaml(AlertThresholds(psi_critical=0.5)))
    result = _run(PROMTOOL, "test", "rules", tests)  # type: ignore[arg-type]
    assert result.returncode != 0
    assert "StreamlearnPredictionDriftPSI" in result.stdout + result.stderr


def test_alertmanager_config_routes_to_the_webhook() -> None:
    doc = yaml.safe_load(alertmanager_config("http://127.0.0.1:1234/hook"))
    assert doc["route"]["group_by"] == ["alertname", "severity"]
    assert doc["route"]["group_wait"] == "1s"
    hook = doc["receivers"][0]["webhook_configs"][0]
    assert hook == {"url": "http://127.0.0.1:1234/hook", "send_resolved": True}
    committed = yaml.safe_load((REPO / ALERTMANAGER_PATH).read_text())
    assert committed["receivers"][0]["webhook_configs"][0]["url"] == "http://127.0.0.1:9095/alerts"


@pytest.mark.skipif(AMTOOL is None, reason="amtool is not installed")
@pytest.mark.parametrize("url", [None, "http://localhost:18080/alerts"])
def test_alertmanager_config_passes_amtool(tmp_path: Path, url: str | None) -> None:
    path = REPO / ALERTMANAGER_PATH
    if url is not None:
        path = tmp_path / "alertmanager.yml"
        path.write_text(alertmanager_config(url))
    result = _run(AMTOOL, "check-config", path)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_nan_gauges_of_a_worker_still_filling_its_windows_do_not_alert(tmp_path: Path) -> None:
    """Gauges start at NaN (no data yet): only a busy worker's NaN is a fault."""
    t = AlertThresholds()
    rules, _ = _write(tmp_path, t)
    nan_for_two_hours = " ".join(["NaN"] * 480)
    selector = '{job="streamlearn", instance="w:1"}'
    doc = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    {
                        "series": f"streamlearn_prediction_psi{selector}",
                        "values": nan_for_two_hours,
                    },
                    {"series": f"streamlearn_predictions_total{selector}", "values": "0+1x479"},
                ],
                "alert_rule_test": [
                    {"alertname": "StreamlearnSeriesNotFinite", "eval_time": m, "exp_alerts": []}
                    for m in ("20m", "1h", "1h50m")
                ],
            }
        ],
    }
    test_file = tmp_path / "quiet.yml"
    test_file.write_text(yaml.safe_dump(doc))
    result = _run(PROMTOOL, "test", "rules", test_file)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(AMTOOL is None, reason="amtool is not installed")
def test_the_receiver_examples_are_a_valid_config_that_keeps_the_streamlearn_receiver() -> None:
    path = REPO / "deploy/alertmanager/receivers.example.yml"
    result = _run(AMTOOL, "check-config", path)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr
    doc = yaml.safe_load(path.read_text())
    kinds = {key for r in doc["receivers"] for key in r if key.endswith("_configs")}
    assert kinds == {"webhook_configs", "email_configs", "slack_configs"}
    first = doc["route"]["routes"][0]
    assert first == {"receiver": "streamlearn-alerts", "continue": True}
    hook = next(r for r in doc["receivers"] if r["name"] == "streamlearn-alerts")
    assert hook["webhook_configs"][0]["url"] == DEFAULT_WEBHOOK_URL
