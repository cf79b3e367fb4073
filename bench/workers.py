"""Run benchmark worker processes (:mod:`bench.worker_run`) and measure them.

:func:`run_workers` starts ``count`` workers of one group, waits until every
one holds a disjoint share of the partitions, releases them together, meters
the CPU time of the Kafka broker and redis-server meanwhile, and returns the
workers' reports with the group's events per second over
``first release -> last commit``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamlearn.stack import Stack
from streamlearn.stream.config import Settings
from streamlearn.stream.topics import ensure_topics, topic_plan

from .env import CpuMeter, cpu_summary, write_config

__all__ = ["REPO", "WorkerRunError", "run_workers"]

#: The checkout the ``bench`` package runs from: the working folder of its subprocesses.
REPO = Path(__file__).resolve().parents[1]


class WorkerRunError(RuntimeError):
    """A benchmark worker failed or did not finish in time; carries its log's tail."""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _expected_partitions(settings: Settings) -> set[str]:
    topics = settings.kafka.topics
    return {
        f"{topic}:{p}" for topic in (topics.events, topics.labels) for p in range(topics.partitions)
    }


def run_workers(
    stack: Stack,
    settings: Settings,
    folder: Path,
    count: int = 1,
    *,
    until_end: bool = True,
    idle_s: float = 3.0,
    env: dict[str, str] | None = None,
    on_go: Callable[[], Any] | None = None,
    also_meter: dict[str, int] | None = None,
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """Run ``count`` workers to the end of the topics (or until idle); their figures.

    ``on_go`` runs in this process right after the release (e.g. a live
    producer); its return value is kept under ``"on_go"``. ``also_meter``
    names more processes whose CPU time to report (e.g. this one).
    """
    folder.mkdir(parents=True, exist_ok=True)
    ensure_topics(settings.kafka, topic_plan(settings.kafka))
    config = write_config(settings, folder / "worker.yaml")
    mode = ["--until-end"] if until_end else ["--idle", str(idle_s)]
    names = [f"worker-{n}" for n in range(count)]
    child_env = {**os.environ, **(env or {})}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: folder / f"{name}.log" for name in names}
    for name in names:
        with logs[name].open("ab") as log:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "bench.worker_run", "--config", str(config),
                 "--control", str(folder), "--name", name, *mode],
                stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=REPO,
            )  # fmt: skip
    try:
        _wait_assigned(settings, folder, names, procs, logs)
        services = {name: pid for name, pid in stack.pids().items() if name in ("kafka", "redis")}
        meter = CpuMeter({**services, **(also_meter or {})})
        meter.start()
        (folder / "go").write_text("go")
        extra = on_go() if on_go is not None else None
        deadline = time.monotonic() + timeout_s
        while not all(
            (folder / f"{n}.done").exists() or procs[n].poll() is not None for n in names
        ):
            _check_alive(procs, logs, deadline)
            time.sleep(0.02)
        meter.stop()
        for name, proc in procs.items():
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired as exc:
                raise WorkerRunError(f"{name} did not exit\n{_tail(logs[name])}") from exc
            if proc.returncode != 0:
                raise WorkerRunError(f"{name} exited {proc.returncode}\n{_tail(logs[name])}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    reports = {}
    for name in names:
        report = _read(folder / f"{name}.json")
        if report is None:
            raise WorkerRunError(f"{name} wrote no report\n{_tail(logs[name])}")
        reports[name] = report
    return _summarise(reports, meter, extra)


def _check_alive(
    procs: dict[str, subprocess.Popen[bytes]],
    logs: dict[str, Path],
    deadline: float,
    waiting_for: str = "the end of the run",
) -> None:
    for name, proc in procs.items():
        if proc.poll() not in (None, 0):
            raise WorkerRunError(f"{name} exited {proc.returncode}\n{_tail(logs[name])}")
    if time.monotonic() > deadline:
        tails = "\n".join(f"{name}:\n{_tail(log)}" for name, log in logs.items())
        raise WorkerRunError(f"timed out waiting for {waiting_for}\n{tails}")


def _wait_assigned(
    settings: Settings,
    folder: Path,
    names: list[str],
    procs: dict[str, subprocess.Popen[bytes]],
    logs: dict[str, Path],
    timeout_s: float = 120.0,
) -> None:
    """Until every worker holds partitions, disjoint, covering all, twice in a row."""
    expected = _expected_partitions(settings)
    deadline = time.monotonic() + timeout_s
    stable = 0
    while stable < 2:
        _check_alive(procs, logs, deadline, "every worker to hold its partitions")
        shares = [(_read(folder / f"{n}.assigned") or {}).get("partitions", []) for n in names]
        union = set().union(*shares)
        ok = all(shares) and union == expected and sum(map(len, shares)) == len(union)
        stable = stable + 1 if ok else 0
        time.sleep(0.3)


def _summarise(reports: dict[str, dict[str, Any]], meter: CpuMeter, extra: Any) -> dict[str, Any]:
    go = min(r["go_at"] for r in reports.values())
    end = max(r["last_commit_at"] or r["go_at"] for r in reports.values())
    wall = end - go
    events = sum(r["events"] for r in reports.values())
    cpu = {name: r["cpu_s"] or 0.0 for name, r in reports.items()}
    cpu.update(meter.seconds())
    # Everything else the machine ran meanwhile: other programs, and this process (a producer).
    cpu["other"] = max(0.0, meter.machine_seconds() - sum(cpu.values()))
    return {
        "workers": len(reports),
        "events": events,
        "records": sum(r["records"] for r in reports.values()),
        "seconds": round(wall, 3),
        "events_per_s": events / wall if wall > 0 else float("nan"),
        "events_per_worker_cpu_s": events / sum(r["cpu_s"] or 0 for r in reports.values())
        if all(r["cpu_s"] for r in reports.values())
        else None,
        "cpu": cpu_summary(cpu, wall),
        "rss_mb": reports[min(reports)]["rss_mb"],
        "reports": reports,
        "on_go": extra,
    }
