"""The rollback rule run by the processor: the live model against its last-known-good copy.

The decisions are pure logic in :mod:`learners.rollback`; this module feeds the rule from
a batch's scores and labels and applies what it decides, with no I/O.

:class:`RollbackRun`: the live model against a frozen last-known-good copy that scores
in shadow and never learns a label; only its preprocessing follows the inputs
(:func:`follow_inputs`), so it does not age as the features drift. Until the copy has
learned ``min_labels`` labels it is no known-good version: it is replaced by the live
model after every batch, and nothing is decided. Then *candidates* (snapshots of the
live model) are taken every ``refresh_every // 5`` labels; at most every
``refresh_every`` labels, when :attr:`learners.rollback.RollbackRule.refresh_allowed`
(the live model at least as good at this look, never worse over a whole minimum sample
since the candidates were taken, and the labels' positive rate steady), the newest
candidate at least ``refresh_every // 5`` labels old becomes the copy. A look that finds
the live model worse, or labels whose positive rate jumped (flipped, all negative),
drops every candidate, and none is taken for ``refresh_every`` labels: a model that
learned corrupted labels never becomes the copy while the corruption lasts (up to ``5 *
refresh_every`` labels, after which a new rate is the world's). A ``rollback`` replaces
the live model by the copy.

Examples
--------
>>> from streamlearn.learners.rollback import RollbackConfig
>>> run = RollbackRun(RollbackConfig(drop=0.05), "live")
>>> sorted(run.summary()["arms"]), run.frozen
(['last_known_good', 'live'], frozenset({'last_known_good'}))
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from river import base, compose
from river.base.typing import FeatureName

from streamlearn.learners.arm_stats import label_value
from streamlearn.learners.decision import Decision, finite_or_none
from streamlearn.learners.rollback import RollbackConfig, RollbackRule
from streamlearn.metrics.arm_monitoring import ArmMonitors
from streamlearn.stream.model_guard import ModelSlot

__all__ = ["RollbackRun", "follow_inputs"]


def follow_inputs(model: object, x: dict[str, Any]) -> None:
    """Update ``model``'s unsupervised preprocessing (scalers, vocabularies, encoders)
    with ``x``, its supervised parts (the weights) untouched.

    The frozen copy of :class:`RollbackRun` does this for every event it scores: its
    weights stay those of the known-good version, but its scaling follows the inputs as
    the live model's does, so the copy does not age as the features drift. A model that
    is no River pipeline or transformer is left alone.

    Examples
    --------
    >>> from streamlearn.learners.models import build_model, learn, score
    >>> model = build_model("logistic")
    >>> for clicks in (1.0, 2.0, 3.0):
    ...     learn(model, {"clicks": clicks}, 1.0, 1.0)
    >>> before = score(model, {"clicks": 30.0})
    >>> for clicks in (10.0, 20.0, 30.0, 40.0):
    ...     follow_inputs(model, {"clicks": clicks})
    >>> score(model, {"clicks": 30.0}) < before  # 30 clicks no longer far above the mean
    True
    >>> weights = dict(model.steps["LogisticRegression"].weights)
    >>> follow_inputs(model, {"clicks": 50.0})
    >>> dict(model.steps["LogisticRegression"].weights) == weights
    True
    """
    _follow(model, cast(dict[FeatureName, Any], x))


def _follow(model: object, x: dict[FeatureName, Any]) -> dict[FeatureName, Any]:
    """:func:`follow_inputs` of one step; ``x`` as the step after it sees it."""
    if isinstance(model, compose.Pipeline):
        *head, last = model.steps.values()
        for step in (*head, last) if isinstance(last, base.Transformer) else head:
            x = _follow(step, x)
        return x
    if not isinstance(model, base.Transformer):
        return x  # a final estimator: its weights stay as they are
    if isinstance(model, compose.TransformerUnion):
        for part in model.transformers.values():
            _follow(part, x)
    elif not model._supervised:
        model.learn_one(x)
    return model.transform_one(x)


@dataclass
class _Running:
    """An arm's counts and running mean of its per-label loss."""

    events: int = 0
    labels: int = 0
    total: float = 0.0

    @property
    def mean(self) -> float | None:
        return self.total / self.labels if self.labels else None


@dataclass
class _Candidate:
    """A snapshot of the live model, and the labels observed since it was taken."""

    model: base.Classifier
    version: str
    labels: int
    age: int = 0


class RollbackRun:
    """The live model (``champion``) against its frozen last-known-good copy.

    Parameters
    ----------
    config
        The rollback rule's thresholds.
    champion
        The live model's slot name.
    refresh_every
        Labels between two refreshes of the copy at most (its weights age as the world
        changes; its scaling does not, see :func:`follow_inputs`). Candidates live only
        in memory: a restarted worker takes new ones.
    """

    reference = "last_known_good"

    def __init__(self, config: RollbackConfig, champion: str, refresh_every: int = 5000) -> None:
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be at least 1, got {refresh_every}")
        self.rule = RollbackRule(config)
        self.champion = champion
        self.refresh_every = refresh_every
        self.labels_since_refresh = 0
        self.refreshes: list[int] = []
        self.stats = {champion: _Running(), self.reference: _Running()}
        self.last_event_ms: int | None = None
        #: Snapshots of the live model, one every ``refresh_every // 5`` labels, oldest
        #: first: the next copies once they are ``refresh_every`` labels old.
        self.candidates: list[_Candidate] = []
        self._spacing = max(1, refresh_every // 5)
        self._observed = 0
        self._since_copy = 0
        self._hold = 0
        #: The two slots' quality and prediction drift (set by the processor).
        self.monitors: ArmMonitors | None = None

    @property
    def frozen(self) -> frozenset[str]:
        """Slots that never learn."""
        return frozenset((self.reference,))

    def reference_slot(self, champion: ModelSlot, **extra: Any) -> ModelSlot:
        """The frozen copy's slot: a copy of the live model as it is now."""
        self.rule.reference_labels = champion.labels_learned
        return ModelSlot(
            self.reference, copy.deepcopy(champion.model), champion.spec, champion.version,
            **extra,
        )  # fmt: skip

    def observe_scored(self, scores: Mapping[str, float | None], event_ms: int) -> None:
        self.last_event_ms = (
            event_ms if self.last_event_ms is None else max(self.last_event_ms, event_ms)
        )
        for name, stats in self.stats.items():
            p = scores.get(name)
            if p is not None and math.isfinite(p):
                stats.events += 1
                if self.monitors is not None:
                    self.monitors.observe_prediction(name, p, event_ms)

    def observe_label(self, scores: Mapping[str, float | None], y_true: bool) -> None:
        live, ref = scores.get(self.champion), scores.get(self.reference)
        if live is None or ref is None or not (math.isfinite(live) and math.isfinite(ref)):
            return
        self.rule.observe_label(y_true, live, ref)
        config = self.rule.config
        for name, p in ((self.champion, live), (self.reference, ref)):
            if self.monitors is not None:
                self.monitors.observe_label(name, p, y_true, self.last_event_ms)
            stats = self.stats[name]
            stats.labels += 1
            stats.total += label_value(config.metric, y_true, p, config.log_loss_eps)
        self.labels_since_refresh += 1

    def _take_candidate(self, live: ModelSlot) -> None:
        taken = _Candidate(copy.deepcopy(live.model), live.version, live.labels_learned)
        self.candidates = [*self.candidates[-5:], taken]
        self.labels_since_refresh, self._hold = 0, self._spacing

    def _drop_candidates(self, hold: int | None = None) -> None:
        """Every candidate may be poisoned: none is kept, and the next is taken after
        ``hold`` more labels (``refresh_every``: the live model unlearns first)."""
        self.candidates.clear()
        self.labels_since_refresh = 0
        self._hold = self.refresh_every if hold is None else hold
        self.rule.new_span()

    def after_batch(self, slots: Sequence[ModelSlot], event_index: int) -> Decision | None:
        """Decide; on ``rollback`` the live model becomes a copy of the frozen one; every
        ``refresh_every`` labels a sound candidate may become the copy."""
        by_name = {slot.name: slot for slot in slots}
        live, ref = by_name.get(self.champion), by_name.get(self.reference)
        if live is None or ref is None:
            return None
        rule = self.rule
        rule.label_window = 5 * self.refresh_every
        new = rule.observed - self._observed
        self._observed = rule.observed
        self._since_copy += new
        for candidate in self.candidates:
            candidate.age += new
        if rule.reference_labels is None:  # restored without it: the copy is the live model
            rule.reference_labels = max(0, live.labels_learned - rule.observed)
        if rule.reference_labels < rule.config.min_labels:
            # no known-good version yet: the copy follows the live model
            ref.model, ref.version = copy.deepcopy(live.model), live.version
            rule.refresh(live.labels_learned)
            if live.labels_learned >= rule.config.min_labels:
                self.refreshes.append(event_index)
            self._drop_candidates(hold=0)
            return None
        at = None if self.last_event_ms is None else self.last_event_ms / 1000.0
        decision = rule.decide(at=at, event_index=event_index)
        if decision.action == "rollback":
            live.model, live.version = copy.deepcopy(ref.model), ref.version
            self._drop_candidates()
            return decision
        if not rule.span_clean:  # worse, or unsteady labels: any candidate may be poisoned
            self._drop_candidates()
        ripe = [c for c in self.candidates if c.age >= self._spacing]
        if ripe and self._since_copy >= self.refresh_every and rule.refresh_allowed:
            chosen = ripe[-1]
            ref.model, ref.version = chosen.model, chosen.version
            rule.refresh(chosen.labels)
            self.refreshes.append(event_index)
            self._since_copy = 0
            self.candidates = [c for c in self.candidates if c.age < self._spacing]
        if self.labels_since_refresh >= self._hold:
            self._take_candidate(live)
        return None

    def primary(self) -> dict[str, float | None]:
        return {name: stats.mean for name, stats in self.stats.items()}

    def summary(self) -> dict[str, Any]:
        """``summary.json``'s ``experiment`` for the rollback rule alone (mode ``rollback``)."""
        test = self.rule.test
        interval = [finite_or_none(v) for v in test.interval] if test.n else None
        arms: dict[str, dict[str, Any]] = {
            name: {
                "events": stats.events,
                "labels": stats.labels,
                "primary": stats.mean,
                "ci": interval if name == self.champion else None,
                "p_value": test.p_value if name == self.champion and test.n else None,
            }
            for name, stats in self.stats.items()
        }
        if self.monitors is not None:
            for name, report in self.monitors.report().items():
                arms[name]["monitor"] = report
        return {
            "mode": "rollback",
            "primary": self.rule.config.metric,
            "drop": self.rule.config.drop,
            "arms": arms,
            "refreshes": list(self.refreshes),
            "restarts": self.rule.detector.restarts,
            "decisions": [d.to_dict() for d in self.rule.decisions],
        }
