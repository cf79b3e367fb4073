"""``python -m bench.rollout_units``: A/A decisions when labels come from users, not coins.

:mod:`bench.rollout` draws every label independently. A real A/B test assigns users to
arms, and users differ: a few click often, most rarely, and each user brings many
labels. The labels of one arm are then correlated through their users, and a test that
takes each label as an independent observation underestimates the variance of the arm's
rate: it declares winners that are only a handful of heavy users.

Each seed is a world of ``--users`` users with click rates drawn from a Beta
distribution of mean 5 % (most users near 0, a few far above) and activities drawn from
a Pareto distribution (a few users bring most labels); users are assigned 90/10 by a
hash, so the two arms are the same population (A/A: every decision is false). The
experiment is looked at after every ``--batch`` labels, as the worker looks, once each
arm has ``MIN_LABELS``. Three tests:

- the always-valid test with the per-label variance (:class:`metrics.sequential.Moments`,
  what the experiment used before units were counted);
- the same test with the cluster-robust variance over users hashed into buckets
  (:class:`metrics.clustered.ClusteredMoments`, what the experiment uses with a unit);
- a naive z-test at p < 0.05 repeated at every look, with the cluster-robust variance.

Usage: ``.venv/bin/python -m bench.rollout_units [--seeds 200] [--users 2000]
[--horizon 400000] [--batch 2000] [--effect 0.3] [--quick]``; prints the table: the A/A
false decisions, and the share of runs decided when the treatment's users click
``1 + effect`` times as often.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from streamlearn.metrics.sequential import msprt_p_value, naive_z_p_value

__all__ = ["main", "runs"]

ALPHA = 0.05
SHARE = 0.1
MIN_LABELS = 1000
EXPECTED_EFFECT = 0.1
BUCKETS = 256
TESTS = ("per-label variance", "per-unit variance", "naive z, per-unit variance")


def runs(
    seeds: int,
    users: int,
    horizon: int,
    batch: int,
    seed: int = 0,
    effect: float = 0.0,
    buckets: int = BUCKETS,
) -> dict[str, np.ndarray]:
    """Runs with the treated users' click rates ``1 + effect`` times their own; per
    test, whether each seed ended with a decision (all false in an A/A, ``effect`` 0)."""
    rng = np.random.default_rng(seed)
    rates = rng.beta(0.25, 4.75, size=(seeds, users))  # mean 5 %, most users near 0
    activity = rng.pareto(1.5, size=(seeds, users)) + 1.0
    activity /= activity.sum(axis=1, keepdims=True)
    treated = rng.random((seeds, users)) < SHARE
    rates = np.where(treated, np.minimum(1.0, rates * (1 + effect)), rates)
    bucket = rng.integers(0, buckets, size=(seeds, users))
    sums = np.zeros((seeds, 2, buckets))
    counts = np.zeros((seeds, 2, buckets))
    tau = np.full(seeds, np.nan)
    decided = {test: np.zeros(seeds, dtype=bool) for test in TESTS}
    p_min = {test: np.ones(seeds) for test in TESTS[:2]}
    rows = np.repeat(np.arange(seeds), batch)
    cumulative = np.cumsum(activity, axis=1)
    for _ in range(horizon // batch):
        draws = rng.random((seeds, batch))
        who = np.minimum(
            np.array([np.searchsorted(cumulative[s], draws[s]) for s in range(seeds)]),
            users - 1,
        ).ravel()
        clicks = (rng.random(seeds * batch) < rates[rows, who]).astype(float)
        arm = treated[rows, who].astype(int)
        np.add.at(sums, (rows, arm, bucket[rows, who]), clicks)
        np.add.at(counts, (rows, arm, bucket[rows, who]), 1.0)
        n = counts.sum(axis=2)
        s = sums.sum(axis=2)
        ready = n.min(axis=1) >= MIN_LABELS
        if not ready.any():
            continue
        mean = s / np.maximum(n, 1)
        estimate = mean[:, 1] - mean[:, 0]
        per_label = (mean * (1 - mean) / np.maximum(n - 1, 1)).sum(axis=1)
        used = (counts > 0).sum(axis=2)
        spread = ((sums - mean[:, :, None] * counts) ** 2).sum(axis=2)
        k = np.maximum(used, 2)
        per_unit = (k / (k - 1) * spread / np.maximum(n, 1) ** 2).sum(axis=1)
        tau = np.where(ready & np.isnan(tau), EXPECTED_EFFECT * mean[:, 0], tau)
        live = ready & (tau > 0)
        safe_tau = np.where(live, tau, 1.0)
        for test, variance in zip(TESTS[:2], (per_label, per_unit), strict=True):
            ok = live & (variance > 0)
            p = np.where(ok, msprt_p_value(estimate, np.where(ok, variance, 1.0), safe_tau), 1.0)
            p_min[test] = np.minimum(p_min[test], p)
            decided[test] |= p_min[test] <= ALPHA
        ok = ready & (per_unit > 0)
        naive = np.where(ok, naive_z_p_value(estimate, np.where(ok, per_unit, 1.0)), 1.0)
        decided[TESTS[2]] |= naive <= ALPHA
    return decided


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout_units", description=__doc__)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--horizon", type=int, default=400_000, help="labels per run")
    parser.add_argument("--batch", type=int, default=2000, help="labels between two looks")
    parser.add_argument("--effect", type=float, default=0.3, help="relative, for the power")
    parser.add_argument("--quick", action="store_true", help="60 seeds, 100,000 labels")
    args = parser.parse_args(argv)
    seeds, horizon = (60, 100_000) if args.quick else (args.seeds, args.horizon)
    if args.batch < 1 or horizon < args.batch:
        parser.error("--batch must be at least 1 and at most --horizon")
    started = time.perf_counter()
    null = runs(seeds, args.users, horizon, args.batch)
    found = runs(seeds, args.users, horizon, args.batch, seed=1, effect=args.effect)
    table = Table(
        title=f"{args.users} users, {seeds} seeds, {horizon:,} labels, a look every"
        f" {args.batch:,} labels ({time.perf_counter() - started:.0f} s)"
    )
    table.add_column("test")
    table.add_column("A/A: false decisions", justify="right")
    table.add_column(f"goal ≤ {ALPHA:.0%}", justify="center")
    table.add_column(f"{args.effect:+.0%}: decided", justify="right")
    for test, hits in null.items():
        rate = float(hits.mean())
        power = float(found[test].mean())
        table.add_row(test, f"{rate:.1%}", "yes" if rate <= ALPHA else "no", f"{power:.1%}")
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
