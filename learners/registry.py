"""The model registry: signed, versioned model snapshots in Redis.

Each snapshot is stored in the signed envelope of :mod:`learners.envelope` (the
signature is checked before anything is unpickled; the key comes from
``STREAMLEARN_MODEL_KEY``, :func:`signing_key_from_env`).

Redis layout, under the namespace ``ns`` (``settings.store.key_prefix``):

========================== ==========================================================
``ns:registry:snapshots``  hash: version -> envelope
``ns:registry:meta``       hash: version -> signature, newline, metadata JSON (the
                           same signed metadata, for listing without the pickles)
``ns:registry:versions``   sorted set: version scored by its number
``ns:registry:next``       counter: the last version allocated (``INCR``)
``ns:registry:current``    string: the promoted version
``ns:registry:history``    list: the versions current before each promotion, newest
                           first (bounded)
``ns:registry:generation`` integer: bumped by every promotion and rollback
========================== ==========================================================

Workers read :meth:`ModelRegistry.generation` (one ``GET``) once per batch or every few
seconds, and load the current version when it changed: a promotion or a rollback takes
effect without a restart.

Examples
--------
>>> import redis
>>> registry = ModelRegistry(redis.Redis(), "doc", b"a key of sixteen bytes or more")
>>> registry
ModelRegistry(namespace='doc')
"""

from __future__ import annotations

import builtins
import json
import math
import os
import pickle
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streamlearn.learners.envelope import (
    KEY_ENV,
    MIN_KEY_BYTES,
    RegistryError,
    SnapshotError,
    canonical_json,
    no_key,
    open_envelope,
    pack_envelope,
    sign,
    signature_matches,
    signing_key_from_env,
)
from streamlearn.learners.models import FiniteCheck

__all__ = [
    "KEY_ENV",
    "ModelRegistry",
    "NonFiniteModelError",
    "RegistryError",
    "SnapshotError",
    "SnapshotInfo",
    "signing_key_from_env",
]

_HISTORY_MAX = 100
_VERSION = re.compile(r"^[1-9][0-9]*$")


class NonFiniteModelError(RegistryError):
    """A model with NaN or infinite numbers: it is never saved, so never checkpointed or served."""


def _check_offsets(value: dict[str, int]) -> dict[str, int]:
    for where, offset in value.items():
        topic, _, partition = where.rpartition(":")
        if not topic or not (partition.isascii() and partition.isdigit()):
            raise ValueError(f'offset keys are "topic:partition", got {where!r}')
        if offset < 0:
            raise ValueError(f"offset of {where} is negative: {offset}")
    return value


class SnapshotInfo(BaseModel):
    """Metadata of one snapshot: what it is, where it comes from, what it has seen.

    Examples
    --------
    >>> info = SnapshotInfo(
    ...     version="2", name="logistic", parent="1", created_at="2026-01-02T03:04:05+00:00",
    ...     events_scored=1000, labels_learned=120, offsets={"events:0": 999},
    ...     metrics={"roc_auc": 0.71, "log_loss": float("nan")},
    ... )
    >>> info.metrics
    {'roc_auc': 0.71, 'log_loss': None}
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(pattern=r"^[1-9][0-9]*$", description="1, 2, ... within a registry.")
    name: str = Field(min_length=1, description="The model spec (preset or module:function).")
    parent: str | None = Field(default=None, description="The version it was trained from.")
    created_at: str = Field(description="ISO-8601, UTC.")
    events_scored: int = Field(ge=0)
    labels_learned: int = Field(ge=0)
    offsets: dict[str, int] = Field(
        default_factory=dict, description='Next offset to read per "topic:partition".'
    )
    metrics: dict[str, float | None] = Field(
        default_factory=dict, description="Online metrics when it was saved."
    )
    note: str = ""

    @field_validator("created_at")
    @classmethod
    def _iso_utc(cls, value: str) -> str:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected an ISO-8601 time, got {value!r}") from None
        offset = moment.utcoffset()
        if offset is None or offset.total_seconds() != 0:
            raise ValueError(f"expected a UTC time (+00:00), got {value!r}")
        return value

    @field_validator("offsets")
    @classmethod
    def _topic_partitions(cls, value: dict[str, int]) -> dict[str, int]:
        return _check_offsets(value)

    @field_validator("metrics")
    @classmethod
    def _finite(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        return {k: v if v is not None and math.isfinite(v) else None for k, v in value.items()}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _info(metadata: Mapping[str, Any], version: str) -> SnapshotInfo:
    """Verified metadata as SnapshotInfo, refusing metadata signed for another version."""
    try:
        info = SnapshotInfo.model_validate(metadata)
    except ValidationError as error:
        raise SnapshotError(f"snapshot v{version} metadata is invalid: {error}") from None
    if info.version != version:
        raise SnapshotError(
            f"snapshot v{version} holds the signed snapshot of v{info.version}: refusing it "
            "(moved or replayed)"
        )
    return info


_PROMOTE = """
if redis.call('ZSCORE', KEYS[4], ARGV[1]) == false then return {0, 'missing'} end
local previous = redis.call('GET', KEYS[1])
if previous == ARGV[1] then return {1, tonumber(redis.call('GET', KEYS[3]) or '0')} end
redis.call('SET', KEYS[1], ARGV[1])
if previous then
  redis.call('LPUSH', KEYS[2], previous)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
end
return {1, redis.call('INCR', KEYS[3])}
"""

_ROLLBACK = """
local target = redis.call('LINDEX', KEYS[2], 0)
if target == false then return {0, 'empty'} end
if target ~= ARGV[1] then return {0, 'changed'} end
redis.call('LPOP', KEYS[2])
redis.call('SET', KEYS[1], target)
return {1, redis.call('INCR', KEYS[3])}
"""


class ModelRegistry:
    """Versioned, signed model snapshots under one Redis namespace.

    Parameters
    ----------
    client
        A ``redis.Redis`` returning bytes (``decode_responses=False``).
    namespace
        Key prefix, e.g. ``settings.store.key_prefix``.
    key
        The signing key (:func:`signing_key_from_env`); kept in memory only.
    """

    def __init__(self, client: redis.Redis, namespace: str, key: bytes) -> None:
        if not namespace or any(c.isspace() for c in namespace):
            raise ValueError(f"namespace must be non-empty without spaces, got {namespace!r}")
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the registry needs a Redis client returning bytes")
        if not key:
            raise no_key()
        if len(key) < MIN_KEY_BYTES:
            raise SnapshotError(f"the signing key must be at least {MIN_KEY_BYTES} bytes")
        self.client = client
        self.namespace = namespace
        self.prefix = f"{namespace}:registry:"
        self.__key = key
        self._promote = client.register_script(_PROMOTE)
        self._rollback = client.register_script(_ROLLBACK)

    def __repr__(self) -> str:
        return f"ModelRegistry(namespace={self.namespace!r})"

    def _k(self, name: str) -> str:
        return self.prefix + name

    # -- snapshots ---------------------------------------------------------------------

    def save(
        self,
        model: object,
        *,
        name: str,
        parent: str | None,
        events_scored: int,
        labels_learned: int,
        offsets: Mapping[str, int],
        metrics: Mapping[str, float | None],
        note: str = "",
    ) -> SnapshotInfo:
        """Store ``model`` as the next version (allocated atomically); it is not promoted.

        Raises
        ------
        NonFiniteModelError
            The model has NaN or infinite weights or statistics
            (:class:`learners.models.FiniteCheck`); nothing is written.
        """
        check = FiniteCheck(model)
        if not check():
            raise NonFiniteModelError(
                f"model {name!r} (parent v{parent}) has NaN or infinite weights or statistics"
                " after learning; it is not saved"
            )
        payload = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        fields = {
            "name": name,
            "parent": parent,
            "events_scored": events_scored,
            "labels_learned": labels_learned,
            "offsets": dict(offsets),
            "metrics": dict(metrics),
            "note": note,
        }
        SnapshotInfo.model_validate({"version": "1", "created_at": _now(), **fields})
        version = str(self.client.incr(self._k("next")))
        info = SnapshotInfo.model_validate({"version": version, "created_at": _now(), **fields})
        self._store(info, payload)
        return info

    def _store(self, info: SnapshotInfo, payload: bytes) -> None:
        metadata = info.model_dump(mode="json")
        meta = canonical_json(metadata)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._k("snapshots"), info.version, pack_envelope(metadata, payload, self.__key))
        pipe.hset(
            self._k("meta"), info.version, sign(meta, self.__key).encode("ascii") + b"\n" + meta
        )
        pipe.zadd(self._k("versions"), {info.version: int(info.version)})
        pipe.execute()

    def _raw(self, version: str) -> bytes:
        envelope = self.client.hget(self._k("snapshots"), version)
        if envelope is None:
            raise RegistryError(f"no snapshot v{version} in registry {self.namespace!r}")
        return _bytes(envelope)

    def _envelope(self, version: str) -> tuple[dict[str, Any], bytes]:
        """The verified metadata and pickle of ``version``."""
        version = _version(version)
        return open_envelope(self._raw(version), self.__key, version=version)

    def load(self, version: str) -> tuple[Any, SnapshotInfo]:
        """The model of ``version`` and its metadata; the signature is checked first.

        Raises
        ------
        RegistryError
            Unknown version.
        SnapshotError
            Unsigned, tampered, signed with another key, or moved from another version.
        """
        metadata, payload = self._envelope(version)
        info = _info(metadata, _version(version))
        return pickle.loads(payload), info

    def info(self, version: str) -> SnapshotInfo:
        """The signed metadata of ``version`` (without fetching the pickle)."""
        version = _version(version)
        value = self.client.hget(self._k("meta"), version)
        if value is None:
            raise RegistryError(f"no snapshot v{version} in registry {self.namespace!r}")
        return self._open_meta(_bytes(value), version)

    def _open_meta(self, value: bytes, version: str) -> SnapshotInfo:
        signature, _, meta = value.partition(b"\n")
        if not signature:
            raise SnapshotError(f"snapshot v{version} is not signed")
        if not signature_matches(meta, signature, self.__key):
            raise SnapshotError(
                f"snapshot v{version} signature does not match: refusing its metadata "
                "(tampered, or signed with another key)"
            )
        return _info(json.loads(meta), version)

    def list(self) -> list[SnapshotInfo]:
        """Every snapshot's metadata, by version number."""
        versions = [_text(v) for v in self.client.zrange(self._k("versions"), 0, -1)]
        if not versions:
            return []
        values = self.client.hmget(self._k("meta"), versions)
        missing = [v for v, value in zip(versions, values, strict=True) if value is None]
        if missing:
            raise RegistryError(f"registry {self.namespace!r} lists v{missing[0]} without metadata")
        return [
            self._open_meta(_bytes(value), v) for v, value in zip(versions, values, strict=True)
        ]

    # -- promotion ---------------------------------------------------------------------

    def current(self) -> str | None:
        """The promoted version, or None before the first promotion."""
        value = self.client.get(self._k("current"))
        return _text(value) if value is not None else None

    def generation(self) -> int:
        """A counter bumped by every promotion and rollback: one cheap ``GET`` to poll."""
        value = self.client.get(self._k("generation"))
        return int(value) if value is not None else 0

    def current_state(self) -> tuple[str | None, int]:
        """The current version and the generation, read together (one ``MGET``)."""
        current, generation = self.client.mget(self._k("current"), self._k("generation"))
        return (_text(current) if current is not None else None), int(generation or 0)

    def history(self) -> builtins.list[str]:
        """The versions :meth:`rollback` would go back to, next first."""
        return [_text(v) for v in self.client.lrange(self._k("history"), 0, -1)]

    def promote(self, version: str) -> None:
        """Make ``version`` current (its signature checked first) and bump the generation.

        The previous current version goes on the history, for :meth:`rollback`. Promoting
        the current version again changes nothing.
        """
        version = _version(version)
        self._envelope(version)
        status, _ = self._promote(
            keys=[
                self._k("current"),
                self._k("history"),
                self._k("generation"),
                self._k("versions"),
            ],
            args=[version, _HISTORY_MAX],
        )
        if not status:
            raise RegistryError(f"no snapshot v{version} in registry {self.namespace!r}")

    def rollback(self) -> str:
        """Go back to the version current before the last promotion; returns it.

        Raises
        ------
        RegistryError
            When no version was promoted before the current one.
        """
        target = self.client.lindex(self._k("history"), 0)
        if target is None:
            current = self.current()
            raise RegistryError(
                "nothing to roll back: "
                + (
                    f"v{current} is the first version promoted"
                    if current
                    else "no version was ever promoted"
                )
                + f" in registry {self.namespace!r}"
            )
        version = _text(target)
        self._envelope(version)
        status, reason = self._rollback(
            keys=[self._k("current"), self._k("history"), self._k("generation")], args=[version]
        )
        if not status:
            raise RegistryError(
                "nothing to roll back"
                if reason == b"empty"
                else "the promotion history changed during the rollback: try again"
            )
        return version

    # -- files -------------------------------------------------------------------------

    def prune(self, note: str, keep: int, protect: Collection[str] = ()) -> builtins.list[str]:
        """Delete all but the ``keep`` newest snapshots whose note is ``note``.

        The current version, the rollback history and ``protect`` are never deleted.
        A worker prunes its own checkpoints this way, so the registry stays bounded.
        """
        spared = {self.current(), *self.history(), *protect}
        mine = [info.version for info in self.list() if info.note == note]
        doomed = [v for v in mine[: max(0, len(mine) - keep)] if v not in spared]
        if doomed:
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(self._k("snapshots"), *doomed)
            pipe.hdel(self._k("meta"), *doomed)
            pipe.zrem(self._k("versions"), *doomed)
            pipe.execute()
        return doomed

    def export(self, version: str, path: Path) -> SnapshotInfo:
        """Write the signed envelope of ``version`` to ``path`` (verified, atomic write)."""
        version = _version(version)
        envelope = self._raw(version)
        metadata, _ = open_envelope(envelope, self.__key, version=version)
        info = _info(metadata, version)
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(envelope)
        os.replace(partial, path)
        return info

    def import_file(self, path: Path) -> SnapshotInfo:
        """Store a snapshot file (signature checked) as a NEW version; returns its metadata.

        Its parent is the version it had where it was exported; the note says where it
        came from.
        """
        path = Path(path)
        try:
            metadata, payload = open_envelope(path.read_bytes(), self.__key)
        except SnapshotError as error:
            raise SnapshotError(f"{path}: {error}") from None
        try:
            original = SnapshotInfo.model_validate(metadata)
        except ValidationError as error:
            raise SnapshotError(f"{path}: snapshot metadata is invalid: {error}") from None
        note = f"imported from {path.name} (v{original.version}, {original.created_at})"
        if original.note:
            note += f"; {original.note}"
        version = str(self.client.incr(self._k("next")))
        info = original.model_copy(
            update={
                "version": version,
                "parent": original.version,
                "created_at": _now(),
                "note": note,
            }
        )
        info = SnapshotInfo.model_validate(info.model_dump())
        self._store(info, payload)
        return info


def _bytes(reply: object) -> bytes:
    """A reply of the client the registry requires, which returns bytes (checked in
    ``ModelRegistry.__init__``)."""
    if not isinstance(reply, bytes):
        raise TypeError(f"expected bytes from Redis, got {type(reply).__name__}")
    return reply


def _text(reply: object) -> str:
    return _bytes(reply).decode()


def _version(version: str | int) -> str:
    text = str(version).strip().removeprefix("v")
    if not _VERSION.match(text):
        raise RegistryError(f"a version is a positive number such as 3 (or v3), got {version!r}")
    return text
