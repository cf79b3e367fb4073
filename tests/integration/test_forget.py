"""``streamlearn forget``: an entity leaves both Redis stores, its pairs and snapshots too.

Run on RedisStore (one Redis) and on the sharded store (one Redis and a 3-master
cluster): after events of two users, forgetting one user deletes its state, its pairs
and the snapshots of its events, and nothing of the other user; forgetting an item
deletes its pairs with every user.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import redis
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.features.cluster_store import ClusterStore, store_client
from streamlearn.features.interactions import InteractionConfig, entity_ids
from streamlearn.features.redis_store import RedisStore
from streamlearn.features.store import EventOp, StoreConfig

EVENTS = [("u1", "i1", "a1"), ("u1", "i2", "a1"), ("u2", "i2", "a1"), ("u2", "i3", None)]


@pytest.fixture(params=["redis", "sharded-on-redis", "sharded-on-cluster"])
def store(request: pytest.FixtureRequest, unique_prefix: str) -> Iterator[object]:
    config, features = StoreConfig(key_prefix=unique_prefix), InteractionConfig()
    if request.param == "redis":
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        yield RedisStore(client, config, features)
    else:
        cluster = request.param.endswith("cluster")
        url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
        client = store_client(url, True)
        yield ClusterStore(client, config, features)
    client.close()


def apply_events(store: RedisStore | ClusterStore) -> None:
    ops = []
    for n, (user, item, author) in enumerate(EVENTS):
        entities = entity_ids(user, item, author)
        payload = orjson.dumps({"kinds": [kind for kind, _ in entities]})
        ops.append(EventOp(f"e{n}", f"ev:0:{n}", 0, n, 1_000 * n, entities, payload, None, 1.0))
    store.apply(ops, {}, {0: 10_000})


def kept(store: RedisStore | ClusterStore) -> dict[str, bool]:
    """Which entities still have state."""
    names = {
        f"{kind}:{entity}"
        for user, item, author in EVENTS
        for kind, entity in entity_ids(user, item, author)
    }
    return {name: store.state(*name.split(":", 1)).count > 0 for name in sorted(names)}


def test_forgetting_a_user_deletes_its_state_pairs_and_snapshots_only(store):
    apply_events(store)
    before = kept(store)
    assert all(before.values()), before
    done = store.forget("user", "u1")
    assert (done.entities, done.pairs, done.snapshots) == (1, 3, 2)
    after = kept(store)
    gone = {name for name, present in after.items() if not present}
    assert gone == {"user:u1", "user_item:2:u1|i1", "user_item:2:u1|i2", "user_author:2:u1|a1"}
    # the other user's events still have their snapshots: a label for them joins
    assert store.forget("user", "u2").snapshots == 2


def test_forgetting_an_item_deletes_its_pairs_with_every_user(store):
    apply_events(store)
    done = store.forget("item", "i2")
    assert (done.entities, done.pairs, done.snapshots) == (1, 2, 2)
    gone = {name for name, present in kept(store).items() if not present}
    assert gone == {"item:i2", "user_item:2:u1|i2", "user_item:2:u2|i2"}
    assert store.forget("item", "i2").entities == 0, "nothing left to forget"


def test_the_command_forgets_an_author_from_the_configured_store(
    redis_url, unique_prefix, monkeypatch
):
    store = RedisStore(
        redis.Redis.from_url(redis_url), StoreConfig(key_prefix=unique_prefix), InteractionConfig()
    )
    apply_events(store)
    monkeypatch.setenv("STREAMLEARN_REDIS__URL", redis_url)
    monkeypatch.setenv("STREAMLEARN_STORE__KEY_PREFIX", unique_prefix)
    result = CliRunner().invoke(app, ["forget", "--author", "a1", "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output) == {
        "kind": "author", "id": "a1", "entities": 1, "pairs": 2, "snapshots": 3
    }  # fmt: skip
    assert store.state("author", "a1").count == 0 and store.state("user", "u1").count == 2
