"""River models built from a spec: a preset name or a ``package.module:function`` factory.

Every preset bounds its categorical vocabulary (:class:`BoundedCategories`): the
first ``max_categories`` values of each string feature keep their own one-hot
column or tree branch, later new values share ``category_buckets`` buckets by a
stable hash of the value, so a model does not grow with every distinct value
(ids or free text put in a context). A feature with no more values than the
bound is passed through untouched, and the model is the unbounded one.

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
import zlib
from collections.abc import Callable

from river import base, forest, linear_model, optim, preprocessing, tree

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_CATEGORIES",
    "PRESETS",
    "BoundedCategories",
    "Numbers",
    "Strings",
    "build_model",
    "is_positive",
    "learn",
    "score",
]

#: Values of one string feature that keep their own column (``model.max_categories``).
DEFAULT_MAX_CATEGORIES = 64
#: Buckets the later values of a string feature share (``model.category_buckets``).
DEFAULT_BUCKETS = 32


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


class BoundedCategories(base.Transformer):
    """A bounded vocabulary per string feature: the first ``max_categories`` values
    learned pass through, later new values map to one of ``buckets`` buckets.

    The bucket is a stable hash of the value (CRC-32, the same in every process and
    run, unlike Python's ``hash``), so a value always lands in the same bucket and
    the encoders and trees after this step keep at most ``max_categories + buckets``
    values per feature. Values are learned in ``learn_one`` only, so scoring does
    not change the model; until a feature's vocabulary is full every value passes
    through, so a feature with few distinct values is left exactly as it was.
    Numbers are passed through.

    Parameters
    ----------
    max_categories
        Values per feature that keep their name; ``0``: no bound, everything passes.
    buckets
        Buckets shared by the values beyond the bound, per feature.

    Examples
    --------
    >>> vocabulary = BoundedCategories(max_categories=2, buckets=4)
    >>> for device in ["ios", "android", "ios", "web"]:
    ...     vocabulary.learn_one({"device": device, "n": 1.0})
    >>> vocabulary.transform_one({"device": "android", "n": 1.0})
    {'device': 'android', 'n': 1.0}
    >>> vocabulary.transform_one({"device": "web", "n": 1.0})
    {'device': '#bucket1', 'n': 1.0}
    >>> sorted(vocabulary.vocabulary["device"])
    ['android', 'ios']
    """

    def __init__(
        self, max_categories: int = DEFAULT_MAX_CATEGORIES, buckets: int = DEFAULT_BUCKETS
    ) -> None:
        if max_categories < 0 or buckets < 1:
            raise ValueError(
                f"max_categories must be >= 0 and buckets >= 1, got {max_categories}, {buckets}"
            )
        self.max_categories = max_categories
        self.buckets = buckets
        self.vocabulary: dict[str, set[str]] = {}

    @staticmethod
    def bucket(value: str, buckets: int) -> str:
        """The bucket of ``value``: the same in every process.

        >>> BoundedCategories.bucket("web", 4), BoundedCategories.bucket("web", 64)
        ('#bucket1', '#bucket17')
        """
        return f"#bucket{zlib.crc32(value.encode('utf-8', 'surrogatepass')) % buckets}"

    def learn_one(self, x: dict) -> None:
        if not self.max_categories:
            return
        vocabulary = self.vocabulary
        for key, value in x.items():
            if type(value) is str:
                known = vocabulary.get(key)
                if known is None:
                    vocabulary[key] = {value}
                elif len(known) < self.max_categories:
                    known.add(value)

    def transform_one(self, x: dict) -> dict:
        if not self.max_categories:
            return x
        out = None
        for key, value in x.items():
            if type(value) is str:
                known = self.vocabulary.get(key)
                if known is not None and len(known) >= self.max_categories and value not in known:
                    if out is None:
                        out = dict(x)
                    out[key] = self.bucket(value, self.buckets)
        return x if out is None else out


def logistic(
    max_categories: int = DEFAULT_MAX_CATEGORIES, buckets: int = DEFAULT_BUCKETS
) -> base.Classifier:
    """Standard scaling of numbers, one-hot encoding of strings, logistic regression."""
    numeric = Numbers() | preprocessing.StandardScaler()
    categorical = (
        Strings() | BoundedCategories(max_categories, buckets) | preprocessing.OneHotEncoder()
    )
    return (numeric + categorical) | linear_model.LogisticRegression(optimizer=optim.SGD(0.003))


def hoeffding_tree(
    max_categories: int = DEFAULT_MAX_CATEGORIES, buckets: int = DEFAULT_BUCKETS
) -> base.Classifier:
    """A Hoeffding tree; it splits on strings as nominal attributes."""
    return BoundedCategories(max_categories, buckets) | tree.HoeffdingTreeClassifier(
        grace_period=200
    )


def arf(
    max_categories: int = DEFAULT_MAX_CATEGORIES, buckets: int = DEFAULT_BUCKETS
) -> base.Classifier:
    """An adaptive random forest of ten trees, seeded."""
    return BoundedCategories(max_categories, buckets) | forest.ARFClassifier(n_models=10, seed=42)


PRESETS: dict[str, Callable[[int, int], base.Classifier]] = {
    "logistic": logistic,
    "hoeffding_tree": hoeffding_tree,
    "arf": arf,
}


def build_model(
    spec: str,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    category_buckets: int = DEFAULT_BUCKETS,
) -> base.Classifier:
    """A fresh, unfitted classifier for ``spec``; a preset's string features keep
    ``max_categories`` values each, the others share ``category_buckets`` buckets
    (a factory builds its model as it likes)."""
    if spec in PRESETS:
        return PRESETS[spec](max_categories, category_buckets)
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
