"""The registry's log of what was done to its models: retrainings, challenger requests.

Beside the snapshots and the promotion history of :class:`~learners.registry.ModelRegistry`,
a bounded Redis list ``ns:registry:log`` holds one JSON record per action taken on the
registry's models outside a worker: a model retrained from the training log (its window
and evaluation), a request to enter a version as an experiment's challenger. Newest
first; each record carries ``at`` (ISO-8601, UTC) and ``action``.

Examples
--------
>>> log_key("ns")
'ns:registry:log'
>>> plain({"loss": float("nan"), "arms": [1.5, float("inf")]})
{'loss': None, 'arms': [1.5, None]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streamlearn.learners.registry import ModelRegistry

__all__ = ["LOG_MAX", "append_record", "log_key", "plain", "records"]

#: Records kept, newest first.
LOG_MAX = 1_000


def log_key(namespace: str) -> str:
    """The Redis list of a registry namespace's log."""
    return f"{namespace}:registry:log"


def plain(value: Any) -> Any:
    """``value`` with every non-finite float as None: what strict JSON takes."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def append_record(
    registry: ModelRegistry, action: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Add a record of ``action`` with ``fields`` (JSON types) to the log; returns it."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record: dict[str, Any] = plain({"at": now, "action": action, **fields})
    key = log_key(registry.namespace)
    pipe = registry.client.pipeline(transaction=True)
    pipe.lpush(key, json.dumps(record, sort_keys=True, allow_nan=False))
    pipe.ltrim(key, 0, LOG_MAX - 1)
    pipe.execute()
    return record


def records(registry: ModelRegistry, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` records, newest first."""
    raw = registry.client.lrange(log_key(registry.namespace), 0, limit - 1)
    out: list[dict[str, Any]] = []
    for value in raw if isinstance(raw, list) else []:
        doc = json.loads(value)
        if isinstance(doc, dict):
            out.append(doc)
    return out
