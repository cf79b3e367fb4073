"""River models built from a spec: a preset name or a ``package.module:function`` factory.

Examples
--------
>>> model = build_model("logistic")
>>> x = {"clicks": 3.0, "device": "ios"}
>>> score(model, x)
0.5
>>> learn(model, x, 1.0, 1.0)
>>> score(model, x) > 0.5
True
>>> build_model("river.linear_model:LogisticRegression").__class__.__name__
'LogisticRegression'
>>> build_model("svm")
Traceback (most recent call last):
...
ValueError: unknown model 'svm': use a preset (logistic, hoeffding_tree, arf) or module:function
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from river import base, forest, linear_model, optim, preprocessing, tree

__all__ = ["PRESETS", "Numbers", "Strings", "build_model", "is_positive", "learn", "score"]


class Numbers(base.Transformer):
    """The numeric features: ``compose.SelectType(numbers.Number)`` for our feature values.

    Event features are numbers, booleans or strings, so an exact type test does
    what River's abstract-class test does, at a fraction of its cost.

    >>> Numbers().transform_one({"a": 1.5, "b": "ios", "c": True})
    {'a': 1.5, 'c': True}
    """

    def transform_one(self, x: dict) -> dict:
        return {k: v for k, v in x.items() if type(v) is not str}


class Strings(base.Transformer):
    """The categorical (string) features.

    >>> Strings().transform_one({"a": 1.5, "b": "ios"})
    {'b': 'ios'}
    """

    def transform_one(self, x: dict) -> dict:
        return {k: v for k, v in x.items() if type(v) is str}


def logistic() -> base.Classifier:
    """Standard scaling of numbers, one-hot encoding of strings, logistic regression."""
    numeric = Numbers() | preprocessing.StandardScaler()
    categorical = Strings() | preprocessing.OneHotEncoder()
    return (numeric + categorical) | linear_model.LogisticRegression(optimizer=optim.SGD(0.003))


def hoeffding_tree() -> base.Classifier:
    """A Hoeffding tree; it splits on strings as nominal attributes."""
    return tree.HoeffdingTreeClassifier(grace_period=200)


def arf() -> base.Classifier:
    """An adaptive random forest of ten trees, seeded."""
    return forest.ARFClassifier(n_models=10, seed=42)


PRESETS: dict[str, Callable[[], base.Classifier]] = {
    "logistic": logistic,
    "hoeffding_tree": hoeffding_tree,
    "arf": arf,
}


def build_model(spec: str) -> base.Classifier:
    """A fresh, unfitted classifier for ``spec``."""
    if spec in PRESETS:
        return PRESETS[spec]()
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(
            f"unknown model {spec!r}: use a preset ({', '.join(PRESETS)}) or module:function"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model factory {spec!r} cannot be loaded: {exc}") from exc
    model = factory()
    if not hasattr(model, "predict_proba_one") or not hasattr(model, "learn_one"):
        raise ValueError(
            f"model factory {spec!r} returned {type(model).__name__}, not a classifier"
        )
    return model


def is_positive(label: float) -> bool:
    """A label as the class River learns: 1.0 or ``True`` is positive."""
    return label >= 0.5


def score(model: base.Classifier, x: dict) -> float:
    """P(label is positive): 0.5 from a model that has learned nothing yet."""
    proba = model.predict_proba_one(x)
    return proba.get(True, 0.0) if proba else 0.5


def learn(model: base.Classifier, x: dict, label: float, weight: float) -> None:
    """Learn one example; the weight is passed only when it is not 1."""
    if weight == 1.0:
        model.learn_one(x, is_positive(label))
    else:
        model.learn_one(x, is_positive(label), w=weight)
