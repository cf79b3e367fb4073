"""Helpers for pipeline tests on the real stack: waiting, assertions, a worker's exit.

What the benchmarks use too (settings in a namespace, producing, draining topics,
workers in threads and processes) is :mod:`stream.harness`.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from streamlearn.features.schema import is_event_record
from streamlearn.stream.config import Settings
from streamlearn.stream.harness import drain

__all__ = ["assert_every_event_scored", "exit_code", "wait_for", "worker_state"]


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    every: float = 0.2,
    explain: Callable[[], str] | None = None,
) -> Any:
    """``predicate``'s first true value, polled every ``every`` seconds for up to ``timeout``.

    On a timeout the failure carries ``explain()``, e.g. the state of the process waited on.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    detail = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


def assert_every_event_scored(
    bootstrap: str, settings: Settings, records: Iterable[dict[str, Any]], once: bool
) -> None:
    """Every event has a committed prediction; exactly one when ``once`` (transactions)."""
    events = {r["event_id"] for r in records if is_event_record(r)}
    per_event = Counter(r.key.decode() for r in drain(bootstrap, settings.kafka.topics.predictions))
    missing = sorted(events - set(per_event))
    unknown = sorted(set(per_event) - events)
    assert not missing and not unknown, (
        f"{len(missing)} events without a prediction (first {missing[:10]}), "
        f"{len(unknown)} predictions of no event (first {unknown[:10]})"
    )
    if once:
        assert set(per_event.values()) == {1}, "each event_id once among committed predictions"


def exit_code(process: subprocess.Popen, log: Path, timeout_s: float) -> int:
    """The worker's exit code; if it is still running after ``timeout_s``, fail with its stacks.

    The worker prints every thread's stack on SIGUSR1, so a hang shows where it waits.
    """
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        state = worker_state(process, log)
        process.kill()
        process.wait(timeout=30)
        raise AssertionError(f"the worker still ran after {timeout_s:.0f}s; {state}") from None


def worker_state(process: subprocess.Popen, log: Path) -> str:
    """How the worker exited, or every thread's stack if it runs, and the end of its log."""
    if process.poll() is None:
        process.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        state = "it runs (its threads' stacks are in its log)"
    else:
        state = f"it exited with code {process.returncode}"
    return f"{state}; its log ends with\n" + log.read_text(errors="replace")[-12000:]
