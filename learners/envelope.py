"""The signed snapshot envelope: a model's metadata and pickle, under one HMAC.

A snapshot is a pickle, and unpickling runs code, so every snapshot travels in a signed
*envelope*: its metadata (JSON) and its pickle, with an HMAC-SHA256 over both. The
signature is checked before anything is unpickled; an unsigned, tampered or foreign
snapshot is refused with a :class:`SnapshotError`. The key comes from the environment
(``STREAMLEARN_MODEL_KEY``, see :func:`signing_key_from_env`) and is never logged or
stored. :mod:`learners.registry` keeps envelopes in Redis.

Envelope layout (bytes)::

    b"SLSNAP1\\n"  signature (64 hex characters)  b"\\n"
    metadata length (4 bytes, big endian)  metadata (canonical JSON)  pickle

The signature covers everything but itself: the magic, the length, the metadata and
the pickle, so nobody can change a version, an offset or a byte of the model.

Examples
--------
>>> key = b"a key of sixteen bytes or more"
>>> envelope = pack_envelope({"version": "3", "name": "logistic"}, b"pickle bytes", key)
>>> open_envelope(envelope, key)
({'name': 'logistic', 'version': '3'}, b'pickle bytes')
>>> open_envelope(envelope.replace(b"pickle", b"pickly"), key)
Traceback (most recent call last):
...
streamlearn.learners.envelope.SnapshotError: snapshot v3 signature does not match: refusing to unpickle (tampered, or signed with another key)
"""  # noqa: E501

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import struct
from collections.abc import Mapping
from typing import Any

__all__ = [
    "KEY_ENV",
    "MAGIC",
    "MIN_KEY_BYTES",
    "RegistryError",
    "SnapshotError",
    "canonical_json",
    "no_key",
    "open_envelope",
    "pack_envelope",
    "sign",
    "signature_matches",
    "signing_key_from_env",
    "split_envelope",
    "verify",
]

KEY_ENV = "STREAMLEARN_MODEL_KEY"
MIN_KEY_BYTES = 16
MAGIC = b"SLSNAP1\n"
_LENGTH = struct.Struct(">I")
_SIGNATURE_HEX = 64
_HEX = re.compile(rb"^[0-9a-f]{64}$")


class RegistryError(ValueError):
    """A registry operation that cannot be done: unknown version, nothing to roll back."""


class SnapshotError(RegistryError):
    """A snapshot refused: unsigned, tampered, signed with another key, or no key at all."""


def no_key() -> SnapshotError:
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
    streamlearn.learners.envelope.SnapshotError: no signing key: set STREAMLEARN_MODEL_KEY ...
    """
    value = environ.get(KEY_ENV, "")
    if not value:
        raise no_key()
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
        raise no_key()
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


def signature_matches(payload: bytes, signature: bytes, key: bytes) -> bool:
    """Whether ``signature`` is 64 lowercase hex characters and the HMAC of ``payload``.

    >>> key = b"0123456789abcdef"
    >>> signature = sign(b"payload", key).encode("ascii")
    >>> signature_matches(b"payload", signature, key), signature_matches(b"payload", b"", key)
    (True, False)
    """
    return bool(_HEX.match(signature)) and verify(payload, signature, key)


def canonical_json(metadata: Mapping[str, Any]) -> bytes:
    """``metadata`` as the bytes that are signed: sorted keys, no spaces, UTF-8, no NaN."""
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
    meta = canonical_json(metadata)
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
    streamlearn.learners.envelope.SnapshotError: snapshot is not signed
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
    streamlearn.learners.envelope.SnapshotError: snapshot v3 signature does not match: refusing to unpickle (tampered, or signed with another key)
    >>> unsigned = MAGIC + b"\\n" + envelope[len(MAGIC) + 65 :]
    >>> open_envelope(unsigned, key)
    Traceback (most recent call last):
    ...
    streamlearn.learners.envelope.SnapshotError: snapshot v3 is not signed
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
    if not signature_matches(_signed_part(meta, payload), signature, key):
        raise SnapshotError(
            f"{name} signature does not match: refusing to unpickle "
            "(tampered, or signed with another key)"
        )
    metadata = json.loads(meta)
    if not isinstance(metadata, dict):
        raise SnapshotError(f"{name} metadata is not a JSON object")
    return metadata, payload
