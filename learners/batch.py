"""Scoring many feature dicts with one model: the ``logistic`` preset in plain arithmetic.

River's ``predict_proba_one`` walks the whole pipeline for each input: the union,
both branches, the scaler, the vocabulary, the one-hot encoder (which copies a zero
for every category it knows), then the dot product. A ranking request scores
hundreds of candidates with a model that does not change meanwhile, so
:func:`batch_scorer` reads the fitted state of a ``logistic`` preset once (the
scaler's means and variances, the vocabulary, the one-hot columns, the weights and
the intercept) and :class:`LogisticScorer` scores each input with River's own
formulas, in River's order of summation, so the numbers are the same:

* ``StandardScaler.transform_one``: ``(x - mean) / var ** 0.5``, and ``0.0`` where
  the variance is zero (or the feature unseen);
* :class:`learners.models.BoundedCategories`: a value past a full vocabulary goes to
  its bucket; ``OneHotEncoder.transform_one``: ``{name}_{value}`` is 1, every known
  column 0, in the order the encoder learned them;
* ``TransformerUnion.transform_one``: the one-hot columns first, then the numbers;
* ``GLM._raw_dot_one``: the weights' dot product with that dict, in its key order
  (a missing weight is 0), plus the intercept;
* ``optim.losses.Log.mean_func``: ``utils.math.sigmoid``, 0 below -30 and 1 above 30.

Terms that are zero (the one-hot encoder's zeros, unseen or constant numbers) add
nothing to the sum of finite inputs (the events' schema refuses others) and are
skipped, which is why a model with a non-finite number (where ``0 * inf`` would be
NaN) is not read this way. The candidates of one request have the same features in
the same order: :meth:`LogisticScorer.score_many` sums theirs as numpy columns, one
column at a time, which keeps every input's order of summation. An input whose numeric
feature is named like a one-hot column (the union keeps one of the two) is scored
by the model itself. Any other model (trees, forests, a factory's model, a
``logistic`` whose parts differ) is not recognised: :func:`batch_scorer` returns
None and :func:`score_many` calls :func:`learners.models.score` once per input.

Examples
--------
>>> from streamlearn.learners.models import build_model, learn, score
>>> model = build_model("logistic")
>>> for n in range(20):
...     learn(model, {"clicks": float(n), "device": ["ios", "web"][n % 2]}, n % 2, 1.0)
>>> xs = [{"clicks": 3.0, "device": "ios"}, {"clicks": 8.0, "device": "tv"}, {}]
>>> scorer = batch_scorer(model)
>>> scorer.score_many(xs) == [score(model, x) for x in xs]
True
>>> score_many(model, xs) == [score(model, x) for x in xs]
True
>>> many = [{"clicks": float(n % 7), "device": ["ios", "web", "tv"][n % 3]} for n in range(50)]
>>> score_many(model, many) == [score(model, x) for x in many]
True
>>> batch_scorer(build_model("hoeffding_tree")) is None
True
>>> score_many(build_model("hoeffding_tree"), xs)
[0.5, 0.5, 0.5]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
from river import compose, linear_model, optim, preprocessing

from streamlearn.learners.models import BoundedCategories, Numbers, Strings, score

__all__ = ["LogisticScorer", "batch_scorer", "score_many"]

#: A numeric feature the arithmetic does not score: named like a one-hot column, or
#: with a negative variance (River's ``var ** 0.5`` would be complex).
_ASK = (math.nan, math.nan, math.nan)
#: Inputs alike from which arrays pay (below, one by one is faster).
_TOGETHER = 8


def _finite(table: Mapping[Any, float]) -> bool:
    """Every value finite: one sum in the common case, a scan when it is not."""
    if math.isfinite(sum(table.values())):
        return True
    return all(math.isfinite(v) for v in table.values())


def _sigmoid(z: float) -> float:
    """``river.utils.math.sigmoid``, with its ``int`` 0 and 1 past the clamps (a response
    shows them as River's score did)."""
    if z < -30:
        return 0
    if z > 30:
        return 1
    return 1 / (1 + math.exp(-z))


class LogisticScorer:
    """A ``logistic`` preset's fitted state, read once, scoring many inputs.

    Built by :func:`batch_scorer` (which says whether ``model`` is one) for the
    inputs of one request: it reads the weights, the scaler's statistics and the
    one-hot columns when it is built, so it gives the model's scores as they were
    then; make a new one after the model learns.

    Parameters
    ----------
    model
        The pipeline, asked directly for an input the arithmetic does not score.
    scaler
        Its ``StandardScaler`` (``with_std``, no window).
    vocabulary
        Its :class:`learners.models.BoundedCategories`.
    encoder
        Its ``OneHotEncoder`` (no fixed categories, no dropped columns).
    regression
        Its ``LogisticRegression`` (log loss).
    """

    __slots__ = (
        "_buckets",
        "_columns",
        "_intercept",
        "_limit",
        "_model",
        "_numeric",
        "_producers",
        "_shared",
        "_strings",
        "_vocabulary",
        "_weights",
    )

    def __init__(
        self,
        model: Any,
        scaler: preprocessing.StandardScaler,
        vocabulary: BoundedCategories,
        encoder: preprocessing.OneHotEncoder,
        regression: linear_model.LogisticRegression,
    ) -> None:
        self._model = model
        weights: dict[str, float] = regression._weights.to_dict()
        self._weights = weights
        self._intercept: float = regression.intercept
        self._limit = vocabulary.max_categories
        self._buckets = vocabulary.buckets
        self._vocabulary = vocabulary.vocabulary
        #: one-hot column -> its place in the encoder's output
        self._columns: dict[str, int] = {
            column: place for place, column in enumerate(encoder._zero_dict)
        }
        #: numeric feature -> (mean, standard deviation, weight), or _ASK; absent: adds 0
        numeric: dict[str, tuple[float, float, float]] = {}
        means = scaler.means
        for name, var in scaler.vars.items():
            if var < 0:
                numeric[name] = _ASK
            elif var and weights.get(name):
                numeric[name] = (means.get(name, 0.0), var**0.5, weights[name])
        for column in self._columns:
            numeric[column] = _ASK
        self._numeric = numeric
        #: (feature, value) -> (place of its column or -1, its weight, its column)
        self._strings: dict[tuple[str, str], tuple[int, float, str]] = {}
        #: one-hot column -> the feature that gave it; whether two features gave one
        self._producers: dict[str, str] = {}
        self._shared = False

    def _string(self, name: str, value: str) -> tuple[int, float, str]:
        known = self._vocabulary.get(name)
        kept = value
        if self._limit and known is not None and len(known) >= self._limit and value not in known:
            kept = BoundedCategories.bucket(value, self._buckets)
        column = f"{name}_{kept}"
        if self._producers.setdefault(column, name) != name:
            self._shared = True
        entry = (self._columns.get(column, -1), self._weights.get(column, 0.0), column)
        self._strings[name, value] = entry
        return entry

    def score(self, x: Mapping[str, Any]) -> float:
        """P(label is positive) for ``x``: :func:`learners.models.score` of the model."""
        numeric = self._numeric
        strings = self._strings
        known: list[tuple[int, float]] = []
        new: list[tuple[str, float]] = []
        total = 0.0
        for name, value in x.items():
            if type(value) is str:
                entry = strings.get((name, value))
                if entry is None:
                    entry = self._string(name, value)
                if entry[0] >= 0:
                    known.append((entry[0], entry[1]))
                else:
                    new.append((entry[2], entry[1]))
        if len(known) > 1:
            known.sort()
            for (a, _), (b, _) in zip(known, known[1:], strict=False):
                if a == b:  # two features, one column
                    return score(self._model, dict(x))
        for _, weight in known:
            total += weight
        if new:
            if len(new) > 1 and len({column for column, _ in new}) < len(new):
                return score(self._model, dict(x))
            for column, weight in new:
                if column in x and type(x[column]) is not str:
                    return score(self._model, dict(x))
                total += weight
        for name, value in x.items():
            if type(value) is not str:
                term = numeric.get(name)
                if term is None:
                    continue
                if term is _ASK:
                    return score(self._model, dict(x))
                mean, std, weight = term
                total += weight * ((value - mean) / std)
        return _sigmoid(total + self._intercept)

    def score_many(self, xs: Sequence[Mapping[str, Any]]) -> list[float]:
        """:meth:`score` of each input, in order.

        Inputs with the same features in the same order (the candidates of one
        request) are scored together when their features also have the same kinds
        (string or number) in every input: their one-hot weights and their numbers
        are gathered in arrays and summed column by column, in River's order, so each
        input's sum takes the same roundings as in :meth:`score`.
        """
        out: list[float] = [0.5] * len(xs)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, x in enumerate(xs):
            groups.setdefault(tuple(x), []).append(i)
        for names, rows in groups.items():
            group = [xs[i] for i in rows]
            scores = self._together(names, group) if len(rows) >= _TOGETHER else None
            if scores is None:
                scores = [self.score(x) for x in group]
            for i, p in zip(rows, scores, strict=True):
                out[i] = p
        return out

    def _together(
        self, names: tuple[Any, ...], group: list[Mapping[str, Any]]
    ) -> list[float] | None:
        """The scores of inputs with these features; None: score them one by one."""
        first = group[0]
        strings = [name for name in names if type(first[name]) is str]
        others = [name for name in names if type(first[name]) is not str]
        numbers = set(others)
        n = len(group)
        total = np.zeros(n)
        if strings:
            unseen = len(self._columns)
            places: list[list[int]] = []
            weights: list[list[float]] = []
            known = self._strings
            for j, name in enumerate(strings):
                values = [x[name] for x in group]
                if not all(type(value) is str for value in values):
                    return None
                entries = [
                    known.get((name, value)) or self._string(name, value) for value in values
                ]
                for place, _, column in entries:
                    if place < 0 and column in numbers:  # also a number's name
                        return None
                places.append([unseen + j if e[0] < 0 else e[0] for e in entries])
                weights.append([e[1] for e in entries])
            if self._shared:  # two features gave one column
                return None
            table = np.array(weights).T
            if len(strings) > 1:
                order = np.argsort(np.array(places).T, axis=1)
                table = np.take_along_axis(table, order, axis=1)
            for j in range(len(strings)):
                total += table[:, j]
        if others:
            # every other feature a number in every input (no string, no None: the
            # array's kind says), each read as River's arithmetic reads it
            row = itemgetter(*others)
            given = np.array([row(x) for x in group]).reshape(n, len(others))
            if given.dtype.kind not in "biuf":
                return None
            columns: list[int] = []
            terms: list[tuple[float, float, float]] = []
            for j, name in enumerate(others):
                term = self._numeric.get(name)
                if term is _ASK:
                    return None
                if term is not None:
                    columns.append(j)
                    terms.append(term)
            if terms:
                mean, std, weight = (np.array(column) for column in zip(*terms, strict=True))
                added = weight * ((given[:, columns].astype(np.float64) - mean) / std)
                for j in range(len(terms)):
                    total += added[:, j]
        return [_sigmoid(z) for z in (total + self._intercept).tolist()]


def _steps(part: Any, kind: type) -> list[Any] | None:
    """The steps of ``part`` if it is exactly a River ``kind`` (a pipeline or a union)."""
    if type(part) is not kind:
        return None
    table = getattr(part, "steps" if kind is compose.Pipeline else "transformers")
    return list(table.values())


def batch_scorer(model: Any) -> LogisticScorer | None:
    """A scorer of many inputs for ``model``; None when ``model`` is not recognised.

    Recognised: the ``logistic`` preset as :func:`learners.models.logistic` builds
    it, ``(Numbers | StandardScaler) + (Strings | BoundedCategories | OneHotEncoder)
    | LogisticRegression``, with River's defaults where they matter to scoring
    (standard deviation on, no window; one-hot columns learned, none dropped; log
    loss), every number finite, and River not learning during prediction
    (``compose.learn_during_predict``). For anything else score one input at a time
    (:func:`score_many` does).

    >>> from streamlearn.learners.models import build_model
    >>> batch_scorer(build_model("logistic")).score({"n": 1.0})
    0.5
    >>> batch_scorer(build_model("river.linear_model:LogisticRegression")) is None
    True
    """
    if compose.Pipeline._LEARN_UNSUPERVISED_DURING_PREDICT:
        return None
    top = _steps(model, compose.Pipeline)
    if top is None or len(top) != 2:
        return None
    union, regression = top
    branches = _steps(union, compose.TransformerUnion)
    if branches is None or len(branches) != 2:
        return None
    numbers = _steps(branches[0], compose.Pipeline)
    strings = _steps(branches[1], compose.Pipeline)
    if numbers is None or strings is None or len(numbers) != 2 or len(strings) != 3:
        return None
    if type(numbers[0]) is not Numbers or type(strings[0]) is not Strings:
        return None
    scaler, (vocabulary, encoder) = numbers[1], strings[1:]
    if not (
        type(scaler) is preprocessing.StandardScaler
        and scaler.with_std
        and scaler.window_size is None
        and type(vocabulary) is BoundedCategories
        and type(encoder) is preprocessing.OneHotEncoder
        and encoder.categories is None
        and not encoder.drop_zeros
        and not encoder.drop_first
        and type(regression) is linear_model.LogisticRegression
        and type(regression.loss) is optim.losses.Log
    ):
        return None
    if not (math.isfinite(regression.intercept) and _finite(scaler.means) and _finite(scaler.vars)):
        return None
    scorer = LogisticScorer(model, scaler, vocabulary, encoder, regression)
    return scorer if _finite(scorer._weights) else None


def score_many(model: Any, xs: Sequence[Mapping[str, Any]]) -> list[float]:
    """:func:`learners.models.score` of each input: by :func:`batch_scorer` when it
    recognises ``model``, else one ``predict_proba_one`` per input."""
    scorer = batch_scorer(model)
    if scorer is None:
        return [score(model, dict(x)) for x in xs]
    return scorer.score_many(xs)
