"""The API's choice of arm and model: the workers' choice, from their checkpoint record.

The state comes from :class:`stream.worker_arms.WorkerArms` (what a worker checkpoints),
and every arm the API picks is checked against the worker's own
:meth:`stream.experiment_run.ExperimentRun.serving` for the same unit and state.
(The Kafka and Redis side is ``tests/integration/test_serve_arms.py``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamlearn.features.interactions import EntityState, InteractionConfig
from streamlearn.features.schema import Event
from streamlearn.features.vector import FeatureConfig
from streamlearn.learners.checkpoint import Checkpoint
from streamlearn.learners.models import build_model, learn, score
from streamlearn.learners.registry import RegistryError
from streamlearn.metrics.serving import ServeMetrics
from streamlearn.stream.config import Settings
from streamlearn.stream.experiment_run import ExperimentRun
from streamlearn.stream.experiment_sync import apply_command
from streamlearn.stream.model_guard import ModelSlot
from streamlearn.stream.serve import Served
from streamlearn.stream.serve_arms import ArmFollower, score_by_arm
from streamlearn.stream.worker_arms import WorkerArms
from tests.unit.stream.test_experiment_sync import MemoryBoard

ARMS = {"control": 0.6, "tree": 0.2, "other": 0.2}
USERS = [f"user-{n}" for n in range(400)]


def settings(**experiment: Any) -> Settings:
    section = {"id": "exp-7", "arms": ARMS, "models": {"tree": "hoeffding_tree"}, **experiment}
    return Settings(experiment=section)


def worker_arms(config: Settings) -> WorkerArms:
    """A worker's arms, as it starts (nothing checkpointed yet)."""
    champion = ModelSlot(config.model.spec, config.model.build())
    arms = WorkerArms(config, champion, None, CollectorRegistry(), "w-0")
    arms.restore(None)
    return arms


@dataclass
class Info:
    name: str
    version: str
    created_at: str = "2026-12-01T00:00:00+00:00"


class Registry:
    """:meth:`learners.registry.ModelRegistry.load`, in memory; counts the loads."""

    def __init__(self, models: dict[str, tuple[Any, str]]) -> None:
        self.models = models
        self.loads: list[str] = []
        self.fail = False

    def load(self, version: str) -> tuple[Any, Info]:
        if self.fail:
            raise RegistryError(f"version {version} refused")
        self.loads.append(version)
        model, name = self.models[version]
        return model, Info(name, version)


def trained(n: int) -> Any:
    model = build_model("logistic")
    for i in range(n):
        learn(model, {"x": float(i % 3)}, i % 3 == 0, 1.0)
    return model


def champion() -> Served:
    return Served(trained(10), "logistic", "5", "checkpoint", "2026-12-01T00:00:00+00:00")


def checkpoint_of(arms: WorkerArms, version: str = "5", **versions: str) -> Checkpoint:
    """The record a worker writes: its champion's version, ``{arm: version}``, the state."""
    return Checkpoint(version, {"events:0": 10}, 0, dict(versions), arms.state())


def same_arms(follower: ArmFollower, run: ExperimentRun, champion: Served) -> list[str]:
    """Every unit's arm in the API; asserts it is the worker's for the same unit."""
    picked = []
    for user in USERS:
        event = Event(event_id="e", timestamp=0, user_id=user, item_id="i")
        arm, _ = follower.serving(event, champion)
        assert arm == run.serving(event), user
        picked.append(arm)
    return picked


def test_a_running_experiment_serves_each_unit_by_the_workers_assignment() -> None:
    config = settings()
    arms = worker_arms(config)
    registry = Registry({"6": (trained(20), "hoeffding_tree"), "7": (trained(30), "logistic")})
    follower = ArmFollower(config, registry)
    follower.refresh([checkpoint_of(arms, tree="6", other="7")])
    served = champion()
    assert arms.experiment is not None
    picked = same_arms(follower, arms.experiment, served)
    assert set(picked) == set(ARMS)
    assert 0.15 < picked.count("tree") / len(picked) < 0.25
    # each arm's model is the version the checkpoint names; the control is the champion
    for user in USERS[:50]:
        arm, model = follower.serving({"user_id": user}, served)
        expected = {"control": served.version, "tree": "6", "other": "7"}[arm]
        assert model.version == expected
        assert model.source == ("checkpoint" if arm != "control" else served.source)


def test_a_reverted_arm_serves_its_units_by_the_control_as_the_worker_does() -> None:
    config = settings()
    arms = worker_arms(config)
    assert arms.experiment is not None
    arms.experiment.experiment.revert("tree", reason="guardrail")
    follower = ArmFollower(config, Registry({"6": (trained(1), "t"), "7": (trained(2), "o")}))
    follower.refresh([checkpoint_of(arms, tree="6", other="7")])
    picked = same_arms(follower, arms.experiment, champion())
    assert "tree" not in picked and {"control", "other"} == set(picked)
    assert follower.describe(champion())["experiment"]["reverted"] == ["tree"]


def test_a_promoted_arm_serves_everyone_and_a_stopped_experiment_the_control() -> None:
    config = settings()
    arms = worker_arms(config)
    assert arms.experiment is not None
    arms.experiment.experiment.promote("other")
    follower = ArmFollower(config, Registry({"6": (trained(1), "t"), "7": (trained(2), "o")}))
    follower.refresh([checkpoint_of(arms, tree="6", other="7")])
    assert set(same_arms(follower, arms.experiment, champion())) == {"other"}
    described = follower.describe(champion())["experiment"]
    assert (described["status"], described["winner"]) == ("promoted", "other")
    # another worker's newer checkpoint says stopped: the newest record is followed
    later = worker_arms(config)
    assert later.experiment is not None
    later.experiment.experiment.status = "stopped"
    follower.refresh([checkpoint_of(arms, tree="6", other="7"), checkpoint_of(later, "9")])
    assert set(same_arms(follower, later.experiment, champion())) == {"control"}
    assert follower.checkpoint == "9"


def test_a_state_saved_under_another_configuration_starts_again_as_in_the_worker() -> None:
    old = worker_arms(settings(id="exp-6"))
    assert old.experiment is not None
    old.experiment.experiment.revert("tree")
    config = settings()
    follower = ArmFollower(config, None)
    follower.refresh([checkpoint_of(old)])
    restarted = worker_arms(config)
    restarted.restore(checkpoint_of(old))  # the worker's own restore of the same record
    assert restarted.experiment is not None and restarted.experiment.experiment.reverted == []
    assert "tree" in same_arms(follower, restarted.experiment, champion())


def test_before_any_checkpoint_each_arm_is_as_configured() -> None:
    config = settings(models={"tree": "hoeffding_tree", "other": "version:3"})
    registry = Registry({"3": (trained(5), "logistic")})
    follower = ArmFollower(config, registry)
    follower.refresh([])
    tree, other = follower.treatments["tree"], follower.treatments["other"]
    assert (tree.name, tree.source, tree.version) == ("hoeffding_tree", "untrained", "0")
    assert (other.version, other.source) == ("3", "configured")
    # without a registry (no signing key): every arm its spec, untrained
    bare = ArmFollower(config, None)
    bare.refresh([])
    assert {s.source for s in bare.treatments.values()} == {"untrained"}


def test_refresh_loads_only_changed_arms_and_keeps_them_when_the_registry_fails() -> None:
    config = settings()
    arms = worker_arms(config)
    prom = CollectorRegistry()
    registry = Registry({v: (trained(int(v)), "logistic") for v in ("6", "7", "8")})
    follower = ArmFollower(config, registry, ServeMetrics(prom, list(ARMS)))
    follower.refresh([checkpoint_of(arms, tree="6", other="7")])
    follower.refresh([checkpoint_of(arms, tree="6", other="7")])
    assert registry.loads == ["6", "7"]
    follower.refresh([checkpoint_of(arms, "9", tree="8", other="7")])
    assert registry.loads == ["6", "7", "8"] and follower.treatments["tree"].version == "8"
    assert prom.get_sample_value("streamlearn_serve_model_version", {"arm": "tree"}) == 8.0
    assert prom.get_sample_value("streamlearn_serve_model_age_seconds", {"arm": "tree"}) > 0
    registry.fail = True
    follower.refresh([checkpoint_of(arms, "11", tree="10", other="7")])
    assert follower.treatments["tree"].version == "8" and follower.last_error
    assert follower.checkpoint == "9"
    assert prom.get_sample_value("streamlearn_serve_refresh_failures_total") == 1.0


def test_an_arm_without_a_model_is_served_by_the_control() -> None:
    follower = ArmFollower(settings(), None)  # not refreshed yet: no treatment loaded
    served = champion()
    assert {follower.serving({"user_id": u}, served) for u in USERS} == {("control", served)}


def test_score_by_arm_scores_each_event_with_its_arms_model() -> None:
    empty = [(k, EntityState.empty(InteractionConfig())) for k in ("user", "item", "user_item")]
    events = [Event(event_id="r", timestamp=0, user_id="u", item_id=f"i{n}") for n in range(5)]
    a = Served(trained(40), "logistic", "3", "checkpoint")
    b = Served(trained(7), "logistic", "4", "checkpoint")
    picks = [("a", a), ("b", b), ("a", a), ("b", b), ("a", a)]
    scores = score_by_arm(picks, events, [empty] * 5, FeatureConfig())
    from streamlearn.features.vector import features_of

    x = features_of(events[0], list(empty), FeatureConfig())
    assert scores == [score(m.model, x) for _, m in picks]
    assert scores[0] != scores[1]


def test_the_follower_needs_an_experiment() -> None:
    with pytest.raises(ValueError, match="experiment"):
        ArmFollower(Settings(), None)


@pytest.mark.parametrize("unit_field", ["user_id", "item_id", "team"])
def test_serving_all_asks_each_unit_once_and_gives_each_events_own_arm(unit_field: str) -> None:
    config = settings(unit_field=unit_field)
    arms = worker_arms(config)
    follower = ArmFollower(config, Registry({"6": (trained(1), "t"), "7": (trained(2), "o")}))
    follower.refresh([checkpoint_of(arms, tree="6", other="7")])
    served = champion()
    events = [
        Event(event_id="r", timestamp=0, user_id=f"u{n % 30}", item_id=f"i{n}",
              context={"team": f"t{n % 7}"} if n % 5 else {})
        for n in range(300)
    ]  # fmt: skip
    picks = follower.serving_all(events, served)
    assert arms.experiment is not None
    assert [arm for arm, _ in picks] == [arms.experiment.serving(e) for e in events]
    assert picks == [follower.serving(e, served) for e in events]
    assert len({arm for arm, _ in picks}) == 3


def test_the_groups_recorded_decision_is_followed_before_any_checkpoint_has_it() -> None:
    """A revert given on the command line (or decided by the group) is served at once,
    as the workers follow it, though the newest checkpoint still says running."""
    config = settings()
    assert config.experiment is not None
    arms = worker_arms(config)
    board = MemoryBoard()
    registry = Registry({"6": (trained(1), "t"), "7": (trained(2), "o")})
    follower = ArmFollower(config, registry, board=board)
    follower.refresh([checkpoint_of(arms, tree="6", other="7")])
    assert "tree" in same_arms(follower, follower.run, champion())
    apply_command(board, config.experiment.decision_config(), "revert", "tree")
    follower.refresh([checkpoint_of(arms, tree="6", other="7")])
    picked = same_arms(follower, follower.run, champion())
    assert "tree" not in picked and set(picked) == {"control", "other"}
    assert follower.describe(champion())["experiment"]["reverted"] == ["tree"]
