"""Worker commands: ``config`` (the effective settings), ``run`` (a worker) and
``produce`` (a file of events and labels sent to Kafka)."""

from __future__ import annotations

import errno
import faulthandler
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from streamlearn.cli.common import ConfigOption, configure_logging, settings_or_exit
from streamlearn.stream.config import mask_url
from streamlearn.stream.ui import console, progress

__all__ = [
    "config",
    "produce",
    "read_json_lines",
    "run",
    "serve_metrics_or_exit",
    "summary_table",
]


def config(config: ConfigOption = None) -> None:
    """Print the effective configuration (file + environment + defaults), secrets hidden."""
    settings = settings_or_exit(config)
    typer.echo(yaml.safe_dump(settings.redacted(), sort_keys=False))


def run(
    config: ConfigOption = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without records.")
    ] = None,
    max_records: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Worker name, unique within the group. (default: worker.name)"),
    ] = None,
    verbose: bool = False,
) -> None:
    """Run a worker: consume events and labels, score, learn, publish predictions.

    SIGTERM or SIGINT: exit 0, at once while Kafka or Redis is awaited. Exit 1 when
    Kafka or Redis refuses the credentials or permissions (the message names the
    settings to fix). ``kill -USR1 PID`` prints every thread's stack to stderr (for a
    worker that looks stuck).
    """
    from streamlearn.learners.registry import KEY_ENV, SnapshotError, signing_key_from_env
    from streamlearn.stream.waits import Refused
    from streamlearn.stream.worker import Worker

    configure_logging(verbose)
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
    worker = Worker(settings, name=name or settings.worker.resolved_name(), signing_key=key)
    if worker.settings.metrics.port:
        serve_metrics_or_exit(worker)
    try:
        summary = worker.run(idle_timeout_s=idle_timeout, max_records=max_records)
    except Refused as error:  # a wrong password or a missing permission: no retry helps
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        _exit_process(1)
        raise typer.Exit(1) from None
    console.print(summary_table(summary))
    _exit_process(0)


def _exit_process(code: int) -> None:
    """End a ``streamlearn run`` process now, its worker closed and its output flushed.

    Finalising the interpreter (every object of River, pandas and the clients'
    modules) takes 1.5 s of CPU, 2-3 s on a busy machine, and has nothing left
    to do: a worker asked to stop exits within a second. Outside its own
    process (``run`` called in-process, as tests may do) it returns.
    """
    if sys.argv[1:2] != ["run"]:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def serve_metrics_or_exit(worker: Any) -> int:
    """Start the worker's /metrics endpoint, or say which address is taken and exit 1."""
    metrics = worker.settings.metrics
    try:
        return int(worker.serve_metrics())
    except OSError as error:
        why = (
            "the address is in use (another worker or program listens there)"
            if error.errno == errno.EADDRINUSE
            else escape(str(error.strerror or error))
        )
        console.print(
            f"[red]cannot serve /metrics on {metrics.host}:{metrics.port}:[/red] {why}\n"
            "Choose another port with metrics.port in the config file or"
            " STREAMLEARN_METRICS__PORT in the environment (0 disables /metrics)."
        )
        raise typer.Exit(1) from None


def summary_table(summary: object) -> Table:
    table = Table(title="worker summary", show_header=False)
    for key, value in vars(summary).items():
        table.add_row(
            key.replace("_", " "), f"{value:.1f}" if isinstance(value, float) else str(value)
        )
    return table


def read_json_lines(path: Path) -> list[tuple[int, bytes]]:
    """The non-empty lines of a JSON-lines file with their line numbers (from 1), as bytes."""
    with path.open("rb") as handle:
        return [
            (number, line.rstrip(b"\r\n"))
            for number, line in enumerate(handle, start=1)
            if line.strip()
        ]


def produce(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON lines")],
    config: ConfigOption = None,
) -> None:
    """Send a JSON-lines file of events and labels to Kafka, keyed by event_id.

    A line the producer refuses (larger than its ``max_request_size``, 1 MiB) stops
    it: the records before that line are flushed, and the message says how many
    the broker acknowledged and which line stopped it, to resume from there. Each
    record carries its event time in the ``event-time`` header (a line without one
    takes the time of the line before it), so that a worker catching up reads the
    events and labels topics in event-time order.
    """
    from kafka.errors import KafkaError, MessageSizeTooLargeError

    from streamlearn.stream.edge import UndeliveredError
    from streamlearn.stream.produce import LineProducer

    settings = settings_or_exit(config)
    kafka = settings.kafka
    try:
        numbered = read_json_lines(file)
    except OSError as error:
        console.print(f"[red]cannot read {file}:[/red] {error.strerror or error}")
        raise typer.Exit(1) from None
    producer = LineProducer(kafka)
    topics, counts = producer.topics, producer.counts
    try:
        with progress() as bar:
            task = bar.add_task(f"producing {file.name}", total=len(numbered))
            producer.send((line for _, line in numbered), lambda: bar.advance(task))
    except UndeliveredError as error:
        sent = producer.sent
        console.print(
            f"[red]Kafka at {escape(mask_url(kafka.bootstrap_servers))} refused {error.count}"
            f" of {sent} records[/red] ({sent - error.count} acknowledged):"
            f" {escape(mask_url(str(error)))}"
        )
        if producer.stopped is not None:
            console.print(
                f"and line {numbered[producer.stopped[0]][0]} of {file} stopped the send:"
                f" {escape(mask_url(str(producer.stopped[2])))}"
            )
        raise typer.Exit(1) from None
    except KafkaError as error:
        console.print(
            f"[red]Kafka at {escape(mask_url(kafka.bootstrap_servers))}:[/red]"
            f" {escape(mask_url(str(error)))}\n"
            f"{producer.sent} records were handed to the producer before it;"
            " their delivery is unknown"
        )
        raise typer.Exit(1) from None
    if producer.stopped is not None:
        index, size, refusal = producer.stopped
        number = numbered[index][0]
        acknowledged = producer.sent
        hint = (
            "Shorten or remove that line: the producer refuses a record over its"
            " max_request_size (1 MiB) before sending it."
            if isinstance(refusal, MessageSizeTooLargeError)
            else "Check the broker and the line."
        )
        console.print(
            f"[red]line {number} of {file} ({size:,} bytes) stopped the send:[/red]"
            f" {escape(mask_url(str(refusal)))}\n"
            f"{acknowledged} records before it were sent and acknowledged"
            f" ({counts['events']} to {topics['events']!r}, {counts['labels']} to"
            f" {topics['labels']!r}); nothing from line {number} on was sent. {hint}"
            f" Then send the rest with `tail -n +{number} {file} > rest.jsonl`."
        )
        raise typer.Exit(1)
    console.print(
        f"sent {counts['events']} records to {topics['events']!r} and "
        f"{counts['labels']} to {topics['labels']!r} on {mask_url(kafka.bootstrap_servers)}"
    )
