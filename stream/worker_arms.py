"""A worker's arms: the experiment's treatments and the rollback rule's frozen copy.

The worker serves its own model (the champion, slot 0); with an ``experiment`` section
:class:`WorkerArms` adds one :class:`~stream.model_guard.ModelSlot` per treatment (its
model from ``experiment.models``: a fresh model of a spec, or a registry version) and
an :class:`~stream.experiment_run.ExperimentRun`; with a ``rollback`` section, the
last-known-good slot and a :class:`~stream.experiment_run.RollbackRun`. The processor
runs them (serves the assigned arm, learns, decides and applies the decisions in
memory); this module gives them the champion's guarantees around it:

- **checkpointed together**: :meth:`WorkerArms.snapshots` hands every other arm's model
  and the runs' state to the worker's two-phase checkpoint
  (:class:`learners.checkpointer.ArmSnapshots`), so one prepare and one confirm cover
  every arm;
- **restored and rewound together**: :meth:`WorkerArms.restore` puts each arm back as the
  checkpoint has it (a restart, a rebalance, a Kafka recovery), with the experiment's and
  the rule's state, so each label is learned once per arm; an arm the checkpoint does
  not have (a checkpoint of today's workers, a new arm) starts as configured, and a
  state whose configuration changed starts again;
- **decisions recorded**: :meth:`WorkerArms.record` logs each decision, counts it
  (:class:`metrics.experiment_metrics.ExperimentMetrics`) and appends it with its
  evidence to the registry's audit log (:mod:`learners.audit`);
- **decided for the group**: with the registry in Redis, the experiment is decided once
  for the consumer group (:class:`stream.experiment_sync.ExperimentSync`): the arms'
  statistics are published at each checkpoint and restore, :meth:`WorkerArms.watch`
  looks at the merged statistics and follows the recorded decision;
- **started on running workers**: an experiment recorded for the group by ``experiment
  start`` (:mod:`stream.experiment_record`) wins over the ``experiment`` section; its
  arms join (in place of the experiment's before) at a checkpoint boundary: a restore,
  a confirmed checkpoint, or a look while nothing was learned since the last one.

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> from streamlearn.stream.config import Settings
>>> settings = Settings(experiment={"arms": {"control": 0.5, "tree": 0.5},
...                                 "models": {"tree": "hoeffding_tree"}},
...                     rollback={"drop": 0.05})
>>> champion = ModelSlot(settings.model.spec, settings.model.build())
>>> arms = WorkerArms(settings, champion, None, CollectorRegistry(), "w-0")
>>> [slot.name for slot in arms.slots], champion.spec
(['control', 'tree', 'last_known_good'], 'logistic')
>>> arms.restore(None)
>>> snapshots = arms.snapshots()
>>> sorted(snapshots.models), sorted(snapshots.state)
(['last_known_good', 'tree'], ['decision', 'experiment', 'rollback'])
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from redis import Redis

from streamlearn.learners.audit import AuditLog, audit_entry
from streamlearn.learners.checkpoint import Checkpoint
from streamlearn.learners.checkpointer import ArmSnapshots, ModelState, Retry, direct
from streamlearn.learners.decision import Decision
from streamlearn.learners.experiment import Experiment, ExperimentConfig
from streamlearn.learners.holdout import decider_of
from streamlearn.learners.rollback import RollbackConfig, RollbackRule
from streamlearn.metrics.experiment_metrics import ExperimentMetrics
from streamlearn.stream.config import Settings
from streamlearn.stream.config.experiment import ExperimentSettings
from streamlearn.stream.experiment_record import Record, RecordStore
from streamlearn.stream.experiment_run import ExperimentRun, RollbackRun
from streamlearn.stream.experiment_sync import ExperimentSync, RedisBoard
from streamlearn.stream.model_guard import ModelSlot

__all__ = ["WorkerArms"]

log = logging.getLogger(__name__)


class _Runner(Protocol):
    """The processor's arms (:class:`stream.processor.Processor`)."""

    slots: list[ModelSlot]
    experiment: ExperimentRun | None

    def set_slots(self, slots: Sequence[ModelSlot]) -> None: ...


class _Marked(Protocol):
    """Where shadow predictions are marked (:class:`stream.publishing.Outputs`)."""

    shadow_arms: frozenset[str]


class _Records(Protocol):
    """The group's started experiment (:class:`stream.experiment_record.RecordStore`)."""

    def read(self) -> Record | None: ...


class _Models(Protocol):
    """The registry call of the arms (:meth:`learners.registry.ModelRegistry.load`)."""

    def load(self, version: str) -> tuple[Any, Any]: ...


class WorkerArms:
    """The arms beside a worker's champion; see the module docstring.

    Parameters
    ----------
    settings
        The worker's settings: ``experiment``, ``rollback``, ``model``.
    champion
        The worker's served slot; with an experiment it is renamed to the control arm.
    models
        The model registry (None: none; an arm from a registry version is then refused).
    registry
        Where the arms' series are registered.
    worker
        The worker's name, in the audit log.
    redis
        Runs each Redis call (the worker's retry policy).
    announce
        Called when a rollback changed the champion's model (the worker's ``model_info``).
    audit
        Where the registry is (the audit log goes beside it, :class:`learners.audit.AuditLog`);
        None: decisions are not audited (no registry, or one that is not in Redis).
    """

    def __init__(
        self,
        settings: Settings,
        champion: ModelSlot,
        models: _Models | None,
        registry: CollectorRegistry,
        worker: str,
        redis: Retry = direct,
        announce: Callable[[], None] = lambda: None,
        audit: Redis | None = None,
    ) -> None:
        self.settings = settings
        self.champion = champion
        self.models = models
        self.worker = worker
        self.audit = (
            AuditLog(audit, settings.store.key_prefix).append
            if audit is not None and models is not None
            else None
        )
        self.redis = redis
        self.announce = announce
        #: How the champion's score becomes a decision; its threshold is checkpointed.
        self.decider = decider_of(settings.decision, settings.model.threshold)
        self.slots = [champion]
        self.experiment: ExperimentRun | None = None
        self.rollback: RollbackRun | None = None
        #: The experiment in force: the configuration's, or the one started for the group.
        self.section: ExperimentSettings | None = None
        self.metrics: ExperimentMetrics | None = None
        self._registry = registry
        self._client = audit
        self._restored = False
        #: The group's one decision (None: this worker decides alone, e.g. no registry).
        self.sync: ExperimentSync | None = None
        #: The experiment started for the group (:mod:`stream.experiment_record`; None:
        #: this worker follows only its configuration, e.g. no registry, no checkpoints).
        self.records: _Records | None = None
        if audit is not None and models is not None and settings.checkpoint.enabled:
            self.records = RecordStore(audit, settings.store.key_prefix, settings.kafka.group_id)
        self._record_seq = 0
        self._record_look: float | None = None
        self._quiet_at: tuple[int, int] | None = None
        self._processor: _Runner | None = None
        self._outputs: _Marked | None = None
        if settings.experiment is not None:
            self._set_experiment(settings.experiment)
        if settings.rollback is not None:
            config = settings.rollback
            self.rollback = RollbackRun(config.rule_config(), champion.name, config.refresh_every)
            self.slots.append(self.rollback.reference_slot(champion))
        self._set_up_metrics()

    def _set_experiment(self, section: ExperimentSettings) -> None:
        """Put ``section``'s arms beside the champion, in place of the experiment's before."""
        old = set(self.experiment.experiment.config.treatments) if self.experiment else set()
        self.slots[1:] = [slot for slot in self.slots[1:] if slot.name not in old]
        self.section = section
        self._rename_champion(section.control)
        self.experiment = ExperimentRun(section.decision_config(), learn=section.learn)
        for arm in section.treatments:
            source = section.source_of(arm)
            if source is not None and source[0] == "version" and self.models is None:
                raise ValueError(
                    f"experiment arm {arm!r} is version:{source[1]}: a registry version"
                    " needs the model registry (set STREAMLEARN_MODEL_KEY)"
                )
            spec = source[1] if source is not None and source[0] == "spec" else ""
            model = self.settings.model.build(spec or None)
            self.slots.append(ModelSlot(arm, model, spec or self.champion.spec))
        self.sync = None
        settings = self.settings
        if self.audit is not None and self._client is not None and settings.checkpoint.enabled:
            group = settings.kafka.group_id
            decided = self.experiment.experiment.config
            board = RedisBoard(self._client, settings.store.key_prefix, group, decided)
            every = settings.checkpoint.registry_poll_seconds
            self.sync = ExperimentSync(
                board, self.experiment, self.worker, every, self.versions, self.redis
            )
        self._attach()

    def _rename_champion(self, name: str) -> None:
        """The champion is the experiment's control arm (the rollback rule follows it)."""
        old, self.champion.name = self.champion.name, name
        guard = self.rollback
        if guard is not None and old != name:
            guard.stats[name] = guard.stats.pop(guard.champion)
            guard.champion = name

    def _set_up_metrics(self) -> None:
        """The arms' series, each decision's from zero (its first one alerts)."""
        if len(self.slots) < 2:
            return
        if self.metrics is None:
            self.metrics = ExperimentMetrics(self._registry)
        expected = [("rollback", RollbackRun.reference)] if self.rollback is not None else []
        if self.experiment is not None:
            arms = self.experiment.experiment.config.treatments
            expected += [(action, arm) for arm in arms for action in ("revert", "promote")]
        for action, arm in expected:
            self.metrics.decisions.labels(action=action, arm=arm)

    def attach(self, processor: _Runner, outputs: _Marked) -> None:
        """Keep ``processor``'s arms and ``outputs``' shadow arms in step with these."""
        self._processor, self._outputs = processor, outputs
        self._attach()

    def _attach(self) -> None:
        if self._processor is not None:
            self._processor.set_slots(self.slots)
            self._processor.experiment = self.experiment
        if self._outputs is not None:
            self._outputs.shadow_arms = self.shadow_arms

    # ------------------------------------------------------------------ started experiments

    def _quiet(self) -> tuple[int, int]:
        return self.champion.events_scored, self.champion.labels_learned

    def _boundary(self) -> None:
        """The arms are what the last checkpoint (saved or restored) holds."""
        self._quiet_at = self._quiet()

    def _pick_up(self, force: bool = False) -> bool:
        """Follow the experiment started for the group, if a new one was recorded (a look
        at most every poll interval, or ``force``); whether the arms changed. Call it at
        a checkpoint boundary only: the new arms start from the last checkpoint."""
        records = self.records
        now = time.monotonic()
        every = self.settings.checkpoint.registry_poll_seconds
        if records is None or not (
            force or self._record_look is None or now - self._record_look >= every
        ):
            return False
        self._record_look = now
        record = self.redis(records.read)
        if record is None or record.seq == self._record_seq:
            return False
        self._record_seq = record.seq
        if record.settings == self.section:
            return False
        log.warning(
            "experiment %s started for the group (%s by %s): its arms %s join",
            record.settings.id, record.at, record.by, ", ".join(record.settings.treatments),
        )  # fmt: skip
        self._set_experiment(record.settings)
        self._set_up_metrics()
        return True

    def _started(self) -> None:
        """A newly started experiment's arms, as defined, follow the group from now on."""
        treatments = self.section.treatments if self.section is not None else []
        for slot in self.slots[1:]:
            if slot.name in treatments:
                self._initial(slot)
        if self.sync is not None:
            self.sync.publish()
            self._follow(self.sync.look(force=True))
        self.publish()

    @property
    def active(self) -> bool:
        """Whether there is any arm beside the champion."""
        return len(self.slots) > 1

    @property
    def shadow_arms(self) -> frozenset[str]:
        """The arms whose predictions are published marked ``shadow`` (shadow mode)."""
        run = self.experiment
        if run is None or run.experiment.config.mode != "shadow":
            return frozenset()
        return frozenset(run.experiment.config.treatments)

    # ------------------------------------------------------------------ restore

    def restore(self, checkpoint: Checkpoint | None, rewind: bool = True) -> None:
        """Put every arm and the runs' state back as ``checkpoint`` has them (None: as
        configured). Call it after the champion was restored. Without ``rewind`` (no
        registry: learning is at-least-once) only the first call sets the arms up."""
        if self._restored and not rewind:
            return
        self._restored = True
        self._pick_up(force=True)
        saved = checkpoint.arms if checkpoint is not None else {}
        state = checkpoint.state if checkpoint is not None else {}
        for slot in self.slots[1:]:
            version = saved.get(slot.name)
            if version is not None and self.models is not None:
                self._load(slot, version)
            elif self.rollback is not None and slot.name == self.rollback.reference:
                slot.model, slot.version = copy.deepcopy(self.champion.model), self.champion.version
                slot.events_scored = slot.labels_learned = 0
            else:
                self._initial(slot)
        self.decider.policy.restore(state.get("decision"))
        if self.experiment is not None:
            self._restore_experiment(self.experiment, state.get("experiment"))
        if self.rollback is not None:
            self._restore_rollback(self.rollback, state.get("rollback"))
        if self.sync is not None:
            self.sync.publish()
            self._follow(self.sync.look(force=True))
        self.publish()
        self._boundary()

    def _load(self, slot: ModelSlot, version: str) -> None:
        models = self.models
        assert models is not None
        model, info = self.redis(lambda: models.load(version))
        slot.model, slot.version = model, info.version
        slot.events_scored, slot.labels_learned = info.events_scored, info.labels_learned

    def _initial(self, slot: ModelSlot) -> None:
        """A treatment as configured: a fresh model of its spec, or its registry version."""
        section = self.section
        source = section.source_of(slot.name) if section is not None else None
        if source is not None and source[0] == "version":
            self._load(slot, source[1])
            slot.events_scored = slot.labels_learned = 0
            return
        slot.model = self.settings.model.build(slot.spec)
        slot.version, slot.events_scored, slot.labels_learned = "0", 0, 0

    @staticmethod
    def _restore_experiment(run: ExperimentRun, saved: Mapping[str, Any] | None) -> None:
        config = run.experiment.config
        if saved is not None and ExperimentConfig.model_validate(saved["config"]) == config:
            run.experiment = Experiment.from_dict(saved)
            run.last_event_ms = saved.get("last_event_ms")
            return
        if saved is not None:
            log.warning("experiment %s: its configuration changed, it starts again", config.id)
        run.experiment = Experiment(config)
        run.last_event_ms = None

    @staticmethod
    def _restore_rollback(run: RollbackRun, saved: Mapping[str, Any] | None) -> None:
        config = run.rule.config
        same = (
            saved is not None
            and RollbackConfig.model_validate(saved["rule"]["config"]) == config
            and saved["champion"] == run.champion
        )
        if saved is None or not same:
            run.rule = RollbackRule(config)
            run.labels_since_refresh, run.refreshes, run.last_event_ms = 0, [], None
            for stats in run.stats.values():
                stats.events, stats.labels, stats.total = 0, 0, 0.0
            return
        run.rule = RollbackRule.from_dict(saved["rule"])
        run.labels_since_refresh = int(saved["labels_since_refresh"])
        run.refreshes = [int(i) for i in saved["refreshes"]]
        run.last_event_ms = saved["last_event_ms"]
        for name, (events, labels, total) in saved["stats"].items():
            stats = run.stats[name]
            stats.events, stats.labels, stats.total = int(events), int(labels), float(total)

    # ------------------------------------------------------------------ checkpoint

    def state(self) -> dict[str, Any]:
        """The runs' state and an adaptive decision policy's threshold, JSON-compatible
        (the checkpoint's ``state``; empty for a fixed threshold and no arms)."""
        state: dict[str, Any] = {}
        if self.decider.policy.name != "fixed":
            state["decision"] = self.decider.policy.state()
        if self.experiment is not None:
            run = self.experiment
            state["experiment"] = {**run.experiment.to_dict(), "last_event_ms": run.last_event_ms}
        if self.rollback is not None:
            guard = self.rollback
            state["rollback"] = {
                "champion": guard.champion,
                "rule": guard.rule.to_dict(),
                "labels_since_refresh": guard.labels_since_refresh,
                "refreshes": list(guard.refreshes),
                "last_event_ms": guard.last_event_ms,
                "stats": {n: [s.events, s.labels, s.total] for n, s in guard.stats.items()},
            }
        return state

    def snapshots(self) -> ArmSnapshots:
        """Every arm but the champion, and the runs' state, for the checkpoint."""
        models = {
            slot.name: (
                slot.model,
                ModelState(slot.name, slot.version, slot.events_scored, slot.labels_learned),
            )
            for slot in self.slots[1:]
        }
        return ArmSnapshots(models, self.state())

    def checkpointed(self, versions: Mapping[str, str]) -> None:
        """The arms were saved as ``versions``: those are their versions now."""
        for slot in self.slots[1:]:
            slot.version = versions.get(slot.name, slot.version)
        if self.sync is not None:
            self.sync.publish()
        self._boundary()
        if self._pick_up():
            self._started()

    # ------------------------------------------------------------------ decisions

    def versions(self) -> dict[str, str]:
        """Each arm's model version."""
        return {slot.name: slot.version for slot in self.slots}

    def record(self, decisions: Sequence[Decision]) -> None:
        """Log, count and audit the batch's decisions (applied by the processor's runs),
        then refresh the arms' series."""
        for decision in decisions:
            source = "rollback" if decision.action == "rollback" else "experiment"
            log.warning(
                "%s decided %s %s (p=%s): %s",
                source, decision.action, decision.arm or "", decision.p_value, decision.reason,
            )  # fmt: skip
            if self.metrics is not None:
                self.metrics.decided(decision.action, decision.arm)
            if self.audit is not None:
                audit = self.audit
                entry = audit_entry(decision.to_dict(), self.worker, source, self.versions())
                if self.experiment is not None and source == "experiment":
                    entry["experiment"] = self.experiment.experiment.config.id
                self.redis(lambda: audit(entry))  # noqa: B023 - called at once
            if decision.action == "rollback":
                self.announce()
        self.publish()

    def watch(self) -> None:
        """Follow the group's experiment decision (a look at most every poll interval), and
        an experiment started for the group while nothing was learned since the last
        checkpoint (a boundary: the new arms start from it)."""
        if self._quiet_at == self._quiet() and self._pick_up():
            self._started()
            self._boundary()
        if self.sync is not None:
            self._follow(self.sync.look())

    def _follow(self, decisions: Sequence[Decision]) -> None:
        """Log and count the group's decisions this worker follows from now on (audited
        once, by whoever recorded them)."""
        for decision in decisions:
            log.warning(
                "experiment %s: the group decided %s %s (p=%s): %s",
                self.section.id if self.section is not None else "",
                decision.action, decision.arm or "", decision.p_value, decision.reason,
            )  # fmt: skip
            if self.metrics is not None:
                self.metrics.decided(decision.action, decision.arm)
        if decisions:
            self.publish()

    def publish(self) -> None:
        """Set the arms' series from the runs' summaries."""
        if self.metrics is None:
            return
        if self.experiment is not None:
            self.metrics.publish(self.experiment.summary(), run="experiment")
        if self.rollback is not None:
            self.metrics.publish(self.rollback.summary(), run="rollback")
