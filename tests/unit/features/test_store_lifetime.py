"""Entity state lifetime in the in-process store: ``store.state_ttl_s`` in event time."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from streamlearn.features.interactions import InteractionConfig, entity_ids
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import EventOp, LabelOp, StoreConfig

DAY_MS = 86_400_000
T0 = 1_767_225_600_000
FEATURES = InteractionConfig(half_lives_s=(3600.0,))


def event(n: int, t: int, user: str = "u", item: str = "i") -> EventOp:
    entities = entity_ids(user, item, None)
    payload = orjson.dumps({"kinds": [kind for kind, _ in entities]})
    return EventOp(f"e{n}", f"ev:0:{n}", 0, n, t, entities, payload, None, 1.0)


def user_count(store: MemoryStore, op: EventOp) -> int:
    """The user's count the event saw, before its own update."""
    outcome = store.apply([op], {}, {0: op.timestamp_ms}).outcomes[0]
    return dict(outcome.states)["user"].count


def store_with(ttl_days: float) -> MemoryStore:
    config = StoreConfig(snapshot_ttl_s=3600, state_ttl_s=ttl_days * 86_400)
    return MemoryStore(config, FEATURES)


def test_the_default_state_ttl_is_thirty_days():
    assert StoreConfig().state_ttl_s == 30 * 86_400


def test_an_entity_idle_for_the_state_ttl_of_event_time_starts_afresh():
    store = store_with(ttl_days=2)
    assert user_count(store, event(0, T0)) == 0
    assert user_count(store, event(1, T0 + DAY_MS)) == 1
    assert user_count(store, event(2, T0 + 2 * DAY_MS)) == 2, "updated a day ago: still alive"
    assert user_count(store, event(3, T0 + 4 * DAY_MS)) == 0, "idle for two days: forgotten"
    assert store.watermarks["user:u"] == {0: 3}, "its watermarks went with it"


def test_a_label_keeps_its_entities_alive():
    store = store_with(ttl_days=2)
    store.apply([event(0, T0)], {}, {0: T0})
    store.apply([LabelOp("e0", "lb:0:0", 1.0, 1.0, T0 + DAY_MS)], {}, {0: T0 + DAY_MS})
    outcome = store.apply([event(1, T0 + 5 * DAY_MS // 2)], {}, {}).outcomes[0]
    user = dict(outcome.states)["user"]
    assert (user.count, user.positives) == (1, 1.0)


def test_the_store_holds_only_the_entities_active_within_the_ttl():
    """A year of events, a new user and item every hour: the state stays bounded."""
    store = store_with(ttl_days=1)
    hour = DAY_MS // 24
    for n in range(24 * 365):
        store.apply([event(n, T0 + n * hour, user=f"u{n}", item=f"i{n}")], {}, {0: T0 + n * hour})
    # user, item and user x item per event, for the last day's 24 events
    assert len(store.entities) <= 3 * 25
    assert len(store.updated) == len(store.entities)
    assert set(store.watermarks) <= set(store.entities)


def test_a_state_ttl_of_zero_keeps_entities_forever():
    store = store_with(ttl_days=0)
    store.apply([event(0, T0)], {}, {0: T0})
    assert user_count(store, event(1, T0 + 3650 * DAY_MS)) == 1


def test_a_state_ttl_shorter_than_the_snapshot_ttl_is_refused():
    with pytest.raises(ValidationError, match="state_ttl_s .* at least snapshot_ttl_s"):
        StoreConfig(snapshot_ttl_s=7200, state_ttl_s=3600)
    assert StoreConfig(snapshot_ttl_s=7200, state_ttl_s=0).state_ttl_s == 0
