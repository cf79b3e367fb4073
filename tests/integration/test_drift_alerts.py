"""Drift alerts on the real stack: a drifted synthetic stream through a worker to Prometheus.

A worker runs in a thread on the real Kafka and Redis with a trailing drift
reference (``MONITORING``: the 2000 predictions before the current 1000; a
reference of the first predictions flags an online model's own learning as
drift on every stationary stream) and serves its ``/metrics`` to the session
Prometheus, which evaluates the committed ``deploy/prometheus/rules`` every
second. The stream is produced in chunks of ``STEP`` events, each processed
before the next is sent, as a live stream would be: a label comes at most a
chunk out of its event-time order, so the model learns a change only once its
labels come back, as it would in production.

The drifted stream (:class:`stream.synthetic.WorldConfig`) is stationary up
to ``SHIFT_AT``, then the producer feature ``quality_hint`` shifts (data
drift), then from ``BROKEN_AT`` the producer pipeline is broken (constant
features: the model scores nearly every event positive until the labels of
the broken events come back and it learns the new constant). Negative labels
come after a 30-minute click window, so that lasts about 450 events.

Checked at each boundary, in Prometheus: no drift alert (pending or firing)
and no alert expression true before the drift; the feature drift alert on
``quality_hint`` after the shift; the positive-rate, prediction PSI and
feature drift alerts after the break. The committed ``for:`` durations are
minutes (feature and prediction PSI 15m and 10m), so the test waits for the
positive-rate alert (``for: 2m``) to fire and asserts the others as
``pending`` with their exact rule expressions true for the worker. A
stationary stream of the same length, fed the same way, raises none of them.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streamlearn.metrics.thresholds import AlertThresholds
from streamlearn.stream.config import Settings
from streamlearn.stream.harness import settings_for
from streamlearn.stream.kafka_io import KafkaSink
from streamlearn.stream.produce import event_key, route
from streamlearn.stream.synthetic import WorldConfig, generate_world
from streamlearn.stream.topics import ensure_topics, topic_plan
from streamlearn.stream.worker import Worker

from .test_alerting import get_json, query, scraped, wait_for

pytestmark = pytest.mark.integration

RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "rules" / "streamlearn-alerts.yml"
DRIFT_ALERTS = (
    "StreamlearnPredictionDriftPSI",
    "StreamlearnPositiveRateShift",
    "StreamlearnFeatureDriftPSI",
)
SEED = 8
MONITORING = {
    "features": ("quality_hint", "length"),
    "reference_mode": "trailing",
    "reference_size": 2000,
    "window_size": 1000,
}
SHIFT_AT = 8000
BROKEN_AT = 9000
EVENTS = 9600
CLICK_WINDOW_S = 1800.0
#: Events per produced chunk. Chunks of 1000 events, whose labels come after
#: all of their events, make the model learn in steps and move its scores
#: (prediction PSI 0.36 on the stationary stream in the backtest); 50 keeps
#: the order close to the event-time order of a live stream.
STEP = 50


def rule_exprs() -> dict[str, list[str]]:
    """The committed alert expressions of the drift alerts, by alert name."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    exprs: dict[str, list[str]] = {name: [] for name in DRIFT_ALERTS}
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") in exprs:
                exprs[rule["alert"]].append(rule["expr"])
    assert all(exprs.values()), exprs
    return exprs


def world(drifted: bool) -> list[dict[str, Any]]:
    drift = {"feature_shift_at": SHIFT_AT, "broken_at": BROKEN_AT} if drifted else {}
    config = WorldConfig(events=EVENTS, seed=SEED, click_window_s=CLICK_WINDOW_S, **drift)
    return list(generate_world(config))


def chunks(records: list[dict[str, Any]], until: int, step: int, start: int) -> Iterator[list]:
    """Records from the event ``start`` up to (not including) the event ``until``, by ``step``.

    Each chunk ends just before an event; the labels that come before it belong to it.
    """
    chunk: list[dict[str, Any]] = []
    index = -1
    for record in records:
        if "user_id" in record:
            index += 1
            if index >= until:
                break
            if index > start and (index - start) % step == 0 and chunk:
                yield chunk
                chunk = []
        if index >= start:
            chunk.append(record)
    if chunk:
        yield chunk


class RunningWorker:
    """A worker in a thread, its /metrics scraped by Prometheus, fed chunk by chunk."""

    def __init__(self, settings: Settings, register: Callable[..., str], prometheus: str) -> None:
        self.settings = settings
        self.prometheus = prometheus
        ensure_topics(settings.kafka, topic_plan(settings.kafka))
        self.worker = Worker(settings, name="drift")
        self.target = register(f"127.0.0.1:{self.worker.serve_metrics()}")
        self.sink = KafkaSink(settings.kafka)
        self.topics = {
            "events": settings.kafka.topics.events,
            "labels": settings.kafka.topics.labels,
        }
        self.sent = 0
        self.events = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_for(
            lambda: scraped(prometheus, self.target), 60, f"Prometheus to scrape {self.target}"
        )

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # reported by feed()
            self.error = exc
            raise

    def feed(self, records: list[dict[str, Any]], until: int) -> None:
        """Send the events up to ``until`` in chunks, each processed before the next is sent."""
        for chunk in chunks(records, until, STEP, self.events):
            for record in chunk:
                line = orjson.dumps(record)
                self.sink.send(self.topics[route(line)], event_key(line), line)
            self.sink.flush()
            self.sent += len(chunk)
            self.events += sum(1 for r in chunk if "user_id" in r)
            wait_for(
                lambda: self.error is not None or self.worker.summary.records >= self.sent,
                60,
                f"the worker to process {self.sent} records",
                every=0.02,
            )
            assert self.error is None, self.error
        assert self.worker.processor.events_seen == self.events == until

    def settle(self) -> None:
        """Wait until Prometheus has scraped the worker's state and evaluated the rules on it."""
        expr = f'streamlearn_predictions_total{{target="{self.target}"}}'
        wait_for(
            lambda: [
                r
                for r in query(self.prometheus, expr)["data"]["result"]
                if float(r["value"][1]) >= self.events
            ],
            60,
            f"Prometheus to scrape {self.events} predictions of {self.target}",
            every=0.2,
        )
        time.sleep(2.5)  # two rule evaluations (every 1 s) on the last samples

    def gauge(self, name: str, **labels: str) -> float:
        value = self.worker.registry.get_sample_value(name, labels)
        assert value is not None, (name, labels)
        return value

    def alerts(self) -> list[dict[str, Any]]:
        """The drift alerts of this worker in Prometheus (pending or firing)."""
        alerts = get_json(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]
        return [
            a
            for a in alerts
            if a["labels"].get("alertname") in DRIFT_ALERTS
            and a["labels"].get("target") == self.target
        ]

    def true_exprs(self, exprs: dict[str, list[str]]) -> dict[str, list[dict[str, str]]]:
        """The alert expressions that hold for this worker now, with their series' labels."""
        out: dict[str, list[dict[str, str]]] = {}
        for name, rules in exprs.items():
            for expr in rules:
                for r in query(self.prometheus, expr)["data"]["result"]:
                    if r["metric"].get("target") == self.target:
                        out.setdefault(name, []).append(r["metric"])
        return out

    def close(self) -> None:
        self.worker.stop()
        self.thread.join(timeout=60)
        self.sink.close()
        self.worker.stop_metrics()


@pytest.fixture
def start_worker(
    kafka_bootstrap: str,
    redis_url: str,
    prometheus_url: str,
    scrape_target: Callable[..., str],
    unique_prefix: str,
    redis_client: Any,
) -> Iterator[Callable[[str], RunningWorker]]:
    running: list[RunningWorker] = []

    def start(name: str) -> RunningWorker:
        settings = settings_for(
            kafka_bootstrap,
            redis_url,
            f"{unique_prefix}-{name}",
            partitions=1,
            monitoring=MONITORING,
        )
        running.append(RunningWorker(settings, scrape_target, prometheus_url))
        return running[-1]

    yield start
    for worker in running:
        worker.close()


def firing_states(alerts: list[dict[str, Any]], name: str) -> set[str]:
    return {a["state"] for a in alerts if a["labels"]["alertname"] == name}


def assert_quiet(run: RunningWorker, exprs: dict[str, list[str]], where: str) -> None:
    run.settle()
    assert run.alerts() == [], f"{where}: drift alerts {run.alerts()}"
    assert run.true_exprs(exprs) == {}, f"{where}: alert expressions true"
    for name in ("streamlearn_prediction_psi", "streamlearn_prediction_positive_rate_ratio"):
        assert math.isfinite(run.gauge(name)), f"{where}: {name} has no value yet"


def test_drift_raises_the_drift_alerts_and_a_stationary_stream_does_not(
    start_worker: Callable[[str], RunningWorker], alertmanager_url: str
) -> None:
    exprs = rule_exprs()
    thresholds = AlertThresholds()
    started = time.monotonic()

    drifted = start_worker("drift")
    records = world(drifted=True)

    drifted.feed(records, SHIFT_AT)
    assert_quiet(drifted, exprs, f"before the drift (event {SHIFT_AT})")

    drifted.feed(records, BROKEN_AT)
    drifted.settle()
    assert (
        drifted.gauge("streamlearn_feature_psi", feature="quality_hint") > thresholds.psi_critical
    )
    assert drifted.gauge("streamlearn_feature_psi", feature="length") < thresholds.psi_critical
    true = drifted.true_exprs(exprs)
    assert [m["feature"] for m in true.get("StreamlearnFeatureDriftPSI", [])] == ["quality_hint"]
    alerts = drifted.alerts()
    assert [
        (a["labels"]["feature"], a["state"])
        for a in alerts
        if a["labels"]["alertname"] == "StreamlearnFeatureDriftPSI"
    ] == [("quality_hint", "pending")]

    drifted.feed(records, EVENTS)
    drifted.settle()
    ratio = drifted.gauge("streamlearn_prediction_positive_rate_ratio")
    psi = drifted.gauge("streamlearn_prediction_psi")
    assert ratio > thresholds.positive_rate_ratio_high, ratio
    assert psi > thresholds.psi_critical, psi
    assert drifted.gauge("streamlearn_feature_psi", feature="length") > thresholds.psi_critical
    true = drifted.true_exprs(exprs)
    assert set(true) == set(DRIFT_ALERTS), true
    assert {m["feature"] for m in true["StreamlearnFeatureDriftPSI"]} == {"quality_hint", "length"}
    alerts = drifted.alerts()
    for name in DRIFT_ALERTS:
        assert firing_states(alerts, name) <= {"pending", "firing"}
        assert firing_states(alerts, name), f"{name} not active after the break: {alerts}"
    severities = {
        a["labels"]["severity"]
        for a in alerts
        if a["labels"]["alertname"] == "StreamlearnPredictionDriftPSI"
    }
    assert severities == {"warning", "critical"}
    broken_at = time.monotonic()

    # The same procedure on the stationary stream, meanwhile the positive-rate alert waits.
    flat = start_worker("flat")
    stationary = world(drifted=False)
    for until in (SHIFT_AT, BROKEN_AT, EVENTS):
        flat.feed(stationary, until)
        assert_quiet(flat, exprs, f"stationary stream at event {until}")

    for_seconds = 120  # AlertThresholds().positive_rate_for
    wait_for(
        lambda: "firing" in firing_states(drifted.alerts(), "StreamlearnPositiveRateShift"),
        for_seconds + 30 - (time.monotonic() - broken_at),
        "StreamlearnPositiveRateShift firing",
    )
    params = urllib.parse.urlencode(
        {
            "filter": [
                'alertname="StreamlearnPositiveRateShift"',
                f'target="{drifted.target}"',
            ]
        },
        doseq=True,
    )
    wait_for(
        lambda: get_json(f"{alertmanager_url}/api/v2/alerts?{params}"),
        60,
        "the positive-rate alert in Alertmanager",
    )
    assert flat.alerts() == []
    assert time.monotonic() - started < 240
