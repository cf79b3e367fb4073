"""Model factories given to backtests as ``package.module:function``."""

from __future__ import annotations

from river import base, linear_model, preprocessing


def scaled_logistic() -> base.Classifier:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


class Constant(base.Classifier):
    """Always the same probability of a positive, whatever it learns: a broken model."""

    def __init__(self, p: float = 0.99) -> None:
        self.p = p

    def learn_one(self, x: dict, y: bool) -> None:
        pass

    def predict_proba_one(self, x: dict) -> dict[bool, float]:
        return {False: 1.0 - self.p, True: self.p}


def always_high() -> base.Classifier:
    """A treatment wired wrong: it predicts 0.99 for every event."""
    return Constant(0.99)


def uninformed() -> base.Classifier:
    """An even chance for every event: a model that knows nothing."""
    return Constant(0.5)
