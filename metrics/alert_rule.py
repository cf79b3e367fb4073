"""One alerting rule, and the scenarios under which its promtool test proves it fires.

A :class:`Scenario` is synthetic series in promtool's values notation, one
sample every :data:`INTERVAL` seconds: normal for :data:`BEFORE` seconds, then
abnormal, then normal again; the builders here write that notation.

Examples
--------
>>> selector("up", {"job": "streamlearn"})
'up{job="streamlearn"}'
>>> gauge_values(1.0, 0.0, during=30.0, after=30.0)
'1.0x39 0.0x1 1.0x1'
>>> counter_values([(0.0, 30.0), (5.0, 30.0)])
'0.0+0.0x1 5.0+5.0x1'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from streamlearn.metrics.instruments import JOB
from streamlearn.metrics.thresholds import duration_seconds

__all__ = [
    "AFTER",
    "BEFORE",
    "INSTANCE",
    "INTERVAL",
    "VALUE0",
    "VALUE3",
    "AlertRule",
    "Scenario",
    "Severity",
    "abnormal_seconds",
    "counter_values",
    "gauge_scenario",
    "gauge_values",
    "selector",
    "steps",
]

Severity = Literal["warning", "critical"]

#: An annotation's alert value, with three decimals or none.
VALUE3 = '{{ $value | printf "%.3f" }}'
VALUE0 = '{{ $value | printf "%.0f" }}'


@dataclass(frozen=True)
class Scenario:
    """Synthetic series under which an alert must fire, then resolve (a promtool test).

    Attributes
    ----------
    series
        ``(series selector, promtool values notation)`` pairs, one sample per
        ``interval``.
    start, end
        When the abnormal condition starts and ends (seconds from 0).
    resolve_after
        Seconds after ``end`` by which the alert must have resolved (range windows).
    value
        The alert's ``$value`` while firing (rendered into the expected annotations).
    labels
        The labels the firing alert carries besides its rule labels.
    also_firing
        Other severities of the same alert name that fire in this scenario.
    fire_after
        Seconds after ``start`` plus the rule's ``for`` at which the test
        expects the alert firing.
    """

    series: tuple[tuple[str, str], ...]
    start: float
    end: float
    value: float
    labels: dict[str, str] = field(default_factory=dict)
    resolve_after: float = 120.0
    also_firing: tuple[Severity, ...] = ()
    fire_after: float = 300.0


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule and the scenario of its promtool test."""

    alert: str
    group: str
    expr: str
    for_: str
    severity: Severity
    summary: str
    description: str
    scenarios: tuple[Scenario, ...] = ()

    def to_rule(self) -> dict[str, Any]:
        """The rule as a Prometheus rule-file entry."""
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description},
        }


#: Test sampling interval (several samples per 1m rate window, whatever the Prometheus version).
INTERVAL = 15.0
#: Seconds of normal series before a scenario's abnormal condition starts.
BEFORE = 600.0
#: The labels of the worker a scenario's series come from.
INSTANCE = {"job": JOB, "instance": "worker-0:9100"}
#: Seconds of normal series after a scenario's abnormal condition ends.
AFTER = 1800.0


def abnormal_seconds(for_: str) -> float:
    """How long a scenario's abnormal condition lasts: the rule's ``for``, then 15m more.

    Examples
    --------
    >>> abnormal_seconds("5m")
    1200.0
    """
    return duration_seconds(for_) + 900.0


def selector(name: str, labels: dict[str, str]) -> str:
    """A series selector: ``name{k="v",...}``."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


def steps(seconds: float) -> int:
    """Samples in ``seconds`` at the test interval."""
    return int(round(seconds / INTERVAL))


def gauge_values(normal: float, abnormal: float, during: float, after: float) -> str:
    """Values notation: ``normal`` until 10m, ``abnormal`` for ``during``, then ``normal``."""
    parts = [(normal, steps(BEFORE)), (abnormal, steps(during)), (normal, steps(after))]
    return " ".join(f"{v!r}x{n - 1}" for v, n in parts)


def counter_values(phases: list[tuple[float, float]]) -> str:
    """Values notation of a counter growing by ``inc`` per sample for each ``(inc, seconds)``."""
    out = []
    value = 0.0
    first = True
    for inc, seconds in phases:
        n = steps(seconds)
        start = value if first else value + inc
        out.append(f"{start!r}+{inc!r}x{n - 1}")
        value = start + inc * (n - 1)
        first = False
    return " ".join(out)


def gauge_scenario(
    name: str,
    normal: float,
    abnormal: float,
    for_: str,
    labels: dict[str, str] | None = None,
    also_firing: tuple[Severity, ...] = (),
    extra: tuple[tuple[str, str], ...] = (),
) -> Scenario:
    """A gauge ``normal``, then ``abnormal`` for ``for_`` and 15m more, then ``normal``.

    ``labels`` are added to the worker's; ``extra`` series are given as they are.
    """
    series_labels = {**INSTANCE, **(labels or {})}
    during = abnormal_seconds(for_)
    after = AFTER
    return Scenario(
        series=(
            (selector(name, series_labels), gauge_values(normal, abnormal, during, after)),
            *extra,
        ),
        start=BEFORE,
        end=BEFORE + during,
        value=abnormal,
        labels=series_labels,
        also_firing=also_firing,
    )
