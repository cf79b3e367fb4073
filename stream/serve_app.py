"""The HTTP API of ``streamlearn serve``: Starlette endpoints over :mod:`stream.serve`.

=================  =========================================================================
``POST /score``    one event (the events topic's schema) -> score, decision, model, freshness
``POST /rank``     a user, a context, a timestamp and candidates -> candidates by score
``GET /healthz``   the process answers
``GET /readyz``    Redis answers and a model is loaded (says when it is the untrained spec)
                   and, with an experiment, each arm's version and age and its status
``GET /metrics``   Prometheus: latency per endpoint, errors by reason, each arm's model age
=================  =========================================================================

A refused request gets a 4xx and a JSON body ``{"error": reason, "detail": what to fix}``;
Redis out of reach is a 503; nothing a request holds changes any state. With an
``experiment`` section each request is served by its unit's arm
(:class:`stream.serve_arms.ArmFollower`), named with its ``model_version`` in the
answer. The served models are refreshed from the registry every
``serve.refresh_seconds`` in a thread, so a slow load never stalls a request.

Examples
--------
>>> from starlette.testclient import TestClient
>>> app = create_app(Settings(redis={"url": "redis://127.0.0.1:1/0"}))
>>> with TestClient(app) as client:
...     client.get("/healthz").json(), client.post("/score", content=b"[").status_code
({'status': 'ok'}, 400)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.asyncio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from streamlearn.features.schema import Event
from streamlearn.learners.decision_policy import build_policy
from streamlearn.learners.registry import ModelRegistry, SnapshotError, signing_key_from_env
from streamlearn.metrics.serving import CHAMPION, ServeMetrics
from streamlearn.stream.config import Settings, load_settings
from streamlearn.stream.config.experiment import ExperimentSettings
from streamlearn.stream.experiment_record import RecordStore, in_force
from streamlearn.stream.experiment_sync import RedisBoard
from streamlearn.stream.serve import (
    ApiError,
    ModelFollower,
    StateReader,
    finite,
    freshness,
    parse_rank,
    parse_score,
    rank_order,
    score_events,
)
from streamlearn.stream.serve_arms import ArmFollower, Pick, newest, score_by_arm

__all__ = ["ServeState", "app_from_env", "create_app", "run_server"]

log = logging.getLogger(__name__)

_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)

#: Redis connections of one API process.
REDIS_CONNECTIONS = 32


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class ServeState:
    """What the endpoints share: settings, Redis clients, the model follower, metrics."""

    def __init__(
        self,
        settings: Settings,
        signing_key: bytes | None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        experiment = settings.experiment
        self.metrics = ServeMetrics(
            self.registry, list(experiment.arms) if experiment is not None else (CHAMPION,)
        )
        options = settings.redis.client_options()
        # A bounded pool: under a burst, requests wait for one of its connections (up to
        # the socket timeout) instead of each opening its own.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.redis.url,
            max_connections=REDIS_CONNECTIONS,
            timeout=settings.redis.socket_timeout_s,
            **options,
        )
        self.client = redis.asyncio.Redis(connection_pool=pool)
        self.sync_client = redis.Redis.from_url(settings.redis.url, **options)
        self.reader = StateReader(
            self.client,
            settings.store.key_prefix,
            len(settings.features.interactions.half_lives_s),
        )
        models = None
        self.why_untrained = "no registry version yet: serving the configured spec untrained"
        if signing_key is None:
            self.why_untrained = (
                "STREAMLEARN_MODEL_KEY is not set: the registry cannot be read, serving the"
                " configured spec untrained"
            )
        else:
            models = ModelRegistry(self.sync_client, settings.store.key_prefix, signing_key)
        self.follower = ModelFollower(settings, models, self.metrics)
        #: The decision policy's threshold in force: the newest checkpoint's (an adaptive
        #: policy checkpoints it), else the policy's own start, as a starting worker has.
        self.policy = build_policy(settings.decision, settings.model.threshold)
        self.models = models
        #: The experiment started for the group (``experiment start``), which the workers
        #: run in place of the configured one; its ``seq`` says when it changes.
        self.records = RecordStore(
            self.sync_client, settings.store.key_prefix, settings.kafka.group_id
        )
        self._record_seq = 0
        self.arms: ArmFollower | None = None
        self._set_experiment(experiment)

    def _set_experiment(self, experiment: ExperimentSettings | None) -> None:
        """Serve ``experiment``'s arms (None: the champion alone)."""
        self.arms = None
        if experiment is None:
            return
        settings = self.settings.model_copy(update={"experiment": experiment})
        board = RedisBoard(
            self.sync_client,
            settings.store.key_prefix,
            settings.kafka.group_id,
            experiment.decision_config(),
        )
        self.metrics.arms = tuple(dict.fromkeys((*self.metrics.arms, *experiment.arms)))
        self.arms = ArmFollower(settings, self.models, self.metrics, board)

    def _follow_started(self) -> None:
        """Take an experiment started for the group since the last look, as workers do."""
        try:
            record = self.records.read()
        except redis.RedisError as error:
            log.warning("could not read the group's started experiment: %s", error)
            return
        seq = record.seq if record is not None else 0
        if seq != self._record_seq:
            self._record_seq = seq
            self._set_experiment(in_force(record, self.settings.experiment))
            log.info("serving the experiment started for the group (record %d)", seq)

    def refresh(self) -> None:
        """Follow the workers: the champion, then the experiment's arms (blocking I/O)."""
        self.follower.refresh()
        latest = newest(self.follower.checkpoints)
        self.policy.restore(latest.state.get("decision") if latest is not None else None)
        self._follow_started()
        if self.arms is not None:
            self.arms.refresh(self.follower.checkpoints)

    def pick(self, events: Sequence[Event]) -> list[Pick]:
        """Each event's arm (None without an experiment) and the model serving it."""
        champion = self.follower.served
        if self.arms is None:
            return [(None, champion)] * len(events)
        return self.arms.serving_all(events, champion)

    async def refresh_forever(self) -> None:
        """Refresh every ``serve.refresh_seconds``, the first time one interval after the
        start's own refresh (not at once: it would read Redis beside the first requests)."""
        interval = self.settings.serve.refresh_seconds
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.refresh)

    async def close(self) -> None:
        await self.client.aclose()
        self.sync_client.close()


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused once it passes ``limit`` bytes (without reading the rest)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError("body_too_large", f"the body is {length} bytes, the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("body_too_large", f"the body is over {limit} bytes, the limit")
        chunks.append(chunk)
    return b"".join(chunks)


Handler = Callable[[Request, ServeState], Awaitable[Response]]


def _endpoint(name: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` timed into the latency histogram, its refusals counted and answered."""

    async def endpoint(request: Request) -> Response:
        state: ServeState = request.app.state.serve
        started = time.perf_counter()
        try:
            response = await handler(request, state)
        except ApiError as error:
            state.metrics.error(name, error.reason)
            response = _json(error.body(), error.status)
        except _REDIS_ERRORS as error:
            log.warning("%s: Redis error %s: %s", name, type(error).__name__, error)
            state.metrics.error(name, "redis_unavailable")
            detail = f"Redis is out of reach ({type(error).__name__}); try again"
            response = _json({"error": "redis_unavailable", "detail": detail}, 503)
        state.metrics.observe(name, time.perf_counter() - started)
        return response

    return endpoint


async def _score(request: Request, state: ServeState) -> Response:
    settings = state.settings
    raw = await _body(request, settings.serve.max_body_bytes)
    event = parse_score(raw, settings.limits)
    ((arm, served),) = state.pick([event])
    (states,) = await state.reader.read([event])
    (p,) = score_events(served.model, [event], [states], settings.features)
    if not finite([p]):
        raise ApiError("model_not_finite", "the model gave a non-finite score", 503)
    threshold = state.policy.threshold
    return _json(
        {
            "event_id": event.event_id,
            "score": p,
            "decision": p > threshold,
            "threshold": threshold,
            "arm": arm,
            "model_version": served.version,
            "model": served.describe(),
            "freshness_s": freshness(states, event.timestamp),
        }
    )


async def _rank(request: Request, state: ServeState) -> Response:
    settings = state.settings
    raw = await _body(request, settings.serve.max_body_bytes)
    events = parse_rank(
        raw, settings.limits, settings.serve.max_candidates, max_bytes=settings.serve.max_body_bytes
    )
    state.metrics.candidates.observe(len(events))
    picks = state.pick(events)
    states = await state.reader.read(events)
    scores = score_by_arm(picks, events, states, settings.features)
    if not finite(scores):
        raise ApiError("model_not_finite", "the model gave a non-finite score", 503)
    # one arm for every candidate (a unit of the request: the user); per item otherwise
    one = all(served is picks[0][1] for _, served in picks)
    arm, served = picks[0]
    items = []
    for index in rank_order(scores):
        event = events[index]
        item: dict[str, Any] = {"item_id": event.item_id, "score": scores[index]}
        if event.author_id is not None:
            item["author_id"] = event.author_id
        if not one:
            item["arm"], item["model_version"] = picks[index][0], picks[index][1].version
        items.append(item)
    user = [(kind, s) for kind, s in states[0] if kind == "user"]
    return _json(
        {
            "request_id": events[0].event_id,
            "arm": arm if one else None,
            "model_version": served.version if one else None,
            "model": served.describe() if one else None,
            "items": items,
            "freshness_s": freshness(user, events[0].timestamp),
        }
    )


async def _healthz(request: Request, state: ServeState) -> Response:
    return _json({"status": "ok"})


async def _readyz(request: Request, state: ServeState) -> Response:
    served = state.follower.served
    body: dict[str, Any] = {"model": {**served.describe(), "trained": served.trained}}
    if not served.trained:
        body["model"]["note"] = state.why_untrained
    if state.follower.last_error:
        body["model"]["refresh_error"] = state.follower.last_error
    if state.arms is not None:
        body.update(state.arms.describe(served))
        if state.arms.last_error:
            body["experiment"]["refresh_error"] = state.arms.last_error
    try:
        await asyncio.wait_for(state.client.ping(), timeout=2.0)
        body["redis"] = "ok"
    except (*_REDIS_ERRORS, TimeoutError) as error:
        body["redis"] = f"unreachable: {type(error).__name__}"
    body["ready"] = body["redis"] == "ok"
    return _json(body, 200 if body["ready"] else 503)


async def _metrics(request: Request, state: ServeState) -> Response:
    follower = state.follower
    state.metrics.served(follower.arm, follower.served.age_s(), follower.served.version)
    if state.arms is not None:
        state.arms.gauge()
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 as JSON, counted (Starlette's own would be plain text, uncounted)."""
    assert isinstance(exc, HTTPException)
    reason = {404: "not_found", 405: "wrong_method"}.get(exc.status_code, "other")
    state: ServeState = request.app.state.serve
    state.metrics.error(request.url.path, reason)
    detail = {
        404: "no such endpoint: POST /score, POST /rank, GET /healthz, /readyz, /metrics",
        405: f"{request.method} is not allowed here",
    }.get(exc.status_code, str(exc.detail))
    return _json({"error": reason, "detail": detail}, exc.status_code)


def create_app(
    settings: Settings,
    signing_key: bytes | None = None,
    registry: CollectorRegistry | None = None,
) -> Starlette:
    """The API as a Starlette app; its state is built at startup and closed at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = ServeState(settings, signing_key, registry)
        app.state.serve = state
        await asyncio.to_thread(state.refresh)
        refresher = asyncio.create_task(state.refresh_forever())
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await state.close()

    routes = [
        Route("/score", _endpoint("/score", _score), methods=["POST"]),
        Route("/rank", _endpoint("/rank", _rank), methods=["POST"]),
        Route("/healthz", _endpoint("/healthz", _healthz), methods=["GET"]),
        Route("/readyz", _endpoint("/readyz", _readyz), methods=["GET"]),
        Route("/metrics", _endpoint("/metrics", _metrics), methods=["GET"]),
    ]
    return Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error}
    )


def _key_or_none() -> bytes | None:
    try:
        return signing_key_from_env()
    except SnapshotError:
        return None


def app_from_env() -> Starlette:
    """The app of one uvicorn worker process: settings from ``STREAMLEARN_CONFIG`` and
    ``STREAMLEARN_*``, the signing key from ``STREAMLEARN_MODEL_KEY``."""
    path = os.environ.get("STREAMLEARN_CONFIG")
    settings = load_settings(Path(path) if path else None)
    return create_app(settings, _key_or_none())


def run_server(settings: Settings, host: str, port: int, workers: int) -> None:
    """Serve until interrupted; several workers are processes that each build the app
    from the environment (:func:`app_from_env`)."""
    import uvicorn

    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "loop": "uvloop",
        "http": "httptools",
    }
    if workers > 1:
        uvicorn.run("stream.serve_app:app_from_env", factory=True, workers=workers, **common)
    else:
        uvicorn.run(create_app(settings, _key_or_none()), **common)
