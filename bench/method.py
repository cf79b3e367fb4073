"""How each figure of ``python -m bench`` is measured: the latency scenario's
parameters, and the notes that state the method under the report's table.

Examples
--------
>>> LATENCY_FRACTIONS
(0.25, 0.5, 0.75)
>>> NOTES[-1].startswith("The machine is shared")
True
"""

from __future__ import annotations

from .memory import MODE as MEMORY_MODE

__all__ = [
    "LATENCY_FRACTIONS",
    "LATENCY_HOP_FRACTION",
    "LATENCY_STARTUP_S",
    "LATENCY_WARMUP_FRACTION",
    "LATENCY_WARMUP_ROUNDS",
    "LATENCY_WARMUP_S",
    "LATENCY_WARMUP_TOLERANCE",
    "NOTES",
]

#: The latency points' rates, as fractions of the worker's maximum events/s.
LATENCY_FRACTIONS = (0.25, 0.5, 0.75)
#: Unreported live load before the latency points, in rounds at a fraction of the
#: maximum: a fresh broker's C2 compiler thread still used 35-60 % of a core 45-60 s
#: into live load (``top -H`` on the broker, 2-core machine), so rounds go on until the
#: broker's CPU per round stops falling (``bench.latency.broker_settled``), at most
#: ``LATENCY_WARMUP_ROUNDS`` (one with ``--quick``).
LATENCY_WARMUP_S = 20.0
LATENCY_WARMUP_ROUNDS = 6
#: The broker is warm once its CPU per round falls by less than this fraction.
LATENCY_WARMUP_TOLERANCE = 0.15
LATENCY_WARMUP_FRACTION = 0.5
#: Seconds at the start of each point left out of its percentiles: the worker's first
#: fetches after its release come in small, late pieces while the backlog builds.
LATENCY_STARTUP_S = 2.0
#: The rate of the Kafka hop's baseline, as a fraction of the worker's events/s (the goal's).
LATENCY_HOP_FRACTION = 0.5

NOTES = [
    "Every process runs with `stream.runtime.tune_interpreter()` (larger garbage-collector "
    "thresholds, a 0.5 ms GIL switch interval), as `streamlearn run` and `streamlearn backtest` "
    "do; the ceiling's bare loop included.",
    "All scenarios use the same synthetic world (`stream.synthetic.generate_world`, seed 42: "
    "each event followed later by its label record) and the `logistic` preset; events/s counts "
    "events, while the labels of those events are processed in the same time.",
    "ceiling: the x dicts are first collected by running the Processor once over a MemoryStore "
    "(not timed); then only `predict_proba_one` + `learn_one` per event with its joined label; "
    "best of 3 runs.",
    "backtest: `stream.backtest.backtest(path, Settings(), ['logistic'])`, its own timer "
    "(MemoryStore, monitor and scorecard, batches of 1000).",
    "monitor off/on: the worker's Processor (worker metrics) over a MemoryStore, with and "
    "without its Monitor, alternated, best of each; the worker itself has no switch to turn "
    "monitoring off.",
    "Processor + RedisStore: the worker's Processor against the real Redis, no Kafka, batches "
    "of 500 (the worker's max_poll_records); the unprofiled pass of the profile. Redis's CPU: "
    "its main thread's (INFO cpu, used_cpu_*_main_thread) over that pass, per event.",
    "worker: `stream.worker.Worker` in its own process (`bench.worker_run`), all events and "
    "labels produced beforehand to 4 partitions; timed from the release of a start barrier "
    "(group joined, partitions assigned) to its last commit after the end offsets. "
    "'checkpoints off': no STREAMLEARN_MODEL_KEY, offsets committed every "
    "kafka.commit_interval_s (1 s); "
    "'checkpoints + transactions': kafka.transactions=true, a signing key, default checkpoint "
    "cadence. The two are run alternately, twice each (once with --quick), and the best run "
    "of each is shown (every run's events/s is in bench.json).",
    "CPU: CPU seconds of each process (worker from getrusage, Kafka broker and redis-server "
    "from psutil over the same window) as % of one core over the run's wall time; 'other' is "
    "the rest of the machine's busy CPU time in that window (other programs); 'producer' is "
    "the benchmark process sending the latency runs' load. All share the cores listed above.",
    "floor: `bench/naive.py`, one Redis round trip per record (a plain pipeline: the previous "
    "record's writes, then this record's reads), one producer send + flush per prediction, "
    "same schema, feature math and model; timed from its first record to its last.",
    "2 workers: one worker, then two worker processes in one group sharing the 4 partitions "
    "(checkpoints off), alternated, best of each; events/s from the first release to the "
    "last commit of either. The one-worker row's note divides each process's CPU by the events "
    "and gives the rate at which those costs per event keep every core busy.",
    "latency: one worker ('checkpoints off'); an open-loop librdkafka producer (confluent-kafka) "
    "in the benchmark process (linger 5 ms as the project's, acks all, murmur2 keys; a few % of a "
    "core) sends events on a fixed schedule "
    "at 25/50/75% of the measured single-worker events/s, labels following; latency = Kafka "
    "timestamp of the prediction record - Kafka timestamp of the event record (CreateTime, one "
    "clock); nearest-rank percentiles over the events sent after the first "
    f"{LATENCY_STARTUP_S:g} s of each point (the worker's start-up; the note gives p99 and "
    f"max with them). Unreported {LATENCY_WARMUP_S:g} s runs at "
    f"{LATENCY_WARMUP_FRACTION:.0%} come first, until the broker's CPU per run falls by less "
    f"than {LATENCY_WARMUP_TOLERANCE:.0%} (at most {LATENCY_WARMUP_ROUNDS}): a fresh "
    "broker's JIT compiles its live paths for a minute or more of live load.",
    f"Kafka hop alone: after the warm-up, the same load at {LATENCY_HOP_FRACTION:.0%} read by a "
    "bare librdkafka consumer in the benchmark process (no worker, no group, the worker's fetch "
    "settings); latency = the time the consumer gets the event record - its CreateTime: the "
    "producer's linger, the broker and the fetch, the share of the latency no worker removes.",
    f"memory: {MEMORY_MODE}, the world generated on the fly; RSS at start, after the 10% "
    "warm-up and at the end; growth = (end - warm-up) / warm-up.",
    "The machine is shared: the load averages above and the 'other' CPU say how busy it was; "
    "the figures vary from run to run accordingly.",
]
