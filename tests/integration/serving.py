"""Helpers for API tests: the real app under uvicorn, in a thread, on a free port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import uvicorn

from streamlearn.learners.checkpoint import Checkpoint, CheckpointStore
from streamlearn.stream.config import Settings
from streamlearn.stream.harness import lines_of, produce
from streamlearn.stream.serve_app import create_app
from streamlearn.stream.worker import Worker


@contextmanager
def api_server(settings: Settings, key: bytes | None) -> Iterator[str]:
    """``streamlearn serve``'s app listening on 127.0.0.1; yields its base URL."""
    app = create_app(settings, key)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the API server exited at startup"
        assert time.monotonic() < deadline, "the API server did not start within 30 s"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def keyspace(client: redis.Redis, prefix: str) -> dict[bytes, tuple[object, int]]:
    """Every key under ``prefix``: its content and its TTL in ms (to see nothing changed)."""
    out: dict[bytes, tuple[object, int]] = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = client.type(key)
        if kind == b"hash":
            value: object = client.hgetall(key)
        elif kind == b"string":
            value = client.get(key)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"set":
            value = client.smembers(key)
        else:
            value = kind
        out[key] = (value, client.pttl(key))
    return out


def unchanged(before: dict, after: dict, slack_ms: int = 600_000) -> list[str]:
    """What differs between two :func:`keyspace` views: keys, contents, or a TTL that grew
    (a refreshed expiry) or fell by more than ``slack_ms`` of elapsed time."""
    problems = []
    if before.keys() != after.keys():
        problems.append(
            f"keys added {after.keys() - before.keys()}, removed {before.keys() - after.keys()}"
        )
    for key in before.keys() & after.keys():
        (value, ttl), (value2, ttl2) = before[key], after[key]
        if value != value2:
            problems.append(f"{key!r} changed")
        if ttl >= 0 and not (ttl - slack_ms <= ttl2 <= ttl):
            problems.append(f"{key!r} TTL went from {ttl} to {ttl2}")
    return problems


def checkpointed_worker(
    settings: Settings, lines: list[dict], client: redis.Redis, key: bytes
) -> Checkpoint:
    """Produce ``lines``, run a worker (``worker-0``) over them until it idles, and return
    its confirmed checkpoint: what the API follows."""
    produce(settings, lines_of(lines))
    worker = Worker(settings, name="worker-0", signing_key=key)
    thread = threading.Thread(target=lambda: worker.run(idle_timeout_s=4.0))
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the worker did not finish"
    checkpoint = CheckpointStore(
        client, settings.store.key_prefix, settings.kafka.group_id, "worker-0"
    ).recover(lambda names: {})
    assert checkpoint is not None, "the worker made no checkpoint"
    return checkpoint
