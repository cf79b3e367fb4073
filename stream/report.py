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

The plots are drawn by :mod:`stream.report_plots`, the tables and
``report.md`` written by :mod:`stream.report_text`; this module ties them
together and keeps their public names.

Examples
--------
>>> percentiles([(2, 0.002), (1, 0.003)], (50, 99))
{50: 0.001, 99: 0.003}
>>> event_axis([{"event_index": 10, "timestamp": 0}])
('event index', [10])
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.table import Table

from streamlearn.stream.backtest import BacktestResult
from streamlearn.stream.report_plots import PLOTS, event_axis, percentiles, read_scores, write_plots
from streamlearn.stream.report_text import METRICS, report_markdown, summary_table

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
    plots = write_plots(result, summary, folder)
    (folder / "report.md").write_text(
        report_markdown(summary, plots, percentiles(result.batch_seconds))
    )
    return summary_table(summary)
