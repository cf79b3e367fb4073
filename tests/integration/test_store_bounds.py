"""Every key the Redis store writes expires or belongs to a bounded set; entities expire
``store.state_ttl_s`` after their last update."""

from __future__ import annotations

import re
import time

import orjson
import redis

from streamlearn.features.interactions import InteractionConfig, entity_ids
from streamlearn.features.redis_store import RedisStore
from streamlearn.features.store import EventOp, LabelOp, StoreConfig

FEATURES = InteractionConfig()
T0 = 1_767_225_600_000


def event(n: int, t: int, user: str, item: str, label: float | None = None) -> EventOp:
    entities = entity_ids(user, item, "a1")
    payload = orjson.dumps({"kinds": [kind for kind, _ in entities]})
    return EventOp(f"e{n}", f"ev:{n % 2}:{n}", n % 2, n, t, entities, payload, label, 1.0)


def bounded_keys(prefix: str) -> re.Pattern[bytes]:
    """The keys without a TTL, a fixed number per partition: the pending labels (and the set
    of them all) and the implicit-label deadlines (their sizes are bounded by the store's
    configuration)."""
    return re.compile(rb"^" + re.escape(prefix.encode()) + rb":(pl|plz:(?:\d+|all)|dl:\d+)$")


def test_after_a_batch_every_key_under_the_prefix_expires_or_is_a_bounded_set(
    redis_client: redis.Redis, unique_prefix: str
):
    config = StoreConfig(key_prefix=unique_prefix, implicit_negative_after_s=30)
    store = RedisStore(redis_client, config, FEATURES)
    ops: list[EventOp | LabelOp] = [
        event(n, T0 + n * 1000, f"u{n % 7}", f"i{n % 11}", 1.0 if n % 9 == 0 else None)
        for n in range(60)
    ]
    ops += [LabelOp(f"e{n}", f"lb:0:{n}", 1.0, 1.0, T0 + 61_000) for n in range(1, 40, 3)]
    ops += [LabelOp("e-later", "lb:1:99", 1.0, 1.0, T0 + 61_000)]  # waits for its event
    store.apply(ops, {"e3": 0.5}, {0: T0 + 45_000, 1: T0 + 45_000})

    keys = sorted(redis_client.scan_iter(match=f"{unique_prefix}:*", count=1000))
    kinds = {key.split(b":")[1] for key in keys}
    assert {b"e", b"s", b"pl", b"plz", b"dl"} <= kinds, kinds
    without_ttl = [key for key in keys if redis_client.pttl(key) < 0]
    assert [key for key in without_ttl if not bounded_keys(unique_prefix).match(key)] == []
    state_ttl_ms = config.state_ttl_s * 1000
    entity_ttls = [redis_client.pttl(key) for key in keys if key.split(b":")[1] == b"e"]
    assert len(entity_ttls) == 7 + 11 + 1 + 60 + 7  # users, items, author, the pairs
    assert all(state_ttl_ms - 60_000 < ttl <= state_ttl_ms for ttl in entity_ttls)


def test_every_update_of_an_entity_sets_its_ttl_again(
    redis_client: redis.Redis, unique_prefix: str
):
    config = StoreConfig(key_prefix=unique_prefix, snapshot_ttl_s=60, state_ttl_s=60)
    store = RedisStore(redis_client, config, FEATURES)
    user = store.key("user", "u1")
    store.apply([event(0, T0, "u1", "i1")], {}, {})
    redis_client.pexpire(user, 5_000)  # as if 55 s had gone by
    store.apply([event(1, T0 + 1000, "u1", "i2")], {}, {})
    assert redis_client.pttl(user) > 55_000, "an event counted"
    redis_client.pexpire(user, 5_000)
    store.apply([LabelOp("e0", "lb:0:0", 1.0, 1.0, T0 + 2000)], {}, {})
    assert redis_client.pttl(user) > 55_000, "a label counted"


def test_an_entity_not_updated_for_the_state_ttl_starts_afresh(
    redis_client: redis.Redis, unique_prefix: str
):
    config = StoreConfig(key_prefix=unique_prefix, snapshot_ttl_s=1, state_ttl_s=1)
    store = RedisStore(redis_client, config, FEATURES)
    store.apply([event(0, T0, "u1", "i1"), event(2, T0 + 1, "u1", "i2")], {}, {})
    assert store.state("user", "u1").count == 2
    time.sleep(1.2)
    outcome = store.apply([event(4, T0 + 2, "u1", "i3")], {}, {}).outcomes[0]
    assert (outcome.status, dict(outcome.states)["user"].count) == ("new", 0)
    assert store.state("user", "u1").count == 1


def test_a_state_ttl_of_zero_keeps_entities_without_expiry(
    redis_client: redis.Redis, unique_prefix: str
):
    config = StoreConfig(key_prefix=unique_prefix, state_ttl_s=0)
    store = RedisStore(redis_client, config, FEATURES)
    store.apply([event(0, T0, "u1", "i1")], {}, {})
    assert redis_client.pttl(store.key("user", "u1")) == -1
    assert 0 < redis_client.pttl(f"{unique_prefix}:s:e0") <= config.snapshot_ttl_s * 1000
