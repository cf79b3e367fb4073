"""``metrics`` commands: generate the monitoring artifacts, or check that deployed ones
are current.

Usage::

    streamlearn metrics generate [--config FILE] [--out DIR]   # write every generated file
    streamlearn metrics check [--config FILE] [--root DIR]      # exit 1 and list the stale files
    streamlearn metrics check --config FILE --rules DIR         # exit 1 naming each rule that
                                                                # disagrees with the configuration

The files (:mod:`metrics.artifacts`) are rendered from the alert thresholds of a
streamlearn configuration (``monitoring.thresholds`` of the YAML file given with
``--config``, and the ``STREAMLEARN_MONITORING__THRESHOLDS__*`` environment variables),
or from the defaults of :class:`metrics.thresholds.AlertThresholds` without ``--config``
(the committed files).

Examples
--------
>>> load_thresholds(None).psi_critical
0.25
>>> main(["check", "--rules", "/nonexistent/rules"])  # the message goes to stderr
2
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import click
import typer

from streamlearn.metrics.artifacts import REPO_ROOT, check, check_rules, generate
from streamlearn.metrics.thresholds import AlertThresholds
from streamlearn.stream.config import ConfigError, load_settings

__all__ = ["load_thresholds", "main", "metrics_app"]

metrics_app = typer.Typer(
    name="metrics",
    help="Generate the alert rules, promtool tests, Alertmanager configs and Grafana dashboard"
    " from metrics/ and a configuration's thresholds, or check generated or deployed ones"
    " against them.",
    no_args_is_help=True,
)

ThresholdsConfig = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="streamlearn YAML config whose monitoring.thresholds to use (default: the defaults)",
    ),
]
RootOption = Annotated[
    Path,
    typer.Option(
        "--root",
        "--out",
        help="Folder the files are written to or checked under, in the repository's layout"
        " (deploy/prometheus/rules/...; default: the repository).",
    ),
]


def load_thresholds(path: Path | None) -> AlertThresholds:
    """The alert thresholds of the streamlearn configuration ``path`` (defaults for None).

    Raises
    ------
    ValueError
        When the configuration cannot be read or is invalid (the message says why).
    """
    if path is None:
        return AlertThresholds()
    try:
        return load_settings(path).monitoring.thresholds
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _thresholds_or_exit(config: Path | None) -> AlertThresholds:
    try:
        return load_thresholds(config)
    except ValueError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


@metrics_app.command("generate")
def generate_command(config: ThresholdsConfig = None, root: RootOption = REPO_ROOT) -> None:
    """Write every generated file under --out; print the files that changed."""
    thresholds = _thresholds_or_exit(config)
    changed = generate(root, thresholds)
    for rel in changed:
        typer.echo(f"wrote {root / rel}")
    if not changed:
        typer.echo("all generated files are up to date")


@metrics_app.command("check")
def check_command(
    config: ThresholdsConfig = None,
    root: RootOption = REPO_ROOT,
    rules: Annotated[
        Path | None,
        typer.Option(
            help="A folder of deployed Prometheus rule files to compare with the configuration,"
            " instead of the generated files under --root."
        ),
    ] = None,
) -> None:
    """Exit 1 naming the generated files that are stale, or the deployed rules that disagree."""
    thresholds = _thresholds_or_exit(config)
    if rules is not None:
        try:
            problems = check_rules(thresholds, rules)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        for line in problems:
            typer.echo(f"mismatch: {line}", err=True)
        if problems:
            source = config or "the default thresholds"
            typer.echo(
                f"{len(problems)} rule(s) in {rules} disagree with {source}: run"
                " `streamlearn metrics generate --config FILE --out DIR` and deploy its rules",
                err=True,
            )
            raise typer.Exit(1)
        typer.echo(f"the rules in {rules} agree with {config or 'the default thresholds'}")
        return
    stale = check(root, thresholds)
    for rel in stale:
        typer.echo(f"stale: {rel} (run `streamlearn metrics generate`)", err=True)
    if stale:
        raise typer.Exit(1)
    typer.echo("all generated files are up to date")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``streamlearn metrics`` with ``argv`` in this process; return the exit status."""
    try:
        status = metrics_app(
            args=list(argv) if argv is not None else None,
            prog_name="streamlearn metrics",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    # Outside standalone mode, click returns the code of a typer.Exit instead of raising it.
    return status if isinstance(status, int) else 0
