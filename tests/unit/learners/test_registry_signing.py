"""Snapshot signing without a server: HMAC, the envelope, refusals, the key from the env."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlearn.learners.envelope import (
    MAGIC,
    open_envelope,
    pack_envelope,
    sign,
    split_envelope,
    verify,
)
from streamlearn.learners.models import build_model, learn, score
from streamlearn.learners.registry import SnapshotError, SnapshotInfo, signing_key_from_env

KEY = b"unit-test key, 32 bytes long...."
OTHER_KEY = b"another key of sufficient length"
METADATA = {
    "version": "3",
    "name": "logistic",
    "parent": "2",
    "offsets": {"events:0": 41, "labels:1": 7},
}
MISMATCH = (
    "snapshot v3 signature does not match: refusing to unpickle "
    "(tampered, or signed with another key)"
)


def trained_model():
    model = build_model("logistic")
    for i in range(20):
        learn(model, {"clicks": float(i % 5), "device": "ios" if i % 2 else "web"}, i % 2, 1.0)
    return model


def test_sign_is_hmac_sha256_hex() -> None:
    # RFC 4231, test case 2
    assert (
        sign(b"what do ya want for nothing?", b"Jefe")
        == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


@given(payload=st.binary(max_size=200))
def test_verify_accepts_own_signature_only(payload: bytes) -> None:
    signature = sign(payload, KEY)
    assert verify(payload, signature, KEY)
    assert verify(payload, signature.encode(), KEY)
    assert not verify(payload, signature, OTHER_KEY)
    assert not verify(payload + b"x", signature, KEY)
    assert not verify(payload, signature[:-1], KEY)
    assert not verify(payload, "é" * 64, KEY)


def test_empty_key_is_refused() -> None:
    with pytest.raises(SnapshotError, match="no signing key: set STREAMLEARN_MODEL_KEY"):
        sign(b"payload", b"")


def test_envelope_round_trip_of_a_river_model() -> None:
    model = trained_model()
    envelope = pack_envelope(METADATA, pickle.dumps(model), KEY)
    metadata, payload = open_envelope(envelope, KEY)
    assert metadata == METADATA
    restored = pickle.loads(payload)
    x = {"clicks": 3.0, "device": "ios"}
    assert score(restored, x) == score(model, x)
    assert score(model, x) != 0.5


@given(
    metadata=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8)),
    payload=st.binary(max_size=100),
)
def test_envelope_round_trip_of_any_metadata(metadata: dict, payload: bytes) -> None:
    assert open_envelope(pack_envelope(metadata, payload, KEY), KEY) == (metadata, payload)


def test_every_single_byte_change_is_refused() -> None:
    envelope = pack_envelope(METADATA, pickle.dumps(trained_model()), KEY)
    _, meta, payload = split_envelope(envelope)
    assert len(meta) > 40 and len(payload) > 100
    for index in range(len(envelope)):
        for flip in (0x01, 0x80):
            tampered = bytearray(envelope)
            tampered[index] ^= flip
            with pytest.raises(SnapshotError):
                open_envelope(bytes(tampered), KEY)


def test_altered_metadata_is_refused_with_the_mismatch_message() -> None:
    envelope = pack_envelope(METADATA, b"pickle", KEY)
    moved = envelope.replace(b'"events:0":41', b'"events:0":99')
    assert moved != envelope and len(moved) == len(envelope)
    with pytest.raises(SnapshotError) as caught:
        open_envelope(moved, KEY)
    assert str(caught.value) == MISMATCH


def test_altered_pickle_is_refused_with_the_mismatch_message() -> None:
    envelope = pack_envelope(METADATA, pickle.dumps(trained_model()), KEY)
    tampered = envelope[:-5] + bytes([envelope[-5] ^ 0xFF]) + envelope[-4:]
    with pytest.raises(SnapshotError) as caught:
        open_envelope(tampered, KEY)
    assert str(caught.value) == MISMATCH


def test_truncated_or_extended_envelope_is_refused() -> None:
    envelope = pack_envelope(METADATA, b"pickle bytes", KEY)
    for broken in (envelope[:-1], envelope + b"\x00", envelope[:20], envelope[:8], b""):
        with pytest.raises(SnapshotError):
            open_envelope(broken, KEY)


def test_wrong_key_is_refused() -> None:
    envelope = pack_envelope(METADATA, b"pickle", KEY)
    with pytest.raises(SnapshotError) as caught:
        open_envelope(envelope, OTHER_KEY)
    assert str(caught.value) == MISMATCH


def test_unsigned_envelope_and_bare_pickle_are_refused() -> None:
    signature, meta, payload = split_envelope(pack_envelope(METADATA, b"pickle", KEY))
    assert signature is not None and len(signature) == 64
    unsigned = MAGIC + b"\n" + len(meta).to_bytes(4, "big") + meta + payload
    assert split_envelope(unsigned) == (None, meta, payload)
    with pytest.raises(SnapshotError, match="^snapshot v3 is not signed$"):
        open_envelope(unsigned, KEY)
    with pytest.raises(SnapshotError, match="^snapshot v7 is not signed$"):
        open_envelope(pickle.dumps(trained_model()), KEY, version="7")
    with pytest.raises(SnapshotError, match="not a streamlearn snapshot"):
        open_envelope(b'{"version": "3"}', KEY)


def test_a_resigned_envelope_with_another_key_is_refused() -> None:
    _, meta, payload = split_envelope(pack_envelope(METADATA, b"pickle", KEY))
    forged = pack_envelope({**METADATA, "version": "4"}, payload, OTHER_KEY)
    with pytest.raises(SnapshotError, match="snapshot v4 signature does not match"):
        open_envelope(forged, KEY)


def test_key_from_environment() -> None:
    assert signing_key_from_env({"STREAMLEARN_MODEL_KEY": "k" * 16}) == b"k" * 16
    assert signing_key_from_env({"STREAMLEARN_MODEL_KEY": "é" * 8}) == "é".encode() * 8


@pytest.mark.parametrize("environ", [{}, {"STREAMLEARN_MODEL_KEY": ""}])
def test_missing_key_says_how_to_set_it(environ: dict[str, str]) -> None:
    with pytest.raises(SnapshotError) as caught:
        signing_key_from_env(environ)
    message = str(caught.value)
    assert message.startswith("no signing key: set STREAMLEARN_MODEL_KEY")
    assert "export STREAMLEARN_MODEL_KEY=" in message and "at least 16 bytes" in message


def test_short_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(SnapshotError, match="is 7 bytes long: use a secret of at least 16") as c:
        signing_key_from_env({"STREAMLEARN_MODEL_KEY": "hunter2"})
    assert "hunter2" not in str(c.value)


def snapshot_info(**changes: object) -> SnapshotInfo:
    fields: dict[str, object] = {
        "version": "1",
        "name": "logistic",
        "created_at": "2026-01-02T03:04:05+00:00",
        "events_scored": 10,
        "labels_learned": 2,
    }
    return SnapshotInfo.model_validate({**fields, **changes})


def test_snapshot_info_validates_its_fields() -> None:
    info = snapshot_info(offsets={"events:0": 3}, metrics={"roc_auc": float("inf")})
    assert info.metrics == {"roc_auc": None} and info.parent is None and info.note == ""
    for bad in (
        {"version": "0"},
        {"version": "v1"},
        {"created_at": "yesterday"},
        {"created_at": "2026-01-02T03:04:05"},
        {"created_at": "2026-01-02T03:04:05+02:00"},
        {"offsets": {"events": 3}},
        {"offsets": {"events:0": -1}},
        {"events_scored": -1},
        {"surprise": 1},
    ):
        with pytest.raises(ValueError):
            snapshot_info(**bad)
    with pytest.raises(ValueError):
        info.note = "frozen"  # type: ignore[misc]
