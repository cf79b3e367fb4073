"""The ``streamlearn`` command: one entry point for every user task."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import orjson
import typer
import yaml
from rich.table import Table

from learners.model_cli import model_app
from stream.config import ConfigError, Settings, load_settings
from stream.stack_cli import stack_app
from stream.ui import console, progress

__all__ = ["app"]

app = typer.Typer(
    help="Real-time scoring and online learning: Kafka in, features in Redis, River models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack_app, name="stack")
app.add_typer(model_app, name="model")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="STREAMLEARN_CONFIG", help="YAML config file."),
]


def settings_or_exit(path: Path | None, **overrides: object) -> Settings:
    """The effective settings, or a message that says what to fix and exit code 2."""
    try:
        return load_settings(path, **overrides)
    except ConfigError as error:
        console.print(f"[red]configuration error[/red]\n{error}")
        raise typer.Exit(2) from None


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)


@app.command()
def config(config: ConfigOption = None) -> None:
    """Print the effective configuration (file + environment + defaults), secrets hidden."""
    settings = settings_or_exit(config)
    typer.echo(yaml.safe_dump(settings.redacted(), sort_keys=False))


@app.command()
def run(
    config: ConfigOption = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without records.")
    ] = None,
    max_records: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
    name: Annotated[str, typer.Option(help="Worker name, unique within the group.")] = "worker-0",
    verbose: bool = False,
) -> None:
    """Run a worker: consume events and labels, score, learn, publish predictions.

    ``kill -USR1 PID`` prints every thread's stack to stderr (for a worker that looks stuck).
    """
    from learners.registry import KEY_ENV, SnapshotError, signing_key_from_env
    from stream.worker import Worker

    _logging(verbose)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    settings = settings_or_exit(config)
    try:
        key = signing_key_from_env()
    except SnapshotError as error:
        if settings.checkpoint.enabled and KEY_ENV in os.environ:
            console.print(f"[red]{error}[/red]")
            raise typer.Exit(2) from None
        key = None
        console.print(f"[yellow]{KEY_ENV} is not set: no checkpoints, offsets committed per batch")
    worker = Worker(settings, name=name, signing_key=key)
    if worker.settings.metrics.port:
        worker.serve_metrics()
    summary = worker.run(idle_timeout_s=idle_timeout, max_records=max_records)
    console.print(summary_table(summary))


def summary_table(summary: object) -> Table:
    table = Table(title="worker summary", show_header=False)
    for key, value in vars(summary).items():
        table.add_row(
            key.replace("_", " "), f"{value:.1f}" if isinstance(value, float) else str(value)
        )
    return table


def read_json_lines(path: Path) -> list[bytes]:
    """The non-empty lines of a JSON-lines file, as bytes."""
    with path.open("rb") as handle:
        return [line.rstrip(b"\r\n") for line in handle if line.strip()]


@app.command()
def produce(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON lines")],
    config: ConfigOption = None,
) -> None:
    """Send a JSON-lines file of events and labels to Kafka, keyed by event_id.

    Each record carries its event time in the ``event-time`` header (a line without
    one takes the time of the line before it), so that a worker catching up reads
    the events and labels topics in event-time order.
    """
    from kafka.errors import KafkaError

    from stream.kafka_io import KafkaSink, ensure_topics, event_key, event_time_headers, topic_plan
    from stream.replay import timed_lines

    settings = settings_or_exit(config)
    kafka = settings.kafka
    lines = timed_lines(read_json_lines(file))
    topics = {"events": kafka.topics.events, "labels": kafka.topics.labels}
    counts = {"events": 0, "labels": 0}
    try:
        if kafka.topics.create:
            ensure_topics(kafka, topic_plan(kafka))
        sink = KafkaSink(kafka)
        try:
            with progress() as bar:
                task = bar.add_task(f"producing {file.name}", total=len(lines))
                for line in lines:
                    headers = event_time_headers(line.time_ms)
                    sink.send(topics[line.kind], event_key(line.value), line.value, headers)
                    counts[line.kind] += 1
                    bar.advance(task)
                sink.flush()
        finally:
            sink.close()
    except KafkaError as error:
        console.print(f"[red]Kafka at {kafka.bootstrap_servers}:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(
        f"sent {counts['events']} records to {topics['events']!r} and "
        f"{counts['labels']} to {topics['labels']!r} on {kafka.bootstrap_servers}"
    )


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the JSON lines.")],
    events: Annotated[int, typer.Option(min=1)] = 10_000,
    seed: int = 42,
    users: Annotated[int, typer.Option(min=1)] = 300,
    items: Annotated[int, typer.Option(min=1)] = 500,
    inline_labels: Annotated[bool, typer.Option(help="Labels inside the events.")] = False,
    explicit_negatives: Annotated[
        bool, typer.Option(help="Send negative labels once the click window passed.")
    ] = True,
) -> None:
    """Write a synthetic world (events, then clicks as delayed labels) as JSON lines."""
    from stream.synthetic import WorldConfig, generate_world

    world = WorldConfig(
        events=events,
        seed=seed,
        users=users,
        items=items,
        inline_labels=inline_labels,
        explicit_negatives=explicit_negatives,
    )
    n = 0
    with out.open("wb") as handle:
        for record in generate_world(world):
            handle.write(orjson.dumps(record) + b"\n")
            n += 1
    console.print(f"wrote {n} records ({events} events) to {out}")


@app.command()
def backtest(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL, CSV, Parquet")],
    config: ConfigOption = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="Preset or package.module:function; repeat to compare models."),
    ] = None,
    features: Annotated[
        str | None, typer.Option(help="default, or raw: the event's own features only.")
    ] = None,
    label_delay: Annotated[
        float | None, typer.Option(help="Seconds of event time before an inline label is known.")
    ] = None,
    redis: Annotated[
        str | None, typer.Option("--redis", help="Keep interaction state in this Redis URL.")
    ] = None,
    report: Annotated[Path, typer.Option(help="Folder for the report.")] = Path("reports/backtest"),
) -> None:
    """Run models over a historical file in-process, in event time, and write a report."""
    from stream.backtest import backtest as run_backtest
    from stream.report import write_report
    from stream.runtime import tune_interpreter

    overrides: dict[str, object] = {}
    if features is not None:
        overrides["features"] = {"mode": features}
    tune_interpreter()
    settings = settings_or_exit(config, **overrides)
    specs = model or [settings.model.spec]
    report.mkdir(parents=True, exist_ok=True)
    with (
        (report / "predictions.jsonl").open("wb") as predictions,
        (report / "dead_letters.jsonl").open("wb") as dead_letters,
        progress() as bar,
    ):
        task = bar.add_task(f"backtest {file.name}", total=None)
        try:
            result = run_backtest(
                file,
                settings,
                specs,
                label_delay_s=label_delay,
                redis_url=redis,
                predictions=predictions,
                dead_letters=dead_letters,
                on_batch=lambda n: bar.advance(task, n),
            )
        except ValueError as error:
            console.print(f"[red]cannot run the backtest:[/red] {error}")
            raise typer.Exit(2) from None
    summary = write_report(result, report)
    console.print(summary)


@app.command("dataset")
def dataset(
    action: Annotated[str, typer.Argument(help="export, or list")],
    name: Annotated[str | None, typer.Argument(help="Data set name (see `dataset list`).")] = None,
    file: Annotated[Path | None, typer.Argument(help="Where to write the JSON lines.")] = None,
    seed: int = 42,
    limit: Annotated[int | None, typer.Option(min=1, help="Samples to export.")] = None,
) -> None:
    """List River's bundled data sets and generators, or export one as an event file."""
    from stream.datasets import DATASETS, dataset_events

    if action == "list":
        table = Table(title="data sets")
        for column in ("name", "samples", "what"):
            table.add_column(column)
        for key, (_, size, description) in sorted(DATASETS.items()):
            table.add_row(key, str(size), description)
        console.print(table)
        return
    if action != "export" or name is None or file is None:
        console.print(
            "usage: streamlearn dataset export NAME FILE   (or: streamlearn dataset list)"
        )
        raise typer.Exit(2)
    try:
        events = dataset_events(name, seed=seed, limit=limit)
        with file.open("wb") as handle:
            n = sum(handle.write(orjson.dumps(event) + b"\n") > 0 for event in events)
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    console.print(f"wrote {n} events of {name!r} to {file}")


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL, CSV, Parquet")],
    labels: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="A separate file of label records."),
    ] = None,
    speed: Annotated[
        str, typer.Option(help="Event-time seconds per wall second (1, 60, ...) or max.")
    ] = "max",
    since: Annotated[
        str | None,
        typer.Option(help="Only from this event time (ISO-8601, UTC if no zone, or ms)."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only before this event time (ISO-8601 or epoch ms).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Replay a historical file into Kafka in event-time order, at a chosen speed."""
    from kafka.errors import KafkaError

    from stream.replay import parse_speed, parse_time, plan_replay
    from stream.replay import replay as run_replay

    settings = settings_or_exit(config)
    try:
        factor = parse_speed(speed)
        since_ms = parse_time(since) if since is not None else None
        until_ms = parse_time(until) if until is not None else None
        with console.status(f"reading and ordering {file.name}"):
            plan = plan_replay(file, labels, since_ms, until_ms)
    except ValueError as error:
        console.print(f"[red]cannot replay:[/red] {error}")
        raise typer.Exit(2) from None
    try:
        with progress() as bar:
            task = bar.add_task(f"replay {file.name}", total=len(plan.lines))
            summary = run_replay(
                file,
                settings,
                labels,
                speed=factor,
                plan=plan,
                on_send=lambda n: bar.advance(task, n),
            )
    except KafkaError as error:
        console.print(f"[red]Kafka at {settings.kafka.bootstrap_servers}:[/red] {error!r}")
        raise typer.Exit(1) from None
    console.print(summary.table())


@app.command()
def demo(
    events: Annotated[int, typer.Option(min=100, help="Synthetic events to stream.")] = 20_000,
    root: Annotated[Path | None, typer.Option(help="Stack folder (default .stack/).")] = None,
    metrics_port: Annotated[int, typer.Option(help="The worker's /metrics port.")] = 9108,
    report: Annotated[Path, typer.Option(help="Where backtest reports go.")] = Path("reports/demo"),
) -> None:
    """The main job end to end: local stack, a synthetic stream, a worker, a report."""
    from stream.demo import run_demo
    from stream.stack_install import StackError

    _logging(False)
    try:
        result = run_demo(events, root, metrics_port, report)
    except StackError as error:
        console.print(f"[red]the local stack did not start[/red]\n{error}")
        raise typer.Exit(1) from None
    console.print(result.table())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
