"""The Redis store and the in-memory store agree on every outcome and every state."""

from __future__ import annotations

import random

import orjson
import pytest
import redis

from streamlearn.features.interactions import InteractionConfig, entity_ids
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.redis_store import RedisStore
from streamlearn.features.store import (
    EventOp,
    InteractionStore,
    LabelOp,
    LabelOutcome,
    StoreConfig,
    split_source,
)

pytestmark = pytest.mark.integration


def random_ops(rng: random.Random, n: int) -> list[EventOp | LabelOp]:
    """Events out of order, labels before and after their events, duplicates and replays;
    some labels held (their event's features kept by the caller)."""
    ops: list[EventOp | LabelOp] = []
    t = 1_700_000_000_000
    for i in range(n):
        t += rng.randrange(0, 5000)
        user, item = f"u{rng.randrange(20)}", f"i{rng.randrange(30)}"
        author = f"a{rng.randrange(5)}" if rng.random() < 0.8 else None
        entities = entity_ids(user, item, author)
        event_id = f"e{i}" if rng.random() > 0.02 else f"e{max(0, i - 3)}"
        label = float(rng.random() < 0.3) if rng.random() < 0.1 else None
        payload = orjson.dumps({"kinds": [kind for kind, _ in entities]})
        ops.append(
            EventOp(
                event_id,
                f"ev:0:{i}",
                0,
                i,
                t + rng.randrange(-20000, 1),
                entities,
                payload,
                label,
                1.0,
            )
        )
        if rng.random() < 0.5:
            target = rng.randrange(max(0, i - 50), i + 20)
            value, held = float(rng.random() < 0.4), rng.random() < 0.5
            ops.append(LabelOp(f"e{target}", f"lb:0:{i}", value, 1.0, t, held))
        if rng.random() < 0.05:
            ops.append(ops[rng.randrange(len(ops))])
    return ops


def agree_on_outcomes_states_and_sweeps(
    remote: InteractionStore, config: StoreConfig
) -> MemoryStore:
    """``remote`` and a MemoryStore give the same outcomes, states, expiries and implicit
    labels over 3,000 random operations, replays and duplicates among them; the
    MemoryStore after them."""
    rng = random.Random(1)
    memory = MemoryStore(config, InteractionConfig())
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
    return memory


def test_redis_and_memory_stores_agree_on_outcomes_states_and_sweeps(redis_url, unique_prefix):
    config = StoreConfig(key_prefix=unique_prefix, pending_ttl_s=50, implicit_negative_after_s=30)
    remote = RedisStore(redis.Redis.from_url(redis_url), config, InteractionConfig())
    agree_on_outcomes_states_and_sweeps(remote, config)


def test_a_held_label_is_answered_without_the_events_payload_and_states(redis_url, unique_prefix):
    features = InteractionConfig()
    store = RedisStore(
        redis.Redis.from_url(redis_url), StoreConfig(key_prefix=unique_prefix), features
    )
    entities = entity_ids("u1", "i1", None)
    payload = orjson.dumps({"kinds": [kind for kind, _ in entities]})
    events = [
        EventOp(f"e{i}", f"ev:0:{i}", 0, i, 1000 + i, entities, payload, None, 1.0) for i in (1, 2)
    ]
    store.apply(events, {}, {})
    store.apply([], {"e1": 0.25, "e2": 0.75}, {})  # scores are stored with the next batch
    held = LabelOp("e1", "lb:0:1", 1.0, 1.0, 2000, held=True)
    fetched = LabelOp("e2", "lb:0:2", 1.0, 1.0, 2000)
    outcomes = store.apply([held, fetched], {}, {}).outcomes
    assert [(o.status, o.payload, o.states, o.score) for o in outcomes] == [
        ("learn", b"", [], None),
        ("learn", payload, outcomes[1].states, 0.75),
    ]
    assert [kind for kind, _ in outcomes[1].states] == ["user", "item", "user_item"]


def pending_ops(rng: random.Random, n: int) -> list[EventOp | LabelOp]:
    """Labels in four label partitions, events in two: labels:2 and labels:3 have no
    events partition of their number; most labels' events never come."""
    ops: list[EventOp | LabelOp] = []
    t = 1_700_000_000_000
    offsets = [0] * 4
    for i in range(n):
        t += rng.randrange(0, 3000)
        if rng.random() < 0.4:
            partition = i % 2
            entities = entity_ids(f"u{rng.randrange(10)}", f"i{rng.randrange(10)}", None)
            payload = orjson.dumps({"kinds": [kind for kind, _ in entities]})
            ops.append(
                EventOp(
                    f"e{i}", f"ev:{partition}:{i}", partition, i, t, entities, payload, None, 1.0
                )
            )
        else:
            partition = rng.randrange(4)
            target = f"e{rng.randrange(i, i + 40)}" if rng.random() < 0.3 else f"ghost{i}"
            source = f"lb:{partition}:{offsets[partition]}"
            offsets[partition] += 1
            ops.append(LabelOp(target, source, 1.0, 1.0, t - rng.randrange(0, 20_000)))
        if rng.random() < 0.03:
            ops.append(ops[rng.randrange(len(ops))])  # a record read again
        if i % 1000 == 999:  # a burst of labels without events: over pending_max
            for _ in range(80):
                partition = rng.randrange(4)
                source = f"lb:{partition}:{offsets[partition]}"
                offsets[partition] += 1
                ops.append(LabelOp(f"burst{source}", source, 0.0, 1.0, t))
    return ops


def agree_on_the_pending_bound_and_every_expiry(
    remote: InteractionStore, config: StoreConfig
) -> None:
    """``remote`` and a MemoryStore keep the same waiting labels within
    ``store.pending_max`` and expire them alike, by every cause."""
    rng = random.Random(7)
    memory = MemoryStore(config, InteractionConfig())
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
    assert {2, 3} <= waited, "labels:2 and labels:3 (no events partition) expire too"


def test_redis_and_memory_stores_agree_on_the_pending_bound_and_every_expiry(
    redis_url, unique_prefix
):
    config = StoreConfig(
        key_prefix=unique_prefix, pending_max=60, pending_ttl_s=30, pending_max_wait_s=90
    )
    remote = RedisStore(redis.Redis.from_url(redis_url), config, InteractionConfig())
    agree_on_the_pending_bound_and_every_expiry(remote, config)


def test_labels_left_waiting_without_the_set_of_them_all_are_bounded_and_expire(
    redis_url, unique_prefix
):
    client = redis.Redis.from_url(redis_url)
    config = StoreConfig(
        key_prefix=unique_prefix, pending_max=3, pending_ttl_s=60, pending_max_wait_s=600
    )
    t0 = 1_767_225_600_000
    for n in range(4):  # as an earlier version stored them: the hash and a partition's set
        client.hset(f"{unique_prefix}:pl", f"old{n}", f"1|1|lb:5:{n}|{t0 + n}")
        client.zadd(f"{unique_prefix}:plz:5", {f"old{n}": t0 + n})
    store = RedisStore(client, config, InteractionConfig())

    outcome = store.apply([LabelOp("new", "lb:0:0", 1.0, 1.0, t0 + 10)], {}, {}, -1)
    assert [(e.event_id, e.cause) for e in outcome.expired] == [
        ("old0", "overflow"),
        ("old1", "overflow"),
    ]
    assert store.pending_count() == 3

    outcome = store.apply([], {}, {}, t0 + 600_003)
    assert [(e.event_id, e.cause) for e in outcome.expired] == [
        ("old2", "max_wait"),
        ("old3", "max_wait"),
    ]
    assert outcome.expired[0].label.source == "lb:5:2"
    assert store.pending_count() == 1
    assert client.zcard(f"{unique_prefix}:plz:5") == 0
