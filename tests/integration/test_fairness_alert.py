"""The fairness alert on the real Prometheus and Alertmanager, from a configuration's thresholds.

The committed rules hold ``StreamlearnFairnessGap`` for 15 minutes, so this test
starts a stack of its own (Prometheus, Alertmanager and the alert receiver; no
Kafka or Redis) whose rules are generated from a streamlearn configuration with
a 5 s ``fairness_for`` and a [0.5, 1.5] fairness band, the way ``streamlearn
stack up --config`` writes them. Two worker-like ``/metrics`` endpoints (the
real :class:`~metrics.monitor.Monitor`, configured with the same file and sliced
on ``context.group``) are scraped by it: one scores group ``b`` 1.75 times as
high as group ``a``, the other scores both alike. The shifted slice's alert
reaches the receiver through Alertmanager and shows in ``streamlearn alerts
list --json``; the control raises none.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamlearn.cli.stack import CONFIG_RULES_FILE, write_config_rules
from streamlearn.metrics.monitor import Monitor, MonitoringMetrics
from streamlearn.stack import Stack, StackConfig
from streamlearn.stack.files import write_scrape_target
from streamlearn.stream.config import load_settings

from .pipeline import wait_for
from .test_alerting import REPO, MetricsEndpoint, Received, get_json, query, scraped

pytestmark = pytest.mark.integration

ALERT = "StreamlearnFairnessGap"
CONFIG = """\
monitoring:
  slices: [context.group]
  drift_warmup_labels: 0  # no labels here: predictions enter the slice window at once
  thresholds:
    fairness_ratio_low: 0.5
    fairness_ratio_high: 1.5
    fairness_for: 5s
"""
#: Predictions per group: above ``slice_min_count`` (200) on both sides of each ratio, and
#: enough for a scheduled slice check (``detail_evaluate_every``: 1000 observations).
PER_GROUP = 600


class SlicedWorker(MetricsEndpoint):
    """A /metrics endpoint with a Monitor sliced on ``context.group``."""

    def __init__(self, config_file: Path) -> None:
        registry = CollectorRegistry()
        self.monitor = Monitor(load_settings(config_file).monitoring, MonitoringMetrics(registry))
        super().__init__(registry)

    def score(self, means: dict[str, float], seed: int) -> None:
        """PER_GROUP predictions per group, interleaved, scored around the group's mean.

        Every score is below the 0.5 decision threshold: the decision-rate ratio
        stays undefined, so only the score ratio can cross the band.
        """
        rng = random.Random(seed)
        for i in range(PER_GROUP):
            for group, mean in means.items():
                score = mean + rng.uniform(-0.05, 0.05)
                self.monitor.observe_prediction(
                    score, score > 0.5, event_time_ms=i, slices=(group,)
                )
        self.monitor.publish(refresh=True)

    def ratio(self, group: str) -> float | None:
        return self.registry.get_sample_value(
            "streamlearn_slice_score_ratio", {"slice_key": "context.group", "slice": group}
        )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "streamlearn.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def fairness_stack(fresh_stack_config: StackConfig, config_file: Path) -> Iterator[Stack]:
    """Prometheus, Alertmanager and the receiver, with rules generated from ``config_file``."""
    rules_dir = fresh_stack_config.root / "prometheus" / "rules"
    assert write_config_rules(rules_dir, config_file)
    stack = Stack(fresh_stack_config.model_copy(update={"rules_dir": rules_dir}))
    try:
        stack.up(services=["prometheus", "alertmanager"])
        yield stack
    finally:
        stack.down()


@pytest.fixture
def workers(config_file: Path) -> Iterator[tuple[SlicedWorker, SlicedWorker]]:
    shifted, control = SlicedWorker(config_file), SlicedWorker(config_file)
    yield shifted, control
    shifted.close()
    control.close()


def prometheus_alerts(prometheus_url: str, target: str) -> list[dict[str, Any]]:
    """The fairness alerts Prometheus holds for ``target``, pending or firing."""
    alerts = get_json(f"{prometheus_url}/api/v1/alerts")["data"]["alerts"]
    return [
        a
        for a in alerts
        if a["labels"].get("alertname") == ALERT and a["labels"].get("target") == target
    ]


def run_metrics(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "streamlearn.cli", "metrics", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_a_shifted_slice_raises_the_configured_fairness_alert_at_the_receiver(
    fairness_stack: Stack,
    config_file: Path,
    workers: tuple[SlicedWorker, SlicedWorker],
) -> None:
    config = fairness_stack.config
    prometheus_url = config.prometheus_url

    # The rules Prometheus loaded carry the configured band and duration.
    rules_file = config.rules_dir / CONFIG_RULES_FILE
    rules = yaml.safe_load(rules_file.read_text(encoding="utf-8"))
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == ALERT]
    assert "streamlearn_slice_score_ratio > 1.5" in rule["expr"], rule["expr"]
    assert "streamlearn_slice_score_ratio < 0.5" in rule["expr"], rule["expr"]
    assert rule["for"] == "5s"
    checked = run_metrics("check", "--config", str(config_file), "--rules", str(config.rules_dir))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    against_defaults = run_metrics("check", "--rules", str(config.rules_dir))
    assert against_defaults.returncode == 1
    assert "StreamlearnFairnessGap (warning)" in against_defaults.stderr
    loaded = get_json(f"{prometheus_url}/api/v1/rules?type=alert")["data"]["groups"]
    (served,) = [r for g in loaded for r in g["rules"] if r["name"] == ALERT]
    assert served["query"] == rule["expr"] and served["duration"] == 5

    shifted, control = workers
    shifted.score({"a": 0.2, "b": 0.35}, seed=1)
    control.score({"a": 0.2, "b": 0.2}, seed=2)
    ratio_b, ratio_a = shifted.ratio("b"), shifted.ratio("a")
    assert ratio_b is not None and ratio_b > 1.6, ratio_b
    assert ratio_a is not None and 0.5 < ratio_a < 0.6, ratio_a  # inside the configured band
    for group in ("a", "b"):
        alike = control.ratio(group)
        assert alike is not None and 0.9 < alike < 1.1, alike
    crossed = [e["name"] for e in shifted.monitor.drift_events if e["kind"] == "fairness"]
    assert crossed == ["context.group=b:score_ratio"]
    assert not [e for e in control.monitor.drift_events if e["kind"] == "fairness"]

    targets = {"shifted": shifted, "control": control}
    for name, worker in targets.items():
        write_scrape_target(config.targets_dir, name, worker.address)
    for name in targets:
        wait_for(lambda n=name: scraped(prometheus_url, n), 30, f"Prometheus to scrape {name}")
    # From here on every rule evaluation sees both targets' ratios.
    both_seen = time.monotonic()
    answer = query(prometheus_url, 'streamlearn_slice_score_ratio{target="control"}')
    assert len(answer["data"]["result"]) == 2, answer

    received = Received(config.alerts_log)
    note = wait_for(
        lambda: received.alerts(ALERT, "shifted", "firing"),
        60,
        f"{ALERT} for the shifted target in the receiver's log",
        every=0.5,
        explain=lambda: f"Prometheus: {prometheus_alerts(prometheus_url, 'shifted')}",
    )[0]
    assert note["labels"]["slice_key"] == "context.group"
    assert note["labels"]["slice"] == "b"
    assert note["labels"]["severity"] == "warning"
    assert note["annotations"]["summary"].startswith("Slice context.group=b gets 1.")
    assert "outside [0.5, 1.5] for 5s" in note["annotations"]["description"]

    listed = [
        a
        for a in received.listed()
        if a["labels"].get("alertname") == ALERT and a["labels"].get("target") == "shifted"
    ]
    assert listed, f"{ALERT} is missing from `streamlearn alerts list --json`"
    assert {(a["labels"]["slice"], a["status"]) for a in listed} == {("b", "firing")}

    # The control went through at least as many evaluations (and the 5 s hold): no alert.
    time.sleep(max(0.0, both_seen + 5 + 2 - time.monotonic()))
    assert not prometheus_alerts(prometheus_url, "control")
    assert not [
        a
        for a in received.listed()
        if a["labels"].get("alertname") == ALERT and a["labels"].get("target") == "control"
    ], "the control target raised the fairness alert"
    # Nor did group a of the shifted worker, whose ratio (about 0.57) is inside the band.
    assert {a["labels"]["slice"] for a in prometheus_alerts(prometheus_url, "shifted")} == {"b"}
