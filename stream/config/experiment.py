"""The ``experiment`` and ``rollback`` sections: arms beside the champion, and its guard.

``experiment`` is :class:`learners.experiment.ExperimentConfig` (arms and shares, mode,
unit, primary metric, significance level, minimum sample, guardrails) with what the
processor and the worker need beside it: ``learn``, which arms learn a label (``all``:
every arm learns every label; ``own_arm``: an arm learns only the labels of the events
it served), and ``models``, where each treatment's model comes from: a model spec (a
fresh model, e.g. ``hoeffding_tree``) or a registry version (``version:12``). The control
(the first arm) is the worker's own model (``model.spec``, or the promoted version).

``rollback`` is :class:`learners.rollback.RollbackConfig` with ``refresh_every``: the
live model runs beside a frozen last-known-good copy, refreshed every so many labels
while the live model is at least as good, and put back in its place when the live
model is significantly worse. Either section is absent (``None``) unless configured.

Examples
--------
>>> section = ExperimentSettings(
...     arms={"champion": 0.9, "challenger": 0.1}, learn="own_arm",
...     models={"challenger": "version:4"})
>>> section.learn, section.decision_config().control, section.source_of("challenger")
('own_arm', 'champion', ('version', '4'))
>>> ExperimentSettings(arms={"a": 0.5, "b": 0.5}, models={"b": "hoeffding_tree"}).source_of("b")
('spec', 'hoeffding_tree')
>>> from pydantic import ValidationError
>>> try:
...     ExperimentSettings(arms={"a": 0.5, "b": 0.5}, models={"c": "logistic"})
... except ValidationError as error:
...     print(error.errors()[0]["msg"][:59])
Value error, experiment models name no treatment arm: ['c']
>>> RollbackSettings(drop=0.1).refresh_every
5000

A definition given on the command line (``experiment start --arm tree=hoeffding_tree``)
is checked by the same model; :func:`checked_experiment` says what to fix:

>>> definition = definition_of(["tree=hoeffding_tree"], [0.2], control="live", id="e1")
>>> definition["arms"], definition["models"]
({'live': 0.8, 'tree': 0.2}, {'tree': 'hoeffding_tree'})
>>> checked_experiment(definition).treatments
['tree']
>>> try:
...     checked_experiment({"arms": {"a": 0.5, "b": 0.6}})
... except ValueError as error:
...     print(error)
the experiment definition: ab arm shares must be > 0 and sum to 1, got {'a': 0.5, 'b': 0.6}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from streamlearn.learners.experiment import ExperimentConfig
from streamlearn.learners.models import PRESETS
from streamlearn.learners.rollback import RollbackConfig

__all__ = [
    "ExperimentSettings",
    "RollbackSettings",
    "Source",
    "checked_experiment",
    "definition_of",
    "parse_arm",
]

#: Where an arm's model comes from: ``("spec", name)`` or ``("version", number)``.
Source = tuple[Literal["spec", "version"], str]

_VERSION = re.compile(r"^version:([1-9][0-9]{0,17})$")


class ExperimentSettings(ExperimentConfig):
    """An experiment's settings: :class:`~learners.experiment.ExperimentConfig`, ``learn``
    and ``models``."""

    id: str = Field(
        default="experiment", min_length=1, description="Salts the assignment; names it."
    )
    learn: Literal["all", "own_arm"] = Field(
        default="all",
        description="all: every arm learns every label; own_arm: only its served events'.",
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="Treatment arm -> a model spec (a fresh model) or 'version:N' (a"
        " registry version); an arm not named gets a fresh model of model.spec.",
    )

    @model_validator(mode="after")
    def _check_models(self) -> ExperimentSettings:
        treatments = self.treatments
        unknown = sorted(set(self.models) - set(treatments))
        if unknown:
            raise ValueError(
                f"experiment models name no treatment arm: {unknown} (treatments:"
                f" {treatments}; the control {self.control!r} is the worker's own model)"
            )
        for arm, source in self.models.items():
            module, sep, attribute = source.partition(":")
            factory = bool(sep and module and attribute and module != "version")
            if _VERSION.match(source) is None and source not in PRESETS and not factory:
                raise ValueError(
                    f"experiment model of arm {arm!r} is {source!r}: expected a preset"
                    f" ({', '.join(PRESETS)}), package.module:function or 'version:N'"
                )
        return self

    def source_of(self, arm: str) -> Source | None:
        """Where treatment ``arm``'s model comes from (None: a fresh model of ``model.spec``)."""
        source = self.models.get(arm)
        if source is None:
            return None
        match = _VERSION.match(source)
        return ("version", match.group(1)) if match else ("spec", source)

    def decision_config(self) -> ExperimentConfig:
        """The experiment's own configuration, without the worker's ``learn`` and ``models``."""
        return ExperimentConfig.model_validate(self.model_dump(exclude={"learn", "models"}))


def checked_experiment(definition: Mapping[str, Any]) -> ExperimentSettings:
    """``definition`` (an ``experiment:`` section) checked exactly as the configuration
    file's; a ValueError names each field to fix and why."""
    try:
        return ExperimentSettings.model_validate(dict(definition))
    except ValidationError as error:
        problems = "; ".join(
            ".".join(str(part) for part in e["loc"])
            + (": " if e["loc"] else "")
            + str(e["msg"]).removeprefix("Value error, ")
            for e in error.errors()
        )
        raise ValueError(f"the experiment definition: {problems}") from None


def parse_arm(text: str) -> tuple[str, str]:
    """``NAME=SOURCE`` (a model spec or ``version:N``) as ``(name, source)``.

    >>> parse_arm("retrained=version:12")
    ('retrained', 'version:12')
    >>> parse_arm("tree")
    Traceback (most recent call last):
    ...
    ValueError: --arm 'tree': expected NAME=SPEC or NAME=version:N
    """
    name, sep, source = text.partition("=")
    if not sep or not name.strip() or not source.strip():
        raise ValueError(f"--arm {text!r}: expected NAME=SPEC or NAME=version:N")
    return name.strip(), source.strip()


def definition_of(
    arms: Sequence[str],
    shares: Sequence[float],
    control: str = "champion",
    **fields: Any,
) -> dict[str, Any]:
    """An ``experiment:`` section from command-line options (not yet checked).

    ``arms``: the treatments, ``NAME=SOURCE`` each; ``shares``: one share for every
    treatment, or one each in order; the control (the workers' own model) has the rest.
    ``fields``: the section's other fields (``id``, ``mode``, ``primary``...; None: default).
    """
    if not arms:
        raise ValueError("name at least one treatment: --arm NAME=SPEC or --arm NAME=version:N")
    parsed = [parse_arm(arm) for arm in arms]
    if len(shares) not in (1, len(parsed)):
        raise ValueError(
            f"--share: give one share for every arm or one per arm ({len(parsed)}),"
            f" got {len(shares)}"
        )
    each = list(shares) * len(parsed) if len(shares) == 1 else list(shares)
    treatments = {name: share for (name, _), share in zip(parsed, each, strict=True)}
    if len(treatments) != len(parsed) or control in treatments:
        raise ValueError(f"--arm: every arm needs its own name, not the control's {control!r}")
    rest = round(1 - sum(treatments.values()), 12)
    return {
        **{k: v for k, v in fields.items() if v is not None},
        "arms": {control: rest, **treatments},
        "models": dict(parsed),
    }


class RollbackSettings(RollbackConfig):
    """The automatic rollback: :class:`~learners.rollback.RollbackConfig` and ``refresh_every``."""

    min_labels: int = Field(
        default=1000, gt=1, le=1_000_000_000, description="Labels before any decision."
    )
    min_labels_after_rollback: int = Field(
        default=5000,
        ge=0,
        le=1_000_000_000,
        description="Labels the restored version collects before another rollback.",
    )
    mixture_sd: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="The mSPRT mixture's standard deviation on the paired difference; by"
        " default ``drop`` times the copy's mean loss at the first look.",
    )
    refresh_every: int = Field(
        default=5000,
        ge=1,
        le=1_000_000_000,
        description="Labels between two chances for the last-known-good copy to be refreshed.",
    )

    def rule_config(self) -> RollbackConfig:
        """The rule's own configuration, without ``refresh_every``."""
        return RollbackConfig.model_validate(self.model_dump(exclude={"refresh_every"}))
