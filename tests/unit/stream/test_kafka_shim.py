"""The kafka-python shim is pinned to the release it was written for."""

from __future__ import annotations

import kafka

from streamlearn.stream.kafka_shim import KAFKA_PYTHON_VERSION


def test_the_shim_names_the_installed_kafka_python():
    """A new kafka-python fails here until each function of ``stream.kafka_shim`` is
    checked against it (its private attributes may have moved) and the pin moved."""
    assert kafka.__version__ == KAFKA_PYTHON_VERSION, (
        f"kafka-python {kafka.__version__} is installed; stream/kafka_shim.py was checked"
        f" against {KAFKA_PYTHON_VERSION}: check each function, then update the pin"
    )
