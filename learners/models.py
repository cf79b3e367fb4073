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

A model whose numbers overflowed is broken for good (its scores turn NaN or
stick at 0 or 1); :func:`is_finite` tells, cheaply enough to run after every learn:

>>> is_finite(model)
True
>>> learn(model, {"clicks": 1e300, "device": "ios"}, 0.0, 1.0)
>>> is_finite(model)
False
"""

from __future__ import annotations

import importlib
import math
import zlib
from collections.abc import Callable
from typing import Any, Protocol, cast

from river import base, compose, forest, linear_model, optim, preprocessing, tree
from river.base.typing import FeatureName

__all__ = [
    "BoundedCategories",
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_CATEGORIES",
    "FiniteCheck",
    "Numbers",
    "PRESETS",
    "Strings",
    "build_model",
    "is_finite",
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

    def transform_one(self, x: dict[FeatureName, Any]) -> dict[FeatureName, Any]:
        return {k: v for k, v in x.items() if type(v) is not str}


class Strings(base.Transformer):
    """The categorical (string) features.

    >>> Strings().transform_one({"a": 1.5, "b": "ios"})
    {'b': 'ios'}
    """

    def transform_one(self, x: dict[FeatureName, Any]) -> dict[FeatureName, Any]:
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
        self.vocabulary: dict[FeatureName, set[str]] = {}

    @staticmethod
    def bucket(value: str, buckets: int) -> str:
        """The bucket of ``value``: the same in every process.

        >>> BoundedCategories.bucket("web", 4), BoundedCategories.bucket("web", 64)
        ('#bucket1', '#bucket17')
        """
        return f"#bucket{zlib.crc32(value.encode('utf-8', 'surrogatepass')) % buckets}"

    def learn_one(self, x: dict[FeatureName, Any]) -> None:
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

    def transform_one(self, x: dict[FeatureName, Any]) -> dict[FeatureName, Any]:
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


def _classifier(pipeline: object) -> base.Classifier:
    """A pipeline that ends in a classifier, as the classifier it behaves as.

    River's ``Pipeline`` is not a ``base.Classifier`` subclass (its type follows its
    last step at run time), so its static type says nothing of the kind.
    """
    return cast(base.Classifier, pipeline)


def logistic(
    max_categories: int = DEFAULT_MAX_CATEGORIES, buckets: int = DEFAULT_BUCKETS
) -> base.Classifier:
    """Standard scaling of numbers, one-hot encoding of strings, logistic regression."""
    numeric = Numbers() | preprocessing.StandardScaler()
    categorical = (
        Strings() | BoundedCategories(max_categories, buckets) | preprocessing.OneHotEncoder()
    )
    return _classifier(
        (numeric + categorical) | linear_model.LogisticRegression(optimizer=optim.SGD(0.003))
    )


def hoeffding_tree(
    max_categories: int = DEFAULT_MAX_CATEGORIES, buckets: int = DEFAULT_BUCKETS
) -> base.Classifier:
    """A Hoeffding tree; it splits on strings as nominal attributes."""
    return _classifier(
        BoundedCategories(max_categories, buckets) | tree.HoeffdingTreeClassifier(grace_period=200)
    )


def arf(
    max_categories: int = DEFAULT_MAX_CATEGORIES, buckets: int = DEFAULT_BUCKETS
) -> base.Classifier:
    """An adaptive random forest of ten trees, seeded."""
    return _classifier(
        BoundedCategories(max_categories, buckets) | forest.ARFClassifier(n_models=10, seed=42)
    )


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
    model: base.Classifier = factory()
    if not hasattr(model, "predict_proba_one") or not hasattr(model, "learn_one"):
        raise ValueError(
            f"model factory {spec!r} returned {type(model).__name__}, not a classifier"
        )
    return model


def is_positive(label: float) -> bool:
    """A label as the class River learns: 1.0 or ``True`` is positive."""
    return label >= 0.5


def _river(x: dict[str, Any]) -> dict[FeatureName, Any]:
    """Our features, named by strings, as River's inputs (keyed by any hashable name)."""
    return cast(dict[FeatureName, Any], x)


def score(model: base.Classifier, x: dict[str, Any]) -> float:
    """P(label is positive): 0.5 from a model that has learned nothing yet."""
    proba = model.predict_proba_one(_river(x))
    return proba.get(True, 0.0) if proba else 0.5


def learn(model: base.Classifier, x: dict[str, Any], label: float, weight: float) -> None:
    """Learn one example; the weight is passed only when it is not 1."""
    if weight == 1.0:
        model.learn_one(_river(x), is_positive(label))
    else:
        cast(_Weighted, model).learn_one(x, is_positive(label), w=weight)


class _Weighted(Protocol):
    """A River estimator that takes a sample weight, as its linear models, trees and
    pipelines do; ``base.Classifier.learn_one`` declares no weight."""

    def learn_one(self, x: dict[str, Any], y: bool, w: float = 1.0) -> None: ...


def _all_finite(table: Any) -> bool:
    """Every value of ``table`` finite: one sum in the common case, a scan when it is not."""
    if math.isfinite(sum(table.values())):
        return True
    return all(math.isfinite(v) for v in table.values())


#: Parts without numeric state of their own.
_STATELESS: tuple[type, ...] = (
    Numbers,
    Strings,
    BoundedCategories,
    preprocessing.OneHotEncoder,
    compose.Select,
    compose.SelectType,
    compose.Discard,
)


class FiniteCheck:
    """The numeric state of a model, gathered once, tested for finiteness on each call.

    It walks pipelines and unions down to the parts it knows: linear models
    (weights and intercept, with plain SGD) and standard scalers (means and
    variances), and parts without numeric state. Anything else (trees,
    forests, other River estimators) is listed in ``opaque``: its state is
    not seen here, and a caller tests it by scoring a probe (:func:`is_finite`).
    An object that is not a River estimator (a test double) is not inspected.
    The check holds references to the model's tables, so it is built again
    when the model object is replaced (``check.model is not model``).

    Examples
    --------
    >>> check = FiniteCheck(build_model("logistic"))
    >>> check(), check.opaque
    (True, ())
    >>> FiniteCheck(build_model("hoeffding_tree")).opaque
    ('HoeffdingTreeClassifier',)
    """

    __slots__ = ("model", "numbers", "opaque", "tables")

    def __init__(self, model: Any) -> None:
        self.model = model
        self.tables: list[Any] = []
        self.numbers: list[tuple[Any, str]] = []
        opaque: list[str] = []
        self._gather(model, opaque)
        self.opaque = tuple(opaque)

    def _gather(self, part: Any, opaque: list[str]) -> None:
        if isinstance(part, compose.Pipeline):
            for step in part.steps.values():
                self._gather(step, opaque)
        elif isinstance(part, compose.TransformerUnion):
            for transformer in part.transformers.values():
                self._gather(transformer, opaque)
        elif isinstance(part, preprocessing.StandardScaler) and part.window_size is None:
            self.tables += [part.means, part.vars]
        elif isinstance(part, linear_model.base.GLM) and type(part.optimizer) is optim.SGD:
            self.tables.append(part._weights)
            self.numbers.append((part, "intercept"))
        elif isinstance(part, base.Base) and not isinstance(part, _STATELESS):
            opaque.append(type(part).__name__)

    def __call__(self) -> bool:
        """Whether every number of the known parts is finite."""
        for owner, name in self.numbers:
            if not math.isfinite(getattr(owner, name)):
                return False
        return all(_all_finite(table) for table in self.tables)


def is_finite(model: base.Classifier, probe: dict[str, Any] | None = None) -> bool:
    """Whether ``model``'s numeric state is finite; ``probe`` tests the parts not walked.

    A model with parts :class:`FiniteCheck` cannot see into counts as finite
    unless its score of ``probe`` is not.

    >>> model = build_model("hoeffding_tree")
    >>> learn(model, {"a": 1.0}, 1.0, 1.0)
    >>> is_finite(model), is_finite(model, {"a": 2.0})
    (True, True)
    """
    check = FiniteCheck(model)
    if not check():
        return False
    return probe is None or not check.opaque or math.isfinite(score(model, probe))
