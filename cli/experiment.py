"""``experiment status|stop|promote|revert``, and the decisions' table of ``model history``.

``streamlearn experiment status [--json]`` reads the experiment's and the rollback
rule's state from each worker's last confirmed checkpoint in Redis (``ns:checkpoint:
GROUP:*``, :class:`learners.checkpoint.CheckpointStore`): per arm its events, labels,
primary metric, always-valid interval and p-value, the status and the decisions so
far. It reads what the workers checkpointed, so it lags them by at most one
checkpoint; it needs no signing key (the state is JSON beside the signed snapshots).
With the configuration's experiment, it shows the group's view too (JSON key
``group``): the statistics every worker published merged, and the decision recorded
for the group (:mod:`stream.experiment_sync`).

``streamlearn experiment revert ARM``, ``promote ARM`` and ``stop`` apply a command to
the group's recorded decision (compare-and-set, audited once under ``cli``); the
running workers follow it at their next look, without a restart.

``streamlearn experiment start (--file EXPERIMENT.yaml | --arm NAME=SOURCE ...)`` records
a new experiment for the group (:mod:`stream.experiment_record`), checked as the
configuration file's ``experiment:`` section; the running workers take its arms at
their next checkpoint boundary. The experiment in force, for every command here, is
the one started for the group, else the configuration's.

Examples
--------
>>> rows = status_rows("worker-0", {"mode": "ab", "status": "running", "arms": {
...     "a": {"events": 10, "labels": 4, "primary": 0.25, "ci": None, "p_value": None}}})
>>> rows[0][:4]
['worker-0', 'a', '10', '4']
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, cast

import orjson
import redis
import typer
import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from streamlearn.cli.common import ConfigOption, settings_or_exit
from streamlearn.learners.experiment import Experiment
from streamlearn.learners.experiment_group import Command, group_experiment
from streamlearn.learners.rollback import RollbackConfig
from streamlearn.stream.config import Settings, mask_url
from streamlearn.stream.config.experiment import (
    ExperimentSettings,
    checked_experiment,
    definition_of,
)
from streamlearn.stream.experiment_record import (
    ExperimentRunningError,
    RecordStore,
    in_force,
    missing_versions,
    start_experiment,
)
from streamlearn.stream.experiment_run import RollbackRun
from streamlearn.stream.experiment_sync import apply_command
from streamlearn.stream.worker_arms import WorkerArms

__all__ = [
    "audit_table",
    "experiment_app",
    "group_view",
    "read_definition",
    "status_rows",
    "worker_states",
]

experiment_app = typer.Typer(
    help="Experiments and the automatic rollback: their state, and commands to the group.",
    no_args_is_help=True,
)
_out = Console()


def _cell(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def status_rows(worker: str, summary: dict[str, Any]) -> list[list[str]]:
    """One table row per arm of a run's summary (:meth:`Experiment.summary`)."""
    rows = []
    for arm, stats in summary.get("arms", {}).items():
        ci = stats.get("ci")
        interval = "-" if not ci else f"[{_cell(ci[0])}, {_cell(ci[1])}]"
        rows.append(
            [
                worker,
                arm,
                f"{stats.get('events') or 0:,}",
                f"{stats.get('labels') or 0:,}",
                _cell(stats.get("primary")),
                interval,
                _cell(stats.get("p_value"), 3),
                str(summary.get("status", "-")),
            ]
        )
    return rows


def _summaries(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The experiment's and the rollback rule's summaries of a checkpoint's state."""
    out: dict[str, dict[str, Any]] = {}
    saved = state.get("experiment")
    if saved is not None:
        out["experiment"] = Experiment.from_dict(saved).summary()
    guard = state.get("rollback")
    if guard is not None:
        run = RollbackRun(RollbackConfig.model_validate(guard["rule"]["config"]), guard["champion"])
        WorkerArms._restore_rollback(run, guard)
        out["rollback"] = {**run.summary(), "status": f"{run.rule.rollbacks} rollback(s)"}
    return out


def worker_states(client: redis.Redis, settings: Settings) -> dict[str, dict[str, Any]]:
    """Each worker's summaries from its confirmed checkpoint, by worker name."""
    prefix = f"{settings.store.key_prefix}:checkpoint:{settings.kafka.group_id}:"
    states: dict[str, dict[str, Any]] = {}
    for key in sorted(cast("list[bytes]", list(client.scan_iter(match=prefix + "*")))):
        raw = cast("bytes | None", client.hget(key, "confirmed"))
        if raw:
            worker = key.decode()[len(prefix) :]
            states[worker] = _summaries(orjson.loads(raw).get("state", {}))
    return states


def _in_force(client: redis.Redis, settings: Settings) -> ExperimentSettings | None:
    """The group's experiment: the one started for it, else the configuration's."""
    store = RecordStore(client, settings.store.key_prefix, settings.kafka.group_id)
    return in_force(store.read(), settings.experiment)


def group_view(client: redis.Redis, settings: Settings) -> dict[str, Any] | None:
    """The group's experiment: every worker's published statistics merged, and the
    decision recorded for the group (None: none started, none configured)."""
    section = _in_force(client, settings)
    if section is None:
        return None
    store = RecordStore(client, settings.store.key_prefix, settings.kafka.group_id)
    seq, state, parts = store.board(section).read()
    experiment = group_experiment(section.decision_config(), state, parts.values())
    return {**experiment.summary(), "seq": seq, "workers": sorted(parts)}


def audit_table(entries: list[dict[str, Any]]) -> Table:
    """The decisions of the registry's audit log, newest first (``model history``)."""
    table = Table(title="decisions", box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("time", "worker", "source", "action", "arm", "p-value", "reason"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            str(entry.get("time", "-")),
            str(entry.get("worker", "-")),
            str(entry.get("source", "-")),
            str(entry.get("action", "-")),
            str(entry.get("arm") or "-"),
            _cell(entry.get("p_value"), 3),
            str(entry.get("reason", "")),
        )
    return table


@experiment_app.command()
def status(
    config: ConfigOption = None,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Per arm events, labels, primary metric, interval, p-value and the decisions so far."""
    settings = settings_or_exit(config)
    client = redis.Redis.from_url(settings.redis.url, **settings.redis.client_options())
    try:
        states = worker_states(client, settings)
        group = group_view(client, settings)
    except redis.RedisError as error:
        raise _redis_failed(settings, error) from None
    finally:
        client.close()
    if as_json:
        typer.echo(json.dumps(states if group is None else {**states, "group": group}, indent=2))
        return
    if not any(states.values()) and group is None:
        _out.print("no experiment or rollback state in any checkpoint", markup=False)
        return
    if group is not None:
        table = Table(title="experiment (group)", box=box.SIMPLE_HEAD, show_edge=False)
        for column in ("scope", "arm", "events", "labels", "primary", "interval", "p-value"):
            table.add_column(column)
        table.add_column("status")
        for row in status_rows("group", group):
            table.add_row(*row)
        _out.print(table)
        workers = ", ".join(group["workers"]) or "none yet"
        _out.print(f"statistics published by: {workers}", markup=False)
        entries = [{**d, "worker": "group", "source": "experiment"} for d in group["decisions"]]
        if entries:
            _out.print(audit_table(entries))
    for run in ("experiment", "rollback"):
        table = Table(title=run, box=box.SIMPLE_HEAD, show_edge=False)
        columns = ("worker", "arm", "events", "labels", "primary", "interval", "p-value")
        for column in (*columns, "status"):
            table.add_column(column)
        decisions = []
        for worker, summaries in states.items():
            if run in summaries:
                for row in status_rows(worker, summaries[run]):
                    table.add_row(*row)
                decisions += [(worker, d) for d in summaries[run].get("decisions", [])]
        if table.row_count:
            _out.print(table)
            entries = [{**d, "worker": w, "source": run} for w, d in decisions]
            if entries:
                _out.print(audit_table(entries))


def _redis_failed(settings: Settings, error: redis.RedisError) -> typer.Exit:
    where = mask_url(settings.redis.url)
    _out.print(f"Redis at {where} failed: {mask_url(str(error))}", style="red", markup=False)
    return typer.Exit(1)


def _command(config: ConfigOption, action: Command, arm: str | None) -> None:
    settings = settings_or_exit(config)
    client = redis.Redis.from_url(settings.redis.url, **settings.redis.client_options())
    try:
        section = _in_force(client, settings)
        if section is None:
            _out.print(
                "no experiment: none was started for the group and the configuration has"
                " no experiment section",
                style="red",
                markup=False,
            )
            raise typer.Exit(1)
        store = RecordStore(client, settings.store.key_prefix, settings.kafka.group_id)
        decision = apply_command(store.board(section), section.decision_config(), action, arm)
    except (ValueError, RuntimeError) as error:
        _out.print(str(error), style="red", markup=False)
        raise typer.Exit(1) from None
    except redis.RedisError as error:
        raise _redis_failed(settings, error) from None
    finally:
        client.close()
    what = f"{decision.action} {decision.arm}" if decision.arm else decision.action
    _out.print(
        f"experiment {section.id}: {what} recorded; the workers follow it at their next look",
        markup=False,
    )


@experiment_app.command()
def revert(
    arm: str = typer.Argument(help="The treatment whose units go back to the control."),
    config: ConfigOption = None,
) -> None:
    """Revert a treatment now: its units are served by the control (recorded, audited)."""
    _command(config, "revert", arm)


@experiment_app.command()
def promote(
    arm: str = typer.Argument(help="The treatment served to everyone from now on."),
    config: ConfigOption = None,
) -> None:
    """Promote a treatment now: it serves every unit and the experiment ends."""
    _command(config, "promote", arm)


@experiment_app.command()
def stop(config: ConfigOption = None) -> None:
    """Stop the experiment without a winner: every unit back to the control."""
    _command(config, "stop", None)


def read_definition(path: Path) -> dict[str, Any]:
    """The experiment section of a YAML file: its ``experiment:`` key, or the whole file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("experiment"), dict):
        data = data["experiment"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an experiment section (a mapping), got {data!r}")
    return data


def _definition(
    file: Path | None, arms: list[str], shares: list[float], fields: dict[str, Any]
) -> ExperimentSettings:
    """The experiment to start, from ``--file`` or the options, checked (ValueError)."""
    control = fields.pop("control", None)
    if file is not None and (arms or shares or control):
        raise ValueError("--file or --arm (with --share, --control), not both")
    if file is not None:
        return checked_experiment(
            {**read_definition(file), **{k: v for k, v in fields.items() if v is not None}}
        )
    if not arms:
        raise ValueError("say what to start: --file EXPERIMENT.yaml, or --arm NAME=SOURCE")
    if fields.get("id") is None:
        fields["id"] = (
            f"{arms[0].partition('=')[0]}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        )
    section = definition_of(arms, shares or [0.1], control or "champion", **fields)
    return checked_experiment(section)


@experiment_app.command()
def start(
    config: ConfigOption = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", dir_okay=False, help="The experiment section (YAML), as in a config."
        ),
    ] = None,
    arm: Annotated[
        list[str] | None,
        typer.Option(help="A treatment: NAME=SPEC (a fresh model) or NAME=version:N; repeatable."),
    ] = None,
    share: Annotated[
        list[float] | None,
        typer.Option(
            help="Each treatment's share of the units (one for all, or one per --arm; default"
            " 0.1); the control has the rest."
        ),
    ] = None,
    control: Annotated[str | None, typer.Option(help="The control's name (champion).")] = None,
    mode: Annotated[str | None, typer.Option(help="ab (the default) or shadow.")] = None,
    primary: Annotated[str | None, typer.Option(help="The primary metric (log_loss).")] = None,
    learn: Annotated[str | None, typer.Option(help="all (every arm learns) or own_arm.")] = None,
    experiment_id: Annotated[
        str | None, typer.Option("--id", help="The experiment's id (default ARM-TIME).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Start an experiment on the running workers (they take its arms at their next
    checkpoint); refused while another runs (`experiment stop` ends it)."""
    settings = settings_or_exit(config)
    fields = {"id": experiment_id, "mode": mode, "primary": primary, "learn": learn}
    try:
        section = _definition(file, arm or [], share or [], {**fields, "control": control})
    except ValueError as error:
        _out.print(str(error), style="red", markup=False)
        raise typer.Exit(2) from None
    client = redis.Redis.from_url(settings.redis.url, **settings.redis.client_options())
    store = RecordStore(client, settings.store.key_prefix, settings.kafka.group_id)
    try:
        missing = missing_versions(store, section)
        if missing:
            versions = ", ".join(f"v{v}" for v in missing)
            _out.print(f"the model registry has no {versions}", style="red", markup=False)
            raise typer.Exit(2)
        record = start_experiment(store, section, settings.experiment)
    except ExperimentRunningError as error:
        _out.print(str(error), style="red", markup=False)
        raise typer.Exit(1) from None
    except (ValueError, RuntimeError) as error:
        _out.print(str(error), style="red", markup=False)
        raise typer.Exit(2 if isinstance(error, ValueError) else 1) from None
    except redis.RedisError as error:
        raise _redis_failed(settings, error) from None
    finally:
        client.close()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "seq": record.seq,
                    "at": record.at,
                    "experiment": orjson.loads(record.to_json())["experiment"],
                },
                indent=2,
            )
        )
        return
    arms = ", ".join(f"{name} {share:g}" for name, share in section.arms.items())
    _out.print(
        f"experiment {section.id} started for group {settings.kafka.group_id} ({section.mode}:"
        f" {arms}); the workers take its arms at their next checkpoint",
        markup=False,
    )
