"""Interpreter settings for a long-running scoring process.

A worker keeps many objects alive for a long time (the model, recent feature
vectors, Kafka client state) and allocates many short-lived ones per event.
CPython's default collector thresholds (700, 10, 10) then run a full collection
every few thousand events, which scans the whole heap and stops scoring for
tens to hundreds of milliseconds. Ten times fewer full collections, with young
collections kept small (a large first threshold makes each of them long and
shows in the latency tail), gave the best throughput and tail together
(``python -m bench --only worker,latency``). Reference counting still frees
almost everything at once.

Examples
--------
>>> import gc, sys
>>> before = gc.get_threshold(), sys.getswitchinterval()
>>> tune_interpreter()
>>> gc.get_threshold() == GC_THRESHOLDS, sys.getswitchinterval() == GIL_SWITCH_INTERVAL_S
(True, True)
>>> gc.set_threshold(*before[0]); sys.setswitchinterval(before[1])
"""

from __future__ import annotations

import gc
import sys

__all__ = ["GC_THRESHOLDS", "GIL_SWITCH_INTERVAL_S", "tune_interpreter"]

#: Allocations before a young collection, then young (middle) collections before an older one.
GC_THRESHOLDS = (2_000, 10, 100)

#: Kafka's network thread and the Redis thread wait for the GIL while the main
#: thread scores; at CPython's default of 5 ms per switch a record's latency
#: adds up several such waits.
GIL_SWITCH_INTERVAL_S = 0.0005


def tune_interpreter() -> None:
    """Apply :data:`GC_THRESHOLDS` and :data:`GIL_SWITCH_INTERVAL_S` to this process."""
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
