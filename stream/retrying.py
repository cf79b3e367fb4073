"""Waiting for a dependency: retries with backoff, and a store that waits for Redis.

Every Redis call of the worker goes through :func:`retrying` (the store's
through :class:`RetryingStore`): Redis being away pauses the worker, never
ends it; a stop request ends the wait, refused credentials end the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import redis

from streamlearn.features.store import BatchOutcome, EventOp, InteractionStore, LabelOp
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.stream.config import mask_url
from streamlearn.stream.waits import Outage, Refused, StopFlag, Stopped, redis_refusal

__all__ = ["REDIS_ERRORS", "RedisWaits", "RetryingStore", "backoff_delays", "retrying"]

log = logging.getLogger(__name__)
T = TypeVar("T")
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def backoff_delays(base_s: float = 0.1, cap_s: float = 5.0) -> Callable[[int], float]:
    """Exponential backoff: the delay before retry ``n`` (0-based), capped.

    >>> delay = backoff_delays(0.1, 1.0)
    >>> [delay(n) for n in range(6)]
    [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    """
    return lambda attempt: min(cap_s, base_s * 2**attempt)


def retrying(
    call: Callable[[], T],
    dependency: str,
    errors: tuple[type[BaseException], ...],
    metrics: WorkerMetrics | None,
    give_up: Callable[[], bool] = lambda: False,
    *,
    stop: StopFlag | None = None,
    what: str | None = None,
    refusal: Callable[[BaseException], Refused | None] | None = None,
) -> T:
    """``call()``, retried with backoff while it raises one of ``errors``.

    ``give_up`` is asked after each failure; when it says yes the error is raised.
    A ``stop`` request ends the wait between attempts at once, and a failure once
    it is set: :class:`~stream.waits.Stopped`. An error that ``refusal`` turns
    into a :class:`~stream.waits.Refused` (wrong credentials) is raised at once,
    never retried. While ``call`` fails, a line says since when ``what`` (the
    dependency and its address) has been out of reach, at most every 5 s.

    >>> from streamlearn.stream.waits import StopFlag
    >>> flag, calls = StopFlag(), []
    >>> def down():
    ...     calls.append(1)
    ...     if len(calls) == 2:
    ...         flag.set()
    ...     raise ConnectionError("refused")
    >>> try:
    ...     retrying(down, "redis", (ConnectionError,), None, stop=flag, what="Redis at r:1")
    ... except Stopped as stopped:
    ...     print(stopped, len(calls))
    stopped while waiting for Redis at r:1 2
    """
    delay = backoff_delays()
    attempt = 0
    outage = Outage(what or dependency)
    while True:
        try:
            result = call()
        except Exception as exc:
            refused = refusal(exc) if refusal is not None else None
            if refused is not None:
                raise refused from None
            if not isinstance(exc, errors):
                raise
            if metrics is not None:
                metrics.dependency_up.labels(dependency=dependency).set(0)
                metrics.retries.labels(dependency=dependency).inc()
            if give_up():
                raise
            if stop is not None and stop.is_set():
                raise Stopped(outage.what) from exc
            line = outage.failed(exc)
            if line is not None:
                log.warning("%s (retry %d in %.1f s)", line, attempt + 1, delay(attempt))
            if stop is None:
                time.sleep(delay(attempt))
            elif stop.wait(delay(attempt)):
                raise Stopped(outage.what) from exc
            attempt += 1
            continue
        if attempt:
            if metrics is not None:
                metrics.dependency_up.labels(dependency=dependency).set(1)
            log.info("%s", outage.recovered())
        return result


class RetryingStore:
    """A store whose batch call waits and retries while Redis is unavailable.

    Retrying is safe: the Lua script is atomic, and a batch that was applied
    but whose reply was lost comes back as replays with the same states. A
    ``stop`` request ends the wait; refused credentials end it at once (see
    :func:`retrying`); ``give_up`` says when to raise the error instead of waiting.
    """

    def __init__(
        self,
        store: InteractionStore,
        metrics: WorkerMetrics | None,
        stop: StopFlag | None = None,
        url: str | None = None,
        give_up: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.stop = stop
        self.url = url
        self.give_up = give_up

    def _refusal(self, error: BaseException) -> Refused | None:
        return redis_refusal(error, self.url or "(the configured URL)")

    def apply(
        self,
        ops: Sequence[EventOp | LabelOp],
        scores: Mapping[str, float],
        watermarks: Mapping[int, int],
        clock_ms: int = -1,
    ) -> BatchOutcome:
        return retrying(
            lambda: self.store.apply(ops, scores, watermarks, clock_ms),
            "redis",
            REDIS_ERRORS,
            self.metrics,
            self.give_up,
            stop=self.stop,
            what=f"Redis at {mask_url(self.url)}" if self.url else "redis",
            refusal=self._refusal,
        )

    def pending_count(self) -> int:
        return self.store.pending_count()


class RedisWaits:
    """Runs the worker's Redis calls, waiting and retrying while Redis is unavailable.

    Every Redis call of the worker goes through one (the store's through
    :class:`RetryingStore`): Redis being away pauses the worker, never ends it;
    a ``stop`` request ends the wait, refused credentials end the worker, and
    ``give_up`` (the worker is closing) raises the error at once.

    >>> RedisWaits("redis://h:1/0", None, StopFlag())(lambda: "PONG")
    'PONG'
    """

    def __init__(
        self,
        url: str,
        metrics: WorkerMetrics | None,
        stop: StopFlag,
        give_up: Callable[[], bool] = lambda: False,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.stop = stop
        self.give_up = give_up

    def __call__(self, call: Callable[[], T]) -> T:
        return retrying(
            call,
            "redis",
            REDIS_ERRORS,
            self.metrics,
            self.give_up,
            stop=self.stop,
            what=f"Redis at {mask_url(self.url)}",
            refusal=lambda error: redis_refusal(error, self.url),
        )
