"""``model`` commands: list, show, promote, roll back, export and import model snapshots.

Mounted by the main CLI as ``streamlearn model ...``. Every command reads the config
(``--config`` and ``STREAMLEARN_*``), connects to its Redis, uses
``store.key_prefix`` as the registry namespace, and needs the signing key in
``STREAMLEARN_MODEL_KEY``. A missing key, an unknown version or a refused snapshot
prints what is wrong and exits with code 2.

Examples
--------
>>> metric_cell({"roc_auc": 0.71234}, "roc_auc"), metric_cell({}, "log_loss")
('0.712', '-')
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import redis
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streamlearn.cli.common import ConfigOption
from streamlearn.learners.registry import (
    ModelRegistry,
    RegistryError,
    SnapshotError,
    SnapshotInfo,
    signing_key_from_env,
)
from streamlearn.stream.config import ConfigError, load_settings, mask_url
from streamlearn.stream.ui import console

__all__ = ["metric_cell", "model_app", "registry_table"]

model_app = typer.Typer(
    help="Model registry: list, show, promote, roll back, export and import signed snapshots.",
    no_args_is_help=True,
)
_out = Console()

VersionArgument = Annotated[str, typer.Argument(help="A version number, e.g. 3 (or v3).")]
TABLE_METRICS = {"roc_auc": "auc", "log_loss": "log loss"}


def metric_cell(metrics: dict[str, float | None], name: str) -> str:
    """A metric rounded for the table, ``-`` when absent."""
    value = metrics.get(name)
    return "-" if value is None else f"{value:.3f}"


def registry_table(
    infos: list[SnapshotInfo], current: str | None, generation: int, namespace: str
) -> Table:
    """The rich table of ``model list``."""
    table = Table(
        title=f"model registry {namespace!r}",
        caption=f"* current: v{current or '-'}, generation {generation}; times in UTC",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )
    table.add_column("version", no_wrap=True)
    table.add_column("model", overflow="fold")
    for column in ("parent", "created"):
        table.add_column(column)
    for column in ("events", "labels", *TABLE_METRICS.values()):
        table.add_column(column, justify="right")
    for info in infos:
        table.add_row(
            f"v{info.version} [green]*[/green]" if info.version == current else f"v{info.version}",
            escape(info.name),
            f"v{info.parent}" if info.parent else "-",
            info.created_at[:16].replace("T", " "),
            f"{info.events_scored:,}",
            f"{info.labels_learned:,}",
            *(metric_cell(info.metrics, metric) for metric in TABLE_METRICS),
        )
    return table


def _say(message: str) -> None:
    _out.print(message, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def _registry(config: Path | None) -> Iterator[ModelRegistry]:
    """The registry of the configured Redis; errors become a message and an exit code."""
    try:
        settings = load_settings(config)
    except ConfigError as error:
        console.print("configuration error", style="red")
        console.print(str(error), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        key = signing_key_from_env()
    except RegistryError as error:
        raise _fail(str(error)) from None
    client = redis.Redis.from_url(
        settings.redis.url, decode_responses=False, **settings.redis.client_options()
    )
    try:
        registry = ModelRegistry(client, settings.store.key_prefix, key)
    except ValueError as error:
        client.close()
        raise _fail(str(error)) from None
    try:
        yield registry
    except SnapshotError as error:
        raise _fail(f"refused: {error}") from None
    except RegistryError as error:
        raise _fail(str(error)) from None
    except redis.RedisError as error:
        where = mask_url(settings.redis.url)
        raise _fail(f"Redis at {where} failed: {mask_url(str(error))}", code=1) from None
    except OSError as error:
        raise _fail(str(error), code=1) from None
    finally:
        client.close()


@model_app.command("list")
def list_versions(config: ConfigOption = None) -> None:
    """Every snapshot with its parent, counts and online metrics; * marks the current one."""
    with _registry(config) as registry:
        infos = registry.list()
        current, generation = registry.current_state()
    if not infos:
        _say(f"no snapshots in registry {registry.namespace!r}")
        return
    table = registry_table(infos, current, generation, registry.namespace)
    # In a terminal rich fits the table to it; redirected, rows stay whole (for grep).
    (_out if _out.is_terminal else Console(width=10_000)).print(table)


@model_app.command()
def show(version: VersionArgument, config: ConfigOption = None) -> None:
    """All metadata of one snapshot, as JSON."""
    with _registry(config) as registry:
        info = registry.info(version)
        current = registry.current()
    document = {**info.model_dump(mode="json"), "current": info.version == current}
    typer.echo(json.dumps(document, indent=2))


@model_app.command()
def promote(version: VersionArgument, config: ConfigOption = None) -> None:
    """Make a version current; running workers swap to it at their next registry poll."""
    with _registry(config) as registry:
        previous = registry.current()
        registry.promote(version)
        current, generation = registry.current_state()
    was = f" (was v{previous})" if previous and previous != current else ""
    _say(f"v{current} is current{was}, generation {generation}")


@model_app.command()
def rollback(config: ConfigOption = None) -> None:
    """Go back to the version that was current before the last promotion."""
    with _registry(config) as registry:
        previous = registry.current()
        version = registry.rollback()
        generation = registry.generation()
    _say(f"rolled back from v{previous} to v{version}, generation {generation}")


@model_app.command()
def history(
    config: ConfigOption = None,
    limit: int = typer.Option(50, min=1, help="Decisions shown, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """The promotion history and the audit log: every decision of the experiments and of
    the automatic rollback, with its evidence."""
    from streamlearn.cli.experiment import audit_table
    from streamlearn.learners.audit import AuditLog

    with _registry(config) as registry:
        promoted, current = registry.history(), registry.current()
        entries = AuditLog(registry.client, registry.namespace).entries(limit)
    if as_json:
        document = {"current": current, "history": promoted, "decisions": entries}
        typer.echo(json.dumps(document, indent=2))
        return
    _say(f"current: v{current or '-'}; before it: {', '.join(f'v{v}' for v in promoted) or '-'}")
    _out.print(audit_table(entries) if entries else "no decisions recorded", markup=False)


@model_app.command("export")
def export_version(
    version: VersionArgument,
    file: Annotated[Path, typer.Argument(dir_okay=False, help="Where to write the snapshot.")],
    config: ConfigOption = None,
) -> None:
    """Write a snapshot's signed envelope to a file (for another registry or a backup)."""
    with _registry(config) as registry:
        info = registry.export(version, file)
    _say(f"wrote v{info.version} ({info.name}) to {file}")


@model_app.command("import")
def import_snapshot(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A file written by export.")
    ],
    config: ConfigOption = None,
) -> None:
    """Store a signed snapshot file as a new version (not promoted)."""
    with _registry(config) as registry:
        info = registry.import_file(file)
    _say(f"imported {file} as v{info.version} (parent v{info.parent}, {info.name})")


if __name__ == "__main__":
    model_app()
