"""An online Platt calibrator: a score mapped to a probability, learned prequentially.

``calibrated = sigmoid(a * logit(score) + b)``, with ``a`` and ``b`` learned by
stochastic gradient descent on the log loss. Each labelled score is calibrated
*before* the calibrator learns from it, and the score itself was given before the
model learned the label (test-then-train): the calibrator never learns from the
model's own training fit, and its figures are held-out figures.

Examples
--------
>>> calibrator = PlattCalibrator(learning_rate=0.05)
>>> import random
>>> rng = random.Random(0)
>>> for _ in range(5000):  # an over-confident model: true probability 0.5 + (s - 0.5) / 2
...     s = rng.random()
...     _ = calibrator.learn(s, rng.random() < 0.5 + (s - 0.5) / 2)
>>> round(calibrator.calibrate(0.95), 1), round(calibrator.calibrate(0.05), 1)  # 0.725, 0.275
(0.7, 0.4)
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CalibrationConfig", "PlattCalibrator"]


class CalibrationConfig(BaseModel):
    """The ``calibration`` section: the calibrator measured after the model, the ECE window.

    >>> CalibrationConfig().method, CalibrationConfig().bins
    ('none', 10)
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    method: Literal["none", "platt"] = Field(
        default="none", description="platt: an online Platt calibrator learned on held-out labels."
    )
    learning_rate: float = Field(default=0.01, gt=0.0, le=1.0)
    window: int = Field(default=5000, ge=10, le=10_000_000, description="Labels of the ECE.")
    bins: int = Field(default=10, ge=2, le=100, description="Bins of the reliability table.")


_EPS = 1e-6


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class PlattCalibrator:
    """Online Platt scaling on the score's logit; starts as the identity."""

    def __init__(self, learning_rate: float = 0.01) -> None:
        self.learning_rate = learning_rate
        self.a = 1.0
        self.b = 0.0
        self.n = 0

    def calibrate(self, score: float) -> float:
        return _sigmoid(self.a * _logit(score) + self.b)

    def learn(self, score: float, positive: bool, weight: float = 1.0) -> float:
        """Learn one labelled score; returns its calibrated value *before* learning."""
        z = _logit(score)
        p = _sigmoid(self.a * z + self.b)
        gradient = (p - (1.0 if positive else 0.0)) * weight
        self.a -= self.learning_rate * gradient * z
        self.b -= self.learning_rate * gradient
        self.n += 1
        return p
