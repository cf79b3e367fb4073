"""The ``streamlearn`` command: one entry point for every user task.

The commands live in one module per group (:mod:`cli`); this module mounts them.

Examples
--------
>>> from typer.testing import CliRunner
>>> result = CliRunner().invoke(app, ["--help"])
>>> result.exit_code, "backtest" in result.output and "metrics" in result.output
(0, True)
"""

from __future__ import annotations

import typer

from streamlearn.cli.alerts import alerts_app
from streamlearn.cli.experiment import experiment_app
from streamlearn.cli.forget import forget
from streamlearn.cli.metrics import metrics_app
from streamlearn.cli.model import model_app
from streamlearn.cli.offline import backtest, dataset, generate, rank_eval, replay
from streamlearn.cli.retrain import train
from streamlearn.cli.serve import serve
from streamlearn.cli.stack import demo, stack_app
from streamlearn.cli.worker import config, produce, run

__all__ = ["app", "main"]

app = typer.Typer(
    help="Real-time scoring and online learning: Kafka in, features in Redis, River models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack_app, name="stack")
model_app.command()(train)
app.add_typer(model_app, name="model")
app.add_typer(alerts_app, name="alerts")
app.add_typer(metrics_app, name="metrics")
app.add_typer(experiment_app, name="experiment")

app.command()(config)
app.command()(run)
app.command()(serve)
app.command()(produce)
app.command()(generate)
app.command()(backtest)
app.command("rank-eval")(rank_eval)
app.command("dataset")(dataset)
app.command()(replay)
app.command()(demo)
app.command()(forget)


def main() -> None:
    """Run the ``streamlearn`` command."""
    app()


if __name__ == "__main__":
    main()
