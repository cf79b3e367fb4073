"""Crash soak: kill -9 a worker at random moments, many times, then check nothing was lost.

    .venv/bin/python -m bench.soak --trials 50 --events 20000

Starts its own local stack (Kafka, Redis) on free ports, produces a synthetic world,
then repeatedly starts ``streamlearn run`` (transactions and checkpoints on) and kills
it with SIGKILL after a random time; a last run drains the topics. It then checks the
invariants: every event scored exactly once among committed predictions, the Redis
interaction counters equal a recount from the source, and the model has learned every
label once. Prints a table; exits 1 when an invariant fails.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis
from rich.table import Table

from streamlearn.features.schema import is_event_record, is_label_record
from streamlearn.stack import Stack, fast_stack_config
from streamlearn.stream import harness
from streamlearn.stream.synthetic import WorldConfig, generate_world
from streamlearn.stream.ui import console

KEY = "soak-signing-key-" + "0" * 32


def soak(trials: int, events: int, seed: int, workdir: Path) -> tuple[Table, bool]:
    stack = Stack(fast_stack_config(workdir / "stack"))
    stack.up(services=["kafka", "redis"])
    try:
        cfg = stack.config
        records = list(generate_world(WorldConfig(events=events, seed=seed)))
        prefix = f"soak{seed}"
        settings = harness.settings_for(
            cfg.kafka_bootstrap,
            cfg.redis_url,
            prefix,
            partitions=4,
            kafka={
                "transactions": True,
                "max_poll_records": 200,
                "session_timeout_ms": 6000,
                "static_membership": True,
            },
            checkpoint={"every_labels": 1000, "every_seconds": 1},
        )
        harness.produce(settings, harness.lines_of(records))
        config = harness.write_config(settings, workdir / "worker.yaml")
        env = {"STREAMLEARN_MODEL_KEY": KEY}
        started = time.monotonic()
        kills = harness.kill_randomly(
            config,
            trials,
            random.Random(seed),
            env,
            alive_s=(1.5, 6.0),
            on_trial=lambda n, killed: console.log(
                f"trial {n + 1}/{trials}: {'killed' if killed else 'done'}"
            ),
        )
        client = redis.Redis.from_url(cfg.redis_url)
        group = settings.kafka.group_id
        before_final = harness.labels_learned_by_last_checkpoint(
            client, prefix, group, KEY.encode()
        )
        final = harness.worker_process(config, "--idle-timeout", "5", env=env)
        final_code = final.wait(timeout=1800)
        seconds = time.monotonic() - started

        per_event = Counter(
            r.key.decode()
            for r in harness.drain(cfg.kafka_bootstrap, settings.kafka.topics.predictions)
        )
        expected = {r["event_id"] for r in records if is_event_record(r)}
        counters_exact = harness.stored_counters(client, prefix) == harness.recount(records)
        learned = harness.labels_learned_by_last_checkpoint(client, prefix, group, KEY.encode())
        labels = sum(1 for r in records if is_label_record(r))
        checks = {
            "final run exit code 0": final_code == 0,
            "every event scored": set(per_event) == expected,
            "each event_id exactly once": set(per_event.values()) == {1},
            "Redis counters equal a recount": counters_exact,
            f"labels learned = {labels}": learned == labels,
        }
        table = Table(title=f"crash soak: {trials} trials, {kills} kill -9, {events} events")
        table.add_column("check")
        table.add_column("result")
        for name, ok in checks.items():
            table.add_row(name, "[green]pass" if ok else "[red]FAIL")
        table.add_row("labels learned by the killed trials' checkpoints", str(before_final))
        table.add_row("predictions committed", str(sum(per_event.values())))
        table.add_row("labels learned by the last checkpoint", str(learned))
        table.add_row("wall seconds", f"{seconds:.0f}")
        return table, all(checks.values())
    finally:
        stack.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="streamlearn-soak-") as folder:
        table, ok = soak(args.trials, args.events, args.seed, Path(folder))
    console.print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
