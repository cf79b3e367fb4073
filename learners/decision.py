"""A decision of an experiment or of the rollback rule, with its evidence, as JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Action", "Decision", "finite_or_none"]

Action = Literal["continue", "promote", "ready_to_promote", "revert", "stop", "rollback"]


def finite_or_none(x: float | None) -> float | None:
    """``x``, or ``None`` for a missing, infinite or NaN value (JSON has none of those).

    >>> finite_or_none(0.5), finite_or_none(float("inf")), finite_or_none(None)
    (0.5, None, None)
    """
    return x if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class Decision:
    """One decision and its evidence.

    ``estimate`` and ``interval`` are of the treatment's primary metric minus the
    control's (for ``rollback``: of the paired difference, positive meaning worse);
    ``primary`` is each arm's metric, ``counts`` each arm's predictions, labels and
    errors. :meth:`to_dict` gives JSON (infinite bounds as ``null``).

    Examples
    --------
    >>> Decision("continue", reason="too few labels").to_dict()["action"]
    'continue'
    """

    action: Action
    arm: str | None = None
    reason: str = ""
    p_value: float | None = None
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    primary: dict[str, float] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    guardrails: dict[str, dict[str, float]] = field(default_factory=dict)
    timestamp: float | None = None
    event_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_index": self.event_index,
            "timestamp": self.timestamp,
            "action": self.action,
            "arm": self.arm,
            "p_value": self.p_value,
            "reason": self.reason,
            "estimate": finite_or_none(self.estimate),
            "interval": None
            if self.interval is None
            else [finite_or_none(self.interval[0]), finite_or_none(self.interval[1])],
            "primary": {k: finite_or_none(v) for k, v in self.primary.items()},
            "counts": self.counts,
            "guardrails": self.guardrails,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        interval = data.get("interval")
        return cls(
            action=data["action"],
            arm=data.get("arm"),
            reason=data.get("reason", ""),
            p_value=data.get("p_value"),
            estimate=data.get("estimate"),
            interval=None
            if interval is None
            else (
                -math.inf if interval[0] is None else float(interval[0]),
                math.inf if interval[1] is None else float(interval[1]),
            ),
            primary={
                k: math.nan if v is None else float(v) for k, v in data.get("primary", {}).items()
            },
            counts={k: dict(v) for k, v in data.get("counts", {}).items()},
            guardrails={k: dict(v) for k, v in data.get("guardrails", {}).items()},
            timestamp=data.get("timestamp"),
            event_index=data.get("event_index"),
        )
