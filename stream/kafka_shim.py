"""Every reach of streamlearn into kafka-python's private attributes, in one place.

kafka-python leaves a few things out of its public API that the worker needs
(bounded waits on transactional steps, the fetch state without a request, fixes
of a parked-records bug and of a group join left behind). Each function below
says why it reaches in. They were written against :data:`KAFKA_PYTHON_VERSION`; a unit test fails on
any other version until someone has checked each of them again
(``tests/unit/stream/test_kafka_shim.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = [
    "KAFKA_PYTHON_VERSION",
    "fetch_states",
    "has_fatal_error",
    "keep_joining",
    "transaction_manager",
    "unpark",
    "wake_sender",
]

#: The kafka-python release every function here was checked against.
KAFKA_PYTHON_VERSION = "3.0.12"


def transaction_manager(producer: Any) -> Any:
    """The producer's transaction manager (``_transaction_manager``).

    kafka-python's ``send_offsets_to_transaction``, ``commit_transaction`` and
    ``abort_transaction`` wait without a bound, and a request lost while the
    broker restarts never completes; its transaction manager hands back the
    same results that those calls wait on (``send_offsets_to_transaction``,
    ``begin_commit``, ``begin_abort``), so the sink waits on them for at most
    ``max_block_ms``, as kafka-python itself does in ``init_transactions``.
    """
    return producer._transaction_manager


def wake_sender(producer: Any) -> None:
    """Wake the producer's sender thread (``_sender.wakeup()``).

    A transactional request queued through :func:`transaction_manager` goes out
    at the sender's next loop; the public calls wake it the same way.
    """
    producer._sender.wakeup()


def has_fatal_error(producer: Any) -> bool:
    """True when the producer's transaction manager is in a fatal state.

    kafka-python's idempotent producer (its default) treats a record the
    broker refuses (too large) as fatal and fails every later send with that
    error; nothing public says so, the transaction manager
    (``_transaction_manager``, None without idempotence) does.
    """
    manager = getattr(producer, "_transaction_manager", None)
    return manager is not None and bool(manager.has_fatal_error())


def fetch_states(consumer: Any) -> Iterator[tuple[str, int, int | None, int | None]]:
    """``(topic, partition, high watermark, position)`` of every assigned partition.

    The consumer's subscription state (``_subscription.assignment``) keeps each
    partition's position and the high watermark of its last fetch response;
    the public ``position()`` may ask the coordinator (a request per call), so
    the state is read directly. None where it is not known yet.
    """
    for tp, state in consumer._subscription.assignment.items():
        position = state.position
        yield tp.topic, tp.partition, state.highwater, None if position is None else position.offset


def unpark(consumer: Any) -> None:
    """Let the next poll hand back the records kafka-python parked for a resumed partition.

    kafka-python 3.0 parks the fetched records of a paused partition
    (``_fetcher._paused_partition_records``) and restores them on a later poll
    only when its in-line record slot (``_fetcher._next_partition_records``)
    is None; a drained slot (empty, not None) leaves them parked, and a
    partition with parked records is never fetched again: it would stay silent
    for good. The drained slot holds nothing, so it is emptied.
    """
    fetcher = consumer._fetcher
    inline = fetcher._next_partition_records
    if inline is not None and not inline and fetcher._paused_partition_records:
        fetcher._next_partition_records = None


def keep_joining(consumer: Any) -> None:
    """Make the next poll finish a group join that kafka-python would leave behind.

    kafka-python 3.0 starts a join when its coordinator needs one (``need_rejoin()``)
    and, when a poll's timeout ends first, awaits the join again at the next poll
    only while ``need_rejoin()`` still holds. A join started because the group
    leader's metadata changed (not by the ``rejoin_needed`` flag) stops needing one
    while it is in flight: later polls never await it again, its assignment is never
    taken, heartbeats stay off and the session expires; the consumer then fetches
    nothing for good, in a group that has moved on without it. A join is in flight
    from its preparation (``rejoining``) to its completion, which clears both flags
    together; setting ``rejoin_needed`` in between makes the poll await it.
    """
    coordinator = consumer._coordinator
    if coordinator.rejoining and not coordinator.rejoin_needed:
        coordinator.request_rejoin()
