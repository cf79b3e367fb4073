"""Decisions on the real stack: the predictions topic and the training log carry each
event's decision, holdout flag and propensity, and Prometheus has the policy's gauges."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from streamlearn.stream.datasets import START_MS
from streamlearn.stream.harness import drain, lines_of, produce, settings_for
from streamlearn.stream.worker import Worker

from .pipeline import wait_for
from .test_alerting import query, scraped

pytestmark = pytest.mark.integration
EVENTS = 3_000

GAUGES = (
    "streamlearn_decision_threshold",
    "streamlearn_decision_precision_lower_bound",
    "streamlearn_decision_recall",
    "streamlearn_holdout_precision",
    "streamlearn_holdout_recall",
)


def test_decisions_holdout_and_propensities_reach_kafka_and_prometheus(
    kafka_bootstrap: str,
    redis_url: str,
    unique_prefix: str,
    prometheus_url: str,
    scrape_target: Callable[..., str],
) -> None:
    records = mail(EVENTS)
    examples_topic = f"{unique_prefix}.examples"
    decision = {
        "policy": "precision_at_least",
        "precision_at_least": 0.9,
        "confidence": 0.9,
        "min_labels": 200,
        "min_positives": 10,
        "update_every": 100,
        "precision_window": 1000,
        "holdout_fraction": 0.2,
        "propensity_weighting": True,
    }
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, 2, decision=decision)
    topics = settings.kafka.topics.model_copy(update={"examples": examples_topic})
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topics": topics})}
    )
    produce(settings, lines_of(records))

    worker = Worker(settings, name="decisions")
    target = scrape_target(f"127.0.0.1:{worker.serve_metrics()}")
    try:
        worker.run(idle_timeout_s=4.0)
        threshold = worker.processor.decider.threshold
        assert threshold < 1.0, "the policy fitted no threshold"

        topic = settings.kafka.topics.predictions
        predictions = [orjson.loads(r.value) for r in drain(kafka_bootstrap, topic)]
        assert len(predictions) == EVENTS
        held = [p for p in predictions if p["holdout"]]
        assert 0.1 < len(held) / len(predictions) < 0.3  # 20 % of the users
        blocked = [p for p in predictions if p["decision"]]
        assert blocked and all(not p["holdout"] and p["propensity"] == 0.8 for p in blocked)
        # a held-out event the policy would block is served, with the holdout's propensity
        assert any(p["propensity"] == 0.2 and not p["decision"] for p in held)
        assert {p["propensity"] for p in predictions} <= {1.0, 0.8, 0.2}

        examples = [orjson.loads(r.value) for r in drain(kafka_bootstrap, examples_topic)]
        assert len(examples) == worker.processor.slots[0].labels_learned > 0
        assert all({"decision", "holdout", "propensity"} <= set(e) for e in examples)
        by_id = {p["event_id"]: p for p in predictions}
        for e in examples:
            p = by_id[e["event_id"]]
            assert (e["decision"], e["holdout"], e["propensity"]) == (
                p["decision"], p["holdout"], p["propensity"]
            )  # fmt: skip
        assert any(e["holdout"] and e["propensity"] == 0.2 for e in examples)

        wait_for(lambda: scraped(prometheus_url, target), 60, f"Prometheus to scrape {target}")

        def gauges() -> dict[str, float] | None:
            values: dict[str, float] = {}
            for name in GAUGES:
                result = query(prometheus_url, f'{name}{{target="{target}"}}')["data"]["result"]
                if not result:
                    return None
                values[name] = float(result[0]["value"][1])
            final = values["streamlearn_decision_threshold"] == pytest.approx(threshold)
            return values if final else None  # a scrape of the end of the run

        seen = wait_for(gauges, 60, "the decision gauges in Prometheus")
        assert seen["streamlearn_decision_precision_lower_bound"] >= 0.9
        assert 0.0 < seen["streamlearn_decision_recall"] <= 1.0
    finally:
        worker.stop_metrics()


def mail(events: int, seed: int = 5) -> list[dict[str, Any]]:
    """Mail one second apart, a third of it spam (``x`` higher), each labelled a second later."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for i in range(events):
        spam = rng.random() < 1 / 3
        event_id, timestamp = f"mail-{i}", START_MS + i * 1000
        records.append(
            {
                "event_id": event_id,
                "timestamp": timestamp,
                "user_id": f"u{rng.randrange(500)}",
                "item_id": "mail",
                "features": {"x": round(rng.gauss(3.0 if spam else 0.0, 1.0), 4)},
            }
        )
        records.append({"event_id": event_id, "timestamp": timestamp + 1500, "label": spam})
    records.sort(key=lambda r: r["timestamp"])
    return records
