"""``stack`` commands: start, stop and inspect the local stack (:mod:`stack`), and
``demo``, the main job end to end on it.

Mounted by the main CLI as ``streamlearn stack ...`` (and ``streamlearn demo``); also
runnable on its own with ``python -m streamlearn.cli.stack up``.

Examples
--------
>>> parse_topics(["events:6,labels:6", "dead-letter"])
{'events': 6, 'labels': 6, 'dead-letter': 1}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from streamlearn.cli.common import configure_logging
from streamlearn.stack import Stack, StackConfig, StackError, default_root
from streamlearn.stream.ui import console

__all__ = [
    "CONFIG_RULES_FILE",
    "demo",
    "parse_topics",
    "stack_app",
    "status_table",
    "write_config_rules",
]

#: The rule file the stack writes from a configuration's thresholds.
CONFIG_RULES_FILE = "streamlearn-alerts.yml"

stack_app = typer.Typer(
    name="stack",
    help="Run Kafka, Redis, Prometheus and Alertmanager as local processes (no Docker).",
    no_args_is_help=True,
)
_console = Console()

RootOption = Annotated[
    Path | None,
    typer.Option("--root", help="Stack folder: configs, data, logs, pid files. (default .stack/)"),
]


def parse_topics(specs: list[str]) -> dict[str, int]:
    """Parse ``NAME[:PARTITIONS]`` items, comma separated or repeated, into a mapping.

    Raises
    ------
    typer.BadParameter
        On an empty name or a partition count that is not a positive integer.
    """
    topics: dict[str, int] = {}
    for spec in specs:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, count = item.partition(":")
            if not name or (count and not (count.isdigit() and int(count) > 0)):
                raise typer.BadParameter(f"expected NAME[:PARTITIONS], got {item!r}")
            topics[name] = int(count or 1)
    return topics


def status_table(stack: Stack) -> Table:
    """Build the rich table of :meth:`Stack.status`."""
    root = stack.config.root
    table = Table(title="streamlearn stack", caption=f"logs and data under {root}")
    for column in ("service", "pid", "port", "state", "address"):
        table.add_column(column)
    colour = {"up": "green", "starting": "yellow", "down": "red"}
    for row in stack.status():
        table.add_row(
            row.service,
            str(row.pid or "-"),
            str(row.port),
            f"[{colour[row.state]}]{row.state}[/]",
            row.url,
        )
    return table


def write_config_rules(rules_dir: Path, config_file: Path) -> bool:
    """Write the alert rules for the thresholds of streamlearn config ``config_file``.

    Returns whether the rule file changed. Raises ValueError when the config is invalid.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "c.yaml").write_text("monitoring: {thresholds: {psi_critical: 0.3}}")
    >>> write_config_rules(folder / "rules", folder / "c.yaml")
    True
    >>> "streamlearn_prediction_psi > 0.3" in (folder / "rules" / CONFIG_RULES_FILE).read_text()
    True
    >>> write_config_rules(folder / "rules", folder / "c.yaml")
    False
    """
    from streamlearn.cli.metrics import load_thresholds
    from streamlearn.metrics.alert_files import rules_yaml

    text = rules_yaml(load_thresholds(config_file))
    path = rules_dir / CONFIG_RULES_FILE
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    rules_dir.mkdir(parents=True, exist_ok=True)
    tmp = rules_dir / f".{CONFIG_RULES_FILE}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return True


def _load(root: Path | None, overrides: dict[str, Any]) -> StackConfig:
    """Config saved by the last ``up`` under root (if any), with the given options on top."""
    base = Stack.from_root(root or default_root()).config
    given = {k: v for k, v in overrides.items() if v is not None}
    return StackConfig.model_validate({**base.model_dump(), **given})


@stack_app.command()
def up(
    root: RootOption = None,
    kafka_port: Annotated[
        int | None, typer.Option(help="Kafka broker port. (default 9092)")
    ] = None,
    controller_port: Annotated[
        int | None, typer.Option(help="KRaft controller port. (default 9093)")
    ] = None,
    kafka_brokers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=9,
            help="Kafka nodes; 3 or more give topics 3 replicas and min.insync.replicas=2,"
            " node n on the ports 100·(n-1) above the first. (default 1)",
        ),
    ] = None,
    redis_port: Annotated[int | None, typer.Option(help="Redis port. (default 6390)")] = None,
    prometheus_port: Annotated[
        int | None, typer.Option(help="Prometheus port. (default 9090)")
    ] = None,
    alertmanager_port: Annotated[
        int | None, typer.Option(help="Alertmanager port. (default 9094)")
    ] = None,
    alerts_port: Annotated[
        int | None,
        typer.Option(help="Port of the alert receiver Alertmanager notifies. (default 9095)"),
    ] = None,
    appendonly: Annotated[
        bool | None, typer.Option("--appendonly/--no-appendonly", help="Redis AOF persistence.")
    ] = None,
    redis_cluster: Annotated[
        int | None,
        typer.Option(
            help="Also start a Redis Cluster of N masters, each with a replica"
            " (ports 7000+, bus 17000+). (default 0: none)"
        ),
    ] = None,
    alertmanager: Annotated[
        bool,
        typer.Option(
            help="Also start Alertmanager and the alert receiver it notifies"
            " (`streamlearn alerts list --log ROOT/alerts/alerts.jsonl` shows the alerts)."
        ),
    ] = False,
    topics: Annotated[
        list[str] | None,
        typer.Option("--topics", help="Topics to create, NAME[:PARTITIONS], comma separated."),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="Worker metrics endpoint host:port to scrape."),
    ] = None,
    scrape_interval: Annotated[
        str | None, typer.Option(help="Prometheus scrape/evaluation interval. (default 5s)")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for each service. (default 120)")
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="streamlearn YAML config: Prometheus gets alert rules generated from its"
            " monitoring.thresholds (under ROOT/prometheus/rules) instead of the committed ones.",
        ),
    ] = None,
) -> None:
    """Start the stack (reusing services already running from the same root)."""
    from kafka.errors import KafkaError

    from streamlearn.stream.config import KafkaConfig
    from streamlearn.stream.topics import ensure_topics

    wanted_topics = parse_topics(topics or [])
    try:
        config = _load(
            root,
            {
                "kafka_port": kafka_port,
                "kafka_controller_port": controller_port,
                "kafka_brokers": kafka_brokers,
                "redis_port": redis_port,
                "prometheus_port": prometheus_port,
                "alertmanager_port": alertmanager_port,
                "alerts_port": alerts_port,
                "redis_appendonly": appendonly,
                "redis_cluster": redis_cluster,
                "scrape_interval": scrape_interval,
                "evaluation_interval": scrape_interval,
                "scrape_targets": tuple(target) if target else None,
                "startup_timeout": timeout,
            },
        )
        rules_changed = False
        if config_file is not None:
            rules_dir = config.root / "prometheus" / "rules"
            rules_changed = write_config_rules(rules_dir, config_file)
            config = config.model_copy(update={"rules_dir": rules_dir})
        with _console.status("starting the stack") as spinner:
            stack = Stack(config, reporter=lambda msg: spinner.update(msg))
            stack.up(alertmanager=alertmanager)
            if rules_changed:
                stack.reload_prometheus()
            if wanted_topics:
                spinner.update(f"creating topics {', '.join(wanted_topics)}")
                ensure_topics(KafkaConfig(bootstrap_servers=config.kafka_bootstrap), wanted_topics)
    except (StackError, KafkaError, ValueError) as exc:
        _console.print(f"[red]stack up failed:[/] {exc}")
        raise typer.Exit(1) from exc
    _console.print(status_table(stack))
    if wanted_topics:
        _console.print("topics: " + ", ".join(f"{n} ({p})" for n, p in wanted_topics.items()))


@stack_app.command()
def down(root: RootOption = None) -> None:
    """Stop the processes started by "up" from this root (by their pid files)."""
    stack = Stack.from_root(root, reporter=_console.print)
    try:
        stopped = stack.down()
    except StackError as exc:
        _console.print(f"[red]stack down failed:[/] {exc}")
        raise typer.Exit(1) from exc
    _console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command()
def status(root: RootOption = None) -> None:
    """Show each service's pid, port and state; exit 1 when a started service is not up."""
    stack = Stack.from_root(root)
    _console.print(status_table(stack))
    if any(row.state == "starting" for row in stack.status()):
        raise typer.Exit(1)


def demo(
    events: Annotated[int, typer.Option(min=100, help="Synthetic events to stream.")] = 20_000,
    root: Annotated[Path | None, typer.Option(help="Stack folder (default .stack/).")] = None,
    metrics_port: Annotated[int, typer.Option(help="The worker's /metrics port.")] = 9108,
    report: Annotated[Path, typer.Option(help="Where backtest reports go.")] = Path("reports/demo"),
) -> None:
    """The main job end to end: local stack, a synthetic stream, a worker, a report."""
    from streamlearn.stack.demo import run_demo

    configure_logging(False)
    try:
        result = run_demo(events, root, metrics_port, report)
    except StackError as error:
        console.print(f"[red]the local stack did not start[/red]\n{error}")
        raise typer.Exit(1) from None
    console.print(result.table())


if __name__ == "__main__":
    stack_app()
