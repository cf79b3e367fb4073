"""The backtest report's text: the models' table for the terminal and ``report.md``.

Examples
--------
>>> summary = {"events": 3, "labels_learned": 2, "dead_letters": {}, "seconds": 0.1,
...            "events_per_second": 30.0, "models": {"m": {"metrics": {"log_loss": 0.5},
...            "alerts": [], "events_scored": 3, "labels_learned": 2}}}
>>> summary_table(summary).row_count
1
>>> report_markdown(summary, []).splitlines()[0]
'# Backtest report'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from streamlearn.stream.report_plots import EXPERIMENT_PLOTS, PLOTS, experiment_decisions

__all__ = ["METRICS", "report_markdown", "summary_table"]

#: The final metrics of the models table, in column order.
METRICS = ("log_loss", "accuracy", "roc_auc", "precision", "recall", "recall_at_precision")

_MAX_LISTED = 50


def _iso(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


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


def _experiment_markdown(experiment: dict[str, Any] | None) -> list[str]:
    """The experiment's section: its arms and its decisions (none without an experiment).

    >>> arms = {"a": {"events": 10, "labels": 9, "primary": 0.5, "ci": None, "p_value": None}}
    >>> "| `a` | 10 | 9 | 0.5000 | - | - |" in _experiment_markdown(
    ...     {"mode": "ab", "primary": "log_loss", "arms": arms, "decisions": []})
    True
    """
    if experiment is None:
        return []
    lines = [
        "## Experiment",
        "",
        f"Mode `{experiment.get('mode')}`, primary metric `{experiment.get('primary')}`"
        + (f", status `{experiment['status']}`" if "status" in experiment else "")
        + ". The interval is of the arm's metric minus the control's (for the rollback"
        " rule: of the paired difference with the last-known-good copy).",
        "",
    ]
    rows = [
        [
            f"`{name}`",
            f"{arm['events']:,}",
            f"{arm['labels']:,}",
            _number(arm.get("primary")),
            "-" if arm.get("ci") is None else f"[{_number(arm['ci'][0])}, {_number(arm['ci'][1])}]",
            _number(arm.get("p_value")),
        ]
        for name, arm in experiment["arms"].items()
    ]
    lines += _markdown_table(["arm", "events", "labels", "primary", "interval", "p-value"], rows)
    lines.append("")
    decisions = experiment_decisions(experiment)
    if not decisions:
        return [*lines, "No decision: the experiment went on to the end of the stream.", ""]
    rows = [
        [
            str(d["event_index"]),
            _iso(None if d.get("timestamp") is None else int(d["timestamp"] * 1000)),
            d["action"],
            f"`{d['arm']}`" if d.get("arm") else "-",
            _number(d.get("p_value")),
            d.get("reason", ""),
        ]
        for d in decisions
    ]
    lines += _markdown_table(["event", "event time", "action", "arm", "p-value", "reason"], rows)
    return [*lines, ""]


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
    lines += _experiment_markdown(summary.get("experiment"))
    lines += ["## Plots", ""]
    for plot in plots:
        caption = PLOTS.get(plot) or EXPERIMENT_PLOTS.get(plot, plot)
        lines += [f"### {caption}", "", f"![{caption}]({plot})", ""]
    if "scores.png" not in plots:
        lines += ["(No `predictions.jsonl` in this folder: no score distribution.)", ""]
    return "\n".join(lines)
