"""Alerts and dashboard queries against the real Prometheus and Alertmanager.

A worker-like ``/metrics`` endpoint (the real :class:`~metrics.monitor.Monitor`
and :class:`~metrics.instruments.WorkerMetrics` on a fresh registry) is
scraped by the session Prometheus, which loads the committed
``deploy/prometheus/rules`` and sends alerts to the session Alertmanager, which
notifies the stack's alert receiver (``streamlearn alerts serve``, with the
routing of the committed ``deploy/alertmanager/alertmanager.yml``); the alerts
are read back from its log, as ``streamlearn alerts list --json`` prints them.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from streamlearn.metrics.dashboard import dashboard_queries
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.metrics.monitor import Monitor, MonitoringMetrics
from streamlearn.metrics.thresholds import MonitoringConfig
from streamlearn.stack.alert_receiver import AlertLog

from .pipeline import wait_for

REPO = Path(__file__).resolve().parents[2]


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def query(prometheus_url: str, expr: str) -> dict[str, Any]:
    return get_json(f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MetricsEndpoint:
    """The /metrics endpoint of ``registry`` on a free local port, until :meth:`close`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.port = free_port()
        self.server, self.thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Worker(MetricsEndpoint):
    """A /metrics endpoint with the worker's and the monitor's metrics."""

    def __init__(self) -> None:
        registry = CollectorRegistry()
        self.worker = WorkerMetrics(registry)
        self.config = MonitoringConfig(
            reference_size=200,
            window_size=200,
            evaluate_every=50,
            quality_window=200,
            features=("amount",),
            drift_warmup_labels=0,  # predictions without labels enter the windows at once
        )
        self.monitor = Monitor(self.config, MonitoringMetrics(registry))
        self.rng = random.Random(0)
        self.index = 0
        super().__init__(registry)

    def predictions(self, n: int, positive_rate: float) -> None:
        for _ in range(n):
            positive = self.rng.random() < positive_rate
            score = 0.9 if positive else 0.1
            self.monitor.observe_prediction(
                score, positive, {"amount": self.rng.random()}, event_time_ms=self.index
            )
            self.worker.events.inc()
            self.worker.predictions.inc()
            self.worker.event_to_prediction.observe(0.004)
            self.worker.stage_seconds.labels(stage="score").observe(0.001)
            self.index += 1
        self.monitor.publish(refresh=True)

    def concept_shift(self) -> int:
        detections = 0
        for i in range(3000):
            y = self.rng.random() < 0.5
            score = 0.8 if y else 0.2
            if i >= 1500:
                score = 1 - score
            detections += self.monitor.observe_label(score, y, event_time_ms=self.index)
        self.monitor.publish()
        return detections


class Received:
    """The alerts the stack's receiver logged, read as ``streamlearn alerts list --json``."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def listed(self) -> list[dict[str, Any]]:
        result = subprocess.run(  # noqa: S603
            [
                sys.executable,
                "-m",
                "streamlearn.cli",
                "alerts",
                "list",
                "--json",
                "--log",
                str(self.log),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def alerts(self, alertname: str, target: str, status: str) -> list[dict[str, Any]]:
        return [
            alert
            for alert in AlertLog(self.log).read()
            if alert["labels"].get("alertname") == alertname
            and alert["labels"].get("target") == target
            and alert["status"] == status
        ]


@pytest.fixture
def worker() -> Iterator[Worker]:
    w = Worker()
    yield w
    w.close()


@pytest.fixture
def received(alert_log: Path) -> Received:
    return Received(alert_log)


def scraped(prometheus_url: str, target: str) -> bool:
    result = query(prometheus_url, f'up{{target="{target}"}} == 1')["data"]["result"]
    return bool(result)


def test_every_dashboard_query_runs_on_prometheus(
    prometheus_url: str, scrape_target: Callable[..., str], worker: Worker
) -> None:
    worker.predictions(600, 0.05)
    target = scrape_target(worker.address)
    wait_for(lambda: scraped(prometheus_url, target), 60, f"Prometheus to scrape {target}")
    time.sleep(3)  # a few scrapes, so rate() has two samples
    empty = []
    for expr in dashboard_queries():
        answer = query(prometheus_url, expr)
        assert answer["status"] == "success", (expr, answer)
        if not answer["data"]["result"]:
            empty.append(expr)
    for must_have_data in (
        "streamlearn_prediction_psi",
        'max(streamlearn_alert_threshold{name="psi_critical"})',
        "sum(rate(streamlearn_predictions_total[1m]))",
        "histogram_quantile(0.99, sum by (le) (rate(streamlearn_event_to_prediction_seconds_bucket[1m])))",  # noqa: E501
        "max by (feature) (streamlearn_feature_psi)",
    ):
        assert must_have_data in dashboard_queries()
        assert must_have_data not in empty, must_have_data


def firing(prometheus_url: str, alertname: str, target: str) -> list[dict[str, Any]]:
    alerts = get_json(f"{prometheus_url}/api/v1/alerts")["data"]["alerts"]
    return [
        a
        for a in alerts
        if a["labels"].get("alertname") == alertname
        and a["labels"].get("target") == target
        and a["state"] == "firing"
    ]


def in_alertmanager(alertmanager_url: str, alertname: str, target: str) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode(
        {"filter": [f'alertname="{alertname}"', f'target="{target}"']}, doseq=True
    )
    return get_json(f"{alertmanager_url}/api/v2/alerts?{params}")


def test_concept_drift_alert_reaches_the_receiver_and_alerts_list(
    prometheus_url: str,
    alertmanager_url: str,
    scrape_target: Callable[..., str],
    worker: Worker,
    received: Received,
) -> None:
    target = scrape_target(worker.address)
    wait_for(lambda: scraped(prometheus_url, target), 60, f"Prometheus to scrape {target}")
    time.sleep(2)  # the counter's zero is scraped before the detections
    assert worker.concept_shift() > 0
    alert = wait_for(
        lambda: firing(prometheus_url, "StreamlearnConceptDrift", target),
        60,
        "StreamlearnConceptDrift firing in Prometheus",
    )[0]
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == "Concept drift detected on the online loss"
    wait_for(
        lambda: in_alertmanager(alertmanager_url, "StreamlearnConceptDrift", target),
        60,
        "the alert in Alertmanager",
    )
    note = wait_for(
        lambda: received.alerts("StreamlearnConceptDrift", target, "firing"),
        60,
        "the firing notification in the receiver's log",
    )[0]
    assert note["labels"]["job"] == "streamlearn"
    listed = [
        a
        for a in received.listed()
        if a["labels"].get("alertname") == "StreamlearnConceptDrift"
        and a["labels"].get("target") == target
    ]
    assert listed, "the alert is missing from `streamlearn alerts list --json`"
    assert listed[0]["status"] == "firing"
    assert listed[0]["annotations"]["summary"] == "Concept drift detected on the online loss"
    assert listed[0]["startsAt"] and listed[0]["endsAt"] and listed[0]["received"]


def test_positive_rate_shift_fires_then_resolves_at_the_receiver(
    prometheus_url: str,
    scrape_target: Callable[..., str],
    worker: Worker,
    received: Received,
) -> None:
    worker.predictions(400, 0.05)  # reference 5% positive
    worker.predictions(200, 0.80)  # the broken-pipeline jump
    ratio = worker.registry.get_sample_value("streamlearn_prediction_positive_rate_ratio")
    assert ratio is not None and ratio > 3
    target = scrape_target(worker.address)
    wait_for(lambda: scraped(prometheus_url, target), 60, f"Prometheus to scrape {target}")
    for_seconds = 120  # AlertThresholds().positive_rate_for
    wait_for(
        lambda: firing(prometheus_url, "StreamlearnPositiveRateShift", target),
        for_seconds + 60,
        "StreamlearnPositiveRateShift firing",
    )
    note = wait_for(
        lambda: received.alerts("StreamlearnPositiveRateShift", target, "firing"),
        60,
        "the firing notification",
    )[0]
    assert note["labels"]["severity"] == "critical"
    assert "times the reference rate" in note["annotations"]["description"]

    worker.monitor.reset_reference()  # a new model version: new reference windows
    worker.monitor.publish()
    ratio = worker.registry.get_sample_value("streamlearn_prediction_positive_rate_ratio")
    assert ratio is not None and math.isnan(ratio)
    wait_for(
        lambda: not firing(prometheus_url, "StreamlearnPositiveRateShift", target),
        60,
        "the alert to resolve in Prometheus",
    )
    wait_for(
        lambda: received.alerts("StreamlearnPositiveRateShift", target, "resolved"),
        90,
        "the resolved notification",
    )
