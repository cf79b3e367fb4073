"""Load test of the HTTP API: open-loop latency of /score and /rank, 1 and 2 uvicorn workers.

Redis of a private local stack holds the interaction state of a synthetic world
learned through the worker's Processor, and the registry its promoted model; then
``streamlearn serve`` runs as its own process (1, then 2 worker processes) while an
asyncio client sends requests on a fixed schedule (open loop: a request is sent at
its time whether or not the earlier ones were answered, and its latency counts
from that scheduled time, so queueing shows). The bare in-process call (parse,
one Redis round trip, features, model) is measured in the same run: the ceiling.

Usage: ``.venv/bin/python -m bench.serve [--seconds 10] [--rates 100,200,400,800]``;
writes ``reports/serve/serve.md`` and ``serve.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import redis
import redis.asyncio
from rich.console import Console
from rich.table import Table

from bench.env import free_ports, machine_info, write_config
from bench.tables import percentiles
from streamlearn.features.limits import Limits
from streamlearn.features.redis_store import RedisStore
from streamlearn.learners.registry import ModelRegistry
from streamlearn.stack import Stack, private_stack_config
from streamlearn.stream.config import Settings
from streamlearn.stream.harness import learn_world
from streamlearn.stream.processor import ModelSlot, Processor
from streamlearn.stream.serve import StateReader, parse_rank, parse_score, score_events
from streamlearn.stream.synthetic import World, WorldConfig, feed_requests

__all__ = ["main"]

console = Console()
PREFIX = "bench-serve"
#: Most connections the load generator opens (a file descriptor each); a request
#: beyond them waits for one, its latency counted from its scheduled time all the same.
MAX_CONNECTIONS = 800


def _train(settings: Settings, world_config: WorldConfig, key: bytes) -> tuple[World, int]:
    """The world's stream into Redis through the Processor; its model promoted."""
    client = redis.Redis.from_url(settings.redis.url)
    world = World.create(world_config)
    model = settings.model.build()
    store = RedisStore(client, settings.store, settings.features.interactions)
    processor = Processor(
        [ModelSlot("champion", model)],
        store,
        settings.features,
        settings.limits,
        settings.model.threshold,
    )
    last = learn_world(processor, world_config, world)
    registry = ModelRegistry(client, settings.store.key_prefix, key)
    info = registry.save(
        model,
        name=settings.model.spec,
        parent=None,
        events_scored=world_config.events,
        labels_learned=processor.slots[0].labels_learned,
        offsets={},
        metrics={},
    )
    registry.promote(info.version)
    client.close()
    return world, last


def _bodies(world: World, start_ms: int, now_ms: int) -> dict[str, list[bytes]]:
    """Request bodies: events for /score, feeds of 100 and 1,000 candidates for /rank."""
    rng = random.Random(7)
    config = world.config
    scores = []
    for n in range(2000):
        item = rng.randrange(config.items)
        scores.append(
            orjson.dumps(
                {
                    "event_id": f"bench-{n}",
                    "timestamp": now_ms,
                    "user_id": f"u{rng.randrange(config.users)}",
                    "item_id": f"i{item}",
                    "author_id": f"a{world.item_author[item]}",
                    "context": {"device": rng.choice(["ios", "web"]), "country": "fr"},
                    "features": {"quality_hint": round(rng.gauss(0, 1), 3), "length": 300},
                }
            )
        )
    out = {"score": scores}
    for size in (100, 1000):
        feeds = feed_requests(world, start_ms, 50, size)
        out[f"rank{size}"] = [orjson.dumps({**feed.body(), "timestamp": now_ms}) for feed in feeds]
    return out


async def _in_process(settings: Settings, bodies: list[bytes], path: str, n: int) -> dict:
    """The bare call, closed loop: parse, one Redis round trip, features, model."""
    client = redis.asyncio.Redis.from_url(settings.redis.url)
    registry = ModelRegistry(
        redis.Redis.from_url(settings.redis.url),
        settings.store.key_prefix,
        os.environ["STREAMLEARN_MODEL_KEY"].encode(),
    )
    model, _ = registry.load(registry.current() or "1")
    reader = StateReader(client, settings.store.key_prefix, 3)
    limits: Limits = settings.limits
    latencies = []
    for i in range(n):
        body = bodies[i % len(bodies)]
        start = time.perf_counter()
        if path == "/score":
            events = [parse_score(body, limits)]
        else:
            events = parse_rank(body, limits, 100_000, max_bytes=64 * 2**20)
        states = await reader.read(events)
        score_events(model, events, states, settings.features)
        latencies.append((time.perf_counter() - start) * 1000)
    await client.aclose()
    registry.client.close()
    return {**percentiles(latencies, (50, 95, 99)), "max": max(latencies), "n": n}


class _Connection:
    """One keep-alive HTTP/1.1 connection: a request out, its response read back.

    The load generator shares the two cores with the server and Redis, so it is kept
    cheap: a few tens of microseconds a request, where an httpx client spends about a
    millisecond and would be the bottleneck it measures.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, head: bytes, body: bytes) -> int:
        self.writer.write(head + body)
        status_line = await self.reader.readuntil(b"\r\n")
        headers = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split(b" ", 2)[1])


async def _open_loop(url: str, path: str, bodies: list[bytes], rate: float, seconds: float) -> dict:
    """Send ``rate`` requests a second for ``seconds`` on a fixed schedule.

    A request takes an idle connection or opens one (at most :data:`MAX_CONNECTIONS`),
    so a slow answer never delays the next send: latency runs from the scheduled time.
    """
    host, port = url.removeprefix("http://").split(":")
    total = max(1, int(rate * seconds))
    heads = [
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n".encode()
        for body in bodies
    ]
    idle: list[_Connection] = []
    opened: list[_Connection] = []
    freed = asyncio.Event()
    refused: dict[int, int] = {}
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    cpu = time.process_time()
    begin = loop.time() + 0.2

    async def one(i: int) -> None:
        nonlocal errors
        scheduled = begin + i / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        k = i % len(bodies)
        status = 0
        # a kept-alive connection the server closed while idle (uvicorn: 5 s) is retried
        # once on a new one, as HTTP clients do; the latency still counts from the schedule
        while not idle and len(opened) >= MAX_CONNECTIONS:
            await freed.wait()
            freed.clear()
        for reuse in (bool(idle), False):
            try:
                if reuse:
                    connection = idle.pop()
                else:
                    connection = _Connection(*await asyncio.open_connection(host, int(port)))
                    opened.append(connection)
                status = await connection.post(heads[k], bodies[k])
                idle.append(connection)
                freed.set()
                break
            except (OSError, asyncio.IncompleteReadError, ValueError):
                continue
        if status != 200:
            errors += 1
            refused[status] = refused.get(status, 0) + 1
        latencies.append((loop.time() - scheduled) * 1000)

    await asyncio.gather(*(one(i) for i in range(total)))
    elapsed = loop.time() - begin
    client_cpu = time.process_time() - cpu
    for connection in opened:
        connection.writer.close()
    return {
        **percentiles(latencies, (50, 95, 99)),
        "max": max(latencies),
        "n": total,
        "errors": errors,
        "errors_by_status": {str(k): v for k, v in sorted(refused.items())},
        "achieved_rps": total / elapsed,
        "connections": len(opened),
        "client_cpu_us_per_request": client_cpu / total * 1e6,
    }


def _serve(config: Path, port: int, workers: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streamlearn.cli", "serve", "--config", str(config),
         "--port", str(port), "--workers", str(workers)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def _cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (the uvicorn workers)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlearn serve exited with {process.returncode}")
        try:
            body = httpx.get(f"{url}/readyz", timeout=2).json()
            if body.get("ready") and body["model"]["trained"]:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("streamlearn serve was not ready within 60 s")


def _row(table: Table, name: str, result: dict) -> None:
    table.add_row(
        name,
        f"{result.get('rate', '-')}",
        f"{result.get('achieved_rps', float('nan')):.0f}" if "achieved_rps" in result else "-",
        f"{result['p50']:.1f}",
        f"{result['p95']:.1f}",
        f"{result['p99']:.1f}",
        f"{result['max']:.1f}",
        str(result.get("errors", "-")),
    )


def _us(row: dict, name: str) -> str:
    return f"{row[name]:.0f}" if name in row else "-"


def _markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# HTTP API latency (`python -m bench.serve`)",
        "",
        f"{machine['date']}, {machine['cpu']['model']}, {machine['cpu']['cores']} cores,"
        f" {machine['memory_gib']} GiB; load average {results['load_start']} at the start,"
        f" {results['load_end']} at the end (the cores are shared with other work: read"
        " the rows of one run against each other). Open loop: each point sends requests on"
        f" a fixed schedule for {results['seconds']} s; latency is from the scheduled send"
        " time to the response, in ms, measured by a minimal asyncio HTTP/1.1 client"
        " (keep-alive connections, at most 800) on the same machine; CPU per request is"
        " the server's processes' and the client's, from /proc. The in-process rows are"
        " the bare call (parse, one Redis round trip,"
        " features, model), closed loop: the ceiling.",
        "",
        "| scenario | rate (req/s) | achieved | p50 | p95 | p99 | max | errors"
        " | server CPU µs/req | client CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results["rows"].items():
        achieved = f"{r['achieved_rps']:.0f}" if "achieved_rps" in r else "-"
        lines.append(
            f"| {name} | {r.get('rate', '-')} | {achieved} | {r['p50']:.1f} | {r['p95']:.1f}"
            f" | {r['p99']:.1f} | {r['max']:.1f} | {r.get('errors', '-')}"
            f" | {_us(r, 'server_cpu_us_per_request')} | {_us(r, 'client_cpu_us_per_request')} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Seconds per point.")
    parser.add_argument(
        "--rates", default="100,200,400,800,1600", help="/score rates ('': no /score point)."
    )
    parser.add_argument(
        "--rank-rates", default="20,5", help="/rank rates at 100, 1000 (0: no point)."
    )
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts.")
    parser.add_argument("--out", type=Path, default=Path("reports/serve"))
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r]
    rank_rates = [float(r) for r in args.rank_rates.split(",") if r]
    key = secrets.token_hex(32)
    os.environ["STREAMLEARN_MODEL_KEY"] = key
    load_start = [round(v, 2) for v in os.getloadavg()]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        stack = Stack(private_stack_config(root / "stack"), reporter=lambda message: None)
        try:
            stack.up(services=["redis"])
            machine = machine_info(None)
            settings = Settings(
                redis={"url": stack.config.redis_url},
                store={"key_prefix": PREFIX},
                serve={"max_candidates": 1000, "max_body_bytes": 4 * 2**20},
                metrics={"port": 0},
            )
            console.print("training the model on a synthetic world into Redis ...")
            world_config = WorldConfig(events=20_000, users=1000, items=3000, seed=42)
            world, last_ms = _train(settings, world_config, key.encode())
            bodies = _bodies(world, last_ms, int(time.time() * 1000))
            config = write_config(settings, root / "serve.yaml")
            for path, kind, n in (("/score", "score", 2000), ("/rank", "rank100", 200),
                                  ("/rank", "rank1000", 40)):  # fmt: skip
                rows[f"in-process {kind}"] = asyncio.run(
                    _in_process(settings, bodies[kind], path, n)
                )
            for workers in [int(w) for w in args.workers.split(",")]:
                port = free_ports(1)[0]
                url = f"http://127.0.0.1:{port}"
                process = _serve(config, port, workers, root / "serve.log")
                try:
                    _wait_ready(url, process)
                    plan = [("/score", "score", rate) for rate in rates]
                    sizes = zip(("rank100", "rank1000"), rank_rates, strict=False)
                    plan += [("/rank", kind, rate) for kind, rate in sizes if rate]
                    for path, kind, rate in plan:
                        # a short warm-up at the point's rate, then the measurement
                        asyncio.run(_open_loop(url, path, bodies[kind], rate, 1.0))
                        server_cpu = _cpu_s(process.pid)
                        result = asyncio.run(
                            _open_loop(url, path, bodies[kind], rate, args.seconds)
                        )
                        server_cpu = _cpu_s(process.pid) - server_cpu
                        result["server_cpu_us_per_request"] = server_cpu / result["n"] * 1e6
                        result["rate"] = rate
                        name = f"HTTP {kind} at {rate:g}/s, {workers} worker{'s' * (workers > 1)}"
                        rows[name] = result
                        console.print(f"{kind} at {rate:g}/s, {workers} workers: {result}")
                finally:
                    process.terminate()
                    process.wait(timeout=30)
        finally:
            stack.down()
    results = {
        "machine": machine,
        "seconds": args.seconds,
        "load_start": load_start,
        "load_end": [round(v, 2) for v in os.getloadavg()],
        "rows": rows,
    }
    table = Table("scenario", "rate", "achieved", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors")
    for name, result in rows.items():
        _row(table, name, result)
    console.print(table)
    console.print(
        f"load average: {results['load_start']} at the start, {results['load_end']} at the end"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    (args.out / "serve.md").write_text(_markdown(results), encoding="utf-8")
    console.print(f"written: {args.out / 'serve.md'}")


if __name__ == "__main__":
    main()
