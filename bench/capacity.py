"""A capacity model: what a target rate takes, from the CPU per event the bench measured.

``python -m bench.capacity [--rate 1000000 ...] [--bench reports/bench/bench.json]
[--worker-us W --broker-us B --redis-us R] [--utilisation 0.5]`` prints, per target
rate, the worker processes, the events topic's partitions, the Redis shards (masters
and their replicas), the Kafka brokers and the cores they take together, then the
assumptions. The costs per event are the worker's, the broker's and Redis's CPU time
per event of one bench run (:func:`costs_from_bench`: the ``worker`` scenario with
transactions, every process metered over the same window), or the figures given.

The model is arithmetic on those costs, stated so that each can be checked:

- a worker is one Python process on one core: it runs at ``utilisation`` of that core
  at the target rate (the bench measures p99 latency at half the maximum rate, hence
  the default 0.5);
- each worker reads at least ``partitions_per_worker`` partitions, so the group can
  grow that many times without new partitions;
- a Redis shard runs every command on one thread, at ``utilisation`` of it; a replica
  costs ``replica_cost`` of its master (0.4: 27 µs on the replicas against 65 on the
  masters, measured on a 3-master cluster with the sharded store);
- a broker's cost per event grows with the replication factor (each replica writes
  the record; followers fetch it), and a broker has ``broker_cores`` cores at
  ``utilisation``; at least ``replication`` brokers.

Network, disk and the model's own growth with more features are not modelled: the
model is where to start sizing, not a promise.

Examples
--------
>>> costs = Costs(worker_us=540, broker_us=76, redis_us=222)
>>> plan = capacity(100_000, costs, Assumptions())
>>> plan.workers, plan.partitions, plan.redis_masters, plan.brokers
(108, 216, 45, 6)
>>> round(plan.cores)
216
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["MEASURED", "Assumptions", "Costs", "Plan", "capacity", "costs_from_bench"]

#: CPU per event measured by ``python -m bench`` on 2026-12-02 (2-core AMD EPYC VM,
#: worker with transactions, one worker; the README's performance section).
MEASURED_ON = "python -m bench, 2026-12-02, one worker with transactions (README)"


@dataclass(frozen=True)
class Costs:
    """CPU time per event, in microseconds, of each component (one replica of each)."""

    worker_us: float
    broker_us: float
    redis_us: float
    source: str = ""


MEASURED = Costs(worker_us=540.0, broker_us=76.0, redis_us=222.0, source=MEASURED_ON)


@dataclass(frozen=True)
class Assumptions:
    """What the model takes as given; see the module docstring."""

    utilisation: float = 0.5
    partitions_per_worker: int = 2
    replication: int = 3
    redis_replicas: int = 1
    replica_cost: float = 0.4
    broker_cores: int = 8


@dataclass(frozen=True)
class Plan:
    """What ``rate`` events per second take."""

    rate: float
    workers: int
    partitions: int
    redis_masters: int
    redis_replicas: int
    brokers: int
    worker_cores: float
    redis_cores: float
    broker_cores: float

    @property
    def cores(self) -> float:
        return self.worker_cores + self.redis_cores + self.broker_cores


def _count(load_cores: float, utilisation: float) -> int:
    """Processes of one core each that carry ``load_cores`` at ``utilisation``."""
    return max(1, math.ceil(load_cores / utilisation - 1e-9))


def capacity(rate: float, costs: Costs, assume: Assumptions) -> Plan:
    """The processes and cores ``rate`` events per second take at ``costs``."""
    if rate <= 0:
        raise ValueError(f"the rate must be positive, got {rate}")
    if not 0 < assume.utilisation <= 1:
        raise ValueError(f"utilisation must be in (0, 1], got {assume.utilisation}")
    u = assume.utilisation
    worker_load = rate * costs.worker_us / 1e6
    workers = _count(worker_load, u)
    redis_load = rate * costs.redis_us / 1e6
    masters = _count(redis_load, u)
    broker_load = rate * costs.broker_us * assume.replication / 1e6
    brokers = max(assume.replication, _count(broker_load, u * assume.broker_cores))
    replicas = masters * assume.redis_replicas
    return Plan(
        rate=rate,
        workers=workers,
        partitions=workers * assume.partitions_per_worker,
        redis_masters=masters,
        redis_replicas=replicas,
        brokers=brokers,
        worker_cores=worker_load / u,
        redis_cores=(redis_load / u) * (1 + assume.redis_replicas * assume.replica_cost),
        broker_cores=broker_load / u,
    )


def costs_from_bench(path: Path, run: str = "transactions") -> Costs:
    """The costs per event of a ``bench.json``'s worker scenario (``run``: ``off``,
    ``transactions``, ``librdkafka_off``, ``librdkafka_transactions``)."""
    data = json.loads(path.read_text())
    try:
        measured = data["results"]["worker"][run]
    except KeyError:
        raise ValueError(f"{path} has no worker scenario {run!r}: run `python -m bench`") from None
    events = measured["events"]
    cpu = {name: entry["cpu_s"] for name, entry in measured["cpu"].items()}
    worker_s = sum(s for name, s in cpu.items() if name not in ("kafka", "redis", "other"))
    when = data.get("machine", {}).get("date", "")
    return Costs(
        worker_us=1e6 * worker_s / events,
        broker_us=1e6 * cpu.get("kafka", 0.0) / events,
        redis_us=1e6 * cpu.get("redis", 0.0) / events,
        source=f"{path} ({run}{', ' + when if when else ''})",
    )


def table(plans: list[Plan]) -> Table:
    out = Table(title="Capacity per target rate")
    columns = ("events/s", "workers", "partitions", "Redis shards + replicas", "brokers")
    for name in (*columns, "cores", "worker cores", "Redis cores", "broker cores"):
        out.add_column(name, justify="right")
    for p in plans:
        out.add_row(
            f"{p.rate:,.0f}",
            f"{p.workers:,}",
            f"{p.partitions:,}",
            f"{p.redis_masters:,} + {p.redis_replicas:,}",
            f"{p.brokers:,}",
            f"{p.cores:,.0f}",
            f"{p.worker_cores:,.0f}",
            f"{p.redis_cores:,.0f}",
            f"{p.broker_cores:,.0f}",
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--rate", type=float, action="append", help="events/s (repeatable)")
    parser.add_argument("--bench", type=Path, help="a bench.json to take the costs from")
    parser.add_argument("--run", default="transactions", help="its worker run")
    for name in ("worker", "broker", "redis"):
        parser.add_argument(f"--{name}-us", type=float, help=f"the {name}'s µs CPU per event")
    defaults = Assumptions()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=type(value), default=value, help=f"default {value}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    costs = costs_from_bench(args.bench, args.run) if args.bench else MEASURED
    given = {f"{n}_us": getattr(args, f"{n}_us") for n in ("worker", "broker", "redis")}
    if any(v is not None for v in given.values()):
        chosen = {k: v for k, v in given.items() if v is not None}
        costs = Costs(**{**asdict(costs), **chosen, "source": f"{costs.source}; given {chosen}"})
    assume = Assumptions(**{name: getattr(args, name) for name in asdict(Assumptions())})
    plans = [capacity(rate, costs, assume) for rate in args.rate or [1e4, 1e5, 1e6]]
    if args.json:
        rows: list[dict[str, Any]] = [{**asdict(p), "cores": p.cores} for p in plans]
        print(json.dumps({"costs": asdict(costs), "assumptions": asdict(assume), "plans": rows}))
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))
    console.print(table(plans))
    console.print(
        f"Costs per event: worker {costs.worker_us:.0f} µs, broker {costs.broker_us:.0f} µs"
        f" (one replica), Redis {costs.redis_us:.0f} µs; from {costs.source}."
    )
    console.print(
        f"Assumptions: each process at {assume.utilisation:.0%} of its core; "
        f"{assume.partitions_per_worker} partitions per worker; replication {assume.replication}"
        f" (broker cost × {assume.replication}), {assume.broker_cores} cores per broker; "
        f"{assume.redis_replicas} replica per Redis master at {assume.replica_cost:.0%} of its"
        " cost. Network and disk are not modelled."
    )


if __name__ == "__main__":
    main()
