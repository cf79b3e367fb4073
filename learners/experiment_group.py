"""One experiment for a group of workers: merged arm statistics, one decision state.

Each worker of a consumer group measures its arms on its own partitions
(:class:`learners.experiment.Experiment`). The group decides on the sum of what every
worker measured, and every worker follows the one decision; this module is that logic,
without I/O (the Redis side is :mod:`stream.experiment_sync`):

- :func:`merge_arms` adds the workers' :class:`~learners.arm_stats.ArmStats`: counts
  add, latency sketches add bucket by bucket, the primary metric's unit buckets add
  (:class:`~metrics.clustered.ClusteredMoments`: sums and counts per bucket) and the
  values without a unit merge by Chan's parallel update. Merging is exact: the merged
  statistics are those one worker reading every partition would have;
- :func:`decision_state` is the part of an experiment that is the group's: its evidence
  (the always-valid tests), reverted arms, status, winner and decisions, without the
  arms' statistics; :func:`group_experiment` puts a decision state and the merged
  statistics together, to look at (:meth:`Experiment.decide`) or to command
  (:func:`command`: a manual ``revert``, ``promote`` or ``stop``);
- :func:`adopt` makes a worker's own experiment follow the group's decision state,
  keeping its own statistics (those it checkpoints and publishes).

:func:`fingerprint` names a configuration: statistics and a decision state are only
put together for the same one, so a changed configuration is a new experiment.

Examples
--------
>>> from streamlearn.learners.experiment import ExperimentConfig
>>> config = ExperimentConfig(id="e", arms={"a": 0.5, "b": 0.5}, min_labels_per_arm=10)
>>> one, two = Experiment(config), Experiment(config)
>>> for i in range(40):
...     one.observe_label("a", i % 4 == 0, 0.5, unit=f"u{i % 7}")
...     two.observe_label("b", i % 2 == 0, 0.5, unit=f"u{i % 5}")
>>> arms = merge_arms(config, [snapshot(one), snapshot(two)])
>>> arms["a"].primary.n, arms["b"].primary.n, arms["b"].primary.mean
(40, 40, 0.5)
>>> group = group_experiment(config, None, [snapshot(one), snapshot(two)])
>>> decision = command(group, "revert", "b", at=0.0)
>>> decision.action, group.status
('revert', 'reverted')
>>> adopt(one, decision_state(group))[0].action, one.status, one.arms["a"].primary.n
('revert', 'reverted', 40)
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import orjson

from streamlearn.learners.arm_stats import ArmStats, LatencySketch
from streamlearn.learners.decision import Decision
from streamlearn.learners.experiment import Experiment, ExperimentConfig
from streamlearn.metrics.clustered import ClusteredMoments
from streamlearn.metrics.sequential import Moments

__all__ = [
    "Command",
    "adopt",
    "command",
    "decision_state",
    "fingerprint",
    "group_experiment",
    "merge_arms",
    "merge_moments",
    "snapshot",
]

#: A manual command on a running experiment.
Command = Literal["revert", "promote", "stop"]


def fingerprint(config: ExperimentConfig) -> str:
    """A short stable name of ``config`` (12 hex digits of a SHA-256 of its JSON).

    >>> fingerprint(ExperimentConfig(id="e")) == fingerprint(ExperimentConfig(id="e"))
    True
    >>> fingerprint(ExperimentConfig(id="e")) == fingerprint(ExperimentConfig(id="f"))
    False
    """
    raw = orjson.dumps(config.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:12]


def snapshot(experiment: Experiment, last_event_ms: int | None = None) -> dict[str, Any]:
    """What a worker publishes of its experiment: its configuration's fingerprint, every
    arm's statistics and the latest event time it saw (JSON-compatible)."""
    return {
        "fingerprint": fingerprint(experiment.config),
        "arms": {name: stats.to_dict() for name, stats in experiment.arms.items()},
        "last_event_ms": last_event_ms,
    }


def merge_moments(parts: Iterable[ClusteredMoments]) -> ClusteredMoments:
    """The sum of clustered moments with the same number of buckets."""
    merged: ClusteredMoments | None = None
    for part in parts:
        if merged is None:
            merged = ClusteredMoments(part.buckets)
        if part.buckets != merged.buckets:
            raise ValueError(f"cannot merge {part.buckets} buckets into {merged.buckets}")
        merged.counts = [a + b for a, b in zip(merged.counts, part.counts, strict=True)]
        merged.sums = [a + b for a, b in zip(merged.sums, part.sums, strict=True)]
        singles = Moments(merged.singles.n, merged.singles.mean, merged.singles.m2)
        singles.merge(part.singles)
        merged.singles = singles
        merged.n += part.n
        merged.total += part.total
    return merged if merged is not None else ClusteredMoments()


def _merge_stats(parts: list[ArmStats]) -> ArmStats:
    latency: dict[int, int] = {}
    for part in parts:
        for index, count in part.latency.counts.items():
            latency[index] = latency.get(index, 0) + count
    return ArmStats(
        sum(p.predictions for p in parts),
        sum(p.errors for p in parts),
        sum(p.predicted_positive for p in parts),
        LatencySketch(latency),
        merge_moments(p.primary for p in parts) if parts else ClusteredMoments(),
    )


def merge_arms(
    config: ExperimentConfig, snapshots: Iterable[Mapping[str, Any]]
) -> dict[str, ArmStats]:
    """Every arm's statistics summed over the ``snapshots`` of ``config`` (:func:`snapshot`;
    those of another configuration are left out)."""
    name = fingerprint(config)
    parts: dict[str, list[ArmStats]] = {arm: [] for arm in config.arms}
    for part in snapshots:
        if part.get("fingerprint") != name:
            continue
        for arm, stats in part["arms"].items():
            if arm in parts:
                parts[arm].append(ArmStats.from_dict(stats))
    return {arm: _merge_stats(stats) for arm, stats in parts.items()}


def latest_event_s(snapshots: Iterable[Mapping[str, Any]]) -> float | None:
    """The latest event time of the snapshots, in seconds (None: none seen)."""
    times = [s["last_event_ms"] for s in snapshots if s.get("last_event_ms") is not None]
    return max(times) / 1000.0 if times else None


def decision_state(experiment: Experiment) -> dict[str, Any]:
    """The group's part of ``experiment``: everything but the arms' statistics."""
    state = experiment.to_dict()
    del state["arms"]
    return state


def group_experiment(
    config: ExperimentConfig,
    state: Mapping[str, Any] | None,
    snapshots: Iterable[Mapping[str, Any]],
) -> Experiment:
    """The group's experiment: decision ``state`` (None, or another configuration's: a
    fresh start) with the merged statistics of ``snapshots``."""
    parts = list(snapshots)
    arms = merge_arms(config, parts)
    if state is None or ExperimentConfig.model_validate(state["config"]) != config:
        experiment = Experiment(config)
    else:
        experiment = Experiment.from_dict({**state, "arms": {}})
    experiment.arms = arms
    return experiment


def command(
    experiment: Experiment, action: Command, arm: str | None = None, at: float | None = None
) -> Decision:
    """Apply a manual ``revert ARM``, ``promote ARM`` or ``stop`` to ``experiment``
    (ValueError when it does not apply: an unknown arm, an ended experiment)."""
    if arm is not None and arm not in experiment.config.arms:
        raise ValueError(f"unknown arm {arm!r}: the arms are {list(experiment.config.arms)}")
    if action == "stop":
        return experiment.stop(at=at, reason="stopped by hand")
    if arm is None:
        raise ValueError(f"{action} needs an arm: one of {experiment.config.treatments}")
    if arm == experiment.config.control:
        raise ValueError(f"{arm!r} is the control; {action} names a treatment")
    if action == "promote":
        return experiment.promote(arm, at=at)
    return experiment.revert(arm, at=at)


def adopt(local: Experiment, state: Mapping[str, Any]) -> list[Decision]:
    """Make ``local`` follow the group's decision ``state`` (same configuration), keeping
    its own statistics; returns the decisions it did not have yet."""
    group = Experiment.from_dict({**state, "arms": {}})
    known = len(local.decisions)
    local.started_at = group.started_at
    local.evidence = copy.deepcopy(group.evidence)
    local.reverted = list(group.reverted)
    local.status = group.status
    local.winner = group.winner
    local.decisions = list(group.decisions)
    return group.decisions[known:]
