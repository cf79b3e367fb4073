"""The experiment's arms in the HTTP API: each request served by its unit's arm, as the workers do.

With an ``experiment`` section a worker serves each event by the arm of its unit
(:class:`stream.experiment_run.ExperimentRun.serving`: the stable hash of
:class:`learners.assignment.Assignment`, then the decisions taken so far: a reverted
arm's units go to the control, a promoted arm serves everyone, a stopped experiment
serves the control) and checkpoints every arm beside its champion: the checkpoint
record holds ``arms: {arm: version}`` and the experiment's state. :class:`ArmFollower`
serves the same way from the same record:

- the **decisions** are the group's recorded decision state, which every worker follows
  (:mod:`stream.experiment_sync`: one decision for the group, and the live
  ``streamlearn experiment revert|promote|stop``), on the newest confirmed
  checkpoint's experiment state, restored as the worker restores it
  (:func:`restored_experiment`: the saved state when its configuration is the
  configured one, else a fresh start); the arm of a request is asked of an
  :class:`~stream.experiment_run.ExperimentRun` holding it: the worker's own code, so
  the API and the workers agree for every unit;
- each **treatment's model** is the registry version that checkpoint names for it;
  before any checkpoint has the arm, the arm as configured (``experiment.models``: a
  registry version, or a spec served untrained, as a worker starts it);
- the **control** is the champion the :class:`stream.serve.ModelFollower` serves.

Each refresh (every ``serve.refresh_seconds``, beside the champion's) reads the
checkpoints the champion's refresh found, and loads only the arms whose version
changed; a failure keeps every arm and the decisions as they were.

Examples
--------
>>> from streamlearn.stream.config import Settings
>>> settings = Settings(experiment={"id": "e", "arms": {"control": 0.5, "tree": 0.5},
...                                 "models": {"tree": "hoeffding_tree"}})
>>> arms = ArmFollower(settings, None)
>>> arms.refresh([])
>>> champion = Served(settings.model.build(), "logistic")
>>> run = ExperimentRun(settings.experiment.decision_config())
>>> picks = [arms.serving({"user_id": f"u{n}"}, champion) for n in range(200)]
>>> all(arm == run.serving({"user_id": f"u{n}"}) for n, (arm, _) in enumerate(picks))
True
>>> sorted({(arm, served.name, served.source) for arm, served in picks})
[('control', 'logistic', 'untrained'), ('tree', 'hoeffding_tree', 'untrained')]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import redis

from streamlearn.features.interactions import EntityState
from streamlearn.features.schema import Event
from streamlearn.features.vector import FeatureConfig
from streamlearn.learners.assignment import unit_of
from streamlearn.learners.checkpoint import Checkpoint
from streamlearn.learners.experiment import Experiment, ExperimentConfig
from streamlearn.learners.experiment_group import adopt
from streamlearn.learners.registry import RegistryError
from streamlearn.metrics.serving import ServeMetrics
from streamlearn.stream.config import Settings
from streamlearn.stream.experiment_run import ExperimentRun
from streamlearn.stream.experiment_sync import Board
from streamlearn.stream.serve import Served, score_events

__all__ = ["ArmFollower", "newest", "restored_experiment", "score_by_arm"]

log = logging.getLogger(__name__)

#: An arm and the model serving it (arm None: no experiment).
Pick = tuple[str | None, Served]


class _Models(Protocol):
    """The registry call of the arms (:meth:`learners.registry.ModelRegistry.load`)."""

    def load(self, version: str) -> tuple[Any, Any]: ...


def newest(checkpoints: Sequence[Checkpoint]) -> Checkpoint | None:
    """The newest checkpoint: the one whose champion version is the highest.

    >>> newest([Checkpoint("9"), Checkpoint("12"), Checkpoint("10")]).version
    '12'
    >>> newest([]) is None
    True
    """
    return max(checkpoints, key=lambda c: int(c.version), default=None)


def restored_experiment(config: ExperimentConfig, saved: Mapping[str, Any] | None) -> Experiment:
    """The experiment as a worker of ``config`` restores it from its checkpoint's state
    (:meth:`stream.worker_arms.WorkerArms.restore`): the saved state when it was saved
    under the same configuration, else a fresh start.

    >>> config = ExperimentConfig(id="e", arms={"a": 0.5, "b": 0.5})
    >>> saved = Experiment(config)
    >>> _ = saved.revert("b")
    >>> restored_experiment(config, saved.to_dict()).reverted
    ['b']
    >>> other = ExperimentConfig(id="e2", arms={"a": 0.5, "b": 0.5})
    >>> restored_experiment(other, saved.to_dict()).reverted
    []
    >>> restored_experiment(config, None).status
    'running'
    """
    if saved is not None and ExperimentConfig.model_validate(saved["config"]) == config:
        return Experiment.from_dict(saved)
    return Experiment(config)


class ArmFollower:
    """The experiment's arms as the workers serve them; see the module docstring.

    Parameters
    ----------
    settings
        The API's settings; ``experiment`` must be set.
    registry
        The model registry (None: no signing key, every arm its spec untrained).
    metrics
        Where each treatment's served age and version go (``arm`` label).
    """

    def __init__(
        self,
        settings: Settings,
        registry: _Models | None,
        metrics: ServeMetrics | None = None,
        board: Board | None = None,
    ) -> None:
        if settings.experiment is None:
            raise ValueError("ArmFollower needs an experiment section")
        self.section = settings.experiment
        self.model = settings.model
        self.registry = registry
        self.metrics = metrics
        #: The group's recorded decision (:mod:`stream.experiment_sync`), which the
        #: workers follow: it is newer than any one worker's checkpoint.
        self.board = board
        self.run = ExperimentRun(self.section.decision_config(), self.section.learn, False)
        #: Each treatment's served model (an arm not loaded yet is served by the control).
        self.treatments: dict[str, Served] = {}
        #: The champion version of the checkpoint the arms and decisions come from.
        self.checkpoint: str | None = None
        self.last_error: str | None = None

    @property
    def control(self) -> str:
        return self.section.control

    def serving(self, event: Mapping[str, Any] | object, champion: Served) -> tuple[str, Served]:
        """The arm serving ``event`` and its model; ``champion`` is the control's."""
        arm = self.run.serving(event)
        served = champion if arm == self.control else self.treatments.get(arm)
        return (arm, served) if served is not None else (self.control, champion)

    def serving_all(self, events: Sequence[Event], champion: Served) -> list[Pick]:
        """:meth:`serving` of each event, asked once per unit: the candidates of a
        ``/rank`` request share their user (the assignment hashes each unit once)."""
        field = self.section.unit_field
        by_unit: dict[str, tuple[str, Served]] = {}
        picks: list[Pick] = []
        for event in events:
            unit = unit_of(event, field)
            key = repr(unit)
            pick = by_unit.get(key)
            if pick is None:
                pick = by_unit[key] = self.serving(event, champion)
            picks.append(pick)
        return picks

    def refresh(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Follow the newest of the group's confirmed ``checkpoints``."""
        latest = newest(checkpoints)
        saved = latest.arms if latest is not None else {}
        state = latest.state.get("experiment") if latest is not None else None
        try:
            treatments = {
                arm: self._model_of(arm, saved.get(arm), self.treatments.get(arm))
                for arm in self.section.treatments
            }
            experiment = restored_experiment(self.run.experiment.config, state)
            if self.board is not None:
                _seq, recorded, _parts = self.board.read()
                if recorded is not None:
                    adopt(experiment, recorded)
        except (redis.RedisError, RegistryError, OSError, ValueError, TypeError, KeyError) as error:
            self.last_error = f"{type(error).__name__}: {error}"
            log.warning("arms refresh failed, still serving the arms as they were: %s", error)
            if self.metrics is not None:
                self.metrics.refresh_failures.inc()
        else:
            changed = {a for a, s in treatments.items() if s is not self.treatments.get(a)}
            self.treatments, self.run.experiment = treatments, experiment
            self.checkpoint = latest.version if latest is not None else None
            self.last_error = None
            for arm in sorted(changed):
                log.info("serving arm %s: v%s (%s)", arm, treatments[arm].version,
                         treatments[arm].source)  # fmt: skip
        self.gauge()

    def _model_of(self, arm: str, version: str | None, current: Served | None) -> Served:
        """Arm ``arm``'s model: checkpointed as ``version``, else as configured."""
        registry = self.registry
        if version is not None and registry is not None:
            if (
                current is not None
                and current.source == "checkpoint"
                and current.version == version
            ):
                return current
            return self._load(registry, version, "checkpoint")
        source = self.section.source_of(arm)
        if source is not None and source[0] == "version" and registry is not None:
            if (
                current is not None
                and current.source == "configured"
                and current.version == source[1]
            ):
                return current
            return self._load(registry, source[1], "configured")
        if current is not None and current.source == "untrained":
            return current
        spec = source[1] if source is not None and source[0] == "spec" else None
        return Served(self.model.build(spec), spec or self.model.spec)

    def _load(self, registry: _Models, version: str, source: str) -> Served:
        model, info = registry.load(version)
        if self.metrics is not None:
            self.metrics.model_loads.inc()
        return Served(model, info.name, info.version, source, info.created_at)

    def gauge(self) -> None:
        """Set each treatment's served age and version."""
        if self.metrics is not None:
            for arm, served in self.treatments.items():
                self.metrics.served(arm, served.age_s(), served.version)

    def describe(self, champion: Served) -> dict[str, Any]:
        """``/readyz``'s view: each arm's model and age, and the experiment's status."""
        arms = {self.control: champion, **self.treatments}
        experiment = self.run.experiment
        return {
            "arms": {
                arm: {**served.describe(), "trained": served.trained, "age_s": served.age_s()}
                for arm, served in arms.items()
            },
            "experiment": {
                "id": experiment.config.id,
                "mode": experiment.config.mode,
                "status": experiment.status,
                "winner": experiment.winner,
                "reverted": list(experiment.reverted),
                "checkpoint": self.checkpoint,
            },
        }


def score_by_arm(
    picks: Sequence[Pick],
    events: Sequence[Event],
    states: Sequence[Sequence[tuple[str, EntityState]]],
    config: FeatureConfig,
) -> list[float]:
    """Each event's score by the model of its arm (:func:`stream.serve.score_events`,
    once per arm: a request whose candidates share one arm is one call).

    >>> from streamlearn.learners.models import build_model
    >>> from streamlearn.features.interactions import InteractionConfig
    >>> events = [Event(event_id="r", timestamp=0, user_id="u", item_id=i) for i in "ab"]
    >>> empty = [[(k, EntityState.empty(InteractionConfig()))
    ...           for k in ("user", "item", "user_item")]] * 2
    >>> picks = [("a", Served(build_model("logistic"), "logistic")),
    ...          ("b", Served(build_model("hoeffding_tree"), "hoeffding_tree"))]
    >>> score_by_arm(picks, events, empty, FeatureConfig())
    [0.5, 0.5]
    """
    scores = [0.0] * len(events)
    groups: dict[int, list[int]] = {}
    for index, (_, served) in enumerate(picks):
        groups.setdefault(id(served), []).append(index)
    for indices in groups.values():
        model = picks[indices[0]][1].model
        scored = score_events(
            model, [events[i] for i in indices], [states[i] for i in indices], config
        )
        for i, p in zip(indices, scored, strict=True):
            scores[i] = p
    return scores
