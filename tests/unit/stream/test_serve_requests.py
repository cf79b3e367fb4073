"""Request validation of the HTTP API and the ranking metrics (pure, no servers)."""

from __future__ import annotations

import math

import orjson
import pytest
import redis

from streamlearn.features.interactions import InteractionConfig
from streamlearn.features.limits import Limits
from streamlearn.features.redis_store import RedisStore
from streamlearn.features.store import StoreConfig
from streamlearn.stream.ranking import hit_rate_at_k, mrr, ndcg_at_k
from streamlearn.stream.serve import (
    ApiError,
    entity_key,
    freshness,
    parse_rank,
    parse_score,
    rank_order,
)

NOW = 1_767_225_600_000
EVENT = {"event_id": "e1", "timestamp": NOW, "user_id": "u1", "item_id": "i1"}


def rank_body(candidates, **fields) -> bytes:
    return orjson.dumps({"user_id": "u1", "timestamp": NOW, "candidates": candidates, **fields})


def refused(call) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(
    ("body", "status", "reason", "says"),
    [
        (b"{", 400, "invalid_json", "line 1"),
        (b"\xff\xfe", 400, "not_utf8", "UTF-8"),
        (b"[1, 2]", 400, "not_an_object", "an array"),
        (b'{"event_id": "e1", "timestamp": 1}', 422, "missing_field", "user_id"),
        (orjson.dumps({**EVENT, "user_id": 7}), 422, "wrong_type", "user_id"),
        (orjson.dumps({**EVENT, "item_id": ""}), 422, "empty_key", "item_id"),
        (orjson.dumps({**EVENT, "timestamp": 5}), 422, "timestamp_out_of_range", "outside"),
        (orjson.dumps({**EVENT, "features": {"x": 1e300}}), 422, "invalid_value", "features.x"),
        (b'{"event_id": "e1", "timestamp": NaN}', 422, "not_finite", "NaN"),
        (orjson.dumps({**EVENT, "features": {"x": "y" * 70_000}}), 413, "body_too_large", "limit"),
    ],
)
def test_score_refuses_a_bad_event_with_its_reason_and_what_to_fix(body, status, reason, says):
    error = refused(lambda: parse_score(body, Limits(), now_ms=NOW))
    assert (error.status, error.reason) == (status, reason)
    assert says in error.detail
    assert error.body() == {"error": reason, "detail": error.detail}


def test_score_accepts_an_event_of_the_events_topic():
    event = parse_score(orjson.dumps({**EVENT, "context": {"device": "ios"}}), Limits(), NOW)
    assert (event.user_id, event.item_id, event.context) == ("u1", "i1", {"device": "ios"})


def test_unknown_fields_are_refused_only_when_the_limits_say_so():
    body = orjson.dumps({**EVENT, "colour": "red"})
    assert parse_score(body, Limits(), NOW).event_id == "e1"
    error = refused(lambda: parse_score(body, Limits(unknown_fields="reject"), NOW))
    assert error.reason == "unknown_field" and "'colour'" in error.detail


@pytest.mark.parametrize(
    ("body", "status", "reason", "says"),
    [
        (rank_body([]), 422, "no_candidates", "at least one"),
        (rank_body([{"item_id": f"i{n}"} for n in range(6)]), 413, "too_many_candidates", "5"),
        (rank_body({"item_id": "i1"}), 422, "wrong_type", "an array"),
        (orjson.dumps({"user_id": "u1", "timestamp": NOW}), 422, "missing_field", "candidates"),
        (rank_body([{"item_id": "i1"}, 3]), 422, "wrong_type", "candidates[1]"),
        (rank_body([{"item_id": "i1"}, {"author_id": "a"}]), 422, "missing_field", "candidates[1]"),
        (rank_body([{"item_id": "i1", "features": {"x": [1]}}]), 422, "wrong_type", "features.x"),
        (rank_body([{"item_id": "i1"}], user_id=""), 422, "empty_key", "user_id"),
        (rank_body([{"item_id": "i1"}], timestamp="yesterday"), 422, "wrong_type", "timestamp"),
        (rank_body([{"item_id": "i1"}], context=[1]), 422, "wrong_type", "context"),
        (rank_body([{"item_id": "i" * 3000}]), 413, "body_too_large", "2048"),
    ],
)
def test_rank_refuses_a_bad_request_with_its_reason_and_where(body, status, reason, says):
    error = refused(lambda: parse_rank(body, Limits(), 5, NOW, max_bytes=2048))
    assert (error.status, error.reason) == (status, reason)
    assert says in error.detail, error.detail


def test_rank_builds_one_event_per_candidate_with_the_shared_context():
    body = rank_body(
        [{"item_id": "i2", "author_id": "a1", "features": {"len": 3}}, {"item_id": "i1"}],
        context={"device": "web"},
        request_id="feed-7",
    )
    events = parse_rank(body, Limits(), 5, NOW)
    assert [(e.event_id, e.item_id, e.author_id) for e in events] == [
        ("feed-7", "i2", "a1"),
        ("feed-7", "i1", None),
    ]
    assert all(e.context == {"device": "web"} and e.timestamp == NOW for e in events)
    assert events[0].features == {"len": 3}


def test_rank_order_is_by_descending_score_and_stable_on_ties():
    assert rank_order([0.1, 0.7, 0.7, 0.3]) == [1, 2, 3, 0]


def test_freshness_is_the_age_of_each_entity_state_in_seconds():
    from streamlearn.features.interactions import EntityState

    states = [("user", EntityState(count=3, last_ms=NOW - 90_000)), ("item", EntityState())]
    assert freshness(states, NOW) == {"user": 90.0, "item": None}


def test_entity_keys_are_the_stores_own_layout():
    store = RedisStore(redis.Redis(), StoreConfig(key_prefix="team-a"), InteractionConfig())
    assert entity_key("team-a", "user_author", "2:u1|a3") == store.key("user_author", "2:u1|a3")


def test_ndcg_of_a_hand_computed_ranking():
    # relevant at positions 2 and 4: DCG = 1/log2(3) + 1/log2(5); ideal: 1 + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert expected == pytest.approx(0.650921, abs=1e-6)
    assert ndcg_at_k(["a", "b", "c", "d"], {"b", "d"}, 10) == pytest.approx(expected, abs=1e-15)
    assert ndcg_at_k(["b", "d", "a", "c"], {"b", "d"}, 10) == 1.0


def test_ranking_metrics_cut_at_k():
    ranked = [f"x{n}" for n in range(10)] + ["hit"]
    assert ndcg_at_k(ranked, {"hit"}, 10) == 0.0
    assert hit_rate_at_k(ranked, {"hit"}, 10) == 0.0
    assert hit_rate_at_k(ranked, {"hit"}, 11) == 1.0
    assert mrr(ranked, {"hit"}) == pytest.approx(1 / 11)
    # more relevant items than k: the ideal is k hits
    assert ndcg_at_k(["a", "b"], {"a", "b", "c"}, 2) == 1.0
