"""The model registry: signed, versioned model snapshots in Redis.

A snapshot is a pickle, and unpickling runs code, so every snapshot travels in a signed
*envelope*: its metadata (JSON) and its pickle, with an HMAC-SHA256 over both. The
signature is checked before anything is unpickled; an unsigned, tampered or foreign
snapshot is refused with a :class:`SnapshotError`. The key comes from the environment
(``STREAMLEARN_MODEL_KEY``, see :func:`signing_key_from_env`) and is never logged or
stored.

Envelope layout (bytes)::

    b"SLSNAP1\\n"  signature (64 hex characters)  b"\\n"
    metadata length (4 bytes, big endian)  metadata (canonical JSON)  pickle

The signature covers everything but itself: the magic, the length, the metadata and
the pickle, so nobody can change a version, an offset or a byte of the model.

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
>>> key = b"a key of sixteen bytes or more"
>>> envelope = pack_envelope({"version": "3", "name": "logistic"}, b"pickle bytes", key)
>>> open_envelope(envelope, key)
({'name': 'logistic', 'version': '3'}, b'pickle bytes')
>>> open_envelope(envelope.replace(b"pickle", b"pickly"), key)
Traceback (most recent call last):
...
learners.registry.SnapshotError: snapshot v3 signature does not match: refusing to unpickle (tampered, or signed with another key)
"""  # noqa: E501

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import pickle
import re
import struct
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from learners.models import FiniteCheck

__all__ = [
    "KEY_ENV",
    "MAGIC",
    "MIN_KEY_BYTES",
    "ModelRegistry",
    "NonFiniteModelError",
    "RegistryError",
    "SnapshotError",
    "SnapshotInfo",
    "open_envelope",
    "pack_envelope",
    "sign",
    "signing_key_from_env",
    "split_envelope",
    "verify",
]

KEY_ENV = "STREAMLEARN_MODEL_KEY"
MIN_KEY_BYTES = 16
MAGIC = b"SLSNAP1\n"
_LENGTH = struct.Struct(">I")
_SIGNATURE_HEX = 64
_HISTORY_MAX = 100
_HEX = re.compile(rb"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[1-9][0-9]*$")


class RegistryError(ValueError):
    """A registry operation that cannot be done: unknown version, nothing to roll back."""


class SnapshotError(RegistryError):
    """A snapshot refused: unsigned, tampered, signed with another key, or no key at all."""


class NonFiniteModelError(RegistryError):
    """A model with NaN or infinite numbers: it is never saved, so never checkpointed or served."""


def _no_key() -> SnapshotError:
    return SnapshotError(
        f"no signing key: set {KEY_ENV} to a secret of at least {MIN_KEY_BYTES} bytes, "
        f"e.g. export {KEY_ENV}=\"$(python -c 'import secrets; print(secrets.token_hex(32))')\""
    )


def signing_key_from_env(environ: Mapping[str, str] = os.environ) -> bytes:
    """The snapshot signing key, from ``STREAMLEARN_MODEL_KEY`` (UTF-8, 16 bytes or more).

    Raises
    ------
    SnapshotError
        When the variable is missing, empty or too short; the message says how to set it.

    Examples
    --------
    >>> signing_key_from_env({"STREAMLEARN_MODEL_KEY": "0123456789abcdef"})
    b'0123456789abcdef'
    >>> signing_key_from_env({})
    Traceback (most recent call last):
    ...
    learners.registry.SnapshotError: no signing key: set STREAMLEARN_MODEL_KEY ...
    """
    value = environ.get(KEY_ENV, "")
    if not value:
        raise _no_key()
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise SnapshotError(
            f"{KEY_ENV} is {len(key)} bytes long: use a secret of at least "
            f"{MIN_KEY_BYTES} bytes (e.g. 64 hex characters from secrets.token_hex(32))"
        )
    return key


def sign(payload: bytes, key: bytes) -> str:
    """The HMAC-SHA256 of ``payload`` under ``key``, as 64 lowercase hex characters.

    Examples
    --------
    >>> signature = sign(b"payload", b"0123456789abcdef")
    >>> len(signature), signature == sign(b"payload", b"0123456789abcdef")
    (64, True)
    """
    if not key:
        raise _no_key()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify(payload: bytes, signature: str | bytes, key: bytes) -> bool:
    """Whether ``signature`` is the HMAC of ``payload`` under ``key`` (constant time).

    Examples
    --------
    >>> key = b"0123456789abcdef"
    >>> signature = sign(b"payload", key)
    >>> verify(b"payload", signature, key), verify(b"Payload", signature, key)
    (True, False)
    >>> verify(b"payload", signature, b"fedcba9876543210"), verify(b"payload", "zz", key)
    (False, False)
    """
    if isinstance(signature, str):
        try:
            signature = signature.encode("ascii")
        except UnicodeEncodeError:
            return False
    return hmac.compare_digest(sign(payload, key).encode("ascii"), signature)


def _canonical(metadata: Mapping[str, Any]) -> bytes:
    return json.dumps(
        metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _signed_part(metadata: bytes, payload: bytes) -> bytes:
    return MAGIC + _LENGTH.pack(len(metadata)) + metadata + payload


def pack_envelope(metadata: Mapping[str, Any], payload: bytes, key: bytes) -> bytes:
    """A signed envelope of ``metadata`` (JSON-able mapping) and ``payload`` (pickle bytes).

    Examples
    --------
    >>> envelope = pack_envelope({"version": "1"}, b"data", b"0123456789abcdef")
    >>> envelope[:8], len(envelope)
    (b'SLSNAP1\\n', 96)
    """
    meta = _canonical(metadata)
    signed = _signed_part(meta, payload)
    return MAGIC + sign(signed, key).encode("ascii") + b"\n" + signed[len(MAGIC) :]


def _claimed_version(metadata: bytes) -> str | None:
    """The version an unverified metadata blob claims, for messages only."""
    try:
        version = json.loads(metadata).get("version")
    except (ValueError, AttributeError):
        return None
    return str(version) if version is not None else None


def _name(version: str | None) -> str:
    return f"snapshot v{version}" if version else "snapshot"


def split_envelope(envelope: bytes) -> tuple[bytes | None, bytes, bytes]:
    """Signature (None when unsigned), metadata and payload of an envelope, NOT verified.

    For inspection only: nothing returned here may be trusted before
    :func:`open_envelope` checked the signature.

    Raises
    ------
    SnapshotError
        When the bytes are not an envelope at all (a bare pickle is "not signed").

    Examples
    --------
    >>> split_envelope(pack_envelope({"version": "1"}, b"data", b"0123456789abcdef"))[1:]
    (b'{"version":"1"}', b'data')
    >>> split_envelope(b"\\x80\\x05N.")
    Traceback (most recent call last):
    ...
    learners.registry.SnapshotError: snapshot is not signed
    """
    if not envelope.startswith(MAGIC):
        if envelope[:1] == b"\x80":
            raise SnapshotError("snapshot is not signed")
        raise SnapshotError("not a streamlearn snapshot: the signed envelope header is missing")
    end = envelope.find(b"\n", len(MAGIC), len(MAGIC) + _SIGNATURE_HEX + 1)
    if end < 0:
        raise SnapshotError("snapshot envelope is malformed: no end of signature line")
    signature = envelope[len(MAGIC) : end] or None
    start = end + 1 + _LENGTH.size
    if len(envelope) < start:
        raise SnapshotError("snapshot envelope is truncated")
    (length,) = _LENGTH.unpack_from(envelope, end + 1)
    if len(envelope) < start + length:
        raise SnapshotError("snapshot envelope is truncated")
    return signature, envelope[start : start + length], envelope[start + length :]


def open_envelope(
    envelope: bytes, key: bytes, *, version: str | None = None
) -> tuple[dict[str, Any], bytes]:
    """Verify an envelope and return its metadata and payload (still pickled).

    Parameters
    ----------
    envelope
        Bytes made by :func:`pack_envelope`.
    key
        The signing key.
    version
        The version the caller expects, used in messages (default: the one claimed by
        the metadata).

    Raises
    ------
    SnapshotError
        Unsigned, tampered (any byte), signed with another key, or not an envelope.

    Examples
    --------
    >>> key = b"0123456789abcdef"
    >>> envelope = pack_envelope({"version": "3"}, b"data", key)
    >>> open_envelope(envelope, key)
    ({'version': '3'}, b'data')
    >>> open_envelope(envelope, b"another key, 16+ bytes")
    Traceback (most recent call last):
    ...
    learners.registry.SnapshotError: snapshot v3 signature does not match: refusing to unpickle (tampered, or signed with another key)
    >>> unsigned = MAGIC + b"\\n" + envelope[len(MAGIC) + 65 :]
    >>> open_envelope(unsigned, key)
    Traceback (most recent call last):
    ...
    learners.registry.SnapshotError: snapshot v3 is not signed
    """  # noqa: E501
    try:
        signature, meta, payload = split_envelope(envelope)
    except SnapshotError as error:
        if version is None:
            raise
        raise SnapshotError(str(error).replace("snapshot", _name(version), 1)) from None
    name = _name(version or _claimed_version(meta))
    if signature is None:
        raise SnapshotError(f"{name} is not signed")
    if not (_HEX.match(signature) and verify(_signed_part(meta, payload), signature, key)):
        raise SnapshotError(
            f"{name} signature does not match: refusing to unpickle "
            "(tampered, or signed with another key)"
        )
    metadata = json.loads(meta)
    if not isinstance(metadata, dict):
        raise SnapshotError(f"{name} metadata is not a JSON object")
    return metadata, payload


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
        if moment.utcoffset() is None or moment.utcoffset().total_seconds() != 0:
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
            raise _no_key()
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
        meta = _canonical(metadata)
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
        return envelope

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
        return self._open_meta(value, version)

    def _open_meta(self, value: bytes, version: str) -> SnapshotInfo:
        signature, _, meta = value.partition(b"\n")
        if not signature:
            raise SnapshotError(f"snapshot v{version} is not signed")
        if not (_HEX.match(signature) and verify(meta, signature, self.__key)):
            raise SnapshotError(
                f"snapshot v{version} signature does not match: refusing its metadata "
                "(tampered, or signed with another key)"
            )
        return _info(json.loads(meta), version)

    def list(self) -> list[SnapshotInfo]:
        """Every snapshot's metadata, by version number."""
        versions = [v.decode() for v in self.client.zrange(self._k("versions"), 0, -1)]
        if not versions:
            return []
        values = self.client.hmget(self._k("meta"), versions)
        missing = [v for v, value in zip(versions, values, strict=True) if value is None]
        if missing:
            raise RegistryError(f"registry {self.namespace!r} lists v{missing[0]} without metadata")
        return [self._open_meta(value, v) for v, value in zip(versions, values, strict=True)]

    # -- promotion ---------------------------------------------------------------------

    def current(self) -> str | None:
        """The promoted version, or None before the first promotion."""
        value = self.client.get(self._k("current"))
        return value.decode() if value is not None else None

    def generation(self) -> int:
        """A counter bumped by every promotion and rollback: one cheap ``GET`` to poll."""
        value = self.client.get(self._k("generation"))
        return int(value) if value is not None else 0

    def current_state(self) -> tuple[str | None, int]:
        """The current version and the generation, read together (one ``MGET``)."""
        current, generation = self.client.mget(self._k("current"), self._k("generation"))
        return (current.decode() if current is not None else None), int(generation or 0)

    def history(self) -> list[str]:
        """The versions :meth:`rollback` would go back to, next first."""
        return [v.decode() for v in self.client.lrange(self._k("history"), 0, -1)]

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
        version = target.decode()
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

    def prune(self, note: str, keep: int, protect: Collection[str] = ()) -> list[str]:
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


def _version(version: str | int) -> str:
    text = str(version).strip().removeprefix("v")
    if not _VERSION.match(text):
        raise RegistryError(f"a version is a positive number such as 3 (or v3), got {version!r}")
    return text
