"""Offline commands: ``generate`` a synthetic world, ``replay`` a file into Kafka,
``backtest`` models over it in-process, ``rank-eval`` rankers, export a ``dataset``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from streamlearn.cli.common import (
    ConfigOption,
    HistoryArgument,
    ReportOption,
    load_settings_quietly,
    settings_or_exit,
)
from streamlearn.stream.config import ExperimentSettings, Settings, mask_url
from streamlearn.stream.ui import console, progress

__all__ = ["backtest", "dataset", "generate", "rank_eval", "replay"]


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
    from streamlearn.stream.synthetic import WorldConfig, generate_world

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


def backtest(
    file: HistoryArgument,
    config: ConfigOption = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="Preset or package.module:function, or NAME=SPEC; repeat to compare models"
            " (with --experiment the first is the control)."
        ),
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
    redis_cluster: Annotated[
        bool,
        typer.Option(
            "--redis-cluster",
            help="The --redis URL is a node of a Redis Cluster: the state shards over it.",
        ),
    ] = False,
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
    report: ReportOption = Path("reports/backtest"),
    feedback: Annotated[
        str,
        typer.Option(
            help="none, or filter: the labels of events the champion blocks are withheld (the"
            " feedback loop); the report compares recall without and with a holdout."
        ),
    ] = "none",
    experiment: Annotated[
        str | None,
        typer.Option(
            help="ab or shadow: the models are an experiment's arms (the first the control),"
            " decided as the worker decides; settings from the config's experiment section."
        ),
    ] = None,
    share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="With --experiment ab: the treatments' share."),
    ] = 0.1,
    primary: Annotated[
        str | None,
        typer.Option(
            help="log_loss (default: in a replay the outcome does not depend on the served"
            " score), brier or positive_rate."
        ),
    ] = None,
    rollback_drop: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=0.99,
            help="Keep a frozen last-known-good copy of the first model in shadow and roll"
            " back to it when the live model is this much worse (relative log loss).",
        ),
    ] = None,
    rollback_refresh: Annotated[
        int,
        typer.Option(min=1, help="Labels between refreshes of the last-known-good copy."),
    ] = 5000,
) -> None:
    """Run models over a historical file in-process, in event time, and write a report.

    The report is written beside ``--report`` and renamed into place once complete:
    an interrupted backtest leaves the previous report as it was. With ``--experiment``
    the models are an experiment's arms and ``summary.json`` has its ``experiment``: per
    arm events, labels, primary metric and interval, and every decision.
    """
    from redis.exceptions import RedisError

    from streamlearn.stream.backtest import backtest as run_backtest
    from streamlearn.stream.backtest import fresh_key_prefix
    from streamlearn.stream.report import staged_folder, write_report
    from streamlearn.stream.runtime import tune_interpreter
    from streamlearn.stream.sources import SourceError

    overrides: dict[str, object] = {}
    if features is not None:
        overrides["features"] = {"mode": features}
    fresh = redis is not None and key_prefix is None
    if redis is not None:
        overrides["store"] = {"key_prefix": key_prefix or fresh_key_prefix()}
        if redis_cluster:
            overrides["redis"] = {"cluster": True}
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
        arms = experiment_settings(settings, specs, experiment, share, primary)
        rollback = None
        if rollback_drop is not None:
            from streamlearn.learners.rollback import RollbackConfig

            rollback = RollbackConfig(drop=rollback_drop)
    except ValueError as error:
        console.print(f"[red]cannot run the backtest:[/red] {escape(str(error))}")
        raise typer.Exit(2) from None
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
                        feedback=feedback,
                        experiment=arms,
                        rollback=rollback,
                        rollback_refresh_every=rollback_refresh,
                    )
                finally:
                    if fresh and not keep_state:
                        _clear_backtest_state(redis, settings)
            summary = write_report(result, staging)
            if feedback == "filter":
                _feedback_comparison(file, settings, specs[0], label_delay, staging)
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


def experiment_settings(
    settings: Settings,
    specs: list[str],
    mode: str | None,
    share: float,
    primary: str | None,
) -> ExperimentSettings | None:
    """The backtest's experiment: the config's ``experiment`` section (or its defaults)
    with the models as arms, the first the control at ``1 - share``, the others
    sharing ``share``; ``log_loss`` as primary metric unless told.

    >>> experiment_settings(Settings(), ["a=logistic", "b=logistic"], "ab", 0.1, None).arms
    {'a': 0.9, 'b': 0.1}
    """
    if mode is None:
        if primary is not None:
            raise ValueError("--primary is for --experiment")
        return None
    from streamlearn.stream.backtest import named_specs

    names = [name for name, _ in named_specs(specs)]
    if len(names) < 2:
        raise ValueError("an experiment needs two models or more: --model NAME=SPEC, twice")
    if mode == "ab" and not 0 < share < 1:
        raise ValueError(f"--share must be between 0 and 1 in an ab experiment, got {share}")
    arms = {names[0]: 1.0 - share} | {name: share / (len(names) - 1) for name in names[1:]}
    base = settings.experiment or ExperimentSettings()
    update = {"mode": mode, "arms": arms, "primary": primary or "log_loss"}
    try:
        return ExperimentSettings.model_validate(base.model_dump() | update)
    except ValidationError as error:
        problems = "; ".join(str(e["msg"]) for e in error.errors())
        raise ValueError(f"the experiment: {problems}") from None


def rank_eval(
    config: ConfigOption = None,
    events: Annotated[int, typer.Option(min=100, help="Synthetic events to train on.")] = 20_000,
    requests: Annotated[int, typer.Option(min=1, help="Feed requests to rank.")] = 500,
    candidates: Annotated[int, typer.Option(min=2, help="Candidates per feed.")] = 100,
    seed: int = 42,
    model: Annotated[str | None, typer.Option(help="Preset or module:function.")] = None,
    report: ReportOption = Path("reports/rank-eval"),
) -> None:
    """Rank synthetic feeds by the model, by popularity and at random: NDCG@10, MRR, hit@10.

    The model learns the synthetic stream through the worker's code, then ranks feed
    requests as ``POST /rank`` would; ``summary.json`` and ``report.md`` go to ``--report``.
    """
    from streamlearn.stream.ranking import RANKERS, write_report
    from streamlearn.stream.ranking import rank_eval as run_rank_eval
    from streamlearn.stream.synthetic import WorldConfig

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


def _feedback_comparison(
    file: Path, settings: Settings, model: str, label_delay: float | None, folder: Path
) -> None:
    """Recall without and with a holdout under the feedback loop, into the report."""
    import json

    from streamlearn.stream.feedback_report import compare_feedback, write_feedback

    with progress() as bar:
        bar.add_task("feedback comparison (3 runs)", total=None)
        comparison = compare_feedback(file, settings, model, label_delay)
    plot = write_feedback(comparison, folder)
    path = folder / "summary.json"
    summary = json.loads(path.read_text())
    summary["feedback_comparison"] = comparison
    path.write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["", "## Feedback loop: recall on the unfiltered truth", ""]
    for arm, figures in comparison["arms"].items():
        recall = figures["recall"]
        shown = f"{recall:.3f}" if recall is not None else "n/a"
        lines.append(f"- {arm}: recall {shown}, labels withheld {figures['labels_dropped']}")
    lines += ["", f"![feedback]({plot})", ""]
    with (folder / "report.md").open("a") as report_md:
        report_md.write("\n".join(lines))
    for arm, figures in comparison["arms"].items():
        console.print(f"feedback {arm}: recall {figures['recall']}")


def _clear_backtest_state(redis_url: str | None, settings: Settings) -> None:
    """Delete the backtest's keys; a Redis that is away only gets a message."""
    import redis as redis_client

    from streamlearn.features.cluster_store import store_client
    from streamlearn.stream.backtest import clear_state

    if redis_url is None:
        return
    prefix = settings.store.key_prefix
    try:
        options = settings.redis.client_options()
        client = store_client(redis_url, settings.redis.cluster, **options)
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


def dataset(
    action: Annotated[str, typer.Argument(help="export, or list")],
    name: Annotated[str | None, typer.Argument(help="Data set name (see `dataset list`).")] = None,
    file: Annotated[Path | None, typer.Argument(help="Where to write the JSON lines.")] = None,
    seed: int = 42,
    limit: Annotated[int | None, typer.Option(min=1, help="Samples to export.")] = None,
) -> None:
    """List River's bundled data sets and generators, or export one as an event file."""
    from streamlearn.stream.datasets import DATASETS, dataset_events

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


def replay(
    file: HistoryArgument,
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

    from streamlearn.stream.edge import EdgeError
    from streamlearn.stream.replay import gap_notice, parse_speed, parse_time, plan_replay
    from streamlearn.stream.replay import replay as run_replay
    from streamlearn.stream.sources import SourceError

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
