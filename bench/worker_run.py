"""One benchmark worker process: the project's :class:`stream.worker.Worker`, timed.

The worker joins its group, then holds at a start barrier (its partitions
paused) until the parent creates ``CONTROL/go``, so group joins and
rebalances stay out of the measurement and several workers start together.
It stops by itself: at the end offsets its partitions had at the start
(``--until-end``, for records produced beforehand) or after ``--idle``
seconds without records (for a live producer). It writes
``CONTROL/<name>.done`` at its last commit and ``CONTROL/<name>.json`` with
its timings, CPU time and RSS.

Usage: ``python -m bench.worker_run --config W.yaml --control DIR --name worker-0 --until-end``.
Checkpoints are on when ``STREAMLEARN_MODEL_KEY`` is set, as for ``streamlearn run``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from streamlearn.features.store import BatchOutcome
from streamlearn.learners.registry import KEY_ENV, signing_key_from_env
from streamlearn.stream.config import MaskingFormatter, Settings, load_settings
from streamlearn.stream.processor import BatchOutput, Prediction, PreparedBatch, Record
from streamlearn.stream.worker import Worker

__all__ = ["BenchWorker", "cpu_seconds", "main"]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class BenchWorker(Worker):
    """A worker with a start barrier, a stop rule and timers around its stages."""

    def __init__(
        self,
        settings: Settings,
        control: Path,
        name: str,
        signing_key: bytes | None,
        until_end: bool,
        idle_s: float,
    ) -> None:
        super().__init__(settings, name=name, signing_key=signing_key)
        self.control = control
        self.until_end = until_end
        self.idle_s = idle_s
        self.go_at: float | None = None
        self.first_records_at: float | None = None
        self.last_records_at: float | None = None
        self.last_commit_at: float | None = None
        self.cpu_at_go = self.cpu_at_end = 0.0
        self.rss_mb: dict[str, float] = {}
        self.ends: dict[tuple[str, int], int] = {}
        self.rebalances_after_go = 0
        self.rejoins = 0
        self.stage_s: dict[str, float] = defaultdict(float)
        finish = self.processor.finish

        def timed_finish(
            batch: PreparedBatch,
            result: BatchOutcome,
            emit: Callable[[Prediction], None] | None = None,
        ) -> BatchOutput:
            t0 = time.perf_counter()
            out = finish(batch, result, emit)
            sent = getattr(emit, "seconds", 0.0)  # the predictions it published meanwhile
            self.stage_s["finish"] += time.perf_counter() - t0 - sent
            self.stage_s["publish"] += sent
            for stage, seconds in out.stage_seconds.items():
                self.stage_s[stage] += seconds
            return out

        self.processor.finish = timed_finish  # type: ignore[method-assign]

    # ------------------------------------------------------------------ barrier

    def _hold(self) -> list[Record]:
        """Stay in the group without consuming; release when the parent says go."""
        source = self.source
        assert source is not None
        source.pause_assigned()
        source.rejoin_when_unassigned()
        source.poll_held()
        assigned = source.assigned()
        _write_json(
            self.control / f"{self.name}.assigned",
            {"partitions": sorted(f"{topic}:{partition}" for topic, partition in assigned)},
        )
        if assigned and (self.control / "go").exists():
            self.go_at = time.time()
            self.rejoins = source.rejoins
            self.cpu_at_go = cpu_seconds()
            self.rss_mb["start"] = _rss_mb()
            # Resumed before the end offsets are asked: librdkafka's broker thread looks at
            # its fetch list again only on its 1 s timer or when it has a request to send, so
            # a resume alone left the first fetch 1.0-1.1 s after the release.
            source.resume_assigned()
            if self.until_end:
                self.ends = source.end_offsets()
        return []

    def _at_end(self) -> bool:
        source = self.source
        assert source is not None
        if source.assigned() != set(self.ends):
            self.rebalances_after_go += 1
            self.ends = source.end_offsets()
        positions = source.positions()
        return all(positions.get(tp, -1) >= end for tp, end in self.ends.items())

    def _connect(self) -> None:
        super()._connect()
        assert self.source is not None
        poll = self.source.next_batch

        def next_batch(timeout_ms: int | None = None) -> list[Record]:
            if self.go_at is None:
                return self._hold()
            records = poll(timeout_ms)
            now = time.time()
            if records:
                self.last_records_at = now
                if self.first_records_at is None:
                    self.first_records_at = now
                if self.until_end and self._at_end():
                    self.stop()
            elif (
                not self.until_end
                and self.last_records_at is not None
                and now - self.last_records_at >= self.idle_s
            ):
                self.stop()
            return records

        self.source.next_batch = next_batch  # type: ignore[method-assign]

    # ------------------------------------------------------------------ timers

    def _publish(self, out: BatchOutput, send: Callable[[Prediction], None] | None) -> None:
        t0 = time.perf_counter()
        super()._publish(out, send)
        self.stage_s["publish"] += time.perf_counter() - t0

    def checkpoint(self) -> None:
        pending = bool(self._uncommitted)
        t0 = time.perf_counter()
        super().checkpoint()
        self.stage_s["commit"] += time.perf_counter() - t0
        if pending and self.go_at is not None:
            self.last_commit_at = time.time()
            self.cpu_at_end = cpu_seconds()
            if self._stop.is_set():
                self.rss_mb["end"] = _rss_mb()
                (self.control / f"{self.name}.done").write_text(str(self.last_commit_at))

    def report(self) -> dict[str, Any]:
        summary = self.summary
        return {
            "name": self.name,
            "go_at": self.go_at,
            "first_records_at": self.first_records_at,
            "last_records_at": self.last_records_at,
            "last_commit_at": self.last_commit_at,
            "events": self.processor.events_seen,
            "records": summary.records,
            "predictions": summary.predictions,
            "labels_learned": summary.labels_learned,
            "checkpoints": summary.checkpoints,
            "batches": summary.batches,
            "dead_letters": summary.dead_letters,
            "cpu_s": self.cpu_at_end - self.cpu_at_go if self.cpu_at_end else None,
            "rss_mb": self.rss_mb,
            "stage_s": {k: round(v, 4) for k, v in self.stage_s.items()},
            "rebalances_after_go": self.rebalances_after_go,
            "rejoins_before_go": self.rejoins,
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--control", type=Path, required=True)
    parser.add_argument("--name", default="worker-0")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--until-end", action="store_true", help="stop at the start's end offsets")
    mode.add_argument("--idle", type=float, help="stop after this many seconds without records")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    settings = load_settings(args.config)
    key = signing_key_from_env() if os.environ.get(KEY_ENV) else None
    worker = BenchWorker(settings, args.control, args.name, key, args.until_end, args.idle or 0.0)
    worker.run()
    if "end" not in worker.rss_mb:
        worker.rss_mb["end"] = _rss_mb()
    _write_json(args.control / f"{args.name}.json", worker.report())


if __name__ == "__main__":
    main()
