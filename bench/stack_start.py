"""Kafka broker start time of the local stack, cold and warm; prints a table.

- cold: Maven resolves the jars into an empty cache (with an empty Maven local
  repository, so everything comes from Maven Central), then the storage is
  formatted and the broker started until it answers;
- cold, Maven repository warm: the same with ``~/.m2`` already filled;
- warm: cached jars, a fresh root (fresh format), broker started until it answers.

Usage: ``.venv/bin/python bench/stack_start.py [--repeat 3] [--no-network]``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from streamlearn.stack import Stack, StackConfig
from streamlearn.stack.install import default_jar_cache, ensure_kafka_jars, kafka_version

__all__ = ["main", "measure_start"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure_start(jars: Path, workdir: Path) -> tuple[float, float]:
    """Format a fresh root and start the broker until ready; return (format s, start s)."""
    marks: dict[str, float] = {}
    config = StackConfig(
        root=workdir / "stack",
        kafka_port=_free_port(),
        kafka_controller_port=_free_port(),
        kafka_jars=jars,
    )
    stack = Stack(config, reporter=lambda msg: marks.setdefault(msg, time.perf_counter()))
    begin = time.perf_counter()
    try:
        stack.up(services=["kafka"])
        end = time.perf_counter()
    finally:
        stack.down()
    started = marks["kafka: starting"]
    return started - begin, end - started


def main() -> None:
    """Run the measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm starts to run")
    parser.add_argument("--no-network", action="store_true", help="skip the Maven Central run")
    args = parser.parse_args()

    rows: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="stack-bench-") as tmp:
        work = Path(tmp)
        cold_runs = [("cold (empty Maven repository)", True)] if not args.no_network else []
        cold_runs.append(("cold (~/.m2 already filled)", False))
        for i, (label, empty_repo) in enumerate(cold_runs):
            cache = work / f"jars-{i}"
            t0 = time.perf_counter()
            ensure_kafka_jars(cache, maven_repo=work / f"m2-{i}" if empty_repo else None)
            jars_s = time.perf_counter() - t0
            fmt, start = measure_start(cache, work / f"cold-{i}")
            rows.append((label, jars_s, fmt, start))

        cached = ensure_kafka_jars(default_jar_cache(kafka_version()))
        t0 = time.perf_counter()
        ensure_kafka_jars(cached)
        reuse_s = time.perf_counter() - t0
        warm = [measure_start(cached, work / f"warm-{i}") for i in range(args.repeat)]
        rows.append(
            (
                f"warm (median of {args.repeat})",
                reuse_s,
                statistics.median(w[0] for w in warm),
                statistics.median(w[1] for w in warm),
            )
        )
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"Kafka {kafka_version()} local broker start (seconds)")
    for column in ("run", "jars", "format", "start to ready", "total"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for label, jars_s, fmt, start in rows:
        total = jars_s + fmt + start
        table.add_row(label, f"{jars_s:.2f}", f"{fmt:.2f}", f"{start:.2f}", f"{total:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
