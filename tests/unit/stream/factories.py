"""Model factories given to backtests as ``package.module:function``."""

from __future__ import annotations

from river import base, linear_model, preprocessing


def scaled_logistic() -> base.Classifier:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()
