"""``python -m bench.drift``: how well drift is detected on streams with known drift points.

River's synthetic generators (SEA, Agrawal, STAGGER, Hyperplane) are joined by
``ConceptDriftStream`` into streams whose concept changes at a known label, suddenly
(a width of 50 samples) or gradually (1,000), at two positions and several seeds;
each has a stationary twin of the same length (the first concept throughout). Every
stream runs through the backtest (the worker's code, ``--features raw``, the
``logistic`` preset); the scores it gave and the labels are then fed to every
concept drift detector and signal, with the configured warm-up. Per detector and
signal: sudden and gradual drifts detected, the delay in labels from the start of
the change, missed drifts, and false alarms per 10,000 labels (detections after the
warm-up on the stationary twins, and before the change on the drifting streams).
The prediction-drift alarms (PSI, KS, positive-rate ratio) of the stationary twins
are counted too, with the monitor's warm-up and without it.

Usage: ``.venv/bin/python -m bench.drift [--seeds 3] [--length 12000] [--quick]
[--out reports/drift]``; writes ``drift.md`` and ``drift.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from river.datasets import synth

from streamlearn.metrics.concept_drift import BINARY_DETECTORS, ConceptDrift, concept_signal
from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings
from streamlearn.stream.datasets import START_MS

__all__ = ["FAMILIES", "Scenario", "evaluate", "run", "scenarios"]

GOAL_DELAY = 1_000
GOAL_FALSE_ALARMS = 1.0  # per 10,000 labels

#: Generator family -> (make(seed, concept), the concept before and after the drift).
FAMILIES: dict[str, tuple[Callable[[int, int], Iterable[tuple[dict, Any]]], tuple[int, int]]] = {
    "sea": (lambda seed, c: synth.SEA(variant=c, seed=seed), (0, 3)),
    "agrawal": (lambda seed, c: synth.Agrawal(classification_function=c, seed=seed), (0, 2)),
    "stagger": (lambda seed, c: synth.STAGGER(classification_function=c, seed=seed), (0, 2)),
    "hyperplane": (
        lambda seed, c: synth.Hyperplane(seed=seed + 1000 * c, n_features=10),
        (0, 1),
    ),
}

#: The detector and signal pairs compared; ``None`` parameters are the detector's defaults.
CANDIDATES: tuple[tuple[str, str], ...] = (
    ("adwin", "error"),
    ("adwin", "brier"),
    ("adwin", "log_loss"),
    ("page_hinkley", "error"),
    ("hddm_a", "error"),
    ("hddm_w", "error"),
    ("ddm", "error"),
)


@dataclass(frozen=True)
class Scenario:
    family: str
    kind: str  # "sudden", "gradual" or "stationary"
    seed: int
    length: int
    position: int = 0
    width: int = 0

    @property
    def start(self) -> int:
        """The first label of the change (the transition is centred on ``position``)."""
        return self.position - self.width // 2

    @property
    def name(self) -> str:
        where = f"@{self.position}" if self.kind != "stationary" else ""
        return f"{self.family}/{self.kind}{where}/seed{self.seed}"

    def samples(self) -> Iterator[tuple[dict, Any]]:
        make, (before, after) = FAMILIES[self.family]
        if self.kind == "stationary":
            return islice(iter(make(self.seed, before)), self.length)
        stream = synth.ConceptDriftStream(
            stream=make(self.seed, before),
            drift_stream=make(self.seed + 1, after),
            seed=self.seed,
            position=self.position,
            width=self.width,
        )
        return islice(iter(stream), self.length)


def scenarios(seeds: int, length: int, families: Sequence[str] = tuple(FAMILIES)) -> list[Scenario]:
    """Sudden drifts at a third and two thirds of the stream, a gradual one in the middle,
    and the stationary twin, per family and seed."""
    out: list[Scenario] = []
    for family in families:
        for seed in range(1, seeds + 1):
            for position in (length // 3, 2 * length // 3):
                out.append(Scenario(family, "sudden", seed, length, position, 50))
            out.append(Scenario(family, "gradual", seed, length, length // 2, 1000))
            out.append(Scenario(family, "stationary", seed, length))
    return out


def _events(scenario: Scenario) -> Iterator[bytes]:
    for i, (x, y) in enumerate(scenario.samples()):
        yield orjson.dumps(
            {
                "event_id": f"{scenario.family}-{i}",
                "timestamp": START_MS + i * 1000,
                "user_id": "user",
                "item_id": scenario.family,
                "features": {str(k): float(v) for k, v in x.items()},
                "label": bool(y),
            }
        )


@dataclass
class StreamRun:
    """What the backtest of one scenario gave: scores and labels in order, and alarms."""

    scenario: Scenario
    scores: list[float]
    labels: list[bool]
    prediction_alarms: list[int]
    prediction_alarms_no_warmup: list[int]
    monitor_detections: list[int]
    seconds: float


def _backtest(path: Path, settings: Settings) -> tuple[list[float], Any]:
    predictions = io.BytesIO()
    result = backtest(path, settings, predictions=predictions)
    scores = [orjson.loads(line)["score"] for line in predictions.getvalue().splitlines()]
    return scores, result


def run_stream(scenario: Scenario, settings: Settings, folder: Path) -> StreamRun:
    """The backtest of ``scenario`` with the monitor as configured, and once more without
    the prediction-drift warm-up (only on stationary twins, for the comparison)."""
    path = folder / f"{scenario.name.replace('/', '_')}.jsonl"
    lines = list(_events(scenario))
    path.write_bytes(b"\n".join(lines) + b"\n")
    labels = [bool(orjson.loads(line)["label"]) for line in lines]
    started = time.perf_counter()
    scores, result = _backtest(path, settings)
    seconds = time.perf_counter() - started
    monitor = result.slots[0].monitor
    alarms = [e["event_index"] for e in monitor.drift_events if e["kind"] == "prediction"]
    detections = [d.index for d in monitor.concept.detections]
    no_warmup: list[int] = []
    if scenario.kind == "stationary":
        cold = settings.model_copy(
            update={"monitoring": settings.monitoring.model_copy(update={"drift_warmup_labels": 0})}
        )
        _, cold_result = _backtest(path, cold)
        no_warmup = [
            e["event_index"]
            for e in cold_result.slots[0].monitor.drift_events
            if e["kind"] == "prediction"
        ]
    path.unlink()
    return StreamRun(scenario, scores, labels, alarms, no_warmup, detections, seconds)


def detections_of(
    run: StreamRun, detector: str, signal: str, warmup: int, threshold: float = 0.5
) -> list[int]:
    """The label indices where ``detector`` fed ``signal`` reports a concept drift."""
    watch = ConceptDrift(detector, warmup=warmup)
    return [
        index
        for index, (score, y) in enumerate(zip(run.scores, run.labels, strict=True))
        if watch.update(concept_signal(signal, y, score, threshold))
    ]


@dataclass
class Verdict:
    """One detector and signal over every scenario."""

    detector: str
    signal: str
    sudden: int = 0
    sudden_within_goal: int = 0
    gradual: int = 0
    gradual_detected: int = 0
    delays_sudden: list[int] = field(default_factory=list)
    delays_gradual: list[int] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    false_alarms: int = 0
    labels_watched: int = 0

    @property
    def false_alarms_per_10k(self) -> float:
        return 10_000 * self.false_alarms / max(1, self.labels_watched)

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out["false_alarms_per_10k"] = round(self.false_alarms_per_10k, 2)
        return out


def evaluate(runs: Sequence[StreamRun], detector: str, signal: str, warmup: int) -> Verdict:
    """Delays, misses and false alarms of one detector and signal over ``runs``."""
    verdict = Verdict(detector, signal)
    for run in runs:
        hits = detections_of(run, detector, signal, warmup)
        scenario = run.scenario
        if scenario.kind == "stationary":
            verdict.false_alarms += len(hits)
            verdict.labels_watched += max(0, len(run.labels) - warmup)
            continue
        verdict.false_alarms += sum(1 for h in hits if h < scenario.start)
        verdict.labels_watched += max(0, scenario.start - warmup)
        after = [h - scenario.start for h in hits if h >= scenario.start]
        delay = after[0] if after else None
        if scenario.kind == "sudden":
            verdict.sudden += 1
            if delay is not None and delay <= GOAL_DELAY:
                verdict.sudden_within_goal += 1
                verdict.delays_sudden.append(delay)
            else:
                verdict.missed.append(f"{scenario.name}: {delay}")
        else:
            verdict.gradual += 1
            if delay is not None:
                verdict.gradual_detected += 1
                verdict.delays_gradual.append(delay)
    return verdict


def _median(values: Sequence[int]) -> str:
    return f"{statistics.median(values):.0f}" if values else "-"


def _table(verdicts: Sequence[Verdict], default: tuple[str, str]) -> Table:
    table = Table(title="Concept drift detection (delay in labels from the start of the change)")
    for column in (
        "detector",
        "signal",
        "sudden ≤ 1,000",
        "median / max delay",
        "gradual detected",
        "median delay",
        "false alarms / 10k labels",
        "goal",
    ):
        table.add_column(column, justify="right" if column[0] in "smgf" else "left")
    for v in verdicts:
        meets = v.sudden_within_goal == v.sudden and v.false_alarms_per_10k <= GOAL_FALSE_ALARMS
        name = v.detector + (" (default)" if (v.detector, v.signal) == default else "")
        table.add_row(
            name,
            v.signal,
            f"{v.sudden_within_goal}/{v.sudden}",
            f"{_median(v.delays_sudden)} / {max(v.delays_sudden, default=0)}",
            f"{v.gradual_detected}/{v.gradual}",
            _median(v.delays_gradual),
            f"{v.false_alarms_per_10k:.2f}",
            "PASS" if meets else "FAIL",
        )
    return table


def _markdown(
    verdicts: Sequence[Verdict], default: tuple[str, str], prediction: dict[str, Any], meta: dict
) -> str:
    lines = [
        "# Drift detection on River's synthetic streams",
        "",
        f"{meta['scenarios']} streams of {meta['length']:,} labelled events"
        f" ({', '.join(meta['families'])}; seeds 1–{meta['seeds']}; sudden drifts of width 50"
        f" at a third and two thirds, a gradual one of width 1,000 in the middle, and the"
        f" stationary twins), through the backtest (`--features raw`, `logistic`); warm-up"
        f" {meta['warmup']} labels. {meta['date']}, {meta['seconds']:.0f} s.",
        "",
        "| detector | signal | sudden ≤ 1,000 labels | median / max delay | gradual detected"
        " | median delay | false alarms / 10k labels | goal |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for v in verdicts:
        meets = v.sudden_within_goal == v.sudden and v.false_alarms_per_10k <= GOAL_FALSE_ALARMS
        name = v.detector + (" (default)" if (v.detector, v.signal) == default else "")
        lines.append(
            f"| {name} | {v.signal} | {v.sudden_within_goal}/{v.sudden}"
            f" | {_median(v.delays_sudden)} / {max(v.delays_sudden, default=0)}"
            f" | {v.gradual_detected}/{v.gradual} | {_median(v.delays_gradual)}"
            f" | {v.false_alarms_per_10k:.2f} | {'PASS' if meets else 'FAIL'} |"
        )
    missed = [(v, m) for v in verdicts for m in v.missed if (v.detector, v.signal) == default]
    if missed:
        lines += ["", "Sudden drifts the default missed (scenario: delay):", ""]
        lines += [f"- {m}" for _, m in missed]
    lines += [
        "",
        "Prediction-drift alarms (PSI, KS, positive-rate ratio) on the stationary twins:"
        f" {prediction['with_warmup']} with the warm-up, {prediction['without_warmup']} without"
        f" it, over {prediction['predictions']:,} predictions; with the warm-up, per family"
        " and seed: "
        + "; ".join(f"{family} {counts}" for family, counts in prediction["by_family"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def run(
    seeds: int, length: int, families: Sequence[str], out: Path, console: Console
) -> dict[str, Any]:
    """Every scenario through the backtest, every candidate evaluated; writes the reports."""
    settings = Settings(features={"mode": "raw"})
    warmup = settings.monitoring.concept_warmup_labels
    default = (settings.monitoring.concept_detector, settings.monitoring.concept_signal)
    plan = scenarios(seeds, length, families)
    runs: list[StreamRun] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, Progress(console=console) as progress:
        task = progress.add_task("backtests", total=len(plan))
        for scenario in plan:
            runs.append(run_stream(scenario, settings, Path(folder)))
            progress.advance(task)
    verdicts = [
        evaluate(runs, detector, signal, warmup)
        for detector, signal in CANDIDATES
        if detector not in BINARY_DETECTORS or signal == "error"
    ]
    for run_ in runs:  # the monitor in the backtest is the default candidate: same detections
        if run_.monitor_detections != detections_of(run_, *default, warmup):
            raise AssertionError(f"{run_.scenario.name}: the monitor and the suite disagree")
    stationary = [r for r in runs if r.scenario.kind == "stationary"]
    prediction = {
        "with_warmup": sum(len(r.prediction_alarms) for r in stationary),
        "without_warmup": sum(len(r.prediction_alarms_no_warmup) for r in stationary),
        "predictions": sum(len(r.scores) for r in stationary),
        "by_family": {
            family: [len(r.prediction_alarms) for r in stationary if r.scenario.family == family]
            for family in families
        },
    }
    meta = {
        "scenarios": len(plan),
        "length": length,
        "seeds": seeds,
        "families": list(families),
        "warmup": warmup,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": time.perf_counter() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "drift.md").write_text(_markdown(verdicts, default, prediction, meta))
    report = {
        "meta": meta,
        "default": list(default),
        "verdicts": [v.row() for v in verdicts],
        "prediction_drift": prediction,
    }
    (out / "drift.json").write_text(json.dumps(report, indent=2))
    console.print(_table(verdicts, default))
    console.print(
        f"prediction-drift alarms on stationary twins: {prediction['with_warmup']} with warm-up,"
        f" {prediction['without_warmup']} without, over {prediction['predictions']:,} predictions"
    )
    console.print(f"reports: {out / 'drift.md'}, {out / 'drift.json'}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drift", description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--length", type=int, default=12_000)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--quick", action="store_true", help="one seed, 6,000 labels")
    parser.add_argument("--out", type=Path, default=Path("reports/drift"))
    args = parser.parse_args(argv)
    seeds, length = (1, 6_000) if args.quick else (args.seeds, args.length)
    families = [f for f in args.families.split(",") if f]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    run(seeds, length, families, args.out, Console(width=120))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
