"""The benchmark's results as rows, a Markdown report, JSON and a rich table.

Everything here is a pure function of the ``results`` mapping that
``python -m bench`` fills in (see :mod:`bench.__main__` for its shape), so the
tables are tested without any server; the goals' verdicts in them come from
:mod:`bench.goals`.

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

from .goals import WORKER_RUNS, Goal, ceiling_ratio, goals_of, goals_together, machine_full_note

__all__ = [
    "HEADER",
    "Row",
    "markdown",
    "percentiles",
    "rich_table",
    "rows_of",
    "write_reports",
]


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


def _cpu_text(cpu: Mapping[str, Mapping[str, float]] | None) -> str:
    """``worker-0 95%, kafka 40%``: CPU time of each process as % of one core over the run."""
    if not cpu:
        return ""
    return ", ".join(f"{name} {entry['core_pct']:.0f}%" for name, entry in cpu.items())


def _rss_text(rss: Mapping[str, float] | None) -> str:
    if not rss:
        return ""
    return " → ".join(f"{value:.0f}" for value in rss.values()) + " MB"


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
        row = Row(key, scenario, eps, ceiling_ratio(eps, ceiling), **extra)
        rows.append(row)
        return row

    def add_latency(key: str, scenario: str, point: Mapping[str, Any], **extra: Any) -> None:
        """A row of a latency point: its rate is the load offered, not a share of the ceiling."""
        latency_ms = {k: point[k] for k in ("p50", "p95", "p99", "max")}
        add(key, scenario, point["achieved_rate"], latency_ms=latency_ms, **extra).ratio = None

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
    for name, label in WORKER_RUNS.items():
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
        add_latency(
            "latency_hop",
            f"Kafka hop alone @ {hop['fraction']:.0%} of max ({hop['target_rate']:.0f} ev/s), "
            "no worker",
            hop,
            note=f"producer to a bare consumer; {hop['received']:,} of "
            f"{hop['events_sent']:,} events received",
        )
    warmup = _warmup_note(results.get("latency_warmup", []))
    for index, point in enumerate(results.get("latency", [])):
        notes = [_startup_note(point.get("with_startup")), warmup if index == 0 else ""]
        add_latency(
            f"latency_{round(point['fraction'] * 100)}",
            f"latency @ {point['fraction']:.0%} of max ({point['target_rate']:.0f} ev/s offered)",
            point,
            cpu=_cpu_text(point.get("cpu")),
            note="; ".join(note for note in notes if note),
        )
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
