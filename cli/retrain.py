"""``model train --from-log``: retrain from the training log, judge, register, enter as challenger.

The guide's scheduled retraining ("retrain weekly on the last 30 days") for workers that
also learn online. The command reads the training log (``kafka.topics.examples``: each
learned label with the features it was learned on, :mod:`stream.training_log`) over a
window of event time, trains a fresh model of ``--spec`` (or a copy of ``--warm-start
VERSION`` learning on) on the window's earlier part and scores it beside the current
version on the later, held-out part (:mod:`learners.retrain`), and prints the comparison.

- ``--register`` stores the new version (not promoted) with its held-out evaluation as
  its metrics, and adds a ``retrain`` entry to the registry's audit log
  (:mod:`learners.registry_log`, where the experiments' decisions go too).
- ``--challenger ARM --share 0.1`` (registers too) prints the ``experiment:`` section
  that enters the new version as an ``ab`` challenger beside the current model
  (``models: {ARM: "version:N"}``), writes it to ``--experiment-file`` when given, and
  records the request in the registry's audit log. Put the section in the workers'
  configuration to start the experiment, or give ``--start``: the experiment is started
  for the group at once (``streamlearn experiment start``, :mod:`stream.experiment_record`;
  refused while another runs) and the running workers take the challenger at their next
  checkpoint. Its decisions (promote, revert) are the experiment's.
- ``--if-alert NAME`` (repeatable) trains only while Prometheus says that alert fires
  (feature drift, concept drift, a quality alert: the guide's triggered retraining), and
  ``--cooldown 1d`` skips a run within a day of the last retraining in the registry's
  audit log (:mod:`stream.retrain_trigger`); a skipped run says why and exits 0.
- ``--if-better`` registers only a model whose held-out log loss beats the current
  version's (for scheduled and alert-triggered runs: a worse retraining changes nothing).

Errors are messages with an exit code: 1 for the data or a service (no example in the
window, Kafka or Redis away), 2 for the command line or the configuration.

Examples
--------
>>> section = challenger_section("retrained", "7", 0.1, None, None)
>>> section["arms"], section["models"]
({'champion': 0.9, 'retrained': 0.1}, {'retrained': 'version:7'})
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from pydantic import ValidationError
from rich.console import Console

from streamlearn.cli.common import ConfigOption, settings_or_exit
from streamlearn.cli.retrain_report import iso_utc, report
from streamlearn.features.schema import to_epoch_ms
from streamlearn.learners.registry import ModelRegistry, RegistryError, signing_key_from_env
from streamlearn.learners.registry_log import append_record, records
from streamlearn.learners.retrain import (
    EmptyWindowError,
    RetrainResult,
    parse_duration,
    retrain,
)
from streamlearn.stream.config import ExperimentSettings, Settings, mask_url
from streamlearn.stream.config.experiment import checked_experiment
from streamlearn.stream.experiment_record import (
    ExperimentRunningError,
    RecordStore,
    in_force,
    start_experiment,
)
from streamlearn.stream.retrain_trigger import (
    TriggerError,
    alerts_document,
    firing,
    last_retrain_age_s,
)
from streamlearn.stream.training_log import LogRead, TrainingLogError, read_training_log
from streamlearn.stream.ui import console

__all__ = ["challenger_section", "train", "until_ms"]

_out = Console()


def _fail(message: str, code: int) -> typer.Exit:
    console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def until_ms(text: str, now_s: float | None = None) -> int | None:
    """The window's end: ``latest`` (None: the newest event of the log), ``now``, an
    ISO-8601 time with a zone, or epoch milliseconds.

    >>> until_ms("latest"), until_ms("now", now_s=12.5), until_ms("1970-01-01T00:00:02Z")
    (None, 12500, 2000)
    >>> until_ms("1714552200000")
    1714552200000
    """
    if text == "latest":
        return None
    if text == "now":
        return round((time.time() if now_s is None else now_s) * 1000)
    if text.isdigit():
        return int(text)
    return to_epoch_ms(text)


def challenger_section(
    arm: str, version: str, share: float, base: ExperimentSettings | None, primary: str | None
) -> dict[str, Any]:
    """The ``experiment:`` section entering ``version`` as arm ``arm`` at ``share`` of the
    units beside the control (the configured experiment's first arm, else ``champion``).

    The section is checked as the workers will check it; ``models`` names where the
    challenger's model comes from (a registry version).

    >>> challenger_section("champion", "3", 0.1, None, None)
    Traceback (most recent call last):
    ...
    ValueError: the challenger arm must not be named like the control 'champion'
    """
    control = base.control if base is not None else "champion"
    if arm == control:
        raise ValueError(f"the challenger arm must not be named like the control {control!r}")
    if not 0 < share < 1:
        raise ValueError(f"--share must be between 0 and 1, got {share}")
    fields: dict[str, Any] = {
        "id": f"retrain-v{version}",
        "mode": "ab",
        "arms": {control: round(1 - share, 12), arm: share},
    }
    if primary is not None:
        fields["primary"] = primary
    source = {arm: f"version:{version}"}
    if "models" in ExperimentSettings.model_fields:  # checked as the workers check it
        fields["models"] = source
    checked = base.model_dump(exclude={"models"}) if base is not None else {}
    try:
        settings = ExperimentSettings.model_validate(
            {k: v for k, v in checked.items() if k in ExperimentSettings.model_fields} | fields
        )
    except ValidationError as error:
        problems = "; ".join(str(e["msg"]) for e in error.errors())
        raise ValueError(f"the experiment: {problems}") from None
    return {
        "id": settings.id,
        "mode": settings.mode,
        "arms": dict(settings.arms),
        "primary": settings.primary,
        "models": source,
    }


@contextmanager
def _registry(settings: Settings) -> Iterator[ModelRegistry]:
    """The configured registry; its errors become messages and exit codes."""
    try:
        key = signing_key_from_env()
    except RegistryError as error:
        raise _fail(str(error), 2) from None
    client = redis.Redis.from_url(
        settings.redis.url, decode_responses=False, **settings.redis.client_options()
    )
    try:
        yield ModelRegistry(client, settings.store.key_prefix, key)
    except RegistryError as error:
        raise _fail(str(error), 2) from None
    except redis.RedisError as error:
        where = mask_url(settings.redis.url)
        raise _fail(f"Redis at {where} failed: {mask_url(str(error))}", 1) from None
    finally:
        client.close()


def _read_log(
    settings: Settings, topic: str | None, since_ms: int | None, timeout: float
) -> LogRead:
    try:
        return read_training_log(settings.kafka, topic, since_ms, timeout_s=timeout)
    except TrainingLogError as error:
        raise _fail(str(error), 1) from None


def train(
    from_log: Annotated[
        bool, typer.Option("--from-log", help="Train from the training log (the examples topic).")
    ] = False,
    since: Annotated[str, typer.Option(help="The window: 30d, 12h, 90m, 2w.")] = "30d",
    until: Annotated[
        str,
        typer.Option(
            help="The window's end: latest (the log's newest event), now, ISO-8601 or epoch ms."
        ),
    ] = "latest",
    holdout: Annotated[
        float, typer.Option(help="The later fraction of the window's time held out.")
    ] = 0.2,
    spec: Annotated[
        str | None, typer.Option(help="Model spec of the new model (default: model.spec).")
    ] = None,
    warm_start: Annotated[
        str | None, typer.Option("--warm-start", help="Start from this registry version.")
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            help="The version to compare with (default: the promoted one, else the newest)."
        ),
    ] = None,
    register: Annotated[
        bool, typer.Option(help="Store the new model as a registry version (not promoted).")
    ] = False,
    if_better: Annotated[
        bool,
        typer.Option("--if-better", help="Register only if it beats the current version."),
    ] = False,
    challenger: Annotated[
        str | None,
        typer.Option(help="Enter the new version as this arm of an ab experiment (registers)."),
    ] = None,
    share: Annotated[float, typer.Option(help="The challenger's share of the units.")] = 0.1,
    primary: Annotated[
        str | None, typer.Option(help="The experiment's primary metric (default: configured).")
    ] = None,
    start_now: Annotated[
        bool,
        typer.Option(
            "--start", help="Start the challenger's experiment on the running workers at once."
        ),
    ] = False,
    experiment_file: Annotated[
        Path | None,
        typer.Option(dir_okay=False, help="Write the experiment section there (YAML)."),
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="The training log topic (default: kafka.topics.examples).")
    ] = None,
    if_alert: Annotated[
        list[str] | None,
        typer.Option(
            "--if-alert",
            help="Train only while this Prometheus alert fires (repeatable), e.g."
            " StreamlearnConceptDrift.",
        ),
    ] = None,
    prometheus: Annotated[
        str, typer.Option(envvar="STREAMLEARN_PROMETHEUS_URL", help="Prometheus, for --if-alert.")
    ] = "http://127.0.0.1:9090",
    cooldown: Annotated[
        str | None,
        typer.Option(
            help="Skip when the registry's audit log has a retraining newer than this, e.g. 1d."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to read the log at most.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")] = False,
    config: ConfigOption = None,
) -> None:
    """Retrain a model from the training log, compare it with the current version on a
    held-out later slice, and optionally register it and enter it as a challenger."""
    if not from_log:
        raise _fail("say where to train from: --from-log (the training log)", 2)
    settings = settings_or_exit(config)
    try:
        since_s = parse_duration(since)
        end_ms = until_ms(until)
        cooldown_s = parse_duration(cooldown) if cooldown is not None else None
    except ValueError as error:
        raise _fail(str(error), 2) from None
    reason = _triggered(if_alert, prometheus)
    if reason is not None:
        _skip(reason, as_json)
        return
    if warm_start is not None and spec is not None:
        raise _fail("--spec or --warm-start, not both", 2)
    if start_now and challenger is None:
        raise _fail("--start starts the challenger's experiment: give --challenger ARM too", 2)
    register = register or challenger is not None
    with _registry(settings) as registry:
        if cooldown_s is not None:
            age = last_retrain_age_s(records(registry), datetime.now(UTC))
            if age is not None and age < cooldown_s:
                _skip(
                    f"retrained {age / 3600:.1f} h ago, within the cooldown of {cooldown}", as_json
                )
                return
        current_version = _compared_version(registry, against)
        current = registry.load(current_version)[0] if current_version is not None else None
        start = None
        if warm_start is not None:
            start, start_info = registry.load(warm_start)
            spec_name = start_info.name
            warm_start = start_info.version
        else:
            spec_name = spec or settings.model.spec
        since_ms = None if end_ms is None else end_ms - round(since_s * 1000)
        read = _read_log(settings, topic, since_ms, timeout)
        try:
            model, result = retrain(
                read.examples,
                since_s,
                spec=spec_name,
                holdout=holdout,
                until_ms=end_ms,
                warm_start=start,
                warm_start_version=warm_start,
                current=current,
                current_version=current_version,
                max_categories=settings.model.max_categories,
                category_buckets=settings.model.category_buckets,
            )
        except EmptyWindowError as error:
            skipped = f" ({sum(read.skipped.values())} bad records skipped)" if read.skipped else ""
            raise _fail(f"nothing to train on: {error}{skipped}", 1) from None
        except ValueError as error:
            raise _fail(str(error), 2) from None
        version = None
        section = None
        registering = register and not (if_better and result.better is False)
        if registering:
            version = _register(
                registry, model, result, read, topic or settings.kafka.topics.examples
            )
            if challenger is not None:
                try:
                    section = challenger_section(
                        challenger, version, share, _in_force(registry, settings), primary
                    )
                except ValueError as error:
                    raise _fail(
                        f"v{version} registered, but not as a challenger: {error}", 2
                    ) from None
                append_record(
                    registry,
                    "challenger_request",
                    f"enter v{version} as arm {challenger} at {share:.0%} of the units",
                    {
                        "version": version,
                        "arm": challenger,
                        "share": share,
                        "versions": {challenger: version},
                        "experiment": section,
                    },
                )
                if start_now:
                    _start(registry, settings, section, version)
    report(result, read, version, section, register and not registering, experiment_file, as_json)
    if start_now and section is not None and not as_json:
        _out.print(
            f"experiment {section['id']} started: the running workers take v{version} as arm"
            f" {challenger} at their next checkpoint (`streamlearn experiment status`)"
        )


def _in_force(registry: ModelRegistry, settings: Settings) -> ExperimentSettings | None:
    """The group's experiment: the one started for it, else the configuration's."""
    group = settings.kafka.group_id
    return in_force(
        RecordStore(registry.client, registry.namespace, group).read(), settings.experiment
    )


def _start(
    registry: ModelRegistry, settings: Settings, section: dict[str, Any], version: str
) -> None:
    """Start the challenger's experiment for the group (``experiment start``)."""
    store = RecordStore(registry.client, registry.namespace, settings.kafka.group_id)
    try:
        start_experiment(store, checked_experiment(section), settings.experiment)
    except ExperimentRunningError as error:
        raise _fail(f"v{version} registered, but its experiment not started: {error}", 1) from None
    except (ValueError, RuntimeError) as error:
        raise _fail(f"v{version} registered, but its experiment not started: {error}", 2) from None


def _triggered(alerts: list[str] | None, prometheus: str) -> str | None:
    """Why not to train (no named alert firing), or None: train."""
    if not alerts:
        return None
    try:
        found = firing(alerts_document(prometheus), alerts)
    except TriggerError as error:
        raise _fail(str(error), 1) from None
    if found:
        _out.print(f"firing: {', '.join(found)}: retraining", markup=False, highlight=False)
        return None
    return f"none of {', '.join(alerts)} is firing"


def _skip(reason: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"skipped": reason, "registered": None}))
    else:
        _out.print(f"not retraining: {reason}", markup=False, highlight=False)


def _compared_version(registry: ModelRegistry, against: str | None) -> str | None:
    """``against``, else the promoted version, else the newest (the workers' last checkpoint)."""
    if against is not None:
        return registry.info(against).version
    current = registry.current()
    if current is not None:
        return current
    versions = registry.list()
    return versions[-1].version if versions else None


def _register(
    registry: ModelRegistry, model: Any, result: RetrainResult, read: LogRead, topic: str | None
) -> str:
    window = result.window
    note = (
        f"retrained from the training log {topic}: {window.trained} examples before"
        f" {iso_utc(window.cutoff_ms)}, judged on {window.held_out}"
        f" until {iso_utc(window.until_ms)}"
    )
    info = registry.save(
        model,
        name=result.spec,
        parent=result.warm_start,
        events_scored=0,
        labels_learned=window.trained,
        offsets={},
        metrics=result.registry_metrics(),
        note=note,
    )
    compared = (
        f", v{result.current_version}: {result.current.log_loss:.4f}"
        if result.current is not None
        else ""
    )
    append_record(
        registry,
        "retrain",
        f"held-out log loss {result.candidate.log_loss:.4f}{compared}; trained on"
        f" {window.trained}, judged on {window.held_out} later examples",
        {
            "version": info.version,
            "versions": {"new": info.version, "current": result.current_version},
            "topic": topic,
            "records": read.records,
            "skipped": dict(read.skipped),
            **result.to_dict(),
        },
    )
    return info.version
