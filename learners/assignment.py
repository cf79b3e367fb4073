"""Stable assignment of experiment units (users by default) to arms.

An event's arm comes from a keyed hash of its unit (the value of ``unit_field``, by
default ``user_id``) and the experiment's id: BLAKE2b, which unlike Python's ``hash``
is not salted per process, so the same unit lands in the same arm in every worker,
after every restart and in the backtest; another experiment id reshuffles the units.
The hash's first 8 bytes, read as a fraction of 2**64, fall into the arms' cumulative
shares, in the order the arms are given.

Examples
--------
>>> assign = Assignment("exp-1", {"champion": 0.9, "challenger": 0.1})
>>> assign.arm_of("user-42"), assign.arm_of("user-42")
('champion', 'champion')
>>> arms = [assign.arm_of(f"user-{i}") for i in range(10_000)]
>>> round(arms.count("challenger") / len(arms), 2)
0.1
>>> assign.arm_for({"user_id": "user-42", "item_id": "a"})
'champion'
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["Assignment", "unit_fraction", "unit_of"]

_SCALE = float(2**64)


def unit_fraction(experiment_id: str, unit: str) -> float:
    """The unit's place in ``[0, 1)`` for this experiment: stable across processes.

    Examples
    --------
    >>> unit_fraction("exp-1", "user-42") == unit_fraction("exp-1", "user-42")
    True
    >>> unit_fraction("exp-1", "user-42") != unit_fraction("exp-2", "user-42")
    True
    """
    digest = hashlib.blake2b(
        unit.encode("utf-8"), digest_size=8, key=experiment_id.encode("utf-8")[:64]
    ).digest()
    return int.from_bytes(digest, "big") / _SCALE


def unit_of(event: Mapping[str, Any] | object, field: str) -> Any:
    """The event's ``field`` (a mapping's key or an object's attribute), else its context's.

    >>> unit_of({"user_id": "u1"}, "user_id"), unit_of({"context": {"team": "b"}}, "team")
    ('u1', 'b')
    """
    if isinstance(event, Mapping):
        unit = event.get(field)
        context = event.get("context")
    else:
        unit = getattr(event, field, None)
        context = getattr(event, "context", None)
    if unit is None and isinstance(context, Mapping):
        unit = context.get(field)
    return unit


class Assignment:
    """Arms with shares, and the arm of each unit.

    Parameters
    ----------
    experiment_id
        Salts the hash: the same unit may land elsewhere in another experiment.
    shares
        Arm name -> share of the units, in order; the shares must sum to 1.
    unit_field
        The event field that names the unit (``user_id`` by default).

    Examples
    --------
    >>> Assignment("e", {"a": 0.5, "b": 0.6})
    Traceback (most recent call last):
    ...
    ValueError: arm shares must sum to 1, got 1.1 ({'a': 0.5, 'b': 0.6})
    """

    def __init__(
        self, experiment_id: str, shares: Mapping[str, float], unit_field: str = "user_id"
    ) -> None:
        if not experiment_id:
            raise ValueError("an experiment needs a non-empty id")
        if not shares:
            raise ValueError("an experiment needs at least one arm")
        bad = {arm: share for arm, share in shares.items() if not 0 <= share <= 1}
        if bad:
            raise ValueError(f"arm shares must be in [0, 1], got {bad}")
        total = math.fsum(shares.values())
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"arm shares must sum to 1, got {total:g} ({dict(shares)})")
        self.experiment_id = experiment_id
        self.shares = dict(shares)
        self.unit_field = unit_field
        self._bounds: list[tuple[float, str]] = []
        cumulative = 0.0
        for arm, share in self.shares.items():
            cumulative += share
            self._bounds.append((cumulative, arm))
        self._default = next(iter(self.shares))

    def arm_of(self, unit: str) -> str:
        """The arm of ``unit``."""
        place = unit_fraction(self.experiment_id, unit)
        for bound, arm in self._bounds:
            if place < bound:
                return arm
        return self._bounds[-1][1]  # rounding of the last bound

    def arm_for(self, event: Mapping[str, Any] | object) -> str:
        """The arm of an event (a mapping or an object such as the decoded ``Event``):
        its unit's, the unit read from the field or else from the event's ``context``;
        the first arm (the control: what everyone got before the experiment) when the
        event has no unit.

        Examples
        --------
        >>> assign = Assignment("e", {"control": 0.5, "treatment": 0.5}, "session")
        >>> assign.arm_for({"item_id": "x"})
        'control'
        >>> assign.arm_for({"context": {"session": "s1"}}) == assign.arm_of("s1")
        True
        """
        unit = unit_of(event, self.unit_field)
        if unit is None or unit == "":
            return self._default
        return self.arm_of(str(unit))
