"""The HTTP API (``streamlearn serve``) on the real Redis (and Kafka for the worker's model)."""

from __future__ import annotations

import httpx
import orjson
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from streamlearn.features.interactions import entity_ids
from streamlearn.features.redis_store import RedisStore
from streamlearn.learners.checkpoint import CheckpointStore
from streamlearn.learners.models import build_model, learn, score
from streamlearn.learners.registry import ModelRegistry
from streamlearn.stream.config import Settings
from streamlearn.stream.harness import settings_for
from streamlearn.stream.processor import ModelSlot, Processor, Record
from streamlearn.stream.synthetic import WorldConfig, generate_world
from tests.integration.serving import api_server, checkpointed_worker, keyspace, unchanged

KEY = b"serve integration test key, 32 b"
T0 = 1_767_225_600_000


def api_settings(redis_url: str, prefix: str, **sections) -> Settings:
    base = {
        "redis": {"url": redis_url},
        "store": {"key_prefix": prefix},
        "kafka": {"group_id": f"{prefix}-group"},
        "serve": {"refresh_seconds": 3600, "max_candidates": 200, "max_body_bytes": 262_144},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return Settings(**base)


def records_of(settings: Settings, lines: list[dict]) -> list[Record]:
    offsets = {"events": 0, "labels": 0}
    out = []
    for line in lines:
        kind = "events" if "user_id" in line else "labels"
        out.append(Record(kind, orjson.dumps(line), kind, 0, offsets[kind], line["timestamp"]))
        offsets[kind] += 1
    return out


def seed(client: redis.Redis, settings: Settings, lines: list[dict], model=None) -> Processor:
    """Count ``lines`` into Redis through the worker's Processor and store."""
    store = RedisStore(client, settings.store, settings.features.interactions)
    slot = ModelSlot("champion", model or settings.model.build())
    processor = Processor(
        [slot], store, settings.features, settings.limits, settings.model.threshold
    )
    processor.process(records_of(settings, lines))
    return processor


def event(n: int, user: str, item: str, author: str | None = "a1", **more) -> dict:
    line = {"event_id": f"s{n}", "timestamp": T0 + n * 1000, "user_id": user, "item_id": item}
    if author is not None:
        line["author_id"] = author
    return {**line, **more}


def test_readyz_before_any_model_serves_the_spec_untrained_and_says_so(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str
) -> None:
    settings = api_settings(redis_url, unique_prefix)
    with api_server(settings, KEY) as url:
        ready = httpx.get(f"{url}/readyz")
        scored = httpx.post(f"{url}/score", json=event(1, "u1", "i1"))
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True and body["redis"] == "ok"
    assert body["model"]["trained"] is False and body["model"]["version"] == "0"
    assert body["model"]["name"] == "logistic" and "untrained" in body["model"]["note"]
    assert scored.status_code == 200 and scored.json()["score"] == 0.5
    assert scored.json()["model"]["source"] == "untrained"


def test_readyz_without_redis_is_503_and_score_says_redis_is_away(unique_prefix: str) -> None:
    settings = api_settings("redis://127.0.0.1:1/0", unique_prefix)
    with api_server(settings, KEY) as url:
        ready = httpx.get(f"{url}/readyz")
        scored = httpx.post(f"{url}/score", json=event(1, "u1", "i1"))
        metrics = httpx.get(f"{url}/metrics").text
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert scored.status_code == 503 and scored.json()["error"] == "redis_unavailable"
    assert (
        'streamlearn_serve_errors_total{endpoint="/score",reason="redis_unavailable"} 1.0'
        in metrics
    )


def test_score_reads_the_state_without_changing_it(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str
) -> None:
    settings = api_settings(redis_url, unique_prefix)
    seed(redis_client, settings, [event(n, "u1", f"i{n % 3}") for n in range(10)])
    before = keyspace(redis_client, unique_prefix)
    probe = event(20, "u1", "i1")
    with api_server(settings, KEY) as url:
        response = httpx.post(f"{url}/score", json=probe)
        metrics = httpx.get(f"{url}/metrics").text
    assert unchanged(before, keyspace(redis_client, unique_prefix)) == []
    body = response.json()
    assert response.status_code == 200, body
    # the default policy (precision_at_least) has no checkpointed threshold yet: it decides
    # nothing positive, as a worker starting on no labels does
    assert body["event_id"] == "s20" and body["decision"] is False and body["threshold"] == 1.0
    # i1 was last seen at event 7 (t0 + 7 s), the user at event 9
    assert body["freshness_s"]["user"] == 11.0 and body["freshness_s"]["item"] == 13.0
    assert body["freshness_s"]["user_item"] == 13.0
    assert 'streamlearn_serve_request_seconds_count{endpoint="/score"} 1.0' in metrics


def trained_model():
    model = build_model("logistic")
    for n in range(300):
        x = {"user_item_n": float(n % 4), "ctx_device": ("ios", "web")[n % 2]}
        learn(model, x, float(n % 4 >= 2), 1.0)
    return model


def test_rank_reads_every_state_in_one_round_trip_and_sorts_by_score(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str
) -> None:
    settings = api_settings(redis_url, unique_prefix)
    registry = ModelRegistry(redis_client, unique_prefix, KEY)
    model = trained_model()
    info = registry.save(
        model, name="logistic", parent=None, events_scored=0, labels_learned=300,
        offsets={}, metrics={},
    )  # fmt: skip
    registry.promote(info.version)
    # the user met item i{k} k times, so the items' interaction features differ
    lines = [event(n, "u1", f"i{k}", f"a{k % 3}") for n, k in enumerate(
        k for k in range(8) for _ in range(k))]  # fmt: skip
    seed(redis_client, settings, lines)
    candidates = [{"item_id": f"i{k}", "author_id": f"a{k % 3}"} for k in range(30)]
    request = {"user_id": "u1", "timestamp": T0 + 100_000, "candidates": candidates,
               "context": {"device": "ios"}}  # fmt: skip
    before = keyspace(redis_client, unique_prefix)
    with api_server(settings, KEY) as url:
        assert httpx.get(f"{url}/readyz").json()["ready"]  # its Redis connection is open
        redis_client.config_resetstat()
        reads = int(redis_client.info("stats")["total_reads_processed"])
        response = httpx.post(f"{url}/rank", json=request)
        commands = redis_client.info("commandstats")
        reads = int(redis_client.info("stats")["total_reads_processed"]) - reads
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {**body["model"], "version": info.version, "source": "promoted"}
    # one script call, one HGET in it per distinct entity: user, 30 items, 3 authors,
    # 30 user_item, 3 user_author
    assert commands["cmdstat_eval"]["calls"] == 1
    assert commands["cmdstat_hget"]["calls"] == 67
    assert set(commands) <= {
        "cmdstat_eval",
        "cmdstat_hget",
        "cmdstat_config|resetstat",
        "cmdstat_info",
    }
    # one read for each of this test's two INFO commands, ONE for the whole request
    assert reads == 3
    assert unchanged(before, keyspace(redis_client, unique_prefix)) == []
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 30
    assert len(set(scores)) > 1
    store = RedisStore(redis_client, settings.store, settings.features.interactions)
    from streamlearn.features.schema import Event
    from streamlearn.features.vector import features_of

    for item in body["items"]:
        one = Event(event_id="x", timestamp=T0 + 100_000, user_id="u1", item_id=item["item_id"],
                    author_id=item["author_id"], context={"device": "ios"})  # fmt: skip
        states = [(kind, store.state(kind, entity)) for kind, entity in
                  entity_ids("u1", one.item_id, one.author_id)]  # fmt: skip
        assert item["score"] == score(model, features_of(one, states, settings.features))


def test_the_api_scores_an_event_as_the_worker_does_with_the_same_model_and_state(
    kafka_bootstrap: str, redis_url: str, redis_client: redis.Redis, unique_prefix: str,
    make_topics,
) -> None:  # fmt: skip
    make_topics(events=1, labels=1, predictions=1, **{"dead-letter": 1})
    settings = settings_for(
        kafka_bootstrap, redis_url, unique_prefix, partitions=1,
        checkpoint={"every_labels": 100, "every_seconds": 2},
        serve={"refresh_seconds": 0.2},
    )  # fmt: skip
    lines = list(generate_world(WorldConfig(events=600, seed=11, users=20, items=40)))
    checkpoint = checkpointed_worker(settings, lines, redis_client, KEY)
    assert int(checkpoint.version) >= 2, "several checkpoints"
    events = [line for line in lines if "user_id" in line]
    last = events[-1]
    probe = {**events[-3], "event_id": "probe-1", "timestamp": last["timestamp"] + 5_000}
    with api_server(settings, KEY) as url:
        ready = httpx.get(f"{url}/readyz").json()
        api = httpx.post(f"{url}/score", json=probe).json()
    assert ready["model"]["source"] == "checkpoint", ready
    assert ready["model"]["version"] == checkpoint.version
    assert api["model"]["version"] == checkpoint.version
    model, info = ModelRegistry(redis_client, unique_prefix, KEY).load(checkpoint.version)
    assert info.labels_learned > 100
    processor = seed_processor = Processor(
        [ModelSlot("champion", model, version=info.version)],
        RedisStore(redis_client, settings.store, settings.features.interactions),
        settings.features, settings.limits, settings.model.threshold,
    )  # fmt: skip
    out = seed_processor.process(
        [
            Record(
                "events",
                orjson.dumps(probe),
                settings.kafka.topics.events,
                0,
                10**9,
                probe["timestamp"],
            )
        ]  # fmt: skip
    )
    assert processor is seed_processor and len(out.predictions) == 1
    worker_score = out.predictions[0].score
    assert api["score"] != 0.5 and abs(api["score"] - worker_score) <= 1e-12
    assert api["decision"] == out.predictions[0].decision
    # the state the probe met had history: the comparison is not of empty states
    assert api["freshness_s"]["user"] is not None and api["freshness_s"]["item"] is not None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)  # fmt: skip
NAMES = st.sampled_from(["u1", "u2", "", "i1", "i2", "a1", "x" * 300])
CANDIDATE = st.one_of(
    st.fixed_dictionaries(
        {"item_id": NAMES},
        optional={"author_id": NAMES | JSON, "features": st.dictionaries(
            st.text(max_size=8), JSON, max_size=4), "extra": JSON},
    ),
    JSON,
)  # fmt: skip
TIMESTAMP = st.one_of(
    st.integers(T0 - 10**12, T0 + 10**12), st.just(T0 + 50_000), st.text(max_size=25), JSON
)
RANK = st.fixed_dictionaries(
    {},
    optional={
        "user_id": NAMES | JSON, "timestamp": TIMESTAMP, "context": JSON | st.dictionaries(
            st.text(max_size=8), st.text(max_size=8) | st.floats(), max_size=3),
        "candidates": st.lists(CANDIDATE, max_size=40) | st.lists(
            st.just({"item_id": "i1"}), min_size=190, max_size=230) | JSON,
        "request_id": NAMES | JSON,
    },
)  # fmt: skip
SCORE = st.fixed_dictionaries(
    {},
    optional={"event_id": NAMES | JSON, "timestamp": TIMESTAMP, "user_id": NAMES | JSON,
              "item_id": NAMES | JSON, "author_id": NAMES | JSON, "context": JSON,
              "features": JSON, "label": JSON},
)  # fmt: skip
EDGES = [
    b"",
    b"{}",
    b"null",
    b'{"timestamp": 123456789012345678901234567890, "user_id": "u1", "candidates": []}',
    b'{"user_id": "u1", "timestamp": 1e999, "candidates": [{"item_id": "i1"}]}',
    b'{"user_id": "u1", "timestamp": NaN, "candidates": [{"item_id": "i1"}]}',
    b"[" * 2000 + b"]" * 2000,
    rb'{"user_id": "u1", "timestamp": 1767225600000, "candidates": [{"item_id": "\ud800"}]}',
]
VALID = st.one_of(
    st.tuples(
        st.just("/rank"),
        st.lists(st.sampled_from(["i1", "i2", "i3"]), min_size=1, max_size=250).map(
            lambda items: orjson.dumps({"user_id": "u1", "timestamp": T0 + 60_000,
                "candidates": [{"item_id": item, "author_id": "a1"} for item in items]})
        ),
    ),
    st.tuples(st.just("/score"), st.sampled_from(["u1", "u2", "u3"]).map(
        lambda user: orjson.dumps(event(60, user, "i1")))),
)  # fmt: skip
BODY = st.one_of(
    VALID,
    st.tuples(st.sampled_from(["/rank", "/score"]), st.sampled_from(EDGES)),
    st.tuples(st.just("/rank"), RANK.map(orjson.dumps)),
    st.tuples(st.just("/score"), SCORE.map(orjson.dumps)),
    st.tuples(st.sampled_from(["/rank", "/score"]), st.binary(max_size=300)),
    st.tuples(st.sampled_from(["/rank", "/score"]), JSON.map(orjson.dumps)),
    st.tuples(st.sampled_from(["/rank", "/score"]), st.integers(262_000, 300_000).map(
        lambda n: b'{"candidates": ["' + b"x" * n + b'"]}')),
)  # fmt: skip


def test_fuzzed_requests_never_get_a_5xx_and_never_change_the_state(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str
) -> None:
    settings = api_settings(redis_url, unique_prefix)
    seed(redis_client, settings, [event(n, f"u{n % 2 + 1}", f"i{n % 2 + 1}") for n in range(6)])
    before = keyspace(redis_client, unique_prefix)
    statuses: list[int] = []
    with api_server(settings, KEY) as url, httpx.Client(base_url=url, timeout=30) as client:

        @hsettings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(BODY)
        def check(case: tuple[str, bytes]) -> None:
            path, body = case
            response = client.post(path, content=body)
            statuses.append(response.status_code)
            assert response.status_code < 500, (path, body[:300], response.text)
            if response.status_code >= 400:
                answer = response.json()
                assert answer["error"] and answer["detail"], answer

        check()
        metrics = client.get("/metrics").text
    assert unchanged(before, keyspace(redis_client, unique_prefix)) == []
    assert {200, 413, 422} <= set(statuses), sorted(set(statuses))
    assert "streamlearn_serve_errors_total" in metrics


def test_the_served_model_follows_promotions_rollbacks_and_newer_checkpoints(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str
) -> None:
    from prometheus_client import CollectorRegistry

    from streamlearn.learners.checkpoint import Checkpoint
    from streamlearn.metrics.serving import ServeMetrics
    from streamlearn.stream.serve import ModelFollower

    settings = api_settings(redis_url, unique_prefix)
    registry = ModelRegistry(redis_client, unique_prefix, KEY)
    prom = CollectorRegistry()
    follower = ModelFollower(settings, registry, ServeMetrics(prom))
    assert follower.refresh().source == "untrained"

    def save(note: str = "") -> str:
        return registry.save(
            trained_model(), name="logistic", parent=None, events_scored=1,
            labels_learned=1, offsets={}, metrics={}, note=note,
        ).version  # fmt: skip

    one, two = save(), save()
    registry.promote(one)
    assert (follower.refresh().version, follower.served.source) == (one, "promoted")
    registry.promote(two)
    assert follower.refresh().version == two
    # a worker checkpoints the model it learns from v2 (generation 2)
    checkpoints = CheckpointStore(redis_client, unique_prefix, settings.kafka.group_id, "w-0")
    three = save("checkpoint")
    checkpoints.prepare(Checkpoint(three, {"events:0": 10}, generation=2))
    assert follower.refresh().version == two, "a prepared checkpoint is not served"
    checkpoints.confirm()
    assert (follower.refresh().version, follower.served.source) == (three, "checkpoint")
    served = {"arm": "champion"}  # the served model's series: no experiment, one arm
    assert prom.get_sample_value("streamlearn_serve_model_version", served) == int(three)
    assert 0 <= prom.get_sample_value("streamlearn_serve_model_age_seconds", served) < 60
    # a rollback (generation 3) wins over the checkpoint made under generation 2
    assert registry.rollback() == one
    assert (follower.refresh().version, follower.served.source) == (one, "promoted")
    # Redis away: the model served stays, the failure is counted and said
    follower.registry = ModelRegistry(redis.Redis(port=1), unique_prefix, KEY)
    assert follower.refresh().version == one and follower.last_error
    assert prom.get_sample_value("streamlearn_serve_refresh_failures_total") == 1.0
