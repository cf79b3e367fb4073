"""Retraining's records in the registry's audit log, beside the workers' decisions.

The registry's audit log (``ns:registry:audit``, a Redis list, newest first, bounded)
holds every decision about which model serves, with its evidence. Retraining adds its
own records there, in the same shape (``time``, ``worker``, ``source``, ``action``,
``versions``, ``reason``, and the evidence): ``source`` is ``retrain``, ``action``
``retrain`` (a model trained from the training log and registered: its window and
held-out evaluation) or ``challenger_request`` (a version to enter as an experiment's
challenger, with the experiment section).

Examples
--------
>>> audit_key("ns")
'ns:registry:audit'
>>> plain({"loss": float("nan"), "arms": [1.5, float("inf")]})
{'loss': None, 'arms': [1.5, None]}
>>> entry = retrain_entry("retrain", "trained", {"version": "3"}, now=0.0)
>>> entry["time"], entry["source"], entry["action"], entry["version"]
('1970-01-01T00:00:00Z', 'retrain', 'retrain', '3')
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streamlearn.learners.registry import ModelRegistry

__all__ = ["AUDIT_MAX", "append_record", "audit_key", "plain", "records", "retrain_entry"]

#: Entries the audit log keeps, newest first.
AUDIT_MAX = 1_000


def audit_key(namespace: str) -> str:
    """The Redis list of a registry namespace's audit log."""
    return f"{namespace}:registry:audit"


def plain(value: Any) -> Any:
    """``value`` with every non-finite float as None: what strict JSON takes."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def retrain_entry(
    action: str, reason: str, fields: Mapping[str, Any], now: float | None = None
) -> dict[str, Any]:
    """An audit entry of retraining: who (this host's ``model train``), when (UTC), why."""
    at = time.time() if now is None else now
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = {
        "time": stamp,
        "worker": f"model train@{socket.gethostname()}",
        "source": "retrain",
        "action": action,
        "reason": reason,
        **fields,
    }
    return dict(plain(entry))


def append_record(
    registry: ModelRegistry, action: str, reason: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Add an entry of ``action`` with ``fields`` (JSON types) to the audit log; returns it."""
    entry = retrain_entry(action, reason, fields)
    key = audit_key(registry.namespace)
    pipe = registry.client.pipeline(transaction=True)
    pipe.lpush(key, json.dumps(entry, sort_keys=True, allow_nan=False))
    pipe.ltrim(key, 0, AUDIT_MAX - 1)
    pipe.execute()
    return entry


def records(registry: ModelRegistry, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` entries of the audit log (every source), newest first."""
    raw = registry.client.lrange(audit_key(registry.namespace), 0, limit - 1)
    out: list[dict[str, Any]] = []
    for value in raw if isinstance(raw, list) else []:
        doc = json.loads(value)
        if isinstance(doc, dict):
            out.append(doc)
    return out
