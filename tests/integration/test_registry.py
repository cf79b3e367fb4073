"""The model registry and its CLI on the real Redis of the local stack."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from streamlearn.cli.model import model_app
from streamlearn.learners.envelope import pack_envelope, split_envelope
from streamlearn.learners.models import build_model, learn, score
from streamlearn.learners.registry import (
    ModelRegistry,
    NonFiniteModelError,
    RegistryError,
    SnapshotError,
)

KEY = b"integration test key, 32 bytes.."
PROBES = [
    {"clicks": 0.0, "device": "ios"},
    {"clicks": 4.0, "device": "web"},
    {"clicks": 2.0, "device": "android"},
]


def trained(positive_device: str, n: int = 60):
    """A logistic model that learned that ``positive_device`` clicks."""
    model = build_model("logistic")
    for i in range(n):
        device = ("ios", "web", "android")[i % 3]
        learn(model, {"clicks": float(i % 5), "device": device}, device == positive_device, 1.0)
    return model


def scores(model) -> list[float]:
    return [score(model, x) for x in PROBES]


@pytest.fixture
def registry(redis_client: redis.Redis, unique_prefix: str) -> ModelRegistry:
    return ModelRegistry(redis_client, unique_prefix, KEY)


def save(registry: ModelRegistry, model, parent: str | None = None, **changes):
    fields = {
        "name": "logistic",
        "parent": parent,
        "events_scored": 100,
        "labels_learned": 60,
        "offsets": {"events:0": 100, "labels:0": 60},
        "metrics": {"roc_auc": 0.8, "log_loss": 0.5},
        **changes,
    }
    return registry.save(model, **fields)


@pytest.fixture
def two_versions(registry: ModelRegistry):
    first, second = trained("ios"), trained("web")
    assert scores(first) != scores(second)
    one = save(registry, first, note="first")
    two = save(registry, second, parent=one.version, events_scored=200, labels_learned=120)
    return (first, one), (second, two)


def test_save_allocates_versions_and_lists_them(registry: ModelRegistry, two_versions) -> None:
    (_, one), (_, two) = two_versions
    assert (one.version, two.version) == ("1", "2")
    assert two.parent == "1" and one.parent is None and one.note == "first"
    assert two.offsets == {"events:0": 100, "labels:0": 60}
    assert two.metrics == {"roc_auc": 0.8, "log_loss": 0.5}
    assert one.created_at.endswith("+00:00")
    assert registry.list() == [one, two]
    assert registry.info("2") == two and registry.info("v1") == one
    assert registry.current() is None and registry.generation() == 0


def test_versions_sort_by_number(registry: ModelRegistry) -> None:
    model = trained("ios", n=3)
    infos = [save(registry, model) for _ in range(11)]
    assert [info.version for info in registry.list()] == [str(i) for i in range(1, 12)]
    assert registry.list() == infos


def test_concurrent_saves_get_distinct_versions(registry: ModelRegistry) -> None:
    model = trained("ios", n=3)
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda _: save(registry, model).version, range(16)))
    assert sorted(versions, key=int) == [str(i) for i in range(1, 17)]


def test_load_gives_the_same_predictions(registry: ModelRegistry, two_versions) -> None:
    for model, info in two_versions:
        loaded, loaded_info = registry.load(info.version)
        assert loaded_info == info
        assert scores(loaded) == scores(model)
        assert [loaded.predict_proba_one(x) for x in PROBES] == [
            model.predict_proba_one(x) for x in PROBES
        ]


def test_promote_and_rollback(registry: ModelRegistry, two_versions) -> None:
    (_, one), (second, two) = two_versions
    registry.promote(one.version)
    assert registry.current() == "1" and registry.generation() == 1
    registry.promote(two.version)
    assert registry.current_state() == ("2", 2)
    assert registry.history() == ["1"]
    registry.promote("2")  # already current: nothing changes
    assert registry.current_state() == ("2", 2)

    assert registry.rollback() == "1"
    assert registry.current_state() == ("1", 3)
    with pytest.raises(RegistryError, match="nothing to roll back: v1 is the first version"):
        registry.rollback()
    assert registry.current_state() == ("1", 3)

    registry.promote("2")
    model, info = registry.load(registry.current())
    assert info == two and scores(model) == scores(second)


def test_rollback_walks_back_through_promotions(registry: ModelRegistry) -> None:
    model = trained("ios", n=3)
    for _ in range(3):
        save(registry, model)
    for version in ("1", "2", "3", "1"):
        registry.promote(version)
    assert [registry.rollback() for _ in range(3)] == ["3", "2", "1"]
    assert registry.generation() == 7
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()


def test_unknown_versions(registry: ModelRegistry, two_versions) -> None:
    with pytest.raises(RegistryError, match="nothing to roll back: no version was ever promoted"):
        registry.rollback()
    for call in (registry.load, registry.info, registry.promote):
        with pytest.raises(RegistryError, match="no snapshot v9 in registry"):
            call("9")
    with pytest.raises(RegistryError, match="a version is a positive number"):
        registry.load("latest")
    assert registry.generation() == 0


def test_tampered_envelope_in_redis_is_refused(
    registry: ModelRegistry, redis_client: redis.Redis, two_versions
) -> None:
    snapshots = f"{registry.prefix}snapshots"
    envelope = redis_client.hget(snapshots, "2")
    tampered = envelope[:-10] + bytes([envelope[-10] ^ 0x01]) + envelope[-9:]
    redis_client.hset(snapshots, "2", tampered)
    with pytest.raises(SnapshotError, match="snapshot v2 signature does not match: refusing"):
        registry.load("2")
    with pytest.raises(SnapshotError, match="snapshot v2 signature does not match"):
        registry.promote("2")
    with pytest.raises(SnapshotError, match="snapshot v2 signature does not match"):
        registry.export("2", Path("/nonexistent/never-written.snap"))
    assert registry.current() is None and registry.generation() == 0


def test_unsigned_or_foreign_envelopes_in_redis_are_refused(
    registry: ModelRegistry, redis_client: redis.Redis, two_versions
) -> None:
    (first, _), _ = two_versions
    snapshots = f"{registry.prefix}snapshots"
    redis_client.hset(snapshots, "2", pickle.dumps(first))
    with pytest.raises(SnapshotError, match="^snapshot v2 is not signed$"):
        registry.load("2")
    _, meta, payload = split_envelope(redis_client.hget(snapshots, "1"))
    other = pack_envelope(json.loads(meta), payload, b"someone else's key, long enough")
    redis_client.hset(snapshots, "1", other)
    with pytest.raises(SnapshotError, match="snapshot v1 signature does not match"):
        registry.load("1")


def test_a_valid_envelope_moved_to_another_version_is_refused(
    registry: ModelRegistry, redis_client: redis.Redis, two_versions
) -> None:
    snapshots = f"{registry.prefix}snapshots"
    redis_client.hset(snapshots, "2", redis_client.hget(snapshots, "1"))
    with pytest.raises(SnapshotError, match="snapshot v2 holds the signed snapshot of v1"):
        registry.load("2")


def test_tampered_metadata_index_is_refused(
    registry: ModelRegistry, redis_client: redis.Redis, two_versions
) -> None:
    meta_key = f"{registry.prefix}meta"
    value = redis_client.hget(meta_key, "1")
    redis_client.hset(meta_key, "1", value.replace(b'"events_scored":100', b'"events_scored":900'))
    with pytest.raises(SnapshotError, match="snapshot v1 signature does not match"):
        registry.info("1")
    with pytest.raises(SnapshotError, match="snapshot v1 signature does not match"):
        registry.list()


def test_another_key_cannot_load(redis_client: redis.Redis, unique_prefix: str, two_versions):
    stranger = ModelRegistry(redis_client, unique_prefix, b"a different key of 32 bytes....")
    with pytest.raises(SnapshotError, match="snapshot v1 signature does not match"):
        stranger.load("1")


def test_export_then_import(registry: ModelRegistry, two_versions, tmp_path: Path) -> None:
    _, (second, two) = two_versions
    path = tmp_path / "v2.snap"
    assert registry.export("2", path) == two
    imported = registry.import_file(path)
    assert imported.version == "3" and imported.parent == "2"
    assert imported.note.startswith("imported from v2.snap (v2, ")
    assert (imported.events_scored, imported.offsets, imported.metrics) == (
        two.events_scored,
        two.offsets,
        two.metrics,
    )
    model, info = registry.load("3")
    assert info == imported and scores(model) == scores(second)
    assert [i.version for i in registry.list()] == ["1", "2", "3"]


def test_import_into_another_namespace(
    registry: ModelRegistry, redis_client: redis.Redis, unique_prefix, two_versions, tmp_path
) -> None:
    (first, one), _ = two_versions
    registry.export("1", tmp_path / "v1.snap")
    elsewhere = ModelRegistry(redis_client, f"{unique_prefix}-b", KEY)
    imported = elsewhere.import_file(tmp_path / "v1.snap")
    assert (imported.version, imported.parent) == ("1", "1")
    assert scores(elsewhere.load("1")[0]) == scores(first)


def test_import_refuses_tampered_or_foreign_files(
    registry: ModelRegistry, redis_client: redis.Redis, unique_prefix, two_versions, tmp_path
) -> None:
    (first, _), _ = two_versions
    path = tmp_path / "v1.snap"
    registry.export("1", path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"labels_learned":60', b'"labels_learned":61'))
    with pytest.raises(SnapshotError, match="v1.snap: snapshot v1 signature does not match"):
        registry.import_file(path)
    stranger = ModelRegistry(redis_client, unique_prefix, b"a different key of 32 bytes....")
    path.write_bytes(data)
    with pytest.raises(SnapshotError, match="signature does not match"):
        stranger.import_file(path)
    raw = tmp_path / "model.pkl"
    raw.write_bytes(pickle.dumps(first))
    with pytest.raises(SnapshotError, match="model.pkl: snapshot is not signed"):
        registry.import_file(raw)
    assert [i.version for i in registry.list()] == ["1", "2"]


def test_registry_needs_a_bytes_client_and_a_key(redis_url: str, unique_prefix: str) -> None:
    text_client = redis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="returning bytes"):
        ModelRegistry(text_client, unique_prefix, KEY)
    text_client.close()
    client = redis.Redis.from_url(redis_url)
    with pytest.raises(SnapshotError, match="no signing key"):
        ModelRegistry(client, unique_prefix, b"")
    with pytest.raises(SnapshotError, match="at least 16 bytes"):
        ModelRegistry(client, unique_prefix, b"short")
    assert "integration test key" not in repr(ModelRegistry(client, unique_prefix, KEY))
    client.close()


# -- the CLI ---------------------------------------------------------------------------


@pytest.fixture
def cli(redis_url: str, unique_prefix: str, redis_client: redis.Redis):
    """Run ``model ...`` against the test Redis and namespace; returns the result."""
    runner = CliRunner()
    env = {
        "STREAMLEARN_REDIS__URL": redis_url,
        "STREAMLEARN_STORE__KEY_PREFIX": unique_prefix,
        "STREAMLEARN_MODEL_KEY": KEY.decode(),
        "STREAMLEARN_CONFIG": None,
    }

    def invoke(*args: str, **env_changes: str | None):
        return runner.invoke(model_app, list(args), env={**env, **env_changes})

    return invoke


def test_cli_list_show_promote_rollback(cli, two_versions) -> None:
    result = cli("list")
    assert result.exit_code == 0, result.output
    assert "v1" in result.stdout and "v2" in result.stdout and "0.800" in result.stdout

    result = cli("show", "2")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["version"] == "2" and shown["parent"] == "1" and shown["current"] is False
    assert shown["offsets"] == {"events:0": 100, "labels:0": 60}

    result = cli("rollback")
    assert result.exit_code == 2
    assert "nothing to roll back: no version was ever promoted" in result.output
    assert "Traceback" not in result.output

    assert cli("promote", "1").exit_code == 0
    result = cli("promote", "v2")
    assert result.exit_code == 0, result.output
    assert "v2 is current (was v1), generation 2" in result.stdout
    assert json.loads(cli("show", "2").stdout)["current"] is True

    result = cli("rollback")
    assert result.exit_code == 0, result.output
    assert "rolled back from v2 to v1, generation 3" in result.stdout
    result = cli("rollback")
    assert result.exit_code == 2 and "nothing to roll back: v1 is the first" in result.output

    listed = cli("list").stdout
    line_v1 = next(line for line in listed.splitlines() if " v1 " in f" {line} ")
    assert "*" in line_v1


def test_cli_export_import(cli, registry: ModelRegistry, two_versions, tmp_path: Path) -> None:
    _, (second, _) = two_versions
    path = tmp_path / "exported.snap"
    result = cli("export", "2", str(path))
    assert result.exit_code == 0, result.output
    assert path.read_bytes().startswith(b"SLSNAP1\n")
    result = cli("import", str(path))
    assert result.exit_code == 0, result.output
    assert "as v3 (parent v2, logistic)" in result.stdout
    assert scores(registry.load("3")[0]) == scores(second)


def test_cli_refusals_exit_2_with_a_message(
    cli, registry: ModelRegistry, redis_client: redis.Redis, two_versions, tmp_path: Path
) -> None:
    result = cli("list", STREAMLEARN_MODEL_KEY=None)
    assert result.exit_code == 2
    assert "no signing key: set STREAMLEARN_MODEL_KEY" in result.output

    result = cli("show", "9")
    assert result.exit_code == 2 and "no snapshot v9 in registry" in result.output

    snapshots = f"{registry.prefix}snapshots"
    envelope = redis_client.hget(snapshots, "2")
    redis_client.hset(snapshots, "2", envelope[:-1] + bytes([envelope[-1] ^ 0x01]))
    result = cli("promote", "2")
    assert result.exit_code == 2
    assert "refused: snapshot v2 signature does not match" in result.output
    assert registry.current() is None

    bad = tmp_path / "bad.snap"
    bad.write_bytes(b"\x80\x05N.")
    result = cli("import", str(bad))
    assert result.exit_code == 2 and "snapshot is not signed" in result.output

    result = cli("list", STREAMLEARN_MODEL_KEY="a different key of 32 bytes....")
    assert result.exit_code == 2 and "refused: snapshot v1 signature does not match" in (
        result.output
    )
    for result in [cli("list", STREAMLEARN_REDIS__URL="http://nowhere")]:
        assert result.exit_code == 2 and "configuration error" in result.output
        assert "Traceback" not in result.output


def test_cli_empty_registry_and_unreachable_redis(cli) -> None:
    result = cli("list")
    assert result.exit_code == 0 and "no snapshots in registry" in result.stdout
    result = cli("list", STREAMLEARN_REDIS__URL="redis://user:secret@127.0.0.1:1/0")
    assert result.exit_code == 1
    assert "Redis at redis://user:***@127.0.0.1:1/0 failed" in result.output
    assert "secret" not in result.output


def test_prune_keeps_the_newest_checkpoints_and_never_the_current_or_history(
    registry: ModelRegistry,
) -> None:
    model = build_model("logistic")

    def checkpoint(note: str) -> str:
        return save(
            registry, model, events_scored=0, labels_learned=0, offsets={}, metrics={}, note=note
        ).version

    versions = [checkpoint("checkpoint of w") for _ in range(6)]
    other = checkpoint("checkpoint of another")
    registry.promote(versions[0])
    registry.promote(versions[1])

    deleted = registry.prune("checkpoint of w", keep=2, protect={versions[2]})

    assert deleted == [versions[3]]
    remaining = [info.version for info in registry.list()]
    assert remaining == [*versions[:3], *versions[4:], other]


def test_a_model_with_nan_weights_is_never_saved(registry: ModelRegistry) -> None:
    """A checkpoint of a poisoned model would bring the NaN back after every restart."""
    good = save(registry, trained("ios"))
    poisoned = trained("web")
    learn(poisoned, {"clicks": 1e300, "device": "ios"}, True, 1.0)
    with pytest.raises(NonFiniteModelError, match="NaN or infinite"):
        save(registry, poisoned, parent=good.version)
    assert [info.version for info in registry.list()] == [good.version]
    model, _ = registry.load(good.version)
    assert all(0.0 < p < 1.0 for p in scores(model))
