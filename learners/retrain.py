"""Retraining from the training log: a window, a time split, a fresh model, its evaluation.

The guide's scheduled retraining ("retrain weekly on the last 30 days") for a system
that also learns online. The training log (the ``examples`` topic) holds every learned
label with the features the model saw; this module is the pure part of retraining
from it, with no I/O:

1. :func:`parse_duration` reads a window length (``30d``, ``12h``, ``90m``).
2. :func:`split_window` keeps the examples whose event time is in the window (ending at
   ``until``, by default the newest event time of the log, so a replayed log of the past
   is handled like a live one) and splits them **by time**: the last ``holdout`` fraction
   of the span of the window's examples is held out, the rest is for training. The split
   follows the guide's time-based split for temporal data (train on the earlier days,
   validate on the later ones), never a split by position.
3. :func:`retrain` trains a fresh model from a spec on the earlier part, in event-time
   order (or warm-starts: a deep copy of a given model learning on), then scores the
   held-out later part with it and with the current model, without learning on it:
   log loss (River's), exact ROC AUC, positive rates, counts. Not progressive
   evaluation: the candidate is judged on labels it never learned.

The :class:`RetrainResult` serialises to JSON, and flattens its evaluation into the
registry's snapshot metrics (:meth:`RetrainResult.registry_metrics`).

Examples
--------
>>> log = [LoggedExample(f"e{i}", {"x": float(i % 2)}, float(i % 2), 1.0, 1_000 * i)
...        for i in range(100)]
>>> model, result = retrain(log, since_s=parse_duration("1h"), spec="logistic")
>>> result.window.trained, result.window.held_out
(80, 20)
>>> result.candidate.examples, result.candidate.positive_rate
(20, 0.5)
>>> result.candidate.roc_auc
1.0
>>> result.to_dict()["window"]["cutoff_ms"]
79200
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from river import base, metrics

from streamlearn.learners.models import build_model, is_positive, learn, score
from streamlearn.metrics.quality import roc_auc

__all__ = [
    "EmptyWindowError",
    "Evaluation",
    "LoggedExample",
    "RetrainResult",
    "Window",
    "evaluate",
    "evaluate_served",
    "parse_duration",
    "retrain",
    "split_window",
]

_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*$")


class EmptyWindowError(ValueError):
    """The window holds no example, or too few to train on and evaluate."""


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number and a unit, ``s``, ``m``, ``h``, ``d`` or ``w``.

    >>> parse_duration("30d"), parse_duration("12h"), parse_duration("1.5m")
    (2592000.0, 43200.0, 90.0)
    >>> parse_duration("30 days")
    Traceback (most recent call last):
    ...
    ValueError: a duration is a number and a unit (s, m, h, d, w), e.g. 30d or 12h, not '30 days'
    >>> parse_duration("0h")
    Traceback (most recent call last):
    ...
    ValueError: a duration must be positive, not '0h'
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"a duration is a number and a unit (s, m, h, d, w), e.g. 30d or 12h, not {text!r}"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"a duration must be positive, not {text!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class LoggedExample:
    """One line of the training log: an event's features, its label, weight and times."""

    event_id: str
    x: dict[str, Any]
    label: float
    weight: float
    #: The event's time (ms): the window and the split are on this time.
    event_ms: int
    #: The label's time (ms); the event's when not known.
    label_ms: int | None = None
    #: What the serving model scored the event (None: not recorded).
    score: float | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """The window of the log and its split: train on ``[start, cutoff)``, evaluate on
    ``[cutoff, until]`` (event times in ms)."""

    start_ms: int
    cutoff_ms: int
    until_ms: int
    #: Examples in the window before the cutoff, and from it on.
    trained: int
    held_out: int
    #: Examples of the log outside the window.
    outside: int


def split_window(
    examples: Iterable[LoggedExample],
    since_s: float,
    holdout: float = 0.2,
    until_ms: int | None = None,
) -> tuple[list[LoggedExample], list[LoggedExample], Window]:
    """The window's earlier examples (to train on) and its later ones (held out), by time.

    The window is ``(until - since, until]``; ``until`` defaults to the newest event
    time in ``examples``. The cutoff is at ``1 - holdout`` of the time between the
    window's first and last example; both parts come back sorted by event time (then
    label time), whatever order the log had.

    >>> log = [LoggedExample(f"e{t}", {}, 1.0, 1.0, t) for t in (9_000, 1_000, 5_000, 2_000)]
    >>> train, test, window = split_window(log, since_s=10.0, holdout=0.5)
    >>> [e.event_ms for e in train], [e.event_ms for e in test], window.cutoff_ms
    ([1000, 2000], [5000, 9000], 5000)
    >>> try:
    ...     split_window(log, since_s=10.0, until_ms=50_000)
    ... except EmptyWindowError as error:
    ...     print(error)
    no example in the window of 10s ending at 50000 ms (4 outside it)
    """
    if not 0 < holdout < 1:
        raise ValueError(f"the held-out fraction must be between 0 and 1, got {holdout}")
    if not since_s > 0:
        raise ValueError(f"the window must be positive, got {since_s} s")
    everything = list(examples)
    if until_ms is None:
        if not everything:
            raise EmptyWindowError("the training log is empty: no example to train on")
        until_ms = max(e.event_ms for e in everything)
    start_ms = until_ms - round(since_s * 1000)
    inside = [e for e in everything if start_ms < e.event_ms <= until_ms]
    if not inside:
        raise EmptyWindowError(
            f"no example in the window of {since_s:g}s ending at {until_ms} ms"
            f" ({len(everything)} outside it)"
        )
    inside.sort(key=lambda e: (e.event_ms, e.label_ms or e.event_ms))
    first, last = inside[0].event_ms, inside[-1].event_ms
    cutoff_ms = first + math.ceil((1 - holdout) * (last - first))
    train = [e for e in inside if e.event_ms < cutoff_ms]
    test = [e for e in inside if e.event_ms >= cutoff_ms]
    if not train or not test:
        raise EmptyWindowError(
            f"the window's {len(inside)} examples span {last - first} ms: too short to split"
            " into a training part and a later held-out part"
        )
    window = Window(
        start_ms, cutoff_ms, until_ms, len(train), len(test), len(everything) - len(inside)
    )
    return train, test, window


class _WeightedMetric(Protocol):
    """What is used of River's ``LogLoss`` (River does not annotate its metrics)."""

    def update(self, y_true: bool, y_pred: dict[bool, float], w: float = 1.0) -> None: ...

    def get(self) -> float: ...


def _log_loss() -> _WeightedMetric:
    factory: Callable[[], _WeightedMetric] = metrics.LogLoss
    return factory()


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A model's quality on the held-out slice: counts, River's log loss, exact ROC AUC."""

    examples: int
    positives: int
    #: The share of positive labels (the click-through rate of the slice).
    positive_rate: float
    #: The model's mean score: close to ``positive_rate`` when it is calibrated.
    mean_score: float
    log_loss: float
    #: None when the slice has a single class.
    roc_auc: float | None


def _evaluation(truths: list[bool], scores: list[float], weights: list[float]) -> Evaluation:
    loss = _log_loss()
    for y, p, w in zip(truths, scores, weights, strict=True):
        loss.update(y, {False: 1.0 - p, True: p}, w)
    positives = sum(truths)
    return Evaluation(
        examples=len(truths),
        positives=positives,
        positive_rate=positives / len(truths),
        mean_score=math.fsum(scores) / len(scores),
        log_loss=loss.get(),
        roc_auc=roc_auc(truths, scores, weights),
    )


def evaluate(model: base.Classifier, examples: Sequence[LoggedExample]) -> Evaluation:
    """Score ``examples`` with ``model`` without learning on them.

    The log loss and the AUC weigh each example by its label weight.

    >>> from streamlearn.learners.models import build_model
    >>> held_out = [LoggedExample("a", {}, 1.0, 1.0, 0), LoggedExample("b", {}, 0.0, 1.0, 0)]
    >>> result = evaluate(build_model("logistic"), held_out)
    >>> result.positive_rate, result.mean_score, round(result.log_loss, 4), result.roc_auc
    (0.5, 0.5, 0.6931, 0.5)
    """
    if not examples:
        raise EmptyWindowError("no held-out example to evaluate on")
    truths = [is_positive(e.label) for e in examples]
    scores = [score(model, e.x) for e in examples]
    return _evaluation(truths, scores, [e.weight for e in examples])


def evaluate_served(examples: Sequence[LoggedExample]) -> Evaluation | None:
    """The quality of the scores served for ``examples`` (those that recorded one).

    These are the live model's scores when each event came, before it learned the
    label: the online learner's own test-then-train quality on the slice, which a
    snapshot of it taken later (having learned the slice) would overstate.
    None when no example recorded its score.

    >>> served = [LoggedExample("a", {}, 1.0, 1.0, 0, score=0.9),
    ...           LoggedExample("b", {}, 0.0, 1.0, 0, score=0.2),
    ...           LoggedExample("c", {}, 0.0, 1.0, 0)]
    >>> evaluate_served(served).examples, evaluate_served(served).roc_auc
    (2, 1.0)
    >>> evaluate_served(served[2:]) is None
    True
    """
    scored = [e for e in examples if e.score is not None]
    if not scored:
        return None
    scores = [min(1.0, max(0.0, e.score)) for e in scored if e.score is not None]
    return _evaluation([is_positive(e.label) for e in scored], scores, [e.weight for e in scored])


@dataclass(frozen=True, slots=True)
class RetrainResult:
    """What a retraining did: its window, the candidate's and the current model's quality."""

    spec: str
    #: The version the candidate was warm-started from (None: a fresh model).
    warm_start: str | None
    window: Window
    #: Positive labels the candidate learned.
    trained_positives: int
    candidate: Evaluation
    #: The current model on the same slice (None: none was given).
    current: Evaluation | None
    current_version: str | None
    #: The scores served at the time, as the training log recorded them (None: none).
    served: Evaluation | None = None

    @property
    def better(self) -> bool | None:
        """Whether the candidate's held-out log loss is lower than the current model's."""
        if self.current is None:
            return None
        return self.candidate.log_loss < self.current.log_loss

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON types."""
        doc = asdict(self)
        doc["better"] = self.better
        return doc

    def registry_metrics(self) -> dict[str, float | None]:
        """The evaluation as a registry snapshot's metrics (flat names, numbers).

        ``log_loss`` and ``roc_auc`` are the candidate's on the held-out slice, so
        ``model list`` shows them; ``current_*`` the current model's there.
        """
        out: dict[str, float | None] = {
            "log_loss": self.candidate.log_loss,
            "roc_auc": self.candidate.roc_auc,
            "holdout_examples": float(self.window.held_out),
            "holdout_positive_rate": self.candidate.positive_rate,
            "holdout_mean_score": self.candidate.mean_score,
            "trained_examples": float(self.window.trained),
            "window_start_ms": float(self.window.start_ms),
            "window_cutoff_ms": float(self.window.cutoff_ms),
            "window_until_ms": float(self.window.until_ms),
        }
        if self.current is not None:
            out["current_log_loss"] = self.current.log_loss
            out["current_roc_auc"] = self.current.roc_auc
        if self.served is not None:
            out["served_log_loss"] = self.served.log_loss
            out["served_roc_auc"] = self.served.roc_auc
        return out


def retrain(
    examples: Iterable[LoggedExample],
    since_s: float,
    *,
    spec: str = "logistic",
    holdout: float = 0.2,
    until_ms: int | None = None,
    warm_start: base.Classifier | None = None,
    warm_start_version: str | None = None,
    current: base.Classifier | None = None,
    current_version: str | None = None,
    max_categories: int | None = None,
    category_buckets: int | None = None,
) -> tuple[base.Classifier, RetrainResult]:
    """Train a model on the window's earlier part and evaluate it on the later part.

    The candidate is ``build_model(spec)`` (with the vocabulary bounds when given), or a
    deep copy of ``warm_start`` learning on; it learns the training part in event-time
    order, each example with its weight. ``current`` (left untouched) is scored on the
    held-out part beside it.

    Raises
    ------
    EmptyWindowError
        No example in the window, or too few to split.
    ValueError
        A bad spec, window or held-out fraction.
    """
    train, test, window = split_window(examples, since_s, holdout, until_ms)
    if warm_start is not None:
        model = copy.deepcopy(warm_start)
    elif max_categories is not None and category_buckets is not None:
        model = build_model(spec, max_categories, category_buckets)
    else:
        model = build_model(spec)
    for example in train:
        learn(model, example.x, example.label, example.weight)
    result = RetrainResult(
        spec=spec,
        warm_start=warm_start_version if warm_start is not None else None,
        window=window,
        trained_positives=sum(is_positive(e.label) for e in train),
        candidate=evaluate(model, test),
        current=evaluate(current, test) if current is not None else None,
        current_version=current_version if current is not None else None,
        served=evaluate_served(test),
    )
    return model, result
