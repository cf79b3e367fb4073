"""Request-time scoring and ranking: the HTTP API's logic, without HTTP.

The API reads the interaction state the workers keep in Redis (never writes it: the
events topic stays the one writer), assembles features with the worker's own
:func:`features.vector.features_of`, and scores with the model the workers serve:
the registry's promoted version, or the newest confirmed worker checkpoint made since
that promotion (:class:`ModelFollower`, refreshed every ``serve.refresh_seconds``).
Before any version exists it scores with the configured spec, untrained (0.5), and
says so.

* :func:`parse_score` / :func:`parse_rank` turn a request body into events, or raise
  :class:`ApiError` with the schema's reason and what to fix;
* :class:`StateReader` reads the entity states of a whole request in one round trip
  (one pipeline of ``HGET``, only reads);
* :func:`score_events` scores events given those states.

Examples
--------
>>> from streamlearn.features.limits import Limits
>>> from streamlearn.features.interactions import InteractionConfig
>>> events = parse_rank(b'{"user_id": "u1", "timestamp": 1767225600000, "context":'
...     b' {"device": "ios"}, "candidates": [{"item_id": "i1"}, {"item_id": "i2",'
...     b' "author_id": "a1", "features": {"length": 3}}]}', Limits(), 10)
>>> [(e.item_id, e.author_id, e.context["device"]) for e in events]
[('i1', None, 'ios'), ('i2', 'a1', 'ios')]
>>> parse_rank(b'{"user_id": "u1", "timestamp": 0, "candidates": []}', Limits(), 10)
Traceback (most recent call last):
...
streamlearn.stream.serve.ApiError: 422 no_candidates: candidates: give at least one candidate item
>>> states = [[(kind, EntityState.empty(InteractionConfig())) for kind in kinds(e)]
...           for e in events]
>>> from streamlearn.learners.models import build_model
>>> score_events(build_model("logistic"), events, states, FeatureConfig())
[0.5, 0.5]
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import redis
import redis.asyncio

from streamlearn.features.decode import json_error, validate_event
from streamlearn.features.interactions import EntityState, entity_ids
from streamlearn.features.limits import Limits
from streamlearn.features.redis_store import decode_state
from streamlearn.features.schema import DecodeError, Event
from streamlearn.features.vector import FeatureConfig, features_of
from streamlearn.learners.batch import score_many
from streamlearn.learners.checkpoint import Checkpoint
from streamlearn.learners.registry import ModelRegistry, RegistryError
from streamlearn.metrics.serving import CHAMPION, ServeMetrics
from streamlearn.stream.config import Settings

__all__ = [
    "ApiError",
    "ModelFollower",
    "Served",
    "StateReader",
    "entity_key",
    "finite",
    "freshness",
    "kinds",
    "parse_rank",
    "parse_score",
    "rank_order",
    "score_events",
]

log = logging.getLogger(__name__)

#: HTTP status of each refusal reason; any other reason is 422.
_STATUS = {
    "too_large": 413,
    "body_too_large": 413,
    "too_many_candidates": 413,
    "invalid_json": 400,
    "not_utf8": 400,
    "not_an_object": 400,
}

_RANK_FIELDS = frozenset({"request_id", "user_id", "timestamp", "context", "candidates"})
_CANDIDATE_FIELDS = frozenset({"item_id", "author_id", "features"})


class ApiError(Exception):
    """A request refused: ``status`` (4xx), ``reason`` (a metric label) and what to fix."""

    def __init__(self, reason: str, detail: str, status: int | None = None) -> None:
        self.status = status or _STATUS.get(reason, 422)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.status} {reason}: {detail}")

    @classmethod
    def of(cls, error: DecodeError, where: str = "") -> ApiError:
        return cls(error.reason, where + error.detail)

    def body(self) -> dict[str, str]:
        return {"error": self.reason, "detail": self.detail}


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _load(raw: bytes, max_bytes: int) -> Any:
    if len(raw) > max_bytes:
        raise ApiError("body_too_large", f"the body is {len(raw)} bytes, the limit is {max_bytes}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError.of(json_error(raw, exc)) from None


def parse_score(raw: bytes, limits: Limits, now_ms: int | None = None) -> Event:
    """One event of the events topic's schema, or :class:`ApiError` with the schema's reason.

    >>> parse_score(b'{"event_id": "e1", "timestamp": 1767225600000, "user_id": "u1"}', Limits())
    Traceback (most recent call last):
    ...
    streamlearn.stream.serve.ApiError: 422 missing_field: item_id: Field required
    """
    obj = _load(raw, limits.max_bytes)
    if not isinstance(obj, dict):
        raise ApiError("not_an_object", f"expected a JSON object (an event), got {_json_type(obj)}")
    try:
        return validate_event(
            _known(obj, limits, frozenset(Event.model_fields), ""), limits, now_ms
        )
    except DecodeError as error:
        raise ApiError.of(error) from None


def _known(
    obj: dict[str, Any], limits: Limits, fields: frozenset[str], where: str
) -> dict[str, Any]:
    """``obj`` with its unknown fields refused (``limits.unknown_fields: reject``) or kept."""
    if limits.unknown_fields == "reject":
        unknown = obj.keys() - fields
        if unknown:
            names = ", ".join(repr(name[:40]) for name in sorted(unknown)[:5])
            raise ApiError(
                "unknown_field",
                f"{where}unknown fields {names}; known: {', '.join(sorted(fields))}",
            )
    return obj


def parse_rank(
    raw: bytes,
    limits: Limits,
    max_candidates: int,
    now_ms: int | None = None,
    max_bytes: int = 1_048_576,
) -> list[Event]:
    """The events of a ranking request, one per candidate in request order.

    A request is ``{"user_id", "timestamp", "context"?, "request_id"?, "candidates":
    [{"item_id", "author_id"?, "features"?}, ...]}``; each candidate becomes the event
    the user would meet, validated as one of the events topic (the same limits and
    reasons, the candidate's index in the message).
    """
    obj = _load(raw, max_bytes)
    if not isinstance(obj, dict):
        raise ApiError("not_an_object", f"expected a JSON object, got {_json_type(obj)}")
    obj = _known(obj, limits, _RANK_FIELDS, "")
    candidates = obj.get("candidates")
    if candidates is None:
        raise ApiError("missing_field", "candidates: Field required (a list of {item_id, ...})")
    if not isinstance(candidates, list):
        raise ApiError(
            "wrong_type", f"candidates: expected an array of objects, got {_json_type(candidates)}"
        )
    if not candidates:
        raise ApiError("no_candidates", "candidates: give at least one candidate item")
    if len(candidates) > max_candidates:
        raise ApiError(
            "too_many_candidates",
            f"candidates: {len(candidates)} given, the limit is {max_candidates}"
            " (serve.max_candidates)",
        )
    request_id = obj.get("request_id", "rank")
    head = {"event_id": request_id, "item_id": "-"}
    for name in ("timestamp", "user_id", "context"):
        if name in obj:
            head[name] = obj[name]
    try:
        base = validate_event(head, limits, now_ms)
    except DecodeError as error:
        raise ApiError.of(error) from None
    events = []
    for index, candidate in enumerate(candidates):
        where = f"candidates[{index}]: "
        if not isinstance(candidate, dict):
            raise ApiError(
                "wrong_type", f"{where}expected an object {{item_id, ...}}, got"
                f" {_json_type(candidate)}"
            )  # fmt: skip
        _known(candidate, limits, _CANDIDATE_FIELDS, where)
        one = {"event_id": base.event_id, "timestamp": base.timestamp, "user_id": base.user_id}
        for name in _CANDIDATE_FIELDS:
            if name in candidate:
                one[name] = candidate[name]
        try:
            event = validate_event(one, limits, now_ms)
        except DecodeError as error:
            raise ApiError.of(error, where) from None
        events.append(event.model_copy(update={"context": base.context}))
    return events


def kinds(event: Event) -> list[str]:
    """The entity kinds an event touches, in the worker's order."""
    return [kind for kind, _ in entity_ids(event.user_id, event.item_id, event.author_id)]


def entity_key(prefix: str, kind: str, entity: str) -> str:
    """The Redis key of an entity's state: :meth:`features.redis_store.RedisStore.key`'s layout.

    >>> entity_key("sl", "user_item", "2:u1|i9")
    'sl:e:user_item:2:u1|i9'
    """
    return f"{prefix}:e:{kind}:{entity}"


def freshness(
    states: Sequence[tuple[str, EntityState]], timestamp_ms: int
) -> dict[str, float | None]:
    """Seconds since each entity's last counted event, as of ``timestamp_ms`` (None: never seen).

    >>> freshness([("user", EntityState(count=1, last_ms=1000)), ("item", EntityState())], 3500)
    {'user': 2.5, 'item': None}
    """
    return {
        kind: (max(0, timestamp_ms - state.last_ms) / 1000.0 if state.count > 0 else None)
        for kind, state in states
    }


#: Reads the ``v`` field of every key it is given (nil where there is none), nothing else.
READ_STATES = (
    "local out = {} "
    "for i, key in ipairs(KEYS) do out[i] = redis.call('HGET', key, 'v') end "
    "return out"
)


class StateReader:
    """Entity states for many events in one round trip: one ``EVAL`` of a read-only script.

    The script returns every key's ``v`` field in one reply, which costs the client
    a tenth of a pipeline of one ``HGET`` per key (~1.5 ms against ~20 ms of CPU
    for the 2,100 keys of 1,000 candidates). Only reads: nothing it sends changes a
    key (no update, no TTL refresh). It names all its keys, so a Redis Cluster
    needs them in one hash slot (``store.key_prefix`` alone does not place them).
    """

    def __init__(self, client: redis.asyncio.Redis, prefix: str, n_decays: int) -> None:
        self.client = client
        self.prefix = prefix
        self.n_decays = n_decays

    async def read(self, events: Sequence[Event]) -> list[list[tuple[str, EntityState]]]:
        """Per event, its entities' ``(kind, state)`` in the worker's order."""
        per_event = [entity_ids(e.user_id, e.item_id, e.author_id) for e in events]
        keys: dict[str, int] = {}
        for pairs in per_event:
            for kind, entity in pairs:
                keys.setdefault(entity_key(self.prefix, kind, entity), len(keys))
        # EVAL, not EVALSHA: its first call would be two round trips (NOSCRIPT, then load)
        values = await self.client.eval(READ_STATES, len(keys), *keys) if keys else []
        decoded = [decode_state(value, self.n_decays) for value in values]
        return [
            [(kind, decoded[keys[entity_key(self.prefix, kind, entity)]]) for kind, entity in pairs]
            for pairs in per_event
        ]


def score_events(
    model: Any,
    events: Sequence[Event],
    states: Sequence[Sequence[tuple[str, EntityState]]],
    config: FeatureConfig,
) -> list[float]:
    """The model's score of each event, from the worker's features of the state it read.

    The worker's numbers (:func:`learners.models.score`, one ``predict_proba_one``
    per event), computed by :func:`learners.batch.score_many`: a ``logistic``
    preset's fitted state is read once for the whole request and every event scored
    with River's formulas in plain arithmetic; any other model is asked once per event.
    """
    return score_many(
        model,
        [
            features_of(event, list(state), config)
            for event, state in zip(events, states, strict=True)
        ],
    )


def rank_order(scores: Sequence[float]) -> list[int]:
    """Indices by descending score; ties keep the request's order.

    >>> rank_order([0.2, 0.9, 0.2, 0.5])
    [1, 3, 0, 2]
    """
    return sorted(range(len(scores)), key=lambda i: -scores[i])


@dataclass(frozen=True)
class Served:
    """The model being served and where it comes from."""

    model: Any
    name: str
    version: str = "0"
    source: str = "untrained"
    created_at: str | None = None
    generation: int = 0
    loaded_at: float = field(default_factory=time.time)

    @property
    def trained(self) -> bool:
        return self.source != "untrained"

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the snapshot was made (0 for the untrained model)."""
        if self.created_at is None:
            return 0.0
        created = datetime.fromisoformat(self.created_at).timestamp()
        return max(0.0, (time.time() if now is None else now) - created)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "created_at": self.created_at,
        }


class ModelFollower:
    """Which model to serve: the workers' own choice, followed from Redis.

    A worker serves the registry's current version after a promotion or rollback, and
    keeps learning from it, saving a checkpoint every so often (a registry version that
    records the generation it was made under). So the newest confirmed checkpoint of
    the group made under the current generation is the freshest version of the served
    model; before one exists the promoted version is; before any version exists the
    configured spec, untrained.

    ``registry`` None (no signing key): the untrained model, always.
    """

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry | None,
        metrics: ServeMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.served = Served(settings.model.build(), settings.model.spec)
        self.last_error: str | None = None
        #: The served model's ``arm`` label: the experiment's control, else the champion.
        self.arm = settings.experiment.control if settings.experiment is not None else CHAMPION
        #: The group's confirmed checkpoints as the last refresh found them.
        self.checkpoints: list[Checkpoint] = []
        self._pattern = f"{settings.store.key_prefix}:checkpoint:{settings.kafka.group_id}:*"
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.served(self.arm, self.served.age_s(), self.served.version)

    def _checkpoints(self) -> list[Checkpoint]:
        assert self.registry is not None
        client = self.registry.client
        keys = sorted(client.scan_iter(match=self._pattern, count=1000))
        if not keys:
            return []
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "confirmed")
        return [Checkpoint(**orjson.loads(raw)) for raw in pipe.execute() if raw]

    def choose(self) -> tuple[str, str, int] | None:
        """The version to serve, why, and the generation; None: nothing in the registry."""
        assert self.registry is not None
        current, generation = self.registry.current_state()
        self.checkpoints = self._checkpoints()
        fresh = [c for c in self.checkpoints if c.generation >= generation]
        if fresh:
            newest = max(fresh, key=lambda c: int(c.version))
            if current is None or int(newest.version) > int(current):
                return newest.version, "checkpoint", generation
        if current is not None:
            return current, "promoted", generation
        return None

    def refresh(self) -> Served:
        """Load the version to serve if it changed; on failure keep serving the last one."""
        if self.registry is None:
            return self.served
        try:
            chosen = self.choose()
            if chosen is not None and chosen[0] != self.served.version:
                version, source, generation = chosen
                model, info = self.registry.load(version)
                self.served = Served(
                    model, info.name, info.version, source, info.created_at, generation
                )
                log.info("serving model v%s (%s)", info.version, source)
                if self.metrics is not None:
                    self.metrics.model_loads.inc()
            self.last_error = None
        except (redis.RedisError, RegistryError, OSError, ValueError, TypeError) as error:
            self.last_error = f"{type(error).__name__}: {error}"
            log.warning("model refresh failed, still serving v%s: %s", self.served.version, error)
            if self.metrics is not None:
                self.metrics.refresh_failures.inc()
        self._gauge()
        return self.served


def finite(scores: Sequence[float]) -> bool:
    """Whether every score is a finite number."""
    return all(math.isfinite(s) for s in scores)
