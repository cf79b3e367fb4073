"""The benchmark's tables, reports and goal verdicts on given numbers (no servers)."""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import bench.__main__ as bench_main
from bench import goals, inprocess, latency, memory, method, naive, tables
from bench.goals import goals_of
from bench.tables import markdown, percentiles, rich_table, rows_of, write_reports

MACHINE = {
    "date": "2026-01-01T00:00:00+00:00",
    "cpu": {"model": "Test CPU", "cores": 2},
    "memory_gib": 24.0,
    "load_start": [0.1, 0.1, 0.1],
    "load_end": [0.2, 0.2, 0.2],
    "versions": {"python": "3.11", "river": "0.26.1"},
}


def cpu(**core_pct: float) -> dict[str, dict[str, float]]:
    return {
        name: {"cpu_s": 1.0, "core_pct": pct, "share_pct": 0.0} for name, pct in core_pct.items()
    }


def full_results(
    worker: float = 2000.0,
    p99: float = 40.0,
    two: float = 3200.0,
    rss: tuple[float, float, float] = (100.0, 150.0, 160.0),
) -> dict[str, Any]:
    return {
        "ceiling": {"events_per_s": 4000.0},
        "backtest": {"events_per_s": 1000.0},
        "monitoring": {"off_events_per_s": 1200.0, "on_events_per_s": 1000.0, "overhead_pct": 20.0},
        "processor_redis": {"events_per_s": 1500.0},
        "worker": {
            "off": {
                "events_per_s": worker,
                "cpu": cpu(**{"worker-0": 95.0, "kafka": 30.0}),
                "rss_mb": {"start": 140.0, "end": 150.0},
            },
            "transactions": {"events_per_s": worker / 2},
        },
        "naive": {"events_per_s": 400.0},
        "scaling": {
            "one": {"events_per_s": 2000.0, "cpu": cpu(**{"worker-0": 90.0, "other": 5.0})},
            "two": {"events_per_s": two, "speedup": two / 2000.0, "cpu": cpu(redis=20.0)},
        },
        "latency": [
            {
                "fraction": fraction,
                "target_rate": 2000.0 * fraction,
                "achieved_rate": 2000.0 * fraction,
                "p50": 5.0,
                "p95": 20.0,
                "p99": p99 * (fraction / 0.5),
                "max": 90.0,
            }
            for fraction in (0.25, 0.5, 0.75)
        ],
        "latency_hop": {
            "fraction": 0.5,
            "target_rate": 1000.0,
            "achieved_rate": 999.0,
            "events": 9000,
            "received": 10000,
            "events_sent": 10000,
            "p50": 3.0,
            "p95": 8.0,
            "p99": 12.0,
            "max": 30.0,
        },
        "memory": {
            "events": 1_000_000,
            "mode": memory.MODE,
            "rss_mb": dict(zip(("start", "warm", "end"), rss, strict=True)),
            "growth_pct": memory.growth_pct(rss[1], rss[2]),
            "events_per_s": 1500.0,
        },
    }


def verdicts(results: dict[str, Any]) -> dict[str, list[bool | None]]:
    out: dict[str, list[bool | None]] = {}
    for goal in goals_of(results):
        out.setdefault(goal.name, []).append(goal.passed)
    return out


def test_rows_follow_scenario_order_with_ratios_to_the_ceiling() -> None:
    rows = rows_of(full_results())
    keys = [row.key for row in rows]
    assert keys == [
        "ceiling", "backtest", "monitor_off", "monitor_on", "processor_redis", "worker_off",
        "worker_transactions", "naive", "scaling_one", "scaling_two", "latency_hop",
        "latency_25", "latency_50", "latency_75", "memory",
    ]  # fmt: skip
    by_key = {row.key: row for row in rows}
    assert by_key["ceiling"].ratio == 1.0
    assert by_key["worker_off"].ratio == pytest.approx(0.5)
    assert by_key["naive"].ratio == pytest.approx(0.1)
    assert by_key["latency_50"].ratio is None  # offered load, not a throughput
    assert by_key["latency_50"].latency_ms == {"p50": 5.0, "p95": 20.0, "p99": 40.0, "max": 90.0}
    assert by_key["latency_hop"].ratio is None
    assert by_key["latency_hop"].latency_ms == {"p50": 3.0, "p95": 8.0, "p99": 12.0, "max": 30.0}
    assert (
        by_key["latency_hop"].note
        == "producer to a bare consumer; 10,000 of 10,000 events received"
    )
    assert by_key["worker_off"].cpu == "worker-0 95%, kafka 30%"
    assert by_key["worker_off"].rss == "140 → 150 MB"
    assert by_key["memory"].rss == "100 → 150 → 160 MB"
    assert "+20.0%" in by_key["monitor_on"].note
    assert by_key["scaling_two"].note == "1.60x one worker"
    assert by_key["scaling_one"].cpu == "worker-0 90%, other 5%"
    assert by_key["memory"].note == "growth after warm-up +6.7%"
    results = full_results()
    results["memory"]["python_blocks_growth_pct"] = 0.25
    (memory_row,) = [row for row in rows_of(results) if row.key == "memory"]
    assert memory_row.note == "growth after warm-up +6.7% (Python's allocated blocks +0.2%)"


def test_goals_pass_at_their_thresholds() -> None:
    results = full_results(worker=2000.0, p99=49.9, two=3000.0, rss=(100.0, 200.0, 219.98))
    assert verdicts(results) == {
        "worker >= 50% of ceiling": [True, False],
        "p99 < 50 ms at 50% of max rate": [True],
        "2 workers >= 1.5x one": [True],
        "RSS growth after warm-up < 10%": [True],
    }


def test_goals_fail_just_past_their_thresholds() -> None:
    results = full_results(worker=1999.0, p99=50.0, two=2999.0, rss=(100.0, 200.0, 220.0))
    assert verdicts(results) == {
        "worker >= 50% of ceiling": [False, False],
        "p99 < 50 ms at 50% of max rate": [False],
        "2 workers >= 1.5x one": [False],
        "RSS growth after warm-up < 10%": [False],
    }


def test_goals_not_measured_are_neither_pass_nor_fail() -> None:
    results = full_results()
    del results["ceiling"]
    results["latency"][1]["p99"] = math.nan
    goals = {goal.name: goal for goal in goals_of(results)}
    assert goals["worker >= 50% of ceiling"].passed is None
    assert goals["worker >= 50% of ceiling"].measured == "no ceiling measured"
    assert goals["p99 < 50 ms at 50% of max rate"].passed is None
    assert goals_of({}) == []


def test_goal_verdicts_land_on_their_rows() -> None:
    rows = {row.key: row for row in rows_of(full_results(p99=80.0))}
    assert (rows["worker_off"].goal, rows["worker_off"].passed) == (
        "worker >= 50% of ceiling",
        True,
    )
    assert rows["latency_50"].passed is False
    assert rows["latency_25"].goal == ""
    assert rows["memory"].passed is True  # 150 -> 160 MB after the warm-up: +6.7%
    assert rows["memory"].goal == "RSS growth after warm-up < 10%"


def test_markdown_table_has_one_line_per_row_and_the_verdicts() -> None:
    results = full_results(p99=80.0)
    text = markdown(rows_of(results), goals_of(results), MACHINE, ["a note | with a pipe"])
    lines = text.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(rows_of(results))
    assert {line.count(" | ") for line in table[2:]} == {len(tables.HEADER) - 1}
    assert "| worker, checkpoints off | 2,000 | 0.50 |" in text
    assert "**FAIL** p99 < 50 ms at 50% of max rate: p99 80.0 ms" in text
    assert "**PASS** 2 workers >= 1.5x one: 1.60x" in text
    assert "Test CPU, 2 cores, 24.0 GiB" in text
    assert "- a note | with a pipe" in text


def test_write_reports_writes_markdown_and_json_without_nan(tmp_path: Path) -> None:
    results = full_results()
    results["latency"][0]["max"] = math.nan
    md, js = write_reports(tmp_path / "out", results, MACHINE, ["note"])
    assert md.read_text().startswith("# streamlearn benchmark")
    document = json.loads(js.read_text())  # strict JSON: NaN would not parse back as null
    assert document["results"]["latency"][0]["max"] is None
    assert document["machine"]["cpu"]["cores"] == 2
    assert [g["passed"] for g in document["goals"]] == [True, False, True, True, True]
    assert document["rows"][0]["scenario"].startswith("ceiling")
    assert "NaN" not in js.read_text()


def test_rich_table_shows_every_row_and_colours_verdicts() -> None:
    results = full_results(p99=80.0)
    console = Console(record=True, width=220)
    console.print(rich_table(rows_of(results)))
    text = console.export_text()
    assert "worker, checkpoints off" in text
    assert "5.0/20.0/80.0/90.0" in text
    assert text.count("PASS") >= 3 and "FAIL" in text


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0, "max": 7.0}
    assert all(math.isnan(v) for v in percentiles([]).values())


def test_latency_pairs_each_event_with_its_first_prediction() -> None:
    events = [(b"a", 1000), (b"b", 1010), (b"c", 1020)]
    predictions = [(b"b", 1015), (b"a", 1030), (b"a", 1090), (b"x", 1)]
    values, missing = latency.latencies_ms(events, predictions)
    assert sorted(values) == [5.0, 30.0]
    assert missing == 1


def test_growth_is_measured_from_the_warm_up() -> None:
    assert memory.growth_pct(200.0, 200.0) == 0.0
    assert memory.growth_pct(200.0, 190.0) == pytest.approx(-5.0)


@pytest.mark.parametrize(
    "module", [tables, goals, method, latency, memory, naive, inprocess, bench_main]
)
def test_doctests(module: object) -> None:
    failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert failed == 0


def test_the_one_worker_row_says_how_fast_the_machine_goes_when_full_at_its_costs() -> None:
    results = full_results()
    results["scaling"]["one"]["events"] = 4000
    results["scaling"]["cores"] = 2
    (row,) = [row for row in rows_of(results) if row.key == "scaling_one"]
    assert row.note == (
        "CPU per event: worker-0 250, other 250 µs; 2 cores full at 4,000 events/s (2.00x)"
    )
    del results["scaling"]["cores"]
    (row,) = [row for row in rows_of(results) if row.key == "scaling_one"]
    assert row.note == ""


def test_the_redis_row_says_what_one_redis_can_serve_at_its_cpu_per_event() -> None:
    results = full_results()
    results["processor_redis"]["redis_cpu_us_per_event"] = 200.0
    (row,) = [row for row in rows_of(results) if row.key == "processor_redis"]
    assert row.note == (
        "Redis's main thread 200 µs CPU per event: one Redis serves at most 5,000 events/s"
    )


def test_goals_together_bounds_every_process_s_cpu_by_the_ceiling_and_the_cores() -> None:
    results = full_results()
    results["scaling"]["cores"] = 2
    results["scaling"]["one"].update(
        events=1000,
        cpu={
            "worker-0": {"cpu_s": 0.5, "core_pct": 90.0},
            "kafka": {"cpu_s": 0.05, "core_pct": 9.0},
        },
    )
    at_4000 = goals.goals_together(results)  # two workers at 3,000 events/s on 2 cores
    assert "at most 667 µs CPU per event" in at_4000
    assert "measured 550 µs with one (worker-0 500, kafka 50)" in at_4000
    two = {
        name: {"cpu_s": cpu_s, "core_pct": 50.0}
        for name, cpu_s in (("worker-0", 0.2), ("worker-1", 0.2), ("redis", 0.1))
    }
    results["scaling"]["two"].update(events=1000, cpu=two)
    both = goals.goals_together(results)
    assert both.endswith(" and 500 µs with two (worker-0 200, worker-1 200, redis 100)")
    text = markdown(rows_of(results), goals_of(results), MACHINE, together=at_4000)
    assert text.index("## Goals") < text.index(at_4000)
    results["ceiling"]["events_per_s"] = 8000.0
    assert "at most 333 µs" in goals.goals_together(results)
    results["scaling"]["cores"] = 4
    assert "6,000 events/s on 4 cores, at most 667 µs" in goals.goals_together(results)


def test_goals_together_needs_the_ceiling_and_the_one_worker_run(tmp_path: Path) -> None:
    results = full_results()
    assert goals.goals_together(results) == ""  # no core count recorded
    del results["scaling"]
    results["ceiling"] = {"events_per_s": 4000.0}
    assert goals.goals_together(results) == ""
    md, _ = write_reports(tmp_path, full_results(), MACHINE)
    assert "together" not in md.read_text()


def test_a_given_peak_runs_the_latency_points_without_the_worker_scenario() -> None:
    given = bench_main.parse_args(["--only", "latency", "--peak", "1500"])
    assert given.peak == 1500.0
    assert bench_main.selection(given.only, given.peak) == ["latency"]
    assert bench_main.selection("latency") == ["worker", "latency"]
    with pytest.raises(SystemExit):
        bench_main.parse_args(["--peak", "0"])
