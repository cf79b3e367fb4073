"""What ``model train --from-log`` prints: the comparison table, the section, or JSON.

Examples
--------
>>> iso_utc(0)
'1970-01-01 00:00:00Z'
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from streamlearn.learners.retrain import Evaluation, RetrainResult
from streamlearn.stream.training_log import LogRead
from streamlearn.stream.ui import console

__all__ = ["comparison_table", "iso_utc", "report"]

_out = Console()


def _cell(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def comparison_table(result: RetrainResult) -> Table:
    """New model vs current version on the held-out slice, as a rich table."""
    window = result.window
    table = Table(
        title="retrained model on the held-out later slice of the training log",
        caption=(
            f"trained on {window.trained:,} examples before {iso_utc(window.cutoff_ms)},"
            f" held out {window.held_out:,} until {iso_utc(window.until_ms)}"
            f" ({window.outside:,} read outside the window)"
        ),
        box=box.SIMPLE_HEAD,
    )
    if result.served is not None:
        table.caption = (
            f"{table.caption}; served then: the live model's scores when the events came,"
            " learning as it went"
        )
    new = f"new ({result.spec}" + (f", from v{result.warm_start})" if result.warm_start else ")")
    table.add_column("held out")
    table.add_column(new, justify="right")
    if result.current is not None:
        table.add_column(f"current v{result.current_version}", justify="right")
    if result.served is not None:
        table.add_column("served then", justify="right")
    rows: list[tuple[str, Any]] = [
        ("log loss", lambda e: _cell(e.log_loss)),
        ("ROC AUC", lambda e: _cell(e.roc_auc)),
        ("mean score", lambda e: _cell(e.mean_score)),
        ("positive rate", lambda e: _cell(e.positive_rate)),
        ("examples", lambda e: _cell(e.examples)),
        ("positives", lambda e: _cell(e.positives)),
    ]
    evaluations: list[Evaluation] = [result.candidate]
    if result.current is not None:
        evaluations.append(result.current)
    if result.served is not None:
        evaluations.append(result.served)
    for name, cell in rows:
        table.add_row(name, *(cell(e) for e in evaluations))
    return table


def iso_utc(ms: int) -> str:
    """Epoch milliseconds as a UTC time for people."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + "Z"


def report(
    result: RetrainResult,
    read: LogRead,
    version: str | None,
    section: dict[str, Any] | None,
    held_back: bool,
    experiment_file: Path | None,
    as_json: bool,
) -> None:
    snippet = yaml.safe_dump({"experiment": section}, sort_keys=False) if section else None
    if snippet is not None and experiment_file is not None:
        try:
            experiment_file.write_text(snippet)
        except OSError as error:
            console.print(f"cannot write {experiment_file}: {error}", style="red", markup=False)
            raise typer.Exit(1) from None
    if as_json:
        doc = {
            **result.to_dict(),
            "records": read.records,
            "skipped": dict(read.skipped),
            "registered": version,
            "not_registered_reason": "not better than the current version" if held_back else None,
            "experiment": section,
        }
        typer.echo(json.dumps(doc, indent=2, allow_nan=False, default=str))
        return
    _out.print(comparison_table(result))
    for reason, count in sorted(read.skipped.items()):
        console.print(
            f"skipped {count} bad records ({reason}), first: {read.first_skipped[reason]}"
        )
    if result.better is not None:
        verdict = "better" if result.better else "not better"
        _out.print(
            f"the new model is {verdict} than v{result.current_version} on held-out log loss"
        )
    if held_back:
        _out.print("not registered: --if-better, and it is not better than the current version")
    if version is not None:
        _out.print(f"registered as v{version} (not promoted)")
    if snippet is not None:
        where = f" (written to {experiment_file})" if experiment_file else ""
        _out.print(
            f"the workers' configuration section that enters v{version} as a challenger{where}:"
        )
        _out.print(snippet, markup=False, highlight=False)
