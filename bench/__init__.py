"""Benchmarks of streamlearn against its own baselines, run by ``python -m bench``.

One invocation starts a private local stack (Kafka and Redis on free ports),
generates one synthetic world and measures, on those events and the same
``logistic`` model: the bare River loop (the ceiling), the in-process
backtest, the worker on the real Kafka and Redis (checkpoints off, then with
checkpoints and transactions), a naive one-round-trip-per-record design (the
floor), one against two workers, event-to-prediction latency under an
open-loop load, worker memory over a long stream and a profile of the hot
path. Results go to ``bench.md``, ``bench.json`` and ``profile.txt``.
"""
