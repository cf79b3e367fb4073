"""The main job end to end on the local stack: a sample stream through a worker, then a report.

``streamlearn demo`` starts Kafka, Redis, Prometheus and Alertmanager as local
processes (reusing them when they run), generates a synthetic world, sends it
to fresh topics, runs a worker over it with its ``/metrics`` scraped by
Prometheus, backtests the same file for a report with plots, and prints what
happened and where to look.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.table import Table

from streamlearn.stack.config import StackConfig
from streamlearn.stack.files import write_scrape_target
from streamlearn.stack.supervisor import Stack
from streamlearn.stream.config import Settings
from streamlearn.stream.produce import committed_records

__all__ = ["DemoResult", "demo_key", "demo_settings", "prometheus_value", "read_predictions"]


def demo_key(root: Path) -> bytes:
    """The demo's model signing key, made once and kept (private) under the stack root."""
    path = root / "model.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


#: The demo's decision: a predicted click is right at least half the time (lower bound).
DEMO_PRECISION = 0.5


def demo_settings(stack: StackConfig, run_id: str, metrics_port: int) -> Settings:
    """Settings pointing at the local stack, with topics and keys of this run only."""
    return Settings(
        kafka={
            "bootstrap_servers": stack.kafka_bootstrap,
            "group_id": f"demo-{run_id}",
            "topics": {
                "events": f"demo-{run_id}.events",
                "labels": f"demo-{run_id}.labels",
                "predictions": f"demo-{run_id}.predictions",
                "dead_letter": f"demo-{run_id}.dead-letter",
                "partitions": 4,
            },
            "transactions": True,
        },
        redis={"url": stack.redis_url},
        store={"key_prefix": f"demo-{run_id}"},
        metrics={"port": metrics_port},
        checkpoint={"every_labels": 2000, "every_seconds": 10},
        # The decision is a predicted click: no threshold reaches the default 99.5 %
        # precision of a filter on clicks, so it would decide nothing (the safe fallback).
        decision={"precision_at_least": DEMO_PRECISION},
    )


def prometheus_value(base_url: str, query: str) -> float | None:
    """The first value of an instant query, or None when Prometheus has none."""
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local Prometheus
        body = orjson.loads(response.read())
    results = body.get("data", {}).get("result", [])
    return float(results[0]["value"][1]) if results else None


def read_predictions(
    bootstrap: str, topic: str, count: int = 3
) -> tuple[list[dict[str, Any]], int, int]:
    """The last ``count`` committed predictions, how many there are, and for how many events."""
    last: deque[bytes] = deque(maxlen=count)
    keys: set[bytes] = set()
    total = 0
    for record in committed_records(bootstrap, topic):
        last.append(record.value)
        keys.add(record.key)
        total += 1
    return [orjson.loads(value) for value in last], total, len(keys)


@dataclass
class DemoResult:
    settings: Settings
    stack: StackConfig
    world: Path
    report: Path
    summary: Any
    backtest: dict[str, Any]
    scraped_predictions: float | None
    samples: list[dict[str, Any]]
    published: int
    distinct_events: int
    events: int

    def table(self) -> Table:
        topics = self.settings.kafka.topics
        table = Table(title="streamlearn demo: what happened and where to look", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        rows = [
            ("stream", f"{self.world} ({self.events} events and their labels)"),
            (
                "scored",
                f"{self.published} committed predictions for {self.distinct_events} events",
            ),
            ("learned", f"{self.summary.labels_learned} labels"),
            ("dead letters", str(self.summary.dead_letters or "none")),
            ("checkpoints", str(self.summary.checkpoints)),
            (
                "worker events/s",
                f"{self.summary.events / max(self.summary.busy_seconds, 1e-9):,.0f} while busy",
            ),
            ("predictions topic", f"{topics.predictions} on {self.stack.kafka_bootstrap}"),
            ("dead-letter topic", topics.dead_letter),
            ("Prometheus", f"{self.stack.prometheus_url}/graph"),
            ("  streamlearn_predictions_total", str(self.scraped_predictions)),
            ("Alertmanager", self.stack.alertmanager_url),
            ("alerts received", f"streamlearn alerts list --log {self.stack.alerts_log}"),
            ("Redis", f"{self.stack.redis_url} (keys {self.settings.store.key_prefix}:*)"),
            ("backtest report", f"{self.report / 'report.md'} (PNG plots beside it)"),
        ]
        for name, metrics in self.backtest.get("models", {}).items():
            m = metrics["metrics"]
            rows.append(
                (f"backtest {name}", f"ROC AUC {m['roc_auc']:.3f}, log loss {m['log_loss']:.3f}")
            )
        decisions = self.backtest.get("decisions")
        if decisions:
            policy = decisions["policy"]
            if policy == "precision_at_least":
                policy += f" {self.settings.decision.precision_at_least:g}"
            rows.append(
                (
                    "backtest decisions",
                    f"{policy}: threshold {decisions['threshold']:.3f}, precision lower bound"
                    f" {decisions['precision_lower_bound']:.3f}, recall {decisions['recall']:.3f}",
                )
            )
        for sample in self.samples[:2]:
            rows.append(("sample prediction", orjson.dumps(sample).decode()))
        rows.append(("stop the stack", "streamlearn stack down"))
        for name, value in rows:
            table.add_row(name, value)
        return table


def run_demo(events: int, root: Path | None, metrics_port: int, report_dir: Path) -> DemoResult:
    """Everything ``streamlearn demo`` does; returns what to print."""
    from streamlearn.metrics.instruments import PREDICTIONS
    from streamlearn.stream.backtest import backtest
    from streamlearn.stream.replay import replay
    from streamlearn.stream.report import write_report
    from streamlearn.stream.synthetic import WorldConfig, generate_world
    from streamlearn.stream.topics import ensure_topics, topic_plan
    from streamlearn.stream.ui import console
    from streamlearn.stream.worker import Worker

    config = StackConfig(root=root) if root else StackConfig()
    stack = Stack(config, reporter=lambda message: console.log(message))
    stack.up(alertmanager=True)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    settings = demo_settings(stack.config, run_id, metrics_port)
    data = stack.config.root / "demo"
    data.mkdir(parents=True, exist_ok=True)
    world = data / f"world-{run_id}.jsonl"
    with world.open("wb") as handle:
        for record in generate_world(WorldConfig(events=events, seed=7)):
            handle.write(orjson.dumps(record) + b"\n")
    console.log(f"generated {events} events and their labels in {world}")
    ensure_topics(settings.kafka, topic_plan(settings.kafka))
    replay(world, settings)
    worker = Worker(settings, name="demo", signing_key=demo_key(stack.config.root))
    port = worker.serve_metrics()
    write_scrape_target(stack.config.targets_dir, "demo-worker", f"127.0.0.1:{port}")
    summary = worker.run(idle_timeout_s=5)
    scraped = None
    for _ in range(20):
        scraped = prometheus_value(
            stack.config.prometheus_url,
            f'{PREDICTIONS}{{instance="127.0.0.1:{port}"}}',
        )
        if scraped is not None and scraped >= summary.predictions:
            break
        time.sleep(1)
    worker.stop_metrics()
    report = report_dir / run_id
    report.mkdir(parents=True, exist_ok=True)
    with (report / "predictions.jsonl").open("wb") as predictions:
        result = backtest(world, settings, [settings.model.spec], predictions=predictions)
    write_report(result, report)
    samples, published, distinct = read_predictions(
        stack.config.kafka_bootstrap, settings.kafka.topics.predictions
    )
    return DemoResult(
        settings,
        stack.config,
        world,
        report,
        summary,
        result.summary(),
        scraped,
        samples,
        published,
        distinct,
        events,
    )
