"""Retraining's records in the registry's audit log, beside the workers' decisions.

The registry's audit log (``ns:registry:audit``, a Redis list, newest first, bounded)
holds every decision about which model serves, with its evidence. Retraining adds its
own records there, in the same shape (``time``, ``worker``, ``source``, ``action``,
``versions``, ``reason``, and the evidence): ``source`` is ``retrain``, ``action``
``retrain`` (a model trained from the training log and registered: its window and
held-out evaluation) or ``challenger_request`` (a version to enter as an experiment's
challenger, with the experiment section).

It is :class:`learners.audit.AuditLog`, the one writer and reader of that list.

Examples
--------
>>> plain({"loss": float("nan"), "arms": [1.5, float("inf")]})
{'loss': None, 'arms': [1.5, None]}
>>> entry = retrain_entry("retrain", "trained", {"version": "3"}, now=0.0)
>>> entry["time"], entry["source"], entry["action"], entry["version"]
('1970-01-01T00:00:00Z', 'retrain', 'retrain', '3')
"""

from __future__ import annotations

import math
import socket
from collections.abc import Mapping
from typing import Any

from streamlearn.learners.audit import AuditLog, utc_stamp
from streamlearn.learners.registry import ModelRegistry

__all__ = ["append_record", "plain", "records", "retrain_entry"]


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
    entry = {
        "time": utc_stamp(now),
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
    AuditLog(registry.client, registry.namespace).append(entry)
    return entry


def records(registry: ModelRegistry, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` entries of the audit log (every source), newest first."""
    return AuditLog(registry.client, registry.namespace).entries(limit)
