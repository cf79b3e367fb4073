"""The ``streamlearn`` command: one entry point for every user task."""

from __future__ import annotations

import errno
import faulthandler
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any

import orjson
import typer
import yaml
from rich.markup import escape
from rich.table import Table

from learners.model_cli import model_app
from stream.alerts_cli import alerts_app
from stream.config import ConfigError, MaskingFormatter, Settings, load_settings, mask_url
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
app.add_typer(alerts_app, name="alerts")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="STREAMLEARN_CONFIG", help="YAML config file."),
]


def settings_or_exit(path: Path | None, **overrides: object) -> Settings:
    """The effective settings, or a message that says what to fix and exit code 2."""
    try:
        return load_settings(path, **overrides)
    except ConfigError as error:
        console.print("configuration error", style="red")
        console.print(str(error), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _masked_excepthook(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    """Print an uncaught exception as Python does, with the passwords of URLs masked."""
    text = "".join(traceback.format_exception(kind, value, tb))
    sys.stderr.write(mask_url(text))


def _masked_thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "unknown"
    sys.stderr.write(f"Exception in thread {name}:\n")
    _masked_excepthook(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)


def _logging(verbose: bool) -> None:
    """Log lines, and the traceback of a crash, with the passwords of URLs masked."""
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    sys.excepthook = _masked_excepthook
    threading.excepthook = _masked_thread_excepthook
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

    SIGTERM or SIGINT: exit 0, at once while Kafka or Redis is awaited. Exit 1 when
    Kafka or Redis refuses the credentials or permissions (the message names the
    settings to fix). ``kill -USR1 PID`` prints every thread's stack to stderr (for a
    worker that looks stuck).
    """
    from learners.registry import KEY_ENV, SnapshotError, signing_key_from_env
    from stream.waits import Refused
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


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address (default serve.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default serve.port).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="uvicorn worker processes (default serve.workers).")
    ] = None,
    verbose: bool = False,
) -> None:
    """Score and rank over HTTP: POST /score, POST /rank, GET /healthz, /readyz, /metrics.

    Reads the workers' interaction state in Redis (never writes it) and serves the model
    they serve: the promoted registry version, refreshed from their newest checkpoint.
    """
    from stream.serve_app import run_server

    _logging(verbose)
    overrides = {
        k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None
    }
    settings = settings_or_exit(config)
    if overrides:
        settings = settings_or_exit(config, serve={**settings.serve.model_dump(), **overrides})
    if config is not None:
        os.environ["STREAMLEARN_CONFIG"] = str(config)  # read by each worker process
    serve_config = settings.serve
    console.print(
        f"serving on http://{serve_config.host}:{serve_config.port}"
        f" ({serve_config.workers} worker{'s' if serve_config.workers > 1 else ''})"
    )
    run_server(settings, serve_config.host, serve_config.port, serve_config.workers)


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


@app.command()
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

    from stream.edge import UndeliveredError
    from stream.produce import LineProducer

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
        index, size, error = producer.stopped
        number = numbered[index][0]
        acknowledged = producer.sent
        hint = (
            "Shorten or remove that line: the producer refuses a record over its"
            " max_request_size (1 MiB) before sending it."
            if isinstance(error, MessageSizeTooLargeError)
            else "Check the broker and the line."
        )
        console.print(
            f"[red]line {number} of {file} ({size:,} bytes) stopped the send:[/red]"
            f" {escape(mask_url(str(error)))}\n"
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
    group_share: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of users in group b (context field `group`; 0: none)."
        ),
    ] = 0.0,
    group_effect: Annotated[
        float,
        typer.Option(min=-10.0, max=10.0, help="Added to the click logit of group b's events."),
    ] = 0.0,
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
        group_share=group_share,
        group_effect=group_effect,
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
    key_prefix: Annotated[
        str | None,
        typer.Option(
            help="Redis key prefix of the backtest's state (with --redis). Default: a fresh"
            " backtest-<time>-<id> prefix, deleted at the end; never the live workers'"
            " store.key_prefix unless given here."
        ),
    ] = None,
    keep_state: Annotated[
        bool,
        typer.Option(help="Keep the fresh prefix's keys in Redis after the backtest."),
    ] = False,
    report: Annotated[Path, typer.Option(help="Folder for the report.")] = Path("reports/backtest"),
) -> None:
    """Run models over a historical file in-process, in event time, and write a report.

    The report is written beside ``--report`` and renamed into place once complete:
    an interrupted backtest leaves the previous report as it was.
    """
    from redis.exceptions import RedisError

    from stream.backtest import backtest as run_backtest
    from stream.backtest import fresh_key_prefix
    from stream.report import staged_folder, write_report
    from stream.runtime import tune_interpreter
    from stream.sources import SourceError

    overrides: dict[str, object] = {}
    if features is not None:
        overrides["features"] = {"mode": features}
    fresh = redis is not None and key_prefix is None
    if redis is not None:
        overrides["store"] = {"key_prefix": key_prefix or fresh_key_prefix()}
    elif key_prefix is not None:
        console.print("[yellow]--key-prefix is for --redis; the state stays in memory")
    tune_interpreter()
    settings = settings_or_exit(config, **overrides)
    if redis is not None:
        prefix = settings.store.key_prefix
        what = "deleted at the end" if fresh and not keep_state else "kept"
        console.print(
            f"backtest state in {escape(mask_url(redis))} under key prefix {prefix!r} ({what})"
        )
        live = load_settings_quietly(config)
        if live is not None and prefix == live.store.key_prefix:
            console.print(
                f"[yellow]{prefix!r} is the live workers' store.key_prefix: the backtest sees"
                " their events as duplicates and changes their interaction state"
            )
    specs = model or [settings.model.spec]
    try:
        with staged_folder(report) as staging:
            with (
                (staging / "predictions.jsonl").open("wb") as predictions,
                (staging / "dead_letters.jsonl").open("wb") as dead_letters,
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
                finally:
                    if fresh and not keep_state:
                        _clear_backtest_state(redis, settings)
            summary = write_report(result, staging)
    except SourceError as error:
        console.print(f"[red]cannot read the file:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
    except RedisError as error:
        console.print(
            f"[red]Redis at {escape(mask_url(redis or ''))}:[/red] {escape(mask_url(str(error)))};"
            " the previous"
            " report is left as it was"
        )
        raise typer.Exit(1) from None
    except ValueError as error:
        console.print(f"[red]cannot run the backtest:[/red] {escape(str(error))}")
        raise typer.Exit(2) from None
    except OSError as error:
        console.print(f"[red]cannot write the report to {report}:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
    console.print(summary)
    console.print(f"report in {report}")


@app.command("rank-eval")
def rank_eval(
    config: ConfigOption = None,
    events: Annotated[int, typer.Option(min=100, help="Synthetic events to train on.")] = 20_000,
    requests: Annotated[int, typer.Option(min=1, help="Feed requests to rank.")] = 500,
    candidates: Annotated[int, typer.Option(min=2, help="Candidates per feed.")] = 100,
    seed: int = 42,
    model: Annotated[str | None, typer.Option(help="Preset or module:function.")] = None,
    report: Annotated[Path, typer.Option(help="Folder for the report.")] = Path(
        "reports/rank-eval"
    ),
) -> None:
    """Rank synthetic feeds by the model, by popularity and at random: NDCG@10, MRR, hit@10.

    The model learns the synthetic stream through the worker's code, then ranks feed
    requests as ``POST /rank`` would; ``summary.json`` and ``report.md`` go to ``--report``.
    """
    from stream.ranking import RANKERS, write_report
    from stream.ranking import rank_eval as run_rank_eval
    from stream.synthetic import WorldConfig

    overrides = {"model": {"spec": model}} if model else {}
    settings = settings_or_exit(config, **overrides)
    with progress() as bar:
        bar.add_task(f"rank-eval: {events:,} events, {requests} feeds", total=None)
        result = run_rank_eval(
            settings, WorldConfig(events=events, seed=seed), requests, candidates
        )
    summary = write_report(result, report)
    table = Table("ranker", "NDCG@10", "MRR", "hit rate@10")
    for name in RANKERS:
        values = summary["metrics"][name]
        table.add_row(
            name, f"{values['ndcg@10']:.4f}", f"{values['mrr']:.4f}", f"{values['hit_rate@10']:.4f}"
        )
    console.print(table)
    console.print(f"report: {report / 'report.md'}")


def load_settings_quietly(path: Path | None) -> Settings | None:
    """The settings without overrides (the live workers'), or None if they do not load."""
    try:
        return load_settings(path)
    except ConfigError:
        return None


def _clear_backtest_state(redis_url: str | None, settings: Settings) -> None:
    """Delete the backtest's keys; a Redis that is away only gets a message."""
    import redis as redis_client

    from stream.backtest import clear_state

    if redis_url is None:
        return
    prefix = settings.store.key_prefix
    try:
        client = redis_client.Redis.from_url(redis_url, **settings.redis.client_options())
        deleted = clear_state(client, prefix)
    except redis_client.RedisError as error:
        console.print(
            f"[yellow]the backtest's keys under {prefix!r} were not deleted"
            f" ({escape(mask_url(str(error)))}); delete them with: redis-cli -u"
            f" {escape(mask_url(redis_url))} --scan --pattern '{prefix}:*'"
            f" | xargs redis-cli -u {escape(mask_url(redis_url))} unlink"
        )
        return
    console.print(f"deleted the backtest's {deleted} keys under {prefix!r}")


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
    max_gap: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Longest wall-time wait, in seconds, for one gap in event time; longer gaps"
            " are shortened to it (with --speed other than max).",
        ),
    ] = 60.0,
    config: ConfigOption = None,
) -> None:
    """Replay a historical file into Kafka in event-time order, at a chosen speed."""
    from kafka.errors import KafkaError

    from stream.edge import EdgeError
    from stream.replay import gap_notice, parse_speed, parse_time, plan_replay
    from stream.replay import replay as run_replay
    from stream.sources import SourceError

    settings = settings_or_exit(config)
    try:
        factor = parse_speed(speed)
        since_ms = parse_time(since) if since is not None else None
        until_ms = parse_time(until) if until is not None else None
    except ValueError as error:
        console.print(f"[red]cannot replay:[/red] {error}")
        raise typer.Exit(2) from None
    try:
        with console.status(f"reading and ordering {file.name}"):
            plan = plan_replay(file, labels, since_ms, until_ms)
    except SourceError as error:
        console.print(f"[red]cannot replay:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
    notice = gap_notice([line.time_ms for line in plan.lines], factor, max_gap)
    if notice is not None:
        console.print(f"[yellow]{escape(notice)}")
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
                max_gap_s=max_gap,
            )
    except (KafkaError, EdgeError) as error:
        console.print(
            f"Kafka at {mask_url(settings.kafka.bootstrap_servers)}: {mask_url(repr(error))}",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
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
