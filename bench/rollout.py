"""``python -m bench.rollout``: are the experiment's decisions safe under continuous monitoring?

Simulated labels, no servers: each run is an experiment watched after every batch of
labels, as the worker watches one, many seeds at once (numpy over seeds).

- **A/B on the positive-label rate** (click-through): a base rate of 5 %, a 90/10
  split, a decision looked at after every ``--batch`` labels up to ``--horizon``
  labels, once each arm has ``MIN_LABELS``. The always-valid test
  (:mod:`metrics.sequential`, the mixture scale frozen at the first look at 10 % of the
  control's rate, as :class:`learners.experiment.Experiment` does) beside a naive z-test
  at p < 0.05 repeated at every look. A/A (no effect): every decision is false (a false
  promotion when the treatment looked better, a false revert when worse); true effects
  of +5 %, +10 % and -10 % relative: power (right decisions), wrong-way decisions and
  the delay in labels from the start.
- **The rollback rule** on paired per-label log loss (:class:`~metrics.sequential.
  PairedRelativeDrop`, as :class:`learners.rollback.RollbackRule` uses it): the live
  model and its last-known-good copy score the same labels; the live model's log loss
  is 0 %, 5 % (the limit itself) or 10 % and 20 % above the copy's. A rollback at 0 % or
  5 % is false; at 10 % and 20 % it is the detection.

The vectorised runs use the same functions as the classes; a few seeds of each kind are
run through :class:`~learners.experiment.Experiment` and :class:`~learners.rollback.
RollbackRule` too, and must decide at the same look.

Usage: ``.venv/bin/python -m bench.rollout [--seeds 200] [--horizon 4000000]
[--batch 1000] [--quick] [--out reports/rollout]``; writes ``rollout.md`` and
``rollout.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from streamlearn.learners.experiment import Experiment, ExperimentConfig
from streamlearn.learners.rollback import RollbackConfig, RollbackRule
from streamlearn.metrics.sequential import confidence_radius, msprt_p_value, naive_z_p_value

__all__ = ["Outcome", "ab_runs", "main", "rollback_runs", "run"]

ALPHA = 0.05
BASE_RATE = 0.05
SHARE = 0.1
MIN_LABELS = 1000
EXPECTED_EFFECT = 0.1  # the mixture scale, relative to the control's mean
ROLLBACK_DROP = 0.05
GOAL_FALSE = 0.05


@dataclass
class Outcome:
    """One scenario and one test over every seed."""

    study: str
    scenario: str
    test: str
    seeds: int
    right: int = 0  # the decision the truth calls for (none under the null)
    wrong: int = 0  # a false promotion / revert / rollback
    false_promotions: int = 0
    false_reverts: int = 0
    delays: list[int] = field(default_factory=list)

    @property
    def wrong_rate(self) -> float:
        return self.wrong / self.seeds

    @property
    def power(self) -> float:
        return self.right / self.seeds

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("delays")
        out["wrong_rate"] = self.wrong_rate
        out["power"] = self.power
        out["delay_median"] = statistics.median(self.delays) if self.delays else None
        out["delay_p90"] = float(np.percentile(self.delays, 90)) if len(self.delays) > 1 else None
        return out


def _first(mask: np.ndarray, looks: np.ndarray) -> np.ndarray:
    """Per seed, the label count at the first look where ``mask`` holds, else -1."""
    hit = mask.any(axis=0)
    return np.where(hit, looks[mask.argmax(axis=0)], -1)


def ab_runs(
    effect: float, seeds: int, horizon: int, batch: int, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A/B runs of the positive-label rate with a relative ``effect`` on the treatment.

    Returns, per test (``sequential``, ``naive``), the label count of each seed's first
    decision (-1: none within ``horizon``) and its direction (+1 promote, -1 revert).
    """
    rng = np.random.default_rng(seed)
    rate_c, rate_t = BASE_RATE, BASE_RATE * (1 + effect)
    n = np.zeros((2, seeds))
    s = np.zeros((2, seeds))
    tau = np.full(seeds, np.nan)
    p_min = np.ones(seeds)
    lower = np.full(seeds, -np.inf)
    upper = np.full(seeds, np.inf)
    steps = horizon // batch
    seq_hit = np.zeros((steps, seeds), dtype=bool)
    naive_hit = np.zeros((steps, seeds), dtype=bool)
    naive_sign = np.zeros((steps, seeds))
    seq_sign = np.zeros(seeds)
    looks = np.arange(1, steps + 1) * batch
    for step in range(steps):
        n_t = rng.binomial(batch, SHARE, seeds)
        n_c = batch - n_t
        s[0] += rng.binomial(n_c, rate_c)
        s[1] += rng.binomial(n_t, rate_t)
        n[0] += n_c
        n[1] += n_t
        ready = n.min(axis=0) >= MIN_LABELS
        if not ready.any():
            continue
        mean = s / n
        variance = mean * (1 - mean) / np.maximum(n - 1, 1)  # of each mean
        v = variance.sum(axis=0)
        estimate = mean[1] - mean[0]
        tau = np.where(ready & np.isnan(tau), EXPECTED_EFFECT * mean[0], tau)
        live = ready & (tau > 0) & (v > 0)
        safe_tau = np.where(live, tau, 1.0)
        p_now = np.where(live, _p_values(estimate, v, safe_tau), 1.0)
        radius = np.where(live, _radii(v, safe_tau), np.inf)
        p_min = np.minimum(p_min, p_now)
        lower = np.maximum(lower, np.where(live, estimate - radius, -np.inf))
        upper = np.minimum(upper, np.where(live, estimate + radius, np.inf))
        decided = p_min <= ALPHA
        newly = decided & (seq_sign == 0)
        seq_sign = np.where(newly, np.where(lower > 0, 1.0, -1.0), seq_sign)
        seq_hit[step] = decided
        p_naive = np.where(ready, naive_z_p_value(estimate, np.where(v > 0, v, 0.0)), 1.0)
        naive_hit[step] = p_naive <= ALPHA
        naive_sign[step] = np.sign(estimate)
    naive_first = _first(naive_hit, looks)
    naive_index = naive_hit.argmax(axis=0)
    naive_dir = np.where(naive_first >= 0, naive_sign[naive_index, np.arange(seeds)], 0.0)
    return {
        "sequential": (_first(seq_hit, looks), seq_sign),
        "naive": (naive_first, naive_dir),
    }


def _p_values(estimate: np.ndarray, variance: np.ndarray, tau: np.ndarray) -> np.ndarray:
    return msprt_p_value(estimate, variance, tau)


def _radii(variance: np.ndarray, tau: np.ndarray) -> np.ndarray:
    return confidence_radius(variance, tau, ALPHA)


def _loss(y: np.ndarray, q: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    q = np.clip(q, eps, 1 - eps)
    return -(y * np.log(q) + (1 - y) * np.log(1 - q))


def _predictions(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Labels with a true probability around ``BASE_RATE``, and the true logits."""
    logit = np.log(BASE_RATE / (1 - BASE_RATE)) + rng.normal(0.0, 1.0, shape)
    truth = 1 / (1 + np.exp(-logit))
    y = rng.random(shape) < truth
    return y, logit


def _score(rng: np.random.Generator, logit: np.ndarray, noise: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(logit + rng.normal(0.0, noise, logit.shape))))


def noise_for_drop(drop: float, reference_noise: float = 0.5, samples: int = 400_000) -> float:
    """The live model's logit noise that makes its mean log loss ``drop`` above the copy's."""
    rng = np.random.default_rng(12345)
    y, logit = _predictions(rng, (samples,))
    z = rng.normal(0.0, 1.0, samples)

    def mean_loss(noise: float) -> float:
        return float(_loss(y, 1 / (1 + np.exp(-(logit + noise * z)))).mean())

    target = (1 + drop) * mean_loss(reference_noise)
    low, high = reference_noise, 5.0
    if drop <= 0:
        return reference_noise
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if mean_loss(middle) < target else (low, middle)
    return (low + high) / 2


def rollback_runs(
    drop: float,
    seeds: int,
    horizon: int,
    batch: int,
    seed: int = 0,
    reference_noise: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Rollback-rule runs: the label count of each seed's first rollback (-1: none) and
    the live model's measured relative change in loss at the end."""
    rng = np.random.default_rng(seed)
    noise = noise_for_drop(drop, reference_noise)
    sums = np.zeros((3, seeds))  # difference, its square, the copy's loss
    live_sum = np.zeros(seeds)
    n = 0
    tau = np.full(seeds, np.nan)
    p_min = np.ones(seeds)
    lower = np.full(seeds, -np.inf)
    first = np.full(seeds, -1)
    for _ in range(horizon // batch):
        y, logit = _predictions(rng, (seeds, batch))
        reference = _loss(y, _score(rng, logit, reference_noise))
        live = _loss(y, _score(rng, logit, noise))
        d = live - (1 + ROLLBACK_DROP) * reference
        sums += np.stack([d.sum(axis=1), (d * d).sum(axis=1), reference.sum(axis=1)])
        live_sum += live.sum(axis=1)
        n += batch
        if n < MIN_LABELS:
            continue
        mean = sums[0] / n
        v = (sums[1] - n * mean * mean) / (n - 1) / n
        tau = np.where(np.isnan(tau), ROLLBACK_DROP * sums[2] / n, tau)
        p_min = np.minimum(p_min, _p_values(mean, v, tau))
        lower = np.maximum(lower, mean - _radii(v, tau))
        hit = (p_min <= ALPHA) & (lower > 0) & (first < 0)
        first = np.where(hit, n, first)
    return first, live_sum / sums[2] - 1


def _outcome_ab(
    scenario: str, test: str, effect: float, first: np.ndarray, sign: np.ndarray
) -> Outcome:
    out = Outcome("A/B positive rate", scenario, test, len(first))
    decided = first >= 0
    out.false_promotions = int((decided & (sign > 0) & (effect <= 0)).sum())
    out.false_reverts = int((decided & (sign < 0) & (effect >= 0)).sum())
    out.wrong = out.false_promotions + out.false_reverts
    if effect != 0:
        good = decided & (sign == np.sign(effect))
        out.right = int(good.sum())
        out.delays = [int(x) for x in first[good]]
    return out


def cross_check(seed: int, effect: float, horizon: int, batch: int) -> tuple[int, int]:
    """One seed through :class:`Experiment` label by label and through the vectorised
    path with the same draws: the label counts of their first decisions."""
    first, _ = ab_runs(effect, 1, horizon, batch, seed)["sequential"]
    rng = np.random.default_rng(seed)
    config = ExperimentConfig(
        id="aa",
        arms={"control": 1 - SHARE, "treatment": SHARE},
        min_labels_per_arm=MIN_LABELS,
        expected_relative_effect=EXPECTED_EFFECT,
        guardrails={"error_ratio": None, "latency_p99_ratio": None, "positive_rate_shift": None},
        max_duration_s=None,
    )
    experiment = Experiment(config)
    for step in range(horizon // batch):
        n_t = int(rng.binomial(batch, SHARE, 1)[0])
        n_c = batch - n_t
        positives = (
            int(rng.binomial(n_c, BASE_RATE, 1)[0]),
            int(rng.binomial(n_t, BASE_RATE * (1 + effect), 1)[0]),
        )
        for arm, count, hits in (("control", n_c, positives[0]), ("treatment", n_t, positives[1])):
            for i in range(count):
                experiment.observe_label(arm, i < hits, 0.5)
        if experiment.decide().action != "continue":
            return int(first[0]), (step + 1) * batch
    return int(first[0]), -1


def cross_check_rollback(seed: int, drop: float, horizon: int, batch: int) -> tuple[int, int]:
    """One seed through :class:`RollbackRule` and through the vectorised path."""
    first, _ = rollback_runs(drop, 1, horizon, batch, seed)
    rng = np.random.default_rng(seed)
    noise = noise_for_drop(drop)
    rule = RollbackRule(RollbackConfig(drop=ROLLBACK_DROP, min_labels=MIN_LABELS))
    for step in range(horizon // batch):
        y, logit = _predictions(rng, (1, batch))
        reference = _score(rng, logit, 0.5)
        live = _score(rng, logit, noise)
        for yi, li, ri in zip(y[0], live[0], reference[0], strict=True):
            rule.observe_label(bool(yi), float(li), float(ri))
        if rule.decide().action == "rollback":
            return int(first[0]), (step + 1) * batch
    return int(first[0]), -1


def _table(outcomes: Sequence[Outcome], meta: dict[str, Any]) -> Table:
    table = Table(title=f"Safe rollout under continuous monitoring ({meta['seeds']} seeds)")
    for column in (
        "study",
        "scenario",
        "test",
        "false decisions",
        "right decisions",
        "median / p90 delay (labels)",
    ):
        table.add_column(column, justify="right" if column[0] in "frm" else "left")
    for o in outcomes:
        row = o.row()
        delay = (
            "-"
            if row["delay_median"] is None
            else f"{row['delay_median']:,.0f} / {row['delay_p90'] or 0:,.0f}"
        )
        table.add_row(
            o.study,
            o.scenario,
            o.test,
            f"{o.wrong_rate:.1%} ({o.false_promotions}+{o.false_reverts})"
            if o.study.startswith("A/B")
            else f"{o.wrong_rate:.1%}",
            "-" if o.right == 0 and not o.delays else f"{o.power:.1%}",
            delay,
        )
    return table


def _outcome_rollback(scenario: str, drop: float, first: np.ndarray) -> Outcome:
    out = Outcome("rollback rule", scenario, "sequential", len(first))
    decided = first >= 0
    if drop > ROLLBACK_DROP:
        out.right = int(decided.sum())
        out.delays = [int(x) for x in first[decided]]
    else:
        out.wrong = int(decided.sum())
    return out


def _markdown(outcomes: Sequence[Outcome], meta: dict[str, Any]) -> str:
    lines = [
        "# Safe rollout: decisions under continuous monitoring",
        "",
        f"{meta['seeds']} seeds per scenario. A/B: base positive rate {BASE_RATE:.0%},"
        f" {1 - SHARE:.0%}/{SHARE:.0%} split, a look after every {meta['batch']:,} labels up"
        f" to {meta['horizon']:,} labels, at least {MIN_LABELS:,} labels per arm; α = {ALPHA}."
        f" Rollback rule: paired per-label log loss, limit {ROLLBACK_DROP:.0%} relative, a"
        f" look after every {meta['batch']:,} labels up to {meta['rollback_horizon']:,}."
        f" {meta['date']}, {meta['seconds']:.0f} s.",
        "",
        "| study | scenario | test | false decisions (promotions + reverts) | right decisions"
        " | median / p90 delay (labels) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for o in outcomes:
        row = o.row()
        delay = (
            "-"
            if row["delay_median"] is None
            else f"{row['delay_median']:,.0f} / {row['delay_p90'] or 0:,.0f}"
        )
        wrong = f"{o.wrong_rate:.1%}"
        if o.study.startswith("A/B"):
            wrong += f" ({o.false_promotions} + {o.false_reverts})"
        right = f"{o.power:.1%}" if o.right or o.delays or "effect" in o.scenario else "-"
        lines.append(f"| {o.study} | {o.scenario} | {o.test} | {wrong} | {right} | {delay} |")
    goal = meta["goal"]
    lines += [
        "",
        f"A/A goal, false promotions plus false reverts ≤ {GOAL_FALSE:.0%} with the sequential"
        f" test: {goal['sequential']:.1%} ({'PASS' if goal['passed'] else 'FAIL'}); the naive"
        f" repeated z-test on the same draws: {goal['naive']:.1%}.",
        "",
        "Cross-checks (the classes against the vectorised runs, first decision in labels): "
        + "; ".join(
            f"{c['kind']} seed {c['seed']}: {c['vectorised']} / {c['class']}"
            for c in meta["cross_checks"]
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


#: A/B scenarios: name -> relative effect on the treatment's positive rate.
AB_SCENARIOS: dict[str, float] = {
    "A/A (no effect)": 0.0,
    "effect +5%": 0.05,
    "effect +10%": 0.10,
    "effect -10%": -0.10,
}
#: Rollback scenarios: name -> the live model's relative increase in log loss.
ROLLBACK_SCENARIOS: dict[str, float] = {
    "no drop": 0.0,
    "drop 5% (the limit)": 0.05,
    "drop 10%": 0.10,
    "drop 20%": 0.20,
}


def run(
    seeds: int, horizon: int, batch: int, rollback_horizon: int, out: Path, console: Console
) -> dict[str, Any]:
    """Every scenario, both tests; writes the reports and prints the table."""
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    for k, (name, effect) in enumerate(AB_SCENARIOS.items()):
        results = ab_runs(effect, seeds, horizon, batch, seed=1000 * k)
        for test, (first, sign) in results.items():
            outcomes.append(_outcome_ab(name, test, effect, first, sign))
    for k, (name, drop) in enumerate(ROLLBACK_SCENARIOS.items()):
        first, _ = rollback_runs(drop, seeds, rollback_horizon, batch, seed=7000 + 1000 * k)
        outcomes.append(_outcome_rollback(name, drop, first))
    checks = []
    check_horizon = min(horizon, 300_000)
    for seed, effect in ((1, 0.0), (2, 0.3), (3, 0.3)):
        vectorised, by_class = cross_check(seed, effect, check_horizon, batch)
        checks.append(
            {
                "kind": f"A/B {effect:+.0%}",
                "seed": seed,
                "vectorised": vectorised,
                "class": by_class,
            }
        )
    for seed, drop in ((4, 0.0), (5, 0.2)):
        vectorised, by_class = cross_check_rollback(
            seed, drop, min(rollback_horizon, 30_000), batch
        )
        checks.append(
            {
                "kind": f"rollback {drop:.0%}",
                "seed": seed,
                "vectorised": vectorised,
                "class": by_class,
            }
        )
    for check in checks:
        if check["vectorised"] != check["class"]:
            raise AssertionError(f"the class and the vectorised run disagree: {check}")
    aa = {o.test: o.wrong_rate for o in outcomes if o.scenario.startswith("A/A")}
    meta: dict[str, Any] = {
        "seeds": seeds,
        "horizon": horizon,
        "batch": batch,
        "rollback_horizon": rollback_horizon,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": time.perf_counter() - started,
        "cross_checks": checks,
        "goal": {**aa, "passed": aa["sequential"] <= GOAL_FALSE},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "rollout.md").write_text(_markdown(outcomes, meta))
    report = {"meta": meta, "outcomes": [o.row() for o in outcomes]}
    (out / "rollout.json").write_text(json.dumps(report, indent=2))
    console.print(_table(outcomes, meta))
    console.print(
        f"A/A false decisions: sequential {aa['sequential']:.1%} (goal ≤ {GOAL_FALSE:.0%}:"
        f" {'PASS' if meta['goal']['passed'] else 'FAIL'}), naive repeated z-test"
        f" {aa['naive']:.1%}; cross-checks agree ({len(checks)})"
    )
    console.print(f"reports: {out / 'rollout.md'}, {out / 'rollout.json'}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout", description=__doc__)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--horizon", type=int, default=4_000_000, help="A/B labels per run")
    parser.add_argument("--rollback-horizon", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="labels between two looks")
    parser.add_argument("--quick", action="store_true", help="60 seeds, 1,000,000 labels")
    parser.add_argument("--out", type=Path, default=Path("reports/rollout"))
    args = parser.parse_args(argv)
    seeds, horizon = (60, 1_000_000) if args.quick else (args.seeds, args.horizon)
    if args.batch < 1 or horizon < args.batch or args.rollback_horizon < args.batch:
        parser.error("--batch must be at least 1 and at most each horizon")
    run(seeds, horizon, args.batch, args.rollback_horizon, args.out, Console(width=120))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
