"""Which interaction store a worker or a backtest uses, from the settings.

``redis.cluster: true`` selects :class:`features.cluster_store.ClusterStore` (the
state shards over a Redis Cluster; on a single Redis it runs as well), else
:class:`features.redis_store.RedisStore` on ``redis.url``.

Examples
--------
>>> import redis
>>> from streamlearn.stream.config import Settings
>>> type(open_store(Settings(), redis.Redis())).__name__
'RedisStore'
"""

from __future__ import annotations

import redis

from streamlearn.features.cluster_store import ClusterStore, store_client
from streamlearn.features.forget import Forgotten
from streamlearn.features.redis_store import RedisStore
from streamlearn.features.store import InteractionStore
from streamlearn.stream.config import Settings

__all__ = ["forget_entity", "open_store"]


def open_store(
    settings: Settings, client: redis.Redis | None = None, url: str | None = None
) -> InteractionStore:
    """The store of ``settings`` on ``url`` (default ``redis.url``); ``client``: a plain
    client of that url already open, used by ``RedisStore``."""
    interactions, url = settings.features.interactions, url or settings.redis.url
    options = settings.redis.client_options()
    if settings.redis.cluster:
        return ClusterStore(store_client(url, True, **options), settings.store, interactions)
    return RedisStore(client or redis.Redis.from_url(url, **options), settings.store, interactions)


def forget_entity(settings: Settings, kind: str, entity: str) -> Forgotten:
    """Delete a user's, an item's or an author's state, its pairs' and the snapshots that
    touched them from the store of ``settings`` (``streamlearn forget``)."""
    store = open_store(settings)
    if not isinstance(store, RedisStore | ClusterStore):  # pragma: no cover - by construction
        raise TypeError(f"{type(store).__name__} cannot forget")
    try:
        return store.forget(kind, entity)
    finally:
        store.client.close()
