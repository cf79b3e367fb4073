"""In-process backtest: a historical file through the worker's own code, in event time.

The file's records go through the same :class:`stream.processor.Processor`
(decode, features, scoring, learning, monitoring) as in the worker, without
Kafka, as fast as possible and deterministically. The interaction state lives
in a :class:`features.memory_store.MemoryStore` by default, or in Redis.

With a label delay, an event's inline label is held back and released, as a
label record, before the first event at or after ``event time + delay``: the
order of ``river.stream.simulate_qa``, so a backtest matches
``river.evaluate.progressive_val_score(..., delay=...)``.

With an ``experiment`` (:class:`stream.config.ExperimentSettings`, its arms named as
the models: ``NAME=SPEC``) the models are its arms, served as the worker serves them
(:class:`stream.experiment_run.ExperimentRun`), and ``summary.json`` has its
``experiment``: per arm events, labels, primary metric and interval, and the decisions
with their event index and event time. A backtest is deterministic: the latency
guardrails, which judge wall-clock time, are left out of its experiments, and no
latency is measured for them. With
``rollback`` (:class:`learners.rollback.RollbackConfig`) a frozen last-known-good copy
of the first model scores in shadow (:class:`stream.experiment_run.RollbackRun`), its
weights frozen and its scaling following the inputs; at most every
``rollback_refresh_every`` labels it becomes a snapshot of the live model taken earlier,
once the live model stayed at least as good and the label rate steady since; a rollback
puts it back in place of the live model.

A row that the file reader refuses (a :class:`stream.sources.BadRow`: ``nan`` in
a CSV cell, more cells than columns, ...) is a dead letter with the reader's
reason, counted with the others in ``summary.json``.

With Redis, the backtest keeps its state under its own key prefix (the CLI
makes a fresh ``backtest-<time>-<id>`` one unless told otherwise): under the
live workers' prefix it would find every event already seen (``duplicate_event``)
and would change their interaction counts. :func:`clear_state` removes a
prefix's keys afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from streamlearn.features.cluster_store import Client
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.schema import line_kind, to_epoch_ms
from streamlearn.features.store import InteractionStore
from streamlearn.learners.calibration import PlattCalibrator
from streamlearn.learners.holdout import decider_of
from streamlearn.learners.rollback import RollbackConfig
from streamlearn.metrics.calibration import RollingCalibration
from streamlearn.metrics.monitor import Monitor
from streamlearn.metrics.scorecard import Scorecard
from streamlearn.stream.config import ExperimentSettings, Settings
from streamlearn.stream.experiment_run import ExperimentRun, RollbackRun
from streamlearn.stream.feedback import FeedbackLoop, feedback_batches
from streamlearn.stream.processor import BatchOutput, DeadLetter, ModelSlot, Processor, Record
from streamlearn.stream.sources import BadRow, read_records
from streamlearn.stream.stores import open_store

__all__ = [
    "BacktestResult",
    "backtest",
    "clear_state",
    "delayed_labels",
    "file_records",
    "fresh_key_prefix",
    "named_specs",
]

EVENTS_TOPIC = "file"
LABELS_TOPIC = "delayed-labels"

#: The alert a drift event stands for in a backtest report.
DRIFT_ALERTS = {
    ("prediction", "psi"): "StreamlearnPredictionDriftPSI",
    ("prediction", "ks"): "StreamlearnPredictionKS",
    ("prediction", "positive_rate_ratio"): "StreamlearnPositiveRateShift",
    ("concept", None): "StreamlearnConceptDrift",
    ("feature", None): "StreamlearnFeatureDriftPSI",
    ("fairness", None): "StreamlearnFairnessGap",
}


def file_records(
    raw: Iterable[bytes | BadRow], refused: list[DeadLetter] | None = None
) -> Iterator[Record]:
    """Records of a file, in file order, each addressed by its line number.

    A :class:`BadRow` becomes a dead letter appended to ``refused`` (it is an
    error to meet one without that list).

    >>> refused = []
    >>> bad = BadRow("not_finite", "line 3, column 'x': 'nan' is not ...", b'{"x":"nan"}', 3)
    >>> [r.offset for r in file_records([b'{"event_id": "e"}', bad, b"{}"], refused)]
    [0, 2]
    >>> [(d.reason, d.offset) for d in refused]
    [('not_finite', 1)]
    """
    for offset, value in enumerate(raw):
        if isinstance(value, BadRow):
            if refused is None:
                raise ValueError(f"a refused row with nowhere to go: {value.detail}")
            refused.append(
                DeadLetter(value.reason, value.detail, value.value, EVENTS_TOPIC, 0, offset)
            )
            continue
        yield Record(line_kind(value), value, EVENTS_TOPIC, 0, offset)


def delayed_labels(records: Iterable[Record], delay_ms: int) -> Iterator[Record]:
    """Move each event's inline label to a label record ``delay_ms`` later in event time."""
    waiting: deque[tuple[int, bytes]] = deque()
    released = 0
    for record in records:
        obj = _event_with_label(record)
        if obj is None:
            yield record
            continue
        now = to_epoch_ms(obj["timestamp"])
        while waiting and waiting[0][0] <= now:
            yield Record("labels", waiting.popleft()[1], LABELS_TOPIC, 0, released)
            released += 1
        label = orjson.dumps(
            {"event_id": obj["event_id"], "timestamp": now + delay_ms, "label": obj.pop("label")}
        )
        waiting.append((now + delay_ms, label))
        yield Record("events", orjson.dumps(obj), record.topic, record.partition, record.offset)
    for _, label in waiting:
        yield Record("labels", label, LABELS_TOPIC, 0, released)
        released += 1


def _event_with_label(record: Record) -> dict[str, Any] | None:
    if record.kind != "events":
        return None
    try:
        obj = orjson.loads(record.value)
        if not isinstance(obj, dict) or obj.get("label") is None:
            return None
        to_epoch_ms(obj.get("timestamp"))
        if not isinstance(obj.get("event_id"), str):
            return None
    except (orjson.JSONDecodeError, ValueError):
        return None
    return obj


@dataclass
class BacktestResult:
    events: int = 0
    labels_learned: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    slots: list[ModelSlot] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    batch_seconds: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    #: With ``feedback="filter"``: the labels the filter withheld and the true recall.
    feedback: FeedbackLoop | None = None
    #: The champion's decisions: the policy's threshold and what it buys, the holdout.
    decisions: dict[str, Any] = field(default_factory=dict)
    #: The experiment's (or the rollback rule's) summary, when one ran.
    experiment: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """The report's ``summary.json``."""
        models = {}
        for slot in self.slots:
            assert slot.scorecard is not None and slot.monitor is not None
            drift = [
                {k: e[k] for k in ("kind", "name", "event_index", "timestamp", "value")}
                for e in slot.monitor.drift_events
            ]
            snapshot = slot.monitor.snapshot()
            t = slot.monitor.thresholds
            models[slot.name] = {
                "metrics": slot.scorecard.result(),
                "events_scored": slot.events_scored,
                "labels_learned": slot.labels_learned,
                "drift": drift,
                "alerts": [
                    {**event, "alert": alert_for(event["kind"], event["name"])} for event in drift
                ],
                "feature_drift": {
                    **snapshot["feature_summary"],
                    "top": slot.monitor.exported_features(),
                },
                "slices": snapshot["slices"],
                "fairness_band": [t.fairness_ratio_low, t.fairness_ratio_high],
            }
        summary = {
            "events": self.events,
            "labels_learned": self.labels_learned,
            "dead_letters": dict(sorted(self.dead_letters.items())),
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events / self.seconds, 1) if self.seconds else None,
            "models": models,
            "decisions": self.decisions,
            **({"feedback": self.feedback.summary()} if self.feedback is not None else {}),
        }
        if self.experiment is not None:
            summary["experiment"] = self.experiment
        return summary


def alert_for(kind: str, name: str) -> str:
    return DRIFT_ALERTS.get((kind, name)) or DRIFT_ALERTS.get((kind, None), "StreamlearnDrift")


def fresh_key_prefix(now: float | None = None) -> str:
    """A key prefix of its own for one backtest: ``backtest-<UTC time>-<random id>``.

    >>> fresh_key_prefix(0.0).startswith("backtest-19700101T000000Z-")
    True
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"backtest-{stamp}-{uuid.uuid4().hex[:8]}"


def clear_state(client: Client, prefix: str, chunk: int = 500) -> int:
    """Delete every key under ``prefix:`` (a backtest's state); returns how many.

    Glob characters in the prefix are matched literally.
    """
    pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix) + ":*"
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=chunk):
        batch.append(key)
        if len(batch) >= chunk:
            deleted += int(client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


def _store(settings: Settings, redis_url: str | None) -> InteractionStore:
    if redis_url is None:
        return MemoryStore(settings.store, settings.features.interactions)
    return open_store(settings, url=redis_url)


def _slot_names(specs: Iterable[str]) -> list[str]:
    names: list[str] = []
    for spec in specs:
        name, n = spec, 2
        while name in names:
            name, n = f"{spec}#{n}", n + 1
        names.append(name)
    return names


def named_specs(models: Iterable[str]) -> list[tuple[str, str]]:
    """``(name, spec)`` of each ``--model``: ``NAME=SPEC``, or a bare spec named after
    itself (``#2``, ``#3``... when repeated).

    >>> named_specs(["control=logistic", "logistic", "logistic"])
    [('control', 'logistic'), ('logistic', 'logistic'), ('logistic#2', 'logistic')]
    >>> named_specs(["pkg.mod:make"])
    [('pkg.mod:make', 'pkg.mod:make')]
    """
    pairs: list[tuple[str | None, str]] = []
    for model in models:
        name, sep, spec = model.partition("=")
        if sep and name and spec and name.replace("-", "_").replace("#", "_").isidentifier():
            pairs.append((name, spec))
        else:
            pairs.append((None, model))
    bare = iter(_slot_names(spec for name, spec in pairs if name is None))
    named = [(name if name is not None else next(bare), spec) for name, spec in pairs]
    names = [name for name, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"two models have the same name: {names}")
    return named


def _experiment_run(experiment: ExperimentSettings, names: list[str]) -> ExperimentRun:
    """The backtest's experiment: its arms checked against the models, no latency guardrail."""
    missing = [arm for arm in experiment.arms if arm not in names]
    if missing:
        raise ValueError(f"experiment arms {missing} are not among the models {names}")
    guardrails = experiment.guardrails.model_copy(
        update={"latency_p99_s": None, "latency_p99_ratio": None}
    )
    config = experiment.decision_config().model_copy(update={"guardrails": guardrails})
    return ExperimentRun(config, learn=experiment.learn, wall_clock=False)


def backtest(
    path: Path,
    settings: Settings,
    models: Iterable[str] = ("logistic",),
    label_delay_s: float | None = None,
    redis_url: str | None = None,
    predictions: IO[bytes] | None = None,
    dead_letters: IO[bytes] | None = None,
    batch_size: int = 1000,
    timeline_every: int = 500,
    on_batch: Callable[[int], None] | None = None,
    feedback: str = "none",
    measure_recall: bool = False,
    feedback_after: int = 0,
    experiment: ExperimentSettings | None = None,
    rollback: RollbackConfig | None = None,
    rollback_refresh_every: int = 5000,
) -> BacktestResult:
    """Run ``models`` side by side over the file at ``path``; write predictions as JSON lines.

    ``models``: specs, or ``NAME=SPEC`` (:func:`named_specs`); with an ``experiment`` its
    arms are models' names, with ``rollback`` the first model is the live one.

    The champion decides with the ``decision`` section's policy and holdout. With
    ``feedback="filter"`` the labels of the events it blocks are withheld
    (:mod:`stream.feedback`), and the result measures recall on the unfiltered truth
    (as it does with ``measure_recall`` and no filter, for a baseline); the events
    before index ``feedback_after`` keep their labels (the model learned unfiltered first).
    """
    if feedback not in ("none", "filter"):
        raise ValueError(f"feedback must be none or filter, not {feedback!r}")
    threshold = settings.model.threshold

    def watched() -> dict[str, Any]:
        return {
            "monitor": Monitor(settings.monitoring, threshold=threshold),
            "scorecard": Scorecard(threshold, settings.monitoring.precision_target),
        }

    named = named_specs(models)
    slots = [ModelSlot(name, settings.model.build(spec), spec, **watched()) for name, spec in named]
    run = None if experiment is None else _experiment_run(experiment, [n for n, _ in named])
    guard = None
    if rollback is not None:
        guard = RollbackRun(rollback, slots[0].name, rollback_refresh_every)
        slots.append(guard.reference_slot(slots[0], **watched()))
    processor = Processor(
        slots,
        _store(settings, redis_url),
        settings.features,
        settings.limits,
        settings.model.threshold,
        watermark_window=settings.store.watermark_window,
        watermark_quantile=settings.store.watermark_quantile,
        decider=decider_of(settings.decision, settings.model.threshold),
        experiment=run,
        rollback=guard,
    )
    calibration = settings.calibration
    processor.calibration = RollingCalibration(calibration.window, calibration.bins)
    processor.calibrated = RollingCalibration(calibration.window, calibration.bins)
    if calibration.method == "platt":
        processor.calibrator = PlattCalibrator(calibration.learning_rate)
    refused: list[DeadLetter] = []
    records: Iterable[Record] = file_records(read_records(path), refused)
    if label_delay_s is not None:
        records = delayed_labels(records, int(label_delay_s * 1000))
    result = BacktestResult(slots=slots)
    filtering = feedback == "filter"
    loop = result.feedback = (
        FeedbackLoop(filtering, feedback_after) if filtering or measure_recall else None
    )
    batches = (
        _batches(records, batch_size)
        if loop is None
        else feedback_batches(records, batch_size, loop)
    )
    started = time.perf_counter()
    next_point = timeline_every
    for batch in batches:
        t0 = time.perf_counter()
        out = processor.process(batch)
        if loop is not None:
            loop.observe(out.predictions)
        result.batch_seconds.append((len(batch), time.perf_counter() - t0))
        out.dead_letters[:0] = refused  # rows refused by the reader while this batch was read
        refused.clear()
        _write(out, predictions, dead_letters)
        result.labels_learned += out.labels_learned
        result.dead_letters.update(d.reason for d in out.dead_letters)
        if processor.events_seen >= next_point:
            result.timeline.append(_point(processor))
            result.timeline[-1]["threshold"] = processor.decider.threshold
            next_point = (processor.events_seen // timeline_every + 1) * timeline_every
        if on_batch is not None:
            on_batch(len(batch))
    if refused:  # refused rows after the last record
        _write(BatchOutput(dead_letters=list(refused)), None, dead_letters)
        result.dead_letters.update(d.reason for d in refused)
    processor.flush()
    result.slots = processor.slots
    result.seconds = time.perf_counter() - started
    result.events = processor.events_seen
    result.timeline.append(_point(processor))
    result.decisions = _decisions(processor)
    if run is not None:
        result.experiment = run.summary()
        if guard is not None:
            result.experiment["rollback"] = guard.summary()
    elif guard is not None:
        result.experiment = guard.summary()
    return result


def _decisions(processor: Processor) -> dict[str, Any]:
    """The champion's decision policy at the end, and its quality on the holdout."""
    decider = processor.decider
    policy = decider.policy
    quality = processor.holdout_quality
    quality.threshold = policy.threshold
    return {
        "policy": policy.name,
        "threshold": policy.threshold,
        "precision_lower_bound": round(policy.precision_lower_bound, 6),
        "recall": round(policy.recall, 6),
        "holdout_fraction": decider.holdout.fraction,
        "propensity_weighting": decider.propensity_weighting,
        "class_weights": decider.classes.metadata(),
        "holdout_quality": quality.report().as_dict(),
        "calibration": {
            "ece": processor.calibration.ece(),
            "reliability": processor.calibration.table(),
            **(
                {"ece_calibrated": processor.calibrated.ece()}
                if processor.calibrator is not None
                else {}
            ),
        },
    }


def _batches(records: Iterable[Record], size: int) -> Iterator[Sequence[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write(out: BatchOutput, predictions: IO[bytes] | None, dead_letters: IO[bytes] | None) -> None:
    if predictions is not None:
        for served, batch in ((True, out.predictions), (False, out.shadow_predictions)):
            for p in batch:
                line: dict[str, Any] = {"event_id": p.event_id, "score": p.score, "model": p.model}
                line.update(decision=p.decision, holdout=p.holdout)
                if p.arm is not None:
                    line.update(arm=p.arm, model_version=p.model_version, served=served)
                predictions.write(orjson.dumps(line) + b"\n")
    if dead_letters is not None:
        for letter in out.dead_letters:
            dead_letters.write(letter.to_json() + b"\n")


def _point(processor: Processor) -> dict[str, Any]:
    point: dict[str, Any] = {
        "event_index": processor.events_seen,
        "timestamp": processor.watermark_ms,
        "models": {},
    }
    for slot in processor.slots:
        assert slot.monitor is not None
        snap = slot.monitor.snapshot(refresh=True)
        point["models"][slot.name] = {
            "quality": snap["quality"],
            "prediction": snap["prediction"],
            "features": snap["features"],
            "labels_learned": slot.labels_learned,
        }
    run = processor.experiment or processor.rollback
    if run is not None:
        point["experiment"] = run.primary()  # each arm's primary metric so far
    return point
