"""What every command shares: the ``--config`` option, settings or a clear exit, logging.

Examples
--------
>>> settings_or_exit(None).kafka.topics.events
'events'
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType
from typing import Annotated

import typer

from streamlearn.stream.config import (
    ConfigError,
    MaskingFormatter,
    Settings,
    load_settings,
    mask_url,
)
from streamlearn.stream.ui import console

__all__ = [
    "ConfigOption",
    "HistoryArgument",
    "ReportOption",
    "configure_logging",
    "load_settings_quietly",
    "settings_or_exit",
]

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="STREAMLEARN_CONFIG", help="YAML config file."),
]
#: A historical file of events (and labels) to read, which must exist.
HistoryArgument = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, help="JSONL, CSV, Parquet")
]
#: The folder a command writes its report to (each command gives its own default).
ReportOption = Annotated[Path, typer.Option(help="Folder for the report.")]


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


def configure_logging(verbose: bool) -> None:
    """Log lines, and the traceback of a crash, with the passwords of URLs masked."""
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    sys.excepthook = _masked_excepthook
    threading.excepthook = _masked_thread_excepthook
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)


def load_settings_quietly(path: Path | None) -> Settings | None:
    """The settings without overrides (the live workers'), or None if they do not load."""
    try:
        return load_settings(path)
    except ConfigError:
        return None
