"""``alerts`` commands: receive Alertmanager's notifications and list them.

Mounted by the main CLI as ``streamlearn alerts ...``.

Examples
--------
>>> from typer.testing import CliRunner
>>> result = CliRunner().invoke(alerts_app, ["list", "--log", "/nonexistent/alerts.jsonl"])
>>> result.exit_code, "no alerts" in result.output
(0, True)
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streamlearn.stack.alert_receiver import (
    DEFAULT_HOST,
    DEFAULT_LOG,
    DEFAULT_PORT,
    AlertLog,
    AlertReceiver,
    parse_since,
)

__all__ = ["alerts_app", "alerts_table"]

alerts_app = typer.Typer(
    name="alerts",
    help="Receive Alertmanager's notifications (a webhook receiver) and list them.",
    no_args_is_help=True,
)
_console = Console()

LogOption = Annotated[
    Path,
    typer.Option("--log", help="JSON-lines file of received alerts (rotated at --max-bytes)."),
]


@alerts_app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = DEFAULT_PORT,
    log: LogOption = DEFAULT_LOG,
    max_bytes: Annotated[
        int, typer.Option(help="Rotate the log when it would pass this size.", min=256)
    ] = 10 * 1024 * 1024,
    backups: Annotated[int, typer.Option(help="Rotated files kept.", min=0, max=100)] = 3,
) -> None:
    """Accept Alertmanager webhook notifications at POST /alerts and log each alert."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        receiver = AlertReceiver(
            AlertLog(log, max_bytes=max_bytes, backups=backups), host=host, port=port
        )
    except OSError as exc:
        _console.print(f"[red]cannot listen on {host}:{port}:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    logging.getLogger("streamlearn.alerts").info(
        "receiving alerts at http://%s:%d/alerts, logging them to %s", host, receiver.port, log
    )
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.server.server_close()


def alerts_table(records: list[dict[str, Any]]) -> Table:
    """The rich table of logged alerts."""
    table = Table(title="alerts received")
    for column in ("received", "status", "alert", "severity", "instance", "summary"):
        table.add_column(column)
    colour = {"firing": "red", "resolved": "green"}
    for r in records:
        labels = r.get("labels") or {}
        status = str(r.get("status", "?"))
        table.add_row(
            escape(str(r.get("received", ""))),
            f"[{colour.get(status, 'white')}]{escape(status)}[/]",
            escape(str(labels.get("alertname", ""))),
            escape(str(labels.get("severity", ""))),
            escape(str(labels.get("instance", ""))),
            escape(str((r.get("annotations") or {}).get("summary", ""))),
        )
    return table


@alerts_app.command("list")
def list_alerts(
    log: LogOption = DEFAULT_LOG,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    since: Annotated[
        str | None,
        typer.Option(help="Only alerts received since: a duration (30m, 2h, 7d) or ISO time."),
    ] = None,
) -> None:
    """Print the alerts the receiver logged, oldest first."""
    try:
        cutoff = parse_since(since) if since is not None else None
    except ValueError as exc:
        _console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from None
    records = list(AlertLog(log).read(cutoff))
    if as_json:
        for record in records:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    if not records:
        _console.print(f"no alerts in {escape(str(log))}")
        return
    _console.print(alerts_table(records))
