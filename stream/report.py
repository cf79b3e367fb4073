"""The backtest report: ``summary.json``, PNG plots over event time and ``report.md``.

:func:`write_report` turns a :class:`stream.backtest.BacktestResult` into files a
person can read: the summary as JSON, plots of the rolling online metrics, the
score distributions, prediction drift (PSI, KS, positive rate) with the drift
detections and alerts as vertical markers, the per-record processing time, and
a Markdown page that ties them together. Everything but the timing numbers is
a function of the result, so two backtests of one file give the same report.

The CLI writes a report into a :func:`staged_folder` beside its target and
renames it into place at the end: an interrupted backtest leaves the previous
report whole, never its ``summary.json`` beside a partial new one.

Plots are drawn with matplotlib's object API on the Agg canvas: no display,
no global pyplot state.

Examples
--------
>>> percentiles([(2, 0.002), (1, 0.003)], (50, 99))
{50: 0.001, 99: 0.003}
>>> event_axis([{"event_index": 10, "timestamp": 0}])
('event index', [10])
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from rich.table import Table

from stream.backtest import BacktestResult

__all__ = [
    "METRICS",
    "PLOTS",
    "event_axis",
    "percentiles",
    "read_scores",
    "report_markdown",
    "staged_folder",
    "summary_table",
    "write_report",
]

#: The final metrics of the models table, in column order.
METRICS = ("log_loss", "accuracy", "roc_auc", "precision", "recall", "recall_at_precision")

#: Every plot the report can hold: file name and caption.
PLOTS = {
    "quality.png": "Rolling online metrics (ROC AUC, log loss, accuracy) over event time",
    "scores.png": "Score distribution per model",
    "prediction_drift.png": "Prediction drift: PSI, KS and positive rate over event time",
    "drift.png": "Drift detections and alerts over event time",
    "latency.png": "Processing time per record",
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
_MAX_LISTED = 50


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A new empty folder beside ``target`` that replaces ``target`` when the block ends.

    Write the whole report into the folder this yields. If the block raises (or
    is interrupted), the folder is removed and ``target`` stays as it was; if it
    ends, the previous ``target`` is moved aside, the new folder renamed to
    ``target`` (on the same file system, so no copy) and the previous one removed.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "report"
    >>> target.mkdir(); _ = (target / "summary.json").write_text("old")
    >>> try:
    ...     with staged_folder(target) as folder:
    ...         _ = (folder / "summary.json").write_text("half")
    ...         raise KeyboardInterrupt
    ... except KeyboardInterrupt:
    ...     pass
    >>> (target / "summary.json").read_text(), sorted(p.name for p in target.parent.iterdir())
    ('old', ['report'])
    >>> with staged_folder(target) as folder:
    ...     _ = (folder / "summary.json").write_text("new")
    >>> (target / "summary.json").read_text(), sorted(p.name for p in target.parent.iterdir())
    ('new', ['report'])
    """
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is a file; the report needs a folder there")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # as mkdir would make it, not mkdtemp's 0o700
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous: Path | None = None
    if target.exists():
        previous = Path(tempfile.mkdtemp(prefix=f".{target.name}.previous-", dir=target.parent))
        target.rename(previous / target.name)
    try:
        staging.rename(target)
    except OSError:
        if previous is not None:
            (previous / target.name).rename(target)
            previous.rmdir()
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def write_report(result: BacktestResult, folder: Path) -> Table:
    """Write the report of ``result`` into ``folder``; returns the models' metrics as a table.

    Parameters
    ----------
    result
        A finished backtest.
    folder
        Where ``summary.json``, the PNG plots and ``report.md`` go (created if
        needed). A ``predictions.jsonl`` already there (the backtest's
        predictions) gives the score histograms; without it that plot is left out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
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
    (folder / "report.md").write_text(
        report_markdown(summary, plots, percentiles(result.batch_seconds))
    )
    return summary_table(summary)


# ---------------------------------------------------------------------- numbers


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


def _iso(ms: int | None) -> str:
    if not ms:
        return "-"
    return _time(ms).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# ---------------------------------------------------------------------- plots


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=100, metadata={"Software": None})


def _time_axis(ax: Axes, axis_label: str) -> None:
    ax.set_xlabel(axis_label)
    if axis_label != "event index":
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


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


# ---------------------------------------------------------------------- text


def summary_table(summary: dict[str, Any]) -> Table:
    """The models' final metrics, as the CLI prints them."""
    rate = summary.get("events_per_second")
    dead = summary.get("dead_letters") or {}
    table = Table(
        title=(
            f"backtest: {summary['events']:,} events, {summary['labels_learned']:,} labels learned"
            + (f", {rate:,.0f} events/s" if rate else "")
            + (
                f", {sum(dead.values()):,} dead letters ("
                + ", ".join(f"{r}: {n:,}" for r, n in dead.items())
                + ")"
                if dead
                else ""
            )
        ),
        caption="R@P: recall at the precision target; drift: drift detections (alerts)",
    )
    table.add_column("model", no_wrap=True)
    headers = ("log loss", "acc.", "ROC AUC", "prec.", "recall", "R@P", "drift")
    for column in headers:
        table.add_column(column, justify="right", min_width=5)
    for name, model in summary["models"].items():
        metrics = model["metrics"]
        table.add_row(
            name,
            *(_number(metrics.get(key), 3) for key in METRICS),
            str(len(model["alerts"])),
        )
    return table


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _ratio(value: float | None, band: Sequence[float] | None) -> str:
    """A ratio, marked when outside the fairness band."""
    text = _number(value, 3)
    if value is not None and band and not band[0] <= value <= band[1]:
        text += " ⚠"
    return text


def _slices_markdown(summary: dict[str, Any]) -> list[str]:
    """The ``Slices`` section: one table per model, a row per slice.

    >>> summary = {"models": {"m": {"fairness_band": [0.8, 1.25], "slices": [
    ...     {"slice_key": "context.group", "slice": "b", "n_predictions": 300,
    ...      "mean_score": 0.6, "decision_rate": 1.0, "n_labels": 300,
    ...      "positive_label_rate": 0.5, "roc_auc": 0.7, "log_loss": 0.6,
    ...      "score_ratio": 2.0, "decision_rate_ratio": 1.0}]}}}
    >>> row = _slices_markdown(summary)[6]
    >>> row.split(" | ")[:2], row.split(" | ")[-2:]
    (['| `context.group`', '`b`'], ['2.000 ⚠', '1.000 |'])
    """
    models = {n: m for n, m in summary["models"].items() if m.get("slices")}
    if not models:
        return []
    lines = ["## Slices", ""]
    for name, model in models.items():
        band = model.get("fairness_band")
        lines.append(f"### `{name}`")
        lines.append("")
        rows = [
            [
                f"`{r['slice_key']}`",
                f"`{r['slice']}`",
                f"{r['n_predictions']:,}",
                _number(r["mean_score"]),
                _number(r["decision_rate"]),
                f"{r['n_labels']:,}",
                _number(r["positive_label_rate"]),
                _number(r["roc_auc"]),
                _number(r["log_loss"]),
                _ratio(r["score_ratio"], band),
                _ratio(r["decision_rate_ratio"], band),
            ]
            for r in model["slices"]
        ]
        header = [
            "slice key", "slice", "predictions", "mean score", "decision rate", "labels",
            "positive labels", "ROC AUC", "log loss", "score ratio", "decision-rate ratio",
        ]  # fmt: skip
        lines += _markdown_table(header, rows)
        lines.append("")
        if band:
            lines += [
                "Ratios: the slice's mean score (decision rate) over the rest's, over the last "
                f"slice window; ⚠ outside the fairness band [{band[0]:.3g}, {band[1]:.3g}] "
                "(`StreamlearnFairnessGap`).",
                "",
            ]
    return lines


def report_markdown(
    summary: dict[str, Any], plots: Sequence[str], latency: dict[float, float] | None = None
) -> str:
    """The text of ``report.md``: inputs, metrics, drift and alerts, and the plots.

    >>> text = report_markdown({"events": 0, "labels_learned": 0, "dead_letters": {},
    ...                         "seconds": 0, "events_per_second": None, "models": {}},
    ...                        ["quality.png"])
    >>> "![" in text and "(quality.png)" in text
    True
    """
    lines = ["# Backtest report", "", "## Input", ""]
    dead = summary["dead_letters"]
    rate = summary.get("events_per_second")
    lines += [
        f"- events scored: {summary['events']:,}",
        f"- labels learned: {summary['labels_learned']:,}",
        f"- dead letters: {sum(dead.values()):,}"
        + (" (" + ", ".join(f"{r}: {n:,}" for r, n in dead.items()) + ")" if dead else ""),
        f"- processing: {summary['seconds']} s, "
        + (f"{rate:,.1f} events/s" if rate else "- events/s"),
    ]
    if latency:
        lines.append(
            "- processing time per record: "
            + ", ".join(f"p{q:g} {v * 1e6:,.1f} µs" for q, v in latency.items())
        )
    lines += ["", "## Models", ""]
    rows = []
    for name, model in summary["models"].items():
        metrics = model["metrics"]
        rows.append(
            [
                f"`{name}`",
                f"{model['events_scored']:,}",
                f"{model['labels_learned']:,}",
                *(_number(metrics.get(key)) for key in METRICS),
            ]
        )
    lines += _markdown_table(["model", "events", "labels", *METRICS], rows)
    target = next((m["metrics"].get("precision_target") for m in summary["models"].values()), None)
    if target is not None:
        lines += ["", f"`recall_at_precision`: the best recall at precision ≥ {target}."]
    lines += ["", "## Drift and alerts", ""]
    for name, model in summary["models"].items():
        alerts = model["alerts"]
        lines.append(f"### `{name}`: {len(alerts)} drift detection(s)")
        lines.append("")
        if not alerts:
            lines += ["No drift detected.", ""]
            continue
        rows = [
            [
                str(a["event_index"]),
                _iso(a.get("timestamp")),
                a["kind"],
                str(a["name"]),
                _number(a.get("value")),
                a["alert"],
            ]
            for a in alerts[:_MAX_LISTED]
        ]
        lines += _markdown_table(
            ["event", "event time", "kind", "detector", "value", "alert"], rows
        )
        if len(alerts) > _MAX_LISTED:
            lines.append(f"\n… and {len(alerts) - _MAX_LISTED} more (see `summary.json`).")
        lines.append("")
    lines += _slices_markdown(summary)
    lines += ["## Plots", ""]
    for plot in plots:
        caption = PLOTS.get(plot, plot)
        lines += [f"### {caption}", "", f"![{caption}]({plot})", ""]
    if "scores.png" not in plots:
        lines += ["(No `predictions.jsonl` in this folder: no score distribution.)", ""]
    return "\n".join(lines)
