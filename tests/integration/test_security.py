"""Security options on the real Redis: an ACL user whose password comes from the environment."""

from __future__ import annotations

import pytest
import redis

from streamlearn.features.interactions import entity_ids
from streamlearn.features.redis_store import RedisStore
from streamlearn.features.store import EventOp
from streamlearn.stream.config import load_settings

pytestmark = pytest.mark.integration


def test_the_store_works_as_an_acl_user_limited_to_its_key_prefix(
    redis_url, redis_client, unique_prefix, monkeypatch
):
    user, password = f"{unique_prefix}-user", f"{unique_prefix}-Secret-42"
    redis_client.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", f"~{unique_prefix}:*", "+@all", "-@admin"
    )
    try:
        monkeypatch.setenv("STREAMLEARN_REDIS__URL", redis_url)
        monkeypatch.setenv("STREAMLEARN_REDIS__USERNAME", user)
        monkeypatch.setenv("STREAMLEARN_REDIS__PASSWORD", password)
        monkeypatch.setenv("STREAMLEARN_STORE__KEY_PREFIX", unique_prefix)
        settings = load_settings()
        assert password not in repr(settings) and password not in str(settings.redacted())
        client = redis.Redis.from_url(settings.redis.url, **settings.redis.client_options())
        store = RedisStore(client, settings.store, settings.features.interactions)
        op = EventOp(
            "e1",
            "events:0:0",
            0,
            0,
            1_767_225_600_000,
            entity_ids("u", "i", None),
            b"{}",
            None,
            1.0,
        )

        (outcome,) = store.apply([op], {}, {0: 1_767_225_600_000}).outcomes

        assert outcome.status == "new"
        assert store.state("user", "u").count == 1
        wrong = redis.Redis.from_url(redis_url, username=user, password="not-the-password")
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("someone-else:key", b"x")
    finally:
        redis_client.execute_command("ACL", "DELUSER", user)
