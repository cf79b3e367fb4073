"""The generated Grafana dashboard and provisioning files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamlearn.metrics.alerts import recording_rules
from streamlearn.metrics.dashboard import (
    DASHBOARD_PATH,
    DASHBOARD_PROVIDER_PATH,
    DATASOURCE_PATH,
    dashboard,
    dashboard_queries,
)
from streamlearn.metrics.dashboard_layout import DATASOURCE
from streamlearn.metrics.experiment_metrics import ExperimentMetrics
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.metrics.monitor import Monitor, MonitoringMetrics
from streamlearn.metrics.thresholds import AlertThresholds, MonitoringConfig

REPO = Path(__file__).resolve().parents[3]
PROMTOOL = shutil.which("promtool")


def _known_series() -> set[str]:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    Monitor(MonitoringConfig(), MonitoringMetrics(registry))
    ExperimentMetrics(registry)  # the arms' series of an experiment and of the rollback rule
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "info": ("_info",),
        "gauge": ("",),
    }
    return (
        {metric.name + suffix for metric in registry.collect() for suffix in suffixes[metric.type]}
        | {"up", "ALERTS"}
        | {r["record"] for r in recording_rules()}
    )


def _panels() -> list[dict]:
    return dashboard(AlertThresholds())["panels"]


def test_panel_ids_are_unique_and_the_grid_does_not_overlap() -> None:
    panels = _panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


def test_dashboard_covers_every_monitoring_area() -> None:
    titles = " | ".join(p["title"] for p in _panels())
    for needle in (
        "Events, predictions",
        "Event-to-prediction latency",
        "Stage duration",
        "Consumer lag",
        "Redis round trip",
        "Prediction PSI",
        "Prediction KS",
        "Positive-decision rate",
        "Positive-rate ratio",
        "Feature PSI",
        "ROC AUC",
        "Log loss",
        "precision and recall",
        "Concept drift detections",
        "Dead letters per second by reason",
        "Alerts",
    ):
        assert needle in titles, needle
    assert any(p["type"] == "alertlist" for p in _panels())


def test_every_query_uses_exported_series_and_the_shared_datasource() -> None:
    known = _known_series()
    for panel in _panels():
        for target in panel.get("targets", []):
            names = set(
                re.findall(
                    r"\b(streamlearn_[a-z0-9_]+|streamlearn:[a-z0-9_:]+|up|ALERTS)\b",
                    target["expr"],
                )
            )
            assert names, target["expr"]
            assert names <= known, target["expr"]
            assert target["datasource"] == DATASOURCE
            assert "$" not in target["expr"]  # runs as is against Prometheus


def test_threshold_lines_come_from_the_thresholds() -> None:
    t = AlertThresholds(psi_warning=0.12, psi_critical=0.3, p99_latency_seconds=0.04)
    by_title = {p["title"]: p for p in dashboard(t)["panels"]}
    psi_steps = by_title["Prediction PSI"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in psi_steps] == [None, 0.12, 0.3]
    latency = by_title["Event-to-prediction latency"]
    assert latency["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 0.04
    exprs = [tg["expr"] for tg in latency["targets"]]
    assert 'max(streamlearn_alert_threshold{name="p99_latency_seconds"})' in exprs
    assert any(e.startswith("histogram_quantile(0.99") for e in exprs)


def test_dashboard_queries_lists_every_target_once() -> None:
    queries = dashboard_queries()
    all_targets = [tg["expr"] for p in _panels() for tg in p.get("targets", [])]
    assert set(queries) == set(all_targets)
    assert len(queries) == len(set(queries))


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": q}
                    for i, q in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_points_at_the_dashboard_and_datasource() -> None:
    datasource = yaml.safe_load((REPO / DATASOURCE_PATH).read_text())["datasources"][0]
    assert datasource["uid"] == DATASOURCE["uid"]
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((REPO / DASHBOARD_PROVIDER_PATH).read_text())["providers"][0]
    assert provider["type"] == "file"
    committed = json.loads((REPO / DASHBOARD_PATH).read_text())
    assert committed["uid"] == "streamlearn"
