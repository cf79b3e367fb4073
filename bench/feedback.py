"""``python -m bench.feedback``: the feedback loop, and what a precision constraint buys.

**The feedback loop.** A spam filter hides what it blocks: a blocked email gets no
spam report, and its silence looks like "not spam". The study replays a synthetic
mail stream (:func:`spam_world`: a fifth of the mail is spam, whose signature in
feature space turns a full circle over the stream, so the model must keep learning
it; a spam report comes 30 s after the email, legitimate mail gets no label and its
silence becomes an implicit negative after 120 s) through the backtest (the worker's
code, ``--features raw``, ``logistic``, the ``fixed`` policy at ``model.threshold``).
The model learns unfiltered from the first fifth of the stream (as a model trained
before going live), then the filter goes live, four ways:

- ``unfiltered``: every label comes (no loop): the reference;
- ``filter``: the labels of blocked mail are withheld and their silence is learned as
  a negative (``decision.hides: true``, ``implicit_negatives_of_blocked: true``): the
  loop as it bites;
- ``filter, silence ignored``: the same without learning the silence of blocked mail;
- ``filter + holdout``: a 2 % unfiltered holdout of users, labels weighted by inverse
  propensity, the silence of blocked mail ignored (the mitigation).

Recall on the spam is measured on the unfiltered ground truth, per window of mail.

**The precision constraint.** With ``precision_at_least: 0.995`` and no loop, on
streams three times as long (the spam world without drift, and River's SEA generator,
no download): the realised precision (ground truth) over every window of 4,000 decided
events after the warm-up (the first tenth of the stream), which is what the policy
promises (``decision.precision_window``), and the recall it obtains against the best
fixed threshold chosen in hindsight (the lowest whose precision over the stream after
the warm-up is at least 99.5 %).

Usage: ``.venv/bin/python -m bench.feedback [--seeds 3] [--events 20000] [--quick]
[--out reports/feedback]``; writes ``feedback.md``, ``feedback.json`` and
``feedback_recall.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from streamlearn.learners.decision_policy import DecisionConfig
from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings
from streamlearn.stream.datasets import START_MS, dataset_events

__all__ = ["ARMS", "feedback_run", "main", "precision_run", "spam_world"]

#: Arm -> (the ``decision`` section's changes, whether the filter withholds labels).
ARMS: dict[str, tuple[dict[str, Any], bool]] = {
    "unfiltered": ({}, False),
    "filter": ({"hides": True, "implicit_negatives_of_blocked": True}, True),
    "filter, silence ignored": ({"hides": True, "implicit_negatives_of_blocked": False}, True),
    "filter + holdout": (
        {
            "hides": True,
            "implicit_negatives_of_blocked": False,
            "holdout_fraction": 0.02,
            "propensity_weighting": True,
        },
        True,
    ),
}
#: Seconds of event time before a spam report; of silence before an implicit negative.
REPORT_DELAY_S = 30
SILENCE_S = 120
TARGET = 0.995
#: Decided events per window of realised precision: what the policy promises
#: (``decision.precision_window``; a promise over fewer decisions costs recall).
PROMISE = DecisionConfig().precision_window
#: The precision streams are this many times longer than the feedback loop's, so that
#: the spam world gives a few windows of ``PROMISE`` decisions after the warm-up.
PRECISION_LENGTH = 3


def spam_world(
    events: int,
    seed: int = 1,
    spam_share: float = 0.2,
    strength: float = 4.0,
    turns: float = 1.0,
    users: int = 2000,
) -> Iterator[dict[str, Any]]:
    """A mail stream: events one second apart, then spam reports (labels), in time order.

    Spam is shifted by ``strength`` along a direction that turns by ``turns`` of a
    circle over the stream; legitimate mail gets no label.

    >>> records = list(spam_world(1000, seed=3))
    >>> reports = sum("label" in r for r in records)
    >>> len(records) - reports, round(reports / 1000, 1)
    (1000, 0.2)
    >>> sorted(records[0]["features"])
    ['x0', 'x1', 'x2', 'x3', 'x4', 'x5']
    """
    rng = random.Random(seed)
    pending: list[dict[str, Any]] = []
    for i in range(events):
        timestamp = START_MS + i * 1000
        while pending and pending[0]["timestamp"] <= timestamp:
            yield pending.pop(0)
        x = [rng.gauss(0.0, 1.0) for _ in range(6)]
        spam = rng.random() < spam_share
        if spam:
            angle = 2 * math.pi * turns * i / events
            x[0] += strength * math.cos(angle)
            x[1] += strength * math.sin(angle)
            x[2] += strength / 2
        event_id = f"mail-{seed}-{i}"
        yield {
            "event_id": event_id,
            "timestamp": timestamp,
            "user_id": f"u{rng.randrange(users)}",
            "item_id": "mail",
            "features": {f"x{k}": round(v, 4) for k, v in enumerate(x)},
        }
        if spam:
            at = timestamp + REPORT_DELAY_S * 1000
            pending.append({"event_id": event_id, "timestamp": at, "label": True})
    yield from pending


def _write(path: Path, records: Iterator[dict[str, Any]]) -> dict[str, bool]:
    """Write the records; returns the ground truth per event (inline or label record)."""
    truth: dict[str, bool] = {}
    with path.open("wb") as f:
        for record in records:
            if "label" in record:
                truth[record["event_id"]] = bool(record["label"])
            f.write(orjson.dumps(record) + b"\n")
    return truth


def _settings(**decision: Any) -> Settings:
    return Settings(
        decision=decision,
        features={"mode": "raw"},
        store={"implicit_negative_after_s": SILENCE_S},
    )


def feedback_run(path: Path, arm: str, windows: int, live_after: int = 0) -> dict[str, Any]:
    """One arm over the world at ``path``: recall on the truth per window, overall.

    ``live_after``: the filter hides nothing before this event (the model learns unfiltered).
    """
    changes, filtering = ARMS[arm]
    result = backtest(
        path,
        _settings(policy="fixed", **changes),
        feedback="filter" if filtering else "none",
        measure_recall=True,
        feedback_after=live_after,
    )
    assert result.feedback is not None
    summary = result.feedback.summary(windows)
    return {
        "recall": summary["recall"],
        "timeline": [row["recall"] for row in summary["timeline"]],
        "labels_dropped": summary["labels_dropped"],
        "labels_learned": result.labels_learned,
    }


def precision_run(
    path: Path, truth: dict[str, bool], windows: int, model: str = "logistic"
) -> dict[str, Any]:
    """``precision_at_least: 0.995`` over the file: realised precision per window of
    ``PROMISE`` decided events (what the policy promises, ``decision.precision_window``)
    after the first of ``windows`` windows of events (the warm-up), recall, and the best
    fixed threshold in hindsight over the same events."""
    predictions = io.BytesIO()
    settings = _settings(policy="precision_at_least", precision_at_least=TARGET)
    backtest(path, settings, [model], predictions=predictions)
    lines = [orjson.loads(line) for line in predictions.getvalue().splitlines()]
    scores = np.array([p["score"] for p in lines])
    decided = np.array([bool(p["decision"]) for p in lines])
    y = np.array([truth.get(p["event_id"], False) for p in lines])
    size = -(-len(lines) // windows)
    after = slice(size, None)  # the first window of events is the warm-up
    s, d, t = scores[after], decided[after], y[after]
    hits = t[d]  # the truth of the decided events, in order
    realised = [float(hits[i : i + PROMISE].mean()) for i in range(0, hits.size, PROMISE)]
    if realised and hits.size % PROMISE:
        realised.pop()  # a last window not full promises nothing yet
    last = slice(len(lines) - size, None)
    best = _best_fixed(s, t)
    return {
        "windows": realised,
        "min_precision": min(realised, default=None),
        "precision": _ratio(d & t, d),
        "recall": _ratio(d & t, t),
        "last_recall": _ratio(decided[last] & y[last], y[last]),
        "hindsight_threshold": best[0],
        "hindsight_recall": best[1],
    }


def _ratio(hits: np.ndarray, of: np.ndarray) -> float | None:
    n = int(of.sum())
    return int(hits.sum()) / n if n else None


def _best_fixed(scores: np.ndarray, y: np.ndarray) -> tuple[float | None, float]:
    """The lowest fixed threshold with precision >= TARGET over the stream, its recall."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], y[order]
    tp = np.cumsum(t)
    n = np.arange(1, s.size + 1)
    cuts = np.flatnonzero(np.append(s[1:] < s[:-1], True))
    good = cuts[tp[cuts] / n[cuts] >= TARGET]
    if good.size == 0 or not t.any():
        return None, 0.0
    cut = good[-1]
    below = float(s[cut + 1]) if cut + 1 < s.size else float(np.nextafter(s[cut], -np.inf))
    return below, float(tp[cut]) / float(t.sum())


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def figure(curves: dict[str, list[float | None]], events: int, live_after: int = 0) -> Figure:
    """Recall on the spam per window of mail, one line per arm (means over seeds); a
    dotted line where the filter goes live."""
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    for arm, curve in curves.items():
        size = events / len(curve)
        points = [((i + 1) * size, r) for i, r in enumerate(curve) if r is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=arm)
    if live_after:
        ax.axvline(live_after, color="grey", linestyle=":", label="filter live")
    ax.set_xlabel("mail (event index)")
    ax.set_ylabel("recall on spam (unfiltered truth)")
    ax.set_title("The feedback loop: recall per window, without and with a 2 % holdout")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _tables(report: dict[str, Any]) -> tuple[Table, Table]:
    loop = Table(title="Feedback loop: recall on spam (unfiltered truth), mean over seeds")
    for name in ("arm", "recall", "first window", "last window", "lowest window", "dropped"):
        loop.add_column(name, justify="left" if name == "arm" else "right")
    for arm, row in report["feedback"].items():
        curve = row["curve"]
        loop.add_row(
            arm,
            _cell(row["recall"]),
            _cell(curve[0]),
            _cell(curve[-1]),
            _cell(min((v for v in curve if v is not None), default=None)),
            f"{row['labels_dropped']:.0f}",
        )
    precision = Table(title=f"precision_at_least {TARGET} (ground truth, after the warm-up)")
    for name in (
        "data set",
        "windows",
        "lowest window",
        "precision",
        "recall",
        "last tenth recall",
        "hindsight recall",
    ):
        precision.add_column(name, justify="left" if name == "data set" else "right")
    for name, row in report["precision"].items():
        precision.add_row(
            name,
            str(row["windows"]),
            _cell(row["min_precision"]),
            _cell(row["precision"]),
            _cell(row["recall"]),
            _cell(row["last_recall"]),
            _cell(row["hindsight_recall"]),
        )
    return loop, precision


def _markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        "# The feedback loop and the precision constraint",
        "",
        f"`python -m bench.feedback`: {meta['seeds']} seed(s), {meta['events']:,} mail per"
        f" stream, {meta['windows']} windows; {meta['date']}, {meta['seconds']:.0f} s.",
        "",
        "## Recall on spam under the feedback loop (unfiltered truth, mean over seeds)",
        "",
        "![recall per window](feedback_recall.png)",
        "",
        "| arm | recall | first window | last window | per window |",
        "|---|---:|---:|---:|---|",
    ]
    for arm, row in report["feedback"].items():
        curve = row["curve"]
        lines.append(
            f"| {arm} | {_cell(row['recall'])} | {_cell(curve[0])} | {_cell(curve[-1])} | "
            + " ".join(_cell(v) for v in curve)
            + " |"
        )
    lines += [
        "",
        f"## precision_at_least {TARGET}, no loop (ground truth, after the warm-up)",
        "",
        f"Realised precision over windows of {PROMISE:,} decided events (all seeds);"
        " precision and recall over the stream after the warm-up; recall in its last tenth.",
        "",
        "| data set | windows | lowest window precision | precision | recall"
        " | last tenth recall | best fixed threshold (hindsight) | its recall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["precision"].items():
        lines.append(
            f"| {name} | {row['windows']} | {_cell(row['min_precision'])} |"
            f" {_cell(row['precision'])} |"
            f" {_cell(row['recall'])} | {_cell(row['last_recall'])} |"
            f" {_cell(row['hindsight_threshold'])} |"
            f" {_cell(row['hindsight_recall'])} |"
        )
    return "\n".join(lines) + "\n"


def run(seeds: int, events: int, windows: int, out: Path, console: Console) -> dict[str, Any]:
    """The whole study; writes the reports into ``out``."""
    started = time.perf_counter()
    per_arm: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    precision: dict[str, list[dict[str, Any]]] = {"spam world": [], "river sea": []}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(1, seeds + 1):
            path = Path(folder) / f"mail-{seed}.jsonl"
            _write(path, spam_world(events, seed))
            for arm in ARMS:
                per_arm[arm].append(feedback_run(path, arm, windows, events // 5))
                console.print(f"seed {seed} {arm}: recall {_cell(per_arm[arm][-1]['recall'])}")
            still = Path(folder) / f"still-{seed}.jsonl"
            long = PRECISION_LENGTH * events
            truth = _write(still, spam_world(long, seed, turns=0.0))
            precision["spam world"].append(precision_run(still, truth, windows))
            sea = Path(folder) / f"sea-{seed}.jsonl"
            sea_truth = _write(sea, dataset_events("sea", seed, long))
            precision["river sea"].append(precision_run(sea, sea_truth, windows))
    report: dict[str, Any] = {"feedback": {}, "precision": {}, "runs": {}}
    for arm, runs in per_arm.items():
        report["feedback"][arm] = {
            "recall": _mean([r["recall"] for r in runs]),
            "curve": [_mean(list(col)) for col in zip(*(r["timeline"] for r in runs), strict=True)],
            "labels_dropped": statistics.fmean(r["labels_dropped"] for r in runs),
        }
    for name, runs in precision.items():
        lows = [r["min_precision"] for r in runs if r["min_precision"] is not None]
        report["precision"][name] = {
            "windows": sum(len(r["windows"]) for r in runs),
            "min_precision": min(lows) if lows else None,
            "precision": _mean([r["precision"] for r in runs]),
            "recall": _mean([r["recall"] for r in runs]),
            "last_recall": _mean([r["last_recall"] for r in runs]),
            "hindsight_threshold": _mean([r["hindsight_threshold"] for r in runs]),
            "hindsight_recall": _mean([r["hindsight_recall"] for r in runs]),
        }
    report["runs"] = {"feedback": per_arm, "precision": precision}
    report["meta"] = {
        "seeds": seeds,
        "events": events,
        "windows": windows,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": time.perf_counter() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    curves = {arm: row["curve"] for arm, row in report["feedback"].items()}
    figure(curves, events, events // 5).savefig(out / "feedback_recall.png", dpi=100)
    (out / "feedback.md").write_text(_markdown(report))
    (out / "feedback.json").write_text(json.dumps(report, indent=2))
    for table in _tables(report):
        console.print(table)
    console.print(f"reports: {out / 'feedback.md'}, {out / 'feedback_recall.png'}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feedback", description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="one seed, 12,000 mail")
    parser.add_argument("--out", type=Path, default=Path("reports/feedback"))
    args = parser.parse_args(argv)
    seeds, events = (1, 12_000) if args.quick else (args.seeds, args.events)
    run(seeds, events, args.windows, args.out, Console(width=120))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
