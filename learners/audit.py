"""The registry's audit log: every decision taken about which model serves, with evidence.

An experiment's ``promote``, ``revert`` or ``stop`` and the rollback rule's ``rollback``
are taken by the workers themselves, continuously; each is appended here, beside the
registry (``ns:registry:audit``, a Redis list, newest first, bounded), with who took it,
when, and its evidence (metric values, p-value, interval, label counts):
``streamlearn model history`` shows them.

Examples
--------
>>> entry = audit_entry({"action": "revert", "arm": "b", "p_value": 0.01}, "worker-0",
...                     "experiment", {"b": "12"}, now=0.0)
>>> entry["action"], entry["source"], entry["time"], entry["versions"]
('revert', 'experiment', '1970-01-01T00:00:00Z', {'b': '12'})
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import redis

__all__ = ["AUDIT_MAX", "AuditLog", "audit_entry", "utc_stamp"]

#: Entries kept, newest first.
AUDIT_MAX = 1000


def utc_stamp(at: float | None = None) -> str:
    """``at`` (epoch seconds; now by default) as an audit entry's time, in UTC.

    >>> utc_stamp(0.0)
    '1970-01-01T00:00:00Z'
    """
    return datetime.fromtimestamp(time.time() if at is None else at, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def audit_entry(
    decision: Mapping[str, Any],
    worker: str,
    source: str,
    versions: Mapping[str, str],
    now: float | None = None,
) -> dict[str, Any]:
    """One audit entry: ``decision`` (:meth:`learners.decision.Decision.to_dict`), the
    worker that took it, its ``source`` (``experiment`` or ``rollback``), the arms'
    model versions at the time, and the wall-clock time (UTC)."""
    return {
        "time": utc_stamp(now),
        "worker": worker,
        "source": source,
        "versions": dict(versions),
        **decision,
    }


class AuditLog:
    """The audit log of the registry in namespace ``namespace``."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.key = f"{namespace}:registry:audit"

    def append(self, entry: Mapping[str, Any]) -> None:
        """Record ``entry`` (newest first; the oldest beyond :data:`AUDIT_MAX` go)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.lpush(self.key, orjson.dumps(dict(entry)))
        pipe.ltrim(self.key, 0, AUDIT_MAX - 1)
        pipe.execute()

    def entries(self, limit: int = AUDIT_MAX) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, newest first."""
        raw = cast("list[bytes]", self.client.lrange(self.key, 0, max(0, limit - 1)))
        return [orjson.loads(item) for item in raw]
