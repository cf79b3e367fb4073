"""The sharded store (``ClusterStore``) and the in-memory store agree on every outcome,
state, expiry and sweep: on a single Redis and on a real 3-master Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from streamlearn.features.cluster_store import ClusterStore, store_client
from streamlearn.features.interactions import InteractionConfig, entity_ids
from streamlearn.features.store import EventOp, LabelOp, StoreConfig
from tests.integration.test_store_parity import (
    agree_on_outcomes_states_and_sweeps,
    agree_on_the_pending_bound_and_every_expiry,
)

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
    config = StoreConfig(key_prefix=unique_prefix, pending_ttl_s=50, implicit_negative_after_s=30)
    remote = _store(client_of, config, InteractionConfig())
    memory = agree_on_outcomes_states_and_sweeps(remote, config)
    for kind, entity in (("user", "u3"), ("item", "i7"), ("author", "a1")):
        assert remote.state(kind, entity) == memory.entities[f"{kind}:{entity}"]


def test_cluster_and_memory_stores_agree_on_the_pending_bound_and_every_expiry(
    client_of, unique_prefix
):
    config = StoreConfig(
        key_prefix=unique_prefix, pending_max=60, pending_ttl_s=30, pending_max_wait_s=90
    )
    agree_on_the_pending_bound_and_every_expiry(
        _store(client_of, config, InteractionConfig()), config
    )


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
