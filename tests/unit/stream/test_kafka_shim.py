"""The kafka-python shim is pinned to the release it was written for."""

from __future__ import annotations

from types import SimpleNamespace

import kafka
import pytest
from kafka.coordinator.base import BaseCoordinator

from streamlearn.stream.kafka_shim import KAFKA_PYTHON_VERSION, keep_joining


def test_the_shim_names_the_installed_kafka_python():
    """A new kafka-python fails here until each function of ``stream.kafka_shim`` is
    checked against it (its private attributes may have moved) and the pin moved."""
    assert kafka.__version__ == KAFKA_PYTHON_VERSION, (
        f"kafka-python {kafka.__version__} is installed; stream/kafka_shim.py was checked"
        f" against {KAFKA_PYTHON_VERSION}: check each function, then update the pin"
    )


class _Coordinator:
    """The flags of kafka-python's group coordinator that :func:`keep_joining` reads."""

    request_rejoin = BaseCoordinator.request_rejoin

    def __init__(self, rejoining: bool, rejoin_needed: bool) -> None:
        self.rejoining = rejoining
        self.rejoin_needed = rejoin_needed


@pytest.mark.parametrize(
    ("rejoining", "rejoin_needed", "after"),
    [(True, False, True), (True, True, True), (False, False, False), (False, True, True)],
    ids=["join-left-behind", "join-awaited", "stable", "rejoin-asked"],
)
def test_a_join_in_flight_is_awaited_by_the_next_poll(rejoining, rejoin_needed, after):
    """A join prepared but not complete makes the coordinator need a rejoin, so the next
    poll awaits it; a stable member is left alone."""
    consumer = SimpleNamespace(_coordinator=_Coordinator(rejoining, rejoin_needed))
    keep_joining(consumer)
    assert consumer._coordinator.rejoin_needed is after
