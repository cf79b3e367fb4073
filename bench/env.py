"""The benchmark's environment: its own local stack, settings, topics and the machine.

The stack is the project's :class:`stack.Stack` (Kafka and Redis only)
on a private root and free ports, with Redis persistence off, so a benchmark
never touches the user's ``.stack/``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

from streamlearn.stack import Stack, StackConfig, free_ports, private_stack_config
from streamlearn.stack.install import StackError, kafka_version
from streamlearn.stream import harness
from streamlearn.stream.config import Settings
from streamlearn.stream.harness import lines_of as world_lines
from streamlearn.stream.harness import write_config
from streamlearn.stream.produce import committed_records, produce_lines

__all__ = [
    "CpuMeter",
    "bench_stack",
    "free_ports",
    "machine_info",
    "produce_all",
    "read_topic",
    "settings_for",
    "world_lines",
    "write_config",
]

SERVICES = ("kafka", "redis")


def _config(root: Path) -> StackConfig:
    return private_stack_config(root)


def _stop_leftovers(root: Path) -> None:
    """Stop processes started from ``root`` that a failed start left without a pid file."""
    mark = str(root)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid() or mark not in " ".join(proc.info["cmdline"] or ()):
            continue
        with contextlib.suppress(psutil.Error):
            proc.terminate()
            proc.wait(timeout=20)


@contextlib.contextmanager
def bench_stack(root: Path, report: Any = print) -> Iterator[Stack]:
    """Kafka and Redis on ``root`` and free ports; stopped on exit. One retry on a failed start."""
    stack = Stack(_config(root), reporter=lambda message: None)
    try:
        for attempt in (1, 2):
            try:
                stack.up(services=SERVICES)  # type: ignore[arg-type]
                break
            except StackError as error:
                stack.down()
                _stop_leftovers(root)
                if attempt == 2:
                    raise
                report(f"stack start failed, retrying on new ports: {str(error).splitlines()[0]}")
                stack = Stack(_config(root / "retry"), reporter=lambda message: None)
        yield stack
    finally:
        stack.down()
        _stop_leftovers(root)


def settings_for(stack: Stack, prefix: str, **overrides: Any) -> Settings:
    """Settings whose topics (4 partitions), group and Redis keys all carry ``prefix``."""
    config = stack.config
    return harness.settings_for(
        config.kafka_bootstrap, config.redis_url, prefix, partitions=4, **overrides
    )


def produce_all(settings: Settings, lines: Iterable[bytes]) -> dict[str, int]:
    """Create the topics and send every line, keyed by event id; returns counts per kind.

    The ``produce`` command's loop, lingering 20 ms for larger produce requests.
    """
    return produce_lines(settings.kafka.model_copy(update={"linger_ms": 20}), lines)


def read_topic(bootstrap: str, topic: str, idle_ms: int = 3000) -> list[tuple[bytes, int]]:
    """(key, record timestamp ms) of every committed record of ``topic``."""
    records = committed_records(bootstrap, topic, idle_ms)
    return [(record.key or b"", record.timestamp) for record in records]


class CpuMeter:
    """CPU seconds used by a set of processes, and by the whole machine, over a window."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}
        self.started = self.stopped = 0.0
        self.busy_before = self.busy_after = 0.0

    @staticmethod
    def _busy() -> float:
        """CPU seconds the machine spent on anything but idling, all cores together."""
        times = psutil.cpu_times()
        fields = ("user", "nice", "system", "irq", "softirq")  # user and nice include guests
        return sum(getattr(times, name, 0.0) for name in fields)

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        if proc.pid == os.getpid():
            # This process reaps the worker processes it started: their CPU is theirs.
            return times.user + times.system
        return times.user + times.system + times.children_user + times.children_system

    def start(self) -> None:
        self.started = time.monotonic()
        self.busy_before = self._busy()
        self.before = {name: self._cpu(proc) for name, proc in self.procs.items()}

    def stop(self) -> None:
        self.stopped = time.monotonic()
        self.busy_after = self._busy()
        self.after = {name: self._cpu(proc) for name, proc in self.procs.items()}

    def seconds(self) -> dict[str, float]:
        return {name: self.after[name] - self.before[name] for name in self.procs}

    def machine_seconds(self) -> float:
        return self.busy_after - self.busy_before


def cpu_summary(cpu_s: dict[str, float], wall_s: float) -> dict[str, dict[str, float]]:
    """Per process: CPU seconds, % of one core over ``wall_s``, and share of the total."""
    total = sum(cpu_s.values()) or 1.0
    return {
        name: {
            "cpu_s": round(seconds, 3),
            "core_pct": round(100.0 * seconds / wall_s, 1) if wall_s > 0 else float("nan"),
            "share_pct": round(100.0 * seconds / total, 1),
        }
        for name, seconds in cpu_s.items()
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info(stack: Stack | None) -> dict[str, Any]:
    """CPU, cores, memory, date and the versions of everything measured."""
    versions = {
        "python": platform.python_version(),
        "river": _version("river"),
        "kafka-python": _version("kafka-python"),
        "redis-py": _version("redis"),
        "kafka broker": kafka_version(),
    }
    if stack is not None:
        client = redis.Redis.from_url(stack.config.redis_url)
        versions["redis-server"] = client.info("server")["redis_version"]
        client.close()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": {
            "model": _cpu_model(),
            "cores": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False),
        },
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "executable": sys.executable,
        "versions": versions,
        "load_start": [round(v, 2) for v in os.getloadavg()],
    }
