"""The ``experiment`` section: an A/B or shadow experiment between model slots.

It is :class:`learners.experiment.ExperimentConfig` (arms and shares, mode, unit,
primary metric, significance level, minimum sample, guardrails) with what the
processor needs beside it: ``learn``, which arms learn a label (``all``: every arm
learns every label; ``own_arm``: an arm learns only the labels of the events it
served). The section is absent (``None``) unless an experiment is configured.

Examples
--------
>>> section = ExperimentSettings(arms={"champion": 0.9, "challenger": 0.1}, learn="own_arm")
>>> section.learn, section.decision_config().control
('own_arm', 'champion')
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from streamlearn.learners.experiment import ExperimentConfig

__all__ = ["ExperimentSettings"]


class ExperimentSettings(ExperimentConfig):
    """An experiment's settings: :class:`~learners.experiment.ExperimentConfig` and ``learn``."""

    id: str = Field(
        default="experiment", min_length=1, description="Salts the assignment; names it."
    )
    learn: Literal["all", "own_arm"] = Field(
        default="all",
        description="all: every arm learns every label; own_arm: only its served events'.",
    )

    def decision_config(self) -> ExperimentConfig:
        """The experiment's own configuration, without the processor's ``learn``."""
        return ExperimentConfig.model_validate(self.model_dump(exclude={"learn"}))
