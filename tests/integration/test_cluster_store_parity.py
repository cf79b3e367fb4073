"""The sharded store (``ClusterStore``) and the in-memory store agree on every outcome,
state, expiry and sweep: on a single Redis and on a real 3-master Redis Cluster."""

from __future__ import annotations

import random
from collections.abc import Iterator

import orjson
import pytest

from streamlearn.features.cluster_store import ClusterStore, store_client
from streamlearn.features.interactions import InteractionConfig, entity_ids
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import EventOp, LabelOp, LabelOutcome, StoreConfig, split_source
from tests.integration.test_store_parity import pending_ops, random_ops

pytestmark = pytest.mark.integration


@pytest.fixture(params=["redis", "cluster"])
def client_of(request: pytest.FixtureRequest) -> Iterator[object]:
    """A client of the session's Redis, or of the session's Redis Cluster."""
    cluster = request.param == "cluster"
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    client = store_client(url, cluster)
    yield client
    client.close()


def _store(client: object, config: StoreConfig, features: InteractionConfig) -> ClusterStore:
    return ClusterStore(client, config, features)  # type: ignore[arg-type]


def test_cluster_and_memory_stores_agree_on_outcomes_states_and_sweeps(client_of, unique_prefix):
    rng = random.Random(1)
    features = InteractionConfig()
    config = StoreConfig(key_prefix=unique_prefix, pending_ttl_s=50, implicit_negative_after_s=30)
    memory = MemoryStore(config, features)
    remote = _store(client_of, config, features)
    ops = random_ops(rng, 3000)
    seen: set[str] = set()
    start = 0
    while start < len(ops):
        batch = ops[start : start + rng.randrange(1, 60)]
        start += len(batch)
        marks = {0: max(op.timestamp_ms for op in batch)}
        expected, actual = memory.apply(batch, {}, marks), remote.apply(batch, {}, marks)
        for mine, theirs in zip(expected.outcomes, actual.outcomes, strict=True):
            assert (mine.status, mine.states) == (theirs.status, theirs.states)
            seen.add(f"{type(mine).__name__}:{mine.status}")
            if isinstance(mine, LabelOutcome):
                assert (mine.payload, mine.score) == (theirs.payload, theirs.score)
            if hasattr(mine, "label"):
                assert mine.label == theirs.label
        assert expected.expired == actual.expired
        assert [(i.event_id, i.states, i.payload) for i in expected.implicit] == [
            (i.event_id, i.states, i.payload) for i in actual.implicit
        ]
    assert seen >= {
        "EventOutcome:new",
        "EventOutcome:replay",
        "EventOutcome:duplicate",
        "LabelOutcome:learn",
        "LabelOutcome:pending",
        "LabelOutcome:duplicate",
        "LabelOutcome:late",
        "LabelOutcome:relearn",
    }
    for kind, entity in (("user", "u3"), ("item", "i7"), ("author", "a1")):
        assert remote.state(kind, entity) == memory.entities[f"{kind}:{entity}"]


def test_cluster_and_memory_stores_agree_on_the_pending_bound_and_every_expiry(
    client_of, unique_prefix
):
    rng = random.Random(7)
    features = InteractionConfig()
    config = StoreConfig(
        key_prefix=unique_prefix, pending_max=60, pending_ttl_s=30, pending_max_wait_s=90
    )
    memory = MemoryStore(config, features)
    remote = _store(client_of, config, features)
    ops = pending_ops(rng, 4000)
    causes: set[str] = set()
    waited: set[int] = set()
    start = 0
    while start < len(ops):
        batch = ops[start : start + rng.randrange(1, 80)]
        start += len(batch)
        times = [op.timestamp_ms for op in batch]
        marks = {0: max(times) - 30_000, 1: min(times)} if rng.random() < 0.9 else {}
        clock = min(marks.values()) if marks else -1
        expected = memory.apply(batch, {}, marks, clock)
        actual = remote.apply(batch, {}, marks, clock)
        for mine, theirs in zip(expected.outcomes, actual.outcomes, strict=True):
            assert (mine.status, mine.states) == (theirs.status, theirs.states)
        assert expected.expired == actual.expired
        causes |= {e.cause for e in expected.expired}
        waited |= {
            split_source(e.label.source)[1]
            for e in expected.expired
            if e.label and e.cause == "max_wait"
        }
        assert memory.pending_count() == remote.pending_count() <= config.pending_max
    assert causes == {"ttl", "max_wait", "overflow"}
    assert {2, 3} <= waited


def test_scores_held_labels_and_a_node_that_forgot_the_script(client_of, unique_prefix):
    features = InteractionConfig()
    store = _store(client_of, StoreConfig(key_prefix=unique_prefix), features)
    entities = entity_ids("u1", "i1", None)
    payload = orjson.dumps({"kinds": [kind for kind, _ in entities]})
    events = [
        EventOp(f"e{i}", f"ev:0:{i}", 0, i, 1000 + i, entities, payload, None, 1.0) for i in (1, 2)
    ]
    store.apply(events, {}, {})
    store.apply([], {"e1": 0.25, "e2": 0.75}, {})
    client_of.script_flush()  # as after a restart or a failover: the script is loaded again
    held = LabelOp("e1", "lb:0:1", 1.0, 1.0, 2000, held=True)
    fetched = LabelOp("e2", "lb:0:2", 1.0, 1.0, 2000)
    outcomes = store.apply([held, fetched], {}, {}).outcomes
    assert [(o.status, o.payload, o.states, o.score) for o in outcomes] == [
        ("learn", b"", [], None),
        ("learn", payload, outcomes[1].states, 0.75),
    ]
    assert store.state("user", "u1").positives == 2.0
