"""What each arm of an experiment (or of the rollback rule) is monitored on, as plain data.

:class:`ArmMonitors` gives every arm a :class:`metrics.monitor.Monitor` of its own, the
champion's monitoring settings without feature drift and slices (every arm sees the same
features; what differs is its scores): prediction drift and online quality of the scores
credited to the arm, plus the Brier score and the positive-label rate of its labels over
the same quality window. The processor feeds it the scores it already computed, so
nothing is scored twice; an arm that is not configured is ignored, so the series'
``arm`` label stays within the configured arms.

:func:`guardrail_values` and :func:`guardrail_limits` are what an experiment's
guardrails judge (:class:`learners.experiment.GuardrailConfig`), per arm and as limits,
so a panel can draw each value against its limit. Values are None where unknown or not
finite (no prediction yet, a control without positives).

:class:`metrics.experiment_metrics.ExperimentMetrics` exports both.

Examples
--------
>>> from streamlearn.metrics.thresholds import MonitoringConfig
>>> monitors = ArmMonitors(MonitoringConfig(drift_warmup_labels=0), 0.5, ["a", "b"])
>>> for i in range(10):
...     monitors.observe_prediction("b", 0.8, event_ms=i)
...     monitors.observe_label("b", 0.8, i % 2 == 0, event_ms=i)
>>> monitors.observe_prediction("unknown", 0.8)  # not an arm: ignored
>>> report = monitors.report()["b"]
>>> report["predictions"], report["labels"], report["positive_label_rate"]
(10, 10, 0.5)
>>> round(report["brier"], 2), round(report["log_loss"], 4)
(0.34, 0.9163)
>>> monitors.report()["a"]["log_loss"] is None
True
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from streamlearn.learners.experiment import Experiment, GuardrailConfig, positive_rate_shift
from streamlearn.metrics.monitor import Monitor
from streamlearn.metrics.thresholds import MonitoringConfig

__all__ = [
    "ARM_MONITOR_KEYS",
    "GUARDRAILS",
    "ArmMonitors",
    "LabelWindow",
    "guardrail_limits",
    "guardrail_values",
]

#: The keys of an arm's :meth:`ArmMonitors.report` that are exported as series.
ARM_MONITOR_KEYS: tuple[str, ...] = (
    "log_loss",
    "roc_auc",
    "brier",
    "positive_label_rate",
    "psi",
    "ks",
    "positive_rate",
    "positive_rate_ratio",
)

#: What the guardrails judge, per arm: the only values of the ``guardrail`` label.
#: ``predicted_positive_rate`` has no limit of its own; its shift from the control's has.
GUARDRAILS: tuple[str, ...] = (
    "latency_p99_s",
    "latency_p99_ratio",
    "error_ratio",
    "predicted_positive_rate",
    "positive_rate_shift",
)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


class LabelWindow:
    """The Brier score and the positive-label rate of the last ``window`` labels, O(1)
    per label.

    Examples
    --------
    >>> w = LabelWindow(2)
    >>> w.brier(), w.positive_rate()
    (None, None)
    >>> for y, p in [(True, 0.5), (True, 1.0), (False, 0.5)]:
    ...     w.update(y, p)
    >>> w.brier(), w.positive_rate()
    (0.125, 0.5)
    """

    def __init__(self, window: int) -> None:
        self._items: deque[tuple[bool, float]] = deque(maxlen=window)
        self._squares = 0.0
        self._positives = 0

    def update(self, y_true: bool, p: float) -> None:
        if len(self._items) == self._items.maxlen:
            old_y, old_p = self._items[0]
            self._squares -= (old_p - old_y) ** 2
            self._positives -= old_y
        self._items.append((y_true, p))
        self._squares += (p - y_true) ** 2
        self._positives += y_true

    def brier(self) -> float | None:
        n = len(self._items)
        return max(0.0, self._squares / n) if n else None

    def positive_rate(self) -> float | None:
        n = len(self._items)
        return self._positives / n if n else None


class ArmMonitors:
    """A monitor per arm, fed the scores and labels credited to it.

    Parameters
    ----------
    config
        The champion's monitoring settings (windows, warm-up, cadence); feature drift
        and slices are left out.
    threshold
        The model's configured threshold (``model.threshold``), as for the champion.
    arms
        The arms monitored; any other name is ignored.
    """

    def __init__(self, config: MonitoringConfig, threshold: float, arms: Iterable[str]) -> None:
        light = config.model_copy(
            update={"features": (), "max_monitored_features": 0, "slices": ()}
        )
        self.monitors = {arm: Monitor(light, None, threshold) for arm in arms}
        self.windows = {arm: LabelWindow(config.quality_window) for arm in self.monitors}

    def observe_prediction(self, arm: str, score: float, event_ms: float | None = None) -> None:
        """A finite score of ``arm`` credited to it (served, or scored in shadow)."""
        monitor = self.monitors.get(arm)
        if monitor is not None:
            monitor.observe_prediction(score, False, None, event_ms)

    def observe_label(
        self, arm: str, score: float, y_true: bool, event_ms: float | None = None
    ) -> None:
        """A label credited to ``arm``, with the finite score ``arm`` gave its event."""
        monitor = self.monitors.get(arm)
        if monitor is not None:
            monitor.observe_label(score, y_true, 1.0, event_ms)
            self.windows[arm].update(y_true, score)

    def report(self) -> dict[str, dict[str, float | None]]:
        """Per arm its counts and :data:`ARM_MONITOR_KEYS` from the latest evaluation."""
        out: dict[str, dict[str, float | None]] = {}
        for arm, monitor in self.monitors.items():
            drift, quality = monitor.reports()
            window = self.windows[arm]
            out[arm] = {
                "predictions": monitor.n_predictions,
                "labels": monitor.n_labels,
                "log_loss": _finite(quality.log_loss),
                "roc_auc": _finite(quality.roc_auc),
                "brier": _finite(window.brier()),
                "positive_label_rate": window.positive_rate(),
                "psi": _finite(drift.psi),
                "ks": _finite(drift.ks),
                "positive_rate": _finite(drift.positive_rate),
                "positive_rate_ratio": _finite(drift.positive_rate_ratio),
            }
        return out


def guardrail_values(experiment: Experiment) -> dict[str, dict[str, float | None]]:
    """Per arm the values of :data:`GUARDRAILS` as the guardrails judge them: p99
    scoring latency, its ratio to the control's, error ratio, predicted-positive rate
    and its relative shift from the control's (the control has no ratio nor shift).

    Examples
    --------
    >>> from streamlearn.learners.experiment import ExperimentConfig
    >>> e = Experiment(ExperimentConfig(id="x", arms={"c": 0.5, "t": 0.5}))
    >>> for i in range(100):
    ...     e.observe_prediction("c", 0.001, score=0.9 if i < 20 else 0.1)
    ...     e.observe_prediction("t", 0.002, ok=i > 0, score=0.9 if i < 31 else 0.1)
    >>> v = guardrail_values(e)
    >>> v["c"]["positive_rate_shift"], v["t"]["error_ratio"], v["t"]["predicted_positive_rate"]
    (None, 0.01, 0.30303030303030304)
    >>> round(v["t"]["positive_rate_shift"], 3)  # |0.303 - 0.2| / 0.2
    0.515
    >>> 1.8 < v["t"]["latency_p99_ratio"] < 2.2
    True
    """
    control = experiment.arms[experiment.config.control]
    p99_c = _finite(control.latency.quantile(0.99))
    ok_c = max(1, control.predictions - control.errors)
    rate_c = control.predicted_positive / ok_c
    out: dict[str, dict[str, float | None]] = {}
    for arm, stats in experiment.arms.items():
        values: dict[str, float | None] = dict.fromkeys(GUARDRAILS)
        if stats.predictions:
            p99 = _finite(stats.latency.quantile(0.99))
            rate = stats.predicted_positive / max(1, stats.predictions - stats.errors)
            values["latency_p99_s"] = p99
            values["error_ratio"] = stats.errors / stats.predictions
            values["predicted_positive_rate"] = rate
            if arm != experiment.config.control and control.predictions:
                if p99 is not None and p99_c:
                    values["latency_p99_ratio"] = p99 / p99_c
                values["positive_rate_shift"] = positive_rate_shift(rate, rate_c, ok_c)
        out[arm] = values
    return out


def guardrail_limits(config: GuardrailConfig) -> dict[str, float]:
    """The limits in force, by guardrail; a guardrail not checked has none.

    Examples
    --------
    >>> guardrail_limits(GuardrailConfig(latency_p99_s=0.05, error_ratio=None))
    {'latency_p99_s': 0.05, 'latency_p99_ratio': 1.5, 'positive_rate_shift': 0.5}
    """
    limits = {
        "latency_p99_s": config.latency_p99_s,
        "latency_p99_ratio": config.latency_p99_ratio,
        "error_ratio": config.error_ratio,
        "positive_rate_shift": config.positive_rate_shift,
    }
    return {name: value for name, value in limits.items() if value is not None}
