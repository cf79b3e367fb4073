"""One experiment decision for a consumer group, and its live commands, through Redis.

Several workers of one group split the partitions; each measures the experiment's arms
on its own events (:class:`stream.experiment_run.ExperimentRun`). Without this module
each would decide alone, and one could promote a treatment that another reverts. The
protocol (pure logic in :mod:`learners.experiment_group`, Redis calls in
:class:`RedisBoard`):

1. **Publish at each checkpoint.** After a checkpoint is confirmed, a worker writes its
   arms' statistics *as checkpointed* (counts, latency sketch, the primary metric's
   unit buckets; :func:`~learners.experiment_group.snapshot`) to the hash
   ``ns:experiment:GROUP:ID:FINGERPRINT:stats``, field = its name; and after a restart
   or a rewind, the statistics of the checkpoint it restored. Each worker's published
   statistics therefore count exactly the records of the offsets it committed.
   **No record is counted twice**: a record counts in the statistics of the worker whose
   checkpoint committed its offset, and only there. When a worker dies or loses
   partitions, their next owner reads them from the committed offsets, so it counts
   only records the dead worker's published statistics do not have; the dead worker's
   field stays (it holds records nobody reads again) and is overwritten if it comes
   back under its name, by the checkpoint it restores. What a worker learned but did
   not commit is never published (a crash between the confirm and the publish loses
   one checkpoint's worth of counts until the worker restarts; it never doubles).
2. **Look and decide once.** Every ``checkpoint.registry_poll_seconds`` (and after each
   restore) a worker reads the group's decision state (``...:state``, a hash of ``seq``
   and ``state``: the evidence, reverted arms, status, winner and decisions; no
   statistics) and every published snapshot, merges the snapshots and looks
   (:meth:`learners.experiment.Experiment.decide`). It writes the new state with a
   compare-and-set on ``seq`` (one Lua script), together with the audit entry of a new
   decision: of the workers that look at the same state, one write wins, so each
   decision is recorded, and audited, exactly once; the others' write is refused and
   they take the recorded state at their next look.
3. **Follow.** Every look ends with the worker's own experiment following the recorded
   state (:func:`~learners.experiment_group.adopt`): a revert, a promotion or a stop is
   served by every worker from its next event on, and is in its next checkpoint. The
   worker's own run does not decide (:attr:`ExperimentRun.decides` is False).
4. **Commands.** ``streamlearn experiment revert ARM|promote ARM|stop`` apply the
   command to the recorded state by the same compare-and-set, audited under the name
   ``cli``; running workers follow at their next look, without a restart.

The keys carry the configuration's fingerprint: a changed configuration is a new
experiment, whose statistics and decisions start again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import orjson
import redis

from streamlearn.learners.audit import AUDIT_MAX, audit_entry
from streamlearn.learners.checkpointer import Retry, direct
from streamlearn.learners.decision import Decision
from streamlearn.learners.experiment import ExperimentConfig
from streamlearn.learners.experiment_group import (
    Command,
    adopt,
    command,
    decision_state,
    fingerprint,
    group_experiment,
    latest_event_s,
    snapshot,
)
from streamlearn.stream.experiment_run import ExperimentRun

__all__ = ["Board", "ExperimentSync", "GroupView", "RedisBoard", "apply_command"]

log = logging.getLogger(__name__)

#: The recorded decision state's ``seq``, the state (None: none yet), the snapshots by worker.
GroupView = tuple[int, dict[str, Any] | None, dict[str, dict[str, Any]]]

_RECORD = """
local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
if seq ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'seq', tostring(tonumber(seq) + 1), 'state', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('LPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
end
return 1
"""


class Board(Protocol):
    """Where a group's experiment is shared (:class:`RedisBoard`; in memory in tests)."""

    def read(self) -> GroupView: ...

    def publish(self, worker: str, part: Mapping[str, Any]) -> None: ...

    def record(self, seq: int, state: Mapping[str, Any], entry: Mapping[str, Any] | None) -> bool:
        """Write ``state`` (and append ``entry`` to the audit log) if the recorded ``seq``
        is still ``seq``; whether it was written."""
        ...


class RedisBoard:
    """The group's experiment ``config`` in Redis, under ``namespace`` and ``group``."""

    def __init__(
        self, client: redis.Redis, namespace: str, group: str, config: ExperimentConfig
    ) -> None:
        self.client = client
        base = f"{namespace}:experiment:{group}:{config.id}:{fingerprint(config)}"
        self.state_key, self.stats_key = f"{base}:state", f"{base}:stats"
        self.audit_key = f"{namespace}:registry:audit"
        self._record = client.register_script(_RECORD)

    def read(self) -> GroupView:
        pipe = self.client.pipeline(transaction=True)
        pipe.hmget(self.state_key, ["seq", "state"])
        pipe.hgetall(self.stats_key)
        (seq, state), stats = cast("tuple[list[bytes | None], dict[bytes, bytes]]", pipe.execute())
        parts = {worker.decode(): orjson.loads(raw) for worker, raw in stats.items()}
        return int(seq or 0), orjson.loads(state) if state else None, parts

    def publish(self, worker: str, part: Mapping[str, Any]) -> None:
        self.client.hset(self.stats_key, worker, orjson.dumps(dict(part)))

    def record(self, seq: int, state: Mapping[str, Any], entry: Mapping[str, Any] | None) -> bool:
        raw_entry = orjson.dumps(dict(entry)) if entry is not None else b""
        keys = [self.state_key, self.audit_key]
        args: list[bytes | str | int] = [str(seq), orjson.dumps(dict(state)), raw_entry, AUDIT_MAX]
        return bool(self._record(keys=keys, args=args))


def apply_command(
    board: Board,
    config: ExperimentConfig,
    action: Command,
    arm: str | None,
    who: str = "cli",
    attempts: int = 5,
) -> Decision:
    """Apply a manual command to the group's recorded state, audited once under ``who``
    (ValueError when it does not apply; RuntimeError when the state kept changing)."""
    for _ in range(attempts):
        seq, state, parts = board.read()
        experiment = group_experiment(config, state, parts.values())
        decision = command(experiment, action, arm, at=time.time())
        entry = audit_entry(decision.to_dict(), who, "experiment", {})
        entry["experiment"] = config.id
        if board.record(seq, decision_state(experiment), entry):
            return decision
    raise RuntimeError(f"experiment {config.id}: the recorded state kept changing, try again")


class ExperimentSync:
    """A worker's side of the protocol (see the module docstring).

    Parameters
    ----------
    board
        Where the group's experiment is shared.
    run
        The worker's own experiment run: it stops deciding and follows the group.
    worker
        The worker's name: its snapshot's field, the audit entries it records.
    every_s
        The least time between two looks.
    versions
        The arms' model versions, for the audit entries.
    redis
        Runs each Redis call (the worker's retry policy).
    """

    def __init__(
        self,
        board: Board,
        run: ExperimentRun,
        worker: str,
        every_s: float,
        versions: Callable[[], dict[str, str]] = dict,
        redis: Retry = direct,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.board = board
        self.run = run
        self.worker = worker
        self.every_s = every_s
        self.versions = versions
        self.redis = redis
        self.clock = clock
        self._last_look: float | None = None
        self._followed = 0
        run.decides = False

    def publish(self) -> None:
        """Publish the run's statistics: call it right after a checkpoint was confirmed or
        restored, while the run is what the checkpoint holds."""
        part = snapshot(self.run.experiment, self.run.last_event_ms)
        self.redis(lambda: self.board.publish(self.worker, part))

    def look(self, force: bool = False) -> list[Decision]:
        """Decide on the merged statistics if due (or ``force``), then follow the recorded
        state; the recorded decisions this worker had not followed yet."""
        now = self.clock()
        if not force and self._last_look is not None and now - self._last_look < self.every_s:
            return []
        self._last_look = now
        config = self.run.experiment.config
        seq, state, parts = self.redis(self.board.read)
        group = group_experiment(config, state, parts.values())
        if group.status in ("running", "ready_to_promote"):
            before = len(group.decisions)
            at = latest_event_s(parts.values())
            group.decide(at=at)
            new = decision_state(group)
            if new != state:
                entry = None
                if len(group.decisions) > before:
                    decision = group.decisions[-1]
                    entry = audit_entry(decision.to_dict(), self.worker, "experiment", {})
                    entry["versions"], entry["experiment"] = self.versions(), config.id
                    entry["scope"] = "group"
                if self.redis(lambda: self.board.record(seq, new, entry)):
                    state = new
        if state is None or ExperimentConfig.model_validate(state["config"]) != config:
            return []
        adopt(self.run.experiment, state)
        decisions = self.run.experiment.decisions
        followed, self._followed = self._followed, len(decisions)
        return decisions[followed:]
