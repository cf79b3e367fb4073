"""The HTTP API serves an experiment's arms as the workers do, on the real Kafka and Redis.

A worker with an ``ab`` experiment learns a synthetic world and checkpoints every arm;
the API then serves each user by the same arm, with the arm's checkpointed version,
and its score equals that version's score of the same features.
"""

from __future__ import annotations

import httpx
import redis

from streamlearn.features.interactions import entity_ids
from streamlearn.features.redis_store import RedisStore
from streamlearn.features.schema import Event
from streamlearn.features.vector import features_of
from streamlearn.learners.assignment import Assignment
from streamlearn.learners.models import score
from streamlearn.learners.registry import ModelRegistry
from streamlearn.stream.config import Settings
from streamlearn.stream.config.experiment import ExperimentSettings
from streamlearn.stream.experiment_record import RecordStore, start_experiment
from streamlearn.stream.experiment_sync import apply_command
from streamlearn.stream.harness import settings_for
from streamlearn.stream.synthetic import WorldConfig, generate_world
from tests.integration.pipeline import wait_for
from tests.integration.serving import api_server, checkpointed_worker

KEY = b"serve arms integration key, 32 b"
ARMS = {"control": 0.5, "treatment": 0.5}
EXPERIMENT = {
    "id": "ab-serve",
    "arms": ARMS,
    # each arm learns only its own units' labels, so the two models differ
    "learn": "own_arm",
    # no decision within the test: every unit stays in its assigned arm
    "guardrails": {"latency_p99_ratio": None, "positive_rate_shift": None},
    "min_labels_per_arm": 1_000_000,
}


def expected_score(
    client: redis.Redis, settings: Settings, version: str, line: dict
) -> tuple[float, float | None]:
    """The score of registry ``version`` for ``line`` given the state in Redis now, and
    the seconds since its user's last event (None: never seen)."""
    model, _ = ModelRegistry(client, settings.store.key_prefix, KEY).load(version)
    store = RedisStore(client, settings.store, settings.features.interactions)
    event = Event.model_validate(line)
    states = [
        (kind, store.state(kind, entity))
        for kind, entity in entity_ids(event.user_id, event.item_id, event.author_id)
    ]
    user = dict(states)["user"]
    seen = (event.timestamp - user.last_ms) / 1000 if user.count else None
    return score(model, features_of(event, states, settings.features)), seen


def test_the_api_serves_each_unit_by_its_arm_with_the_arms_checkpointed_model(
    kafka_bootstrap: str, redis_url: str, redis_client: redis.Redis, unique_prefix: str,
    make_topics,
) -> None:  # fmt: skip
    make_topics(events=1, labels=1, predictions=1, **{"dead-letter": 1})
    settings = settings_for(
        kafka_bootstrap, redis_url, unique_prefix, partitions=1,
        checkpoint={"every_labels": 100, "every_seconds": 2},
        serve={"refresh_seconds": 0.2}, experiment=EXPERIMENT,
    )  # fmt: skip
    lines = list(generate_world(WorldConfig(events=800, seed=17, users=30, items=40)))
    checkpoint = checkpointed_worker(settings, lines, redis_client, KEY)
    assert "treatment" in checkpoint.arms, checkpoint
    versions = {"control": checkpoint.version, "treatment": checkpoint.arms["treatment"]}
    assert checkpoint.state["experiment"]["status"] == "running"

    assignment = Assignment(EXPERIMENT["id"], ARMS)
    events = [line for line in lines if "user_id" in line]
    last = events[-1]["timestamp"]
    probes = {}
    for line in reversed(events):  # each arm's user with the most recent history
        arm = assignment.arm_of(line["user_id"])
        probes.setdefault(arm, {**line, "event_id": f"probe-{arm}", "timestamp": last + 5_000})
    assert set(probes) == set(ARMS)
    treated = probes["treatment"]
    rank = {
        "user_id": treated["user_id"],
        "timestamp": last + 5_000,
        "candidates": [{"item_id": line["item_id"]} for line in events[-6:]],
    }
    with api_server(settings, KEY) as url:
        ready = httpx.get(f"{url}/readyz").json()
        answers = {arm: httpx.post(f"{url}/score", json=probe) for arm, probe in probes.items()}
        ranked = httpx.post(f"{url}/rank", json=rank)
        metrics = httpx.get(f"{url}/metrics").text

    assert {arm: ready["arms"][arm]["version"] for arm in ARMS} == versions, ready
    assert ready["arms"]["treatment"]["source"] == "checkpoint"
    assert ready["experiment"]["status"] == "running"
    assert ready["experiment"]["checkpoint"] == checkpoint.version
    scores = {}
    for arm, response in answers.items():
        body = response.json()
        assert response.status_code == 200, body
        assert (body["arm"], body["model_version"]) == (arm, versions[arm])
        expected, seen = expected_score(redis_client, settings, versions[arm], probes[arm])
        assert body["score"] != 0.5 and abs(body["score"] - expected) <= 1e-12, (arm, body)
        assert seen is not None and body["freshness_s"]["user"] == seen
        scores[arm] = body["score"]
    # the other arm's model would have scored the treatment's probe differently
    other, _ = expected_score(redis_client, settings, versions["control"], treated)
    assert other != scores["treatment"]

    body = ranked.json()
    assert ranked.status_code == 200, body
    assert (body["arm"], body["model_version"]) == ("treatment", versions["treatment"])
    for item in body["items"]:
        line = {"event_id": "x", "timestamp": last + 5_000, "user_id": treated["user_id"],
                "item_id": item["item_id"]}  # fmt: skip
        expected, _ = expected_score(redis_client, settings, versions["treatment"], line)
        assert abs(item["score"] - expected) <= 1e-12
    for arm, version in versions.items():
        assert f'streamlearn_serve_model_version{{arm="{arm}"}} {float(version)}' in metrics
        assert f'streamlearn_serve_model_age_seconds{{arm="{arm}"}}' in metrics


def test_the_api_serves_the_arms_of_an_experiment_started_while_it_runs(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str
) -> None:
    """``experiment start`` on a running API: at its next refresh each unit is served by
    its arm of the started experiment (the treatment untrained until a worker checkpoints
    it), as the workers serve it; ``experiment stop`` leaves every unit to the control."""
    settings = settings_for(
        "127.0.0.1:1", redis_url, unique_prefix, partitions=1, serve={"refresh_seconds": 0.1}
    )
    started = ExperimentSettings(
        id="started-in-api", arms=ARMS, models={"treatment": "hoeffding_tree"}
    )
    at = 1_790_000_000_000
    probes = [
        {"event_id": f"p{n}", "timestamp": at, "user_id": f"u{n}", "item_id": "i"}
        for n in range(40)
    ]
    assignment = Assignment(started.id, ARMS)
    store = RecordStore(redis_client, settings.store.key_prefix, settings.kafka.group_id)
    with api_server(settings, KEY) as url:
        before = httpx.post(f"{url}/score", json=probes[0]).json()
        start_experiment(store, started)
        wait_for(lambda: "arms" in httpx.get(f"{url}/readyz").json(), 10, "the started arms")
        answers = [httpx.post(f"{url}/score", json=probe).json() for probe in probes]
        ready = httpx.get(f"{url}/readyz").json()
        apply_command(store.board(started), started.decision_config(), "stop", None)
        wait_for(
            lambda: httpx.get(f"{url}/readyz").json()["experiment"]["status"] == "stopped",
            10,
            "the stop",
        )
        stopped = [httpx.post(f"{url}/score", json=probe).json() for probe in probes]

    assert before.get("arm") is None, before
    assert all("arm" in a for a in answers), answers[:2]
    assert [a["arm"] for a in answers] == [assignment.arm_of(p["user_id"]) for p in probes]
    assert {a["arm"] for a in answers} == set(ARMS)
    assert ready["arms"]["treatment"]["source"] == "untrained", ready
    assert {a["arm"] for a in stopped} == {"control"}
