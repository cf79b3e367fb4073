"""An experiment started from the command line on a running worker, on the real stack.

A worker runs without an experiment; ``streamlearn experiment start`` records one for
the group; the worker takes its arm at a checkpoint boundary, serves and learns it,
is killed (``kill -9``) and restarted with the same configuration (no ``experiment:``
section): the experiment and the arm's model come back from its checkpoint and the
group's record. Every event has exactly one committed prediction, and each label is
learned once per arm. ``experiment stop`` ends the started experiment for the group.
(The protocol: :mod:`stream.experiment_record`.)
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import orjson
import pytest
import redis as redis_lib
import yaml
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.learners.assignment import Assignment
from streamlearn.learners.audit import AuditLog
from streamlearn.learners.checkpoint import CheckpointStore
from streamlearn.learners.registry import ModelRegistry
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

KEY = "experiment-start-signing-key-0123456789"
ARMS = {"champion": 0.5, "tree": 0.5}


def _world(seed: int, events: int, shift_ms: int = 0) -> list[dict[str, Any]]:
    return [
        {**r, "timestamp": r["timestamp"] + shift_ms}
        for r in generate_world(WorldConfig(events=events, seed=seed))
    ]


def _wait_for(what: str, check: Any, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout_s:.0f} s")


def _checkpoint(client: redis_lib.Redis, prefix: str, group: str) -> Any:
    return CheckpointStore(client, prefix, group, "worker-0").recover(lambda names: {})


@pytest.mark.timeout(300)
def test_a_started_experiment_is_followed_by_a_running_worker_and_survives_kill_9(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, tmp_path
):
    settings = settings_for(
        kafka_bootstrap,
        redis_url,
        unique_prefix,
        partitions=2,
        kafka={
            "transactions": True,
            "max_poll_records": 50,
            "session_timeout_ms": 6000,
            "static_membership": True,
        },
        checkpoint={"every_labels": 100, "every_seconds": 0.5, "registry_poll_seconds": 0.5},
    )
    group = settings.kafka.group_id
    before = _world(71, 600)
    labels_before = sum(1 for r in before if "user_id" not in r)
    registry = ModelRegistry(redis_client, unique_prefix, KEY.encode())
    produce(settings, lines_of(before))
    config = write_config(settings, tmp_path / "worker.yaml")
    log = config.with_suffix(".log")
    env = {"STREAMLEARN_MODEL_KEY": KEY}
    runner = CliRunner()
    process = worker_process(config, "--idle-timeout", "120", env=env)
    try:

        def read_before() -> bool:
            checkpoint = _checkpoint(redis_client, unique_prefix, group)
            if checkpoint is None:
                return False
            return registry.info(checkpoint.version).labels_learned == labels_before

        _wait_for("the first events checkpointed", read_before)
        assert _checkpoint(redis_client, unique_prefix, group).state.get("experiment") is None

        bad = runner.invoke(
            app, ["experiment", "start", "--arm", "tree=nonsense", "--config", str(config)]
        )
        assert bad.exit_code == 2 and "experiment model of arm 'tree'" in bad.output, bad.output
        definition = {
            "id": "started-71",
            "arms": ARMS,
            "models": {"tree": "hoeffding_tree"},
            # no decision moves a unit to another arm: every event is served by its arm
            "guardrails": {"latency_p99_ratio": None, "positive_rate_shift": None},
            "min_labels_per_arm": 1_000_000,
        }
        (tmp_path / "experiment.yaml").write_text(yaml.safe_dump({"experiment": definition}))
        options = ["--file", str(tmp_path / "experiment.yaml")]
        started = runner.invoke(app, ["experiment", "start", *options, "--config", str(config)])
        assert started.exit_code == 0, started.output
        again = runner.invoke(
            app, ["experiment", "start", "--arm", "other=arf", "--config", str(config)]
        )
        assert again.exit_code == 1 and "experiment stop" in again.output, again.output
        assert "'started-71'" in again.output

        joined = "experiment started-71 started for the group"
        _wait_for("the worker taking the arm", lambda: joined in log.read_text(errors="replace"))
        after = _world(72, 3000, shift_ms=86_400_000)
        produce(settings, lines_of(after))

        def arm_learned() -> bool:
            shown = runner.invoke(app, ["experiment", "status", "--json", "--config", str(config)])
            assert shown.exit_code == 0, shown.output
            view = json.loads(shown.output)
            arms = view.get("worker-0", {}).get("experiment", {}).get("arms", {})
            return set(arms) == set(ARMS) and arms["tree"]["labels"] > 0

        _wait_for("the arm in the worker's checkpoint", arm_learned)
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        process.kill()  # SIGKILL, mid-stream
        process.wait(timeout=30)
        process = worker_process(config, "--idle-timeout", "4", env=env)
        assert process.wait(timeout=200) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if process.poll() is None:
            process.kill()

    published = [
        orjson.loads(r.value) for r in drain(kafka_bootstrap, unique_prefix + ".predictions")
    ]
    events = {r["event_id"]: r for r in before + after if "user_id" in r}
    per_event = Counter(p["event_id"] for p in published)
    assert set(per_event) == set(events) and set(per_event.values()) == {1}
    later = {r["event_id"] for r in after if "user_id" in r}
    served = [p for p in published if p["event_id"] in later]
    assignment = Assignment("started-71", ARMS, "user_id")
    assert all(p["arm"] == assignment.arm_for(events[p["event_id"]]) for p in served)
    assert {p["arm"] for p in served} == set(ARMS)
    assert all(p.get("arm") is None for p in published if p["event_id"] not in later)

    checkpoint = _checkpoint(redis_client, unique_prefix, group)
    assert checkpoint.state["experiment"]["config"]["id"] == "started-71"
    versions = {"champion": checkpoint.version, **checkpoint.arms}
    learned = {arm: registry.load(v)[1].labels_learned for arm, v in versions.items()}
    labels_after = sum(1 for r in after if "user_id" not in r)
    assert learned == {"champion": labels_before + labels_after, "tree": labels_after}
    assert "its configuration changed" not in log.read_text(errors="replace")

    stopped = runner.invoke(app, ["experiment", "stop", "--config", str(config)])
    assert stopped.exit_code == 0 and "experiment started-71: stop" in stopped.output
    shown = runner.invoke(app, ["experiment", "status", "--json", "--config", str(config)])
    assert json.loads(shown.output)["group"]["status"] == "stopped"
    history = runner.invoke(app, ["model", "history", "--json", "--config", str(config)], env=env)
    assert history.exit_code == 0, history.output
    actions = [(d["action"], d["worker"]) for d in json.loads(history.output)["decisions"]]
    assert actions == [("stop", "cli"), ("start", "cli")], actions
    entry = AuditLog(redis_client, unique_prefix).entries()[-1]
    assert entry["experiment"] == "started-71" and entry["definition"]["models"] == {
        "tree": "hoeffding_tree"
    }
    # the same definition again would meet its old decisions: another id is asked for
    reused = runner.invoke(app, ["experiment", "start", *options, "--config", str(config)])
    assert reused.exit_code == 2 and "another id (--id)" in reused.output, reused.output
    # another experiment may start once this one stopped
    other = ["--arm", "other=logistic", "--id", "started-72", "--config", str(config)]
    assert runner.invoke(app, ["experiment", "start", *other]).exit_code == 0


@pytest.mark.timeout(240)
def test_a_retrained_version_is_started_as_a_challenger_on_the_workers_of_the_group(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, tmp_path
):
    env = {"STREAMLEARN_MODEL_KEY": KEY}
    first = _world(81, 1500)
    second = _world(82, 1000, shift_ms=86_400_000)
    sections = {
        "kafka": {"transactions": True, "max_poll_records": 100},
        "checkpoint": {"every_labels": 200, "every_seconds": 1.0},
    }
    settings = settings_for(kafka_bootstrap, redis_url, unique_prefix, partitions=2, **sections)
    topics = settings.kafka.topics.model_copy(update={"examples": f"{unique_prefix}.examples"})
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topics": topics})}
    )
    produce(settings, lines_of(first))
    config = write_config(settings, tmp_path / "worker.yaml")
    worker = worker_process(config, "--idle-timeout", "4", env=env)
    assert worker.wait(timeout=120) == 0, (tmp_path / "worker.log").read_text()[-3000:]

    args = ["model", "train", "--from-log", "--since", "30d", "--json", "--start"]
    args += ["--challenger", "retrained", "--share", "0.5", "--config", str(config)]
    trained = CliRunner().invoke(app, args, env=env)
    assert trained.exit_code == 0, trained.output
    version = json.loads(trained.stdout)["registered"]
    again = CliRunner().invoke(app, args, env=env)  # the first one runs: not started
    assert again.exit_code == 1 and "experiment stop" in again.output, again.output

    produce(settings, lines_of(second))
    worker = worker_process(config, "--idle-timeout", "4", env=env)
    assert worker.wait(timeout=120) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    published = [
        orjson.loads(r.value) for r in drain(kafka_bootstrap, f"{unique_prefix}.predictions")
    ]
    per_event = Counter(p["event_id"] for p in published)
    assert set(per_event.values()) == {1}
    assert len(per_event) == sum(1 for r in first + second if "user_id" in r)
    later = [p for p in published if p["event_id"].startswith("ev-82-")]
    served = [int(p["model_version"]) for p in later if p.get("arm") == "retrained"]
    assert served and served[0] == int(version) and min(served) == int(version)
    starts = [e for e in AuditLog(redis_client, unique_prefix).entries() if e["action"] == "start"]
    assert [e["experiment"] for e in starts] == [f"retrain-v{version}"]
