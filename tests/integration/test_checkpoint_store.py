"""The two-phase checkpoint record on the real Redis: confirm is one atomic step."""

from __future__ import annotations

import threading

import pytest

from streamlearn.learners.checkpoint import Checkpoint, CheckpointStore

pytestmark = pytest.mark.integration


def test_confirm_moves_the_prepared_checkpoint_and_says_whether_there_was_one(
    redis_client, unique_prefix
):
    store = CheckpointStore(redis_client, unique_prefix, "group", "worker-0")
    assert store.confirm() is False  # nothing prepared: nothing changes
    store.prepare(Checkpoint("7", {"events:0": 12}, generation=1))

    assert store.confirm() is True

    assert redis_client.hgetall(store.key).keys() == {b"confirmed"}
    assert store.recover(lambda names: {}) == Checkpoint("7", {"events:0": 12}, 1)
    assert store.confirm() is False


def test_a_checkpoint_prepared_while_another_is_confirmed_is_never_lost(
    redis_client, unique_prefix
):
    """Confirm reads the prepared checkpoint and moves it in one step: a checkpoint
    prepared meanwhile is either the one confirmed or still prepared afterwards (a
    read, then a separate write, could delete it unconfirmed)."""
    store = CheckpointStore(redis_client, unique_prefix, "group", "worker-0")
    other = CheckpointStore(redis_client, unique_prefix, "group", "worker-0")
    for n in range(300):
        store.prepare(Checkpoint(str(2 * n), {"events:0": 2 * n}))
        newer = Checkpoint(str(2 * n + 1), {"events:0": 2 * n + 1})
        racer = threading.Thread(target=other.prepare, args=(newer,))
        racer.start()
        store.confirm()
        racer.join()
        fields = redis_client.hgetall(store.key)
        assert any(b'"version":"%d"' % (2 * n + 1) in v for v in fields.values()), (n, fields)
        redis_client.delete(store.key)
