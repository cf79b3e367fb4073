"""``streamlearn serve``: the HTTP scoring and ranking API."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from streamlearn.cli.common import ConfigOption, configure_logging, settings_or_exit
from streamlearn.stream.ui import console

__all__ = ["serve"]


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
    from streamlearn.stream.serve_app import run_server

    configure_logging(verbose)
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
