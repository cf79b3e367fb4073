"""An experiment started on running workers: the group's record of its definition.

``streamlearn experiment start`` records an ``experiment:`` section
(:class:`~stream.config.experiment.ExperimentSettings`, checked as the configuration
file's) for a consumer group, in one Redis hash beside the group's decision board
(:mod:`stream.experiment_sync`): ``ns:experiment:GROUP:started``, fields ``seq`` (how
many experiments were started for the group) and ``record`` (the definition, when and
by whom). One key per group, so one hash slot (a Redis Cluster keeps it whole).

**Which experiment is in force** (:func:`in_force`): the group's record when there is
one, else the configuration file's ``experiment:`` section. A started experiment
therefore outlives the workers' configuration: a worker restarted with a file that
has no ``experiment:`` section (or another one) follows the record; ``experiment stop``
ends it, and the next ``experiment start`` replaces it.

**Starting** (:func:`start_experiment`) is refused while the experiment in force is
running (its recorded decision state is ``running`` or ``ready_to_promote``, or nothing
was recorded yet), and when the new definition's decision board was used before (the
same id and configuration: choose another id). The record and its audit entry
(``action: start``, :mod:`learners.audit`) are written by one script with a
compare-and-set on ``seq``, so of two concurrent starts one wins.

Workers follow the record at a checkpoint boundary (:class:`stream.worker_arms.WorkerArms`).

Examples
--------
>>> from streamlearn.stream.config.experiment import ExperimentSettings
>>> started = ExperimentSettings(id="s", arms={"c": 0.9, "t": 0.1})
>>> record = Record(3, started, "2026-01-01T00:00:00Z", "cli")
>>> in_force(record, None).id, in_force(None, None)
('s', None)
>>> Record.from_json(3, record.to_json()) == record
True
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, cast

import orjson
import redis

from streamlearn.learners.audit import AUDIT_MAX, audit_entry, utc_stamp
from streamlearn.stream.config.experiment import ExperimentSettings
from streamlearn.stream.experiment_sync import RedisBoard

__all__ = [
    "ExperimentRunningError",
    "Record",
    "RecordStore",
    "in_force",
    "missing_versions",
    "start_experiment",
]

_START = """
local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
if seq ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'seq', tostring(tonumber(seq) + 1), 'record', ARGV[2])
redis.call('LPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
return 1
"""

#: Decision states in which an experiment still runs.
_RUNNING = ("running", "ready_to_promote")


class ExperimentRunningError(ValueError):
    """Another experiment runs for the group: ``experiment stop`` ends it first."""


class Record(NamedTuple):
    """The experiment started for a group: its ``seq``, definition, time and author."""

    seq: int
    settings: ExperimentSettings
    at: str
    by: str

    def to_json(self) -> bytes:
        data = {"experiment": self.settings.model_dump(mode="json"), "at": self.at, "by": self.by}
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, seq: int, raw: bytes) -> Record:
        data = orjson.loads(raw)
        settings = ExperimentSettings.model_validate(data["experiment"])
        return cls(seq, settings, str(data["at"]), str(data["by"]))


def in_force(
    record: Record | None, configured: ExperimentSettings | None
) -> ExperimentSettings | None:
    """The experiment the group runs: the started one, else the configuration's."""
    return record.settings if record is not None else configured


class RecordStore:
    """The started-experiment record of ``group`` in ``namespace``."""

    def __init__(self, client: redis.Redis, namespace: str, group: str) -> None:
        self.client = client
        self.namespace, self.group = namespace, group
        self.key = f"{namespace}:experiment:{group}:started"
        self.audit_key = f"{namespace}:registry:audit"
        self._start = client.register_script(_START)

    def read(self) -> Record | None:
        """The group's record (None: no experiment was started for it)."""
        seq, raw = cast("list[bytes | None]", self.client.hmget(self.key, ["seq", "record"]))
        return Record.from_json(int(seq or 0), raw) if raw else None

    def seq(self) -> int:
        """How many experiments were started for the group (0: none)."""
        return int(cast("bytes | None", self.client.hget(self.key, "seq")) or 0)

    def write(self, seq: int, record: Record, entry: dict[str, Any]) -> bool:
        """Record ``record`` and audit ``entry`` if the recorded ``seq`` is still ``seq``."""
        args: list[bytes | str | int] = [str(seq), record.to_json(), orjson.dumps(entry), AUDIT_MAX]
        return bool(self._start(keys=[self.key, self.audit_key], args=args))

    def board(self, settings: ExperimentSettings) -> RedisBoard:
        """The decision board of experiment ``settings`` for the group."""
        return RedisBoard(self.client, self.namespace, self.group, settings.decision_config())


def missing_versions(store: RecordStore, settings: ExperimentSettings) -> list[str]:
    """The registry versions ``settings``' arms name that the registry does not hold."""
    snapshots = f"{store.namespace}:registry:snapshots"
    sources = [settings.source_of(arm) for arm in settings.treatments]
    wanted = [source[1] for source in sources if source is not None and source[0] == "version"]
    return [v for v in wanted if not store.client.hexists(snapshots, v)]


def _status(store: RecordStore, settings: ExperimentSettings) -> str:
    """The recorded status of ``settings`` for the group (``running`` before any look)."""
    _, state, _ = store.board(settings).read()
    return str(state.get("status", "running")) if state is not None else "running"


def start_experiment(
    store: RecordStore,
    settings: ExperimentSettings,
    configured: ExperimentSettings | None = None,
    who: str = "cli",
    now: float | None = None,
) -> Record:
    """Record ``settings`` as the group's experiment, audited once under ``who``.

    ``configured``: the configuration file's experiment (in force while nothing was
    started). Raises :class:`ExperimentRunningError` while the experiment in force runs,
    ValueError when ``settings``' board was used before, RuntimeError when other starts
    kept racing this one.
    """
    for _ in range(5):
        seq = store.seq()
        current = in_force(store.read(), configured)
        if current is not None:
            status = _status(store, current)
            if status in _RUNNING:
                where = "started for the group" if seq else "of the configuration"
                raise ExperimentRunningError(
                    f"experiment {current.id!r} ({where}) is {status}: `streamlearn"
                    " experiment stop` ends it, then start the new one"
                )
        seen, _, parts = store.board(settings).read()
        if seen or parts:
            raise ValueError(
                f"experiment {settings.id!r} with this definition ran before for the group:"
                " give it another id (--id)"
            )
        record = Record(seq + 1, settings, utc_stamp(now), who)
        arms = ", ".join(f"{arm} {share:g}" for arm, share in settings.arms.items())
        decision = {
            "action": "start",
            "arm": None,
            "p_value": None,
            "reason": f"experiment {settings.id} started ({settings.mode}: {arms})",
        }
        entry = audit_entry(decision, who, "experiment", {}, now)
        entry["experiment"], entry["definition"] = settings.id, settings.model_dump(mode="json")
        if store.write(seq, record, entry):
            return record
        time.sleep(0.05)
    raise RuntimeError("other experiments kept being started for the group: try again")
