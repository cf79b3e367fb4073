"""A crash between the sharded store's writes loses and doubles nothing: the batch is
applied again (as a restarted worker processes its records again) and every entity
ends as the in-memory store's, which applied the batch once."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from streamlearn.features.cluster_store import ClusterStore, store_client
from streamlearn.features.interactions import InteractionConfig, entity_ids
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import EventOp, LabelOp, StoreConfig

pytestmark = pytest.mark.integration

FEATURES = InteractionConfig()


class Crash(Exception):
    pass


@pytest.fixture(params=["redis", "cluster"])
def client_of(request: pytest.FixtureRequest) -> Iterator[object]:
    cluster = request.param == "cluster"
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    client = store_client(url, cluster)
    yield client
    client.close()


def events(start: int, n: int) -> list[EventOp | LabelOp]:
    ops: list[EventOp | LabelOp] = []
    for i in range(start, start + n):
        entities = entity_ids(f"u{i % 3}", f"i{i % 4}", f"a{i % 2}")
        payload = orjson.dumps({"kinds": [kind for kind, _ in entities]})
        ops.append(EventOp(f"e{i}", f"ev:0:{i}", 0, i, 1000 * i, entities, payload, None, 1.0))
    return ops


def labels(ids: range) -> list[EventOp | LabelOp]:
    return [LabelOp(f"e{i}", f"lb:0:{i}", float(i % 2), 1.0, 1000 * i + 500) for i in ids]


def crash_in(monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """Make the store's next batch stop before (``entities``) or after (``confirm``) the
    entities' check-and-set, as a worker killed there would."""
    original = ClusterStore._check_and_set

    def crashing(self: ClusterStore, *args: object) -> set[str]:
        monkeypatch.setattr(ClusterStore, "_check_and_set", original)
        if step == "entities":
            raise Crash
        original(self, *args)  # type: ignore[arg-type]
        raise Crash

    monkeypatch.setattr(ClusterStore, "_check_and_set", crashing)


@pytest.mark.parametrize("step", ["entities", "confirm"])
def test_a_batch_applied_again_after_a_crash_counts_each_event_and_label_once(
    client_of: object, unique_prefix: str, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    config = StoreConfig(key_prefix=unique_prefix, implicit_negative_after_s=5)
    memory = MemoryStore(config, FEATURES)
    store = ClusterStore(client_of, config, FEATURES)  # type: ignore[arg-type]
    batches = [events(0, 12), labels(range(0, 12, 2)) + events(12, 12), labels(range(1, 24, 2))]
    for batch in batches:
        marks = {0: max(op.timestamp_ms for op in batch)}
        expected = memory.apply(batch, {}, marks)
        crash_in(monkeypatch, step)
        with pytest.raises(Crash):
            store.apply(batch, {}, marks)
        again = store.apply(batch, {}, marks)
        for mine, theirs in zip(expected.outcomes, again.outcomes, strict=True):
            assert mine.states == theirs.states
    for kind, entity in [("user", f"u{i}") for i in range(3)] + [("item", "i1"), ("author", "a0")]:
        assert store.state(kind, entity) == memory.entities[f"{kind}:{entity}"], (kind, entity)


def test_two_writers_on_the_same_entities_keep_the_counts_exact(
    client_of: object, unique_prefix: str
) -> None:
    """Two workers (two partitions) update the same users and items at once: each
    entity's check-and-set retries on the other's writes, and no event is lost."""
    import threading

    config = StoreConfig(key_prefix=unique_prefix)
    stores = [ClusterStore(client_of, config, FEATURES) for _ in range(2)]  # type: ignore[arg-type]
    errors: list[BaseException] = []

    def work(partition: int) -> None:
        try:
            for start in range(0, 400, 20):
                batch: list[EventOp | LabelOp] = []
                for i in range(start, start + 20):
                    entities = entity_ids(f"u{i % 2}", f"i{i % 3}", None)
                    event = f"p{partition}e{i}"
                    source = f"ev:{partition}:{i}"
                    batch.append(EventOp(event, source, partition, i, i, entities, b"{}", 1.0, 1.0))
                stores[partition].apply(batch, {}, {})
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=work, args=(p,)) for p in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [stores[0].state("user", f"u{u}").count for u in range(2)] == [400, 400]
    assert [stores[0].state("item", f"i{i}").count for i in range(3)] == [268, 266, 266]
    assert stores[0].state("user", "u0").positives == 400.0
