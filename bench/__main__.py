"""``python -m bench``: every benchmark scenario in one run, on one stack and one world.

Usage: ``.venv/bin/python -m bench [--events 20000] [--quick] [--out reports/bench]
[--only ceiling,worker,...]``. Writes ``OUT/bench.md``, ``OUT/bench.json`` and
``OUT/profile.txt`` (rewritten after each scenario, so an interrupted run keeps
what it measured) and prints the table.

Shape of ``results`` (the ``results`` key of ``bench.json``): one entry per
scenario that ran: ``ceiling``, ``backtest``, ``monitoring``,
``processor_redis``, ``profile``, ``worker`` (``off``, ``transactions``),
``naive``, ``scaling`` (``one``, ``two``), ``latency`` (a list, one point per
rate), ``latency_hop`` (the Kafka hop alone) and ``memory``; plus ``errors``
for scenarios that failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from streamlearn.stack import Stack
from streamlearn.stream.config import KafkaConfig, Settings
from streamlearn.stream.runtime import tune_interpreter
from streamlearn.stream.synthetic import WorldConfig, generate_world

from . import inprocess, latency
from .env import (
    bench_stack,
    machine_info,
    produce_all,
    read_topic,
    settings_for,
    world_lines,
    write_config,
)
from .goals import goals_of, goals_together
from .hotpath import profile_hot_path
from .method import (
    LATENCY_FRACTIONS,
    LATENCY_HOP_FRACTION,
    LATENCY_STARTUP_S,
    LATENCY_WARMUP_FRACTION,
    LATENCY_WARMUP_ROUNDS,
    LATENCY_WARMUP_S,
    LATENCY_WARMUP_TOLERANCE,
    NOTES,
)
from .tables import percentiles, rich_table, rows_of, write_reports
from .workers import REPO, run_workers

SCENARIOS = (
    "ceiling",
    "backtest",
    "monitoring",
    "profile",
    "worker",
    "naive",
    "scaling",
    "latency",
    "memory",
)
#: Scenarios that need another one's figure (the single-worker maximum).
REQUIRES = {"latency": ("worker",)}

#: The worker run whose rate is the latency scenario's maximum, per ``--client``.
PEAK_RUN = {"kafka-python": "off", "librdkafka": "librdkafka_off"}


class Bench:
    """One benchmark run: the stack, the world, the results and the reports."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.out: Path = args.out
        self.results: dict[str, Any] = {}
        self.machine: dict[str, Any] = {}
        self.stack: Stack | None = None
        self.tmp = Path()
        self.lines: list[bytes] = []
        self.path = Path()

    # ------------------------------------------------------------------ plumbing

    def prefix(self, name: str) -> str:
        return f"bench-{name}-{uuid.uuid4().hex[:6]}"

    def settings(self, name: str, **overrides: Any) -> Settings:
        """The settings of one run; ``--client`` unless ``overrides`` name a Kafka client."""
        assert self.stack is not None
        overrides["kafka"] = {"client": self.args.client, **overrides.get("kafka", {})}
        return settings_for(self.stack, self.prefix(name), **overrides)

    def save(self) -> None:
        self.results["config"] = {
            "events": self.args.events,
            "quick": self.args.quick,
            "memory_events": self.args.memory_events,
            "latency_seconds": self.args.latency_seconds,
            "peak": self.args.peak,
        }
        write_reports(self.out, self.results, self.machine, NOTES)

    def step(self, name: str, run: Callable[[], None]) -> None:
        self.console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        try:
            with self.console.status(f"{name} ..."):
                run()
        except Exception as error:  # a failed scenario is reported, the others still run
            self.results.setdefault("errors", {})[name] = "".join(
                traceback.format_exception_only(error)
            ).strip()
            self.console.print(f"[red]{name} failed:[/red] {error}")
            (self.out / f"{name}.error.txt").write_text(traceback.format_exc())
        self.console.print(f"{name}: {time.perf_counter() - t0:.1f} s")
        self.save()

    def show(self, text: str) -> None:
        self.console.print(text)

    # ------------------------------------------------------------------ scenarios

    def ceiling(self) -> None:
        examples = inprocess.collect_examples(self.lines, Settings())
        self.results["ceiling"] = inprocess.ceiling(examples, repeats=3)
        self.show(f"ceiling {self.results['ceiling']['events_per_s']:,.0f} events/s")

    def backtest(self) -> None:
        self.results["backtest"] = inprocess.run_backtest(self.path)
        self.show(f"backtest {self.results['backtest']['events_per_s']:,.0f} events/s")

    def monitoring(self) -> None:
        repeats = 1 if self.args.quick else 2
        mon = inprocess.monitoring_overhead(self.lines, Settings(), repeats=repeats)
        self.results["monitoring"] = mon
        self.show(f"monitoring overhead {mon['overhead_pct']:+.1f}%")

    def profile(self) -> None:
        assert self.stack is not None
        settings = Settings(store={"key_prefix": self.prefix("profile")})
        summary = profile_hot_path(
            self.lines, settings, self.stack.config.redis_url, self.out / "profile.txt"
        )
        self.results["processor_redis"] = summary.pop("unprofiled")
        self.results["profile"] = summary
        rate = self.results["processor_redis"]["events_per_s"]
        self.show(f"Processor + RedisStore {rate:,.0f} events/s; profile.txt written")

    def _worker_run(self, name: str, count: int = 1, **overrides: Any) -> dict[str, Any]:
        assert self.stack is not None
        env = None
        if overrides.pop("checkpoints", False):
            env = {"STREAMLEARN_MODEL_KEY": secrets.token_hex(32)}
        settings = self.settings(name, **overrides)
        produce_all(settings, self.lines)
        run = run_workers(self.stack, settings, self.tmp / settings.kafka.group_id, count, env=env)
        self.show(
            f"{name}: {run['events']:,} events in {run['seconds']:.2f} s = "
            f"{run['events_per_s']:,.0f} events/s"
        )
        return run

    @property
    def repeats(self) -> int:
        """Runs of each worker configuration (alternated); the best one is reported."""
        return 1 if self.args.quick else 2

    def _alternate(self, configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Run each configuration ``repeats`` times, alternating them; keep the best of each."""
        best: dict[str, dict[str, Any]] = {}
        rates: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(self.repeats):
            for name, options in configs.items():
                run = self._worker_run(name, **options)
                rates[name].append(round(run["events_per_s"], 1))
                if name not in best or run["events_per_s"] > best[name]["events_per_s"]:
                    best[name] = run
        for name, run in best.items():
            run["runs_events_per_s"] = rates[name]
        return best

    def worker(self) -> None:
        best = self._alternate(
            {
                "worker-off": {"kafka": {"client": "kafka-python"}},
                "worker-tx": {
                    "kafka": {"client": "kafka-python", "transactions": True},
                    "checkpoints": True,
                },
                "worker-rd-off": {"kafka": {"client": "librdkafka"}},
                "worker-rd-tx": {
                    "kafka": {"client": "librdkafka", "transactions": True},
                    "checkpoints": True,
                },
            }
        )
        self.results["worker"] = {
            "off": best["worker-off"],
            "transactions": best["worker-tx"],
            "librdkafka_off": best["worker-rd-off"],
            "librdkafka_transactions": best["worker-rd-tx"],
        }

    def naive(self) -> None:
        settings = self.settings("naive")
        counts = produce_all(settings, self.lines)
        folder = self.tmp / "naive"
        folder.mkdir(parents=True, exist_ok=True)
        config = write_config(settings, folder / "naive.yaml")
        result = folder / "naive.json"
        with (folder / "naive.log").open("ab") as log:
            subprocess.run(
                [sys.executable, "-m", "bench.naive", "--config", str(config),
                 "--records", str(sum(counts.values())), "--out", str(result)],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, check=True, timeout=3600,
            )  # fmt: skip
        self.results["naive"] = json.loads(result.read_text())
        self.show(f"floor {self.results['naive']['events_per_s']:,.0f} events/s")

    def scaling(self) -> None:
        best = self._alternate({"scaling-one": {"count": 1}, "scaling-two": {"count": 2}})
        one, two = best["scaling-one"], best["scaling-two"]
        two["speedup"] = two["events_per_s"] / one["events_per_s"]
        self.results["scaling"] = {"one": one, "two": two, "cores": os.cpu_count()}
        self.show(f"2 workers: {two['speedup']:.2f}x one")

    def latency(self) -> None:
        assert self.stack is not None
        stack = self.stack
        peak = self.args.peak or self.results["worker"][PEAK_RUN[self.args.client]]["events_per_s"]
        seconds = self.args.latency_seconds
        most = math.ceil(
            peak * max(max(LATENCY_FRACTIONS) * seconds, LATENCY_WARMUP_FRACTION * LATENCY_WARMUP_S)
        )
        world = world_lines(generate_world(WorldConfig(events=most + 1)))
        points = self.results["latency"] = []

        def live(name: str, rate: float, seconds: float) -> tuple[Settings, dict[str, Any]]:
            lines = latency.cut_events(world, max(1, math.ceil(rate * seconds)))
            settings = self.settings(name)
            run = run_workers(
                stack,
                settings,
                self.tmp / settings.kafka.group_id,
                until_end=False,
                idle_s=3.0,
                on_go=lambda: latency.open_loop(settings, lines, rate),
                also_meter={"producer": os.getpid()},
            )
            return settings, run

        warmup: list[dict[str, float]] = []
        self.results["latency_warmup"] = warmup
        rounds = 1 if self.args.quick else LATENCY_WARMUP_ROUNDS
        while len(warmup) < rounds and not latency.broker_settled(
            [broker["cpu_s"] for broker in warmup], LATENCY_WARMUP_TOLERANCE
        ):
            _, run = live("latency-warmup", LATENCY_WARMUP_FRACTION * peak, LATENCY_WARMUP_S)
            warmup.append(run["cpu"]["kafka"])
            self.show(f"warm-up {len(warmup)}: broker at {warmup[-1]['core_pct']:.0f}% of a core")
        hop_rate = LATENCY_HOP_FRACTION * peak
        hop_lines = latency.cut_events(world, max(1, math.ceil(hop_rate * seconds)))
        hop = latency.kafka_hop(
            self.settings("latency-hop"), hop_lines, hop_rate, LATENCY_STARTUP_S
        )
        hop_point = self.results["latency_hop"] = {
            "fraction": LATENCY_HOP_FRACTION,
            "target_rate": hop_rate,
            "achieved_rate": hop["load"]["achieved_rate"],
            "events": len(hop["latencies_ms"]),
            "received": hop["received"],
            "events_sent": hop["load"]["events_sent"],
            **percentiles(hop["latencies_ms"]),
        }
        self.show(
            f"Kafka hop alone @ {LATENCY_HOP_FRACTION:.0%} ({hop_rate:,.0f} ev/s): "
            f"p50 {hop_point['p50']:.0f} ms, p99 {hop_point['p99']:.0f} ms"
        )
        for fraction in LATENCY_FRACTIONS:
            rate = fraction * peak
            settings, run = live(f"latency-{round(fraction * 100)}", rate, seconds)
            bootstrap = stack.config.kafka_bootstrap
            topics = settings.kafka.topics
            load = run["on_go"]
            events = list(read_topic(bootstrap, topics.events))
            predictions = list(read_topic(bootstrap, topics.predictions))
            steady_from = load["started_ms"] + 1000 * LATENCY_STARTUP_S
            values, _ = latency.latencies_ms(events, predictions, steady_from)
            with_startup, missing = latency.latencies_ms(events, predictions)
            report = run["reports"]["worker-0"]
            batches = max(1, report["batches"])
            point = {
                "fraction": fraction,
                "target_rate": rate,
                "achieved_rate": load["achieved_rate"],
                "events": len(values),
                "missing_predictions": missing,
                **percentiles(values),
                "with_startup": percentiles(with_startup),
                "producer": load,
                "cpu": run["cpu"],
                "worker_batches": report["batches"],
                "worker_rejoins_before_go": report["rejoins_before_go"],
                "worker_ms_per_batch": {
                    stage: round(1000 * sec / batches, 3)
                    for stage, sec in report["stage_s"].items()
                },
            }
            points.append(point)
            self.show(
                f"latency @ {fraction:.0%} ({rate:,.0f} ev/s): p50 {point['p50']:.0f} ms, "
                f"p99 {point['p99']:.0f} ms, max {point['max']:.0f} ms"
            )
            self.save()

    def memory(self) -> None:
        assert self.stack is not None
        out = self.tmp / "memory.json"
        with (self.tmp / "memory.log").open("ab") as log:
            subprocess.run(
                [sys.executable, "-m", "bench.memory", "--redis-url", self.stack.config.redis_url,
                 "--prefix", self.prefix("memory"), "--events", str(self.args.memory_events),
                 "--out", str(out)],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, check=True, timeout=6 * 3600,
            )  # fmt: skip
        mem = self.results["memory"] = json.loads(out.read_text())
        self.show(f"memory: RSS {mem['rss_mb']}, growth after warm-up {mem['growth_pct']:+.1f}%")

    # ------------------------------------------------------------------ run

    def run(self, selected: list[str]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="streamlearn-bench-") as tmp:
            self.tmp = Path(tmp)
            self.show(f"starting Kafka and Redis under {self.tmp / 'stack'}")
            with bench_stack(self.tmp / "stack", report=self.show) as stack:
                self.stack = stack
                self.machine = machine_info(stack)
                self.lines = world_lines(generate_world(WorldConfig(events=self.args.events)))
                self.path = self.tmp / "world.jsonl"
                self.path.write_bytes(b"\n".join(self.lines) + b"\n")
                self.save()
                for name in selected:
                    needed = requirements(name, self.args.peak)
                    missing = [r for r in needed if r not in self.results]
                    if missing:
                        self.results.setdefault("errors", {})[name] = f"needs {missing}"
                        self.console.print(f"[yellow]{name} skipped: needs {missing}")
                        continue
                    self.step(name, getattr(self, name))
                self.machine["load_end"] = [round(v, 2) for v in os.getloadavg()]
                self.save()
        self.console.print(rich_table(rows_of(self.results)))
        for goal in goals_of(self.results):
            verdict = {True: "[green]PASS", False: "[red]FAIL", None: "[yellow]n/a"}[goal.passed]
            self.console.print(f"{verdict}[/] {goal.name}: {goal.measured}")
        together = goals_together(self.results)
        if together:
            self.console.print(together)
        for name, error in self.results.get("errors", {}).items():
            self.console.print(f"[red]{name} did not complete:[/red] {error}")
        self.console.print(f"reports in {self.out}/ (bench.md, bench.json, profile.txt)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="streamlearn benchmarks against the ceiling and floor"
    )
    parser.add_argument("--events", type=int, default=None, help="events (default 20000)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~2 minutes)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"), help="report folder")
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios out of {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--memory-events", type=int, default=None, help="default 1,000,000")
    parser.add_argument("--latency-seconds", type=float, default=None, help="per rate, default 20")
    parser.add_argument(
        "--peak",
        type=float,
        default=None,
        help="the worker's maximum events/s the latency rates are fractions of "
        "(default: measured by the worker scenario, which then runs first)",
    )
    parser.add_argument(
        "--client",
        choices=list(PEAK_RUN),
        default=KafkaConfig().client,
        help="the workers' Kafka client outside the worker scenario (which runs both)",
    )
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = 4000 if args.quick else 20_000
    if args.memory_events is None:
        args.memory_events = 100_000 if args.quick else 1_000_000
    if args.latency_seconds is None:
        args.latency_seconds = 8.0 if args.quick else 20.0
    if args.peak is not None and args.peak <= 0:
        parser.error("--peak must be a positive rate")
    if args.events < 100:
        parser.error("--events must be at least 100")
    return args


def requirements(name: str, peak: float | None = None) -> tuple[str, ...]:
    """The scenarios ``name`` needs the figures of; none for the latency given a ``peak``."""
    if name == "latency" and peak:
        return ()
    return REQUIRES.get(name, ())


def selection(only: str, peak: float | None = None) -> list[str]:
    """The scenarios to run, in run order, with the ones they need.

    >>> selection("latency,scaling")
    ['worker', 'scaling', 'latency']
    >>> selection("latency", peak=1600.0)
    ['latency']
    >>> selection("")[:2]
    ['ceiling', 'backtest']
    """
    wanted = {name.strip() for name in only.split(",") if name.strip()} or set(SCENARIOS)
    unknown = wanted - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    for name in list(wanted):
        wanted.update(requirements(name, peak))
    return [name for name in SCENARIOS if name in wanted]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tune_interpreter()  # as the worker and the backtest do: every scenario runs alike
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 200))
    Bench(args, console).run(selection(args.only, args.peak))


if __name__ == "__main__":
    main()
