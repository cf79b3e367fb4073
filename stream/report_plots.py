"""The backtest report's plots: PNG figures of online metrics, drift and timing over event time.

Drawn with matplotlib's object API on the Agg canvas: no display, no global
pyplot state. Every figure is a function of the backtest's result (its
timeline, summary and batch times), so two backtests of one file draw the same plots.

Examples
--------
>>> percentiles([(2, 0.002), (1, 0.003)], (50, 99))
{50: 0.001, 99: 0.003}
>>> event_axis([{"event_index": 10, "timestamp": 0}])
('event index', [10])
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from streamlearn.stream.backtest import BacktestResult

__all__ = [
    "EXPERIMENT_PLOTS",
    "PLOTS",
    "event_axis",
    "experiment_decisions",
    "percentiles",
    "read_scores",
    "write_plots",
]

#: Every plot the report can hold: file name and caption.
PLOTS = {
    "quality.png": "Rolling online metrics (ROC AUC, log loss, accuracy) over event time",
    "scores.png": "Score distribution per model",
    "prediction_drift.png": "Prediction drift: PSI, KS and positive rate over event time",
    "drift.png": "Drift detections and alerts over event time",
    "latency.png": "Processing time per record",
}
#: The plot a backtest with an experiment (or the rollback rule) adds.
EXPERIMENT_PLOTS = {
    "experiment.png": "The experiment's primary metric per arm over event time, with its decisions",
}

_QUALITY = (("roc_auc", "ROC AUC"), ("log_loss", "log loss"), ("accuracy", "accuracy"))
_PREDICTION = (("psi", "PSI"), ("ks", "KS"), ("positive_rate", "positive rate"))
_ALERT_COLOURS = {
    "StreamlearnConceptDrift": "tab:red",
    "StreamlearnPredictionDriftPSI": "tab:purple",
    "StreamlearnPredictionKS": "tab:brown",
    "StreamlearnPositiveRateShift": "tab:pink",
    "StreamlearnFeatureDriftPSI": "tab:olive",
}
_DECISION_COLOURS = {
    "promote": "tab:green",
    "ready_to_promote": "tab:olive",
    "revert": "tab:red",
    "rollback": "tab:orange",
    "stop": "tab:gray",
}


def write_plots(result: BacktestResult, summary: dict[str, Any], folder: Path) -> list[str]:
    """Draw the plots of ``result`` into ``folder``; returns their file names, in order.

    A ``predictions.jsonl`` in ``folder`` (the backtest's predictions) gives the
    score histograms; without it that plot is left out.
    """
    names = list(summary["models"])
    plots: list[str] = []
    _save(_quality_figure(result.timeline, summary, names), folder / "quality.png")
    plots.append("quality.png")
    scores = read_scores(folder / "predictions.jsonl")
    if any(scores.values()):
        _save(_scores_figure(scores, names), folder / "scores.png")
        plots.append("scores.png")
    _save(_prediction_figure(result.timeline, summary, names), folder / "prediction_drift.png")
    plots.append("prediction_drift.png")
    _save(_drift_figure(result.timeline, summary, names), folder / "drift.png")
    plots.append("drift.png")
    latency = _latency_figure(result.batch_seconds)
    _save(latency, folder / "latency.png")
    plots.append("latency.png")
    experiment = summary.get("experiment")
    if experiment is not None:
        _save(_experiment_figure(result.timeline, experiment), folder / "experiment.png")
        plots.append("experiment.png")
    return plots


def percentiles(
    batch_seconds: Iterable[tuple[int, float]], qs: Sequence[float] = (50, 95, 99)
) -> dict[float, float]:
    """Percentiles of the per-record processing time, in seconds.

    Each batch stands for ``records`` records that each took ``seconds / records``
    (nearest-rank percentiles, weighted by the records of each batch).
    """
    per_record = sorted((s / n, n) for n, s in batch_seconds if n > 0)
    total = sum(n for _, n in per_record)
    out: dict[float, float] = {}
    for q in qs:
        if not total:
            out[q] = math.nan
            continue
        rank = max(1, math.ceil(q / 100 * total))
        seen = 0
        for value, n in per_record:
            seen += n
            if seen >= rank:
                out[q] = value
                break
    return out


def event_axis(points: Sequence[dict[str, Any]]) -> tuple[str, list[Any]]:
    """The x axis of the timeline: event time (UTC) when known, else the event index."""
    if points and all(p.get("timestamp") for p in points):
        return "event time (UTC)", [_time(p["timestamp"]) for p in points]
    return "event index", [p["event_index"] for p in points]


def read_scores(path: Path) -> dict[str, list[float]]:
    """The scores per model of a predictions JSON-lines file; empty when there is none."""
    scores: dict[str, list[float]] = defaultdict(list)
    if not path.is_file():
        return scores
    with path.open("rb") as handle:
        for line in handle:
            try:
                obj = orjson.loads(line)
                scores[str(obj["model"])].append(float(obj["score"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    return scores


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=100, metadata={"Software": None})


def _time_axis(ax: Axes, axis_label: str) -> None:
    ax.set_xlabel(axis_label)
    if axis_label != "event index":
        # matplotlib.dates ships no stub and its constructors have no annotations
        locator = AutoDateLocator()  # type: ignore[no-untyped-call]  # unannotated in matplotlib
        ax.xaxis.set_major_locator(locator)
        formatter = ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]  # idem
        ax.xaxis.set_major_formatter(formatter)


def _marker_x(event: dict[str, Any], axis_label: str) -> Any:
    if axis_label == "event index":
        return event["event_index"]
    return _time(event["timestamp"]) if event.get("timestamp") else None


def _markers(ax: Axes, alerts: Sequence[dict[str, Any]], axis_label: str) -> None:
    """A vertical line at each alert, coloured by alert."""
    for alert in alerts:
        x = _marker_x(alert, axis_label)
        if x is not None:
            colour = _ALERT_COLOURS.get(alert["alert"], "tab:gray")
            ax.axvline(x, color=colour, linestyle=":", linewidth=0.8, alpha=0.7)


def _model_alerts(summary: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return list(summary["models"][name]["alerts"])


def _series(points: Sequence[dict[str, Any]], name: str, section: str, key: str) -> list[float]:
    values = []
    for point in points:
        value = point["models"].get(name, {}).get(section, {}).get(key)
        values.append(math.nan if value is None else float(value))
    return values


def _timeline_figure(
    points: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    names: Sequence[str],
    section: str,
    keys: Sequence[tuple[str, str]],
    title: str,
) -> Figure:
    figure = Figure(figsize=(10, 2.6 * len(keys) + 0.6), layout="constrained")
    axes = figure.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    axis_label, xs = event_axis(points)
    for ax, (key, label) in zip(axes, keys, strict=True):
        for name in names:
            ax.plot(xs, _series(points, name, section, key), marker=".", label=name)
            _markers(ax, _model_alerts(summary, name), axis_label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    _time_axis(axes[-1], axis_label)
    figure.suptitle(title)
    return figure


def _quality_figure(
    points: Sequence[dict[str, Any]], summary: dict[str, Any], names: Sequence[str]
) -> Figure:
    return _timeline_figure(
        points,
        summary,
        names,
        "quality",
        _QUALITY,
        "Rolling online metrics (dotted lines: drift alerts)",
    )


def _prediction_figure(
    points: Sequence[dict[str, Any]], summary: dict[str, Any], names: Sequence[str]
) -> Figure:
    return _timeline_figure(
        points,
        summary,
        names,
        "prediction",
        _PREDICTION,
        "Prediction drift against the reference window (dotted lines: drift alerts)",
    )


def _scores_figure(scores: dict[str, list[float]], names: Sequence[str]) -> Figure:
    shown = [n for n in names if scores.get(n)] + sorted(set(scores) - set(names))
    figure = Figure(figsize=(10, 4), layout="constrained")
    ax = figure.subplots()
    bins = [i / 50 for i in range(51)]
    for name in shown:
        ax.hist(scores[name], bins=bins, histtype="step", linewidth=1.5, label=name)
    ax.set_xlabel("score")
    ax.set_ylabel("events")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    figure.suptitle("Score distribution")
    return figure


def _drift_figure(
    points: Sequence[dict[str, Any]], summary: dict[str, Any], names: Sequence[str]
) -> Figure:
    """One row per model: a marker per drift detection, placed by alert."""
    figure = Figure(figsize=(10, 2.4 + 0.9 * max(1, len(names))), layout="constrained")
    ax = figure.subplots()
    axis_label, xs = event_axis(points)
    seen: set[str] = set()
    span = list(xs)
    for row, name in enumerate(names):
        for alert in _model_alerts(summary, name):
            x = _marker_x(alert, axis_label)
            if x is None:
                continue
            span.append(x)
            label = f"{alert['alert']} ({alert['kind']}/{alert['name']})"
            ax.plot(
                [x],
                [row],
                marker="|",
                markersize=18,
                markeredgewidth=2,
                linestyle="none",
                color=_ALERT_COLOURS.get(alert["alert"], "tab:gray"),
                label=None if label in seen else label,
            )
            seen.add(label)
    if span:  # the whole backtest, not only the detections
        ax.plot([min(span), max(span)], [0, 0], linestyle="none")
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.7, len(names) - 0.3)
    _time_axis(ax, axis_label)
    ax.grid(alpha=0.3, axis="x")
    if seen:
        figure.legend(loc="outside lower center", ncols=2, fontsize="small")
    else:
        ax.text(0.5, 0.5, "no drift detected", transform=ax.transAxes, ha="center")
    figure.suptitle("Drift detections and alerts")
    return figure


def _latency_figure(batch_seconds: Sequence[tuple[int, float]]) -> Figure:
    figure = Figure(figsize=(10, 6.5), layout="constrained")
    hist_ax, time_ax = figure.subplots(2, 1)
    batches = [(n, s) for n, s in batch_seconds if n > 0]
    micros = [s / n * 1e6 for n, s in batches]
    if micros:
        hist_ax.hist(micros, bins=40, weights=[n for n, _ in batches], color="tab:blue")
        styles = ("--", "-.", ":")
        for (q, value), style in zip(percentiles(batches).items(), styles, strict=True):
            hist_ax.axvline(
                value * 1e6,
                color="tab:red",
                linestyle=style,
                linewidth=1.2,
                label=f"p{q:g} = {value * 1e6:,.1f} µs",
            )
        hist_ax.legend(loc="best", fontsize="small")
        ends, total = [], 0
        for n, _ in batches:
            total += n
            ends.append(total)
        time_ax.plot(ends, micros, marker=".", linewidth=0.8)
    hist_ax.set_xlabel("processing time per record (µs, batch time / batch records)")
    hist_ax.set_ylabel("records")
    hist_ax.grid(alpha=0.3)
    time_ax.set_xlabel("records processed")
    time_ax.set_ylabel("µs per record")
    time_ax.grid(alpha=0.3)
    figure.suptitle("Processing time per record")
    return figure


def experiment_decisions(experiment: dict[str, Any]) -> list[dict[str, Any]]:
    """The decisions of an experiment's summary and of its rollback rule, in event order."""
    decisions = list(experiment.get("decisions", []))
    decisions += experiment.get("rollback", {}).get("decisions", [])
    return sorted(decisions, key=lambda d: d.get("event_index") or 0)


def _experiment_figure(points: Sequence[dict[str, Any]], experiment: dict[str, Any]) -> Figure:
    """Each arm's primary metric so far over the stream; a dashed line at each decision."""
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    ax = figure.subplots()
    axis_label, xs = event_axis(points)
    for arm in experiment["arms"]:
        ys = [p.get("experiment", {}).get(arm) for p in points]
        ax.plot(xs, [math.nan if y is None else float(y) for y in ys], marker=".", label=arm)
    for decision in experiment_decisions(experiment):
        at = decision.get("timestamp")
        event = {"event_index": decision["event_index"], "timestamp": at and at * 1000}
        x = _marker_x(event, axis_label)
        if x is None:
            continue
        ax.axvline(x, color=_DECISION_COLOURS.get(decision["action"], "black"), linestyle="--")
        label = f"{decision['action']} {decision.get('arm') or ''}".strip()
        ax.annotate(
            label, (x, 0.98), xycoords=("data", "axes fraction"), rotation=90, va="top",
            ha="right", fontsize="small",
        )  # fmt: skip
    ax.set_ylabel(str(experiment.get("primary", "primary metric")))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    _time_axis(ax, axis_label)
    figure.suptitle(f"Experiment ({experiment.get('mode')}): primary metric per arm, so far")
    return figure
