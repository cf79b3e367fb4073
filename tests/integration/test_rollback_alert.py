"""A worker's automatic rollback reaches a webhook through the real Alertmanager.

The worker's arms (:class:`~stream.worker_arms.WorkerArms` with a ``rollback`` section:
the live model and its frozen last-known-good copy) serve their series on a ``/metrics``
endpoint that the session Prometheus scrapes with the committed
``deploy/prometheus/rules``. The live model turns bad, the rollback rule decides on
the labels, the run puts the copy back and the worker records the decision, as it does
after a batch; ``StreamlearnModelRolledBack`` then fires in Prometheus, goes through the
session Alertmanager (the committed routing) and reaches the stack's alert receiver, a
webhook, whose log ``streamlearn alerts list --json`` prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streamlearn.stream.config import Settings
from streamlearn.stream.model_guard import ModelSlot
from streamlearn.stream.worker_arms import WorkerArms
from tests.unit.stream.factories import Constant

from .pipeline import wait_for
from .test_alerting import MetricsEndpoint, Received, firing, in_alertmanager, scraped

ALERT = "StreamlearnModelRolledBack"


@pytest.fixture
def arms() -> Iterator[tuple[WorkerArms, MetricsEndpoint]]:
    config = Settings(rollback={"min_labels": 200, "min_labels_after_rollback": 200})
    # a version that has learned: the copy is a known-good version from the start
    live = ModelSlot("live", Constant(0.2), "logistic", version="3", labels_learned=5000)
    registry = CollectorRegistry()
    arms = WorkerArms(config, live, None, registry, "worker-0")
    arms.restore(None)
    endpoint = MetricsEndpoint(registry)
    yield arms, endpoint
    endpoint.close()


@pytest.mark.timeout(120)
def test_a_rollback_fires_its_alert_through_alertmanager_to_the_webhook(
    prometheus_url: str,
    alertmanager_url: str,
    alert_log: Path,
    scrape_target: Callable[..., str],
    arms: tuple[WorkerArms, MetricsEndpoint],
) -> None:
    worker_arms, endpoint = arms
    guard = worker_arms.rollback
    assert guard is not None
    target = scrape_target(endpoint.address)
    wait_for(lambda: scraped(prometheus_url, target), 60, f"Prometheus to scrape {target}")
    time.sleep(2)  # the decisions counter's zero is scraped before the rollback

    live, copy = worker_arms.slots
    assert copy.name == guard.reference
    live.model = Constant(0.9)  # broken: a positive score for every event
    decisions = []
    for batch in range(10):
        for i in range(100):
            y = (batch * 100 + i) % 5 == 0  # 20 % positive
            scores = {live.name: 0.9, copy.name: 0.2}
            guard.observe_scored(scores, 1_000 * (batch * 100 + i))
            guard.observe_label(scores, y)
        decision = guard.after_batch(worker_arms.slots, (batch + 1) * 100)
        if decision is not None:
            decisions.append(decision)
            break
    assert [d.action for d in decisions] == ["rollback"]
    worker_arms.record(decisions)
    assert live.version == "3" and live.model is not copy.model

    alert = wait_for(
        lambda: firing(prometheus_url, ALERT, target), 60, f"{ALERT} firing in Prometheus"
    )[0]
    assert alert["labels"]["severity"] == "critical"
    wait_for(lambda: in_alertmanager(alertmanager_url, ALERT, target), 30, "it in Alertmanager")
    received = Received(alert_log)
    note = wait_for(
        lambda: received.alerts(ALERT, target, "firing"), 30, "the notification at the webhook"
    )[0]
    assert note["annotations"]["summary"].startswith("The live model of")
    listed = [
        a
        for a in received.listed()
        if a["labels"].get("alertname") == ALERT and a["labels"].get("target") == target
    ]
    assert listed and listed[0]["status"] == "firing"
