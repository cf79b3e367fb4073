"""The benchmark's goals: their thresholds and their verdicts on the measured numbers.

Pure functions of the ``results`` mapping that ``python -m bench`` fills in (see
:mod:`bench.__main__` for its shape); :mod:`bench.tables` puts the verdicts in
the table.

Examples
--------
>>> results = {
...     "ceiling": {"events_per_s": 4000.0},
...     "worker": {"off": {"events_per_s": 1000.0, "workers": 1}},
... }
>>> goal = goals_of(results)[0]
>>> goal.name, goal.passed, goal.measured
('worker >= 50% of ceiling', False, '25% (checkpoints off)')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GOALS",
    "WORKER_RUNS",
    "Goal",
    "cpu_per_event_us",
    "goals_of",
    "goals_together",
    "machine_full_note",
    "ceiling_ratio",
]

#: Goal name -> threshold; the verdicts come from :func:`goals_of`.
GOALS: dict[str, float] = {
    "worker >= 50% of ceiling": 0.5,
    "p99 < 50 ms at 50% of max rate": 50.0,
    "2 workers >= 1.5x one": 1.5,
    "RSS growth after warm-up < 10%": 10.0,
}

#: Worker run -> what it is (its row reads "worker, " and this).
WORKER_RUNS = {
    "off": "checkpoints off",
    "transactions": "checkpoints + transactions",
    "librdkafka_off": "librdkafka client, checkpoints off",
    "librdkafka_transactions": "librdkafka client, checkpoints + transactions",
}


@dataclass
class Goal:
    """One goal: what was measured and whether it passed (None: not measured)."""

    name: str
    row: str
    measured: str
    passed: bool | None


def ceiling_ratio(value: float | None, ceiling: float | None) -> float | None:
    """``value`` as a fraction of the ceiling; None without either.

    >>> ceiling_ratio(1000.0, 4000.0), ceiling_ratio(1000.0, None)
    (0.25, None)
    """
    if value is None or not ceiling:
        return None
    return value / ceiling


def cpu_per_event_us(run: Mapping[str, Any]) -> dict[str, float]:
    """Each process's CPU time per event of a run, in microseconds.

    >>> cpu_per_event_us({"events": 1000, "cpu": {"worker-0": {"cpu_s": 0.5},
    ...                                           "redis": {"cpu_s": 0.2}}})
    {'worker-0': 500.0, 'redis': 200.0}
    """
    events = run.get("events") or 0
    if not events:
        return {}
    return {name: 1e6 * entry["cpu_s"] / events for name, entry in run.get("cpu", {}).items()}


def machine_full_note(run: Mapping[str, Any], cores: int | None) -> str:
    """What the run's CPU per event allows once every core is busy, against its own rate.

    Two workers on a machine the broker and Redis share can at best go as fast as
    the cores allow at these costs per event (a little more when larger batches
    make them cheaper), whatever the second worker adds.

    >>> cpu = {"worker-0": {"cpu_s": 0.5}, "redis": {"cpu_s": 0.2}, "kafka": {"cpu_s": 0.1}}
    >>> print(machine_full_note({"events": 1000, "events_per_s": 2000.0, "cpu": cpu}, 2))
    CPU per event: worker-0 500, redis 200, kafka 100 µs; 2 cores full at 2,500 events/s (1.25x)
    """
    costs = cpu_per_event_us(run)
    total_us = sum(costs.values())
    if not cores or total_us <= 0 or not run.get("events_per_s"):
        return ""
    full = cores * 1e6 / total_us
    each = ", ".join(f"{name} {us:.0f}" for name, us in costs.items())
    return (
        f"CPU per event: {each} µs; {cores} cores full at {full:,.0f} events/s "
        f"({full / run['events_per_s']:.2f}x)"
    )


def goals_together(results: Mapping[str, Any]) -> str:
    """What the worker and scaling goals need together, against the scaling runs' CPU.

    A worker at 50% of the ceiling serves ``ceiling / 2`` events/s, and two workers at
    1.5x that serve ``0.75 * ceiling``. Every process of the run (workers, broker, Redis,
    the rest) shares the cores, so both goals hold only if the CPU they spend per event
    together fits: at most ``cores / (0.75 * ceiling)``, whatever the split between them.

    >>> cpu = {"worker-0": {"cpu_s": 0.4}, "kafka": {"cpu_s": 0.08}, "redis": {"cpu_s": 0.2}}
    >>> results = {"ceiling": {"events_per_s": 6000.0},
    ...            "scaling": {"one": {"events": 1000, "cpu": cpu}, "cores": 2}}
    >>> print(goals_together(results))  # doctest: +NORMALIZE_WHITESPACE
    worker >= 50% of ceiling and 2 workers >= 1.5x one, together: 4,500 events/s on 2 cores,
    at most 444 µs CPU per event for all processes; measured 680 µs with one
    (worker-0 400, kafka 80, redis 200)
    >>> goals_together({"ceiling": {"events_per_s": 6000.0}})
    ''
    """
    ceiling = results.get("ceiling", {}).get("events_per_s")
    scaling = results.get("scaling", {})
    cores = scaling.get("cores")
    measured = []
    for name in ("one", "two"):
        costs = cpu_per_event_us(scaling[name]) if name in scaling else {}
        if costs:
            each = ", ".join(f"{process} {us:.0f}" for process, us in costs.items())
            measured.append(f"{sum(costs.values()):.0f} µs with {name} ({each})")
    if not ceiling or not cores or not measured:
        return ""
    rate = ceiling * GOALS["worker >= 50% of ceiling"] * GOALS["2 workers >= 1.5x one"]
    return (
        f"worker >= 50% of ceiling and 2 workers >= 1.5x one, together: {rate:,.0f} events/s "
        f"on {cores} cores, at most {cores * 1e6 / rate:.0f} µs CPU per event for all "
        f"processes; measured {' and '.join(measured)}"
    )


def _unless_nan(figure: float, passed: bool) -> bool | None:
    """A goal's verdict, or None when its figure was not measured (NaN)."""
    return None if math.isnan(figure) else passed


def goals_of(results: Mapping[str, Any]) -> list[Goal]:
    """The goals' verdicts on the measured numbers; a goal not measured passes nothing."""
    goals: list[Goal] = []
    ceiling = results.get("ceiling", {}).get("events_per_s")
    name = "worker >= 50% of ceiling"
    for run_name in WORKER_RUNS:
        run = results.get("worker", {}).get(run_name)
        if run is None:
            continue
        ratio = ceiling_ratio(run["events_per_s"], ceiling)
        measured = (
            "no ceiling measured" if ratio is None else f"{ratio:.0%} ({WORKER_RUNS[run_name]})"
        )
        passed = None if ratio is None else ratio >= GOALS[name]
        goals.append(Goal(name, f"worker_{run_name}", measured, passed))
    name = "p99 < 50 ms at 50% of max rate"
    half = [p for p in results.get("latency", []) if math.isclose(p["fraction"], 0.5)]
    if half:
        p99 = half[0]["p99"]
        goals.append(
            Goal(name, "latency_50", f"p99 {p99:.1f} ms", _unless_nan(p99, p99 < GOALS[name]))
        )
    name = "2 workers >= 1.5x one"
    two = results.get("scaling", {}).get("two")
    if two is not None:
        speedup = two.get("speedup", math.nan)
        passed = _unless_nan(speedup, speedup >= GOALS[name])
        goals.append(Goal(name, "scaling_two", f"{speedup:.2f}x", passed))
    name = "RSS growth after warm-up < 10%"
    if "memory" in results:
        growth = results["memory"]["growth_pct"]
        goals.append(Goal(name, "memory", f"{growth:+.1f}%", growth < GOALS[name]))
    return goals
