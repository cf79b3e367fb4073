"""Two worker processes of one group run one experiment: one decision, live commands.

Each worker measures the arms on its own partitions; the group decides on the merged
statistics, records the decision once (audit log) and both workers follow it; a
``streamlearn experiment revert ARM`` while they run is followed by both, without a
restart. (The protocol: :mod:`stream.experiment_sync`.)
"""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest
import redis as redis_lib
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.learners.audit import AuditLog
from streamlearn.learners.checkpoint import CheckpointStore
from streamlearn.stream.harness import (
    drain,
    lines_of,
    produce,
    settings_for,
    worker_process,
    write_config,
)
from streamlearn.stream.synthetic import WorldConfig, generate_world

pytestmark = pytest.mark.integration

KEY = "experiment-group-signing-key-0123456789"
ARMS = {"control": 0.5, "broken": 0.25, "other": 0.25}
WORKERS = ("worker-a", "worker-b")


def _world(seed: int, events: int, shift_ms: int = 0) -> list[dict[str, Any]]:
    return [
        {**r, "timestamp": r["timestamp"] + shift_ms}
        for r in generate_world(WorldConfig(events=events, seed=seed))
    ]


def _wait_for(what: str, check: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"no {what} within {timeout_s:.0f} s")


def _experiment_state(client: redis_lib.Redis, prefix: str, group: str, worker: str) -> Any:
    checkpoint = CheckpointStore(client, prefix, group, worker).recover(lambda names: {})
    assert checkpoint is not None, worker
    return checkpoint.state["experiment"]


@pytest.mark.timeout(180)
def test_two_workers_decide_once_for_the_group_and_follow_a_revert_from_the_command_line(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, tmp_path
):
    experiment = {
        "id": "group-61",
        "arms": ARMS,
        "models": {"broken": "tests.unit.stream.factories:always_high"},
        # Only the broken arm (0.99 for every event) predicts positives at 0.95: the
        # guardrail reverts it and nothing else; no significance before the end.
        "guardrails": {"min_predictions": 150, "latency_p99_ratio": None, "threshold": 0.95},
        "min_labels_per_arm": 1_000_000,
    }
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=2,
        kafka={"transactions": True, "max_poll_records": 50, "session_timeout_ms": 6000},
        checkpoint={"every_labels": 100, "every_seconds": 0.5, "registry_poll_seconds": 0.5},
        experiment=experiment,
    )
    group = settings.kafka.group_id
    produce(settings, lines_of(_world(61, 1500)))
    env = {"STREAMLEARN_MODEL_KEY": KEY}
    configs = {name: write_config(settings, tmp_path / f"{name}.yaml") for name in WORKERS}
    processes = {
        name: worker_process(config, "--name", name, "--idle-timeout", "10", env=env)
        for name, config in configs.items()
    }
    logs = {name: config.with_suffix(".log") for name, config in configs.items()}

    def tail(name: str) -> str:
        return logs[name].read_text(errors="replace")[-3000:]

    try:
        audit = AuditLog(redis_client, unique_prefix)

        def reverted_broken() -> bool:
            return any(e["action"] == "revert" and e["arm"] == "broken" for e in audit.entries())

        _wait_for("revert of the broken arm", reverted_broken)
        runner = CliRunner()
        config = str(configs["worker-a"])
        done = runner.invoke(app, ["experiment", "revert", "other", "--config", config])
        assert done.exit_code == 0, done.output
        again = runner.invoke(app, ["experiment", "revert", "other", "--config", config])
        assert again.exit_code == 1  # the experiment has ended: nothing left to revert

        def both_follow() -> bool:
            followed = "the group decided revert other"
            return all(followed in logs[n].read_text(errors="replace") for n in WORKERS)

        # the workers follow at their next look: the later events come after it
        _wait_for("both workers following the revert", both_follow)
        later = _world(62, 600, shift_ms=86_400_000)
        produce(settings, lines_of(later))
        for name, process in processes.items():
            assert process.wait(timeout=120) == 0, tail(name)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()

    entries = AuditLog(redis_client, unique_prefix).entries()
    decided = [(e["action"], e["arm"], e["worker"]) for e in reversed(entries)]
    assert [d[:2] for d in decided] == [("revert", "broken"), ("revert", "other")], decided
    assert decided[0][2] in WORKERS and decided[1][2] == "cli"
    for name in WORKERS:
        state = _experiment_state(redis_client, unique_prefix, group, name)
        assert state["reverted"] == ["broken", "other"] and state["status"] == "reverted", name
        assert [d["action"] for d in state["decisions"]] == ["revert", "revert"]
        assert "the group decided revert other" in logs[name].read_text(errors="replace")
    published = [
        orjson.loads(r.value) for r in drain(kafka_bootstrap, unique_prefix + ".predictions")
    ]
    after = {r["event_id"] for r in later if "user_id" in r}
    served = [p["arm"] for p in published if p["event_id"] in after]
    assert len(served) == len(after) and set(served) == {"control"}

    shown = CliRunner().invoke(
        app, ["experiment", "status", "--json", "--config", str(configs["worker-b"])]
    )
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.output)
    assert view["group"]["status"] == "reverted" and view["group"]["workers"] == list(WORKERS)
    assert [d["action"] for d in view["group"]["decisions"]] == ["revert", "revert"]
    merged = view["group"]["arms"]["control"]["events"]
    assert merged == sum(view[w]["experiment"]["arms"]["control"]["events"] for w in WORKERS)
    table = CliRunner().invoke(app, ["experiment", "status", "--config", str(configs["worker-a"])])
    assert table.exit_code == 0, table.output
    assert "experiment (group)" in table.output and "worker-a, worker-b" in table.output
