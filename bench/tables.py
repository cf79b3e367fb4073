"""The benchmark's results as rows, goals, a Markdown report, JSON and a rich table.

Everything here is a pure function of the ``results`` mapping that
``python -m bench`` fills in (see :mod:`bench.__main__` for its shape), so the
tables and the goal verdicts are tested without any server.

Examples
--------
>>> results = {
...     "ceiling": {"events_per_s": 4000.0},
...     "worker": {"off": {"events_per_s": 1000.0, "workers": 1}},
... }
>>> [(r.scenario, r.ratio) for r in rows_of(results)]
[('ceiling: bare River loop, features precomputed', 1.0), ('worker, checkpoints off', 0.25)]
>>> goal = goals_of(results)[0]
>>> goal.name, goal.passed, goal.measured
('worker >= 50% of ceiling', False, '25% (checkpoints off)')
>>> percentiles([5.0, 1.0, 3.0, 2.0, 4.0])
{'p50': 3.0, 'p95': 5.0, 'p99': 5.0, 'max': 5.0}
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

__all__ = [
    "GOALS",
    "Goal",
    "Row",
    "cpu_per_event_us",
    "goals_of",
    "goals_together",
    "machine_full_note",
    "markdown",
    "percentiles",
    "rich_table",
    "rows_of",
    "write_reports",
]

#: Goal name -> threshold; the verdicts come from :func:`goals_of`.
GOALS: dict[str, float] = {
    "worker >= 50% of ceiling": 0.5,
    "p99 < 50 ms at 50% of max rate": 50.0,
    "2 workers >= 1.5x one": 1.5,
    "RSS growth after warm-up < 10%": 10.0,
}

#: Worker run -> what it is (its row reads "worker, " and this).
_WORKER_RUNS = {
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


@dataclass
class Row:
    """One line of the table."""

    key: str
    scenario: str
    events_per_s: float | None = None
    ratio: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    rss: str = ""
    cpu: str = ""
    goal: str = ""
    passed: bool | None = None
    note: str = ""


def percentiles(values: Iterable[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles and the maximum, keyed ``p50`` ... ``max``; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return {**{f"p{q}": math.nan for q in qs}, "max": math.nan}
    out = {f"p{q}": ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1] for q in qs}
    out["max"] = ordered[-1]
    return out


def _warmup_note(rounds: Sequence[Mapping[str, float]]) -> str:
    """The broker's CPU in the unreported warm-up runs before the latency points.

    >>> _warmup_note([{"core_pct": 71.0}, {"core_pct": 48.2}, {"core_pct": 46.0}])
    'after 3 warm-up runs, broker at 71, 48, 46% of a core'
    """
    if not rounds:
        return ""
    shares = ", ".join(f"{r['core_pct']:.0f}" for r in rounds)
    return f"after {len(rounds)} warm-up runs, broker at {shares}% of a core"


def _startup_note(with_startup: dict[str, float] | None) -> str:
    """The latency figures with the worker's first seconds in them.

    >>> _startup_note({"p50": 20.0, "p99": 300.0, "max": 400.0})
    'with the start-up: p99 300 ms, max 400 ms'
    """
    if not with_startup:
        return ""
    return f"with the start-up: p99 {with_startup['p99']:.0f} ms, max {with_startup['max']:.0f} ms"


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    if value is None or not ceiling:
        return None
    return value / ceiling


def _cpu_text(cpu: Mapping[str, Mapping[str, float]] | None) -> str:
    """``worker-0 95%, kafka 40%``: CPU time of each process as % of one core over the run."""
    if not cpu:
        return ""
    return ", ".join(f"{name} {entry['core_pct']:.0f}%" for name, entry in cpu.items())


def _rss_text(rss: Mapping[str, float] | None) -> str:
    if not rss:
        return ""
    return " → ".join(f"{value:.0f}" for value in rss.values()) + " MB"


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


def _redis_note(us_per_event: float | None) -> str:
    """Redis's single thread per event, and the rate it caps a deployment at.

    >>> _redis_note(160.0)
    "Redis's main thread 160 µs CPU per event: one Redis serves at most 6,250 events/s"
    """
    if not us_per_event:
        return ""
    return (
        f"Redis's main thread {us_per_event:.0f} µs CPU per event: "
        f"one Redis serves at most {1e6 / us_per_event:,.0f} events/s"
    )


def rows_of(results: Mapping[str, Any]) -> list[Row]:
    """The table's rows, in scenario order, for whatever scenarios ``results`` holds."""
    ceiling = results.get("ceiling", {}).get("events_per_s")
    rows: list[Row] = []

    def add(key: str, scenario: str, eps: float | None, **extra: Any) -> Row:
        row = Row(key, scenario, eps, _ratio(eps, ceiling), **extra)
        rows.append(row)
        return row

    if "ceiling" in results:
        add("ceiling", "ceiling: bare River loop, features precomputed", ceiling)
    if "backtest" in results:
        add("backtest", "backtest (in-process, MemoryStore)", results["backtest"]["events_per_s"])
    if "monitoring" in results:
        mon = results["monitoring"]
        add("monitor_off", "Processor + MemoryStore, monitor off", mon["off_events_per_s"])
        add(
            "monitor_on",
            "Processor + MemoryStore, monitor on",
            mon["on_events_per_s"],
            note=f"monitoring overhead {mon['overhead_pct']:+.1f}% time per event",
        )
    if "processor_redis" in results:
        add(
            "processor_redis",
            "Processor + RedisStore (no Kafka)",
            results["processor_redis"]["events_per_s"],
            note=_redis_note(results["processor_redis"].get("redis_cpu_us_per_event")),
        )
    for name, label in _WORKER_RUNS.items():
        run = results.get("worker", {}).get(name)
        if run is not None:
            add(
                f"worker_{name}",
                f"worker, {label}",
                run["events_per_s"],
                cpu=_cpu_text(run.get("cpu")),
                rss=_rss_text(run.get("rss_mb")),
            )
    if "naive" in results:
        add(
            "naive",
            "floor: naive, 1 Redis round trip + 1 send/flush per record",
            results["naive"]["events_per_s"],
        )
    one = results.get("scaling", {}).get("one")
    if one is not None:
        add(
            "scaling_one",
            "1 worker, one group, 4 partitions",
            one["events_per_s"],
            cpu=_cpu_text(one.get("cpu")),
            note=machine_full_note(one, results["scaling"].get("cores")),
        )
    two = results.get("scaling", {}).get("two")
    if two is not None:
        add(
            "scaling_two",
            "2 workers, one group, 4 partitions",
            two["events_per_s"],
            cpu=_cpu_text(two.get("cpu")),
            note=f"{two.get('speedup', math.nan):.2f}x one worker",
        )
    if "latency_hop" in results:
        hop = results["latency_hop"]
        row = add(
            "latency_hop",
            f"Kafka hop alone @ {hop['fraction']:.0%} of max ({hop['target_rate']:.0f} ev/s), "
            "no worker",
            hop["achieved_rate"],
            latency_ms={k: hop[k] for k in ("p50", "p95", "p99", "max")},
            note=f"producer to a bare consumer; {hop['received']:,} of "
            f"{hop['events_sent']:,} events received",
        )
        row.ratio = None
    warmup = _warmup_note(results.get("latency_warmup", []))
    for index, point in enumerate(results.get("latency", [])):
        notes = [_startup_note(point.get("with_startup")), warmup if index == 0 else ""]
        row = add(
            f"latency_{round(point['fraction'] * 100)}",
            f"latency @ {point['fraction']:.0%} of max ({point['target_rate']:.0f} ev/s offered)",
            point["achieved_rate"],
            latency_ms={k: point[k] for k in ("p50", "p95", "p99", "max")},
            cpu=_cpu_text(point.get("cpu")),
            note="; ".join(note for note in notes if note),
        )
        row.ratio = None
    if "memory" in results:
        mem = results["memory"]
        add(
            "memory",
            f"memory: {mem['events']:,} events, {mem['mode']}",
            mem.get("events_per_s"),
            rss=_rss_text(mem["rss_mb"]),
            note=f"growth after warm-up {mem['growth_pct']:+.1f}%"
            + (
                f" (Python's allocated blocks {mem['python_blocks_growth_pct']:+.1f}%)"
                if "python_blocks_growth_pct" in mem
                else ""
            ),
        )
    by_key = {row.key: row for row in rows}
    for goal in goals_of(results):
        row = by_key.get(goal.row)
        if row is not None:
            row.goal, row.passed = goal.name, goal.passed
    return rows


def goals_of(results: Mapping[str, Any]) -> list[Goal]:
    """The goals' verdicts on the measured numbers; a goal not measured passes nothing."""
    goals: list[Goal] = []
    ceiling = results.get("ceiling", {}).get("events_per_s")
    name = "worker >= 50% of ceiling"
    for run_name in _WORKER_RUNS:
        run = results.get("worker", {}).get(run_name)
        if run is None:
            continue
        ratio = _ratio(run["events_per_s"], ceiling)
        measured = (
            "no ceiling measured" if ratio is None else f"{ratio:.0%} ({_WORKER_RUNS[run_name]})"
        )
        passed = None if ratio is None else ratio >= GOALS[name]
        goals.append(Goal(name, f"worker_{run_name}", measured, passed))
    name = "p99 < 50 ms at 50% of max rate"
    half = [p for p in results.get("latency", []) if math.isclose(p["fraction"], 0.5)]
    if half:
        p99 = half[0]["p99"]
        passed = None if math.isnan(p99) else p99 < GOALS[name]
        goals.append(Goal(name, "latency_50", f"p99 {p99:.1f} ms", passed))
    name = "2 workers >= 1.5x one"
    two = results.get("scaling", {}).get("two")
    if two is not None:
        speedup = two.get("speedup", math.nan)
        passed = None if math.isnan(speedup) else speedup >= GOALS[name]
        goals.append(Goal(name, "scaling_two", f"{speedup:.2f}x", passed))
    name = "RSS growth after warm-up < 10%"
    if "memory" in results:
        growth = results["memory"]["growth_pct"]
        goals.append(Goal(name, "memory", f"{growth:+.1f}%", growth < GOALS[name]))
    return goals


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "–"}[passed]


HEADER = (
    "scenario",
    "events/s",
    "× ceiling",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "RSS",
    "CPU (% of one core)",
    "goal",
    "pass",
    "note",
)


_ALIGN = dict.fromkeys(("events/s", "× ceiling", "p50 ms", "p95 ms", "p99 ms", "max ms"), "---:")


def _cells(row: Row) -> list[str]:
    lat = row.latency_ms
    return [
        row.scenario,
        _num(row.events_per_s),
        "–" if row.ratio is None else f"{row.ratio:.2f}",
        *(_num(lat.get(k), 1) if lat else "" for k in ("p50", "p95", "p99", "max")),
        row.rss,
        row.cpu,
        row.goal,
        _verdict(row.passed) if row.goal else "",
        row.note,
    ]


def markdown(
    rows: Sequence[Row],
    goals: Sequence[Goal],
    machine: Mapping[str, Any],
    notes: Sequence[str] = (),
    together: str = "",
) -> str:
    """The report: a header on the machine, the table, the goals (and ``together``, what
    :func:`goals_together` says of two of them), then the method notes."""
    lines = ["# streamlearn benchmark", ""]
    if machine:
        cpu = machine.get("cpu", {})
        versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
        lines += [
            f"- date: {machine.get('date', '?')}",
            f"- machine: {cpu.get('model', '?')}, {cpu.get('cores', '?')} cores, "
            f"{machine.get('memory_gib', '?')} GiB",
            f"- load average at start / end: {machine.get('load_start', '?')} / "
            f"{machine.get('load_end', '?')}",
            f"- versions: {versions}",
            "",
        ]
    lines.append("| " + " | ".join(HEADER) + " |")
    lines.append("|" + "|".join(_ALIGN.get(name, "---") for name in HEADER) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
    lines += ["", "## Goals", ""]
    if not goals:
        lines.append("No goal was measured in this run.")
    for goal in goals:
        lines.append(f"- **{_verdict(goal.passed)}** {goal.name}: {goal.measured}")
    if together:
        lines += ["", together]
    if notes:
        lines += ["", "## How each figure is measured", ""]
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def rich_table(rows: Sequence[Row]) -> Table:
    """The same table for the terminal, more compact: latency in one column, no notes."""
    table = Table(title="streamlearn benchmark")
    columns = ("scenario", "events/s", "× ceiling", "p50/p95/p99/max ms", "RSS", "CPU % of a core")
    for i, name in enumerate((*columns, "goal", "pass")):
        table.add_column(name, justify="right" if 0 < i < 4 else "left", overflow="fold")
    for row in rows:
        cells = _cells(row)
        lat = "/".join(cells[3:7]) if row.latency_ms else ""
        verdict = cells[10]
        if row.goal:
            color = {True: "green", False: "red", None: "yellow"}[row.passed]
            verdict = f"[{color}]{verdict}[/{color}]"
        table.add_row(cells[0], cells[1], cells[2], lat, cells[7], cells[8], cells[9], verdict)
    return table


def _plain(value: Any) -> Any:
    """JSON-ready: NaN and infinities become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_reports(
    out: Path,
    results: Mapping[str, Any],
    machine: Mapping[str, Any],
    notes: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write ``bench.md`` and ``bench.json`` into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    rows, goals = rows_of(results), goals_of(results)
    md = out / "bench.md"
    together = goals_together(results)
    md.write_text(markdown(rows, goals, machine, notes, together), encoding="utf-8")
    document = {
        "machine": machine,
        "results": results,
        "rows": [asdict(row) for row in rows],
        "goals": [asdict(goal) for goal in goals],
        "goals_together": together,
        "notes": list(notes),
    }
    js = out / "bench.json"
    js.write_text(json.dumps(_plain(document), indent=2) + "\n", encoding="utf-8")
    return md, js
